//! The green-proof chain, verified from its first link by the shared verifier, reading the same
//! pages as `GET /v1/proofs`.

use grid_shared::carbon::{MicroWattHours, Nanograms, PicoEuros};
use grid_shared::ids::{NodeId, TaskId};
use grid_shared::proof::{ChainVerdict, ChainVerifier, ProofDraft, ProofLink};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::proof_pages::ProofView;
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
        let page = super::proof_pages::page(state, None, after_seq, PAGE).await?;
        let intact = page.proofs.iter().all(|view| {
            after_seq = view.seq;
            verifier.push(&link_of(view))
        });
        if !intact || page.next_after_seq.is_none() {
            break;
        }
    }
    Ok(verifier.finish().into())
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
