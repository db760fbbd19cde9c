//! `GET /healthz` (the process answers), `GET /readyz` (PostgreSQL and Redis answer too).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".to_owned() })
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "PostgreSQL and Redis answer", body = Health),
        (status = 503, description = "A dependency does not answer", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    sqlx::query("select 1")
        .execute(&state.pool)
        .await
        .map_err(|error| ApiError::Unavailable(format!("postgres: {error}")))?;
    let mut conn = state.redis.get().await?;
    redis::cmd("PING").query_async::<String>(&mut conn).await?;
    Ok(Json(Health { status: "ready".to_owned() }))
}
