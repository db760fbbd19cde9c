//! Totals and the green-proof chain: `GET /v1/stats`, `GET /v1/proofs/verify`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::read_model::proofs::{VerifyView, verify_chain};
use crate::read_model::stats::{GridStats, grid_stats};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/stats", get(stats)).route("/v1/proofs/verify", get(verify_proofs))
}

#[utoipa::path(get, path = "/v1/stats", tag = "ledger", security(("bearer" = [])),
    responses(
        (status = 200, description = "Grid totals (the KoproGo /grid/stats shape)", body = GridStats),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stats(State(state): State<AppState>, caller: Caller) -> Result<Json<GridStats>, ApiError> {
    caller.read_scope()?;
    Ok(Json(grid_stats(&state).await?))
}

#[utoipa::path(get, path = "/v1/proofs/verify", tag = "ledger", security(("bearer" = [])),
    responses(
        (status = 200, description = "Whether the whole chain verifies, and where it breaks", body = VerifyView),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn verify_proofs(State(state): State<AppState>, caller: Caller) -> Result<Json<VerifyView>, ApiError> {
    caller.read_scope()?;
    Ok(Json(verify_chain(&state).await?))
}
