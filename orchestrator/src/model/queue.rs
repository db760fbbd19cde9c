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
    by_deadline: BTreeSet<(DateTime<Utc>, TaskId)>,
}

impl Queue {
    fn key(task: &Task) -> QueueKey {
        (Reverse(task.priority), task.deadline, task.submitted_at, task.task_id)
    }

    pub fn push(&mut self, task: &Task) {
        self.by_priority.insert(Self::key(task));
        self.by_deadline.insert((task.deadline, task.task_id));
    }

    pub fn remove(&mut self, task: &Task) {
        self.by_priority.remove(&Self::key(task));
        self.by_deadline.remove(&(task.deadline, task.task_id));
    }

    pub fn len(&self) -> usize {
        self.by_priority.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_priority.is_empty()
    }

    /// Up to `limit` tasks from the head of each order, without repeats, in queue order.
    pub fn candidates(&self, limit: usize) -> Vec<TaskId> {
        let mut chosen: Vec<QueueKey> = self.by_priority.iter().take(limit).copied().collect();
        let last = chosen.last().copied();
        let mut urgent: Vec<TaskId> = self
            .by_deadline
            .iter()
            .take(limit)
            .map(|(_, task_id)| *task_id)
            .filter(|task_id| !chosen.iter().any(|key| key.3 == *task_id))
            .collect();
        if urgent.is_empty() || last.is_none() {
            return chosen.into_iter().map(|key| key.3).collect();
        }
        // The urgent ones beyond the first `limit` in queue order are looked up to be merged.
        urgent.sort_unstable();
        let extra: Vec<QueueKey> =
            self.by_priority.iter().skip(limit).filter(|key| urgent.binary_search(&key.3).is_ok()).copied().collect();
        chosen.extend(extra);
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
