//! `just bench`: the real binaries (`target/release/{orchestrator,gateway,worker}`) over a
//! scratch database and Redis namespace, driven over HTTP. The simulated fleet answers each task
//! at once (`worker simulate --instant-results`): the figures are the control plane's, not the
//! Pis' computations (one real `worker run` computes beside it, for its memory figure). It measures the sequential round
//! trip, end-to-end throughput with a fleet of simulated nodes, open-loop submit latency, memory
//! and CPU, gathers the figures of the other benches (`target/bench/*.json`) and writes the
//! report to `bench/results/` (markdown and JSON). A report, not a test: nothing here asserts a
//! time.
//!
//! Sizes can be changed with `BENCH_NODES` (1000), `BENCH_TASKS` (50000), `BENCH_SEQUENTIAL`
//! (1000), `BENCH_E2E_SECONDS` (150: the throughput phase stops waiting after this) and
//! `BENCH_OPEN_LOOP_SECONDS` (3 per rate); `BENCH_HALF_RATE` fixes the half-capacity rate.
//! For working on one part, nothing written: `BENCH_GATEWAY_ONLY=1` runs the gateway's phases
//! alone, `BENCH_STOP_AFTER_HALF=1` stops after the half-capacity phase, and
//! `BENCH_GATEWAY_BINARY=<path>` runs another build of the gateway (to compare two on one grid).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};

#[path = "support/mod.rs"]
mod support;

use support::{Scratch, percentile};

const OPERATOR_KEY: &str = "bench-operator-key-0123456789abcdef0123456789";
/// The power model for control-plane CPU: one busy server core draws this many watts.
const WATTS_PER_BUSY_CORE: f64 = 15.0;
/// The seed's grid intensity, kg CO₂ per kWh.
const GRID_KG_PER_KWH: f64 = 0.18;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A child process, killed when dropped.
struct Service {
    name: &'static str,
    child: Child,
}

impl Service {
    fn start(name: &'static str, binary: &str, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Self> {
        let logs = workspace().join("target/bench/logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        // `BENCH_GATEWAY_BINARY`: another build of the gateway, to compare it on the same grid.
        let path = match std::env::var("BENCH_GATEWAY_BINARY") {
            Ok(path) if binary == "gateway" => PathBuf::from(path),
            _ => workspace().join("target/release").join(binary),
        };
        let mut command = Command::new(path);
        command.args(args).stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log));
        for (key, value) in env {
            command.env(key, value);
        }
        Ok(Self { name, child: command.spawn()? })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> f64 {
        memory_mib_of(self.pid(), "VmHWM:")
    }

    /// Resident memory now (VmRSS), in MiB.
    fn rss_mib(&self) -> f64 {
        memory_mib_of(self.pid(), "VmRSS:")
    }

    /// User + system CPU time so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
        let ticks: f64 = [11, 12].iter().filter_map(|index| fields.get(*index)?.parse::<f64>().ok()).sum();
        ticks / clock_ticks_per_second()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds so far of every process whose name is `comm` (PostgreSQL's backends, Redis):
/// the machine's servers, busy with this bench while it runs.
fn cpu_seconds_of(comm: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    let mut ticks = 0.0;
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        if head.split_once('(').map(|(_, name)| name) != Some(comm) {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += [11, 12].iter().filter_map(|index| fields.get(*index)?.parse::<f64>().ok()).sum::<f64>();
    }
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// An orchestrator process with its admin endpoint.
struct Orchestrator {
    service: Service,
    admin: String,
}

impl Orchestrator {
    fn start(name: &'static str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let admin = format!("127.0.0.1:{}", free_port()?);
        let mut env: Vec<(&str, String)> = env.to_vec();
        env.push(("GRID_CONSUMER_NAME", name.to_owned()));
        env.push(("RUST_LOG", "info".to_owned()));
        env.push(("GRID_ADMIN_LISTEN", admin.clone()));
        Ok(Self { service: Service::start(name, "orchestrator", &["run"], &env)?, admin })
    }

    async fn readiness(&self, http: &reqwest::Client) -> Option<Value> {
        http.get(format!("http://{}/readyz", self.admin)).send().await.ok()?.json().await.ok()
    }

    async fn wait_for_role(&self, http: &reqwest::Client, role: &str) -> Value {
        support::poll(role, || async {
            let readiness = self.readiness(http).await?;
            (readiness["role"] == role && readiness["status"] == "ready").then_some(readiness)
        })
        .await
    }
}

/// What PostgreSQL wrote: WAL bytes and WAL flushes (fsyncs, the cluster's), and task-row
/// versions (the scratch database's).
async fn postgres_counters(pool: &sqlx::PgPool) -> anyhow::Result<Value> {
    let (wal_bytes, wal_flushes): (f64, i64) =
        sqlx::query_as("select wal_bytes::float8, wal_sync from pg_stat_wal").fetch_one(pool).await?;
    let (inserted, updated, hot): (i64, i64, i64) =
        sqlx::query_as("select n_tup_ins, n_tup_upd, n_tup_hot_upd from pg_stat_user_tables where relname = 'task'")
            .fetch_one(pool)
            .await?;
    Ok(json!({"wal_bytes": wal_bytes, "wal_flushes": wal_flushes,
        "task_inserts": inserted, "task_updates": updated, "task_hot_updates": hot}))
}

fn delta(after: &Value, before: &Value, key: &str) -> f64 {
    after[key].as_f64().unwrap_or(0.0) - before[key].as_f64().unwrap_or(0.0)
}

/// What the namespace holds in Redis (its keys' `MEMORY USAGE`, every element counted), the
/// length of each of its streams, and the whole server's memory (shared with whatever else
/// the server holds).
async fn redis_footprint(redis_url: &str, namespace: &str) -> anyhow::Result<Value> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    let server = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{namespace}:*"))
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut conn)
            .await?;
        keys.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut bytes: u64 = 0;
    for chunk in keys.chunks(1_000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("MEMORY").arg("USAGE").arg(key).arg("SAMPLES").arg(0);
        }
        let usages: Vec<Option<u64>> = pipe.query_async(&mut conn).await?;
        bytes += usages.into_iter().flatten().sum::<u64>();
    }
    let mut streams = serde_json::Map::new();
    for stream in ["commands", "reports", "events", "heartbeats", "dlq"] {
        let length: i64 = redis::cmd("XLEN").arg(format!("{namespace}:{stream}")).query_async(&mut conn).await?;
        streams.insert(stream.to_owned(), json!(length));
    }
    Ok(json!({"namespace_mib": bytes as f64 / 1024.0 / 1024.0, "namespace_keys": keys.len(),
        "server_used_memory_mib": server / 1024.0 / 1024.0, "stream_lengths": streams}))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// When each task was assigned and completed, as the operator's event stream tells it.
#[derive(Default)]
struct Timeline {
    assigned: HashMap<String, Instant>,
    completed: HashMap<String, Instant>,
}

#[derive(Default)]
struct Watch {
    timeline: Mutex<Timeline>,
    changed: Notify,
}

/// Follows `GET /v1/events` (SSE) as the operator and records assignments and completions.
async fn follow_events(http: reqwest::Client, base: String, watch: Arc<Watch>) -> anyhow::Result<()> {
    let response = http
        .get(format!("{base}/v1/events"))
        .bearer_auth(OPERATOR_KEY)
        .header("accept", "text/event-stream")
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "the event stream answered {}", response.status());
    let mut body = response.bytes_stream();
    let mut parser = grid_worker::sse::SseParser::default();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let now = Instant::now();
        let mut any = false;
        for event in parser.feed(&chunk) {
            let kind = event.event.as_deref().unwrap_or_default();
            if kind != "TaskAssigned" && kind != "TaskCompleted" && kind != "TaskFailed" {
                continue;
            }
            let envelope: Value = serde_json::from_str(&event.data)?;
            let Some(task_id) = envelope["payload"]["task_id"].as_str() else { continue };
            let mut timeline = watch.timeline.lock().expect("not poisoned");
            let map = if kind == "TaskAssigned" { &mut timeline.assigned } else { &mut timeline.completed };
            map.entry(task_id.to_owned()).or_insert(now);
            any = true;
        }
        if any {
            watch.changed.notify_waiters();
        }
    }
    Ok(())
}

fn thermal_task(index: usize) -> Value {
    json!({
        "copropriete_id": uuid::Uuid::new_v4(),
        "priority": 5,
        "deadline": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339(),
        "kind": {"type": "building_thermal_simulation", "building_id": uuid::Uuid::new_v4(),
                 "insulation_score": (index % 100) as f64 / 100.0, "surface_m2": 60.0 + (index % 90) as f64,
                 "heating_degree_days": 2400.0}
    })
}

struct Grid {
    base: String,
    http: reqwest::Client,
    api_key: String,
    watch: Arc<Watch>,
    /// Submissions answered 503 (and tried again) so far.
    shed: std::sync::atomic::AtomicU64,
}

impl Grid {
    async fn submit(&self, index: usize) -> anyhow::Result<String> {
        let response =
            self.http.post(format!("{}/v1/tasks", self.base)).bearer_auth(&self.api_key).json(&thermal_task(index));
        let response = response.send().await?;
        if response.status() == 503 {
            self.shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        anyhow::ensure!(response.status() == 202, "submit answered {}", response.status());
        let body: Value = response.json().await?;
        Ok(body["task_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Submits as a well-behaved client does: a 503 is tried again after its `Retry-After`.
    async fn submit_until_accepted(&self, index: usize) -> anyhow::Result<String> {
        for _ in 0..60 {
            let response = self
                .http
                .post(format!("{}/v1/tasks", self.base))
                .bearer_auth(&self.api_key)
                .json(&thermal_task(index))
                .send()
                .await?;
            if response.status() == 503 {
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
                    .unwrap_or(1);
                self.shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            anyhow::ensure!(response.status() == 202, "submit answered {}", response.status());
            let body: Value = response.json().await?;
            return Ok(body["task_id"].as_str().unwrap_or_default().to_owned());
        }
        anyhow::bail!("still refused after a minute")
    }

    /// Waits until `task_id` is completed (or failed), for at most `limit`.
    async fn completion(&self, task_id: &str, limit: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.watch.changed.notified();
            if let Some(at) = self.watch.timeline.lock().expect("not poisoned").completed.get(task_id) {
                return Some(*at);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn distribution(mut samples: Vec<Duration>) -> Value {
    if samples.is_empty() {
        return json!({"samples": 0});
    }
    samples.sort();
    json!({
        "samples": samples.len(),
        "p50_ms": millis(percentile(&samples, 0.50)),
        "p95_ms": millis(percentile(&samples, 0.95)),
        "p99_ms": millis(percentile(&samples, 0.99)),
        "p999_ms": millis(percentile(&samples, 0.999)),
        "max_ms": millis(*samples.last().expect("not empty")),
    })
}

async fn sequential(grid: &Grid, count: usize) -> anyhow::Result<Value> {
    let mut round_trips = Vec::with_capacity(count);
    let started = Instant::now();
    for index in 0..count {
        let sent = Instant::now();
        let task_id = grid.submit(index).await?;
        let done = grid
            .completion(&task_id, Duration::from_secs(30))
            .await
            .ok_or_else(|| anyhow::anyhow!("task {index} of the sequential run did not complete in 30 s"))?;
        round_trips.push(done - sent);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({"tasks": count, "seconds": seconds, "round_trip": distribution(round_trips)}))
}

/// `cpu` gives the CPU seconds so far of the orchestrator and of the gateway.
async fn throughput(
    grid: &Arc<Grid>,
    tasks: usize,
    budget: Duration,
    cpu: &dyn Fn() -> (f64, f64),
) -> anyhow::Result<Value> {
    let cpu_before = cpu();
    let servers_before = (cpu_seconds_of("postgres"), cpu_seconds_of("redis-server"));
    let started = Instant::now();
    let in_flight = Arc::new(Semaphore::new(64));
    let submitted = Arc::new(Mutex::new(Vec::with_capacity(tasks)));
    let mut handles = Vec::with_capacity(tasks);
    for index in 0..tasks {
        let permit = in_flight.clone().acquire_owned().await?;
        let (grid, submitted) = (grid.clone(), submitted.clone());
        handles.push(tokio::spawn(async move {
            let sent = Instant::now();
            let task_id = grid.submit_until_accepted(index).await;
            drop(permit);
            if let Ok(task_id) = task_id {
                submitted.lock().expect("not poisoned").push((task_id, sent));
            }
        }));
    }
    for handle in handles {
        handle.await?;
    }
    let submit_seconds = started.elapsed().as_secs_f64();
    let submitted = std::mem::take(&mut *submitted.lock().expect("not poisoned"));
    let deadline = started + budget;
    loop {
        let done = {
            let timeline = grid.watch.timeline.lock().expect("not poisoned");
            submitted.iter().filter(|(task_id, _)| timeline.completed.contains_key(task_id)).count()
        };
        if done == submitted.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu_after = cpu();
    let postgres_cpu = cpu_seconds_of("postgres") - servers_before.0;
    let redis_cpu = cpu_seconds_of("redis-server") - servers_before.1;
    let (orchestrator_cpu, gateway_cpu) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let cpu_seconds = orchestrator_cpu + gateway_cpu;
    let timeline = grid.watch.timeline.lock().expect("not poisoned");
    let mut to_completed = Vec::new();
    let mut to_assigned = Vec::new();
    let mut last_completion = started;
    for (task_id, sent) in &submitted {
        if let Some(done) = timeline.completed.get(task_id) {
            to_completed.push(*done - *sent);
            last_completion = last_completion.max(*done);
        }
        if let Some(assigned) = timeline.assigned.get(task_id) {
            to_assigned.push(*assigned - *sent);
        }
    }
    let completed = to_completed.len();
    let seconds = (last_completion - started).as_secs_f64().max(f64::EPSILON);
    let cpu_per_task_us = if completed > 0 { cpu_seconds / completed as f64 * 1e6 } else { 0.0 };
    // CPU seconds × W → Wh → kWh × kg/kWh → g, shown in µg.
    let micrograms_per_task = cpu_per_task_us / 1e6 * WATTS_PER_BUSY_CORE / 3600.0 / 1000.0 * GRID_KG_PER_KWH * 1e9;
    Ok(json!({
        "tasks_submitted": submitted.len(),
        "submissions_refused_503_then_retried": grid.shed.load(std::sync::atomic::Ordering::Relaxed),
        "tasks_completed": completed,
        "submit_seconds": submit_seconds,
        "seconds": seconds,
        "gave_up_after_budget": completed < submitted.len(),
        "tasks_per_second": completed as f64 / seconds,
        "submit_to_completed": distribution(to_completed),
        "submit_to_assigned": distribution(to_assigned),
        "control_plane_cpu_seconds": cpu_seconds,
        "orchestrator_cpu_seconds": orchestrator_cpu,
        "gateway_cpu_seconds": gateway_cpu,
        "postgresql_cpu_seconds": postgres_cpu,
        "redis_cpu_seconds": redis_cpu,
        "control_plane_cpu_us_per_task": cpu_per_task_us,
        "co2_micrograms_per_task": micrograms_per_task,
        "power_model": format!("{WATTS_PER_BUSY_CORE} W per busy server core, {GRID_KG_PER_KWH} kg CO2/kWh"),
    }))
}

/// Offers `rate` submissions per second for `seconds`, each sent at its scheduled time whatever
/// the previous ones do (open loop); latency counts from the scheduled time.
/// Also returns the ids of the tasks it submitted, with the time each was due.
async fn open_loop(grid: &Arc<Grid>, rate: u64, seconds: u64) -> anyhow::Result<(Value, Vec<(String, Instant)>)> {
    let total = rate * seconds;
    let shed_before = grid.shed.load(std::sync::atomic::Ordering::Relaxed);
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut handles = Vec::with_capacity(total as usize);
    for index in 0..total {
        let at = start + Duration::from_nanos(index * 1_000_000_000 / rate);
        let grid = grid.clone();
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let submitted = grid.submit(index as usize).await.ok();
            (submitted, at.elapsed(), at.into_std())
        }));
    }
    let mut latencies = Vec::with_capacity(handles.len());
    let mut task_ids = Vec::with_capacity(handles.len());
    let mut errors = 0;
    for handle in handles {
        match handle.await? {
            (Some(task_id), latency, due) => {
                latencies.push(latency);
                task_ids.push((task_id, due));
            }
            (None, _, _) => errors += 1,
        }
    }
    let shed = grid.shed.load(std::sync::atomic::Ordering::Relaxed) - shed_before;
    let figures = json!({"offered_per_second": rate, "seconds": seconds, "errors": errors, "of_which_503": shed,
        "latency": distribution(latencies)});
    Ok((figures, task_ids))
}

/// One keep-alive HTTP/1.1 connection speaking just enough of the protocol to offer the
/// gateway 20,000 requests per second from this machine (reqwest costs more per request than
/// the gateway does).
struct RawConnection {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    body: Vec<u8>,
}

impl RawConnection {
    async fn connect(address: &str) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream: tokio::io::BufReader::new(stream), body: Vec::new() })
    }

    /// Sends one request, reads its answer; the status.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<u16> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        self.stream.get_mut().write_all(request).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status = line.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await?;
        Ok(status)
    }
}

fn raw_request(method: &str, path: &str, token: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Offers `rate` copies of `request` per second for `seconds`, open loop over `connections`
/// keep-alive connections (request i on connection i mod n, due at i / rate; latency counts
/// from when it was due). Samples the gateway's RSS meanwhile.
async fn flood(
    address: &str,
    request: Arc<Vec<u8>>,
    rate: u64,
    seconds: u64,
    connections: u64,
    gateway_pid: u32,
) -> anyhow::Result<Value> {
    let total = rate * seconds;
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let mut handles = Vec::new();
    for connection in 0..connections {
        let (address, request) = (address.to_owned(), request.clone());
        handles.push(tokio::spawn(async move {
            let mut answers: Vec<(u16, Duration)> = Vec::new();
            let mut errors = 0_u64;
            let mut conn = RawConnection::connect(&address).await.ok();
            let mut index = connection;
            while index < total {
                let due = start + Duration::from_nanos(index * 1_000_000_000 / rate);
                tokio::time::sleep_until(due).await;
                let status = match conn.as_mut() {
                    Some(open) => open.exchange(&request).await.ok(),
                    None => None,
                };
                match status {
                    Some(status) => answers.push((status, due.elapsed())),
                    None => {
                        errors += 1;
                        conn = RawConnection::connect(&address).await.ok();
                    }
                }
                index += connections;
            }
            (answers, errors)
        }));
    }
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut peak: f64 = 0.0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(memory_mib_of(gateway_pid, "VmRSS:"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };
    let mut by_status: std::collections::BTreeMap<u16, u64> = std::collections::BTreeMap::new();
    let (mut latencies, mut within, mut errors) = (Vec::new(), 0_u64, 0_u64);
    for handle in handles {
        let (answers, failed) = handle.await?;
        errors += failed;
        for (status, latency) in answers {
            *by_status.entry(status).or_default() += 1;
            within += u64::from(latency <= Duration::from_millis(10));
            latencies.push(latency);
        }
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak_rss = sampler.await?;
    let answered = latencies.len() as u64;
    Ok(json!({
        "offered_per_second": rate, "seconds": seconds, "connections": connections, "offered": total,
        "answered": answered, "errors": errors,
        "by_status": by_status.iter().map(|(status, count)| (status.to_string(), json!(count))).collect::<serde_json::Map<_, _>>(),
        "answered_within_10ms_share": within as f64 / total.max(1) as f64,
        "latency": distribution(latencies),
        "gateway_peak_rss_mib": peak_rss,
    }))
}

/// A memory figure of a process (`VmRSS:` now, `VmHWM:` its peak) from `/proc`, in MiB.
fn memory_mib_of(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The gateway's CPU per request of one kind: `request` offered at `rate` for `seconds` over
/// 32 connections, less the CPU the gateway spent over as long idle (the fleet's heartbeats and
/// channels) just before.
async fn gateway_cpu_per_request(
    gateway: &Service,
    address: &str,
    request: Vec<u8>,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Value> {
    let idle_before = gateway.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let idle = gateway.cpu_seconds() - idle_before;
    let before = gateway.cpu_seconds();
    eprintln!("gateway CPU: offering {rate} requests/s for {seconds} s");
    let offered = flood(address, Arc::new(request), rate, seconds, 32, gateway.pid()).await?;
    let busy = gateway.cpu_seconds() - before;
    let answered = offered["answered"].as_f64().unwrap_or(0.0).max(1.0);
    Ok(json!({
        "offered_per_second": rate, "answered": offered["answered"], "by_status": offered["by_status"],
        "latency": offered["latency"], "gateway_cpu_seconds": busy, "idle_cpu_seconds": idle,
        "cpu_us_per_request": (busy - idle).max(0.0) / answered * 1e6,
    }))
}

/// Registers `count` more nodes and holds a task channel open for each, as idle Pis would;
/// the gateway's resident memory before and after, per connection. The connections stay open
/// until the answer is dropped.
async fn idle_channels(
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    pool: &sqlx::PgPool,
    gateway: &Service,
    count: usize,
) -> anyhow::Result<(Value, Vec<tokio::net::TcpStream>)> {
    let registered: Vec<(String, String)> = futures_util::stream::iter(0..count)
        .map(|index| async move {
            let body = json!({"name": format!("idle-{index}"), "cpu_cores": 4, "has_solar": true, "location": "Liège"});
            let answer: Value = http
                .post(format!("{base}/v1/nodes"))
                .bearer_auth(api_key)
                .json(&body)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            Some((answer["node_id"].as_str()?.to_owned(), answer["token"].as_str()?.to_owned()))
        })
        .buffer_unordered(64)
        .filter_map(|registered| async move { registered })
        .collect()
        .await;
    let wanted = registered.len() as i64;
    support::poll("the idle nodes to be registered", || async {
        let known: i64 =
            sqlx::query_scalar("select count(*) from node where name like 'idle-%'").fetch_one(pool).await.ok()?;
        (known >= wanted).then_some(())
    })
    .await;
    let address = base.trim_start_matches("http://").to_owned();
    let rss_before = gateway.rss_mib();
    let mut open = Vec::with_capacity(registered.len());
    for (node_id, token) in &registered {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&address).await?;
        let request = format!(
            "GET /v1/nodes/{node_id}/tasks HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0_u8; 12];
        stream.read_exact(&mut head).await?;
        anyhow::ensure!(head.ends_with(b"200"), "a task channel answered {}", String::from_utf8_lossy(&head));
        open.push(stream);
    }
    // Each channel answered 200 after its catch-up read: every connection is set up. The rest of
    // the answers' headers is left unread: the connections only need to stay open.
    let rss_after = gateway.rss_mib();
    let figures = json!({
        "nodes": open.len(), "gateway_rss_before_mib": rss_before, "gateway_rss_after_mib": rss_after,
        "kib_per_connected_node": (rss_after - rss_before) * 1024.0 / open.len().max(1) as f64,
    });
    Ok((figures, open))
}

/// What the gateway phases need of the running grid.
struct GatewayPhases<'a> {
    gateway: &'a Service,
    listen: &'a str,
    base: &'a str,
    api_key: &'a str,
    pool: &'a sqlx::PgPool,
    http: &'a reqwest::Client,
}

impl GatewayPhases<'_> {
    /// The gateway at 20,000 offered requests per second, its CPU per request of each kind,
    /// and its memory with 9,000 more idle task channels (`BENCH_IDLE_NODES`).
    async fn run(&self, single_id: &str, single_token: &str, open_loop_seconds: u64) -> anyhow::Result<Value> {
        // The gateway at 20,000 offered requests per second: answered at once (202 or 503).
        let address = self.listen.to_owned();
        let (gateway, api_key, pool, http, base) = (self.gateway, self.api_key, self.pool, self.http, self.base);
        let submission = raw_request("POST", "/v1/tasks", api_key, &thermal_task(0).to_string());
        let overload =
            flood(&address, Arc::new(submission.clone()), 20_000, open_loop_seconds, 128, gateway.pid()).await?;
        eprintln!("overload: {overload}");
        // Its accepted tasks run before the next phases (two minutes at most).
        let drain_until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < drain_until {
            let open: i64 =
                sqlx::query_scalar("select count(*) from task where status in ('queued', 'assigned', 'running')")
                    .fetch_one(pool)
                    .await?;
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The gateway's CPU per request, one kind at a time, under its capacity.
        let heartbeat = raw_request(
            "POST",
            &format!("/v1/nodes/{single_id}/heartbeat"),
            single_token,
            r#"{"cpu_usage": 10.0, "solar_watts": 400.0}"#,
        );
        let per_heartbeat = gateway_cpu_per_request(gateway, &address, heartbeat, 2_000, open_loop_seconds).await?;
        let per_submission = gateway_cpu_per_request(gateway, &address, submission, 2_000, open_loop_seconds).await?;
        eprintln!("gateway CPU: heartbeat {per_heartbeat}, submission {per_submission}");
        let (idle, connections) =
            idle_channels(http, base, api_key, pool, gateway, setting("BENCH_IDLE_NODES", 9_000) as usize).await?;
        eprintln!("idle channels: {idle}");
        drop(connections);
        Ok(json!({
            "overload_20000": overload,
            "cpu_per_heartbeat": per_heartbeat,
            "cpu_per_submission": per_submission,
            "idle_channels": idle,
        }))
    }
}

/// From each task's due submission time to its completion, as the event stream saw it.
fn completion_latency(grid: &Grid, submit: &Value, task_ids: &[(String, Instant)]) -> Value {
    let timeline = grid.watch.timeline.lock().expect("not poisoned");
    let latencies: Vec<Duration> =
        task_ids.iter().filter_map(|(task_id, due)| Some(*timeline.completed.get(task_id)? - *due)).collect();
    json!({"offered_per_second": submit["offered_per_second"], "submitted": task_ids.len(), "completed": latencies.len(),
        "submit": submit["latency"], "submitted_to_completed": distribution(latencies)})
}

/// `kill -9` of the writer, five times: the time until the standby reports itself the writer
/// (it has reloaded the state from PostgreSQL and made Redis whole), and until a task submitted
/// then completes. The killed process comes back as the standby.
async fn takeovers(
    orchestrators: &mut [Orchestrator; 2],
    env: &[(&str, String)],
    http: &reqwest::Client,
    grid: &Grid,
) -> anyhow::Result<Value> {
    let mut to_writer = Vec::new();
    let mut to_completed = Vec::new();
    for trial in 0..5 {
        let mut writer = 0;
        for (index, orchestrator) in orchestrators.iter().enumerate() {
            if orchestrator.readiness(http).await.is_some_and(|readiness| readiness["role"] == "writer") {
                writer = index;
            }
        }
        let standby = 1 - writer;
        let killed = Instant::now();
        orchestrators[writer].service.child.kill()?;
        let _ = orchestrators[writer].service.child.wait();
        orchestrators[standby].wait_for_role(http, "writer").await;
        to_writer.push(killed.elapsed());
        let task_id = grid.submit(trial).await?;
        grid.completion(&task_id, Duration::from_secs(30))
            .await
            .ok_or_else(|| anyhow::anyhow!("no task completed after takeover {trial}"))?;
        to_completed.push(killed.elapsed());
        let name = orchestrators[writer].service.name;
        orchestrators[writer] = Orchestrator::start(name, env)?;
        orchestrators[writer].wait_for_role(http, "standby").await;
    }
    Ok(json!({"trials": to_writer.len(), "kill_to_writer": distribution(to_writer),
        "kill_to_next_task_completed": distribution(to_completed)}))
}

/// The settings of a grid of its own (a scratch database and namespace).
fn env_template() -> Vec<(&'static str, String)> {
    vec![("GRID_OPERATOR_KEY", OPERATOR_KEY.to_owned()), ("RUST_LOG", "info".to_owned())]
}

/// The writer's memory with `count` tasks queued (no node to run them), and the time a standby
/// takes over that state after a `kill -9`. The submissions go straight onto the commands
/// stream, as the gateway writes them.
async fn queued_memory(base_env: &[(&'static str, String)], count: usize) -> anyhow::Result<Value> {
    use grid_shared::domain::{OrganizationName, Priority, Replicas, TaskKind};
    use grid_shared::envelope::{Actor, Envelope, Origin};
    use grid_shared::ids::{BuildingId, CoproprieteId, OrganizationId, TaskId};
    use grid_shared::messages::{Command, CreateOrganization, Sha256Hex, SubmitTask};

    let scratch = Scratch::new("queued").await?;
    let mut env = base_env.to_vec();
    env.push(("DATABASE_URL", scratch.database_url.clone()));
    env.push(("REDIS_URL", scratch.redis_url.clone()));
    env.push(("GRID_NAMESPACE", scratch.namespace.clone()));
    let http = reqwest::Client::new();
    let writer = Orchestrator::start("queued-a", &env)?;
    writer.wait_for_role(&http, "writer").await;
    let mut orchestrators = [writer, Orchestrator::start("queued-b", &env)?];
    orchestrators[1].wait_for_role(&http, "standby").await;
    let keys = grid_shared::keys::Keys::new(&scratch.namespace).map_err(anyhow::Error::msg)?;
    let client = redis::Client::open(scratch.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let organization_id = OrganizationId::new();
    let operator = Origin {
        correlation_id: uuid::Uuid::new_v4(),
        causation_id: None,
        organization_id: None,
        actor: Actor::Operator,
    };
    let create = Command::CreateOrganization(CreateOrganization {
        organization_id,
        name: OrganizationName::parse("queued").map_err(|error| anyhow::anyhow!("{error}"))?,
        api_key_hash: Sha256Hex::of_secret(&uuid::Uuid::new_v4().to_string()),
    });
    let origin = Origin {
        correlation_id: uuid::Uuid::new_v4(),
        causation_id: None,
        organization_id: Some(organization_id),
        actor: Actor::Organization(organization_id),
    };
    let deadline = chrono::Utc::now() + chrono::Duration::days(30);
    let mut first = true;
    for chunk in (0..count).collect::<Vec<_>>().chunks(5_000) {
        let mut pipe = redis::pipe();
        if first {
            let envelope = Envelope::wrap(&create, operator);
            pipe.cmd("XADD")
                .arg(keys.commands())
                .arg("*")
                .arg("type")
                .arg(&envelope.message_type)
                .arg("envelope")
                .arg(envelope.to_json())
                .ignore();
            first = false;
        }
        for index in chunk {
            let submit = Command::SubmitTask(SubmitTask {
                task_id: TaskId::new(),
                copropriete_id: CoproprieteId::new(),
                priority: Priority::DEFAULT,
                deadline,
                kind: TaskKind::BuildingThermalSimulation {
                    building_id: BuildingId::new(),
                    insulation_score: (*index % 100) as f64 / 100.0,
                    surface_m2: 90.0,
                    heating_degree_days: 2400.0,
                },
                replicas: Replicas::ONE,
            });
            let envelope = Envelope::wrap(&submit, origin);
            pipe.cmd("XADD")
                .arg(keys.commands())
                .arg("*")
                .arg("type")
                .arg(&envelope.message_type)
                .arg("envelope")
                .arg(envelope.to_json())
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    let applied = Instant::now();
    support::poll("the queue", || async {
        let readiness = orchestrators[0].readiness(&http).await?;
        (readiness["queued_tasks"].as_u64()? >= count as u64).then_some(())
    })
    .await;
    let apply_seconds = applied.elapsed().as_secs_f64();
    let writer_rss_mib = orchestrators[0].service.rss_mib();
    let killed = Instant::now();
    orchestrators[0].service.child.kill()?;
    let _ = orchestrators[0].service.child.wait();
    let readiness = orchestrators[1].wait_for_role(&http, "writer").await;
    let takeover = killed.elapsed();
    let standby_rss_mib = orchestrators[1].service.rss_mib();
    drop(orchestrators);
    scratch.remove().await?;
    Ok(json!({"queued": count, "seconds_to_apply_submissions": apply_seconds, "writer_rss_mib": writer_rss_mib,
        "takeover_ms": millis(takeover), "queued_after_takeover": readiness["queued_tasks"],
        "new_writer_rss_mib": standby_rss_mib}))
}

/// Waits (at most `limit`) until the given tasks are completed, so that the next phase starts
/// on a grid without backlog.
async fn drain(grid: &Grid, task_ids: &[(String, Instant)], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let pending = {
            let timeline = grid.watch.timeline.lock().expect("not poisoned");
            task_ids.iter().filter(|(task_id, _)| !timeline.completed.contains_key(task_id)).count()
        };
        if pending == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn file_size_mib(path: &Path) -> Option<f64> {
    std::fs::metadata(path).ok().map(|meta| meta.len() as f64 / 1024.0 / 1024.0)
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

async fn machine(database_url: &str) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:").map(|rest| rest.trim().to_owned()))
        .unwrap_or_default();
    let postgres: String = match sqlx::PgPool::connect(database_url).await {
        Ok(pool) => sqlx::query_scalar("show server_version").fetch_one(&pool).await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let synchronous_commit = match sqlx::PgPool::connect(database_url).await {
        Ok(pool) => {
            sqlx::query_scalar::<_, String>("show synchronous_commit").fetch_one(&pool).await.unwrap_or_default()
        }
        Err(_) => String::new(),
    };
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory": memory,
        "kernel": command_output("uname", &["-r"]),
        "postgresql": postgres,
        "postgresql_synchronous_commit": synchronous_commit,
        "redis": command_output("redis-server", &["--version"]),
        "commit": command_output("git", &["rev-parse", "--short", "HEAD"]),
        "uncommitted_changes": !command_output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty(),
    })
}

async fn run() -> anyhow::Result<Value> {
    let nodes = setting("BENCH_NODES", 1000);
    let tasks = setting("BENCH_TASKS", 50_000) as usize;
    let sequential_tasks = setting("BENCH_SEQUENTIAL", 1000) as usize;
    let budget = Duration::from_secs(setting("BENCH_E2E_SECONDS", 150));
    let open_loop_seconds = setting("BENCH_OPEN_LOOP_SECONDS", 3);

    let scratch = Scratch::new("system").await?;
    let machine = machine(&scratch.database_url).await;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let base = format!("http://{listen}");
    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", scratch.database_url.clone()),
        ("REDIS_URL", scratch.redis_url.clone()),
        ("GRID_NAMESPACE", scratch.namespace.clone()),
        ("GRID_OPERATOR_KEY", OPERATOR_KEY.to_owned()),
        ("GATEWAY_LISTEN", listen.clone()),
        ("GATEWAY_RATE_LIMIT_PER_SECOND", "1000000".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let migrated = Command::new(workspace().join("target/release/orchestrator"))
        .arg("migrate")
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .status()?;
    anyhow::ensure!(migrated.success(), "orchestrator migrate failed");
    // A request that takes longer than 10 s counts as an error (an overloaded open-loop phase
    // then ends in bounded time).
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).timeout(Duration::from_secs(10)).build()?;
    // The writer, and a standby for the takeover trials.
    let writer = Orchestrator::start("orchestrator-a", &env)?;
    writer.wait_for_role(&http, "writer").await;
    let mut orchestrators = [writer, Orchestrator::start("orchestrator-b", &env)?];
    orchestrators[1].wait_for_role(&http, "standby").await;
    let gateway = Service::start("gateway", "gateway", &[], &env)?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&scratch.database_url).await?;
    support::poll("the gateway", || async {
        let answered = http.get(format!("{base}/healthz")).send().await.ok()?;
        answered.status().is_success().then_some(())
    })
    .await;
    let created: Value = http
        .post(format!("{base}/v1/organizations"))
        .bearer_auth(OPERATOR_KEY)
        .json(&json!({"name": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let api_key = created["api_key"].as_str().unwrap_or_default().to_owned();
    support::poll("the organisation", || async {
        let answered = http.get(format!("{base}/v1/tasks?limit=1")).bearer_auth(&api_key).send().await.ok()?;
        (answered.status() == 200).then_some(())
    })
    .await;

    let watch = Arc::new(Watch::default());
    // A client of its own: reqwest's timeout covers a whole response, and this one never ends.
    let follower = tokio::spawn(follow_events(reqwest::Client::new(), base.clone(), watch.clone()));

    // One real worker, as on a Pi, and the simulated fleet in one process.
    let single: Value = http
        .post(format!("{base}/v1/nodes"))
        .bearer_auth(&api_key)
        .json(&json!({"name": "bench-pi", "cpu_cores": 4, "has_solar": true, "location": "Namur"}))
        .send()
        .await?
        .json()
        .await?;
    let (single_id, single_token) =
        (single["node_id"].as_str().unwrap_or_default().to_owned(), single["token"].as_str().unwrap_or_default());
    let single_token_owned = single_token.to_owned();
    let gateway_arg = format!("--gateway={base}");
    let worker = Service::start(
        "worker",
        "worker",
        &[
            &gateway_arg,
            "run",
            "--node-id",
            &single_id,
            "--token",
            single_token,
            "--solar-watts",
            "400",
            "--interval",
            "2",
        ],
        &[("RUST_LOG", "warn".to_owned())],
    )?;
    let fleet_started = Instant::now();
    let nodes_arg = nodes.to_string();
    let fleet = Service::start(
        "fleet",
        "worker",
        &[
            &gateway_arg,
            "simulate",
            "--api-key",
            &api_key,
            "--nodes",
            &nodes_arg,
            "--cores",
            "4",
            "--solar-fraction",
            "1",
            "--constant-solar-watts",
            "400",
            // A real worker's default interval (`worker run --interval 5`).
            "--heartbeat-ms",
            "5000",
            "--instant-results",
        ],
        &[("RUST_LOG", "warn".to_owned())],
    )?;
    let wanted = nodes as i64 + 1;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let stats: Value = http.get(format!("{base}/v1/stats")).bearer_auth(&api_key).send().await?.json().await?;
        let active = stats["nodes"]["active_nodes"].as_i64().unwrap_or(0);
        if active >= wanted {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "only {active} of {wanted} nodes came alive in 300 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fleet_seconds = fleet_started.elapsed().as_secs_f64();
    eprintln!("{wanted} nodes alive after {fleet_seconds:.1} s");

    let grid = Arc::new(Grid {
        base: base.clone(),
        http: http.clone(),
        api_key: api_key.clone(),
        watch,
        shed: Default::default(),
    });
    if std::env::var_os("BENCH_GATEWAY_ONLY").is_some() {
        // The gateway's phases alone (for working on the gateway): printed, not written.
        let (at_1000, _) = open_loop(&grid, 1000, open_loop_seconds).await?;
        eprintln!("open loop: {at_1000}");
        let (at_5000, _) = open_loop(&grid, 5000, open_loop_seconds).await?;
        eprintln!("open loop: {at_5000}");
        let phases = GatewayPhases {
            gateway: &gateway,
            listen: &listen,
            base: &base,
            api_key: &api_key,
            pool: &pool,
            http: &http,
        };
        let figures = phases.run(&single_id, &single_token_owned, open_loop_seconds).await?;
        follower.abort();
        drop((fleet, worker, gateway, orchestrators));
        pool.close().await;
        scratch.remove().await?;
        return Ok(json!({"gateway_only": {"open_loop_submit": [at_1000, at_5000], "gateway": figures}}));
    }
    let sequential = sequential(&grid, sequential_tasks).await?;
    eprintln!("sequential: {sequential}");
    // Submit latency at 1,000 req/s on an idle grid, then its tasks drain before the throughput
    // phase; 5,000 req/s last, as it overloads this machine.
    let (at_1000, submitted) = open_loop(&grid, 1000, open_loop_seconds).await?;
    eprintln!("open loop: {at_1000}");
    let drained = drain(&grid, &submitted, Duration::from_secs(90)).await;
    let control_plane_cpu = || {
        (
            orchestrators.iter().map(|orchestrator| orchestrator.service.cpu_seconds()).sum::<f64>(),
            gateway.cpu_seconds(),
        )
    };
    let (postgres_before, writer_before) = (postgres_counters(&pool).await?, orchestrators[0].readiness(&http).await);
    let mut throughput = throughput(&grid, tasks, budget, &control_plane_cpu).await?;
    let (postgres_after, writer_after) = (postgres_counters(&pool).await?, orchestrators[0].readiness(&http).await);
    let completed = throughput["tasks_completed"].as_f64().unwrap_or(0.0).max(1.0);
    let per_task = |value: f64| value / completed;
    let statements = match (&writer_before, &writer_after) {
        (Some(before), Some(after)) => delta(after, before, "statements"),
        _ => 0.0,
    };
    let batches = match (&writer_before, &writer_after) {
        (Some(before), Some(after)) => delta(after, before, "batches"),
        _ => 0.0,
    };
    let blocks_sealed = match (&writer_before, &writer_after) {
        (Some(before), Some(after)) => delta(after, before, "blocks_sealed"),
        _ => 0.0,
    };
    let phase_seconds = throughput["seconds"].as_f64().unwrap_or(1.0).max(f64::EPSILON);
    throughput["per_task"] = json!({
        "orchestrator_cpu_us": per_task(throughput["orchestrator_cpu_seconds"].as_f64().unwrap_or(0.0)) * 1e6,
        "gateway_cpu_us": per_task(throughput["gateway_cpu_seconds"].as_f64().unwrap_or(0.0)) * 1e6,
        "postgresql_cpu_us": per_task(throughput["postgresql_cpu_seconds"].as_f64().unwrap_or(0.0)) * 1e6,
        "redis_cpu_us": per_task(throughput["redis_cpu_seconds"].as_f64().unwrap_or(0.0)) * 1e6,
        "sql_statements": per_task(statements),
        "wal_bytes": per_task(delta(&postgres_after, &postgres_before, "wal_bytes")),
        "wal_flushes": per_task(delta(&postgres_after, &postgres_before, "wal_flushes")),
        "task_row_versions": per_task(delta(&postgres_after, &postgres_before, "task_inserts") + delta(&postgres_after, &postgres_before, "task_updates")),
        "task_hot_update_share": delta(&postgres_after, &postgres_before, "task_hot_updates") / delta(&postgres_after, &postgres_before, "task_updates").max(1.0),
        "tasks_per_batch": completed / batches.max(1.0),
    });
    throughput["proof_blocks"] = json!({
        "sealed": blocks_sealed,
        "per_second": blocks_sealed / phase_seconds,
        "leaves_per_block": completed / blocks_sealed.max(1.0),
    });
    eprintln!("throughput: {throughput}");
    // Submitted → completed at half the measured capacity, open loop.
    let half =
        setting("BENCH_HALF_RATE", (throughput["tasks_per_second"].as_f64().unwrap_or(0.0) / 2.0).max(10.0) as u64);
    let (half_load, half_ids) = open_loop(&grid, half, open_loop_seconds.max(5)).await?;
    drain(&grid, &half_ids, Duration::from_secs(60)).await;
    let at_half = completion_latency(&grid, &half_load, &half_ids);
    eprintln!("half load: {at_half}");
    if std::env::var_os("BENCH_STOP_AFTER_HALF").is_some() {
        follower.abort();
        drop((fleet, worker, gateway, orchestrators));
        pool.close().await;
        scratch.remove().await?;
        return Ok(json!({"gateway_only": {"half": at_half, "throughput": throughput}}));
    }
    let takeovers = takeovers(&mut orchestrators, &env, &http, &grid).await?;
    eprintln!("takeovers: {takeovers}");
    let redis = redis_footprint(&scratch.redis_url, &scratch.namespace).await?;
    eprintln!("redis: {redis}");
    let gateway_rss_before_overload = gateway.peak_rss_mib();
    let gateway_rss_connected = gateway.rss_mib();
    let (at_5000, _) = open_loop(&grid, 5000, open_loop_seconds).await?;
    eprintln!("open loop: {at_5000}");
    let open = vec![at_1000, at_5000];
    let phases =
        GatewayPhases { gateway: &gateway, listen: &listen, base: &base, api_key: &api_key, pool: &pool, http: &http };
    let mut gateway_figures = phases.run(&single_id, &single_token_owned, open_loop_seconds).await?;
    gateway_figures["rss_with_fleet_connected_mib"] = json!(gateway_rss_connected);
    gateway_figures["fleet_connected"] = json!(nodes + 1);
    let memory = json!({
        "gateway_peak_rss_before_overload_mib": gateway_rss_before_overload,
        "gateway_peak_rss_mib": gateway.peak_rss_mib(),
        "orchestrator_peak_rss_mib": orchestrators.iter().map(|orchestrator| orchestrator.service.peak_rss_mib()).fold(0.0, f64::max),
        "single_worker_peak_rss_mib": worker.peak_rss_mib(),
        "fleet_process_peak_rss_mib": fleet.peak_rss_mib(),
        "fleet_nodes": nodes,
    });
    follower.abort();
    let release = workspace().join("target/release");
    let sizes = json!({
        "gateway_mib": file_size_mib(&release.join("gateway")),
        "orchestrator_mib": file_size_mib(&release.join("orchestrator")),
        "worker_mib": file_size_mib(&release.join("worker")),
        "worker_edge_mib": file_size_mib(&workspace().join("target/edge/worker")),
    });
    for service in [fleet, worker, gateway] {
        eprintln!("stopping {}", service.name);
        drop(service);
    }
    drop(orchestrators);
    pool.close().await;
    scratch.remove().await?;
    let queued = queued_memory(&env_template(), setting("BENCH_QUEUED", 100_000) as usize).await?;
    eprintln!("queued: {queued}");
    let mut others = serde_json::Map::new();
    for name in ["scheduler", "audit", "consent"] {
        let path = workspace().join(format!("target/bench/{name}.json"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            others.insert(name.to_owned(), serde_json::from_str(&text)?);
        }
    }
    Ok(json!({
        "machine": machine,
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "fleet": {"nodes": nodes, "cores_per_node": 4, "seconds_to_come_alive": fleet_seconds},
        "sequential": sequential,
        "throughput": throughput,
        "open_loop_submit": open,
        "open_loop_1000_drained_before_throughput": drained,
        "half_capacity": at_half,
        "takeover": takeovers,
        "redis": redis,
        "queued": queued,
        "memory": memory,
        "gateway": gateway_figures,
        "binary_sizes": sizes,
        "other_benches": others,
    }))
}

fn figure(value: &Value, path: &[&str]) -> String {
    let mut at = value;
    for key in path {
        at = &at[*key];
    }
    match at {
        Value::Number(number) => {
            let number = number.as_f64().unwrap_or(0.0);
            if number.fract() == 0.0 { format!("{number:.0}") } else { format!("{number:.2}") }
        }
        Value::Null => "—".to_owned(),
        other => other.to_string(),
    }
}

fn markdown(report: &Value) -> String {
    let row = |label: &str, path: &[&str], target: &str| format!("| {label} | {} | {target} |\n", figure(report, path));
    let mut out = String::new();
    let machine = &report["machine"];
    out.push_str(&format!(
        "# KoproGo Grid bench, {} (commit {}{})\n\nMachine: {}, {} cores, {}, Linux {}; PostgreSQL {} \
         (synchronous_commit {}), {}.\n\n",
        report["at"].as_str().unwrap_or_default(),
        machine["commit"].as_str().unwrap_or_default(),
        if machine["uncommitted_changes"] == true { ", with uncommitted changes" } else { "" },
        machine["cpu"].as_str().unwrap_or_default(),
        machine["cores"],
        machine["memory"].as_str().unwrap_or_default(),
        machine["kernel"].as_str().unwrap_or_default(),
        machine["postgresql"].as_str().unwrap_or_default(),
        machine["postgresql_synchronous_commit"].as_str().unwrap_or_default(),
        machine["redis"].as_str().unwrap_or_default(),
    ));
    out.push_str("| figure | measured | target |\n|---|---|---|\n");
    out.push_str(&row("fleet: simulated nodes (4 cores each), one process", &["fleet", "nodes"], ""));
    out.push_str(&row("end to end: tasks submitted", &["throughput", "tasks_submitted"], "50,000"));
    out.push_str(&row(
        "… submissions answered 503 (overloaded) and tried again after Retry-After",
        &["throughput", "submissions_refused_503_then_retried"],
        "",
    ));
    out.push_str(&row("end to end: tasks completed, credited and proven", &["throughput", "tasks_completed"], ""));
    out.push_str(&row("end to end: tasks/s", &["throughput", "tasks_per_second"], "≥ 5,000"));
    out.push_str(&row("end to end: submit → completed p50 (ms)", &["throughput", "submit_to_completed", "p50_ms"], ""));
    out.push_str(&row("end to end: submit → completed p99 (ms)", &["throughput", "submit_to_completed", "p99_ms"], ""));
    out.push_str(&row("submit → assigned p50 (ms)", &["throughput", "submit_to_assigned", "p50_ms"], ""));
    out.push_str(&row("submit → assigned p99 (ms)", &["throughput", "submit_to_assigned", "p99_ms"], ""));
    out.push_str(&row("sequential round trip p50 (ms)", &["sequential", "round_trip", "p50_ms"], ""));
    out.push_str(&row("sequential round trip p95 (ms)", &["sequential", "round_trip", "p95_ms"], ""));
    out.push_str(&row("sequential round trip p99 (ms)", &["sequential", "round_trip", "p99_ms"], "≤ 5"));
    out.push_str(&row("offered at half the measured capacity (tasks/s)", &["half_capacity", "offered_per_second"], ""));
    out.push_str(&row("… submitted → completed p50 (ms)", &["half_capacity", "submitted_to_completed", "p50_ms"], ""));
    out.push_str(&row(
        "… submitted → completed p99 (ms)",
        &["half_capacity", "submitted_to_completed", "p99_ms"],
        "≤ 50",
    ));
    out.push_str(&row("orchestrator CPU per task (µs)", &["throughput", "per_task", "orchestrator_cpu_us"], "≤ 60"));
    out.push_str(&row("gateway CPU per task (µs)", &["throughput", "per_task", "gateway_cpu_us"], ""));
    out.push_str(&row("PostgreSQL CPU per task (µs)", &["throughput", "per_task", "postgresql_cpu_us"], "≤ 100"));
    out.push_str(&row("Redis CPU per task (µs)", &["throughput", "per_task", "redis_cpu_us"], ""));
    out.push_str(&row("SQL statements per task", &["throughput", "per_task", "sql_statements"], "report"));
    out.push_str(&row("WAL bytes per task", &["throughput", "per_task", "wal_bytes"], "report"));
    out.push_str(&row("WAL flushes (fsync) per task", &["throughput", "per_task", "wal_flushes"], ""));
    out.push_str(&row("task row versions per task", &["throughput", "per_task", "task_row_versions"], ""));
    out.push_str(&row("share of task updates that were HOT", &["throughput", "per_task", "task_hot_update_share"], ""));
    out.push_str(&row("tasks per batch (mean)", &["throughput", "per_task", "tasks_per_batch"], ""));
    out.push_str(&row(
        "proof blocks sealed per second at this load",
        &["throughput", "proof_blocks", "per_second"],
        "report",
    ));
    out.push_str(&row("… leaves per block (mean)", &["throughput", "proof_blocks", "leaves_per_block"], ""));
    out.push_str(&row(
        "sealing per credited result, proof of work included (µs; blocks of 2,000, difficulty 8)",
        &["other_benches", "audit", "sealing_us_per_leaf"],
        "≤ 5",
    ));
    out.push_str(&row(
        "block verification, leaves per second (in memory)",
        &["other_benches", "audit", "verification_leaves_per_second"],
        "≥ 1,000,000",
    ));
    out.push_str(&row(
        "verification of the stored chain, links and leaves per second (read from PostgreSQL)",
        &["other_benches", "audit", "stored_chain_entries_per_second"],
        "",
    ));
    out.push_str(&row(
        "inclusion proof in a block of 2,000 leaves (hashes)",
        &["other_benches", "audit", "inclusion_proof_hashes_2000"],
        "≤ 11",
    ));
    out.push_str(&row(
        "writer takeover after kill -9, 5 trials, p50 (ms)",
        &["takeover", "kill_to_writer", "p50_ms"],
        "",
    ));
    out.push_str(&row(
        "writer takeover after kill -9, 5 trials, max (ms)",
        &["takeover", "kill_to_writer", "max_ms"],
        "p99 ≤ 2,000",
    ));
    out.push_str(&row(
        "… until a task submitted then completed, max (ms)",
        &["takeover", "kill_to_next_task_completed", "max_ms"],
        "",
    ));
    out.push_str(&row("writer RSS with 100,000 tasks queued (MiB)", &["queued", "writer_rss_mib"], "≤ 100 MB"));
    out.push_str(&row("takeover of 100,000 queued tasks after kill -9 (ms)", &["queued", "takeover_ms"], ""));
    out.push_str(&row(
        "Redis memory of the grid's namespace after the runs (MiB)",
        &["redis", "namespace_mib"],
        "report",
    ));
    out.push_str(&row("… keys in the namespace", &["redis", "namespace_keys"], ""));
    out.push_str(&row("… the whole server's memory (shared)", &["redis", "server_used_memory_mib"], ""));
    out.push_str(&row("… commands stream length", &["redis", "stream_lengths", "commands"], ""));
    out.push_str(&row("… reports stream length", &["redis", "stream_lengths", "reports"], ""));
    out.push_str(&row("… events stream length", &["redis", "stream_lengths", "events"], ""));
    for (index, target) in [(0, "≤ 2"), (1, "")] {
        let rate = report["open_loop_submit"][index]["offered_per_second"].as_u64().unwrap_or(0);
        for (label, key) in [("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms")] {
            let value = report["open_loop_submit"][index]["latency"][key].as_f64().unwrap_or(0.0);
            let goal = if key == "p99_ms" { target } else { "" };
            out.push_str(&format!(
                "| submit latency at {rate} req/s (open loop), {label} (ms) | {value:.2} | {goal} |\n"
            ));
        }
        let errors = report["open_loop_submit"][index]["errors"].as_u64().unwrap_or(0);
        let shed = report["open_loop_submit"][index]["of_which_503"].as_u64().unwrap_or(0);
        out.push_str(&format!("| submit errors at {rate} req/s (of which 503 overloaded: {shed}) | {errors} | 0 |\n"));
    }
    out.push_str(&row(
        "scheduler decisions/s (pure)",
        &["other_benches", "scheduler", "decisions", "decisions_per_second"],
        "≥ 50,000",
    ));
    out.push_str(&row(
        "scheduler placements/s through the writer (10,000 nodes, 100,000 queued)",
        &["other_benches", "scheduler", "dispatch", "assignments_per_second"],
        "",
    ));
    out.push_str(&row("replay events/s", &["other_benches", "audit", "events_per_second"], "≥ 200,000"));

    out.push_str(&row(
        "gateway peak RSS before the 5,000 req/s phase (MiB)",
        &["memory", "gateway_peak_rss_before_overload_mib"],
        "≤ 30",
    ));
    out.push_str(&row("gateway peak RSS after it (MiB)", &["memory", "gateway_peak_rss_mib"], ""));
    out.push_str(&row(
        "gateway RSS with the fleet connected, idle moment (MiB)",
        &["gateway", "rss_with_fleet_connected_mib"],
        "≤ 30",
    ));
    out.push_str(&row("… nodes connected", &["gateway", "fleet_connected"], "1,000"));
    let overload = &["gateway", "overload_20000"];
    let at = |key: &'static str| [overload[0], overload[1], key];
    out.push_str(&row(
        "offered 20,000 req/s: share answered within 10 ms (202 or 503)",
        &at("answered_within_10ms_share"),
        "≥ 0.999",
    ));
    out.push_str(&row("… answered 202", &["gateway", "overload_20000", "by_status", "202"], ""));
    out.push_str(&row("… answered 503", &["gateway", "overload_20000", "by_status", "503"], ""));
    out.push_str(&row("… connection errors", &at("errors"), "0"));
    out.push_str(&row("… latency p50 (ms)", &["gateway", "overload_20000", "latency", "p50_ms"], ""));
    out.push_str(&row("… latency p99 (ms)", &["gateway", "overload_20000", "latency", "p99_ms"], ""));
    out.push_str(&row("… gateway peak RSS during it (MiB)", &at("gateway_peak_rss_mib"), "≤ 50"));
    out.push_str(&row(
        "gateway CPU per heartbeat at 2,000/s (µs)",
        &["gateway", "cpu_per_heartbeat", "cpu_us_per_request"],
        "≤ 40",
    ));
    out.push_str(&row(
        "gateway CPU per submission at 2,000/s, with its task's report and channel fan-out (µs)",
        &["gateway", "cpu_per_submission", "cpu_us_per_request"],
        "≤ 40 per request",
    ));
    out.push_str(&row(
        "idle task channels opened",
        &["gateway", "idle_channels", "nodes"],
        "9,000 (10,000 with the fleet)",
    ));
    out.push_str(&row(
        "gateway RSS with them open (MiB)",
        &["gateway", "idle_channels", "gateway_rss_after_mib"],
        "report",
    ));
    out.push_str(&row("… per connected node (KiB)", &["gateway", "idle_channels", "kib_per_connected_node"], "small"));
    out.push_str(&row("orchestrator peak RSS (MiB)", &["memory", "orchestrator_peak_rss_mib"], ""));
    out.push_str(&row("single worker peak RSS (MiB)", &["memory", "single_worker_peak_rss_mib"], "≤ 10"));
    out.push_str(&row(
        "fleet process peak RSS (MiB, all simulated nodes)",
        &["memory", "fleet_process_peak_rss_mib"],
        "",
    ));
    out.push_str(&row("gateway binary, release (MiB)", &["binary_sizes", "gateway_mib"], ""));
    out.push_str(&row("orchestrator binary, release (MiB)", &["binary_sizes", "orchestrator_mib"], ""));
    out.push_str(&row("worker binary, release (MiB)", &["binary_sizes", "worker_mib"], ""));
    out.push_str(&row("worker binary, edge profile (MiB)", &["binary_sizes", "worker_edge_mib"], "≤ 5"));
    out.push_str(&row(
        "control-plane CPU per completed task (µs)",
        &["throughput", "control_plane_cpu_us_per_task"],
        "≤ 100",
    ));
    out.push_str(&row("… as µg of CO₂ per task", &["throughput", "co2_micrograms_per_task"], ""));
    out.push_str(&format!(
        "\nPower model for the CPU figure: {}. The end-to-end phase stops waiting after its budget \
         (BENCH_E2E_SECONDS); `gave_up_after_budget` in the JSON says whether it did.\n",
        report["throughput"]["power_model"].as_str().unwrap_or_default()
    ));
    out
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(run())?;
    if let Some(gateway) = report.get("gateway_only") {
        println!("{}", serde_json::to_string_pretty(gateway)?);
        return Ok(());
    }
    let directory = workspace().join("bench/results");
    std::fs::create_dir_all(&directory)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let commit = report["machine"]["commit"].as_str().unwrap_or("unknown").to_owned();
    let text = markdown(&report);
    for name in [format!("{stamp}-{commit}"), "latest".to_owned()] {
        std::fs::write(directory.join(format!("{name}.json")), serde_json::to_string_pretty(&report)?)?;
        std::fs::write(directory.join(format!("{name}.md")), &text)?;
    }
    println!("{text}\n(written to bench/results/{stamp}-{commit}.md and .json, and latest.md)");
    Ok(())
}
