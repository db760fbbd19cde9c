//! Sealing proof blocks, off the round trip (DESIGN §10): see [`crate::model::chain`].

use chrono::Utc;
use grid_shared::envelope::{Actor, Origin};
use grid_shared::events::{BlockSealed, Event};
use tracing::warn;

use super::Writer;
use crate::model::batch::Batch;
use crate::model::lifecycle::Recorded;

impl Writer {
    /// Sealing, off the round trip: a block mined since the last batch is written with this
    /// one (and its `BlockSealed` event); the open block closes when it is due; the next closed
    /// block starts mining on a blocking thread.
    pub(super) async fn seal(&mut self, batch: &mut Batch, now: chrono::DateTime<Utc>) {
        if self.sealing.as_ref().is_some_and(tokio::task::JoinHandle::is_finished) {
            let mined = self.sealing.take().expect("checked").await;
            match mined {
                Ok(block) if self.state.chain.sealed(block.draft.height, &block.hash) => {
                    let draft = &block.draft;
                    let event = Event::BlockSealed(BlockSealed {
                        height: draft.height,
                        prev_hash: draft.prev_hash.clone(),
                        merkle_root: draft.merkle_root.clone(),
                        leaf_count: draft.leaf_count,
                        sealed_at: draft.sealed_at,
                        difficulty: draft.difficulty,
                        nonce: block.nonce,
                        hash: block.hash.clone(),
                    });
                    let origin = Origin {
                        correlation_id: uuid::Uuid::new_v4(),
                        causation_id: None,
                        organization_id: None,
                        actor: Actor::Orchestrator,
                    };
                    batch.record(&mut self.state, origin, None, Recorded { event, notify_node: None }, None);
                    batch.sealed.push(block);
                    self.blocks_sealed += 1;
                }
                Ok(block) => warn!(height = block.draft.height, "a mined block is no longer the next to seal; dropped"),
                Err(error) => warn!(%error, "mining a block failed; mining it again"),
            }
        }
        self.state.chain.close_if_due(now, self.rules.block_max_leaves, self.rules.seal_interval);
        if self.sealing.is_none()
            && let Some(draft) = self.state.chain.next_draft(now, self.rules.proof_difficulty)
        {
            self.sealing = Some(tokio::task::spawn_blocking(move || draft.mine()));
        }
    }
}
