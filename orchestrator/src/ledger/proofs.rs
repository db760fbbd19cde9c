//! Reading the stored chain back and verifying it: the `kgp1` links page by page from the
//! first, then the `kgp2` blocks with their leaves.

use grid_shared::blocks::{Block, BlockRow, ChainAudit, LeafRow, StoredLeaf};
use grid_shared::carbon::{MicroWattHours, Nanograms, PicoEuros};
use grid_shared::ids::{NodeId, TaskId};
use grid_shared::proof::{ChainVerdict, ProofDraft, ProofLink};
use sqlx::PgPool;

const PAGE: i64 = 1_000;
/// Blocks read at once (with all their leaves).
const BLOCK_PAGE: i64 = 50;

/// Up to `limit` of the cell's links after `after_seq`, in seq order (only the cell `main` has
/// `kgp1` links: they were written before cells).
pub async fn load_chain_page(
    pool: &PgPool,
    cell: &str,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<ProofLink>, sqlx::Error> {
    let rows = sqlx::query!(
        "select seq, task_id, node_id, energy_uwh, solar_uwh, carbon_ng, value_peur, created_at, difficulty,
             prev_hash, nonce, hash
         from green_proof where cell_id = $3 and seq > $1 order by seq limit $2",
        after_seq,
        limit,
        cell
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| ProofLink {
            draft: ProofDraft {
                seq: row.seq,
                task_id: TaskId(row.task_id),
                node_id: NodeId(row.node_id),
                energy: MicroWattHours(row.energy_uwh),
                solar: MicroWattHours(row.solar_uwh),
                carbon: Nanograms(row.carbon_ng),
                value: PicoEuros(row.value_peur),
                created_at: row.created_at,
                difficulty: u8::try_from(row.difficulty).unwrap_or(u8::MAX),
                prev_hash: row.prev_hash,
            },
            nonce: row.nonce,
            hash: row.hash,
        })
        .collect())
}

/// Up to `limit` of the cell's blocks after `after_height`, each with its leaves in leaf order.
pub async fn load_block_page(
    pool: &PgPool,
    cell: &str,
    after_height: i64,
    limit: i64,
) -> Result<Vec<(Block, Vec<StoredLeaf>)>, sqlx::Error> {
    let rows = sqlx::query_as!(
        BlockRow,
        "select height, prev_hash, merkle_root, leaf_count, sealed_at, difficulty, nonce, hash
         from proof_block where cell_id = $3 and height > $1 order by height limit $2",
        after_height,
        limit,
        cell
    )
    .fetch_all(pool)
    .await?;
    let mut blocks: Vec<(Block, Vec<StoredLeaf>)> = rows.into_iter().map(|row| (row.into(), Vec::new())).collect();
    let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else { return Ok(blocks) };
    let (first, last) = (first.0.draft.height, last.0.draft.height);
    let leaves = sqlx::query_as!(
        LeafRow,
        "select cell_id, block_height, leaf_index, task_id, node_id, attempt, energy_uwh, solar_uwh, carbon_ng,
             node_peur, cooperative_peur, credited_at, leaf_hash, zone, intensity_hour, intensity_mg_per_kwh,
             intensity_kind, intensity_source, price_peur_per_kg, node_share_percent
         from proof_leaf where cell_id = $3 and block_height between $1 and $2 order by block_height, leaf_index",
        first,
        last,
        cell
    )
    .fetch_all(pool)
    .await?;
    for row in leaves {
        let height = row.block_height;
        let Some((_, stored)) = blocks.iter_mut().find(|(block, _)| block.draft.height == height) else { continue };
        stored.push(row.stored().map_err(|reason| sqlx::Error::Decode(reason.into()))?);
    }
    Ok(blocks)
}

/// Verifies the cell's whole stored chain, v1 links then v2 blocks, stopping at the first break.
pub async fn verify_stored_chain(pool: &PgPool, cell: &str, min_difficulty: u8) -> Result<ChainVerdict, sqlx::Error> {
    let mut audit = ChainAudit::new(min_difficulty);
    let mut after_seq = 0;
    let mut intact = true;
    loop {
        let page = load_chain_page(pool, cell, after_seq, PAGE).await?;
        let Some(last) = page.last() else { break };
        after_seq = last.draft.seq;
        let full_page = page.len() as i64 == PAGE;
        intact = page.iter().all(|link| audit.push_link(link));
        if !intact || !full_page {
            break;
        }
    }
    let mut after_height = 0;
    while intact {
        let page = load_block_page(pool, cell, after_height, BLOCK_PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        after_height = last.draft.height;
        let full_page = page.len() as i64 == BLOCK_PAGE;
        intact = page.iter().all(|(block, leaves)| audit.push_block(block, leaves));
        if !full_page {
            break;
        }
    }
    Ok(audit.finish())
}
