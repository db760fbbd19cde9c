//! The green-proof chain, page by page: the `kgp2` blocks (no task data: everyone sees them),
//! and the `kgp1` links of v1 (the operator sees every link; an organisation the links of its
//! own tasks, each verifiable on its own: hash and work).

use grid_shared::blocks::{Block, BlockRow};
use grid_shared::cells::CellName;
use grid_shared::ids::OrganizationId;
use serde::{Deserialize, Serialize};
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

/// The `kgp1` links of a task (results credited before proof blocks existed).
pub async fn links_of_task(state: &AppState, task_id: grid_shared::ids::TaskId) -> Result<Vec<ProofView>, ApiError> {
    Ok(sqlx::query_as!(
        ProofView,
        "select seq, task_id, node_id, energy_uwh, solar_uwh, carbon_ng, value_peur, created_at, difficulty, prev_hash,
                nonce, hash
         from green_proof where task_id = $1 order by seq",
        task_id.as_uuid()
    )
    .fetch_all(&state.pool)
    .await?)
}

/// A sealed block of the chain: its line's fields, the line itself and its hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BlockView {
    pub height: i64,
    pub prev_hash: String,
    /// RFC 6962 Merkle Tree Hash of the block's leaves, in leaf order.
    pub merkle_root: String,
    pub leaf_count: i64,
    pub sealed_at: chrono::DateTime<chrono::Utc>,
    pub difficulty: i16,
    pub nonce: i64,
    /// SHA-256 of `line`, with `difficulty` leading zero bits.
    pub hash: String,
    /// `kgp2|height|prev_hash|merkle_root|leaf_count|sealed_at|difficulty|nonce`.
    pub line: String,
}

impl BlockView {
    pub fn of(block: &Block) -> Self {
        let draft = &block.draft;
        Self {
            height: draft.height,
            prev_hash: draft.prev_hash.clone(),
            merkle_root: draft.merkle_root.clone(),
            leaf_count: draft.leaf_count,
            sealed_at: draft.sealed_at,
            difficulty: i16::from(draft.difficulty),
            nonce: block.nonce,
            hash: block.hash.clone(),
            line: block.line(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BlockPage {
    /// The cell whose chain these blocks are (each cell has its own, heights from 1).
    pub cell: String,
    pub blocks: Vec<BlockView>,
    /// Pass as `after_height` for the next page; absent on the last one.
    pub next_after_height: Option<i64>,
}

/// Up to `limit` of the cell's sealed blocks after `after_height`, in height order.
pub async fn blocks(state: &AppState, cell: &CellName, after_height: i64, limit: i64) -> Result<Vec<Block>, ApiError> {
    let rows = sqlx::query_as!(
        BlockRow,
        "select height, prev_hash, merkle_root, leaf_count, sealed_at, difficulty, nonce, hash
         from proof_block where cell_id = $3 and height > $1 order by height limit $2",
        after_height,
        limit,
        cell.as_str()
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(rows.into_iter().map(Block::from).collect())
}

pub async fn block_page(
    state: &AppState,
    cell: &CellName,
    after_height: i64,
    limit: i64,
) -> Result<BlockPage, ApiError> {
    let blocks: Vec<BlockView> = blocks(state, cell, after_height, limit).await?.iter().map(BlockView::of).collect();
    let next_after_height = if blocks.len() as i64 == limit { blocks.last().map(|block| block.height) } else { None };
    Ok(BlockPage { cell: cell.to_string(), blocks, next_after_height })
}

/// A page of the cell's `kgp1` links after `after_seq` (only the cell `main` has any: they were
/// written before cells), those of `scope`'s tasks only if given.
pub async fn page(
    state: &AppState,
    cell: &CellName,
    scope: Option<OrganizationId>,
    after_seq: i64,
    limit: i64,
) -> Result<ProofPage, ApiError> {
    let proofs = sqlx::query_as!(
        ProofView,
        "select g.seq, g.task_id, g.node_id, g.energy_uwh, g.solar_uwh, g.carbon_ng, g.value_peur, g.created_at,
                g.difficulty, g.prev_hash, g.nonce, g.hash
         from green_proof g
         where g.cell_id = $4 and g.seq > $1
           and ($2::uuid is null or exists (select 1 from task t where t.cell_id = g.cell_id and t.task_id = g.task_id
                                            and t.organization_id = $2))
         order by g.seq limit $3",
        after_seq,
        scope.map(|id| id.as_uuid()),
        limit,
        cell.as_str()
    )
    .fetch_all(&state.pool)
    .await?;
    let next_after_seq = if proofs.len() as i64 == limit { proofs.last().map(|proof| proof.seq) } else { None };
    Ok(ProofPage { proofs, next_after_seq })
}
