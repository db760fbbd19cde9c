//! PostgreSQL as the simulated grid holds it: the rows a writer's batches committed, written
//! as `store::postgres::flush` writes them, and read back as `store::load` reads them (a
//! [`Snapshot`]), so that a standby's state is rebuilt exactly as a real takeover rebuilds it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use grid_shared::blocks::Block;
use grid_shared::carbon::CreditSplit;
use grid_shared::domain::{TaskKind, TaskStatus};
use grid_shared::events::Event;
use grid_shared::ids::{MessageId, NodeId, OrganizationId, OwnerId, TaskId};
use grid_shared::merkle::Hash;
use grid_shared::proof::GENESIS_HASH;
use grid_shared::reasons::Refusal;

use crate::model::TaskResult;
use crate::model::batch::{Batch, PurgeTargets};
use crate::model::lifecycle::Verdict;
use crate::model::restore::{Snapshot, StoredNode, StoredTask};

/// A task row: what `load` reads of it, its kind's owners, and whether it is final.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub stored: StoredTask,
    pub kind: TaskKind,
    pub finished: bool,
}

/// A credited result's ledger entries and leaf.
#[derive(Debug, Clone)]
pub struct CreditRow {
    pub task_id: TaskId,
    pub node_id: NodeId,
    pub attempt: i32,
    pub split: CreditSplit,
    pub block_height: i64,
    pub leaf_index: i64,
    pub leaf_hash: Hash,
}

#[derive(Debug, Clone, Default)]
pub struct Store {
    pub organizations: BTreeSet<OrganizationId>,
    /// Key hash → (organisation, still active), in the order issued.
    pub api_keys: Vec<(String, OrganizationId, bool)>,
    pub nodes: BTreeMap<NodeId, StoredNode>,
    pub consent: BTreeSet<(OrganizationId, OwnerId)>,
    pub tasks: HashMap<TaskId, TaskRow>,
    /// The open tasks by the order inserted (the order `load` streams them in, here).
    open: BTreeMap<u64, TaskId>,
    /// Each task's place in that order.
    inserted: HashMap<TaskId, u64>,
    pub results: BTreeMap<(TaskId, i32), (TaskResult, Verdict)>,
    pub credits: Vec<CreditRow>,
    /// Leaves not sealed yet, by (block height, index).
    unsealed: BTreeMap<(i64, i64), Hash>,
    /// (task, node) of every leaf: the schema's unique key.
    pub leaves: HashSet<(TaskId, NodeId)>,
    pub blocks: BTreeMap<i64, Block>,
    /// The event archive: (seq, event, the node it was sent to).
    pub events: Vec<(i64, Event, Option<NodeId>)>,
    pub processed: HashMap<MessageId, Option<Refusal>>,
    /// How far the events were published, as the last commit recorded it.
    pub relay_cursor: i64,
    pub planted_bug: Option<super::world::PlantedBug>,
}

impl Store {
    pub fn with_bug(planted_bug: Option<super::world::PlantedBug>) -> Self {
        Self { planted_bug, ..Self::default() }
    }

    /// Commits a batch, as `postgres::flush` does. `Err` is what PostgreSQL would refuse (a
    /// unique key violated): the batch is then not committed at all.
    pub fn commit(&mut self, batch: &Batch, published_seq: i64) -> Result<(), String> {
        self.refused(batch)?;
        for (organization_id, _) in &batch.organizations {
            self.organizations.insert(*organization_id);
        }
        for (hash, organization_id) in &batch.api_keys {
            self.api_keys.push((hash.clone(), *organization_id, true));
        }
        for (organization_id, kept) in &batch.key_revocations {
            for (hash, owner, active) in &mut self.api_keys {
                if owner == organization_id && hash != kept {
                    *active = false;
                }
            }
        }
        for node in &batch.nodes {
            self.nodes.insert(
                node.node_id,
                StoredNode {
                    node_id: node.node_id,
                    owner_id: node.organization_id,
                    cpu_cores: i32::from(node.cpu_cores),
                    trust: 0,
                    token_hash: node.token_hash.clone(),
                    zone: Some(node.zone.clone()),
                    embodied_g: node.embodied_g,
                },
            );
        }
        for change in &batch.consent {
            if change.granted {
                self.consent.insert((change.organization_id, change.owner_id));
            } else {
                self.consent.remove(&(change.organization_id, change.owner_id));
            }
        }
        self.write_tasks(batch);
        for row in &batch.results {
            self.results.insert((row.task_id, row.result.attempt), (row.result.clone(), row.verdict));
        }
        for (task_id, attempt, verdict) in &batch.verdicts {
            if let Some((_, stored)) = self.results.get_mut(&(*task_id, *attempt)) {
                *stored = *verdict;
            }
        }
        for (node_id, trust) in &batch.trust {
            if let Some(node) = self.nodes.get_mut(node_id) {
                node.trust = i32::try_from(*trust).unwrap_or(i32::MAX);
            }
        }
        for credit in &batch.credits {
            self.leaves.insert((credit.leaf.task_id, credit.leaf.node_id));
            self.unsealed.insert((credit.block_height, credit.leaf_index), credit.leaf_hash);
            self.credits.push(CreditRow {
                task_id: credit.leaf.task_id,
                node_id: credit.leaf.node_id,
                attempt: credit.leaf.attempt,
                split: credit.split,
                block_height: credit.block_height,
                leaf_index: credit.leaf_index,
                leaf_hash: credit.leaf_hash,
            });
        }
        for block in &batch.sealed {
            self.blocks.insert(block.draft.height, block.clone());
        }
        if let Some(height) = self.blocks.keys().next_back() {
            self.unsealed = self.unsealed.split_off(&(height + 1, 0));
        }
        self.events.extend(batch.events.iter().map(|event| (event.seq, event.event.clone(), event.notify_node)));
        for processed in &batch.processed {
            self.processed.insert(processed.message_id, processed.rejection.clone());
        }
        self.relay_cursor = self.relay_cursor.max(published_seq);
        Ok(())
    }

    /// What the schema's keys refuse: a second organisation, node, task or result with one
    /// key, a second credit of a (task, node), a second block at a height, an event seq or
    /// message id seen before.
    fn refused(&self, batch: &Batch) -> Result<(), String> {
        let mut new_tasks = HashSet::new();
        for insert in &batch.task_inserts {
            if self.tasks.contains_key(&insert.task_id) || !new_tasks.insert(insert.task_id) {
                return Err(format!("task {} inserted twice", insert.task_id));
            }
        }
        let mut new_results = HashSet::new();
        for row in &batch.results {
            let key = (row.task_id, row.result.attempt);
            if self.results.contains_key(&key) || !new_results.insert(key) {
                return Err(format!("result of task {} attempt {} inserted twice", key.0, key.1));
            }
        }
        let mut new_leaves = HashSet::new();
        for credit in &batch.credits {
            let key = (credit.leaf.task_id, credit.leaf.node_id);
            if self.leaves.contains(&key) || !new_leaves.insert(key) {
                return Err(format!("task {} credited to node {} twice", key.0, key.1));
            }
        }
        for block in &batch.sealed {
            if self.blocks.contains_key(&block.draft.height) {
                return Err(format!("block {} sealed twice", block.draft.height));
            }
        }
        let last_seq = self.last_seq();
        if let Some(first) = batch.events.first()
            && first.seq <= last_seq
        {
            return Err(format!("event seq {} after {last_seq}", first.seq));
        }
        let mut new_messages = HashSet::new();
        for processed in &batch.processed {
            if self.processed.contains_key(&processed.message_id) || !new_messages.insert(processed.message_id) {
                return Err(format!("message {} processed twice", processed.message_id));
            }
        }
        for node in &batch.nodes {
            if self.nodes.contains_key(&node.node_id) {
                return Err(format!("node {} registered twice", node.node_id));
            }
        }
        Ok(())
    }

    fn write_tasks(&mut self, batch: &Batch) {
        for insert in &batch.task_inserts {
            let Some(row) = batch.task_rows.get(&insert.task_id) else { continue };
            let kind = insert.kind.clone();
            let participants = participants_of(&kind);
            let input = match &kind {
                TaskKind::BuildingThermalSimulation { .. } => Some(std::sync::Arc::new(kind.anonymised())),
                TaskKind::EnergyGroupOptimisation { .. } => None,
            };
            let stored = StoredTask {
                task_id: insert.task_id,
                organization_id: insert.organization_id,
                status: row.status.as_str().to_owned(),
                priority: i16::from(insert.priority),
                deadline: insert.deadline,
                submitted_at: insert.submitted_at,
                attempts: row.attempts,
                node_id: row.node_id,
                assigned_at: row.assigned_at,
                started_at: row.started_at,
                not_before: row.not_before,
                reason: row.reason.as_ref().map(|reason| reason.to_stored()),
                replicas: i16::from(insert.replicas),
                quorum: i16::from(row.quorum),
                result_limit: i16::from(row.result_limit),
                correlation_id: insert.correlation_id,
                assignment_seq: row.assignment_seq,
                submitted_entry_id: Some(insert.submitted_entry_id.clone()),
                input,
                participants,
                results: Vec::new(),
            };
            let finished = row.finished_at.is_some();
            self.tasks.insert(insert.task_id, TaskRow { stored, kind, finished });
            let place = self.inserted.len() as u64;
            self.inserted.insert(insert.task_id, place);
            if !finished {
                self.open.insert(place, insert.task_id);
            }
        }
        let inserted: HashSet<TaskId> = batch.task_inserts.iter().map(|insert| insert.task_id).collect();
        for task_id in batch.task_order.iter().filter(|task_id| !inserted.contains(task_id)) {
            let (Some(row), Some(stored)) = (batch.task_rows.get(task_id), self.tasks.get_mut(task_id)) else {
                continue;
            };
            let task = &mut stored.stored;
            task.status = row.status.as_str().to_owned();
            task.attempts = row.attempts;
            task.node_id = row.node_id;
            task.assigned_at = row.assigned_at;
            if self.planted_bug != Some(super::world::PlantedBug::StoreForgetsStartedAt) {
                task.started_at = row.started_at;
            }
            task.not_before = row.not_before;
            task.reason = row.reason.as_ref().map(|reason| reason.to_stored());
            task.quorum = i16::from(row.quorum);
            task.result_limit = i16::from(row.result_limit);
            task.assignment_seq = row.assignment_seq;
            stored.finished = row.finished_at.is_some();
            if stored.finished
                && let Some(place) = self.inserted.get(task_id)
            {
                self.open.remove(place);
            }
        }
        for (task_id, reason) in &batch.quarantined {
            if let Some(row) = self.tasks.get_mut(task_id) {
                row.stored.status = TaskStatus::Quarantined.as_str().to_owned();
                row.stored.reason = Some(reason.to_stored());
            }
            if let Some(place) = self.inserted.get(task_id) {
                self.open.remove(place);
            }
        }
        for (organization_id, owner_id) in &batch.purges {
            for row in self.tasks.values_mut() {
                if row.stored.organization_id != *organization_id {
                    continue;
                }
                if let TaskKind::EnergyGroupOptimisation { participants, .. } = &mut row.kind {
                    participants.retain(|participant| participant.owner_id != *owner_id);
                    row.stored.participants.retain(|owner| owner != owner_id);
                }
            }
        }
    }

    /// What a takeover reads ([`crate::store::load::load_state`]).
    pub fn snapshot(&self) -> Snapshot {
        let tasks = self
            .open
            .values()
            .filter_map(|task_id| self.tasks.get(task_id))
            .filter(|row| !row.finished && TaskStatus::parse(&row.stored.status).is_some_and(TaskStatus::is_open))
            .map(|row| {
                let mut stored = row.stored.clone();
                let task_id = stored.task_id;
                stored.results = self
                    .results
                    .range((task_id, i32::MIN)..=(task_id, i32::MAX))
                    .filter(|(_, (_, verdict))| *verdict == Verdict::Pending)
                    .map(|(_, (result, _))| result.clone())
                    .collect();
                stored
            })
            .collect();
        let (chain_height, chain_head) = self
            .blocks
            .last_key_value()
            .map_or((0, GENESIS_HASH.to_owned()), |(height, block)| (*height, block.hash.clone()));
        let pending_leaves = self.unsealed.iter().map(|((height, _), hash)| (*height, *hash)).collect();
        Snapshot {
            organizations: self.organizations.iter().copied().collect(),
            api_keys: self.api_keys.clone(),
            nodes: self.nodes.values().cloned().collect(),
            consent: self.consent.iter().copied().collect(),
            tasks,
            chain_height,
            chain_head,
            pending_leaves,
            last_seq: self.last_seq(),
        }
    }

    /// `load::already_known`: which messages were applied, which tasks exist.
    pub fn known(&self, messages: &[MessageId], tasks: &[TaskId]) -> (HashSet<MessageId>, HashSet<TaskId>) {
        let applied = messages.iter().copied().filter(|id| self.processed.contains_key(id)).collect();
        let existing = tasks.iter().copied().filter(|id| self.tasks.contains_key(id)).collect();
        (applied, existing)
    }

    /// `load::purge_targets`: the organisation's tasks that use the owner's readings.
    pub fn purge_targets(&self, organization_id: OrganizationId, owner_id: OwnerId) -> PurgeTargets {
        let mut task_ids: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|row| {
                row.stored.organization_id == organization_id && participants_of(&row.kind).contains(&owner_id)
            })
            .map(|row| row.stored.task_id)
            .collect();
        task_ids.sort();
        PurgeTargets { task_ids, submissions: Vec::new(), assignments: Vec::new() }
    }

    /// `load::consent_withdrawn`: group tasks with a participant whose consent is not granted.
    pub fn consent_withdrawn(&self, groups: &[(TaskId, OrganizationId, Vec<OwnerId>)]) -> HashSet<TaskId> {
        groups
            .iter()
            .filter(|(_, organization_id, owners)| {
                owners.iter().any(|owner| !self.consent.contains(&(*organization_id, *owner)))
            })
            .map(|(task_id, _, _)| *task_id)
            .collect()
    }

    /// The open tasks on nodes, with the seq of their assignment (re-issued after Redis lost it).
    pub fn in_flight(&self) -> Vec<(TaskId, NodeId, i32)> {
        let mut in_flight: Vec<(TaskId, NodeId, i32)> = self
            .open
            .values()
            .filter_map(|task_id| self.tasks.get(task_id))
            .filter(|row| !row.finished && matches!(row.stored.status.as_str(), "assigned" | "running"))
            .filter_map(|row| Some((row.stored.task_id, row.stored.node_id?, row.stored.attempts)))
            .collect();
        in_flight.sort();
        in_flight
    }

    pub fn last_seq(&self) -> i64 {
        self.events.last().map_or(0, |(seq, _, _)| *seq)
    }
}

fn participants_of(kind: &TaskKind) -> Vec<OwnerId> {
    match kind {
        TaskKind::BuildingThermalSimulation { .. } => Vec::new(),
        TaskKind::EnergyGroupOptimisation { participants, .. } => {
            let mut owners: Vec<OwnerId> = participants.iter().map(|participant| participant.owner_id).collect();
            owners.sort();
            owners.dedup();
            owners
        }
    }
}
