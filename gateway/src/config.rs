//! The gateway's settings, from environment variables, checked at start. Secrets are never
//! printed: `Debug` hides the operator key.

use std::net::SocketAddr;

use grid_shared::settings::{GridSettings, SettingsError, integer_in, read, redis_target};
use grid_shared::wire::connection::Target;

#[derive(Clone)]
pub struct GatewayConfig {
    pub database_url: String,
    /// `REDIS_CLUSTER_NODES` (a Redis Cluster) when set, else the server at `REDIS_URL`.
    pub redis: Target,
    pub grid: GridSettings,
    /// The operator's bearer key (`GRID_OPERATOR_KEY`), at least 32 characters.
    pub operator_key: String,
    /// Where to listen (`GATEWAY_LISTEN`, default `127.0.0.1:8081`).
    pub listen: SocketAddr,
    /// Largest request body accepted (`GATEWAY_MAX_BODY_BYTES`, default 4 MiB: the largest valid
    /// group task, 1,000 participants × 120 readings, is about 2.4 MB).
    pub max_body_bytes: usize,
    /// Time allowed to answer a request, streams aside (`GATEWAY_REQUEST_TIMEOUT_MS`).
    pub request_timeout_ms: u64,
    /// PostgreSQL connections for the read model (`GATEWAY_DB_POOL_SIZE`).
    pub db_pool_size: u32,
    /// Proxies whose `X-Forwarded-For` is believed (`GATEWAY_TRUSTED_PROXIES`, comma-separated
    /// addresses; none by default).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Requests one credential may make per second (`GATEWAY_RATE_LIMIT_PER_SECOND`).
    pub rate_limit_per_second: u32,
    /// How long `/grid/report` waits for the orchestrator's decision before answering that the
    /// credit is pending (`GATEWAY_REPORT_DECISION_WAIT_MS`, default 2000).
    pub report_decision_wait_ms: u64,
    /// Requests served at once, streams aside (`GATEWAY_MAX_IN_FLIGHT`, default 256): past it a
    /// request is answered 503 with `Retry-After` at once instead of waiting in a queue.
    pub max_in_flight: usize,
    /// Server-sent event streams open at once (`GATEWAY_MAX_STREAMS`, default 20000).
    pub max_streams: usize,
    /// A runtime tick later than this is late (see [`crate::pressure`]; `GATEWAY_MAX_DELAY_MS`,
    /// default 20).
    pub max_delay_ms: u64,
    /// Every tick late for this long, new work is refused with a 503
    /// (`GATEWAY_MAX_DELAY_WINDOW_MS`, default 250).
    pub max_delay_window_ms: u64,
    /// Where the operators' Grafana board is (`GATEWAY_GRAFANA_URL`; the one of
    /// `docker-compose.yml` by default), for the dashboard's link.
    pub grafana_url: String,
    /// Commands waiting to be applied past which new commands are refused with a 503
    /// (`GATEWAY_MAX_BACKLOG`, default 10000, about four seconds of the writer's work here; 0:
    /// no bound). Node reports are never refused for it.
    pub max_backlog: u64,
    /// How long a connection may go without sending a request head, idle between requests or
    /// slow to send one, before it is closed (`GATEWAY_IDLE_TIMEOUT_MS`, default 30000). Streams
    /// being answered are not idle.
    pub idle_timeout_ms: u64,
    /// Connections open at once (`GATEWAY_MAX_CONNECTIONS`, default 25000): past it a new one
    /// is closed at once.
    pub max_connections: usize,
    /// Threads serving requests (`GATEWAY_WORKER_THREADS`, default 1). One thread serves a
    /// request with no hand-over between threads; more spread a gateway over more cores.
    pub worker_threads: usize,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("grid", &self.grid)
            .field("listen", &self.listen)
            .field("operator_key", &"<hidden>")
            .finish_non_exhaustive()
    }
}

impl GatewayConfig {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let required = |variable: &'static str| {
            lookup(variable)
                .filter(|value| !value.trim().is_empty())
                .ok_or(SettingsError { variable, reason: "is required".to_owned() })
        };
        let operator_key = required("GRID_OPERATOR_KEY")?;
        if operator_key.len() < 32 {
            return Err(SettingsError {
                variable: "GRID_OPERATOR_KEY",
                reason: "must be at least 32 characters".to_owned(),
            });
        }
        Ok(Self {
            database_url: required("DATABASE_URL")?,
            redis: redis_target(&lookup)?,
            grid: GridSettings::from_lookup(&lookup)?,
            operator_key,
            listen: read(&lookup, "GATEWAY_LISTEN", "127.0.0.1:8081", |text| {
                text.parse().map_err(|_| format!("{text:?} is not an address like 127.0.0.1:8081"))
            })?,
            max_body_bytes: read(&lookup, "GATEWAY_MAX_BODY_BYTES", "4194304", integer_in(1024, 64 * 1024 * 1024))?,
            request_timeout_ms: read(&lookup, "GATEWAY_REQUEST_TIMEOUT_MS", "10000", integer_in(100, 600_000))?,
            db_pool_size: read(&lookup, "GATEWAY_DB_POOL_SIZE", "8", integer_in(1, 200))?,
            rate_limit_per_second: read(&lookup, "GATEWAY_RATE_LIMIT_PER_SECOND", "1000", integer_in(1, 1_000_000))?,
            report_decision_wait_ms: read(&lookup, "GATEWAY_REPORT_DECISION_WAIT_MS", "2000", integer_in(0, 30_000))?,
            max_in_flight: read(&lookup, "GATEWAY_MAX_IN_FLIGHT", "256", integer_in(1, 100_000))?,
            max_streams: read(&lookup, "GATEWAY_MAX_STREAMS", "20000", integer_in(1, 1_000_000))?,
            max_delay_ms: read(&lookup, "GATEWAY_MAX_DELAY_MS", "20", integer_in(1, 60_000))?,
            max_delay_window_ms: read(&lookup, "GATEWAY_MAX_DELAY_WINDOW_MS", "250", integer_in(1, 60_000))?,
            grafana_url: read(&lookup, "GATEWAY_GRAFANA_URL", "http://127.0.0.1:3000/d/koprogo-grid", |text| {
                if text.starts_with("http://") || text.starts_with("https://") {
                    Ok(text.to_owned())
                } else {
                    Err("must be an http:// or https:// address".to_owned())
                }
            })?,
            max_backlog: read(&lookup, "GATEWAY_MAX_BACKLOG", "10000", integer_in(0, 100_000_000))?,
            idle_timeout_ms: read(&lookup, "GATEWAY_IDLE_TIMEOUT_MS", "30000", integer_in(100, 3_600_000))?,
            max_connections: read(&lookup, "GATEWAY_MAX_CONNECTIONS", "25000", integer_in(1, 10_000_000))?,
            worker_threads: read(&lookup, "GATEWAY_WORKER_THREADS", "1", integer_in(1, 1024))?,
            trusted_proxies: read(&lookup, "GATEWAY_TRUSTED_PROXIES", "", |text| {
                text.split(',')
                    .map(str::trim)
                    .filter(|part| !part.is_empty())
                    .map(|part| part.parse().map_err(|_| format!("{part:?} is not an IP address")))
                    .collect()
            })?,
        })
    }
}
