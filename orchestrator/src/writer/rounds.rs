//! What the writer decides without a message: timers that fell due (dead nodes, start leases,
//! deadlines, backoffs) and placement rounds over the head of the queue. No I/O.

use std::collections::{HashMap, HashSet};

use grid_shared::domain::TaskStatus;
use grid_shared::envelope::{Actor, Origin};
use grid_shared::events::{Event, NodeWentOffline};
use grid_shared::ids::{NodeId, OrganizationId, TaskId};
use grid_shared::reasons::{Refusal, TakeBack};
use grid_shared::signals::Zone;

use super::apply::{task_origin, transition};
use crate::config::Deferral;
use crate::model::batch::{Batch, Violation};
use crate::model::context::Context;
use crate::model::lifecycle::{self, Recorded};
use crate::model::timers::Due;
use crate::model::{Rules, State};
use crate::scheduler::carbon::{CarbonChoice, Outlook};
use crate::scheduler::{self, Decision};

/// Counts a refused timer or placement: the writer met state it did not expect.
fn refused(batch: &mut Batch, task_id: TaskId, what: &str, refusal: Refusal) {
    batch.violations.push(Violation { task_id: Some(task_id), refused: what.to_owned(), detail: refusal.to_string() });
}

/// Fires every timer due at the context's time: dead nodes' tasks are taken back, unstarted
/// assignments past their lease too (their node is told), overdue work fails, and backoffs
/// end. A timer acts only on the state and attempt it was set for: one made stale by an earlier
/// timer of the same round (a dead node's task whose lease was due too) does nothing.
pub fn fire_timers(state: &mut State, rules: &Rules, context: &mut Context, batch: &mut Batch) -> usize {
    let now = context.now();
    let due = state.timers.take_due(now);
    let fired = due.len();
    for due in due {
        let task_id = match due {
            Due::NodeExpired(node_id) => {
                node_expired(state, rules, context, batch, node_id);
                continue;
            }
            Due::Deadline(task_id) | Due::StartLease { task_id, .. } | Due::BackoffEnded { task_id, .. } => task_id,
        };
        let Some(task) = state.tasks.get(&task_id) else { continue };
        if !due.applies_to(task) {
            tracing::debug!(%task_id, ?due, "a stale timer: the task changed since it was set");
            continue;
        }
        let origin = task_origin(task);
        match due {
            Due::Deadline(_) => {
                let failed = transition(state, rules, context, batch, task_id, origin, |task, _, _| {
                    Ok(lifecycle::deadline_passed(task))
                });
                if let Err(refusal) = failed {
                    refused(batch, task_id, "deadline timer", refusal);
                }
            }
            Due::StartLease { .. } => {
                tracing::warn!(%task_id, "assignment not started in time: taken back");
                let taken = transition(state, rules, context, batch, task_id, origin, |task, _, context| {
                    lifecycle::take_back(task, TakeBack::StartLeaseExpired, context.now(), rules, true)
                });
                if let Err(refusal) = taken {
                    refused(batch, task_id, "start lease timer", refusal);
                }
            }
            Due::BackoffEnded { .. } => {
                if let Some(mut task) = state.tasks.remove(&task_id) {
                    state.untrack(&task, rules);
                    task.not_before = None;
                    state.track(&task, rules);
                    state.tasks.insert(task_id, task);
                }
            }
            Due::NodeExpired(_) => {}
        }
    }
    fired
}

fn node_expired(state: &mut State, rules: &Rules, context: &mut Context, batch: &mut Batch, node_id: NodeId) {
    let now = context.now();
    if state.live.get(&node_id).is_some_and(|live| live.expires_at > now) {
        return;
    }
    state.node_offline(node_id);
    batch.offline_nodes.push(node_id);
    let mut tasks: Vec<TaskId> =
        state.nodes.get(&node_id).map(|node| node.in_flight.iter().copied().collect()).unwrap_or_default();
    tasks.sort();
    for task_id in &tasks {
        let Some(origin) = state.tasks.get(task_id).map(task_origin) else { continue };
        tracing::info!(%task_id, %node_id, "task taken from an offline node");
        let taken = transition(state, rules, context, batch, *task_id, origin, |task, _, context| {
            lifecycle::take_back(task, TakeBack::NodeOffline, context.now(), rules, false)
        });
        if let Err(refusal) = taken {
            refused(batch, *task_id, "node expiry", refusal);
        }
    }
    let origin = Origin {
        correlation_id: node_id.as_uuid(),
        causation_id: None,
        organization_id: None,
        actor: Actor::Orchestrator,
    };
    let event = Event::NodeWentOffline(NodeWentOffline { node_id, requeued_tasks: tasks });
    batch.record(state, context, origin, None, Recorded { event, notify_node: None }, None);
}

/// How many queued tasks a round looks at: twice the free cores (room for tasks that wait for
/// the sun or may not go to some nodes), at least 64, at most 4,000: a round's assignments go
/// into one batch, and a batch of tens of thousands of rows would hold up the messages that
/// share its commit (the next round places the rest right after).
pub fn round_size(free_cores: u64) -> usize {
    usize::try_from(free_cores.saturating_mul(2)).unwrap_or(usize::MAX).clamp(64, 4_000)
}

/// Places queued tasks on the fleet, in queue order (plus the most urgent), each on the best
/// live node it may go to. `blocked` are group tasks whose consent PostgreSQL no longer holds.
/// Returns how many were placed.
pub fn place_round(
    state: &mut State,
    rules: &Rules,
    context: &mut Context,
    batch: &mut Batch,
    candidates: &[TaskId],
    blocked: &HashSet<TaskId>,
) -> usize {
    let now = context.now();
    let mut placed = 0;
    // The forecast of each zone met in this round, computed once (see `scheduler::carbon`).
    let mut outlooks: HashMap<Zone, Outlook> = HashMap::new();
    for task_id in candidates {
        let Some(task) = state.tasks.get(task_id) else { continue };
        if task.status != TaskStatus::Queued || task.deadline <= now || blocked.contains(task_id) {
            continue;
        }
        // Consent is checked again at dispatch: no owner's data is sent without it.
        if state.first_without_consent(task.organization_id, &task.participants).is_some() {
            continue;
        }
        let excluded: HashSet<OrganizationId> = task.excluded_owners().collect();
        let (deadline, origin) = (task.deadline, task_origin(task));
        let decision = {
            let nodes = &state.nodes;
            let is_excluded = |node_id: NodeId| {
                !excluded.is_empty() && nodes.get(&node_id).is_some_and(|node| excluded.contains(&node.owner_id))
            };
            let decision = scheduler::place(&mut state.fleet, now, rules.policy, *task_id, deadline, &is_excluded);
            match (decision, rules.deferral) {
                // While some node is in the sun, a core there frees soon: the task waits for it
                // (solar-first). Without sun anywhere, the grid's forecast decides.
                (Decision::WaitForSun, Deferral::Carbon { min_saving_percent }) if state.fleet.sunny_nodes() == 0 => {
                    let zone = state
                        .fleet
                        .best(&is_excluded)
                        .and_then(|best| nodes.get(&best.node_id))
                        .and_then(|node| node.zone.clone())
                        .unwrap_or_else(|| rules.default_zone.clone());
                    let outlook =
                        outlooks.entry(zone).or_insert_with_key(|zone| Outlook::of(context.signals(), zone, now));
                    let latest = rules.policy.wait_for_sun_until_deadline(deadline);
                    match outlook.decide(now, latest, min_saving_percent) {
                        // This hour is the cleanest of its window: on the grid, now.
                        CarbonChoice::RunNow => {
                            scheduler::place_now(&mut state.fleet, rules.policy, *task_id, &is_excluded)
                        }
                        // A cleaner hour is coming (or the sun, first): the task waits for it.
                        CarbonChoice::WaitUntil { .. } => Decision::WaitForSun,
                    }
                }
                (decision, _) => decision,
            }
        };
        match decision {
            Decision::Placed(placement) => {
                let node_id = placement.node_id;
                let placed_now = transition(state, rules, context, batch, *task_id, origin, |task, _, _| {
                    lifecycle::place(task, placement, now, rules)
                });
                match placed_now {
                    Ok(()) => {
                        batch.claimed_changed.insert(node_id);
                        placed += 1;
                    }
                    Err(refusal) => {
                        // The scheduler took a core for it: given back, counted from the node.
                        let claimed = u32::try_from(state.claimed(node_id)).unwrap_or(u32::MAX);
                        state.fleet.set_claimed(node_id, claimed);
                        refused(batch, *task_id, "placement", refusal);
                    }
                }
            }
            Decision::WaitForSun | Decision::NoEligibleNode => {}
            Decision::NoCapacity => break,
        }
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::round_size;

    #[test]
    fn a_round_looks_at_twice_the_free_cores_within_bounds() {
        assert_eq!(round_size(0), 64);
        assert_eq!(round_size(31), 64);
        assert_eq!(round_size(1_000), 2_000);
        assert_eq!(round_size(2_000), 4_000);
        assert_eq!(round_size(40_000), 4_000);
        assert_eq!(round_size(u64::MAX), 4_000);
    }
}
