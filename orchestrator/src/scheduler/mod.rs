//! Placement of queued tasks on live nodes, without I/O.
//!
//! [`RankedFleet`] keeps the live nodes with a free core in rank order (a `BTreeSet`), so that
//! a heartbeat or a claimed core re-ranks one node in O(log nodes) and a decision reads the
//! best node in O(log nodes): a scheduling round never costs O(fleet). The active writer keeps
//! one for its whole term; [`solve`] builds one for a snapshot (tests and benches).
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

pub mod carbon;

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

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
    /// The last moment a task with this deadline may still wait for a solar node.
    pub fn wait_for_sun_until_deadline(&self, deadline: DateTime<Utc>) -> DateTime<Utc> {
        deadline - self.expected_runtime * DEFERRAL_SAFETY_RUNTIMES
    }

    /// The last moment a task may still wait for a solar node.
    pub fn wait_for_sun_until(&self, task: &QueuedTask) -> DateTime<Utc> {
        self.wait_for_sun_until_deadline(task.deadline)
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

/// A node's place in the ranking: smaller is better.
#[derive(Debug, Clone, Copy)]
struct Rank {
    surplus: f64,
    load: f64,
    eco_score: f64,
    node_id: NodeId,
}

impl Rank {
    fn of(node: &LiveNode, watts_per_core: f64) -> Self {
        Self {
            surplus: node.solar_surplus(watts_per_core),
            load: node.load(),
            eco_score: node.eco_score,
            node_id: node.node_id,
        }
    }
}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .surplus
            .total_cmp(&self.surplus)
            .then(self.load.total_cmp(&other.load))
            .then(other.eco_score.total_cmp(&self.eco_score))
            .then(self.node_id.cmp(&other.node_id))
    }
}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Rank {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Rank {}

/// The live fleet, ranked best first. Nodes without a free core are known but not ranked.
#[derive(Debug, Clone)]
pub struct RankedFleet {
    nodes: HashMap<NodeId, (LiveNode, Rank)>,
    ranked: BTreeSet<Rank>,
    free_cores: u64,
    /// Live nodes whose panels could power a task now (`solar_watts ≥ watts_per_core`), free
    /// cores or not.
    sunny: u64,
    watts_per_core: f64,
}

impl RankedFleet {
    pub fn new(watts_per_core: f64) -> Self {
        Self { nodes: HashMap::new(), ranked: BTreeSet::new(), free_cores: 0, sunny: 0, watts_per_core }
    }

    /// The nodes of a snapshot that are live at `now`.
    pub fn from_nodes(now: DateTime<Utc>, nodes: &[LiveNode], watts_per_core: f64) -> Self {
        let mut fleet = Self::new(watts_per_core);
        for node in nodes.iter().filter(|node| node.expires_at > now) {
            fleet.upsert(node.clone());
        }
        fleet
    }

    fn free_of(node: &LiveNode) -> u64 {
        u64::from(u32::from(node.cpu_cores).saturating_sub(node.claimed))
    }

    /// Adds a live node, or replaces what was known of it.
    pub fn upsert(&mut self, node: LiveNode) {
        self.remove(node.node_id);
        let rank = Rank::of(&node, self.watts_per_core);
        if node.has_free_core() {
            self.ranked.insert(rank);
        }
        self.free_cores += Self::free_of(&node);
        self.sunny += u64::from(node.solar_watts >= self.watts_per_core);
        self.nodes.insert(node.node_id, (node, rank));
    }

    /// Forgets a node (it went offline); returns what was known of it.
    pub fn remove(&mut self, node_id: NodeId) -> Option<LiveNode> {
        let (node, rank) = self.nodes.remove(&node_id)?;
        self.ranked.remove(&rank);
        self.free_cores -= Self::free_of(&node);
        self.sunny -= u64::from(node.solar_watts >= self.watts_per_core);
        Some(node)
    }

    pub fn get(&self, node_id: NodeId) -> Option<&LiveNode> {
        self.nodes.get(&node_id).map(|(node, _)| node)
    }

    /// Sets how many cores of a live node are claimed (a no-op for a node that is not live).
    pub fn set_claimed(&mut self, node_id: NodeId, claimed: u32) {
        if let Some(mut node) = self.get(node_id).cloned() {
            node.claimed = claimed;
            self.upsert(node);
        }
    }

    /// The draw of one busy core the ranking uses.
    pub fn watts_per_core(&self) -> f64 {
        self.watts_per_core
    }

    /// Live nodes in the sun (their panels could power a task), whether or not a core is free.
    pub fn sunny_nodes(&self) -> u64 {
        self.sunny
    }

    /// Free cores on live nodes.
    pub fn free_cores(&self) -> u64 {
        self.free_cores
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn nodes(&self) -> impl Iterator<Item = &LiveNode> {
        self.nodes.values().map(|(node, _)| node)
    }

    /// The best solar surplus among nodes with a free core.
    pub fn best_surplus(&self) -> Option<f64> {
        self.ranked.first().map(|rank| rank.surplus)
    }

    /// The best ranked node a task may go to.
    pub fn best(&self, excluded: &dyn Fn(NodeId) -> bool) -> Option<&LiveNode> {
        self.best_two(excluded).0
    }

    /// The best two ranked nodes the task may go to (chosen, runner-up).
    fn best_two(&self, excluded: &dyn Fn(NodeId) -> bool) -> (Option<&LiveNode>, Option<&LiveNode>) {
        let mut eligible = self
            .ranked
            .iter()
            .filter(|rank| !excluded(rank.node_id))
            .filter_map(|rank| self.nodes.get(&rank.node_id).map(|(node, _)| node));
        (eligible.next(), eligible.next())
    }
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

/// Decides for one task and, when it is placed, takes a core of the chosen node.
pub fn place(
    fleet: &mut RankedFleet,
    now: DateTime<Utc>,
    policy: Policy,
    task_id: TaskId,
    deadline: DateTime<Utc>,
    excluded: &dyn Fn(NodeId) -> bool,
) -> Decision {
    let deferrable = now < policy.wait_for_sun_until_deadline(deadline);
    place_on_best(fleet, policy, task_id, deferrable, excluded)
}

/// Places a task on the best node it may go to, in the sun or not (the forecast found this hour
/// the cleanest of its window: see [`carbon`]).
pub fn place_now(
    fleet: &mut RankedFleet,
    policy: Policy,
    task_id: TaskId,
    excluded: &dyn Fn(NodeId) -> bool,
) -> Decision {
    place_on_best(fleet, policy, task_id, false, excluded)
}

fn place_on_best(
    fleet: &mut RankedFleet,
    policy: Policy,
    task_id: TaskId,
    deferrable: bool,
    excluded: &dyn Fn(NodeId) -> bool,
) -> Decision {
    if fleet.ranked.is_empty() {
        return Decision::NoCapacity;
    }
    let (chosen, runner_up) = match fleet.best_two(excluded) {
        (Some(chosen), runner_up) => (chosen.clone(), runner_up.map(LiveNode::score_inputs)),
        (None, _) => return Decision::NoEligibleNode,
    };
    if !chosen.has_free_core() {
        // Only nodes with a free core are ranked; were one full, placing would overfill it.
        return Decision::NoCapacity;
    }
    if deferrable && chosen.solar_surplus(policy.watts_per_core) < 0.0 {
        return Decision::WaitForSun;
    }
    let placement = Placement { task_id, node_id: chosen.node_id, chosen: chosen.score_inputs(), runner_up };
    fleet.set_claimed(chosen.node_id, chosen.claimed + 1);
    Decision::Placed(placement)
}

/// Orders tasks as the queue serves them.
pub fn queue_order(a: &QueuedTask, b: &QueuedTask) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then(a.deadline.cmp(&b.deadline))
        .then(a.submitted_at.cmp(&b.submitted_at))
        .then(a.task_id.cmp(&b.task_id))
}

/// A snapshot of the fleet that places tasks one after another (tests and benches; the writer
/// keeps its [`RankedFleet`] up to date instead of building one per round).
pub struct Placer {
    fleet: RankedFleet,
    now: DateTime<Utc>,
    policy: Policy,
}

impl Placer {
    pub fn new(now: DateTime<Utc>, nodes: &[LiveNode], policy: Policy) -> Self {
        Self { fleet: RankedFleet::from_nodes(now, nodes, policy.watts_per_core), now, policy }
    }

    pub fn place(&mut self, task: &QueuedTask) -> Decision {
        let excluded = |node_id: NodeId| task.excluded.contains(&node_id);
        place(&mut self.fleet, self.now, self.policy, task.task_id, task.deadline, &excluded)
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
