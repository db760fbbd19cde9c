//! Reading the stored chain back and verifying it, page by page, from the first link.

use grid_shared::carbon::{MicroWattHours, Nanograms, PicoEuros};
use grid_shared::ids::{NodeId, TaskId};
use grid_shared::proof::{ChainVerdict, ChainVerifier, ProofDraft, ProofLink};
use sqlx::{PgPool, Row};

const PAGE: i64 = 1_000;

/// Up to `limit` links after `after_seq`, in seq order.
pub async fn load_chain_page(pool: &PgPool, after_seq: i64, limit: i64) -> Result<Vec<ProofLink>, sqlx::Error> {
    let rows = sqlx::query(
        "select seq, task_id, node_id, energy_uwh, solar_uwh, carbon_ng, value_peur, created_at, difficulty,
             prev_hash, nonce, hash
         from green_proof where seq > $1 order by seq limit $2",
    )
    .bind(after_seq)
    .bind(limit)
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

/// Verifies the whole stored chain, stopping at the first broken link.
pub async fn verify_stored_chain(pool: &PgPool, min_difficulty: u8) -> Result<ChainVerdict, sqlx::Error> {
    let mut verifier = ChainVerifier::new(min_difficulty);
    let mut after_seq = 0;
    loop {
        let page = load_chain_page(pool, after_seq, PAGE).await?;
        let Some(last) = page.last() else { break };
        after_seq = last.draft.seq;
        let full_page = page.len() as i64 == PAGE;
        if !page.iter().all(|link| verifier.push(link)) || !full_page {
            break;
        }
    }
    Ok(verifier.finish())
}
