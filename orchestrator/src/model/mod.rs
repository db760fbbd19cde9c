//! The active writer's state, in memory, and the pure decisions made on it.
//!
//! - [`State`]: open tasks, the queue, timers, nodes and the fleet mirror, organisations and
//!   their keys, consent, and the proof-chain head. Rebuilt from PostgreSQL at takeover
//!   (`store::load`); afterwards only the writer changes it, message by message, in stream order.
//! - [`lifecycle`]: a task's transitions (submit, place, start, complete, fail, take back,
//!   cancel, deadline), each returning its events and row changes.
//! - [`queue`]: the queued tasks, by priority and by deadline; [`timers`]: what is due when.
//! - [`batch`]: what the writer decided since its last commit, as rows and Redis work;
//!   [`message`]: a stream entry decoded into the message it carries.
//! - [`context`]: the clock, ids and random draws decisions take (never the world's own).
//! - [`restore`]: the state rebuilt from what was committed (a [`restore::Snapshot`] of the
//!   rows), with the tasks whose rows contradict themselves quarantined instead of trusted.
//!
//! Nothing here does I/O.

pub mod batch;
pub mod chain;
pub mod context;
pub mod lifecycle;
pub mod message;
pub mod queue;
pub mod restore;
pub mod timers;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use grid_shared::carbon::{CarbonPolicy, MicroWattHours};
use grid_shared::domain::{TaskInput, TaskStatus};
use grid_shared::ids::{NodeId, OrganizationId, OwnerId, TaskId};
use grid_shared::live::HeartbeatEntry;
use grid_shared::proof::GENESIS_HASH;
use grid_shared::reasons::TaskReason;
use grid_shared::signals::Zone;

pub use chain::ProofChain;

use crate::config::{OrchestratorConfig, Validation};
use crate::scheduler::{LiveNode, Policy, RankedFleet};
use crate::validation::Requirement;
pub use queue::Queue;
pub use timers::Timers;

/// A map of the writer's state. Hashed with foldhash, seeded per process: SipHash was a tenth
/// of a decision's time, and no decision depends on a map's order (each that iterates sorts).
pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A set of the writer's state (see [`Map`]).
pub type Set<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// An anonymised task input at most this large (numbers of readings) is kept in memory for
/// the assignment message; a larger one is read back from its row when the task is placed.
pub const INPUT_KEPT_READINGS: usize = 256;

/// A result reported for a task, kept while the task waits for its quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskResult {
    pub attempt: i32,
    pub node_id: NodeId,
    pub owner_id: OrganizationId,
    pub result_hash: String,
    pub energy: MicroWattHours,
    pub solar: MicroWattHours,
    /// Why the reported energy earns no credit, when it does not.
    pub refusal: Option<String>,
}

/// An open task (queued, assigned or running), as the writer holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub task_id: TaskId,
    pub organization_id: OrganizationId,
    pub status: TaskStatus,
    pub priority: u8,
    pub deadline: DateTime<Utc>,
    pub submitted_at: DateTime<Utc>,
    /// The attempt number; a report for another attempt is refused (fencing).
    pub attempts: i32,
    pub node_id: Option<NodeId>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    /// A requeued task waits out its backoff until then.
    pub not_before: Option<DateTime<Utc>>,
    pub reason: Option<TaskReason>,
    pub requirement: Requirement,
    /// The id of the request that submitted the task: it follows the task to the node.
    pub correlation_id: uuid::Uuid,
    /// The distinct owners whose readings a group task uses (empty for other kinds).
    pub participants: Vec<OwnerId>,
    /// The input as a node receives it, when small (see [`INPUT_KEPT_READINGS`]).
    pub input: Option<Arc<TaskInput>>,
    /// The seq of the event of its current assignment: the id (`<seq>-0`) of the entry on its
    /// node's channel.
    pub assignment_seq: Option<i64>,
    /// The commands-stream entry that carried the submission (deleted on consent revocation).
    pub submitted_entry_id: Option<String>,
    /// Results that wait for the quorum, in the order they came.
    pub results: Vec<TaskResult>,
}

impl Task {
    /// Owners whose nodes may not run the task again (they returned a result).
    pub fn excluded_owners(&self) -> impl Iterator<Item = OrganizationId> + '_ {
        self.results.iter().map(|result| result.owner_id)
    }
}

/// A registered node: who owns it, its cores, its trust, and the tasks it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub node_id: NodeId,
    pub owner_id: OrganizationId,
    pub cpu_cores: u16,
    /// Its carbon zone; `None` for a node registered before zones (the grid's default zone).
    pub zone: Option<Zone>,
    /// Its declared embodied emissions in g CO₂e; `None`: the grid's default.
    pub embodied_g: Option<i64>,
    /// Consecutive results confirmed by a quorum.
    pub trust: u32,
    /// Tasks assigned to or running on it (each holds one core).
    pub in_flight: Set<TaskId>,
}

/// The live state of a node from its last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Live {
    pub cpu_usage: f64,
    pub solar_watts: f64,
    pub eco_score: f64,
    pub expires_at: DateTime<Utc>,
}

/// An organisation and its API keys (as hashes) that still work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Organization {
    pub active_keys: Set<String>,
}

/// The settings decisions depend on, taken from the configuration once.
#[derive(Debug, Clone)]
pub struct Rules {
    pub max_attempts: i32,
    pub requeue_backoff_ms: i64,
    pub start_lease_ms: i64,
    pub k_anonymity_min: usize,
    pub validation: Validation,
    pub policy: Policy,
    pub max_milliwatts_per_core: i64,
    pub carbon: CarbonPolicy,
    /// The carbon zones a node may register in, and the zone of one that names none.
    pub zones: Vec<Zone>,
    pub default_zone: Zone,
    /// How a deferrable task without sun waits.
    pub deferral: crate::config::Deferral,
    pub sci: crate::config::SciSettings,
    pub proof_difficulty: u8,
    /// A block closes when it holds this many leaves, or when its first leaf is this old.
    pub block_max_leaves: usize,
    pub seal_interval: chrono::Duration,
    /// This process, named on the assignments it decides.
    pub writer_name: String,
    /// The cell this writer serves: it refuses nodes and tasks of another.
    pub cell: grid_shared::cells::CellName,
    /// The grid's default cell: its writer alone applies the organisation-level commands
    /// (organisations, keys, consent, contracts) and writes their rows. The other cells learn
    /// of them from PostgreSQL, and of a consent revocation from the default cell's writer,
    /// which forwards it to them (DESIGN §11).
    pub default_cell: grid_shared::cells::CellName,
}

impl Rules {
    /// Whether this writer's cell is the grid's default (see [`Rules::default_cell`]).
    pub fn in_default_cell(&self) -> bool {
        self.cell == self.default_cell
    }

    /// Refuses an organisation-level command outside the default cell.
    pub fn organisation_level(&self) -> Result<(), grid_shared::reasons::Refusal> {
        if self.in_default_cell() {
            return Ok(());
        }
        Err(grid_shared::reasons::Refusal::NotDefaultCell {
            default: self.default_cell.to_string(),
            served: self.cell.to_string(),
        })
    }

    pub fn from_config(config: &OrchestratorConfig) -> Self {
        Self {
            max_attempts: config.max_attempts,
            requeue_backoff_ms: config.requeue_backoff_ms,
            start_lease_ms: config.start_lease_ms,
            k_anonymity_min: config.k_anonymity_min,
            validation: config.validation,
            policy: config.scheduling_policy(),
            max_milliwatts_per_core: config.grid.max_milliwatts_per_core,
            carbon: config.grid.carbon,
            zones: config.grid.zones.clone(),
            default_zone: config.grid.default_zone.clone(),
            deferral: config.deferral,
            sci: config.sci,
            proof_difficulty: config.grid.proof_difficulty,
            block_max_leaves: config.block_max_leaves,
            seal_interval: chrono::Duration::milliseconds(config.seal_interval_ms),
            writer_name: config.consumer_name.clone(),
            cell: config.grid.cell().name.clone(),
            default_cell: config.grid.cells.default_cell().name.clone(),
        }
    }
}

/// Everything the writer decides from.
#[derive(Debug, Clone)]
pub struct State {
    pub tasks: Map<TaskId, Task>,
    pub queue: Queue,
    pub timers: Timers,
    pub nodes: Map<NodeId, Node>,
    /// Live state of the nodes whose last heartbeat has not expired.
    pub live: Map<NodeId, Live>,
    /// The live nodes, ranked for placement (kept in step with `live` and `nodes`).
    pub fleet: RankedFleet,
    /// How many registered nodes each owner has.
    pub nodes_per_owner: Map<OrganizationId, u32>,
    /// How many live nodes each owner has (kept with `live`).
    pub live_per_owner: Map<OrganizationId, u32>,
    pub organizations: Map<OrganizationId, Organization>,
    /// Every API key hash and node token hash ever issued (they must be unique).
    pub key_hashes: Set<String>,
    pub token_hashes: Set<String>,
    /// (organisation, owner) pairs whose consent is granted.
    pub consent: Set<(OrganizationId, OwnerId)>,
    pub chain: ProofChain,
    /// The seq the next event gets.
    pub next_seq: i64,
}

impl State {
    pub fn new(policy: Policy) -> Self {
        Self {
            tasks: Map::default(),
            queue: Queue::default(),
            timers: Timers::default(),
            nodes: Map::default(),
            live: Map::default(),
            fleet: RankedFleet::new(policy.watts_per_core),
            nodes_per_owner: Map::default(),
            live_per_owner: Map::default(),
            organizations: Map::default(),
            key_hashes: Set::default(),
            token_hashes: Set::default(),
            consent: Set::default(),
            chain: ProofChain::new(0, GENESIS_HASH),
            next_seq: 1,
        }
    }

    /// Registers a node (at load, or when `CMD:REGISTER_NODE` is applied).
    pub fn add_node(&mut self, node: Node) {
        *self.nodes_per_owner.entry(node.owner_id).or_default() += 1;
        self.nodes.insert(node.node_id, node);
    }

    /// Distinct owners with at least one registered node.
    pub fn node_owners(&self) -> usize {
        self.nodes_per_owner.len()
    }

    /// Whether some owner other than `owner_id` has a live node (a second opinion is possible
    /// now: a registered node that is offline would leave the task waiting for its deadline).
    pub fn another_owner_has_live_nodes(&self, owner_id: OrganizationId) -> bool {
        self.live_per_owner.iter().any(|(owner, live)| *owner != owner_id && *live > 0)
    }

    /// Whether every participant of a group task consents, within the task's organisation.
    pub fn first_without_consent(&self, organization_id: OrganizationId, owners: &[OwnerId]) -> Option<OwnerId> {
        owners.iter().copied().find(|owner| !self.consent.contains(&(organization_id, *owner)))
    }

    fn live_node(&self, node_id: NodeId) -> Option<LiveNode> {
        let node = self.nodes.get(&node_id)?;
        let live = self.live.get(&node_id)?;
        Some(LiveNode {
            node_id,
            cpu_cores: node.cpu_cores,
            claimed: u32::try_from(node.in_flight.len()).unwrap_or(u32::MAX),
            solar_watts: live.solar_watts,
            cpu_usage: live.cpu_usage,
            eco_score: live.eco_score,
            expires_at: live.expires_at,
        })
    }

    /// Applies a heartbeat from the change feed; returns whether placement may have new room
    /// (the node came online, or now has solar surplus it did not have).
    pub fn heartbeat(&mut self, entry: &HeartbeatEntry) -> bool {
        let Some(expires_at) = DateTime::from_timestamp_millis(entry.expires_at_ms) else { return false };
        if !self.nodes.contains_key(&entry.node_id) {
            return false;
        }
        let surplus_before = self.fleet.get(entry.node_id).map(|node| node.solar_surplus(self.fleet_watts()));
        if let Some(known) = self.live.get(&entry.node_id)
            && known.expires_at > expires_at
        {
            // An older heartbeat read after a newer one: the newer one stands.
            return false;
        }
        match self.live.get(&entry.node_id) {
            Some(previous) => self.timers.forget_node_expiry(previous.expires_at, entry.node_id),
            None => {
                if let Some(node) = self.nodes.get(&entry.node_id) {
                    *self.live_per_owner.entry(node.owner_id).or_default() += 1;
                }
            }
        }
        let live =
            Live { cpu_usage: entry.cpu_usage, solar_watts: entry.solar_watts, eco_score: entry.eco_score, expires_at };
        self.live.insert(entry.node_id, live);
        self.timers.node_expires(expires_at, entry.node_id);
        if let Some(node) = self.live_node(entry.node_id) {
            let surplus_after = node.solar_surplus(self.fleet_watts());
            self.fleet.upsert(node);
            return match surplus_before {
                None => true,
                Some(before) => before < 0.0 && surplus_after >= 0.0,
            };
        }
        false
    }

    fn fleet_watts(&self) -> f64 {
        self.fleet.watts_per_core()
    }

    /// Forgets a node's live state (its heartbeats stopped).
    pub fn node_offline(&mut self, node_id: NodeId) {
        if let Some(live) = self.live.remove(&node_id) {
            self.timers.forget_node_expiry(live.expires_at, node_id);
            if let Some(node) = self.nodes.get(&node_id)
                && let Some(count) = self.live_per_owner.get_mut(&node.owner_id)
            {
                *count = count.saturating_sub(1);
            }
        }
        self.fleet.remove(node_id);
    }

    /// Records that a task holds a core of a node.
    pub fn hold_core(&mut self, node_id: NodeId, task_id: TaskId) {
        if let Some(node) = self.nodes.get_mut(&node_id) {
            node.in_flight.insert(task_id);
            let claimed = u32::try_from(node.in_flight.len()).unwrap_or(u32::MAX);
            self.fleet.set_claimed(node_id, claimed);
        }
    }

    /// Frees the core a task held on a node.
    pub fn free_core(&mut self, node_id: NodeId, task_id: TaskId) {
        if let Some(node) = self.nodes.get_mut(&node_id) {
            node.in_flight.remove(&task_id);
            let claimed = u32::try_from(node.in_flight.len()).unwrap_or(u32::MAX);
            self.fleet.set_claimed(node_id, claimed);
        }
    }

    /// Tasks in flight per node, for the `{ns}:nodes:claimed` hash.
    pub fn claimed(&self, node_id: NodeId) -> usize {
        self.nodes.get(&node_id).map_or(0, |node| node.in_flight.len())
    }

    /// Puts an open task in the state with its queue entry and timers.
    pub fn insert_task(&mut self, task: Task, rules: &Rules) {
        self.timers.track(&task, rules);
        if task.status == TaskStatus::Queued && task.not_before.is_none() {
            self.queue.push(&task);
        }
        if let (Some(node_id), true) = (task.node_id, matches!(task.status, TaskStatus::Assigned | TaskStatus::Running))
        {
            self.hold_core(node_id, task.task_id);
        }
        self.tasks.insert(task.task_id, task);
    }

    /// Takes an open task out of the state (it became final), with its queue entry, timers and
    /// core.
    pub fn remove_task(&mut self, task_id: TaskId, rules: &Rules) -> Option<Task> {
        let task = self.tasks.remove(&task_id)?;
        self.untrack(&task, rules);
        Some(task)
    }

    /// Removes what indexes a task (queue, timers, core) before it changes.
    pub fn untrack(&mut self, task: &Task, rules: &Rules) {
        self.queue.remove(task);
        self.timers.untrack(task, rules);
        if let Some(node_id) = task.node_id {
            self.free_core(node_id, task.task_id);
        }
    }

    /// Indexes a task again after it changed.
    pub fn track(&mut self, task: &Task, rules: &Rules) {
        self.timers.track(task, rules);
        if task.status == TaskStatus::Queued && task.not_before.is_none() {
            self.queue.push(task);
        }
        if let (Some(node_id), true) = (task.node_id, matches!(task.status, TaskStatus::Assigned | TaskStatus::Running))
        {
            self.hold_core(node_id, task.task_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lifecycle::tests::rules;

    fn node_of(owner_id: OrganizationId) -> Node {
        Node {
            node_id: NodeId::new(),
            owner_id,
            cpu_cores: 2,
            zone: None,
            embodied_g: None,
            trust: 0,
            in_flight: Set::default(),
        }
    }

    fn heartbeat_of(node_id: NodeId, solar_watts: f64) -> HeartbeatEntry {
        let expires_at_ms = (Utc::now() + chrono::Duration::seconds(15)).timestamp_millis();
        HeartbeatEntry { node_id, cpu_usage: 5.0, solar_watts, eco_score: 0.5, expires_at_ms }
    }

    #[test]
    fn a_second_opinion_needs_a_node_of_another_owner_online() {
        let (ours, theirs) = (OrganizationId::new(), OrganizationId::new());
        let mut state = State::new(rules().policy);
        let (mine, other) = (node_of(ours), node_of(theirs));
        state.add_node(mine.clone());
        state.add_node(other.clone());
        assert!(!state.another_owner_has_live_nodes(ours), "registered is not enough");
        state.heartbeat(&heartbeat_of(mine.node_id, 0.0));
        assert!(!state.another_owner_has_live_nodes(ours));
        state.heartbeat(&heartbeat_of(other.node_id, 0.0));
        state.heartbeat(&heartbeat_of(other.node_id, 0.0));
        assert!(state.another_owner_has_live_nodes(ours));
        state.node_offline(other.node_id);
        assert!(!state.another_owner_has_live_nodes(ours));
    }

    #[test]
    fn a_heartbeat_reranks_its_node_and_says_when_placement_has_new_room() {
        let owner = OrganizationId::new();
        let mut state = State::new(rules().policy);
        let node = node_of(owner);
        state.add_node(node.clone());
        assert!(state.heartbeat(&heartbeat_of(node.node_id, 0.0)), "a node coming online is new room");
        assert_eq!(state.fleet.free_cores(), 2);
        assert!(!state.heartbeat(&heartbeat_of(node.node_id, 0.0)), "nothing changed");
        assert!(state.heartbeat(&heartbeat_of(node.node_id, 100.0)), "the sun came out: surplus where there was none");
        state.hold_core(node.node_id, TaskId::new());
        assert_eq!((state.fleet.free_cores(), state.claimed(node.node_id)), (1, 1));
        assert!(!state.heartbeat(&heartbeat_of(NodeId::new(), 100.0)), "an unknown node is ignored");
    }
}
