//! The scheduler's invariants, by example and by property.

use std::collections::HashMap;

use chrono::{Duration, Utc};
use proptest::prelude::*;

use super::*;

const POLICY: Policy = Policy { watts_per_core: 2.0, expected_runtime: Duration::seconds(60) };

fn node(solar_watts: f64, cores: u16, claimed: u32) -> LiveNode {
    LiveNode {
        node_id: NodeId::new(),
        cpu_cores: cores,
        claimed,
        solar_watts,
        cpu_usage: 10.0,
        eco_score: 0.5,
        expires_at: Utc::now() + Duration::seconds(15),
    }
}

fn task(priority: u8, deadline_minutes: i64) -> QueuedTask {
    let now = Utc::now();
    QueuedTask {
        task_id: TaskId::new(),
        priority,
        deadline: now + Duration::minutes(deadline_minutes),
        submitted_at: now,
        excluded: Vec::new(),
    }
}

fn solve_now(tasks: &[QueuedTask], nodes: &[LiveNode]) -> Plan {
    solve(&Problem { now: Utc::now(), tasks, nodes, policy: POLICY })
}

#[test]
fn never_places_above_a_nodes_capacity() {
    let nodes = vec![node(0.0, 2, 1), node(0.0, 1, 0)];
    let tasks: Vec<QueuedTask> = (0..10).map(|_| task(5, 2)).collect();
    let plan = solve_now(&tasks, &nodes);
    assert_eq!(plan.placements.len(), 2);
}

#[test]
fn a_replica_skips_the_excluded_nodes_and_leaves_them_to_the_next_task() {
    let best = node(300.0, 1, 0);
    let second = node(0.0, 1, 0);
    let mut replica = task(9, 2);
    replica.excluded = vec![best.node_id];
    let other = task(1, 2);
    let plan = solve_now(&[replica.clone(), other.clone()], &[best.clone(), second.clone()]);
    let placed: Vec<_> = plan.placements.iter().map(|placement| (placement.task_id, placement.node_id)).collect();
    assert_eq!(placed, vec![(replica.task_id, second.node_id), (other.task_id, best.node_id)]);
    // With only excluded nodes free, the replica waits and the queue goes on.
    let plan = solve_now(&[replica.clone(), other.clone()], std::slice::from_ref(&best));
    assert_eq!(plan.placements.iter().map(|placement| placement.task_id).collect::<Vec<_>>(), vec![other.task_id]);
}

#[test]
fn prefers_solar_surplus_then_low_load() {
    let shaded = node(0.0, 4, 0);
    let sunny_busy = node(300.0, 4, 3);
    let sunny_idle = node(300.0, 4, 0);
    let plan = solve_now(&[task(5, 2)], &[shaded, sunny_busy, sunny_idle.clone()]);
    assert_eq!(plan.placements[0].node_id, sunny_idle.node_id);
    assert_eq!(plan.placements[0].runner_up.as_ref().map(|inputs| inputs.solar_watts), Some(300.0));
}

#[test]
fn higher_priority_then_earlier_deadline_goes_first() {
    let only = node(0.0, 1, 0);
    let low = task(1, 2);
    let high_late = task(9, 120);
    let high_soon = task(9, 3);
    let plan = solve_now(&[low, high_late, high_soon.clone()], &[only]);
    assert_eq!(plan.placements.len(), 1);
    assert_eq!(plan.placements[0].task_id, high_soon.task_id);
}

#[test]
fn a_task_with_slack_waits_for_the_sun_and_an_urgent_one_does_not() {
    let shaded = node(0.0, 4, 0);
    let relaxed = task(5, 60);
    let urgent = task(5, 2);
    let plan = solve_now(&[relaxed.clone(), urgent.clone()], std::slice::from_ref(&shaded));
    assert_eq!(plan.waiting_for_sun, vec![relaxed.task_id]);
    assert_eq!(plan.placements.iter().map(|placement| placement.task_id).collect::<Vec<_>>(), vec![urgent.task_id]);
    // The same relaxed task, once the sun is up on a node, is placed there.
    let sunny = node(100.0, 4, 0);
    let plan = solve_now(std::slice::from_ref(&relaxed), &[shaded, sunny.clone()]);
    assert_eq!(plan.placements[0].node_id, sunny.node_id);
}

#[test]
fn waiting_never_outlasts_the_deadline_margin() {
    let now = Utc::now();
    let relaxed = task(5, 60);
    let until = POLICY.wait_for_sun_until(&relaxed);
    assert_eq!(relaxed.deadline - until, Duration::seconds(180));
    let mut shaded = [node(0.0, 1, 0)];
    shaded[0].expires_at = until + Duration::seconds(15);
    let later = solve(&Problem { now: until, tasks: std::slice::from_ref(&relaxed), nodes: &shaded, policy: POLICY });
    assert_eq!(later.placements.len(), 1, "past the bound it takes any node");
    assert!(until > now);
}

#[test]
fn offline_nodes_and_overdue_tasks_are_left_out() {
    let mut gone = node(500.0, 4, 0);
    gone.expires_at = Utc::now() - Duration::seconds(1);
    assert!(solve_now(&[task(5, 2)], &[gone]).placements.is_empty());
    let mut overdue = task(5, 2);
    overdue.deadline = Utc::now() - Duration::seconds(1);
    assert!(solve_now(&[overdue], &[node(0.0, 4, 0)]).placements.is_empty());
}

fn arbitrary_node() -> impl Strategy<Value = LiveNode> {
    (1u16..8, 0u32..8, 0.0f64..40.0, 0.0f64..100.0, 0.0f64..1.0, any::<bool>()).prop_map(
        |(cores, claimed, solar_watts, cpu_usage, eco_score, online)| LiveNode {
            node_id: NodeId::new(),
            cpu_cores: cores,
            claimed: claimed.min(u32::from(cores)),
            solar_watts,
            cpu_usage,
            eco_score,
            expires_at: Utc::now() + Duration::seconds(if online { 30 } else { -30 }),
        },
    )
}

fn arbitrary_task() -> impl Strategy<Value = QueuedTask> {
    (0u8..=10, 1i64..600).prop_map(|(priority, deadline_minutes)| task(priority, deadline_minutes))
}

proptest! {
    #[test]
    fn capacity_offline_nodes_priority_and_sun_hold(
        nodes in prop::collection::vec(arbitrary_node(), 0..30),
        tasks in prop::collection::vec(arbitrary_task(), 0..200),
    ) {
        let now = Utc::now();
        let plan = solve(&Problem { now, tasks: &tasks, nodes: &nodes, policy: POLICY });
        let by_id: HashMap<NodeId, &LiveNode> = nodes.iter().map(|node| (node.node_id, node)).collect();
        let mut placed: HashMap<NodeId, u32> = HashMap::new();
        for placement in &plan.placements {
            let node = by_id[&placement.node_id];
            prop_assert!(node.expires_at > now, "placed on an offline node");
            let count = placed.entry(node.node_id).or_default();
            *count += 1;
            prop_assert!(node.claimed + *count <= u32::from(node.cpu_cores), "over capacity");
            // The chosen node ranks at least as high as the runner-up.
            if let Some(runner_up) = &placement.runner_up {
                let chosen_surplus = placement.chosen.solar_watts - f64::from(placement.chosen.running + 1) * POLICY.watts_per_core;
                let runner_surplus = runner_up.solar_watts - f64::from(runner_up.running + 1) * POLICY.watts_per_core;
                prop_assert!(chosen_surplus >= runner_surplus);
            }
        }
        // Every task is placed, waits for the sun, or found no core left: never two of these.
        let mut seen = std::collections::HashSet::new();
        for task_id in plan.placements.iter().map(|placement| placement.task_id).chain(plan.waiting_for_sun.iter().copied()) {
            prop_assert!(seen.insert(task_id), "a task decided twice");
        }
        // Queue order: a placed task never follows, in queue order, an urgent task left unplaced.
        let mut ordered: Vec<&QueuedTask> = tasks.iter().collect();
        ordered.sort_by(|a, b| queue_order(a, b));
        let placed_ids: std::collections::HashSet<TaskId> = plan.placements.iter().map(|placement| placement.task_id).collect();
        let mut skipped_urgent = false;
        for queued in ordered {
            let urgent = now >= POLICY.wait_for_sun_until(queued);
            if placed_ids.contains(&queued.task_id) {
                prop_assert!(!skipped_urgent, "a task was placed after a more urgent one was skipped");
            } else if urgent {
                skipped_urgent = true;
            }
        }
    }

    #[test]
    fn the_plan_is_deterministic_whatever_the_input_order(
        nodes in prop::collection::vec(arbitrary_node(), 0..20),
        tasks in prop::collection::vec(arbitrary_task(), 0..60),
    ) {
        let now = Utc::now();
        let plan = solve(&Problem { now, tasks: &tasks, nodes: &nodes, policy: POLICY });
        let mut reversed_nodes = nodes.clone();
        reversed_nodes.reverse();
        let mut reversed_tasks = tasks.clone();
        reversed_tasks.reverse();
        let again = solve(&Problem { now, tasks: &reversed_tasks, nodes: &reversed_nodes, policy: POLICY });
        prop_assert_eq!(plan, again);
    }
}

#[test]
fn the_fleet_counts_its_nodes_in_the_sun_busy_or_not() {
    let now = Utc::now();
    let (busy_in_sun, shaded, dim) = (node(300.0, 2, 2), node(0.0, 2, 0), node(1.0, 2, 0));
    let mut fleet = RankedFleet::from_nodes(now, &[busy_in_sun.clone(), shaded.clone(), dim], POLICY.watts_per_core);
    assert_eq!(fleet.sunny_nodes(), 1, "a node whose panels could power a task counts, with no free core");
    fleet.upsert(LiveNode { solar_watts: 0.0, ..busy_in_sun.clone() });
    assert_eq!(fleet.sunny_nodes(), 0, "its sun set");
    fleet.upsert(LiveNode { solar_watts: 50.0, ..shaded.clone() });
    assert_eq!(fleet.sunny_nodes(), 1);
    fleet.remove(shaded.node_id);
    assert_eq!(fleet.sunny_nodes(), 0, "gone offline");
}
