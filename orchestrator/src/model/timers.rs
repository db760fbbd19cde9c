//! What is due when: start leases, deadlines, backoffs and node expiries, each an ordered set
//! keyed by its due time, so that the next due time is the first entry and a task's timers are
//! removed exactly when it changes (no stale entries pile up behind long deadlines).

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use grid_shared::domain::TaskStatus;
use grid_shared::ids::{NodeId, TaskId};

use super::{Rules, Task};

/// Something that fell due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// An assignment not started within the start lease.
    StartLease(TaskId),
    /// An open task at its deadline.
    Deadline(TaskId),
    /// A requeued task whose backoff ended: it may be placed again.
    BackoffEnded(TaskId),
    /// A node whose live state expired.
    NodeExpired(NodeId),
}

#[derive(Debug, Clone, Default)]
pub struct Timers {
    start_leases: BTreeSet<(DateTime<Utc>, TaskId)>,
    deadlines: BTreeSet<(DateTime<Utc>, TaskId)>,
    backoffs: BTreeSet<(DateTime<Utc>, TaskId)>,
    node_expiries: BTreeSet<(DateTime<Utc>, NodeId)>,
}

fn start_lease_end(task: &Task, rules: &Rules) -> Option<DateTime<Utc>> {
    match (task.status, task.assigned_at) {
        (TaskStatus::Assigned, Some(assigned_at)) => Some(assigned_at + Duration::milliseconds(rules.start_lease_ms)),
        _ => None,
    }
}

impl Timers {
    /// Adds the timers an open task has in its current state.
    pub fn track(&mut self, task: &Task, rules: &Rules) {
        self.deadlines.insert((task.deadline, task.task_id));
        if let Some(end) = start_lease_end(task, rules) {
            self.start_leases.insert((end, task.task_id));
        }
        if let (TaskStatus::Queued, Some(not_before)) = (task.status, task.not_before) {
            self.backoffs.insert((not_before, task.task_id));
        }
    }

    /// Removes them (the task changes or becomes final).
    pub fn untrack(&mut self, task: &Task, rules: &Rules) {
        self.deadlines.remove(&(task.deadline, task.task_id));
        if let Some(end) = start_lease_end(task, rules) {
            self.start_leases.remove(&(end, task.task_id));
        }
        if let Some(not_before) = task.not_before {
            self.backoffs.remove(&(not_before, task.task_id));
        }
    }

    pub fn node_expires(&mut self, at: DateTime<Utc>, node_id: NodeId) {
        self.node_expiries.insert((at, node_id));
    }

    pub fn forget_node_expiry(&mut self, at: DateTime<Utc>, node_id: NodeId) {
        self.node_expiries.remove(&(at, node_id));
    }

    /// When the next timer falls due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        [&self.start_leases, &self.deadlines, &self.backoffs]
            .into_iter()
            .filter_map(|set| set.first().map(|(at, _)| *at))
            .chain(self.node_expiries.first().map(|(at, _)| *at))
            .min()
    }

    /// Takes every timer due at `now`, earliest first within each kind. Node expiries come
    /// first, so that a dead node's tasks are taken back before other decisions about them.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some(&(at, node_id)) = self.node_expiries.first()
            && at <= now
        {
            self.node_expiries.pop_first();
            due.push(Due::NodeExpired(node_id));
        }
        for (set, make) in [
            (&mut self.deadlines, Due::Deadline as fn(TaskId) -> Due),
            (&mut self.start_leases, Due::StartLease),
            (&mut self.backoffs, Due::BackoffEnded),
        ] {
            while let Some(&(at, task_id)) = set.first()
                && at <= now
            {
                set.pop_first();
                due.push(make(task_id));
            }
        }
        due
    }

    pub fn len(&self) -> usize {
        self.start_leases.len() + self.deadlines.len() + self.backoffs.len() + self.node_expiries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
