//! The green-proof chain, verified from its first link by the shared verifier.

use grid_shared::carbon::{MicroWattHours, Nanograms, PicoEuros};
use grid_shared::ids::{NodeId, TaskId};
use grid_shared::proof::{ChainVerdict, ChainVerifier, ProofDraft, ProofLink};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

const PAGE: i64 = 1_000;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyView {
    pub valid: bool,
    pub length: u64,
    pub head_hash: String,
    pub first_invalid_seq: Option<i64>,
    pub reason: Option<String>,
}

impl From<ChainVerdict> for VerifyView {
    fn from(verdict: ChainVerdict) -> Self {
        Self {
            valid: verdict.valid,
            length: verdict.length,
            head_hash: verdict.head_hash,
            first_invalid_seq: verdict.first_invalid_seq,
            reason: verdict.reason,
        }
    }
}

pub async fn verify_chain(state: &AppState) -> Result<VerifyView, ApiError> {
    let mut verifier = ChainVerifier::new(state.config.grid.proof_difficulty);
    let mut after_seq = 0_i64;
    loop {
        let rows = sqlx::query(
            "select seq, task_id, node_id, energy_uwh, solar_uwh, carbon_ng, value_peur, created_at, difficulty,
                 prev_hash, nonce, hash
             from green_proof where seq > $1 order by seq limit $2",
        )
        .bind(after_seq)
        .bind(PAGE)
        .fetch_all(&state.pool)
        .await?;
        let mut intact = true;
        for row in &rows {
            let difficulty: i16 = row.try_get("difficulty")?;
            let link = ProofLink {
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
            };
            after_seq = link.draft.seq;
            if !verifier.push(&link) {
                intact = false;
                break;
            }
        }
        if !intact || (rows.len() as i64) < PAGE {
            break;
        }
    }
    Ok(verifier.finish().into())
}
