//! What every handler shares.

use std::sync::Arc;

use grid_shared::wire::Keys;
use sqlx::PgPool;

use crate::config::GatewayConfig;

/// What every handler shares, behind one reference count (each request clones it for each
/// layer it passes).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub pool: PgPool,
    pub redis: grid_shared::wire::connection::Redis,
    pub config: Arc<GatewayConfig>,
    /// Each cell's keys, in `GRID_CELLS` order (built once: requests borrow them).
    pub keys_by_cell: Vec<Keys>,
    /// API keys and node tokens already looked up (see [`crate::auth::Credential`]).
    pub auth: Arc<crate::auth::AuthCache>,
    /// The nodes connected to this gateway's task channels (fed by one Redis reader).
    pub channels: Arc<crate::channels::NodeChannels>,
    /// Admission: requests served at once, and streams open at once (see the config).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub streams: Arc<tokio::sync::Semaphore>,
    /// How late this gateway's runtime runs (see [`crate::pressure`]).
    pub pressure: Arc<crate::pressure::Pressure>,
    /// The cells' summaries, for the cell of a task that names none.
    pub summaries: Arc<crate::summaries::Summaries>,
    /// This gateway's Prometheus figures.
    pub metrics: Arc<grid_shared::metrics::Registry>,
}

impl AppState {
    /// A place for one more open stream, or 503 at once.
    pub fn stream_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, crate::error::ApiError> {
        self.streams.clone().try_acquire_owned().map_err(|_| crate::error::ApiError::Overloaded)
    }

    /// The default cell's keys (where organisation-level commands go, and reads that name no
    /// cell look).
    pub fn keys(&self) -> &Keys {
        &self.config.grid.keys
    }

    /// A cell's keys, under its hash tag (the default cell's for a cell the grid does not have:
    /// the routes check a cell a request names first).
    pub fn cell_keys(&self, cell: &grid_shared::cells::CellName) -> &Keys {
        let place = self.config.grid.cells.position(cell);
        place.and_then(|place| self.keys_by_cell.get(place)).unwrap_or_else(|| self.keys())
    }

    /// The keys of a node's cell.
    pub fn node_keys(&self, node: &crate::auth::NodeCaller) -> &Keys {
        self.keys_by_cell.get(usize::from(node.cell)).unwrap_or_else(|| self.keys())
    }

    /// A node's cell.
    pub fn node_cell(&self, node: &crate::auth::NodeCaller) -> &grid_shared::cells::CellName {
        let cells = &self.config.grid.cells;
        &cells.nth(usize::from(node.cell)).unwrap_or_else(|| cells.default_cell()).name
    }

    /// The grid's default cell (the one whose events, blocks and proof chain a request that
    /// names no cell reads).
    pub fn default_cell(&self) -> &grid_shared::cells::CellName {
        &self.config.grid.cells.default_cell().name
    }

    /// A connection of its own, for blocking reads that must not stall the pool (SSE).
    pub async fn blocking_connection(&self) -> redis::RedisResult<grid_shared::wire::connection::Conn> {
        self.redis.dedicated().await
    }
}
