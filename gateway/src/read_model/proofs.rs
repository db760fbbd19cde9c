//! The green-proof chain verified from its first link by the shared verifier, reading the same
//! pages as `GET /v1/proofs/links` and `GET /v1/proofs`; and the inclusion proofs of a task's
//! credited results (`GET /v1/proofs/tasks/{task_id}`).

use grid_shared::blocks::{Block, BlockRow, ChainAudit, LeafRow, StoredLeaf};
use grid_shared::carbon::{MicroWattHours, Nanograms, PicoEuros};
use grid_shared::cells::CellName;
use grid_shared::ids::{NodeId, OrganizationId, TaskId};
use grid_shared::merkle::{self, Hash};
use grid_shared::proof::{ChainVerdict, ProofDraft, ProofLink};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::proof_pages::{BlockView, ProofView};
use crate::error::ApiError;
use crate::state::AppState;

const PAGE: i64 = 1_000;
const BLOCK_PAGE: i64 = 50;

/// A chain's verdict. For one cell, that cell's; for all cells, `valid` holds when every cell's
/// chain does, `cells` has each cell's verdict, and the other fields are the first broken cell's
/// verdict, else the default cell's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyView {
    /// The cell the fields below are about (each cell has its own chain).
    pub cell: String,
    pub valid: bool,
    /// `kgp1` links verified.
    pub length: u64,
    /// `kgp2` blocks and leaves verified.
    pub blocks: u64,
    pub leaves: u64,
    /// The last block verified (the last link's hash before any block).
    pub head_hash: String,
    pub head_height: Option<i64>,
    /// The first link that does not hold (v1).
    pub first_invalid_seq: Option<i64>,
    /// The first block that does not hold, and the leaf at fault when it can be named.
    pub first_invalid_block: Option<i64>,
    pub first_invalid_leaf: Option<i64>,
    pub reason: Option<String>,
    /// Each cell's verdict, when every cell was verified (empty when one was asked for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(no_recursion)]
    pub cells: Vec<VerifyView>,
}

impl VerifyView {
    fn of(cell: &CellName, verdict: ChainVerdict) -> Self {
        Self {
            cell: cell.to_string(),
            cells: Vec::new(),
            valid: verdict.valid,
            length: verdict.length,
            blocks: verdict.blocks,
            leaves: verdict.leaves,
            head_hash: verdict.head_hash,
            head_height: verdict.head_height,
            first_invalid_seq: verdict.first_invalid_seq,
            first_invalid_block: verdict.first_invalid_block,
            first_invalid_leaf: verdict.first_invalid_leaf,
            reason: verdict.reason,
        }
    }
}

/// Verifies every cell's chain (see [`VerifyView`]).
pub async fn verify_all(state: &AppState) -> Result<VerifyView, ApiError> {
    let mut cells = Vec::new();
    for cell in state.config.grid.cells.iter() {
        cells.push(verify_chain(state, &cell.name).await?);
    }
    let default = state.default_cell().as_str();
    let shown = cells.iter().find(|view| !view.valid).or_else(|| cells.iter().find(|view| view.cell == default));
    let mut view = shown.cloned().ok_or_else(|| ApiError::Internal("the grid has no cell".to_owned()))?;
    view.valid = cells.iter().all(|cell| cell.valid);
    view.cells = cells;
    Ok(view)
}

/// Verifies one cell's chain from its first link.
pub async fn verify_chain(state: &AppState, cell: &CellName) -> Result<VerifyView, ApiError> {
    let mut audit = ChainAudit::new(state.config.grid.proof_difficulty);
    let mut after_seq = 0_i64;
    let mut intact = loop {
        let page = super::proof_pages::page(state, cell, None, after_seq, PAGE).await?;
        let intact = page.proofs.iter().all(|view| {
            after_seq = view.seq;
            audit.push_link(&link_of(view))
        });
        if !intact || page.next_after_seq.is_none() {
            break intact;
        }
    };
    let mut after_height = 0_i64;
    while intact {
        let blocks = super::proof_pages::blocks(state, cell, after_height, BLOCK_PAGE).await?;
        let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else { break };
        let mut leaves = block_leaves(state, cell, first.draft.height, last.draft.height).await?;
        after_height = last.draft.height;
        let last_page = (blocks.len() as i64) < BLOCK_PAGE;
        // Up to 100,000 leaves hashed: off the runtime's threads, which serve other requests.
        (audit, intact) = tokio::task::spawn_blocking(move || {
            let intact = blocks
                .iter()
                .all(|block| audit.push_block(block, &leaves.remove(&block.draft.height).unwrap_or_default()));
            (audit, intact)
        })
        .await
        .map_err(|error| ApiError::Internal(format!("chain verification stopped: {error}")))?;
        if last_page {
            break;
        }
    }
    Ok(VerifyView::of(cell, audit.finish()))
}

/// The stored leaves of the cell's blocks `first..=last`, by block, in leaf order.
async fn block_leaves(
    state: &AppState,
    cell: &CellName,
    first: i64,
    last: i64,
) -> Result<std::collections::HashMap<i64, Vec<StoredLeaf>>, ApiError> {
    let rows = sqlx::query_as!(
        LeafRow,
        "select cell_id, block_height, leaf_index, task_id, node_id, attempt, energy_uwh, solar_uwh, carbon_ng,
             node_peur, cooperative_peur, credited_at, leaf_hash, zone, intensity_hour, intensity_mg_per_kwh,
             intensity_kind, intensity_source, price_peur_per_kg, node_share_percent
         from proof_leaf where cell_id = $3 and block_height between $1 and $2 order by block_height, leaf_index",
        first,
        last,
        cell.as_str()
    )
    .fetch_all(&state.pool)
    .await?;
    let mut leaves: std::collections::HashMap<i64, Vec<StoredLeaf>> = std::collections::HashMap::new();
    for row in rows {
        leaves.entry(row.block_height).or_default().push(row.stored().map_err(ApiError::Internal)?);
    }
    Ok(leaves)
}

fn link_of(view: &ProofView) -> ProofLink {
    ProofLink {
        draft: ProofDraft {
            seq: view.seq,
            task_id: TaskId(view.task_id),
            node_id: NodeId(view.node_id),
            energy: MicroWattHours(view.energy_uwh),
            solar: MicroWattHours(view.solar_uwh),
            carbon: Nanograms(view.carbon_ng),
            value: PicoEuros(view.value_peur),
            created_at: view.created_at,
            difficulty: u8::try_from(view.difficulty).unwrap_or(u8::MAX),
            prev_hash: view.prev_hash.clone(),
        },
        nonce: view.nonce,
        hash: view.hash.clone(),
    }
}

/// The proof of one credited result: its leaf, and once its block is sealed, the audit path
/// from the leaf to the block's Merkle root and the block.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InclusionView {
    /// The cell whose chain holds the leaf (each cell has its own; its blocks are
    /// `GET /v1/proofs?cell=`).
    pub cell: String,
    pub node_id: uuid::Uuid,
    /// `sealed`, or `pending` until the leaf's block is sealed (within about a second).
    pub status: String,
    /// `kgp3-leaf|task_id|node_id|attempt|energy_uwh|solar_uwh|zone|hour|intensity_mg_per_kwh|intensity_kind|
    /// intensity_source|price_peur_per_kg|node_share_percent|carbon_ng|node_peur|cooperative_peur|credited_at`
    /// (one line), or for credits from before carbon signals
    /// `kgp2-leaf|task_id|node_id|attempt|energy_uwh|solar_uwh|carbon_ng|node_peur|cooperative_peur|credited_at`.
    pub leaf_line: String,
    /// SHA-256 of 0x00 followed by the leaf line.
    pub leaf_hash: String,
    pub block_height: i64,
    pub leaf_index: i64,
    /// The block's leaf count (the tree's size), once sealed.
    pub tree_size: Option<i64>,
    /// Sibling hashes from the leaf up to the root (RFC 6962 PATH), once sealed.
    pub audit_path: Vec<String>,
    pub block: Option<BlockView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskProofsView {
    pub task_id: uuid::Uuid,
    /// One per credited result (a replicated task may credit several nodes).
    pub proofs: Vec<InclusionView>,
    /// Results credited before proof blocks existed, as `kgp1` links.
    pub links: Vec<ProofView>,
}

/// The proofs of a task's credited results; `None` when the caller cannot see the task.
pub async fn task_proofs(
    state: &AppState,
    scope: Option<OrganizationId>,
    task_id: TaskId,
) -> Result<Option<TaskProofsView>, ApiError> {
    let visible = sqlx::query_scalar!(
        r#"select exists (select 1 from task where task_id = $1 and ($2::uuid is null or organization_id = $2))
             as "visible!""#,
        task_id.as_uuid(),
        scope.map(|id| id.as_uuid())
    )
    .fetch_one(&state.pool)
    .await?;
    if !visible {
        return Ok(None);
    }
    let rows = sqlx::query_as!(
        LeafRow,
        "select cell_id, block_height, leaf_index, task_id, node_id, attempt, energy_uwh, solar_uwh, carbon_ng,
             node_peur, cooperative_peur, credited_at, leaf_hash, zone, intensity_hour, intensity_mg_per_kwh,
             intensity_kind, intensity_source, price_peur_per_kg, node_share_percent
         from proof_leaf where task_id = $1 order by block_height, leaf_index",
        task_id.as_uuid()
    )
    .fetch_all(&state.pool)
    .await?;
    let mut proofs = Vec::with_capacity(rows.len());
    for row in rows {
        let (cell, height) = (row.cell_id.clone(), row.block_height);
        proofs.push(inclusion(state, cell, height, row.stored().map_err(ApiError::Internal)?).await?);
    }
    let links = super::proof_pages::links_of_task(state, task_id).await?;
    Ok(Some(TaskProofsView { task_id: task_id.as_uuid(), proofs, links }))
}

async fn inclusion(state: &AppState, cell: String, height: i64, stored: StoredLeaf) -> Result<InclusionView, ApiError> {
    let block = sqlx::query_as!(
        BlockRow,
        "select height, prev_hash, merkle_root, leaf_count, sealed_at, difficulty, nonce, hash
         from proof_block where cell_id = $1 and height = $2",
        cell,
        height
    )
    .fetch_optional(&state.pool)
    .await?
    .map(Block::from);
    // The siblings are the hashes the block committed to, as stored with their leaves.
    let hashes: Vec<String> = match &block {
        None => Vec::new(),
        Some(_) => {
            sqlx::query_scalar!(
                "select leaf_hash from proof_leaf where cell_id = $1 and block_height = $2 order by leaf_index",
                cell,
                height
            )
            .fetch_all(&state.pool)
            .await?
        }
    };
    let mut view = InclusionView {
        cell,
        node_id: stored.leaf.node_id.as_uuid(),
        status: "pending".to_owned(),
        leaf_line: stored.leaf.line(),
        leaf_hash: hex::encode(stored.leaf.hash()),
        block_height: height,
        leaf_index: stored.leaf_index,
        tree_size: None,
        audit_path: Vec::new(),
        block: None,
    };
    let Some(block) = block else { return Ok(view) };
    let hashes: Vec<Hash> = hashes
        .iter()
        .map(|text| {
            let mut hash = [0_u8; 32];
            hex::decode_to_slice(text, &mut hash).map(|()| hash)
        })
        .collect::<Result<_, _>>()
        .map_err(|error| ApiError::Internal(format!("a stored leaf hash is not hex: {error}")))?;
    let index = usize::try_from(stored.leaf_index).unwrap_or(usize::MAX);
    let path = merkle::audit_path(&hashes, index).unwrap_or_default();
    view.status = "sealed".to_owned();
    view.tree_size = Some(block.draft.leaf_count);
    view.audit_path = path.iter().map(hex::encode).collect();
    view.block = Some(BlockView::of(&block));
    Ok(view)
}
