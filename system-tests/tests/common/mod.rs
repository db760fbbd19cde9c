//! `spawn_system()`: the real gateway (on port 0) and a real orchestrator over the test's own
//! PostgreSQL database and its own Redis namespace, plus helpers to drive them over HTTP.

#![allow(dead_code)]

pub mod cells;
pub mod cluster;
pub mod processes;

use std::collections::HashMap;
use std::time::Duration;

use grid_gateway::config::GatewayConfig;
use grid_orchestrator::config::OrchestratorConfig;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub const OPERATOR_KEY: &str = "test-operator-key-0123456789abcdef0123456789";

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub struct System {
    pub base: String,
    pub settings: HashMap<String, String>,
    pub namespace: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub redis: redis::aio::MultiplexedConnection,
    pub shutdown: CancellationToken,
    orchestrator: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The first orchestrator's status (its role, its admin endpoint's address, its metrics).
    pub status: std::sync::Arc<grid_orchestrator::status::Status>,
    /// Stops the first orchestrator alone.
    orchestrator_stop: CancellationToken,
    extra: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn settings(namespace: &str, overrides: &[(&str, &str)]) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = [
        ("DATABASE_URL", "postgres://unused"),
        ("GRID_NAMESPACE", namespace),
        ("GRID_OPERATOR_KEY", OPERATOR_KEY),
        ("GRID_NODE_TTL_MS", "3000"),
        ("GRID_TICK_MS", "50"),
        ("GRID_CONSUMER_NAME", "orchestrator-test"),
        ("GRID_ADMIN_LISTEN", "127.0.0.1:0"),
        ("GATEWAY_RATE_LIMIT_PER_SECOND", "100000"),
        // Tests share a runtime and two cores with the whole suite: no shedding by delay.
        ("GATEWAY_MAX_DELAY_MS", "60000"),
        // Result validation is off unless a test asks for it (tests/quorum.rs): tests that are
        // about something else then see one result per task.
        ("GRID_TRUST_THRESHOLD", "0"),
        ("GRID_SPOT_CHECK_PPM", "0"),
        // The solar-first rule alone: under the forecast rule (the default), whether a task with
        // slack and no sun waits or runs would depend on the hour the test runs in (the bundled
        // year's intensity). The forecast rule is tested where its forecast is the test's own
        // (orchestrator/tests/writer.rs) and explored by the simulator.
        ("GRID_DEFERRAL", "solar"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    map.insert("REDIS_URL".to_owned(), redis_url());
    for (key, value) in overrides {
        map.insert((*key).to_owned(), (*value).to_owned());
    }
    map
}

pub fn fresh_namespace() -> String {
    format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Starts a gateway and an orchestrator sharing `pool`, under a fresh namespace (or the one in
/// `overrides`).
pub async fn spawn_system(pool: PgPool, overrides: &[(&str, &str)]) -> System {
    spawn_services(pool, overrides, true).await
}

/// Starts the gateway alone (the test runs orchestrator processes of its own).
pub async fn spawn_gateway(pool: PgPool, overrides: &[(&str, &str)]) -> System {
    spawn_services(pool, overrides, false).await
}

async fn spawn_services(pool: PgPool, overrides: &[(&str, &str)], with_orchestrator: bool) -> System {
    // `TEST_LOG=info` (a tracing filter) shows the services' logs under the test's output.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let namespace = overrides
        .iter()
        .find(|(key, _)| *key == "GRID_NAMESPACE")
        .map(|(_, value)| (*value).to_owned())
        .unwrap_or_else(fresh_namespace);
    let map = settings(&namespace, overrides);
    let orchestrator_config =
        OrchestratorConfig::from_lookup(|name| map.get(name).cloned()).expect("valid orchestrator settings");
    let gateway_config = GatewayConfig::from_lookup(|name| map.get(name).cloned()).expect("valid gateway settings");
    let shutdown = CancellationToken::new();
    let orchestrator_stop = shutdown.child_token();
    let status = std::sync::Arc::new(grid_orchestrator::status::Status::new("orchestrator-test"));
    let orchestrator = with_orchestrator.then(|| {
        tokio::spawn(grid_orchestrator::app::run_with_status(
            orchestrator_config,
            pool.clone(),
            orchestrator_stop.clone(),
            status.clone(),
        ))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let base = format!("http://{}", listener.local_addr().expect("bound"));
    let state = grid_gateway::app::build_state_with_pool(gateway_config, pool.clone()).expect("gateway state");
    let stop = shutdown.clone();
    tokio::spawn(grid_gateway::app::run(listener, state, async move { stop.cancelled().await }));
    let client = redis::Client::open(map["REDIS_URL"].as_str()).expect("redis url");
    let redis = client.get_multiplexed_async_connection().await.expect("redis answers");
    System {
        base,
        settings: map,
        namespace,
        http: reqwest::Client::new(),
        pool,
        redis,
        shutdown,
        orchestrator,
        status,
        orchestrator_stop,
        extra: Vec::new(),
    }
}

/// Polls `probe` every 20 ms until it gives `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl System {
    /// The keys of the grid's (default) cell.
    pub fn keys(&self) -> grid_shared::wire::Keys {
        grid_shared::wire::Keys::new(&self.namespace).expect("a fresh namespace is valid")
    }
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Starts another gateway over the same namespace, with `pool` for its reads; answers its
    /// base URL. It stops with the system.
    pub async fn another_gateway(&self, pool: PgPool) -> String {
        let config = GatewayConfig::from_lookup(|name| self.settings.get(name).cloned()).expect("valid settings");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let base = format!("http://{}", listener.local_addr().expect("bound"));
        let state = grid_gateway::app::build_state_with_pool(config, pool).expect("gateway state");
        let stop = self.shutdown.clone();
        tokio::spawn(grid_gateway::app::run(listener, state, async move { stop.cancelled().await }));
        base
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(key).json(&body).send().await.expect("the gateway answers")
    }

    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(key).send().await.expect("the gateway answers")
    }

    /// Waits until a command is applied or rejected; returns its view.
    pub async fn settled(&self, command_id: &str, key: &str) -> Value {
        eventually(Duration::from_secs(20), "the command to settle", || async {
            let view: Value = self.get(&format!("/v1/commands/{command_id}"), key).await.json().await.ok()?;
            // Only a command view ends the wait: a problem (the key not yet known) does not.
            (view["status"] == "applied" || view["status"] == "rejected").then_some(view)
        })
        .await
    }

    /// Creates an organisation and waits until its key works; returns (id, key).
    pub async fn organization(&self, name: &str) -> (String, String) {
        let response = self.post("/v1/organizations", OPERATOR_KEY, json!({"name": name})).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        let view = self.settled(body["command_id"].as_str().unwrap(), OPERATOR_KEY).await;
        assert_eq!(view["status"], "applied", "{view}");
        (body["organization_id"].as_str().unwrap().to_owned(), body["api_key"].as_str().unwrap().to_owned())
    }

    pub async fn xlen(&mut self, stream: &str) -> i64 {
        redis::cmd("XLEN").arg(format!("{}:{stream}", self.keys().tag())).query_async(&mut self.redis).await.unwrap()
    }

    /// The entries of the namespace's dead-letter stream, oldest first.
    pub async fn dead_letters(&self) -> Vec<redis::streams::StreamId> {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(format!("{}:dlq", self.keys().tag()))
            .arg("-")
            .arg("+")
            .query_async(&mut self.redis.clone())
            .await
            .expect("the dead-letter stream reads");
        entries.ids
    }

    /// Waits until the dead-letter stream has an entry; returns the first.
    pub async fn first_dead_letter(&self, limit: Duration, what: &str) -> redis::streams::StreamId {
        eventually(limit, what, || async { self.dead_letters().await.into_iter().next() }).await
    }

    /// Stops the first orchestrator (the writer, unless another took over) and waits until it
    /// has stepped down.
    pub async fn stop_first_orchestrator(&mut self) {
        self.orchestrator_stop.cancel();
        let handle = self.orchestrator.take().expect("the first orchestrator runs");
        let stopped = tokio::time::timeout(Duration::from_secs(10), handle).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "the orchestrator stops cleanly: {stopped:?}");
    }

    /// Starts one more orchestrator process in the same consumer group: a standby while
    /// another holds the writer's lease.
    pub fn add_orchestrator(&mut self, consumer_name: &str) {
        let mut map = self.settings.clone();
        map.insert("GRID_CONSUMER_NAME".to_owned(), consumer_name.to_owned());
        let config = OrchestratorConfig::from_lookup(|name| map.get(name).cloned()).expect("valid settings");
        self.extra.push(tokio::spawn(grid_orchestrator::app::run(config, self.pool.clone(), self.shutdown.clone())));
    }

    /// Starts `nodes` simulated nodes; the sender stops them.
    pub async fn fleet(
        &self,
        api_key: &str,
        nodes: usize,
        cores: u16,
        solar_fraction: f64,
        min_task_duration: Duration,
    ) -> (tokio::sync::watch::Sender<bool>, grid_worker::simulate::Fleet) {
        self.fleet_in(None, api_key, nodes, cores, solar_fraction, min_task_duration).await
    }

    /// Like [`System::fleet`], the nodes talking HTTP (an event stream, a request per heartbeat
    /// and per report) instead of each over its one connection.
    pub async fn fleet_over_http(
        &self,
        api_key: &str,
        nodes: usize,
        cores: u16,
        min_task_duration: Duration,
    ) -> (tokio::sync::watch::Sender<bool>, grid_worker::simulate::Fleet) {
        self.fleet_with(None, api_key, nodes, cores, 1.0, min_task_duration, grid_worker::agent::Transport::Http).await
    }

    /// Like [`System::fleet`], the nodes joining `cell` (`None`: the grid's choice).
    pub async fn fleet_in(
        &self,
        cell: Option<&str>,
        api_key: &str,
        nodes: usize,
        cores: u16,
        solar_fraction: f64,
        min_task_duration: Duration,
    ) -> (tokio::sync::watch::Sender<bool>, grid_worker::simulate::Fleet) {
        let transport = grid_worker::agent::Transport::default();
        self.fleet_with(cell, api_key, nodes, cores, solar_fraction, min_task_duration, transport).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn fleet_with(
        &self,
        cell: Option<&str>,
        api_key: &str,
        nodes: usize,
        cores: u16,
        solar_fraction: f64,
        min_task_duration: Duration,
        transport: grid_worker::agent::Transport,
    ) -> (tokio::sync::watch::Sender<bool>, grid_worker::simulate::Fleet) {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let config = grid_worker::simulate::FleetConfig {
            gateway: self.base.clone(),
            api_key: api_key.to_owned(),
            nodes,
            cpu_cores: cores,
            solar_fraction,
            peak_watts: 500.0,
            day_seconds: None,
            constant_solar_watts: Some(300.0),
            heartbeat_every: Duration::from_millis(200),
            min_task_duration,
            instant_results: false,
            zone: None,
            cell: cell.map(str::to_owned),
            transport,
        };
        let fleet = grid_worker::simulate::launch(config, shutdown).await.expect("the fleet registers");
        (stop, fleet)
    }

    /// Stops every service and removes the namespace's keys.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for replica in std::mem::take(&mut self.extra) {
            let stopped = tokio::time::timeout(Duration::from_secs(10), replica).await;
            assert!(matches!(stopped, Ok(Ok(Ok(())))), "a replica stops cleanly: {stopped:?}");
        }
        if let Some(orchestrator) = self.orchestrator.take() {
            let stopped = tokio::time::timeout(Duration::from_secs(10), orchestrator).await;
            assert!(matches!(stopped, Ok(Ok(Ok(())))), "the orchestrator stops cleanly: {stopped:?}");
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}:*", self.namespace))
            .query_async(&mut self.redis)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut self.redis).await.unwrap();
        }
    }
}

/// A node driven by hand over HTTP, to see exactly what the gateway sends it. It heartbeats
/// every 200 ms until it is told to go silent.
pub struct ManualNode {
    pub node_id: String,
    pub token: String,
    heartbeats: CancellationToken,
    solar_watts: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl ManualNode {
    /// The solar production its next heartbeats report.
    pub fn set_solar(&self, watts: f64) {
        self.solar_watts.store(watts.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops its heartbeats, as a node that dies.
    pub fn go_silent(&self) {
        self.heartbeats.cancel();
    }
}

pub struct Channel {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    parser: grid_worker::sse::SseParser,
    ready: std::collections::VecDeque<grid_worker::sse::SseEvent>,
}

impl Channel {
    pub fn of(response: reqwest::Response) -> Self {
        Self { body: Box::pin(response.bytes_stream()), parser: Default::default(), ready: Default::default() }
    }

    /// The next event, or `None` when the gateway ends the stream (a client then reconnects).
    pub async fn next_or_end(&mut self, limit: Duration) -> Option<grid_worker::sse::SseEvent> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await.expect("an event in time") {
                Some(Ok(chunk)) => self.ready.extend(self.parser.feed(&chunk)),
                None | Some(Err(_)) => return None,
            }
        }
    }

    /// Whether the gateway ends the stream within `limit` (events before the end are skipped).
    pub async fn ends_within(&mut self, limit: Duration) -> bool {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The next event, waiting at most `limit`.
    pub async fn next(&mut self, limit: Duration) -> grid_worker::sse::SseEvent {
        self.next_or_end(limit).await.expect("the stream stays open")
    }
}

impl System {
    /// Registers a node with `cores` cores and waits until its token works.
    pub async fn manual_node(&self, api_key: &str, cores: u16, solar_watts: f64) -> ManualNode {
        self.manual_node_in(None, api_key, cores, solar_watts).await
    }

    /// Like [`System::manual_node`], the node joining `cell` (`None`: the grid's choice).
    pub async fn manual_node_in(&self, cell: Option<&str>, api_key: &str, cores: u16, solar_watts: f64) -> ManualNode {
        let mut body =
            json!({"name": "manual", "cpu_cores": cores, "has_solar": solar_watts > 0.0, "location": "Arlon"});
        if let Some(cell) = cell {
            body["cell"] = json!(cell);
        }
        let response = self.post("/v1/nodes", api_key, body).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        let node = ManualNode {
            node_id: body["node_id"].as_str().unwrap().to_owned(),
            token: body["token"].as_str().unwrap().to_owned(),
            heartbeats: self.shutdown.child_token(),
            solar_watts: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(solar_watts.to_bits())),
        };
        eventually(Duration::from_secs(10), "the node's registration", || async {
            (self.heartbeat(&node, solar_watts).await == 200).then_some(())
        })
        .await;
        let (http, url, token, stop, solar) = (
            self.http.clone(),
            self.url(&format!("/v1/nodes/{}/heartbeat", node.node_id)),
            node.token.clone(),
            node.heartbeats.clone(),
            node.solar_watts.clone(),
        );
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let watts = f64::from_bits(solar.load(std::sync::atomic::Ordering::Relaxed));
                let beat = json!({"cpu_usage": 5.0, "solar_watts": watts});
                let _ = http.post(&url).bearer_auth(&token).json(&beat).send().await;
            }
        });
        node
    }

    pub async fn heartbeat(&self, node: &ManualNode, solar_watts: f64) -> u16 {
        self.post(
            &format!("/v1/nodes/{}/heartbeat", node.node_id),
            &node.token,
            json!({"cpu_usage": 5.0, "solar_watts": solar_watts}),
        )
        .await
        .status()
        .as_u16()
    }

    pub async fn channel(&self, node: &ManualNode, last_event_id: Option<&str>) -> Channel {
        self.channel_via(&self.base, node, last_event_id).await
    }

    /// The node's task channel through the gateway at `base`.
    pub async fn channel_via(&self, base: &str, node: &ManualNode, last_event_id: Option<&str>) -> Channel {
        let mut request = self.http.get(format!("{base}/v1/nodes/{}/tasks", node.node_id)).bearer_auth(&node.token);
        if let Some(last) = last_event_id {
            request = request.header("Last-Event-ID", last);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        Channel { body: Box::pin(response.bytes_stream()), parser: Default::default(), ready: Default::default() }
    }

    pub async fn report(&self, node: &ManualNode, body: Value) -> reqwest::Response {
        self.post(&format!("/v1/nodes/{}/reports", node.node_id), &node.token, body).await
    }

    pub async fn task(&self, api_key: &str, task_id: &str) -> Value {
        self.get(&format!("/v1/tasks/{task_id}"), api_key).await.json().await.unwrap()
    }
}

/// The most tasks any node held at once, replayed from the event archive: an assignment takes a
/// core until its attempt ends (a result, a requeue, a failure or a cancellation).
pub async fn most_tasks_a_node_held(pool: &PgPool) -> (usize, HashMap<String, usize>) {
    let events: Vec<(String, Value)> =
        sqlx::query_as("select event_type, envelope -> 'payload' from event order by cell_id, seq")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut holder: HashMap<String, String> = HashMap::new();
    let mut worst: HashMap<String, usize> = HashMap::new();
    for (event_type, payload) in events {
        let task_id = payload["task_id"].as_str().unwrap_or_default().to_owned();
        match event_type.as_str() {
            "TaskAssigned" => {
                let node_id = payload["node_id"].as_str().unwrap_or_default().to_owned();
                assert!(holder.insert(task_id, node_id.clone()).is_none(), "a task assigned while in flight");
                let held = holder.values().filter(|holder| **holder == node_id).count();
                let most = worst.entry(node_id).or_default();
                *most = (*most).max(held);
            }
            "TaskCompleted" | "TaskResultRecorded" | "TaskFailed" | "TaskCancelled" | "TaskRequeued" => {
                holder.remove(&task_id);
            }
            _ => {}
        }
    }
    (worst.values().copied().max().unwrap_or(0), worst)
}

/// Waits until every credited result's leaf is sealed in a block.
pub async fn all_credits_sealed(pool: &PgPool) {
    eventually(Duration::from_secs(20), "every credit to be sealed in a block", || async {
        let pending: i64 = sqlx::query_scalar(
            "select count(*) from proof_leaf l
             where not exists (select 1 from proof_block b where b.cell_id = l.cell_id and b.height = l.block_height)",
        )
        .fetch_one(pool)
        .await
        .ok()?;
        (pending == 0).then_some(())
    })
    .await;
}

/// A completion report for `task_id` whose hash matches its result.
pub fn completion(task_id: &str, attempt: i64, energy_wh: f64, solar_wh: f64) -> Value {
    let result = json!({"answer": 42});
    let hash = grid_shared::messages::Sha256Hex::of_secret(&result.to_string()).as_str().to_owned();
    json!({"task_id": task_id, "attempt": attempt, "status": "completed", "result_json": result, "result_hash": hash,
           "energy_used_wh": energy_wh, "solar_contribution_wh": solar_wh})
}

pub fn thermal_task() -> Value {
    thermal_task_due(chrono::Duration::hours(1), 5)
}

pub fn thermal_task_due(within: chrono::Duration, priority: u8) -> Value {
    json!({
        "copropriete_id": uuid::Uuid::new_v4(),
        "priority": priority,
        "deadline": (chrono::Utc::now() + within).to_rfc3339(),
        "kind": {"type": "building_thermal_simulation", "building_id": uuid::Uuid::new_v4(),
                 "insulation_score": 0.5, "surface_m2": 90.0, "heating_degree_days": 2400.0}
    })
}

/// Runs `examples/verify_chain.py` with `arguments` on `input`; its exit code and verdict.
pub async fn python_verifier(arguments: &[&str], input: &Value) -> (Option<i32>, Value) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/verify_chain.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .args(arguments)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let verdict: Value = serde_json::from_slice(&output.stdout).unwrap();
    (output.status.code(), verdict)
}
