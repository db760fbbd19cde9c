//! What every handler shares.

use std::sync::Arc;

use grid_shared::keys::Keys;
use sqlx::PgPool;

use crate::config::GatewayConfig;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub redis: deadpool_redis::Pool,
    pub config: Arc<GatewayConfig>,
    /// Node tokens already looked up (by their SHA-256): a node's identity never changes and
    /// its token is never reissued, so a heartbeat or a report costs no PostgreSQL lookup.
    pub node_tokens: Arc<NodeTokenCache>,
}

/// A bounded map of node-token hashes to the node they authenticate (only found tokens are
/// kept; past the bound it starts over).
#[derive(Debug, Default)]
pub struct NodeTokenCache {
    known: std::sync::RwLock<std::collections::HashMap<String, crate::auth::NodeCaller>>,
}

impl NodeTokenCache {
    const MAX_ENTRIES: usize = 100_000;

    pub fn get(&self, token_hash: &str) -> Option<crate::auth::NodeCaller> {
        self.known.read().expect("not poisoned").get(token_hash).copied()
    }

    pub fn insert(&self, token_hash: &str, node: crate::auth::NodeCaller) {
        let mut known = self.known.write().expect("not poisoned");
        if known.len() >= Self::MAX_ENTRIES {
            known.clear();
        }
        known.insert(token_hash.to_owned(), node);
    }
}

impl AppState {
    pub fn keys(&self) -> &Keys {
        &self.config.grid.keys
    }

    /// A connection of its own, for blocking reads that must not stall the pool (SSE).
    pub async fn blocking_connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.config.redis_url.as_str())?;
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        client.get_multiplexed_async_connection_with_config(&config).await
    }
}
