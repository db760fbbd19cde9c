//! What this process is doing in a cell, for `/readyz` and the logs: its role, the epoch it
//! holds, and the size of what it holds in memory. A process writing several cells has one
//! [`Status`] per cell, all sharing the process's metrics.

use std::sync::{Arc, Mutex};

use grid_shared::metrics::{Described, Registry};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Starting up (migrations, connections).
    Starting,
    /// Waiting for the writer's lease; takes over when the writer stops or dies.
    Standby,
    /// Loading the state to take over.
    TakingOver,
    /// The active writer of its cell.
    Writer,
    Stopping,
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub role: Role,
    /// This process's name in the consumer group.
    pub name: String,
    /// The epoch it holds as the writer (the last one it held, for a standby).
    pub epoch: Option<i64>,
    pub open_tasks: usize,
    pub queued_tasks: usize,
    pub live_nodes: usize,
    pub batches: u64,
    /// Messages applied (or rejected) and SQL statements run in the batches, since this
    /// process started.
    pub messages: u64,
    pub statements: u64,
    /// The proof chain: the last sealed block's height, leaves credited and not sealed yet,
    /// and blocks this process sealed.
    pub chain_height: i64,
    pub pending_leaves: usize,
    pub blocks_sealed: u64,
    /// Set while the writer cannot reach PostgreSQL or Redis.
    pub problem: Option<String>,
    /// Where the admin endpoint listens, once bound.
    pub admin_address: Option<std::net::SocketAddr>,
}

impl Snapshot {
    /// A process starting, holding nothing yet.
    fn starting(name: &str) -> Self {
        Self {
            role: Role::Starting,
            name: name.to_owned(),
            epoch: None,
            open_tasks: 0,
            queued_tasks: 0,
            live_nodes: 0,
            batches: 0,
            messages: 0,
            statements: 0,
            chain_height: 0,
            pending_leaves: 0,
            blocks_sealed: 0,
            problem: None,
            admin_address: None,
        }
    }
}

pub struct Status {
    snapshot: Mutex<Snapshot>,
    /// This process's Prometheus figures (`/metrics` on the admin endpoint), shared by its cells.
    pub metrics: Arc<Registry>,
}

impl Status {
    pub fn new(name: &str) -> Self {
        Self { snapshot: Mutex::new(Snapshot::starting(name)), metrics: Arc::new(Registry::new(&DESCRIBED)) }
    }

    /// The status of this process in another cell: its own role and figures, the same name,
    /// admin address and metrics.
    pub fn for_another_cell(&self) -> Self {
        let ours = self.snapshot();
        let snapshot = Snapshot { admin_address: ours.admin_address, ..Snapshot::starting(&ours.name) };
        Self { snapshot: Mutex::new(snapshot), metrics: self.metrics.clone() }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().expect("not poisoned").clone()
    }

    pub fn update(&self, change: impl FnOnce(&mut Snapshot)) {
        change(&mut self.snapshot.lock().expect("not poisoned"));
    }

    pub fn set_role(&self, role: Role) {
        self.update(|snapshot| snapshot.role = role);
    }
}

/// The orchestrator's metrics (see `admin.rs` for those read at scrape time).
const DESCRIBED: [Described; 23] = [
    Described::Gauge(
        "grid_writer_role",
        "1 for this process's role in the cell (starting, standby, taking_over, writer, stopping).",
    ),
    Described::Gauge("grid_writer_epoch", "The writer's epoch this process holds in the cell (or last held)."),
    Described::Gauge(
        "grid_tasks",
        "Tasks open in the writer's memory, by status (queued; on_nodes: assigned or running).",
    ),
    Described::Gauge("grid_nodes_alive", "Nodes whose heartbeat has not expired, in the writer's fleet mirror."),
    Described::Gauge("grid_chain_height", "Height of the last sealed proof block."),
    Described::Gauge("grid_chain_pending_leaves", "Credits waiting for their block to be sealed."),
    Described::Counter("grid_batches_total", "Batches committed by this process."),
    Described::Counter("grid_messages_total", "Commands and reports applied or rejected by this process."),
    Described::Counter("grid_sql_statements_total", "SQL statements run by this process's batches."),
    Described::Counter("grid_blocks_sealed_total", "Proof blocks sealed by this process."),
    Described::Histogram("grid_batch_messages", "Messages in a committed batch."),
    Described::Histogram("grid_batch_commit_seconds", "Time to write and commit a batch."),
    Described::Counter("grid_events_total", "Domain events committed, by type (TaskCompleted, TaskFailed, ...)."),
    Described::Counter("grid_credits_peur_total", "Credits minted, in pico-euros, by account (node, cooperative)."),
    Described::Counter("grid_carbon_saved_ng_total", "CO2 saved by credited results, in nanograms."),
    Described::Counter(
        "grid_invariant_violations_total",
        "Messages and timers the writer refused because it met state it did not expect (each is logged with its task).",
    ),
    Described::Counter(
        "grid_tasks_quarantined_total",
        "Tasks whose stored rows contradicted themselves at a takeover.",
    ),
    Described::Counter(
        "grid_carbon_source_failures_total",
        "Carbon signal sources that failed or answered nonsense, by source (the round skipped them).",
    ),
    Described::Counter("grid_carbon_source_updates_total", "Rounds in which a live carbon signal source answered."),
    Described::Gauge("grid_stream_length", "Entries in a Redis stream of the grid."),
    Described::Gauge("grid_stream_pending", "Entries delivered to the orchestrators' group and not acknowledged."),
    Described::Gauge("grid_stream_lag", "Entries not yet delivered to the orchestrators' group."),
    Described::Gauge("grid_redis_up", "1 when the last scrape could read Redis."),
];
