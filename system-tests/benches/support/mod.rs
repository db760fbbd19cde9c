//! What the benches share: a scratch database and namespace, polling, percentiles.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use sqlx::migrate::MigrateDatabase;

pub fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * fraction).round() as usize]
}

/// Polls `probe` every 2 ms until it gives `Some` (30 s at most).
pub async fn poll<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A database and a Redis namespace of the bench's own, removed afterwards.
pub struct Scratch {
    pub database_url: String,
    pub redis_url: String,
    pub namespace: String,
}

impl Scratch {
    pub async fn new(name: &str) -> anyhow::Result<Self> {
        let base_url =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let (prefix, _) = base_url.rsplit_once('/').ok_or_else(|| anyhow::anyhow!("DATABASE_URL has no database"))?;
        let database_url = format!("{prefix}/koprogo_grid_bench_{name}_{}", std::process::id());
        sqlx::Postgres::create_database(&database_url).await?;
        Ok(Self { database_url, redis_url, namespace: format!("bench-{name}-{}", std::process::id()) })
    }

    pub async fn remove(self) -> anyhow::Result<()> {
        sqlx::Postgres::drop_database(&self.database_url).await?;
        let client = redis::Client::open(self.redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{{{}:*", self.namespace)).query_async(&mut conn).await?;
        for chunk in keys.chunks(10_000) {
            redis::cmd("DEL").arg(chunk).query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }
}

/// A gateway and an orchestrator in this process over a scratch database, with one organisation.
pub struct Running {
    pub base: String,
    pub pool: sqlx::PgPool,
    pub http: reqwest::Client,
    pub api_key: String,
    shutdown: tokio_util::sync::CancellationToken,
    orchestrator: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn start(scratch: &Scratch, extra: &[(&str, String)]) -> anyhow::Result<Self> {
        let operator = "bench-operator-key-0123456789abcdef0123456789";
        let settings = |name: &str| -> Option<String> {
            if let Some((_, value)) = extra.iter().find(|(key, _)| *key == name) {
                return Some(value.clone());
            }
            match name {
                "DATABASE_URL" => Some(scratch.database_url.clone()),
                "REDIS_URL" => Some(scratch.redis_url.clone()),
                "GRID_NAMESPACE" => Some(scratch.namespace.clone()),
                "GRID_OPERATOR_KEY" => Some(operator.to_owned()),
                "GATEWAY_RATE_LIMIT_PER_SECOND" => Some("1000000".to_owned()),
                "GRID_ADMIN_LISTEN" => Some("127.0.0.1:0".to_owned()),
                _ => None,
            }
        };
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&scratch.database_url).await?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let orchestrator_config = grid_orchestrator::config::OrchestratorConfig::from_lookup(settings)?;
        let orchestrator =
            tokio::spawn(grid_orchestrator::app::run(orchestrator_config, pool.clone(), shutdown.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let gateway_config = grid_gateway::config::GatewayConfig::from_lookup(settings)?;
        let state = grid_gateway::app::build_state_with_pool(gateway_config, pool.clone())?;
        let stop = shutdown.clone();
        tokio::spawn(grid_gateway::app::run(listener, state, async move { stop.cancelled().await }));
        let http = reqwest::Client::new();
        let created: serde_json::Value = http
            .post(format!("{base}/v1/organizations"))
            .bearer_auth(operator)
            .json(&serde_json::json!({"name": "bench"}))
            .send()
            .await?
            .json()
            .await?;
        let api_key = created["api_key"].as_str().unwrap_or_default().to_owned();
        poll("the organisation", || async {
            let status = http.get(format!("{base}/v1/tasks")).bearer_auth(&api_key).send().await.ok()?.status();
            (status == 200).then_some(())
        })
        .await;
        Ok(Self { base, pool, http, api_key, shutdown, orchestrator })
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.orchestrator.await;
        self.pool.close().await;
    }
}
