//! The state rebuilt from what was committed: what a writer taking over (or rebuilding after a
//! failed batch) does with the rows it reads, and what the simulator does with its model of
//! them. Rows arrive one by one ([`Restore`]: 100,000 queued tasks must not cost their rows and
//! their state at once) or as a whole [`Snapshot`].
//!
//! A row that contradicts itself (an assigned task with no node or no attempt, a node holding
//! more tasks than it has cores, a quorum it can never reach) is not trusted: its task is
//! [`Quarantined`] with the problem, left out of the state, and the writer goes on. A writer
//! must never crash, or loop, on data.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use grid_shared::domain::{TaskInput, TaskStatus};
use grid_shared::ids::{NodeId, OrganizationId, OwnerId, TaskId};
use grid_shared::merkle::Hash;
use grid_shared::reasons::TaskReason;

use super::{Node, ProofChain, Rules, Set, State, Task, TaskResult};
use crate::validation::Requirement;

/// A node row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNode {
    pub node_id: NodeId,
    pub owner_id: OrganizationId,
    pub cpu_cores: i32,
    pub trust: i32,
    pub token_hash: String,
    /// `None`: registered before zones (the grid's default zone).
    pub zone: Option<grid_shared::signals::Zone>,
    /// `None`: none declared (the grid's default).
    pub embodied_g: Option<i64>,
}

/// An open task's row (`queued`, `assigned` or `running`, not finished), as read: the columns
/// in their stored types, checked here.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTask {
    pub task_id: TaskId,
    pub organization_id: OrganizationId,
    pub status: String,
    pub priority: i16,
    pub deadline: DateTime<Utc>,
    pub submitted_at: DateTime<Utc>,
    pub attempts: i32,
    pub node_id: Option<NodeId>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub replicas: i16,
    pub quorum: i16,
    pub result_limit: i16,
    pub correlation_id: uuid::Uuid,
    pub assignment_seq: Option<i64>,
    pub submitted_entry_id: Option<String>,
    /// The input a node receives, when it is small enough to keep (thermal simulations).
    pub input: Option<Arc<TaskInput>>,
    /// The distinct owners of a group task's readings.
    pub participants: Vec<OwnerId>,
    /// Its results waiting for a quorum, by attempt.
    pub results: Vec<TaskResult>,
}

/// A task taken out of scheduling at restore, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub task_id: TaskId,
    pub organization_id: OrganizationId,
    /// The status its row claimed.
    pub status: String,
    pub problem: String,
}

impl Quarantined {
    pub fn reason(&self) -> TaskReason {
        TaskReason::Quarantined { problem: self.problem.clone() }
    }
}

/// Everything committed that the state is rebuilt from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub organizations: Vec<OrganizationId>,
    /// (hash, organisation, still active).
    pub api_keys: Vec<(String, OrganizationId, bool)>,
    pub nodes: Vec<StoredNode>,
    /// Granted consent: (organisation, owner).
    pub consent: Vec<(OrganizationId, OwnerId)>,
    /// Open tasks in the order they are read.
    pub tasks: Vec<StoredTask>,
    /// The last sealed block (0 and the genesis or last `kgp1` hash before the first).
    pub chain_height: i64,
    pub chain_head: String,
    /// Leaves credited after it, by (block height, hash), in order.
    pub pending_leaves: Vec<(i64, Hash)>,
    /// The last event's seq.
    pub last_seq: i64,
}

impl Snapshot {
    /// The state it holds, and the tasks quarantined on the way.
    pub fn restore(self, rules: &Rules, now: DateTime<Utc>) -> (State, Vec<Quarantined>) {
        let mut restore = Restore::new(rules, now);
        for organization_id in self.organizations {
            restore.organization(organization_id);
        }
        for (hash, organization_id, active) in self.api_keys {
            restore.api_key(hash, organization_id, active);
        }
        for node in self.nodes {
            restore.node(node);
        }
        for (organization_id, owner_id) in self.consent {
            restore.consent(organization_id, owner_id);
        }
        for task in self.tasks {
            restore.task(task);
        }
        restore.chain(self.chain_height, &self.chain_head, self.pending_leaves);
        restore.last_seq(self.last_seq);
        restore.finish()
    }
}

/// Rebuilds a [`State`] row by row, in this order: organisations, keys, nodes, consent, tasks,
/// chain, last seq.
pub struct Restore<'a> {
    rules: &'a Rules,
    now: DateTime<Utc>,
    state: State,
    quarantined: Vec<Quarantined>,
}

impl<'a> Restore<'a> {
    /// A restore at `now`: a backoff that ended by then is over (the row keeps its end: the
    /// timer's firing changes no row).
    pub fn new(rules: &'a Rules, now: DateTime<Utc>) -> Self {
        Self { rules, now, state: State::new(rules.policy), quarantined: Vec::new() }
    }

    pub fn organization(&mut self, organization_id: OrganizationId) {
        self.state.organizations.entry(organization_id).or_default();
    }

    pub fn api_key(&mut self, hash: String, organization_id: OrganizationId, active: bool) {
        match self.state.organizations.get_mut(&organization_id) {
            Some(organization) if active => {
                self.state.key_hashes.insert(hash.clone());
                organization.active_keys.insert(hash);
            }
            _ => {
                self.state.key_hashes.insert(hash);
            }
        }
    }

    pub fn node(&mut self, node: StoredNode) {
        self.state.token_hashes.insert(node.token_hash);
        self.state.add_node(Node {
            node_id: node.node_id,
            owner_id: node.owner_id,
            // At least one core: a node row with none could never take work anyway.
            cpu_cores: u16::try_from(node.cpu_cores).unwrap_or(u16::MAX).max(1),
            zone: node.zone,
            embodied_g: node.embodied_g,
            trust: u32::try_from(node.trust).unwrap_or(0),
            in_flight: Set::default(),
        });
    }

    pub fn consent(&mut self, organization_id: OrganizationId, owner_id: OwnerId) {
        self.state.consent.insert((organization_id, owner_id));
    }

    /// Takes an open task into the state, or quarantines it when its row contradicts itself.
    pub fn task(&mut self, stored: StoredTask) {
        match self.checked(stored) {
            Ok(task) => self.state.insert_task(task, self.rules),
            Err(quarantined) => {
                tracing::error!(task_id = %quarantined.task_id, status = quarantined.status, problem = quarantined.problem,
                    "a task's row contradicts itself: quarantined, out of scheduling");
                self.quarantined.push(quarantined);
            }
        }
    }

    fn checked(&self, stored: StoredTask) -> Result<Task, Quarantined> {
        let quarantine = |problem: String| Quarantined {
            task_id: stored.task_id,
            organization_id: stored.organization_id,
            status: stored.status.clone(),
            problem,
        };
        let status = TaskStatus::parse(&stored.status)
            .filter(|status| status.is_open())
            .ok_or_else(|| quarantine(format!("status {:?} is not one of an open task", stored.status)))?;
        let small = |column: &str, value: i16| {
            u8::try_from(value).map_err(|_| quarantine(format!("{column} {value} is out of range")))
        };
        let priority = small("priority", stored.priority)?;
        let requirement = Requirement {
            replicas: small("replicas", stored.replicas)?,
            quorum: small("quorum", stored.quorum)?,
            result_limit: small("result_limit", stored.result_limit)?,
        };
        if priority > grid_shared::domain::Priority::MAX {
            return Err(quarantine(format!("priority {priority} is above {}", grid_shared::domain::Priority::MAX)));
        }
        if requirement.replicas == 0 || requirement.quorum == 0 || requirement.quorum > requirement.result_limit {
            return Err(quarantine(format!(
                "a quorum of {} among at most {} results of {} replicas can never be reached",
                requirement.quorum, requirement.result_limit, requirement.replicas
            )));
        }
        if !self.state.organizations.contains_key(&stored.organization_id) {
            return Err(quarantine(format!("its organisation {} does not exist", stored.organization_id)));
        }
        if stored.attempts < 0 {
            return Err(quarantine(format!("{} attempts", stored.attempts)));
        }
        if stored.results.len() >= usize::from(requirement.result_limit) {
            return Err(quarantine(format!(
                "{} results wait for a quorum that allows at most {}",
                stored.results.len(),
                requirement.result_limit
            )));
        }
        if let Some(result) = stored.results.iter().find(|result| result.attempt > stored.attempts) {
            return Err(quarantine(format!(
                "a result of attempt {} is newer than its {} attempts",
                result.attempt, stored.attempts
            )));
        }
        match status {
            TaskStatus::Queued if stored.node_id.is_some() => {
                return Err(quarantine("a queued task that names a node".to_owned()));
            }
            TaskStatus::Assigned | TaskStatus::Running => {
                let Some(node_id) = stored.node_id else {
                    return Err(quarantine(format!("a {status} task with no node")));
                };
                let Some(node) = self.state.nodes.get(&node_id) else {
                    return Err(quarantine(format!("a {status} task on node {node_id}, which does not exist")));
                };
                if node.in_flight.len() >= usize::from(node.cpu_cores) {
                    return Err(quarantine(format!(
                        "its node {node_id} already holds {} tasks on {} cores",
                        node.in_flight.len(),
                        node.cpu_cores
                    )));
                }
                if stored.attempts < 1 {
                    return Err(quarantine(format!("a {status} task with no attempt")));
                }
                if stored.assigned_at.is_none() {
                    return Err(quarantine(format!("a {status} task with no assignment time")));
                }
                if stored.assignment_seq.is_none() {
                    return Err(quarantine(format!("a {status} task with no assignment event")));
                }
            }
            _ => {}
        }
        Ok(Task {
            task_id: stored.task_id,
            organization_id: stored.organization_id,
            status,
            priority,
            deadline: stored.deadline,
            submitted_at: stored.submitted_at,
            attempts: stored.attempts,
            node_id: stored.node_id,
            assigned_at: stored.assigned_at,
            started_at: stored.started_at,
            // A backoff means nothing to a task that is not queued, nor once it ended.
            not_before: stored.not_before.filter(|end| status == TaskStatus::Queued && *end > self.now),
            reason: stored.reason.as_deref().map(TaskReason::from_stored),
            requirement,
            correlation_id: stored.correlation_id,
            participants: stored.participants,
            input: stored.input,
            assignment_seq: stored.assignment_seq,
            submitted_entry_id: stored.submitted_entry_id,
            results: stored.results,
        })
    }

    /// The chain's head and the leaves credited after it.
    pub fn chain(&mut self, height: i64, head_hash: &str, pending_leaves: impl IntoIterator<Item = (i64, Hash)>) {
        self.state.chain = ProofChain::new(height, head_hash).with_pending(pending_leaves, self.now);
    }

    pub fn last_seq(&mut self, last_seq: i64) {
        self.state.next_seq = last_seq + 1;
    }

    pub fn finish(self) -> (State, Vec<Quarantined>) {
        (self.state, self.quarantined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lifecycle::tests::rules;

    fn stored(organization_id: OrganizationId, status: &str, node_id: Option<NodeId>) -> StoredTask {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        StoredTask {
            task_id: TaskId::new(),
            organization_id,
            status: status.to_owned(),
            priority: 5,
            deadline: now + chrono::Duration::hours(1),
            submitted_at: now,
            attempts: if node_id.is_some() { 1 } else { 0 },
            node_id,
            assigned_at: node_id.map(|_| now),
            started_at: None,
            not_before: None,
            reason: None,
            replicas: 1,
            quorum: 1,
            result_limit: 3,
            correlation_id: uuid::Uuid::nil(),
            assignment_seq: node_id.map(|_| 7),
            submitted_entry_id: None,
            input: None,
            participants: Vec::new(),
            results: Vec::new(),
        }
    }

    #[test]
    fn rows_that_contradict_themselves_are_quarantined_and_the_rest_restored() {
        let rules = rules();
        let organization_id = OrganizationId::new();
        let node = StoredNode {
            node_id: NodeId::new(),
            owner_id: organization_id,
            cpu_cores: 1,
            trust: 0,
            token_hash: "t".into(),
            zone: None,
            embodied_g: None,
        };
        let other = StoredNode { node_id: NodeId::new(), cpu_cores: 2, token_hash: "u".into(), ..node.clone() };
        let good_queued = stored(organization_id, "queued", None);
        let good_assigned = stored(organization_id, "assigned", Some(node.node_id));
        let mut no_attempt = stored(organization_id, "assigned", Some(other.node_id));
        no_attempt.attempts = 0;
        let nowhere = stored(organization_id, "running", Some(NodeId::new()));
        let over_cores = stored(organization_id, "running", Some(node.node_id));
        let mut bad_quorum = stored(organization_id, "queued", None);
        bad_quorum.quorum = 4;
        let mut unknown_status = stored(organization_id, "paused", None);
        unknown_status.priority = 3;
        let snapshot = Snapshot {
            organizations: vec![organization_id],
            nodes: vec![node.clone(), other],
            tasks: vec![
                good_queued.clone(),
                good_assigned.clone(),
                no_attempt.clone(),
                nowhere,
                over_cores.clone(),
                bad_quorum.clone(),
                unknown_status.clone(),
            ],
            chain_head: grid_shared::proof::GENESIS_HASH.to_owned(),
            last_seq: 41,
            ..Snapshot::default()
        };
        let (state, quarantined) = snapshot.restore(&rules, DateTime::<Utc>::UNIX_EPOCH);
        let mut open: Vec<TaskId> = state.tasks.keys().copied().collect();
        open.sort();
        let mut expected = vec![good_queued.task_id, good_assigned.task_id];
        expected.sort();
        assert_eq!(open, expected);
        let problems: Vec<(TaskId, &str)> =
            quarantined.iter().map(|task| (task.task_id, task.problem.as_str())).collect();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].1.contains("with no attempt"), "{problems:?}");
        assert!(problems[1].1.contains("which does not exist"), "{problems:?}");
        assert!(problems[2].1.contains("already holds 1 tasks on 1 cores"), "{problems:?}");
        assert!(problems[3].1.contains("can never be reached"), "{problems:?}");
        assert!(problems[4].1.contains("\"paused\""), "{problems:?}");
        assert_eq!(state.next_seq, 42);
        assert_eq!(state.claimed(node.node_id), 1);
    }
}
