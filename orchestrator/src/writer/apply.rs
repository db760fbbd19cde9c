//! Decisions on the in-memory state, one message at a time, into a [`Batch`] (timers and
//! placement rounds: [`super::rounds`]). No I/O: what a decision needs from PostgreSQL beyond the state (the tasks a
//! revoked consent touches, the consent of a group task about to be placed) is read before and
//! handed in.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use grid_shared::domain::{RejectionReason, TaskKind, TaskStatus};
use grid_shared::envelope::{Actor, Envelope, Origin};
use grid_shared::events::{
    ApiKeyRotated, ConsentGranted, ConsentRevoked, Event, NodeRegistered, OrganizationCreated, ParticipantDataPurged,
    TaskAccepted, TaskRejected,
};
use grid_shared::ids::{OrganizationId, TaskId};
use grid_shared::messages::{
    CancelTask, Command, CreateOrganization, GrantConsent, RegisterNode, Report, RevokeConsent, RotateApiKey,
    SubmitTask,
};

use crate::model::batch::{Batch, ConsentChange, EntryRef, NodeInsert, Processed, PurgeTargets, TaskInsert};
use crate::model::lifecycle::{self, Admission, CompletionContext, Effects, Recorded};
use crate::model::message::{Decoded, Ready};
use crate::model::{INPUT_KEPT_READINGS, Node, Organization, Rules, State, Task};
use crate::validation::{Requirement, draw_ppm};

/// The origin of events caused by the writer itself (placements, timers) for a task.
pub fn task_origin(task: &Task) -> Origin {
    Origin {
        correlation_id: task.correlation_id,
        causation_id: None,
        organization_id: Some(task.organization_id),
        actor: Actor::Orchestrator,
    }
}

/// Runs a transition on an open task: out of its indexes, changed, back in (unless final),
/// its effects into the batch. `Err` is the refusal, and the task is left as it was.
pub(super) fn transition(
    state: &mut State,
    rules: &Rules,
    batch: &mut Batch,
    task_id: TaskId,
    origin: Origin,
    now: DateTime<Utc>,
    decide: impl FnOnce(&mut Task, &mut State) -> Result<Effects, String>,
) -> Result<(), String> {
    let Some(mut task) = state.tasks.remove(&task_id) else {
        return Err(lifecycle::not_in_flight());
    };
    state.untrack(&task, rules);
    let node_before = task.node_id;
    let decided = decide(&mut task, state);
    let node_after = task.node_id;
    match decided {
        Err(reason) => {
            state.track(&task, rules);
            state.tasks.insert(task_id, task);
            Err(reason)
        }
        Ok(effects) => {
            batch.apply_effects(state, &mut task, origin, effects, now);
            batch.claimed_changed.extend(node_before.into_iter().chain(node_after));
            if !task.status.is_final() {
                state.track(&task, rules);
                state.tasks.insert(task_id, task);
            }
            Ok(())
        }
    }
}

/// What was read from PostgreSQL for a batch before deciding it.
#[derive(Debug, Default)]
pub struct Lookups {
    /// Task ids of the batch's submissions that already have a row.
    pub existing_tasks: HashSet<TaskId>,
    /// For a batch that starts with a consent revocation: what to purge.
    pub purge: Option<PurgeTargets>,
}

/// Applies one message. Its outcome (applied, or rejected with the reason) goes in the batch.
pub fn apply_message(
    state: &mut State,
    rules: &Rules,
    batch: &mut Batch,
    message: Ready,
    lookups: &Lookups,
    now: DateTime<Utc>,
) {
    let purge = lookups.purge.as_ref();
    let envelope = &message.envelope;
    let origin = envelope.follow_up(Actor::Orchestrator);
    let outcome = match message.decoded.clone() {
        Decoded::Command(command) => match command {
            Command::CreateOrganization(command) => create_organization(state, batch, origin, command),
            Command::RegisterNode(command) => register_node(state, batch, envelope, origin, command),
            Command::SubmitTask(command) => {
                let known = state.tasks.contains_key(&command.task_id)
                    || lookups.existing_tasks.contains(&command.task_id)
                    || batch.task_rows.contains_key(&command.task_id);
                if known {
                    Err(RejectionReason::DuplicateTask.to_string())
                } else {
                    submit_task(state, rules, batch, &message, origin, command, now)
                }
            }
            Command::CancelTask(command) => cancel_task(state, rules, batch, envelope, origin, command, now),
            Command::GrantConsent(command) => grant_consent(state, batch, envelope, origin, command, now),
            Command::RevokeConsent(command) => {
                revoke_consent(state, rules, batch, envelope, origin, command, purge, now)
            }
            Command::RotateApiKey(command) => rotate_key(state, batch, envelope, origin, command),
        },
        Decoded::Report(report) => apply_report(state, rules, batch, origin, report, now),
    };
    match &outcome {
        Ok(()) => tracing::debug!("message applied"),
        Err(reason) => tracing::debug!(reason, "message rejected"),
    }
    batch.processed.push(Processed {
        message_id: envelope.id,
        message_type: envelope.message_type.clone(),
        organization_id: envelope.organization_id,
        rejection: outcome.err(),
    });
    batch.issued.push(envelope.id);
    batch.acks.push(EntryRef { stream: message.stream, id: message.entry_id });
}

fn create_organization(
    state: &mut State,
    batch: &mut Batch,
    origin: Origin,
    command: CreateOrganization,
) -> Result<(), String> {
    let key_hash = command.api_key_hash.as_str().to_owned();
    if state.key_hashes.contains(&key_hash) {
        return Err("this API key is already in use".to_owned());
    }
    if state.organizations.contains_key(&command.organization_id) {
        return Err("an organisation with this id already exists".to_owned());
    }
    let organization_id = command.organization_id;
    state.key_hashes.insert(key_hash.clone());
    state.organizations.insert(organization_id, Organization { active_keys: HashSet::from([key_hash.clone()]) });
    batch.organizations.push((organization_id, command.name.as_str().to_owned()));
    batch.api_keys.push((key_hash, organization_id));
    let event =
        Event::OrganizationCreated(OrganizationCreated { organization_id, name: command.name.as_str().to_owned() });
    batch.record(state, origin, Some(organization_id), Recorded { event, notify_node: None }, None);
    Ok(())
}

fn issuing_organization(state: &State, envelope: &Envelope) -> Option<OrganizationId> {
    envelope.organization_id.filter(|organization_id| state.organizations.contains_key(organization_id))
}

fn register_node(
    state: &mut State,
    batch: &mut Batch,
    envelope: &Envelope,
    origin: Origin,
    command: RegisterNode,
) -> Result<(), String> {
    let organization_id =
        issuing_organization(state, envelope).ok_or("the issuing organisation does not exist".to_owned())?;
    let token_hash = command.token_hash.as_str().to_owned();
    if state.nodes.contains_key(&command.node_id) || state.token_hashes.contains(&token_hash) {
        return Err("a node with this id or token already exists".to_owned());
    }
    let spec = &command.spec;
    state.token_hashes.insert(token_hash.clone());
    state.add_node(Node {
        node_id: command.node_id,
        owner_id: organization_id,
        cpu_cores: spec.cpu_cores(),
        trust: 0,
        in_flight: HashSet::new(),
    });
    batch.nodes.push(NodeInsert {
        node_id: command.node_id,
        organization_id,
        name: spec.name().to_owned(),
        cpu_cores: spec.cpu_cores(),
        has_solar: spec.has_solar(),
        location: spec.location().to_owned(),
        token_hash,
    });
    let event = Event::NodeRegistered(NodeRegistered {
        node_id: command.node_id,
        organization_id,
        name: spec.name().to_owned(),
        cpu_cores: spec.cpu_cores(),
        has_solar: spec.has_solar(),
        location: spec.location().to_owned(),
    });
    batch.record(state, origin, Some(organization_id), Recorded { event, notify_node: None }, None);
    Ok(())
}

/// The input a node receives, kept in memory when small.
fn kept_input(kind: &TaskKind) -> Option<Arc<grid_shared::domain::TaskInput>> {
    let readings = match kind {
        TaskKind::BuildingThermalSimulation { .. } => 0,
        TaskKind::EnergyGroupOptimisation { participants, .. } => {
            participants.iter().map(|participant| participant.readings_kwh.len()).sum()
        }
    };
    (readings <= INPUT_KEPT_READINGS).then(|| Arc::new(kind.anonymised()))
}

fn submit_task(
    state: &mut State,
    rules: &Rules,
    batch: &mut Batch,
    message: &Ready,
    origin: Origin,
    command: SubmitTask,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let envelope = &message.envelope;
    let Some(organization_id) = issuing_organization(state, envelope) else {
        // Nothing is stored for an organisation that does not exist.
        return Err(RejectionReason::UnknownOrganization.to_string());
    };
    let participants: Vec<_> = match &command.kind {
        TaskKind::EnergyGroupOptimisation { participants, .. } => {
            let mut owners: Vec<_> = participants.iter().map(|participant| participant.owner_id).collect();
            owners.sort();
            owners.dedup();
            owners
        }
        TaskKind::BuildingThermalSimulation { .. } => Vec::new(),
    };
    let is_group = matches!(command.kind, TaskKind::EnergyGroupOptimisation { .. });
    let admission = Admission {
        now,
        organization_exists: true,
        node_owners: state.node_owners(),
        without_consent: state.first_without_consent(organization_id, &participants),
        rules,
    };
    let problem = lifecycle::admission_problem(
        &admission,
        command.deadline,
        command.replicas.value(),
        participants.len(),
        is_group,
    );
    let replicas = command.replicas.value();
    batch.task_inserts.push(TaskInsert {
        task_id: command.task_id,
        organization_id,
        copropriete_id: command.copropriete_id.as_uuid(),
        kind_type: command.kind.type_name(),
        kind: serde_json::to_value(&command.kind).expect("a task kind always serialises"),
        priority: command.priority.value(),
        deadline: command.deadline,
        correlation_id: envelope.correlation_id,
        submitted_entry_id: message.entry_id.clone(),
        replicas,
        submitted_at: now,
    });
    let mut task = Task {
        task_id: command.task_id,
        organization_id,
        status: TaskStatus::Queued,
        priority: command.priority.value(),
        deadline: command.deadline,
        submitted_at: now,
        attempts: 0,
        node_id: None,
        assigned_at: None,
        started_at: None,
        not_before: None,
        reason: None,
        requirement: Requirement {
            replicas,
            quorum: command.replicas.quorum(),
            result_limit: replicas + rules.validation.extra_replicas,
        },
        correlation_id: envelope.correlation_id,
        participants,
        input: kept_input(&command.kind),
        assignment_seq: None,
        submitted_entry_id: Some(message.entry_id.clone()),
        results: Vec::new(),
    };
    let organization = Some(organization_id);
    if let Some(reason) = problem {
        let text = reason.to_string();
        task.status = TaskStatus::Rejected;
        task.reason = Some(serde_json::to_string(&reason).expect("reasons serialise"));
        batch.task_row(&task, now);
        let event = Event::TaskRejected(TaskRejected { task_id: task.task_id, reason });
        batch.record(state, origin, organization, Recorded { event, notify_node: None }, None);
        return Err(text);
    }
    let event = Event::TaskAccepted(TaskAccepted {
        task_id: command.task_id,
        copropriete_id: command.copropriete_id,
        kind: command.kind.type_name().to_owned(),
        priority: command.priority,
        deadline: command.deadline,
        participant_count: task.participants.len(),
    });
    batch.record(state, origin, organization, Recorded { event, notify_node: None }, None);
    batch.task_row(&task, now);
    state.insert_task(task, rules);
    Ok(())
}

/// The reason given for a cancellation of a task that is not open here.
const NOT_OPEN: &str = "the task is not open (already final, or not found)";

fn cancel_task(
    state: &mut State,
    rules: &Rules,
    batch: &mut Batch,
    envelope: &Envelope,
    origin: Origin,
    command: CancelTask,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let Some(task) = state.tasks.get(&command.task_id) else { return Err(NOT_OPEN.to_owned()) };
    if Some(task.organization_id) != envelope.organization_id {
        // Another organisation's task is "not found": existence does not leak.
        return Err(NOT_OPEN.to_owned());
    }
    transition(state, rules, batch, command.task_id, origin, now, |task, _| {
        lifecycle::cancel(task, "cancelled_by_request")
    })
}

fn grant_consent(
    state: &mut State,
    batch: &mut Batch,
    envelope: &Envelope,
    origin: Origin,
    command: GrantConsent,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let organization_id =
        issuing_organization(state, envelope).ok_or("the issuing organisation does not exist".to_owned())?;
    state.consent.insert((organization_id, command.owner_id));
    batch.consent.push(ConsentChange {
        organization_id,
        owner_id: command.owner_id,
        granted: true,
        at: now,
        consent_ip: command.consent_ip,
        consent_version: Some(command.consent_version.clone()),
    });
    let event =
        Event::ConsentGranted(ConsentGranted { owner_id: command.owner_id, consent_version: command.consent_version });
    batch.record(state, origin, Some(organization_id), Recorded { event, notify_node: None }, None);
    Ok(())
}

/// Revocation takes effect at once: the owner's open tasks are cancelled (a node running one
/// is told), the readings leave every stored payload of the organisation and the Redis entries
/// that carried them, and `ConsentRevoked` + `ParticipantDataPurged` are recorded.
#[allow(clippy::too_many_arguments)]
fn revoke_consent(
    state: &mut State,
    rules: &Rules,
    batch: &mut Batch,
    envelope: &Envelope,
    origin: Origin,
    command: RevokeConsent,
    purge: Option<&PurgeTargets>,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let Some(organization_id) = envelope.organization_id else {
        return Err("the command names no organisation".to_owned());
    };
    let owner = command.owner_id;
    if !state.consent.remove(&(organization_id, owner)) {
        return Err("no granted consent to revoke for this owner".to_owned());
    }
    let organization = Some(organization_id);
    batch.consent.push(ConsentChange {
        organization_id,
        owner_id: owner,
        granted: false,
        at: now,
        consent_ip: None,
        consent_version: None,
    });
    batch.record(
        state,
        origin,
        organization,
        Recorded { event: Event::ConsentRevoked(ConsentRevoked { owner_id: owner }), notify_node: None },
        None,
    );
    let mut open: Vec<TaskId> = state
        .tasks
        .values()
        .filter(|task| task.organization_id == organization_id && task.participants.contains(&owner))
        .map(|task| task.task_id)
        .collect();
    open.sort();
    for task_id in &open {
        transition(state, rules, batch, *task_id, origin, now, |task, _| lifecycle::cancel(task, "consent_revoked"))?;
    }
    let targets = purge.cloned().unwrap_or_default();
    let mut purged: Vec<TaskId> = targets.task_ids.iter().chain(&open).copied().collect();
    purged.sort();
    purged.dedup();
    if purged.is_empty() {
        return Ok(());
    }
    batch.purges.push((organization_id, owner));
    batch.deleted_submissions.extend(targets.submissions);
    batch.deleted_assignments.extend(targets.assignments);
    let event = Event::ParticipantDataPurged(ParticipantDataPurged { owner_id: owner, task_ids: purged });
    batch.record(state, origin, organization, Recorded { event, notify_node: None }, None);
    Ok(())
}

fn rotate_key(
    state: &mut State,
    batch: &mut Batch,
    envelope: &Envelope,
    origin: Origin,
    command: RotateApiKey,
) -> Result<(), String> {
    // The operator may rotate any organisation's key; an organisation only its own.
    let allowed = match envelope.actor {
        Actor::Operator => true,
        Actor::Organization(caller) => caller == command.organization_id,
        _ => false,
    };
    if !allowed || !state.organizations.contains_key(&command.organization_id) {
        return Err("organisation not found".to_owned());
    }
    let key_hash = command.api_key_hash.as_str().to_owned();
    if state.key_hashes.contains(&key_hash) {
        return Err("this API key is already in use".to_owned());
    }
    state.key_hashes.insert(key_hash.clone());
    let organization = state.organizations.entry(command.organization_id).or_default();
    let revoked = if command.revoke_previous {
        let count = organization.active_keys.len() as u64;
        batch.revoked_keys.extend(organization.active_keys.drain());
        batch.key_revocations.push((command.organization_id, key_hash.clone()));
        count
    } else {
        0
    };
    organization.active_keys.insert(key_hash.clone());
    batch.api_keys.push((key_hash, command.organization_id));
    let event = Event::ApiKeyRotated(ApiKeyRotated {
        organization_id: command.organization_id,
        previous_keys_revoked: revoked,
    });
    batch.record(state, origin, Some(command.organization_id), Recorded { event, notify_node: None }, None);
    Ok(())
}

fn apply_report(
    state: &mut State,
    rules: &Rules,
    batch: &mut Batch,
    origin: Origin,
    report: Report,
    now: DateTime<Utc>,
) -> Result<(), String> {
    match report {
        Report::TaskStarted(report) => {
            transition(state, rules, batch, report.task_id, origin, now, |task, _| lifecycle::start(task, &report, now))
        }
        Report::TaskCompleted(report) => {
            let task_id = report.task_id;
            transition(state, rules, batch, task_id, origin, now, |task, state| {
                let owner = state.nodes.get(&report.node_id).map(|node| node.owner_id);
                let context = CompletionContext {
                    now,
                    rules,
                    draw_ppm: draw_ppm(),
                    another_owner_has_live_nodes: owner.is_some_and(|owner| state.another_owner_has_live_nodes(owner)),
                };
                lifecycle::complete(task, report, &mut state.nodes, &mut state.chain, &context)
            })
        }
        Report::TaskFailed(report) => transition(state, rules, batch, report.task_id, origin, now, |task, _| {
            lifecycle::fail_report(task, &report, now, rules)
        }),
    }
}
