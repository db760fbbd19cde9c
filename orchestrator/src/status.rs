//! What this process is doing, for `/readyz` and the logs: its role, the epoch it holds, and
//! the size of what it holds in memory.

use std::sync::Mutex;

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
    /// The active writer of its partition.
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
}

pub struct Status {
    snapshot: Mutex<Snapshot>,
}

impl Status {
    pub fn new(name: &str) -> Self {
        Self {
            snapshot: Mutex::new(Snapshot {
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
            }),
        }
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
