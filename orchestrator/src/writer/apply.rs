//! Decisions on the in-memory state, one message at a time, into a [`Batch`] (timers and
//! placement rounds: [`super::rounds`]). No I/O: what a decision needs from PostgreSQL beyond the state (the tasks a
//! revoked consent touches, the consent of a group task about to be placed) is read before and
//! handed in.

use std::collections::HashSet;
use std::sync::Arc;

use grid_shared::domain::{RejectionReason, TaskKind, TaskStatus};
use grid_shared::envelope::{Actor, Envelope, Origin};
use grid_shared::events::{
    ApiKeyRotated, ConsentGranted, ConsentRevoked, EnergyContractDeclared, Event, NodeRegistered, OrganizationCreated,
    ParticipantDataPurged, TaskAccepted, TaskRejected,
};
use grid_shared::ids::{OrganizationId, OwnerId, TaskId};
use grid_shared::messages::{
    CancelTask, Command, CreateOrganization, DeclareEnergyContract, GrantConsent, RegisterNode, Report, RevokeConsent,
    RotateApiKey, SubmitTask,
};
use grid_shared::reasons::{Refusal, TaskReason};
use grid_shared::signals::MAX_INTENSITY_MG_PER_KWH;

use crate::model::batch::{Batch, ConsentChange, EntryRef, NodeInsert, Processed, PurgeTargets, TaskInsert, Violation};
use crate::model::context::Context;
use crate::model::lifecycle::{self, Admission, CompletionContext, Effects, Recorded};
use crate::model::message::{Decoded, Ready};
use crate::model::{INPUT_KEPT_READINGS, Node, Organization, Rules, Set, State, Task};
use crate::validation::Requirement;

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
    context: &mut Context,
    batch: &mut Batch,
    task_id: TaskId,
    origin: Origin,
    decide: impl FnOnce(&mut Task, &mut State, &mut Context) -> Result<Effects, Refusal>,
) -> Result<(), Refusal> {
    let Some(mut task) = state.tasks.remove(&task_id) else {
        return Err(Refusal::NotInFlight);
    };
    state.untrack(&task, rules);
    let node_before = task.node_id;
    let decided = decide(&mut task, state, context);
    let node_after = task.node_id;
    match decided {
        Err(reason) => {
            // Transitions change nothing when they refuse.
            state.track(&task, rules);
            state.tasks.insert(task_id, task);
            Err(reason)
        }
        Ok(effects) => {
            batch.apply_effects(state, context, &mut task, origin, effects);
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
    /// Outside the default cell: the organisations, and the granted (organisation, owner)
    /// consents, that PostgreSQL holds and this cell's state did not, among those the batch's
    /// messages come from or need (the default cell's writer committed them since this one
    /// loaded its state). Merged into the state before the batch is decided.
    pub organizations: Vec<OrganizationId>,
    pub consents: Vec<(OrganizationId, OwnerId)>,
}

/// Applies one message. Its outcome (applied, or rejected with the reason) goes in the batch;
/// a refusal on state the writer did not expect is also a [`Violation`].
pub fn apply_message(
    state: &mut State,
    rules: &Rules,
    context: &mut Context,
    batch: &mut Batch,
    message: Ready,
    lookups: &Lookups,
) {
    let purge = lookups.purge.as_ref();
    let envelope = &message.envelope;
    let origin = envelope.follow_up(Actor::Orchestrator);
    let mut about = None;
    let outcome = match message.decoded.clone() {
        Decoded::Command(command) => match command {
            Command::CreateOrganization(command) => {
                rules.organisation_level().and_then(|()| create_organization(state, context, batch, origin, command))
            }
            Command::RegisterNode(command) => register_node(state, rules, context, batch, envelope, origin, command),
            Command::SubmitTask(command) => {
                about = Some(command.task_id);
                let known = state.tasks.contains_key(&command.task_id)
                    || lookups.existing_tasks.contains(&command.task_id)
                    || batch.task_rows.contains_key(&command.task_id);
                if known {
                    Err(RejectionReason::DuplicateTask.into())
                } else {
                    submit_task(state, rules, context, batch, &message, origin, command)
                }
            }
            Command::CancelTask(command) => {
                about = Some(command.task_id);
                cancel_task(state, rules, context, batch, envelope, origin, command)
            }
            Command::GrantConsent(command) => rules
                .organisation_level()
                .and_then(|()| grant_consent(state, context, batch, envelope, origin, command)),
            Command::RevokeConsent(command) => {
                revoke_consent(state, rules, context, batch, envelope, origin, command, purge)
            }
            Command::RotateApiKey(command) => {
                rules.organisation_level().and_then(|()| rotate_key(state, context, batch, envelope, origin, command))
            }
            Command::DeclareEnergyContract(command) => rules
                .organisation_level()
                .and_then(|()| declare_contract(state, context, batch, envelope, origin, command)),
        },
        Decoded::Report(report) => {
            about = Some(report.task_id());
            apply_report(state, rules, context, batch, origin, report)
        }
    };
    match &outcome {
        Ok(()) => tracing::debug!("message applied"),
        Err(reason) if reason.is_invariant() => batch.violations.push(Violation {
            task_id: about,
            refused: envelope.message_type.clone(),
            detail: reason.to_string(),
        }),
        Err(reason) => tracing::debug!(reason = %reason, "message rejected"),
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
    context: &mut Context,
    batch: &mut Batch,
    origin: Origin,
    command: CreateOrganization,
) -> Result<(), Refusal> {
    let key_hash = command.api_key_hash.as_str().to_owned();
    if state.key_hashes.contains(&key_hash) {
        return Err(Refusal::ApiKeyInUse);
    }
    if state.organizations.contains_key(&command.organization_id) {
        return Err(Refusal::OrganizationExists);
    }
    let organization_id = command.organization_id;
    state.key_hashes.insert(key_hash.clone());
    state.organizations.insert(organization_id, Organization { active_keys: Set::from_iter([key_hash.clone()]) });
    batch.organizations.push((organization_id, command.name.as_str().to_owned()));
    batch.api_keys.push((key_hash, organization_id));
    let event =
        Event::OrganizationCreated(OrganizationCreated { organization_id, name: command.name.as_str().to_owned() });
    batch.record(state, context, origin, Some(organization_id), Recorded { event, notify_node: None }, None);
    Ok(())
}

fn issuing_organization(state: &State, envelope: &Envelope) -> Option<OrganizationId> {
    envelope.organization_id.filter(|organization_id| state.organizations.contains_key(organization_id))
}

fn register_node(
    state: &mut State,
    rules: &Rules,
    context: &mut Context,
    batch: &mut Batch,
    envelope: &Envelope,
    origin: Origin,
    command: RegisterNode,
) -> Result<(), Refusal> {
    let organization_id = issuing_organization(state, envelope).ok_or(Refusal::UnknownIssuer)?;
    let token_hash = command.token_hash.as_str().to_owned();
    if state.nodes.contains_key(&command.node_id) || state.token_hashes.contains(&token_hash) {
        return Err(Refusal::NodeExists);
    }
    let spec = &command.spec;
    let zone = spec.zone().unwrap_or(&rules.default_zone).clone();
    if !rules.zones.contains(&zone) {
        return Err(Refusal::UnknownZone { zone: zone.to_string() });
    }
    let cell = spec.cell().unwrap_or(&rules.cell).clone();
    if cell != rules.cell {
        return Err(Refusal::OtherCell { cell: cell.to_string(), served: rules.cell.to_string() });
    }
    state.token_hashes.insert(token_hash.clone());
    state.add_node(Node {
        node_id: command.node_id,
        owner_id: organization_id,
        cpu_cores: spec.cpu_cores(),
        zone: Some(zone.clone()),
        embodied_g: spec.embodied_g_co2e(),
        trust: 0,
        in_flight: Set::default(),
    });
    batch.nodes.push(NodeInsert {
        node_id: command.node_id,
        organization_id,
        name: spec.name().to_owned(),
        cpu_cores: spec.cpu_cores(),
        has_solar: spec.has_solar(),
        location: spec.location().to_owned(),
        token_hash,
        zone: zone.clone(),
        embodied_g: spec.embodied_g_co2e(),
        cell: cell.clone(),
    });
    let event = Event::NodeRegistered(NodeRegistered {
        node_id: command.node_id,
        organization_id,
        name: spec.name().to_owned(),
        cpu_cores: spec.cpu_cores(),
        has_solar: spec.has_solar(),
        location: spec.location().to_owned(),
        zone: Some(zone),
        embodied_g_co2e: spec.embodied_g_co2e(),
        cell: Some(cell),
    });
    batch.record(state, context, origin, Some(organization_id), Recorded { event, notify_node: None }, None);
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
    context: &mut Context,
    batch: &mut Batch,
    message: &Ready,
    origin: Origin,
    command: SubmitTask,
) -> Result<(), Refusal> {
    let now = context.now();
    let envelope = &message.envelope;
    let Some(organization_id) = issuing_organization(state, envelope) else {
        // Nothing is stored for an organisation that does not exist.
        return Err(RejectionReason::UnknownOrganization.into());
    };
    if let Some(choice) = &command.cell
        && choice.cell != rules.cell
    {
        return Err(Refusal::OtherCell { cell: choice.cell.to_string(), served: rules.cell.to_string() });
    }
    let Ok(kind_json) = serde_json::to_string(&command.kind) else {
        return Err(Refusal::Invariant { detail: "the task's kind does not serialise".to_owned() });
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
    let (kind_type, input) = (command.kind.type_name(), kept_input(&command.kind));
    batch.task_inserts.push(TaskInsert {
        task_id: command.task_id,
        organization_id,
        copropriete_id: command.copropriete_id.as_uuid(),
        kind_type,
        kind: command.kind,
        kind_json,
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
        input,
        assignment_seq: None,
        submitted_entry_id: Some(message.entry_id.clone()),
        results: Vec::new(),
    };
    let organization = Some(organization_id);
    if let Some(reason) = problem {
        task.status = TaskStatus::Rejected;
        task.reason = Some(TaskReason::Rejected(reason.clone()));
        batch.task_row(&task, now);
        let event = Event::TaskRejected(TaskRejected { task_id: task.task_id, reason: reason.clone() });
        batch.record(state, context, origin, organization, Recorded { event, notify_node: None }, None);
        return Err(reason.into());
    }
    let event = Event::TaskAccepted(TaskAccepted {
        task_id: command.task_id,
        copropriete_id: command.copropriete_id,
        kind: kind_type.to_owned(),
        priority: command.priority,
        deadline: command.deadline,
        participant_count: task.participants.len(),
        cell: command.cell.clone(),
    });
    batch.record(state, context, origin, organization, Recorded { event, notify_node: None }, None);
    batch.task_row(&task, now);
    state.insert_task(task, rules);
    Ok(())
}

fn cancel_task(
    state: &mut State,
    rules: &Rules,
    context: &mut Context,
    batch: &mut Batch,
    envelope: &Envelope,
    origin: Origin,
    command: CancelTask,
) -> Result<(), Refusal> {
    let Some(task) = state.tasks.get(&command.task_id) else { return Err(Refusal::TaskNotOpen) };
    if Some(task.organization_id) != envelope.organization_id {
        // Another organisation's task is "not found": existence does not leak.
        return Err(Refusal::TaskNotOpen);
    }
    transition(state, rules, context, batch, command.task_id, origin, |task, _, _| {
        lifecycle::cancel(task, TaskReason::CancelledByRequest)
    })
}

fn grant_consent(
    state: &mut State,
    context: &mut Context,
    batch: &mut Batch,
    envelope: &Envelope,
    origin: Origin,
    command: GrantConsent,
) -> Result<(), Refusal> {
    let now = context.now();
    let organization_id = issuing_organization(state, envelope).ok_or(Refusal::UnknownIssuer)?;
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
    batch.record(state, context, origin, Some(organization_id), Recorded { event, notify_node: None }, None);
    Ok(())
}

/// Revocation takes effect at once: the owner's open tasks are cancelled (a node running one
/// is told), the readings leave every stored payload of the organisation and the Redis entries
/// that carried them, and `ConsentRevoked` + `ParticipantDataPurged` are recorded.
///
/// The default cell's writer applies the organisation's revocation and writes the consent rows;
/// it forwards the revocation (as the orchestrator) to every other cell, whose writer does the
/// same to its own tasks and data, whether or not its state held the consent (a cell learns of
/// grants from PostgreSQL only when a task needs them).
#[allow(clippy::too_many_arguments)]
fn revoke_consent(
    state: &mut State,
    rules: &Rules,
    context: &mut Context,
    batch: &mut Batch,
    envelope: &Envelope,
    origin: Origin,
    command: RevokeConsent,
    purge: Option<&PurgeTargets>,
) -> Result<(), Refusal> {
    let now = context.now();
    let Some(organization_id) = envelope.organization_id else {
        return Err(Refusal::NoOrganization);
    };
    let owner = command.owner_id;
    let forwarded = !rules.in_default_cell();
    if forwarded && envelope.actor != Actor::Orchestrator {
        // Only the default cell's writer forwards revocations to the other cells.
        rules.organisation_level()?;
    }
    if !state.consent.remove(&(organization_id, owner)) && !forwarded {
        return Err(Refusal::NoConsentToRevoke);
    }
    let organization = Some(organization_id);
    if !forwarded {
        batch.consent.push(ConsentChange {
            organization_id,
            owner_id: owner,
            granted: false,
            at: now,
            consent_ip: None,
            consent_version: None,
        });
    }
    batch.record(
        state,
        context,
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
        let cancelled = transition(state, rules, context, batch, *task_id, origin, |task, _, _| {
            lifecycle::cancel(task, TaskReason::ConsentRevoked)
        });
        if let Err(refusal) = cancelled {
            // Every open task can be cancelled: anything else is state not expected. The
            // revocation stands; that task is refused and counted.
            batch.violations.push(Violation {
                task_id: Some(*task_id),
                refused: "a consent revocation's cancellation".to_owned(),
                detail: refusal.to_string(),
            });
        }
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
    batch.record(state, context, origin, organization, Recorded { event, notify_node: None }, None);
    Ok(())
}

fn rotate_key(
    state: &mut State,
    context: &mut Context,
    batch: &mut Batch,
    envelope: &Envelope,
    origin: Origin,
    command: RotateApiKey,
) -> Result<(), Refusal> {
    acts_for(state, envelope, command.organization_id)?;
    let key_hash = command.api_key_hash.as_str().to_owned();
    if state.key_hashes.contains(&key_hash) {
        return Err(Refusal::ApiKeyInUse);
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
    batch.record(state, context, origin, Some(command.organization_id), Recorded { event, notify_node: None }, None);
    Ok(())
}

/// The operator may act for any organisation; an organisation only for itself (another's, or
/// one that does not exist, is "not found").
fn acts_for(state: &State, envelope: &Envelope, organization_id: OrganizationId) -> Result<(), Refusal> {
    let allowed = match envelope.actor {
        Actor::Operator => true,
        Actor::Organization(caller) => caller == organization_id,
        _ => false,
    };
    if !allowed || !state.organizations.contains_key(&organization_id) {
        return Err(Refusal::OrganizationNotFound);
    }
    Ok(())
}

fn declare_contract(
    state: &mut State,
    context: &mut Context,
    batch: &mut Batch,
    envelope: &Envelope,
    origin: Origin,
    command: DeclareEnergyContract,
) -> Result<(), Refusal> {
    acts_for(state, envelope, command.organization_id)?;
    // The gateway checked both; a command from elsewhere is checked again.
    let label = command.label.trim();
    if !(0..=MAX_INTENSITY_MG_PER_KWH).contains(&command.factor_mg_per_kwh)
        || label.is_empty()
        || label.chars().count() > 100
        || label.chars().any(char::is_control)
    {
        return Err(Refusal::Invariant { detail: "an energy contract out of its bounds".to_owned() });
    }
    batch.energy_contracts.push((command.organization_id, command.factor_mg_per_kwh, label.to_owned()));
    let event = Event::EnergyContractDeclared(EnergyContractDeclared {
        organization_id: command.organization_id,
        factor_mg_per_kwh: command.factor_mg_per_kwh,
        label: label.to_owned(),
    });
    batch.record(state, context, origin, Some(command.organization_id), Recorded { event, notify_node: None }, None);
    Ok(())
}

fn apply_report(
    state: &mut State,
    rules: &Rules,
    context: &mut Context,
    batch: &mut Batch,
    origin: Origin,
    report: Report,
) -> Result<(), Refusal> {
    let now = context.now();
    match report {
        Report::TaskStarted(report) => {
            transition(state, rules, context, batch, report.task_id, origin, |task, _, _| {
                lifecycle::start(task, &report, now)
            })
        }
        Report::TaskCompleted(report) => {
            let task_id = report.task_id;
            transition(state, rules, context, batch, task_id, origin, |task, state, context| {
                let owner = state.nodes.get(&report.node_id).map(|node| node.owner_id);
                let draw_ppm = context.draw_ppm();
                let completion = CompletionContext {
                    now,
                    rules,
                    signals: context.signals(),
                    draw_ppm,
                    another_owner_has_live_nodes: owner.is_some_and(|owner| state.another_owner_has_live_nodes(owner)),
                };
                lifecycle::complete(task, report, &mut state.nodes, &mut state.chain, &completion)
            })
        }
        Report::TaskFailed(report) => transition(state, rules, context, batch, report.task_id, origin, |task, _, _| {
            lifecycle::fail_report(task, &report, now, rules)
        }),
    }
}
