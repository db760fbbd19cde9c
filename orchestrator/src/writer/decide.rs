//! The pure part of a step, shared by the writer and the simulator (`crate::simulation`): what
//! a batch decides from the messages read, what was looked up for them, the timers due and the
//! queue, in this order. The writer wraps it in I/O (read, look up, commit, publish,
//! acknowledge); the simulator wraps it in a model of that I/O. Nothing here does any.

use std::collections::HashSet;

use grid_shared::blocks::{Block, BlockDraft};
use grid_shared::envelope::{Actor, Origin};
use grid_shared::events::{BlockSealed, Event, TaskQuarantined};
use grid_shared::ids::{MessageId, OrganizationId, OwnerId, TaskId};
use grid_shared::messages::Command;

use super::apply::{self, Lookups};
use super::rounds;
use crate::model::batch::{Batch, EntryRef};
use crate::model::context::Context;
use crate::model::lifecycle::Recorded;
use crate::model::message::{Decoded, Ready};
use crate::model::restore::Quarantined;
use crate::model::{Rules, State};

/// What a batch reads from PostgreSQL before it is decided.
#[derive(Debug, Default)]
pub struct BatchLookups {
    /// Messages of the batch applied before (a redelivery: acknowledged, not applied again).
    pub applied: HashSet<MessageId>,
    pub decide: Lookups,
}

/// The tasks a restore quarantined: their rows become `quarantined` with the problem, and a
/// `TaskQuarantined` event says so (the first batch after the restore).
pub fn quarantine(state: &mut State, context: &mut Context, batch: &mut Batch, quarantined: &[Quarantined]) {
    for task in quarantined {
        batch.quarantined.push((task.task_id, task.reason()));
        let event = Event::TaskQuarantined(TaskQuarantined {
            task_id: task.task_id,
            status: task.status.clone(),
            problem: task.problem.clone(),
        });
        let origin = Origin {
            correlation_id: task.task_id.as_uuid(),
            causation_id: None,
            organization_id: Some(task.organization_id),
            actor: Actor::Orchestrator,
        };
        let organization = Some(task.organization_id);
        batch.record(state, context, origin, organization, Recorded { event, notify_node: None }, None);
    }
}

/// A consent revocation goes at the head of a batch of its own (it reads what PostgreSQL holds
/// of the owner's tasks, so everything before it must be committed): cuts `ready` there and
/// returns what is carried to the next batch.
pub fn split_for_own_batch(ready: &mut Vec<Ready>) -> Vec<Ready> {
    match ready.iter().position(Ready::needs_own_batch) {
        Some(index) => ready.split_off(if index == 0 { 1 } else { index }),
        None => Vec::new(),
    }
}

/// Outside the default cell, what the batch needs of the organisation-level state that this
/// cell's state lacks: the organisations its messages come from, and the (organisation, owner)
/// consents its group submissions need (looked up in PostgreSQL before the batch is decided).
pub fn organisation_level_needs(
    state: &State,
    ready: &[Ready],
) -> (Vec<OrganizationId>, Vec<(OrganizationId, OwnerId)>) {
    let mut organizations = Vec::new();
    let mut consents = Vec::new();
    for message in ready {
        let Some(organization_id) = message.envelope.organization_id else { continue };
        if !state.organizations.contains_key(&organization_id) {
            organizations.push(organization_id);
        }
        if let Decoded::Command(Command::SubmitTask(submit)) = &message.decoded
            && let grid_shared::domain::TaskKind::EnergyGroupOptimisation { participants, .. } = &submit.kind
        {
            let missing = participants
                .iter()
                .map(|participant| (organization_id, participant.owner_id))
                .filter(|pair| !state.consent.contains(pair));
            consents.extend(missing);
        }
    }
    organizations.sort();
    organizations.dedup();
    consents.sort();
    consents.dedup();
    (organizations, consents)
}

/// The submissions of a batch, whose task ids must be looked up (a task id already stored is a
/// duplicate).
pub fn submitted_tasks(ready: &[Ready]) -> Vec<TaskId> {
    ready
        .iter()
        .filter_map(|message| match &message.decoded {
            Decoded::Command(Command::SubmitTask(submit)) => Some(submit.task_id),
            _ => None,
        })
        .collect()
}

/// Fires the timers due (unless the batch applies pending entries one by one, to find a
/// failing one), then applies each message in order: a redelivery of one applied before, or a
/// repeat within the batch, is only acknowledged. Returns how many timers fired.
pub fn messages(
    state: &mut State,
    rules: &Rules,
    context: &mut Context,
    batch: &mut Batch,
    ready: Vec<Ready>,
    lookups: &BatchLookups,
    one_by_one: bool,
) -> usize {
    // What another cell's writer committed to the organisation-level tables, as looked up.
    for organization_id in &lookups.decide.organizations {
        state.organizations.entry(*organization_id).or_default();
    }
    state.consent.extend(lookups.decide.consents.iter().copied());
    let fired = if one_by_one { 0 } else { rounds::fire_timers(state, rules, context, batch) };
    let (applied_before, ready): (Vec<Ready>, Vec<Ready>) =
        ready.into_iter().partition(|message| lookups.applied.contains(&message.envelope.id));
    for message in applied_before {
        tracing::debug!(message_id = %message.envelope.id, "already applied: acknowledging the redelivery");
        batch.issued.push(message.envelope.id);
        batch.acks.push(EntryRef { stream: message.stream, id: message.entry_id });
    }
    batch.messages = ready.len();
    let mut seen = HashSet::new();
    for message in ready {
        if !seen.insert(message.envelope.id) {
            batch.issued.push(message.envelope.id);
            batch.acks.push(EntryRef { stream: message.stream, id: message.entry_id });
            continue;
        }
        let span = tracing::debug_span!("apply", message_id = %message.envelope.id,
            message_type = %message.envelope.message_type, correlation_id = %message.envelope.correlation_id);
        let _entered = span.enter();
        apply::apply_message(state, rules, context, batch, message, &lookups.decide);
    }
    fired
}

/// A group task about to be placed, whose consent PostgreSQL is asked about again.
pub type GroupCandidate = (TaskId, OrganizationId, Vec<OwnerId>);

/// The head of the queue a placement round looks at, and its group tasks; `None` when nothing
/// can be placed (no queued task, or no free core).
pub fn placement_candidates(state: &State) -> Option<(Vec<TaskId>, Vec<GroupCandidate>)> {
    if state.queue.is_empty() || state.fleet.free_cores() == 0 {
        return None;
    }
    let candidates = state.queue.candidates(rounds::round_size(state.fleet.free_cores()));
    let groups = candidates
        .iter()
        .filter_map(|task_id| state.tasks.get(task_id))
        .filter(|task| !task.participants.is_empty())
        .map(|task| (task.task_id, task.organization_id, task.participants.clone()))
        .collect();
    Some((candidates, groups))
}

/// A block mined since the last batch joins this one (with its `BlockSealed` event), if it is
/// still the next to seal; false when it is not (it is dropped).
pub fn sealed_block(state: &mut State, context: &mut Context, batch: &mut Batch, block: Block) -> bool {
    if !state.chain.sealed(block.draft.height, &block.hash) {
        return false;
    }
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
        correlation_id: context.uuid(),
        causation_id: None,
        organization_id: None,
        actor: Actor::Orchestrator,
    };
    batch.record(state, context, origin, None, Recorded { event, notify_node: None }, None);
    batch.sealed.push(block);
    true
}

/// Closes the open block when it is due, and gives the draft of the next block to mine (when
/// `mining` is false and one is closed).
pub fn next_to_mine(state: &mut State, rules: &Rules, context: &Context, mining: bool) -> Option<BlockDraft> {
    let now = context.now();
    state.chain.close_if_due(now, rules.block_max_leaves, rules.seal_interval);
    if mining {
        return None;
    }
    state.chain.next_draft(now, rules.proof_difficulty)
}
