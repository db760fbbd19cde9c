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
    /// API keys and node tokens already looked up (see [`crate::auth::Credential`]).
    pub auth: Arc<crate::auth::AuthCache>,
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
