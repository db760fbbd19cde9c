//! The invariants checked after every step of a simulated history. Each returns what broke,
//! in a sentence naming the task or node.

use std::collections::{BTreeMap, HashSet};

use grid_shared::domain::TaskStatus;
use grid_shared::ids::{NodeId, OrganizationId, TaskId};
use grid_shared::signals::SignalBook;

use super::store::Store;
use crate::model::batch::Batch;
use crate::model::timers::Timers;
use crate::model::{Rules, State, Task};
use crate::replay::Projection;

/// Every open task is in exactly one consistent state, with the timers, queue entry and core
/// that state needs and no others; no node holds more tasks than it has cores; the fleet
/// mirror counts what the nodes hold.
pub fn state(state: &State, rules: &Rules) -> Result<(), String> {
    let (mut timers, mut queued, mut held) = (0, 0, 0);
    for (task_id, task) in &state.tasks {
        if *task_id != task.task_id {
            return Err(format!("task {task_id} is filed under another id {}", task.task_id));
        }
        task_is_consistent(task)?;
        for needed in Timers::needed_by(task, rules) {
            if !state.timers.has_task_timer(needed) {
                return Err(format!("task {} has no {} timer at {}", needed.1, needed.0, needed.2));
            }
            timers += 1;
        }
        let placeable = task.status == TaskStatus::Queued && task.not_before.is_none();
        if placeable != state.queue.contains(task) {
            return Err(format!(
                "task {task_id} is {}, waits until {:?}, and is in the queue: {}",
                task.status, task.not_before, !placeable
            ));
        }
        queued += usize::from(placeable);
        if let (TaskStatus::Assigned | TaskStatus::Running, Some(node_id)) = (task.status, task.node_id) {
            if !state.nodes.get(&node_id).is_some_and(|node| node.in_flight.contains(task_id)) {
                return Err(format!("task {task_id} is on node {node_id}, which does not count it"));
            }
            held += 1;
        }
    }
    if state.timers.task_timer_count() != timers {
        let stale = state.timers.task_timers().find(|timer| {
            !state.tasks.get(&timer.1).is_some_and(|task| Timers::needed_by(task, rules).contains(timer))
        });
        return Err(format!("a timer is left that no task needs: {stale:?}"));
    }
    if state.queue.len() != queued || !state.queue.orders_agree() {
        let stale: Vec<TaskId> = state
            .queue
            .task_ids()
            .filter(|task_id| !state.tasks.get(task_id).is_some_and(|task| task.status == TaskStatus::Queued))
            .collect();
        return Err(format!(
            "the queue holds {} tasks, {queued} may be placed; not queued: {stale:?}",
            state.queue.len()
        ));
    }
    let mut counted = 0;
    for (node_id, node) in &state.nodes {
        counted += node.in_flight.len();
        if node.in_flight.len() > usize::from(node.cpu_cores) {
            return Err(format!("node {node_id} holds {} tasks on {} cores", node.in_flight.len(), node.cpu_cores));
        }
        if let Some(live) = state.fleet.get(*node_id)
            && live.claimed as usize != node.in_flight.len()
        {
            return Err(format!(
                "the fleet mirror says node {node_id} has {} claimed, it holds {}",
                live.claimed,
                node.in_flight.len()
            ));
        }
    }
    if counted != held {
        return Err(format!("nodes count {counted} tasks in flight, {held} tasks are on nodes"));
    }
    let mut free = 0;
    for node in state.fleet.nodes() {
        if !state.live.contains_key(&node.node_id) {
            return Err(format!("node {} is ranked for placement but not live", node.node_id));
        }
        free += u64::from(u32::from(node.cpu_cores).saturating_sub(node.claimed));
    }
    if free != state.fleet.free_cores() {
        return Err(format!("the fleet counts {} free cores, its nodes have {free}", state.fleet.free_cores()));
    }
    let mut live_per_owner: BTreeMap<OrganizationId, u32> = BTreeMap::new();
    for node_id in state.live.keys() {
        let Some(node) = state.nodes.get(node_id) else {
            return Err(format!("node {node_id} is live but not registered"));
        };
        *live_per_owner.entry(node.owner_id).or_default() += 1;
    }
    for (owner, count) in &state.live_per_owner {
        if live_per_owner.get(owner).copied().unwrap_or(0) != *count {
            return Err(format!(
                "owner {owner} is counted with {count} live nodes, has {:?}",
                live_per_owner.get(owner)
            ));
        }
    }
    Ok(())
}

fn task_is_consistent(task: &Task) -> Result<(), String> {
    let task_id = task.task_id;
    let on_node = task.node_id.is_some() && task.assigned_at.is_some();
    match task.status {
        TaskStatus::Queued if task.node_id.is_some() || task.assigned_at.is_some() => {
            Err(format!("queued task {task_id} names node {:?}", task.node_id))
        }
        TaskStatus::Assigned | TaskStatus::Running if !on_node || task.attempts < 1 => Err(format!(
            "{} task {task_id} has node {:?}, assigned at {:?}, attempt {}",
            task.status, task.node_id, task.assigned_at, task.attempts
        )),
        TaskStatus::Assigned if task.started_at.is_some() => Err(format!("assigned task {task_id} has started")),
        TaskStatus::Running if task.started_at.is_none() => Err(format!("running task {task_id} never started")),
        status if !status.is_open() => Err(format!("task {task_id} is {status} but still in memory")),
        _ if task.results.iter().any(|result| result.attempt > task.attempts) => {
            Err(format!("task {task_id} has a result newer than its attempt {}", task.attempts))
        }
        _ if task.results.len() >= usize::from(task.requirement.result_limit) => Err(format!(
            "task {task_id} waits with {} results, at most {} allowed",
            task.results.len(),
            task.requirement.result_limit
        )),
        _ => Ok(()),
    }
}

/// No submission is rejected for want of an organisation or a consent that PostgreSQL held when
/// it was decided (a writer outside the default cell must look up what the default cell
/// committed since it loaded its state).
pub fn rejections_as_known(
    batch: &Batch,
    store: &Store,
    organization_of: impl Fn(TaskId) -> Option<OrganizationId>,
) -> Result<(), String> {
    use grid_shared::domain::RejectionReason;
    for event in &batch.events {
        let grid_shared::events::Event::TaskRejected(rejected) = &event.event else { continue };
        let Some(organization_id) = organization_of(rejected.task_id) else { continue };
        let known = match &rejected.reason {
            RejectionReason::UnknownOrganization => store.organizations.contains(&organization_id),
            RejectionReason::ConsentNotGranted { owner_id } => store.consent.contains(&(organization_id, *owner_id)),
            _ => false,
        };
        if known {
            return Err(format!(
                "task {} rejected ({}) for what PostgreSQL held: {:?}",
                rejected.task_id,
                rejected.reason.code(),
                rejected.reason
            ));
        }
    }
    Ok(())
}

/// A batch of a writer outside the default cell writes no organisation-level row (the default
/// cell's writer alone writes organisations, keys, consent and contracts).
pub fn no_organisation_rows(batch: &Batch) -> Result<(), String> {
    let written = [
        ("organisations", batch.organizations.len()),
        ("API keys", batch.api_keys.len()),
        ("key revocations", batch.key_revocations.len() + batch.revoked_keys.len()),
        ("consent changes", batch.consent.len()),
        ("energy contracts", batch.energy_contracts.len()),
    ];
    match written.iter().find(|(_, count)| *count > 0) {
        Some((what, count)) => Err(format!("a writer outside the default cell wrote {count} {what}")),
        None => Ok(()),
    }
}

/// What survives a crash, compared: the tasks (their inputs aside: a cache), nodes, keys,
/// consent (unless `organisation_level` is false: outside the default cell they are a cache of
/// what the default cell committed), the chain's head and pending leaves, the next seq.
pub fn same_durable_state(memory: &State, restored: &State, organisation_level: bool) -> Result<(), String> {
    let same_task = |ours: &Task, theirs: &Task| {
        // Every field named, so that a new one is compared too.
        let Task {
            task_id,
            organization_id,
            status,
            priority,
            deadline,
            submitted_at,
            attempts,
            node_id,
            assigned_at,
            started_at,
            not_before,
            reason,
            requirement,
            correlation_id,
            participants,
            input,
            assignment_seq,
            submitted_entry_id,
            results,
        } = ours;
        // A group task's input is read back from its row when placed: not restored.
        let inputs_agree = !participants.is_empty() || *input == theirs.input;
        inputs_agree
            && *task_id == theirs.task_id
            && *organization_id == theirs.organization_id
            && *status == theirs.status
            && *priority == theirs.priority
            && *deadline == theirs.deadline
            && *submitted_at == theirs.submitted_at
            && *attempts == theirs.attempts
            && *node_id == theirs.node_id
            && *assigned_at == theirs.assigned_at
            && *started_at == theirs.started_at
            && *not_before == theirs.not_before
            && *reason == theirs.reason
            && *requirement == theirs.requirement
            && *correlation_id == theirs.correlation_id
            && *participants == theirs.participants
            && *assignment_seq == theirs.assignment_seq
            && *submitted_entry_id == theirs.submitted_entry_id
            && *results == theirs.results
    };
    if memory.tasks.len() != restored.tasks.len()
        || memory
            .tasks
            .iter()
            .any(|(task_id, task)| !restored.tasks.get(task_id).is_some_and(|other| same_task(task, other)))
    {
        let task_id = memory.tasks.keys().chain(restored.tasks.keys()).find(|task_id| {
            match (memory.tasks.get(task_id), restored.tasks.get(task_id)) {
                (Some(ours), Some(theirs)) => !same_task(ours, theirs),
                _ => true,
            }
        });
        let show = |state: &State| task_id.and_then(|task_id| state.tasks.get(task_id)).map(|task| format!("{task:?}"));
        return Err(format!(
            "task {task_id:?} in memory is not what a standby restores:\n  memory:   {:?}\n  restored: {:?}",
            show(memory),
            show(restored)
        ));
    }
    compare("nodes", &memory.nodes, &restored.nodes)?;
    if organisation_level {
        compare("organisations", &memory.organizations, &restored.organizations)?;
        compare("API key hashes", &memory.key_hashes, &restored.key_hashes)?;
        compare("consents", &memory.consent, &restored.consent)?;
    }
    compare("node token hashes", &memory.token_hashes, &restored.token_hashes)?;
    let chain = |state: &State| {
        let leaves: Vec<(i64, [u8; 32])> = state
            .chain
            .closed
            .iter()
            .chain(std::iter::once(&state.chain.open))
            .flat_map(|block| block.leaves.iter().map(move |leaf| (block.height, *leaf)))
            .collect();
        (state.chain.height, state.chain.head_hash.clone(), leaves, state.next_seq)
    };
    compare("proof chain and event seq", &chain(memory), &chain(restored))
}

fn compare<T: PartialEq + std::fmt::Debug>(what: &str, memory: &T, restored: &T) -> Result<(), String> {
    if memory == restored {
        return Ok(());
    }
    Err(format!(
        "the {what} in memory are not what a standby restores:\n  memory:   {memory:?}\n  restored: {restored:?}"
    ))
}

/// Each credit of the batch is split 70/30 exactly to the pico-euro, at the intensity of its
/// node's zone in the hour it was credited (as the signals answer it), follows from the basis
/// its leaf records, goes to a completed task, and has its leaf (the store refuses a second
/// credit of a (task, node)).
pub fn credits(store: &Store, batch: &Batch, rules: &Rules, signals: &SignalBook) -> Result<(), String> {
    for credit in &batch.credits {
        let split = credit.split;
        let task_id = credit.leaf.task_id;
        if split.node_share.0 + split.cooperative_share.0 != split.total.0 {
            return Err(format!("task {task_id}'s credit does not add up: {split:?}"));
        }
        let node = i128::from(split.total.0) * i128::from(rules.carbon.node_share_percent) / 100;
        if i128::from(split.node_share.0) != node {
            return Err(format!(
                "task {task_id}'s node share is {}, not {}% of {}",
                split.node_share.0, rules.carbon.node_share_percent, split.total.0
            ));
        }
        let Some(basis) = &credit.leaf.basis else {
            return Err(format!("task {task_id}'s credit records no carbon signal"));
        };
        let zone = store
            .nodes
            .get(&credit.leaf.node_id)
            .and_then(|node| node.zone.clone())
            .unwrap_or_else(|| rules.default_zone.clone());
        let expected = signals.lookup(&zone, credit.leaf.credited_at);
        if (&basis.zone, basis.hour, basis.intensity_mg_per_kwh, &basis.intensity_source)
            != (&expected.zone, expected.hour, expected.intensity_mg_per_kwh, &expected.source)
        {
            return Err(format!("task {task_id}'s credit used {basis:?}, not its zone's signal {expected:?}"));
        }
        if basis.split(credit.leaf.solar) != split || credit.leaf.misreckoned().is_some() {
            return Err(format!("task {task_id}'s credit is not the rule's for {} µWh of sun", credit.leaf.solar.0));
        }
        let completed = store.tasks.get(&task_id).is_some_and(|row| row.stored.status == "completed");
        if !completed {
            return Err(format!("task {task_id} is credited but not completed"));
        }
        if !store.leaves.contains(&(task_id, credit.leaf.node_id)) {
            return Err(format!("task {task_id}'s credit has no proof leaf"));
        }
    }
    Ok(())
}

/// The stored rows of these tasks (all, when `None`) are what their events replay to.
pub fn store_follows_events(
    store: &Store,
    projection: &Projection,
    touched: Option<&[TaskId]>,
    quarantined: &HashSet<TaskId>,
) -> Result<(), String> {
    if let Some(misreckoned) = projection.misreckoned.first() {
        return Err(format!("a replayed credit does not follow from its inputs: {misreckoned:?}"));
    }
    let all: Vec<TaskId>;
    let tasks = match touched {
        Some(touched) => touched,
        None => {
            all = store.tasks.keys().copied().collect();
            &all
        }
    };
    for task_id in tasks {
        if quarantined.contains(task_id) {
            continue;
        }
        let Some(row) = store.tasks.get(task_id) else {
            return Err(format!("task {task_id} has events but no row"));
        };
        let Some(replayed) = projection.tasks.get(task_id) else {
            return Err(format!("task {task_id} has a row but no event"));
        };
        let stored = &row.stored;
        let node_matters = matches!(replayed.status, TaskStatus::Assigned | TaskStatus::Running);
        if stored.status != replayed.status.as_str()
            || stored.attempts != replayed.attempts
            || (node_matters && stored.node_id != replayed.node_id)
        {
            return Err(format!(
                "task {task_id} is stored {} (attempt {}, node {:?}) but its events say {} (attempt {}, node {:?})",
                stored.status, stored.attempts, stored.node_id, replayed.status, replayed.attempts, replayed.node_id
            ));
        }
    }
    Ok(())
}

/// The ledger, the fund and the nodes' trust are what the events replay to.
pub fn whole_ledger_follows_events(store: &Store, projection: &Projection) -> Result<(), String> {
    let mut credits: BTreeMap<NodeId, (i64, i64)> = BTreeMap::new();
    let mut fund = 0;
    for credit in &store.credits {
        let entry = credits.entry(credit.node_id).or_default();
        entry.0 += credit.split.node_share.0;
        entry.1 += credit.split.carbon_saved.0;
        fund += credit.split.cooperative_share.0;
    }
    let replayed: BTreeMap<NodeId, (i64, i64)> = projection
        .node_credits
        .iter()
        .map(|(node_id, amount)| (*node_id, (*amount, projection.node_carbon.get(node_id).copied().unwrap_or(0))))
        .collect();
    compare("node credits (pico-euros, ng)", &replayed, &credits)?;
    if fund != projection.cooperative_fund {
        return Err(format!("the fund holds {fund} p€, its events say {}", projection.cooperative_fund));
    }
    for (node_id, trust) in &projection.node_trust {
        let stored = store.nodes.get(node_id).map_or(0, |node| node.trust);
        if i64::from(stored) != i64::from(*trust) {
            return Err(format!("node {node_id} has trust {stored}, its events say {trust}"));
        }
    }
    Ok(())
}
