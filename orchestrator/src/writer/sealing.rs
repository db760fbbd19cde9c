//! Sealing proof blocks, off the round trip (DESIGN §10): see [`crate::model::chain`]. The
//! decisions are in [`super::decide`]; here, the proof of work runs on a blocking thread.

use tracing::warn;

use super::{Writer, decide};
use crate::model::batch::Batch;

impl Writer {
    /// Sealing, off the round trip: a block mined since the last batch is written with this
    /// one (and its `BlockSealed` event); the open block closes when it is due; the next closed
    /// block starts mining on a blocking thread.
    pub(super) async fn seal(&mut self, batch: &mut Batch) {
        if let Some(sealing) = self.sealing.take_if(|sealing| sealing.is_finished()) {
            match sealing.await {
                Ok(block) => {
                    let height = block.draft.height;
                    if decide::sealed_block(&mut self.state, &mut self.context, batch, block) {
                        self.blocks_sealed += 1;
                    } else {
                        warn!(height, "a mined block is no longer the next to seal; dropped");
                    }
                }
                Err(error) => warn!(%error, "mining a block failed; mining it again"),
            }
        }
        let mining = self.sealing.is_some();
        if let Some(draft) = decide::next_to_mine(&mut self.state, &self.rules, &self.context, mining) {
            self.sealing = Some(tokio::task::spawn_blocking(move || draft.mine()));
        }
    }
}
