//! The green-proof chain as the writer holds it (DESIGN §10): the head, the block taking new
//! leaves, and the blocks closed and waiting to be sealed. A credit takes the next place of the
//! open block at once (its leaf row is written with its credit); the block closes when it holds
//! `block_max_leaves` leaves or when its first leaf is `seal_interval` old, and is then sealed
//! (its proof of work mined off the writer's thread) and written in a later batch. Nothing on a
//! task's round trip waits for a seal.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use grid_shared::blocks::BlockDraft;
use grid_shared::merkle::Hash;
use grid_shared::proof::storable_time;

/// A block whose leaves are being gathered, or all known and waiting to be sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBlock {
    pub height: i64,
    pub leaves: Vec<Hash>,
    /// When its first leaf came.
    pub opened_at: Option<DateTime<Utc>>,
}

impl PendingBlock {
    fn new(height: i64) -> Self {
        Self { height, leaves: Vec::new(), opened_at: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofChain {
    /// The last sealed block's height (0 before the first) and hash (before the first block,
    /// the last `kgp1` link's, or the genesis hash).
    pub height: i64,
    pub head_hash: String,
    /// Closed blocks, oldest first; sealed in that order, one at a time.
    pub closed: VecDeque<PendingBlock>,
    pub open: PendingBlock,
}

impl ProofChain {
    pub fn new(height: i64, head_hash: &str) -> Self {
        Self { height, head_hash: head_hash.to_owned(), closed: VecDeque::new(), open: PendingBlock::new(height + 1) }
    }

    /// Rebuilds the pending blocks from their stored leaves (height, index, hash), in order:
    /// every block with leaves is closed (the writer that gathered them is gone), and new
    /// leaves go to the next height.
    pub fn with_pending(mut self, leaves: impl IntoIterator<Item = (i64, Hash)>, now: DateTime<Utc>) -> Self {
        for (height, hash) in leaves {
            if self.closed.back().is_none_or(|block| block.height != height) {
                self.closed.push_back(PendingBlock { height, leaves: Vec::new(), opened_at: Some(now) });
            }
            if let Some(block) = self.closed.back_mut() {
                block.leaves.push(hash);
            }
        }
        let next = self.closed.back().map_or(self.height, |block| block.height) + 1;
        self.open = PendingBlock::new(next);
        self
    }

    /// Gives a credited result's leaf its place: (block height, leaf index).
    pub fn add_leaf(&mut self, hash: Hash, now: DateTime<Utc>) -> (i64, i64) {
        let index = i64::try_from(self.open.leaves.len()).unwrap_or(i64::MAX);
        self.open.leaves.push(hash);
        self.open.opened_at.get_or_insert(now);
        (self.open.height, index)
    }

    /// Closes the open block when it is full or old enough; true when it did.
    pub fn close_if_due(&mut self, now: DateTime<Utc>, max_leaves: usize, interval: Duration) -> bool {
        let due = match self.open.opened_at {
            Some(opened_at) => self.open.leaves.len() >= max_leaves || now >= opened_at + interval,
            None => false,
        };
        if due {
            let next = PendingBlock::new(self.open.height + 1);
            self.closed.push_back(std::mem::replace(&mut self.open, next));
        }
        due
    }

    /// When the open block must close at the latest.
    pub fn close_due_at(&self, interval: Duration) -> Option<DateTime<Utc>> {
        self.open.opened_at.map(|opened_at| opened_at + interval)
    }

    /// The draft of the next block to seal, chaining onto the head.
    pub fn next_draft(&self, now: DateTime<Utc>, difficulty: u8) -> Option<BlockDraft> {
        let block = self.closed.front()?;
        Some(BlockDraft::of_leaves(block.height, &self.head_hash, &block.leaves, storable_time(now), difficulty))
    }

    /// Records the block just sealed as the head; false when it is not the next one to seal.
    pub fn sealed(&mut self, height: i64, hash: &str) -> bool {
        if self.closed.front().is_none_or(|block| block.height != height) {
            return false;
        }
        self.closed.pop_front();
        self.height = height;
        self.head_hash = hash.to_owned();
        true
    }

    /// Leaves credited and not yet sealed.
    pub fn pending_leaves(&self) -> usize {
        self.closed.iter().map(|block| block.leaves.len()).sum::<usize>() + self.open.leaves.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grid_shared::merkle::leaf_hash;
    use grid_shared::proof::GENESIS_HASH;

    #[test]
    fn leaves_fill_a_block_that_closes_when_full_or_old_and_is_sealed_in_order() {
        let now = Utc::now();
        let mut chain = ProofChain::new(0, GENESIS_HASH);
        assert_eq!(chain.add_leaf(leaf_hash(b"a"), now), (1, 0));
        assert_eq!(chain.add_leaf(leaf_hash(b"b"), now), (1, 1));
        assert!(!chain.close_if_due(now, 3, Duration::seconds(1)), "neither full nor old");
        assert_eq!(chain.add_leaf(leaf_hash(b"c"), now), (1, 2));
        assert!(chain.close_if_due(now, 3, Duration::seconds(1)), "full");
        assert_eq!(chain.add_leaf(leaf_hash(b"d"), now), (2, 0));
        assert!(chain.close_if_due(now + Duration::seconds(1), 3, Duration::seconds(1)), "old");
        assert_eq!(chain.pending_leaves(), 4);
        let first = chain.next_draft(now, 0).unwrap();
        assert_eq!((first.height, first.leaf_count, first.prev_hash.as_str()), (1, 3, GENESIS_HASH));
        assert!(!chain.sealed(2, "x"), "sealed in order");
        let block = first.mine();
        assert!(chain.sealed(1, &block.hash));
        let second = chain.next_draft(now, 0).unwrap();
        assert_eq!((second.height, second.prev_hash), (2, block.hash));
        assert!(chain.close_due_at(Duration::seconds(1)).is_none(), "the open block is empty");
    }

    #[test]
    fn pending_leaves_found_at_takeover_are_closed_and_new_ones_go_after_them() {
        let chain = ProofChain::new(4, "ab")
            .with_pending([(5, leaf_hash(b"a")), (5, leaf_hash(b"b")), (6, leaf_hash(b"c"))], Utc::now());
        assert_eq!(
            chain.closed.iter().map(|block| (block.height, block.leaves.len())).collect::<Vec<_>>(),
            [(5, 2), (6, 1)]
        );
        assert_eq!(chain.open.height, 7);
    }
}
