//! Placement of queued tasks on live nodes.
//!
//! [`solve`] is pure: given the queue and the fleet's live state it returns a plan, with no
//! I/O. [`dispatch`] reads the inputs, claims capacity atomically in Redis, and records the
//! assignments. This is the first policy; the scheduler issue refines it (deferral for solar,
//! leases with backoff).

pub mod dispatch;

use chrono::{DateTime, Utc};
use grid_shared::events::ScoreInputs;
use grid_shared::ids::{NodeId, TaskId};

/// A node as the scheduler sees it: its declared cores and the live state of its last heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveNode {
    pub node_id: NodeId,
    pub cpu_cores: u16,
    /// Cores claimed by tasks assigned to it.
    pub claimed: u32,
    pub solar_watts: f64,
    pub cpu_usage: f64,
    pub eco_score: f64,
}

impl LiveNode {
    pub fn has_free_core(&self) -> bool {
        self.claimed < u32::from(self.cpu_cores)
    }

    fn load(&self) -> f64 {
        f64::from(self.claimed) / f64::from(self.cpu_cores.max(1))
    }

    pub fn score_inputs(&self) -> ScoreInputs {
        ScoreInputs {
            node_id: self.node_id,
            solar_watts: self.solar_watts,
            cpu_usage: self.cpu_usage,
            running: self.claimed,
            cpu_cores: self.cpu_cores,
            eco_score: self.eco_score,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueuedTask {
    pub task_id: TaskId,
    pub priority: u8,
    pub deadline: DateTime<Utc>,
    pub submitted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub task_id: TaskId,
    pub node_id: NodeId,
    pub chosen: ScoreInputs,
    pub runner_up: Option<ScoreInputs>,
}

/// Orders nodes best first: solar surplus, then low load, then eco score (node id breaks ties,
/// so the plan is deterministic).
fn better(a: &LiveNode, b: &LiveNode) -> std::cmp::Ordering {
    b.solar_watts
        .total_cmp(&a.solar_watts)
        .then(a.load().total_cmp(&b.load()))
        .then(b.eco_score.total_cmp(&a.eco_score))
        .then(a.node_id.cmp(&b.node_id))
}

/// Places tasks by priority, then deadline, then age, each on the best node with a free core.
/// Tasks that find no free core are left out of the plan (they stay queued).
pub fn solve(tasks: &[QueuedTask], nodes: &[LiveNode]) -> Vec<Placement> {
    let mut order: Vec<&QueuedTask> = tasks.iter().collect();
    order.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.deadline.cmp(&b.deadline))
            .then(a.submitted_at.cmp(&b.submitted_at))
            .then(a.task_id.cmp(&b.task_id))
    });
    let mut fleet: Vec<LiveNode> = nodes.to_vec();
    let mut plan = Vec::new();
    for task in order {
        fleet.sort_by(better);
        let mut free = fleet.iter_mut().filter(|node| node.has_free_core());
        let Some(best) = free.next() else { break };
        let chosen = best.score_inputs();
        best.claimed += 1;
        let runner_up = free.next().map(|node| node.score_inputs());
        plan.push(Placement { task_id: task.task_id, node_id: chosen.node_id, chosen, runner_up });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(solar_watts: f64, cores: u16, claimed: u32) -> LiveNode {
        LiveNode { node_id: NodeId::new(), cpu_cores: cores, claimed, solar_watts, cpu_usage: 10.0, eco_score: 0.5 }
    }

    fn task(priority: u8, deadline_minutes: i64) -> QueuedTask {
        let now = Utc::now();
        QueuedTask {
            task_id: TaskId::new(),
            priority,
            deadline: now + chrono::Duration::minutes(deadline_minutes),
            submitted_at: now,
        }
    }

    #[test]
    fn never_places_above_a_nodes_capacity() {
        let nodes = vec![node(0.0, 2, 1), node(0.0, 1, 0)];
        let tasks: Vec<QueuedTask> = (0..10).map(|_| task(5, 60)).collect();
        let plan = solve(&tasks, &nodes);
        assert_eq!(plan.len(), 2);
        for candidate in &nodes {
            let placed = plan.iter().filter(|placement| placement.node_id == candidate.node_id).count() as u32;
            assert!(candidate.claimed + placed <= u32::from(candidate.cpu_cores));
        }
    }

    #[test]
    fn prefers_solar_then_low_load() {
        let shaded = node(0.0, 4, 0);
        let sunny_busy = node(300.0, 4, 3);
        let sunny_idle = node(300.0, 4, 0);
        let plan = solve(&[task(5, 60)], &[shaded, sunny_busy, sunny_idle.clone()]);
        assert_eq!(plan[0].node_id, sunny_idle.node_id);
        assert!(plan[0].runner_up.is_some());
    }

    #[test]
    fn higher_priority_then_earlier_deadline_goes_first() {
        let only = node(0.0, 1, 0);
        let low = task(1, 5);
        let high_late = task(9, 120);
        let high_soon = task(9, 30);
        let plan = solve(&[low, high_late, high_soon.clone()], &[only]);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].task_id, high_soon.task_id);
    }

    #[test]
    fn an_empty_fleet_places_nothing() {
        assert!(solve(&[task(5, 60)], &[]).is_empty());
    }
}
