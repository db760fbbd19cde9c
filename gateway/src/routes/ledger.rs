//! Totals, the ledger and the green-proof chain: `GET /v1/stats`, `GET /v1/credits`,
//! `GET /v1/proofs` (blocks), `GET /v1/proofs/links` (v1 links), `GET /v1/proofs/tasks/{id}`
//! (inclusion proofs), `GET /v1/proofs/verify`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use grid_shared::ids::TaskId;

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiPath, ApiQuery};
use crate::read_model::credits::{self as ledger_credits, CreditsView};
use crate::read_model::proof_pages::{self, BlockPage, ProofPage};
use crate::read_model::proofs::{TaskProofsView, VerifyView, task_proofs, verify_all, verify_chain};
use crate::read_model::stats::{GridStats, grid_stats};
use crate::routes::nodes::{cell_or_default, known_cell};
use crate::state::AppState;
use serde::Deserialize;
use utoipa::IntoParams;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/stats", get(stats))
        .route("/v1/credits", get(credits))
        .route("/v1/proofs", get(blocks))
        .route("/v1/proofs/links", get(proofs))
        .route("/v1/proofs/tasks/{task_id}", get(proofs_of_task))
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
    /// The cell whose links (only `main` has any: they were written before cells); the grid's
    /// default cell when absent.
    pub cell: Option<String>,
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BlockQuery {
    /// Blocks after this height; 0 when absent.
    #[param(minimum = 0)]
    pub after_height: Option<i64>,
    /// 1 to 1000; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The cell whose chain (each cell has its own, heights from 1); the grid's default cell
    /// when absent. 422 for a cell the grid does not have.
    pub cell: Option<String>,
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// One cell's chain; every cell's when absent or `all`. 422 for a cell the grid does not have.
    pub cell: Option<String>,
}

fn page_bounds(after: Option<i64>, after_name: &'static str, limit: Option<i64>) -> Result<(i64, i64), ApiError> {
    let (after, limit) = (after.unwrap_or(0), limit.unwrap_or(100));
    if after < 0 {
        return Err(ApiError::field(after_name, "must be 0 or more"));
    }
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    Ok((after, limit))
}

#[utoipa::path(get, path = "/v1/proofs", tag = "ledger", params(BlockQuery), security(("bearer" = [])),
    description = "The sealed blocks of a cell's green-proof chain (`kgp2`), in height order (each cell has its own \
                   chain: `cell`, else the grid's default cell). A block seals credited \
                   results (its leaves) under the RFC 6962 Merkle root of their leaf hashes, and chains onto the \
                   previous block's hash; the first block chains onto the last `kgp1` link \
                   (`GET /v1/proofs/links`; 64 zeros in a cell without links). Block line: `kgp2|height|prev_hash|merkle_root|leaf_count|sealed_at|difficulty|nonce`, \
                   hash = SHA-256 of the line, with `difficulty` leading zero bits. Blocks name no task: every caller sees them all.",
    responses(
        (status = 200, description = "Blocks in height order", body = BlockPage),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad bound or an unknown cell", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn blocks(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<BlockQuery>,
) -> Result<Json<BlockPage>, ApiError> {
    caller.read_scope()?;
    let (after_height, limit) = page_bounds(query.after_height, "after_height", query.limit)?;
    let cell = cell_or_default(&state, query.cell.as_deref())?;
    Ok(Json(proof_pages::block_page(&state, &cell, after_height, limit).await?))
}

#[utoipa::path(get, path = "/v1/proofs/tasks/{task_id}", tag = "ledger",
    params(("task_id" = uuid::Uuid, Path, description = "The task")), security(("bearer" = [])),
    description = "The inclusion proof of each credited result of the task: the leaf line \
                   (`kgp3-leaf|task_id|node_id|attempt|energy_uwh|solar_uwh|zone|hour|intensity_mg_per_kwh|intensity_kind|\
                   intensity_source|price_peur_per_kg|node_share_percent|carbon_ng|node_peur|cooperative_peur|credited_at`, whose \
                   figures follow from its inputs: carbon_ng = solar_uwh × intensity_mg_per_kwh ÷ 1000, total = carbon_ng × \
                   price_peur_per_kg ÷ 10^12, node_peur = total × node_share_percent ÷ 100, cooperative_peur = total − node_peur, \
                   each division rounding down; credits from before carbon signals have the `kgp2-leaf|task_id|node_id|attempt|\
                   energy_uwh|solar_uwh|carbon_ng|node_peur|cooperative_peur|credited_at` line), \
                   its hash (SHA-256 of 0x00 then the line), its index, the audit path (RFC 6962 PATH, sibling hashes from the leaf \
                   up) and the block. Check: hash the leaf line, fold the path into a root (RFC 9162 §2.1.3.2), compare it with \
                   the block line's `merkle_root`, hash the block line and check its difficulty; then the block's place in the chain \
                   (`GET /v1/proofs`). `status` is `pending` until the leaf's block is sealed (within about a second). Results \
                   credited before blocks existed are under `links` (`kgp1`). Each proof names its `cell`, whose chain \
                   holds its block. Another organisation's task is a 404.",
    responses(
        (status = 200, description = "The task's proofs", body = TaskProofsView),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this caller", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn proofs_of_task(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(task_id): ApiPath<uuid::Uuid>,
) -> Result<Json<TaskProofsView>, ApiError> {
    let scope = caller.read_scope()?;
    task_proofs(&state, scope, TaskId(task_id)).await?.map(Json).ok_or(ApiError::NotFound("task"))
}

#[utoipa::path(get, path = "/v1/proofs/links", tag = "ledger", params(ProofQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "The `kgp1` links of the chain (one per result credited before proof blocks existed), in seq order; an organisation sees its own tasks' links", body = ProofPage),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn proofs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ProofQuery>,
) -> Result<Json<ProofPage>, ApiError> {
    let scope = caller.read_scope()?;
    let (after_seq, limit) = page_bounds(query.after_seq, "after_seq", query.limit)?;
    let cell = cell_or_default(&state, query.cell.as_deref())?;
    Ok(Json(proof_pages::page(&state, &cell, scope, after_seq, limit).await?))
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

/// A period of the ledger.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CreditPeriod {
    /// Credits at or after this instant (RFC 3339).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Credits before this instant (RFC 3339).
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

#[utoipa::path(get, path = "/v1/credits", tag = "ledger", params(CreditPeriod), security(("bearer" = [])),
    responses(
        (status = 200, description = "Credits per node (an organisation sees its own nodes) and the cooperative fund, in the period asked for (all time when none), with each node's recent average per day", body = CreditsView),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid period", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn credits(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(period): ApiQuery<CreditPeriod>,
) -> Result<Json<CreditsView>, ApiError> {
    let scope = caller.read_scope()?;
    if let (Some(since), Some(until)) = (period.since, period.until)
        && until <= since
    {
        return Err(ApiError::field("until", "must be after since"));
    }
    Ok(Json(ledger_credits::credits(&state, scope, (period.since, period.until)).await?))
}

#[utoipa::path(get, path = "/v1/proofs/verify", tag = "ledger", params(VerifyQuery), security(("bearer" = [])),
    description = "Verifies a cell's whole chain (`kgp1` links, then `kgp2` blocks with their leaves), or every cell's \
                   (each cell has its own chain): then `valid` holds when all do, `cells` has each cell's verdict, and the \
                   other fields are the first broken cell's, else the default cell's.",
    responses(
        (status = 200, description = "Whether the chain verifies, and where it breaks: the first link, or the first block and, when it can be named, the leaf", body = VerifyView),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown cell", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn verify_proofs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<VerifyQuery>,
) -> Result<Json<VerifyView>, ApiError> {
    caller.read_scope()?;
    match query.cell.as_deref() {
        None | Some("all") => Ok(Json(verify_all(&state).await?)),
        Some(cell) => Ok(Json(verify_chain(&state, &known_cell(&state, cell)?).await?)),
    }
}
