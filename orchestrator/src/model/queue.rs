//! The queued tasks that may be placed now (not waiting out a backoff), in two orders: the
//! queue's own (priority, then deadline, then age) and by deadline alone, so that a round can
//! look at the first tasks of each and a low priority never starves a deadline.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use grid_shared::ids::TaskId;

use super::Task;

type QueueKey = (Reverse<u8>, DateTime<Utc>, DateTime<Utc>, TaskId);

#[derive(Debug, Clone, Default)]
pub struct Queue {
    by_priority: BTreeSet<QueueKey>,
    by_deadline: BTreeSet<(DateTime<Utc>, QueueKey)>,
}

impl Queue {
    fn key(task: &Task) -> QueueKey {
        (Reverse(task.priority), task.deadline, task.submitted_at, task.task_id)
    }

    pub fn push(&mut self, task: &Task) {
        let key = Self::key(task);
        self.by_priority.insert(key);
        self.by_deadline.insert((task.deadline, key));
    }

    pub fn remove(&mut self, task: &Task) {
        let key = Self::key(task);
        self.by_priority.remove(&key);
        self.by_deadline.remove(&(task.deadline, key));
    }

    pub fn len(&self) -> usize {
        self.by_priority.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_priority.is_empty()
    }

    /// Whether the task is in the queue (as it is now: a changed task must be removed first).
    pub fn contains(&self, task: &Task) -> bool {
        self.by_priority.contains(&Self::key(task))
    }

    /// Every task in the queue, in queue order (for checks that both orders hold the same).
    pub fn task_ids(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.by_priority.iter().map(|key| key.3)
    }

    /// Whether the two orders hold the same tasks.
    pub fn orders_agree(&self) -> bool {
        self.by_priority.len() == self.by_deadline.len()
            && self.by_deadline.iter().all(|(deadline, key)| *deadline == key.1 && self.by_priority.contains(key))
    }

    /// Up to `limit` tasks from the head of each order, without repeats, in queue order.
    /// O(limit × log limit).
    pub fn candidates(&self, limit: usize) -> Vec<TaskId> {
        let mut chosen: Vec<QueueKey> = self.by_priority.iter().take(limit).copied().collect();
        let Some(last) = chosen.last().copied() else { return Vec::new() };
        // The most urgent tasks that the head in queue order does not hold already.
        chosen.extend(self.by_deadline.iter().take(limit).map(|(_, key)| *key).filter(|key| *key > last));
        chosen.sort_unstable();
        chosen.into_iter().map(|key| key.3).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lifecycle::tests::queued_task;

    #[test]
    fn candidates_follow_the_queue_order_and_include_the_most_urgent() {
        let mut queue = Queue::default();
        let now = Utc::now();
        let mut tasks = Vec::new();
        for index in 0..10 {
            let mut task = queued_task(now);
            task.priority = 9;
            task.deadline = now + chrono::Duration::hours(2 + index);
            tasks.push(task);
        }
        let mut urgent_low = queued_task(now);
        urgent_low.priority = 0;
        urgent_low.deadline = now + chrono::Duration::minutes(5);
        for task in tasks.iter().chain([&urgent_low]) {
            queue.push(task);
        }
        let candidates = queue.candidates(3);
        assert_eq!(candidates, vec![tasks[0].task_id, tasks[1].task_id, tasks[2].task_id, urgent_low.task_id]);
        queue.remove(&urgent_low);
        assert_eq!(queue.len(), 10);
        assert_eq!(queue.candidates(2), vec![tasks[0].task_id, tasks[1].task_id]);
    }
}
