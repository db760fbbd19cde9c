//! Placement of queued tasks on live nodes.
//!
//! [`solve`] is pure: given the queue, the fleet's live state and the time, it returns a plan,
//! with no I/O. [`dispatch`] reads the inputs, claims capacity atomically in Redis, and records
//! the assignments; [`housekeeping`] takes tasks back from dead nodes and expired leases and
//! fails overdue work.
//!
//! The policy:
//! - tasks are taken by priority (highest first), then deadline (earliest first), then age;
//! - a task goes to the live node with a free core (`claimed < cpu_cores`) that ranks best by
//!   solar surplus, then load (`claimed / cpu_cores`), then eco score, then node id;
//! - the solar surplus of a node for one more task is `solar_watts − (claimed + 1) × watts per
//!   core`: a node whose panels cover the task's draw has a surplus ≥ 0;
//! - a task whose deadline leaves slack waits for a node with solar surplus: it is *deferrable*
//!   while `now < deadline − 3 × expected_runtime` (three runtimes: one to run, two to absorb a
//!   requeue), and is placed on any node after that, so waiting never makes it miss its deadline.

pub mod dispatch;
pub mod housekeeping;

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use chrono::{DateTime, Duration, Utc};
use grid_shared::events::ScoreInputs;
use grid_shared::ids::{NodeId, TaskId};

/// How many expected runtimes of slack a task keeps when it waits for the sun.
pub const DEFERRAL_SAFETY_RUNTIMES: i32 = 3;

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
    /// When its live state expires without a new heartbeat.
    pub expires_at: DateTime<Utc>,
}

impl LiveNode {
    pub fn has_free_core(&self) -> bool {
        self.claimed < u32::from(self.cpu_cores)
    }

    fn load(&self) -> f64 {
        f64::from(self.claimed) / f64::from(self.cpu_cores.max(1))
    }

    /// Watts of sun left once one more task runs here.
    pub fn solar_surplus(&self, watts_per_core: f64) -> f64 {
        self.solar_watts - f64::from(self.claimed + 1) * watts_per_core
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
    /// Nodes the task may not go to: those of owners that already returned a result for it
    /// (replicas run on distinct owners). Usually empty.
    pub excluded: Vec<NodeId>,
}

/// What the scheduler needs besides the queue and the fleet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// The draw of one busy core, in watts (`GRID_MAX_WATTS_PER_CORE`).
    pub watts_per_core: f64,
    /// How long a task is expected to run (`GRID_EXPECTED_RUNTIME_MS`).
    pub expected_runtime: Duration,
}

impl Policy {
    /// The last moment a task may still wait for a solar node.
    pub fn wait_for_sun_until(&self, task: &QueuedTask) -> DateTime<Utc> {
        task.deadline - self.expected_runtime * DEFERRAL_SAFETY_RUNTIMES
    }
}

pub struct Problem<'a> {
    pub now: DateTime<Utc>,
    pub tasks: &'a [QueuedTask],
    pub nodes: &'a [LiveNode],
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub task_id: TaskId,
    pub node_id: NodeId,
    pub chosen: ScoreInputs,
    pub runner_up: Option<ScoreInputs>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub placements: Vec<Placement>,
    /// Tasks waiting for a node with solar surplus.
    pub waiting_for_sun: Vec<TaskId>,
}

/// A node in the heap, ordered best first.
struct Ranked {
    node: LiveNode,
    surplus: f64,
}

impl Ranked {
    fn new(node: LiveNode, watts_per_core: f64) -> Self {
        let surplus = node.solar_surplus(watts_per_core);
        Self { node, surplus }
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    /// Greater is better (the heap pops the greatest).
    fn cmp(&self, other: &Self) -> Ordering {
        self.surplus
            .total_cmp(&other.surplus)
            .then(other.node.load().total_cmp(&self.node.load()))
            .then(self.node.eco_score.total_cmp(&other.node.eco_score))
            .then(other.node.node_id.cmp(&self.node.node_id))
    }
}

/// Orders tasks as the queue serves them.
pub fn queue_order(a: &QueuedTask, b: &QueuedTask) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then(a.deadline.cmp(&b.deadline))
        .then(a.submitted_at.cmp(&b.submitted_at))
        .then(a.task_id.cmp(&b.task_id))
}

/// What the scheduler decided for one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Placed(Placement),
    /// Deferrable, and no node has solar surplus now.
    WaitForSun,
    /// No live node has a free core.
    NoCapacity,
    /// Free cores exist, but only on nodes the task may not go to.
    NoEligibleNode,
}

/// The fleet as a heap, best node on top: each decision is O(log nodes).
pub struct Placer {
    heap: BinaryHeap<Ranked>,
    now: DateTime<Utc>,
    policy: Policy,
}

impl Placer {
    pub fn new(now: DateTime<Utc>, nodes: &[LiveNode], policy: Policy) -> Self {
        let heap = nodes
            .iter()
            .filter(|node| node.expires_at > now && node.has_free_core())
            .map(|node| Ranked::new(node.clone(), policy.watts_per_core))
            .collect();
        Self { heap, now, policy }
    }

    /// Decides for one task, taking a core of the chosen node. Nodes the task may not go to are
    /// set aside while it is placed, and put back.
    pub fn place(&mut self, task: &QueuedTask) -> Decision {
        if self.heap.is_empty() {
            return Decision::NoCapacity;
        }
        if task.excluded.is_empty() {
            return self.place_on_best(task);
        }
        let mut set_aside = Vec::new();
        while self.heap.peek().is_some_and(|best| task.excluded.contains(&best.node.node_id)) {
            set_aside.push(self.heap.pop().expect("peeked"));
        }
        let decision = if self.heap.is_empty() { Decision::NoEligibleNode } else { self.place_on_best(task) };
        self.heap.extend(set_aside);
        decision
    }

    fn place_on_best(&mut self, task: &QueuedTask) -> Decision {
        let Some(best) = self.heap.peek() else { return Decision::NoCapacity };
        let deferrable = self.now < self.policy.wait_for_sun_until(task);
        if deferrable && best.surplus < 0.0 {
            return Decision::WaitForSun;
        }
        let mut best = self.heap.pop().expect("peeked");
        let chosen = best.node.score_inputs();
        let runner_up = self.heap.peek().map(|next| next.node.score_inputs());
        let placement = Placement { task_id: task.task_id, node_id: best.node.node_id, chosen, runner_up };
        best.node.claimed += 1;
        if best.node.has_free_core() {
            self.heap.push(Ranked::new(best.node, self.policy.watts_per_core));
        }
        Decision::Placed(placement)
    }
}

/// Places tasks in queue order, each on the best live node with a free core; a deferrable task
/// takes only a node with solar surplus, or waits. O((tasks + nodes) × log nodes).
pub fn solve(problem: &Problem<'_>) -> Plan {
    let mut order: Vec<&QueuedTask> = problem.tasks.iter().filter(|task| task.deadline > problem.now).collect();
    order.sort_by(|a, b| queue_order(a, b));
    let mut placer = Placer::new(problem.now, problem.nodes, problem.policy);
    let mut plan = Plan::default();
    for task in order {
        match placer.place(task) {
            Decision::Placed(placement) => plan.placements.push(placement),
            Decision::WaitForSun => plan.waiting_for_sun.push(task.task_id),
            Decision::NoEligibleNode => {}
            // No free core anywhere: the rest wait for the next round.
            Decision::NoCapacity => break,
        }
    }
    plan
}

#[cfg(test)]
mod tests;
