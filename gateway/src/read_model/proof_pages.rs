//! The green-proof chain, page by page. The operator sees every link; an organisation sees the
//! links of its own tasks (each verifiable on its own: hash and work).

use grid_shared::ids::OrganizationId;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProofView {
    pub seq: i64,
    pub task_id: uuid::Uuid,
    pub node_id: uuid::Uuid,
    pub energy_uwh: i64,
    pub solar_uwh: i64,
    pub carbon_ng: i64,
    pub value_peur: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub difficulty: i16,
    pub prev_hash: String,
    pub nonce: i64,
    pub hash: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProofPage {
    pub proofs: Vec<ProofView>,
    /// Pass as `after_seq` for the next page; absent on the last one.
    pub next_after_seq: Option<i64>,
}

pub async fn page(
    state: &AppState,
    scope: Option<OrganizationId>,
    after_seq: i64,
    limit: i64,
) -> Result<ProofPage, ApiError> {
    let rows = sqlx::query(
        "select g.seq, g.task_id, g.node_id, g.energy_uwh, g.solar_uwh, g.carbon_ng, g.value_peur, g.created_at,
                g.difficulty, g.prev_hash, g.nonce, g.hash
         from green_proof g
         where g.seq > $1
           and ($2::uuid is null or exists (select 1 from task t where t.task_id = g.task_id and t.organization_id = $2))
         order by g.seq limit $3",
    )
    .bind(after_seq)
    .bind(scope.map(|id| id.as_uuid()))
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    let proofs = rows
        .iter()
        .map(|row| {
            Ok(ProofView {
                seq: row.try_get("seq")?,
                task_id: row.try_get("task_id")?,
                node_id: row.try_get("node_id")?,
                energy_uwh: row.try_get("energy_uwh")?,
                solar_uwh: row.try_get("solar_uwh")?,
                carbon_ng: row.try_get("carbon_ng")?,
                value_peur: row.try_get("value_peur")?,
                created_at: row.try_get("created_at")?,
                difficulty: row.try_get("difficulty")?,
                prev_hash: row.try_get("prev_hash")?,
                nonce: row.try_get("nonce")?,
                hash: row.try_get("hash")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let next_after_seq = if proofs.len() as i64 == limit { proofs.last().map(|proof| proof.seq) } else { None };
    Ok(ProofPage { proofs, next_after_seq })
}
