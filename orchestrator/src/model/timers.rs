//! What is due when: start leases, deadlines, backoffs and node expiries, each an ordered set
//! keyed by its due time, so that the next due time is the first entry and a task's timers are
//! removed exactly when it changes (no stale entries pile up behind long deadlines).
//!
//! A timer names the state it was set for (a start lease its attempt, a backoff its end), and
//! acts only if the task is still there when it fires: timers handed out together (a node's
//! expiry and the start lease of a task on it) never act twice on one task.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use grid_shared::domain::TaskStatus;
use grid_shared::ids::{NodeId, TaskId};

use super::{Rules, Task};

/// Something that fell due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// An assignment (this attempt) not started within the start lease.
    StartLease { task_id: TaskId, attempt: i32 },
    /// An open task at its deadline.
    Deadline(TaskId),
    /// A requeued task whose backoff (ending then) ended: it may be placed again.
    BackoffEnded { task_id: TaskId, not_before: DateTime<Utc> },
    /// A node whose live state expired.
    NodeExpired(NodeId),
}

impl Due {
    /// Whether the timer still applies to the task as it is now (it was set for this state and
    /// attempt). A stale timer does nothing.
    pub fn applies_to(&self, task: &Task) -> bool {
        match *self {
            Self::StartLease { attempt, .. } => task.status == TaskStatus::Assigned && task.attempts == attempt,
            Self::Deadline(_) => task.status.is_open(),
            Self::BackoffEnded { not_before, .. } => {
                task.status == TaskStatus::Queued && task.not_before == Some(not_before)
            }
            Self::NodeExpired(_) => false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timers {
    pub(crate) start_leases: BTreeSet<(DateTime<Utc>, TaskId, i32)>,
    pub(crate) deadlines: BTreeSet<(DateTime<Utc>, TaskId)>,
    pub(crate) backoffs: BTreeSet<(DateTime<Utc>, TaskId)>,
    pub(crate) node_expiries: BTreeSet<(DateTime<Utc>, NodeId)>,
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
            self.start_leases.insert((end, task.task_id, task.attempts));
        }
        if let (TaskStatus::Queued, Some(not_before)) = (task.status, task.not_before) {
            self.backoffs.insert((not_before, task.task_id));
        }
    }

    /// Removes them (the task changes or becomes final).
    pub fn untrack(&mut self, task: &Task, rules: &Rules) {
        self.deadlines.remove(&(task.deadline, task.task_id));
        if let Some(end) = start_lease_end(task, rules) {
            self.start_leases.remove(&(end, task.task_id, task.attempts));
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
        [&self.deadlines, &self.backoffs]
            .into_iter()
            .filter_map(|set| set.first().map(|(at, _)| *at))
            .chain(self.start_leases.first().map(|(at, _, _)| *at))
            .chain(self.node_expiries.first().map(|(at, _)| *at))
            .min()
    }

    /// Takes every timer due at `now`, earliest first within each kind. Node expiries come
    /// first, so that a dead node's tasks are taken back before other decisions about them;
    /// a timer of a task that an earlier one changed is stale (see [`Due::applies_to`]).
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some(&(at, node_id)) = self.node_expiries.first()
            && at <= now
        {
            self.node_expiries.pop_first();
            due.push(Due::NodeExpired(node_id));
        }
        while let Some(&(at, task_id)) = self.deadlines.first()
            && at <= now
        {
            self.deadlines.pop_first();
            due.push(Due::Deadline(task_id));
        }
        while let Some(&(at, task_id, attempt)) = self.start_leases.first()
            && at <= now
        {
            self.start_leases.pop_first();
            due.push(Due::StartLease { task_id, attempt });
        }
        while let Some(&(at, task_id)) = self.backoffs.first()
            && at <= now
        {
            self.backoffs.pop_first();
            due.push(Due::BackoffEnded { task_id, not_before: at });
        }
        due
    }

    /// The task timers, as (kind, task, due time), for checks that they are exactly those the
    /// open tasks need.
    pub fn task_timers(&self) -> impl Iterator<Item = (&'static str, TaskId, DateTime<Utc>)> + '_ {
        let leases = self.start_leases.iter().map(|(at, task_id, _)| ("start_lease", *task_id, *at));
        let deadlines = self.deadlines.iter().map(|(at, task_id)| ("deadline", *task_id, *at));
        let backoffs = self.backoffs.iter().map(|(at, task_id)| ("backoff", *task_id, *at));
        leases.chain(deadlines).chain(backoffs)
    }

    /// The timers an open task needs in its state, as [`Timers::task_timers`] lists them.
    pub fn needed_by(task: &Task, rules: &Rules) -> Vec<(&'static str, TaskId, DateTime<Utc>)> {
        let mut needed = vec![("deadline", task.task_id, task.deadline)];
        if let Some(end) = start_lease_end(task, rules) {
            needed.push(("start_lease", task.task_id, end));
        }
        if let (TaskStatus::Queued, Some(not_before)) = (task.status, task.not_before) {
            needed.push(("backoff", task.task_id, not_before));
        }
        needed
    }

    /// Whether a task timer (as [`Timers::task_timers`] lists them) is set.
    pub fn has_task_timer(&self, (kind, task_id, at): (&'static str, TaskId, DateTime<Utc>)) -> bool {
        match kind {
            "deadline" => self.deadlines.contains(&(at, task_id)),
            "backoff" => self.backoffs.contains(&(at, task_id)),
            _ => self.start_leases.range((at, task_id, i32::MIN)..=(at, task_id, i32::MAX)).next().is_some(),
        }
    }

    pub fn task_timer_count(&self) -> usize {
        self.start_leases.len() + self.deadlines.len() + self.backoffs.len()
    }

    /// The node expiries, for checks.
    pub fn node_expiries(&self) -> impl Iterator<Item = (DateTime<Utc>, NodeId)> + '_ {
        self.node_expiries.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.start_leases.len() + self.deadlines.len() + self.backoffs.len() + self.node_expiries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
