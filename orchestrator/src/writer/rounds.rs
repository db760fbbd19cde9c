//! What the writer decides without a message: timers that fell due (dead nodes, start leases,
//! deadlines, backoffs) and placement rounds over the head of the queue. No I/O.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use grid_shared::domain::TaskStatus;
use grid_shared::envelope::{Actor, Origin};
use grid_shared::events::{Event, NodeWentOffline};
use grid_shared::ids::{NodeId, OrganizationId, TaskId};

use super::apply::{task_origin, transition};
use crate::model::batch::Batch;
use crate::model::lifecycle::{self, Recorded};
use crate::model::timers::Due;
use crate::model::{Rules, State};
use crate::scheduler::{self, Decision};

/// Fires every timer due at `now`: dead nodes' tasks are taken back, unstarted assignments past
/// their lease too (their node is told), overdue work fails, and backoffs end.
pub fn fire_timers(state: &mut State, rules: &Rules, batch: &mut Batch, now: DateTime<Utc>) -> usize {
    let due = state.timers.take_due(now);
    let fired = due.len();
    for due in due {
        match due {
            Due::NodeExpired(node_id) => node_expired(state, rules, batch, node_id, now),
            Due::Deadline(task_id) => {
                let Some(origin) = state.tasks.get(&task_id).map(task_origin) else { continue };
                let _ = transition(state, rules, batch, task_id, origin, now, |task, _| {
                    Ok(lifecycle::deadline_passed(task))
                });
            }
            Due::StartLease(task_id) => {
                let Some(origin) = state.tasks.get(&task_id).map(task_origin) else { continue };
                tracing::warn!(%task_id, "assignment not started in time: taken back");
                let _ = transition(state, rules, batch, task_id, origin, now, |task, _| {
                    Ok(lifecycle::take_back(task, "start_lease_expired", now, rules, true))
                });
            }
            Due::BackoffEnded(task_id) => {
                if let Some(mut task) = state.tasks.remove(&task_id) {
                    state.untrack(&task, rules);
                    task.not_before = None;
                    state.track(&task, rules);
                    state.tasks.insert(task_id, task);
                }
            }
        }
    }
    fired
}

fn node_expired(state: &mut State, rules: &Rules, batch: &mut Batch, node_id: NodeId, now: DateTime<Utc>) {
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
        let _ = transition(state, rules, batch, *task_id, origin, now, |task, _| {
            Ok(lifecycle::take_back(task, "node_offline", now, rules, false))
        });
    }
    let origin = Origin {
        correlation_id: node_id.as_uuid(),
        causation_id: None,
        organization_id: None,
        actor: Actor::Orchestrator,
    };
    let event = Event::NodeWentOffline(NodeWentOffline { node_id, requeued_tasks: tasks });
    batch.record(state, origin, None, Recorded { event, notify_node: None }, None);
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
    batch: &mut Batch,
    candidates: &[TaskId],
    blocked: &HashSet<TaskId>,
    now: DateTime<Utc>,
) -> usize {
    let mut placed = 0;
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
            scheduler::place(&mut state.fleet, now, rules.policy, *task_id, deadline, &is_excluded)
        };
        match decision {
            Decision::Placed(placement) => {
                let node_id = placement.node_id;
                let placed_ok = transition(state, rules, batch, *task_id, origin, now, |task, _| {
                    Ok(lifecycle::place(task, placement, now, rules))
                });
                debug_assert!(placed_ok.is_ok());
                batch.claimed_changed.insert(node_id);
                placed += 1;
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
