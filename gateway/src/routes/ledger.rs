//! Totals, the ledger and the green-proof chain: `GET /v1/stats`, `GET /v1/credits`,
//! `GET /v1/proofs`, `GET /v1/proofs/verify`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::extract::ApiQuery;
use crate::read_model::credits::{self as ledger_credits, CreditsView};
use crate::read_model::proof_pages::{self, ProofPage};
use crate::read_model::proofs::{VerifyView, verify_chain};
use crate::read_model::stats::{GridStats, grid_stats};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/stats", get(stats))
        .route("/v1/credits", get(credits))
        .route("/v1/proofs", get(proofs))
        .route("/v1/proofs/verify", get(verify_proofs))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProofQuery {
    /// Links after this seq; 0 when absent.
    #[param(minimum = 0)]
    pub after_seq: Option<i64>,
    /// 1 to 1000; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/proofs", tag = "ledger", params(ProofQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "Links of the chain in seq order (an organisation sees its own tasks' links)", body = ProofPage),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn proofs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ProofQuery>,
) -> Result<Json<ProofPage>, ApiError> {
    let scope = caller.read_scope()?;
    let after_seq = query.after_seq.unwrap_or(0);
    let limit = query.limit.unwrap_or(100);
    if after_seq < 0 {
        return Err(ApiError::field("after_seq", "must be 0 or more"));
    }
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    Ok(Json(proof_pages::page(&state, scope, after_seq, limit).await?))
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

#[utoipa::path(get, path = "/v1/credits", tag = "ledger", security(("bearer" = [])),
    responses(
        (status = 200, description = "Credits per node (an organisation sees its own nodes) and the cooperative fund", body = CreditsView),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn credits(State(state): State<AppState>, caller: Caller) -> Result<Json<CreditsView>, ApiError> {
    let scope = caller.read_scope()?;
    Ok(Json(ledger_credits::credits(&state, scope).await?))
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
