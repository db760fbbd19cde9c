//! One batch: everything the writer decided since its last commit, as rows to write in one
//! transaction and as Redis work to do once it is committed.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use grid_shared::domain::{TaskInput, TaskKind, TaskStatus};
use grid_shared::envelope::{Envelope, Origin};
use grid_shared::events::Event;
use grid_shared::ids::{MessageId, NodeId, OrganizationId, OwnerId, TaskId};
use grid_shared::reasons::{Refusal, TaskReason};
use grid_shared::signals::Zone;
use std::sync::Arc;

use crate::model::context::Context;
use crate::model::lifecycle::{Credit, Effects, FinalResult, Recorded, Verdict};
use crate::model::{State, Task, TaskResult};

/// A stream entry the batch acknowledges once committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRef {
    pub stream: String,
    pub id: String,
}

/// A message applied (or rejected) in this batch, for `processed_message`.
#[derive(Debug, Clone)]
pub struct Processed {
    pub message_id: MessageId,
    pub message_type: String,
    pub organization_id: Option<OrganizationId>,
    /// `None` when applied; the reason shown to the issuer when rejected.
    pub rejection: Option<Refusal>,
}

/// What PostgreSQL holds of an owner's data in one organisation, read before a revocation.
#[derive(Debug, Clone, Default)]
pub struct PurgeTargets {
    /// Every task of the organisation using the owner's readings, final or not.
    pub task_ids: Vec<TaskId>,
    /// The commands-stream entries that carried their submissions.
    pub submissions: Vec<String>,
    /// The node-channel entries that carried them to nodes: (node, `<seq>-0`).
    pub assignments: Vec<(NodeId, String)>,
}

/// An event with its seq and envelope, and the node to tell.
#[derive(Debug, Clone)]
pub struct NumberedEvent {
    pub seq: i64,
    pub event: Event,
    pub event_type: &'static str,
    pub organization_id: Option<OrganizationId>,
    pub notify_node: Option<NodeId>,
    pub occurred_at: DateTime<Utc>,
    /// The envelope without its payload (`null`): the event is beside it, and the text holds
    /// both.
    pub envelope: Envelope,
    /// The JSON text of the envelope, published as is.
    pub text: String,
    /// What the archive keeps of it: all but the fields the event's row holds in columns
    /// ([`Envelope::archived_and_published`]).
    pub archived: String,
    /// For a `TaskAssigned`, the input the node computes on (when known in memory).
    pub input: Option<Arc<TaskInput>>,
}

/// What a new task row holds that never changes.
#[derive(Debug, Clone)]
pub struct TaskInsert {
    pub task_id: TaskId,
    pub organization_id: OrganizationId,
    pub copropriete_id: uuid::Uuid,
    pub kind_type: &'static str,
    /// The computation as submitted (with owner ids and readings), and its JSON as stored
    /// (written once, at admission).
    pub kind: TaskKind,
    pub kind_json: String,
    pub priority: u8,
    pub deadline: DateTime<Utc>,
    pub correlation_id: uuid::Uuid,
    pub submitted_entry_id: String,
    pub replicas: u8,
    pub submitted_at: DateTime<Utc>,
}

/// A task row as it stands after the batch (the columns that change).
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub task_id: TaskId,
    pub status: TaskStatus,
    pub attempts: i32,
    pub node_id: Option<NodeId>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
    pub reason: Option<TaskReason>,
    pub quorum: u8,
    pub result_limit: u8,
    pub assignment_seq: Option<i64>,
    pub result: Option<FinalResult>,
}

impl TaskRow {
    pub fn of(task: &Task, now: DateTime<Utc>) -> Self {
        Self {
            task_id: task.task_id,
            status: task.status,
            attempts: task.attempts,
            node_id: task.node_id,
            assigned_at: task.assigned_at,
            started_at: task.started_at,
            finished_at: task.status.is_final().then_some(now),
            not_before: task.not_before,
            reason: task.reason.clone(),
            quorum: task.requirement.quorum,
            result_limit: task.requirement.result_limit,
            assignment_seq: task.assignment_seq,
            result: None,
        }
    }
}

/// A `task_result` row to insert.
#[derive(Debug, Clone)]
pub struct ResultRow {
    pub task_id: TaskId,
    pub result: TaskResult,
    pub verdict: Verdict,
    pub result_json: Option<serde_json::Value>,
    pub reported_at: DateTime<Utc>,
}

/// A consent grant or revocation, for `consent` and `consent_history`.
#[derive(Debug, Clone)]
pub struct ConsentChange {
    pub organization_id: OrganizationId,
    pub owner_id: OwnerId,
    pub granted: bool,
    pub at: DateTime<Utc>,
    pub consent_ip: Option<String>,
    pub consent_version: Option<String>,
}

/// A node row to insert.
#[derive(Debug, Clone)]
pub struct NodeInsert {
    pub node_id: NodeId,
    pub organization_id: OrganizationId,
    pub name: String,
    pub cpu_cores: u16,
    pub has_solar: bool,
    pub location: String,
    pub token_hash: String,
    pub zone: Zone,
    pub embodied_g: Option<i64>,
    pub cell: grid_shared::cells::CellName,
}

/// A task that failed for good, for the dead-letter stream.
#[derive(Debug, Clone)]
pub struct DeadTask {
    pub task_id: TaskId,
    pub attempts: i32,
    pub reason: TaskReason,
}

/// The writer met state it did not expect and refused a message or a timer instead of acting
/// on it: logged with the task, counted in `grid_invariant_violations_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub task_id: Option<TaskId>,
    /// What was refused: a message type, or a timer.
    pub refused: String,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Batch {
    pub acks: Vec<EntryRef>,
    pub heartbeat_acks: Vec<String>,
    pub processed: Vec<Processed>,
    pub events: Vec<NumberedEvent>,
    pub task_inserts: Vec<TaskInsert>,
    /// The latest row of each task changed in the batch, in the order first changed.
    pub task_rows: HashMap<TaskId, TaskRow>,
    pub task_order: Vec<TaskId>,
    pub results: Vec<ResultRow>,
    pub verdicts: Vec<(TaskId, i32, Verdict)>,
    pub credits: Vec<Credit>,
    /// Blocks of the proof chain sealed since the last batch.
    pub sealed: Vec<grid_shared::blocks::Block>,
    pub trust: HashMap<NodeId, u32>,
    pub organizations: Vec<(OrganizationId, String)>,
    pub api_keys: Vec<(String, OrganizationId)>,
    /// Organisations whose keys other than the given one are revoked.
    pub key_revocations: Vec<(OrganizationId, String)>,
    /// Electricity contracts declared: (organisation, factor in mg/kWh, label).
    pub energy_contracts: Vec<(OrganizationId, i64, String)>,
    /// The SHA-256 of each key those revocations end: marked in Redis before the commit, so
    /// that every gateway refuses them from the moment the revocation can be seen applied.
    pub revoked_keys: Vec<String>,
    /// Commands and reports acknowledged in the batch, whose issuer `{ns}:issuers` forgets.
    pub issued: Vec<MessageId>,
    pub nodes: Vec<NodeInsert>,
    pub consent: Vec<ConsentChange>,
    /// (organisation, owner) whose readings leave every stored task payload.
    pub purges: Vec<(OrganizationId, OwnerId)>,
    pub dead_tasks: Vec<DeadTask>,
    /// Entries holding personal data, deleted after commit: submissions on the commands
    /// stream, and assignments on node channels.
    pub deleted_submissions: Vec<String>,
    pub deleted_assignments: Vec<(NodeId, String)>,
    /// Nodes whose count of tasks in flight changed.
    pub claimed_changed: HashSet<NodeId>,
    /// Nodes that went offline (their entry in `{ns}:nodes:alive` goes, unless renewed).
    pub offline_nodes: Vec<NodeId>,
    /// Tasks a writer taking over found contradicting themselves: their rows become
    /// `quarantined` with this reason (the rest of the row stays, as evidence).
    pub quarantined: Vec<(TaskId, TaskReason)>,
    /// Messages and timers refused on unexpected state.
    pub violations: Vec<Violation>,
    /// Messages read in the batch (applied, rejected or duplicate).
    pub messages: usize,
    /// Tasks placed in the batch.
    pub placed: usize,
}

impl Batch {
    /// Whether the batch changes anything in PostgreSQL.
    pub fn writes(&self) -> bool {
        !self.processed.is_empty()
            || !self.events.is_empty()
            || !self.task_rows.is_empty()
            || !self.sealed.is_empty()
            || !self.quarantined.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        !self.writes() && self.acks.is_empty() && self.heartbeat_acks.is_empty()
    }

    /// Numbers and wraps an event (its id and time from the context).
    pub fn record(
        &mut self,
        state: &mut State,
        context: &mut Context,
        origin: Origin,
        organization_id: Option<OrganizationId>,
        recorded: Recorded,
        input: Option<Arc<TaskInput>>,
    ) -> i64 {
        let seq = state.next_seq;
        state.next_seq += 1;
        let origin = Origin { organization_id, ..origin };
        let envelope = Envelope::header_at(context.message_id(), context.now(), &recorded.event, origin);
        let (archived, text) = envelope.archived_and_published(&recorded.event);
        let event_type = grid_shared::envelope::Message::message_type(&recorded.event);
        self.events.push(NumberedEvent {
            seq,
            event: recorded.event,
            event_type,
            organization_id,
            notify_node: recorded.notify_node,
            occurred_at: envelope.occurred_at,
            envelope,
            text,
            archived,
            input,
        });
        seq
    }

    /// Records the latest row of a task.
    pub fn task_row(&mut self, task: &Task, now: DateTime<Utc>) {
        let mut row = TaskRow::of(task, now);
        if let Some(previous) = self.task_rows.get(&task.task_id) {
            // A result set earlier in the batch stays.
            row.result = row.result.or_else(|| previous.result.clone());
        } else {
            self.task_order.push(task.task_id);
        }
        self.task_rows.insert(task.task_id, row);
    }

    /// Takes in a transition's effects for `task`: its events (numbered, from `origin`), its
    /// result rows, credits and trust, and the task's row.
    pub fn apply_effects(
        &mut self,
        state: &mut State,
        context: &mut Context,
        task: &mut Task,
        origin: Origin,
        effects: Effects,
    ) {
        let now = context.now();
        let organization = Some(task.organization_id);
        for recorded in effects.events {
            let assignment = matches!(recorded.event, Event::TaskAssigned(_));
            let input = if assignment { task.input.clone() } else { None };
            let seq = self.record(state, context, origin, organization, recorded, input);
            if assignment {
                // The node's channel entry of this assignment is `<seq>-0`.
                task.assignment_seq = Some(seq);
            }
        }
        for (result, verdict, result_json) in effects.new_results {
            self.results.push(ResultRow { task_id: task.task_id, result, verdict, result_json, reported_at: now });
        }
        self.verdicts.extend(effects.verdicts.into_iter().map(|(attempt, verdict)| (task.task_id, attempt, verdict)));
        self.credits.extend(effects.credits);
        self.trust.extend(effects.trust);
        if let Some(reason) = effects.dead_letter {
            self.dead_tasks.push(DeadTask { task_id: task.task_id, attempts: task.attempts, reason });
        }
        self.task_row(task, now);
        if let Some(result) = effects.result
            && let Some(row) = self.task_rows.get_mut(&task.task_id)
        {
            row.result = Some(result);
        }
    }

    /// The seq of the last event, when there is one.
    pub fn last_seq(&self) -> Option<i64> {
        self.events.last().map(|event| event.seq)
    }
}
