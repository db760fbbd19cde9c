//! Reading the stored chain back and verifying it: the `kgp1` links page by page from the
//! first, then the `kgp2` blocks with their leaves.

use grid_shared::blocks::{Block, BlockDraft, ChainAudit, CreditBasis, LEAF_COLUMNS, Leaf, StoredLeaf};
use grid_shared::carbon::{MicroWattHours, Nanograms, PicoEuros};
use grid_shared::ids::{NodeId, TaskId};
use grid_shared::proof::{ChainVerdict, ProofDraft, ProofLink};
use sqlx::{PgPool, Row};

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
    let rows = sqlx::query(
        "select seq, task_id, node_id, energy_uwh, solar_uwh, carbon_ng, value_peur, created_at, difficulty,
             prev_hash, nonce, hash
         from green_proof where cell_id = $3 and seq > $1 order by seq limit $2",
    )
    .bind(after_seq)
    .bind(limit)
    .bind(cell)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let difficulty: i16 = row.try_get("difficulty")?;
            Ok(ProofLink {
                draft: ProofDraft {
                    seq: row.try_get("seq")?,
                    task_id: TaskId(row.try_get("task_id")?),
                    node_id: NodeId(row.try_get("node_id")?),
                    energy: MicroWattHours(row.try_get("energy_uwh")?),
                    solar: MicroWattHours(row.try_get("solar_uwh")?),
                    carbon: Nanograms(row.try_get("carbon_ng")?),
                    value: PicoEuros(row.try_get("value_peur")?),
                    created_at: row.try_get("created_at")?,
                    difficulty: u8::try_from(difficulty).unwrap_or(u8::MAX),
                    prev_hash: row.try_get("prev_hash")?,
                },
                nonce: row.try_get("nonce")?,
                hash: row.try_get("hash")?,
            })
        })
        .collect()
}

/// Up to `limit` of the cell's blocks after `after_height`, each with its leaves in leaf order.
pub async fn load_block_page(
    pool: &PgPool,
    cell: &str,
    after_height: i64,
    limit: i64,
) -> Result<Vec<(Block, Vec<StoredLeaf>)>, sqlx::Error> {
    let rows = sqlx::query(
        "select height, prev_hash, merkle_root, leaf_count, sealed_at, difficulty, nonce, hash
         from proof_block where cell_id = $3 and height > $1 order by height limit $2",
    )
    .bind(after_height)
    .bind(limit)
    .bind(cell)
    .fetch_all(pool)
    .await?;
    let mut blocks = Vec::with_capacity(rows.len());
    for row in &rows {
        let difficulty: i16 = row.try_get("difficulty")?;
        let leaf_count: i32 = row.try_get("leaf_count")?;
        let block = Block {
            draft: BlockDraft {
                height: row.try_get("height")?,
                prev_hash: row.try_get("prev_hash")?,
                merkle_root: row.try_get("merkle_root")?,
                leaf_count: i64::from(leaf_count),
                sealed_at: row.try_get("sealed_at")?,
                difficulty: u8::try_from(difficulty).unwrap_or(u8::MAX),
            },
            nonce: row.try_get("nonce")?,
            hash: row.try_get("hash")?,
        };
        blocks.push((block, Vec::new()));
    }
    let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else { return Ok(blocks) };
    let (first, last) = (first.0.draft.height, last.0.draft.height);
    // LEAF_COLUMNS is a constant: nothing from outside enters the statement.
    let leaves = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select {LEAF_COLUMNS} from proof_leaf where cell_id = $3 and block_height between $1 and $2
         order by block_height, leaf_index"
    )))
    .bind(first)
    .bind(last)
    .bind(cell)
    .fetch_all(pool)
    .await?;
    for row in &leaves {
        let height: i64 = row.try_get("block_height")?;
        let Some((_, stored)) = blocks.iter_mut().find(|(block, _)| block.draft.height == height) else { continue };
        stored.push(stored_leaf(row)?);
    }
    Ok(blocks)
}

/// A `proof_leaf` row.
pub fn stored_leaf(row: &sqlx::postgres::PgRow) -> Result<StoredLeaf, sqlx::Error> {
    let leaf_index: i32 = row.try_get("leaf_index")?;
    Ok(StoredLeaf {
        leaf_index: i64::from(leaf_index),
        leaf: Leaf {
            task_id: TaskId(row.try_get("task_id")?),
            node_id: NodeId(row.try_get("node_id")?),
            attempt: row.try_get("attempt")?,
            energy: MicroWattHours(row.try_get("energy_uwh")?),
            solar: MicroWattHours(row.try_get("solar_uwh")?),
            carbon: Nanograms(row.try_get("carbon_ng")?),
            node_share: PicoEuros(row.try_get("node_peur")?),
            cooperative_share: PicoEuros(row.try_get("cooperative_peur")?),
            credited_at: row.try_get("credited_at")?,
            basis: CreditBasis::from_columns(
                row.try_get("zone")?,
                row.try_get("intensity_hour")?,
                row.try_get("intensity_mg_per_kwh")?,
                row.try_get("intensity_kind")?,
                row.try_get("intensity_source")?,
                row.try_get("price_peur_per_kg")?,
                row.try_get("node_share_percent")?,
            )
            .map_err(|reason| sqlx::Error::Decode(format!("proof_leaf basis: {reason}").into()))?,
        },
        leaf_hash: row.try_get("leaf_hash")?,
    })
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
