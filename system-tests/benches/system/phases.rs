//! The phases of a run: the sequential round trip, end-to-end throughput, open-loop
//! submissions, the gateway under a flood and per request, idle channels, takeovers, queued
//! memory; each returns its figures.

use super::*;

/// When each task was assigned and completed, as the operator's event stream tells it.
#[derive(Default)]
pub(crate) struct Timeline {
    pub(crate) assigned: HashMap<String, Instant>,
    pub(crate) completed: HashMap<String, Instant>,
}

#[derive(Default)]
pub(crate) struct Watch {
    pub(crate) timeline: Mutex<Timeline>,
    pub(crate) changed: Notify,
}

/// Follows `GET /v1/events` (SSE) as the operator and records assignments and completions.
pub(crate) async fn follow_events(
    http: reqwest::Client,
    base: String,
    watch: Arc<Watch>,
    cell: Option<String>,
) -> anyhow::Result<()> {
    let query = cell.map(|cell| format!("?cell={cell}")).unwrap_or_default();
    let response = http
        .get(format!("{base}/v1/events{query}"))
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

pub(crate) fn thermal_task(index: usize) -> Value {
    json!({
        "copropriete_id": uuid::Uuid::new_v4(),
        "priority": 5,
        "deadline": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339(),
        "kind": {"type": "building_thermal_simulation", "building_id": uuid::Uuid::new_v4(),
                 "insulation_score": (index % 100) as f64 / 100.0, "surface_m2": 60.0 + (index % 90) as f64,
                 "heating_degree_days": 2400.0}
    })
}

pub(crate) struct Grid {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) api_key: String,
    pub(crate) watch: Arc<Watch>,
    /// Submissions answered 503 (and tried again) so far.
    pub(crate) shed: std::sync::atomic::AtomicU64,
}

impl Grid {
    pub(crate) async fn submit(&self, index: usize) -> anyhow::Result<String> {
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

    /// Posts `body` to `path` as a well-behaved client does: a 503 is tried again after its
    /// `Retry-After`, for about a minute; answers the 202's body.
    async fn post_until_accepted(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        for _ in 0..60 {
            let response =
                self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.api_key).json(body).send().await?;
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
            anyhow::ensure!(response.status() == 202, "{path} answered {}", response.status());
            return Ok(response.json().await?);
        }
        anyhow::bail!("{path} still refused after a minute")
    }

    /// Submits task `index` (`POST /v1/tasks`), tried again after each 503's `Retry-After`.
    pub(crate) async fn submit_until_accepted(&self, index: usize) -> anyhow::Result<String> {
        let body = self.post_until_accepted("/v1/tasks", &thermal_task(index)).await?;
        Ok(body["task_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Submits tasks `first..first + count` in one `POST /v1/tasks/batch`, tried again after each
    /// 503's `Retry-After`; their ids.
    pub(crate) async fn submit_batch_until_accepted(&self, first: usize, count: usize) -> anyhow::Result<Vec<String>> {
        let body = json!({"tasks": (first..first + count).map(thermal_task).collect::<Vec<_>>()});
        let answer = self.post_until_accepted("/v1/tasks/batch", &body).await?;
        anyhow::ensure!(answer["refused"] == 0, "the gateway refused tasks of a batch: {answer}");
        let items = answer["items"].as_array().map(Vec::as_slice).unwrap_or_default();
        Ok(items.iter().map(|item| item["task_id"].as_str().unwrap_or_default().to_owned()).collect())
    }

    /// Waits until `task_id` is completed (or failed), for at most `limit`.
    pub(crate) async fn completion(&self, task_id: &str, limit: Duration) -> Option<Instant> {
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

pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub(crate) fn distribution(mut samples: Vec<Duration>) -> Distribution {
    samples.sort();
    let Some(max) = samples.last() else { return Distribution::default() };
    let at = |quantile| Some(millis(percentile(&samples, quantile)));
    Distribution {
        samples: samples.len(),
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: Some(millis(*max)),
    }
}

pub(crate) async fn sequential(grid: &Grid, pool: &sqlx::PgPool, count: usize) -> anyhow::Result<Sequential> {
    let mut round_trips = Vec::with_capacity(count);
    let mut timed = Vec::with_capacity(count);
    let started = Instant::now();
    for index in 0..count {
        let (sent, sent_at) = (Instant::now(), chrono::Utc::now());
        let task_id = grid.submit(index).await?;
        let done = grid
            .completion(&task_id, Duration::from_secs(30))
            .await
            .ok_or_else(|| anyhow::anyhow!("task {index} of the sequential run did not complete in 30 s"))?;
        round_trips.push(done - sent);
        timed.push((task_id.parse::<uuid::Uuid>()?, sent_at, done - sent));
    }
    let seconds = started.elapsed().as_secs_f64();
    let segments = round_trip_segments(pool, &timed).await?;
    Ok(Sequential { tasks: count, seconds, round_trip: distribution(round_trips), segments })
}

/// Where each sequential round trip's time went, cut at the writer's own readings of the clock
/// (the task row's `submitted_at`, `assigned_at` and `finished_at`, taken when it decided each
/// step, before that step's batch commits): the machine's one clock, read by the bench and the
/// writer. `timed` is each task's id, when it was sent, and its whole round trip.
async fn round_trip_segments(
    pool: &sqlx::PgPool,
    timed: &[(uuid::Uuid, chrono::DateTime<chrono::Utc>, Duration)],
) -> anyhow::Result<RoundTripSegments> {
    type Stamps = (
        uuid::Uuid,
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let ids: Vec<uuid::Uuid> = timed.iter().map(|(task_id, _, _)| *task_id).collect();
    let rows: Vec<Stamps> =
        sqlx::query_as("select task_id, submitted_at, assigned_at, finished_at from task where task_id = any($1)")
            .bind(&ids)
            .fetch_all(pool)
            .await?;
    let stamps: HashMap<uuid::Uuid, Stamps> = rows.into_iter().map(|row| (row.0, row)).collect();
    let between = |from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>| {
        (to - from).to_std().unwrap_or_default()
    };
    // Each round trip's four parts: to the writer, to its assignment, to its completion, to the
    // bench's event stream.
    let mut parts: Vec<(Duration, [Duration; 4])> = Vec::with_capacity(timed.len());
    for (task_id, sent_at, round_trip) in timed {
        let Some(&(_, submitted, Some(assigned), Some(finished))) = stamps.get(task_id) else {
            continue;
        };
        let seen = *sent_at + chrono::Duration::from_std(*round_trip)?;
        parts.push((
            *round_trip,
            [
                between(*sent_at, submitted),
                between(submitted, assigned),
                between(assigned, finished),
                between(finished, seen),
            ],
        ));
    }
    let part = |index: usize| distribution(parts.iter().map(|(_, each)| each[index]).collect());
    let [to_writer, to_assigned, to_completed, to_seen] = [part(0), part(1), part(2), part(3)];
    // The slowest 1 %: what each part took in them, on average.
    parts.sort_by_key(|(round_trip, _)| std::cmp::Reverse(*round_trip));
    let slowest = &parts[..parts.len().div_ceil(100).min(parts.len())];
    let slowest_mean = |index: usize| {
        (!slowest.is_empty())
            .then(|| millis(slowest.iter().map(|(_, each)| each[index]).sum::<Duration>()) / slowest.len() as f64)
    };
    Ok(RoundTripSegments {
        to_writer,
        to_assigned,
        to_completed,
        to_seen,
        slowest_percent_mean_ms: [slowest_mean(0), slowest_mean(1), slowest_mean(2), slowest_mean(3)],
    })
}

/// `cpu` gives the CPU seconds so far of the orchestrator and of the gateway. `batch` tasks go
/// in each request: 1 is `POST /v1/tasks`, 64 requests in flight; more is
/// `POST /v1/tasks/batch`, as many tasks in flight (at least two requests).
pub(crate) async fn throughput(
    grid: &Arc<Grid>,
    tasks: usize,
    batch: usize,
    budget: Duration,
    cpu: &dyn Fn() -> (f64, f64),
) -> anyhow::Result<Throughput> {
    let cpu_before = cpu();
    let servers_before = (cpu_seconds_of("postgres"), cpu_seconds_of("redis-server"));
    let shed_before = grid.shed.load(std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let in_flight = Arc::new(Semaphore::new((64 / batch.max(1)).max(2)));
    let submitted = Arc::new(Mutex::new(Vec::with_capacity(tasks)));
    let mut handles = Vec::with_capacity(tasks);
    for first in (0..tasks).step_by(batch.max(1)) {
        let count = batch.max(1).min(tasks - first);
        let permit = in_flight.clone().acquire_owned().await?;
        let (grid, submitted) = (grid.clone(), submitted.clone());
        handles.push(tokio::spawn(async move {
            let sent = Instant::now();
            let task_ids = if batch <= 1 {
                grid.submit_until_accepted(first).await.map(|task_id| vec![task_id])
            } else {
                grid.submit_batch_until_accepted(first, count).await
            };
            drop(permit);
            match task_ids {
                Ok(task_ids) => {
                    submitted.lock().expect("not poisoned").extend(task_ids.into_iter().map(|task_id| (task_id, sent)))
                }
                Err(error) => eprintln!("a submission failed: {error:#}"),
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
    Ok(Throughput {
        tasks_per_request: batch.max(1),
        tasks_submitted: submitted.len(),
        submissions_refused_503_then_retried: grid.shed.load(std::sync::atomic::Ordering::Relaxed) - shed_before,
        tasks_completed: completed,
        submit_seconds,
        seconds,
        gave_up_after_budget: completed < submitted.len(),
        tasks_per_second: completed as f64 / seconds,
        submit_to_completed: distribution(to_completed),
        submit_to_assigned: distribution(to_assigned),
        control_plane_cpu_seconds: cpu_seconds,
        orchestrator_cpu_seconds: orchestrator_cpu,
        gateway_cpu_seconds: gateway_cpu,
        postgresql_cpu_seconds: postgres_cpu,
        redis_cpu_seconds: redis_cpu,
        control_plane_cpu_us_per_task: cpu_per_task_us,
        co2_micrograms_per_task: micrograms_per_task,
        power_model: format!("{WATTS_PER_BUSY_CORE} W per busy server core, {GRID_KG_PER_KWH} kg CO2/kWh"),
        per_task: PerTask::default(),
        proof_blocks: ProofBlocks::default(),
    })
}

/// Offers `rate` submissions per second for `seconds`, each sent at its scheduled time whatever
/// the previous ones do (open loop); latency counts from the scheduled time.
/// Also returns the ids of the tasks it submitted, with the time each was due.
pub(crate) async fn open_loop(
    grid: &Arc<Grid>,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<(OpenLoop, Vec<(String, Instant)>)> {
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
    let figures =
        OpenLoop { offered_per_second: rate, seconds, errors, of_which_503: shed, latency: distribution(latencies) };
    Ok((figures, task_ids))
}

/// One keep-alive HTTP/1.1 connection speaking just enough of the protocol to offer the
/// gateway 20,000 requests per second from this machine (reqwest costs more per request than
/// the gateway does).
pub(crate) struct RawConnection {
    pub(crate) stream: tokio::io::BufReader<tokio::net::TcpStream>,
    pub(crate) body: Vec<u8>,
}

impl RawConnection {
    pub(crate) async fn connect(address: &str) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream: tokio::io::BufReader::new(stream), body: Vec::new() })
    }

    /// Sends one request, reads its answer; the status.
    pub(crate) async fn exchange(&mut self, request: &[u8]) -> std::io::Result<u16> {
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

pub(crate) fn raw_request(method: &str, path: &str, token: &str, body: &str) -> Vec<u8> {
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
pub(crate) async fn flood(
    address: &str,
    request: Arc<Vec<u8>>,
    rate: u64,
    seconds: u64,
    connections: u64,
    gateway_pid: u32,
) -> anyhow::Result<Flood> {
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
    let mut by_status = std::collections::BTreeMap::new();
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
    Ok(Flood {
        offered_per_second: rate,
        seconds,
        connections,
        offered: total,
        answered,
        errors,
        by_status,
        answered_within_10ms_share: within as f64 / total.max(1) as f64,
        latency: distribution(latencies),
        gateway_peak_rss_mib: peak_rss,
    })
}

/// The gateway's CPU per request of one kind: `request` offered at `rate` for `seconds` over
/// 32 connections, less the CPU the gateway spent over as long idle (the fleet's heartbeats and
/// channels) just before.
pub(crate) async fn gateway_cpu_per_request(
    gateway: &Service,
    address: &str,
    request: Vec<u8>,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<CpuPerRequest> {
    let idle = idle_cpu_seconds(gateway, seconds).await;
    let before = gateway.cpu_seconds();
    eprintln!("gateway CPU: offering {rate} requests/s for {seconds} s");
    let offered = flood(address, Arc::new(request), rate, seconds, 32, gateway.pid()).await?;
    let busy = gateway.cpu_seconds() - before;
    Ok(CpuPerRequest::less_idle(rate, offered.answered, offered.by_status, offered.latency, busy, idle))
}

/// The CPU the gateway spends over `seconds` left alone (the fleet's heartbeats and channels):
/// a measure over time, so this waits the whole window.
async fn idle_cpu_seconds(gateway: &Service, seconds: u64) -> f64 {
    let before = gateway.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    gateway.cpu_seconds() - before
}

type NodeSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a node's connection (`GET /v1/nodes/{id}/connection`, a WebSocket).
async fn node_socket(base: &str, node_id: &str, token: &str) -> anyhow::Result<NodeSocket> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let address = base.replace("http://", "ws://") + &format!("/v1/nodes/{node_id}/connection");
    let mut request = address.into_client_request()?;
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    Ok(socket)
}

/// The gateway's CPU per frame of one kind over nodes' connections: `frame` (its `ref` set here)
/// offered at `rate` for `seconds` over 32 connections of the node, less the CPU the gateway
/// spent over as long idle just before. Latency is from a frame's send to its answer.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn gateway_cpu_per_frame(
    gateway: &Service,
    base: &str,
    node_id: &str,
    token: &str,
    frame: Value,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<CpuPerRequest> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    const CONNECTIONS: u64 = 32;
    let mut sockets = Vec::with_capacity(CONNECTIONS as usize);
    for _ in 0..CONNECTIONS {
        sockets.push(node_socket(base, node_id, token).await?);
    }
    let idle = idle_cpu_seconds(gateway, seconds).await;
    let before = gateway.cpu_seconds();
    eprintln!("gateway CPU: offering {rate} {} frames/s for {seconds} s", frame["type"]);
    let total = rate * seconds;
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let mut handles = Vec::new();
    for (connection, socket) in sockets.into_iter().enumerate() {
        let frame = frame.clone();
        handles.push(tokio::spawn(async move {
            let (mut sink, mut stream) = socket.split();
            let sent = Arc::new(Mutex::new(std::collections::VecDeque::new()));
            let reader = {
                let sent = sent.clone();
                tokio::spawn(async move {
                    let mut answers: Vec<(u16, Duration)> = Vec::new();
                    while let Some(Ok(message)) = stream.next().await {
                        let Message::Text(text) = message else { continue };
                        let Ok(answer) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                        if answer["type"] != "answer" {
                            continue;
                        }
                        let at: Option<tokio::time::Instant> = sent.lock().expect("not poisoned").pop_front();
                        let status = answer["status"].as_u64().unwrap_or(0) as u16;
                        answers.push((status, at.map(|at| at.elapsed()).unwrap_or_default()));
                    }
                    answers
                })
            };
            // Frames not answered (a broken connection) count as not answered.
            let mut index = connection as u64;
            while index < total {
                let due = start + Duration::from_nanos(index * 1_000_000_000 / rate);
                tokio::time::sleep_until(due).await;
                let mut frame = frame.clone();
                frame["ref"] = json!(index);
                sent.lock().expect("not poisoned").push_back(due);
                if sink.send(Message::Text(frame.to_string().into())).await.is_err() {
                    break;
                }
                index += CONNECTIONS;
            }
            // The gateway answers frames in order, so it has answered every frame before it reads
            // the close: the reader ends after the last answer (or after 5 s).
            let _ = sink.close().await;
            let answers = tokio::time::timeout(Duration::from_secs(5), reader).await;
            answers.ok().and_then(Result::ok).unwrap_or_default()
        }));
    }
    let mut by_status = std::collections::BTreeMap::new();
    let mut latencies = Vec::new();
    for handle in handles {
        for (status, latency) in handle.await? {
            *by_status.entry(status).or_default() += 1;
            latencies.push(latency);
        }
    }
    let busy = gateway.cpu_seconds() - before;
    let answered = latencies.len() as u64;
    Ok(CpuPerRequest::less_idle(rate, answered, by_status, distribution(latencies), busy, idle))
}

/// Registers `count` more nodes and holds a task channel open for each, as idle Pis would;
/// the gateway's resident memory before and after, per connection. The connections stay open
/// until the answer is dropped.
pub(crate) async fn idle_channels(
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    pool: &sqlx::PgPool,
    gateway: &Service,
    count: usize,
    over_connections: bool,
) -> anyhow::Result<(IdleChannels, Vec<tokio::net::TcpStream>)> {
    let prefix = if over_connections { "idle-ws" } else { "idle-sse" };
    let registered: Vec<(String, String)> = futures_util::stream::iter(0..count)
        .map(|index| async move {
            let body =
                json!({"name": format!("{prefix}-{index}"), "cpu_cores": 4, "has_solar": true, "location": "Liège"});
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
        let known: i64 = sqlx::query_scalar("select count(*) from node where name like $1")
            .bind(format!("{prefix}-%"))
            .fetch_one(pool)
            .await
            .ok()?;
        (known >= wanted).then_some(())
    })
    .await;
    let address = base.trim_start_matches("http://").to_owned();
    let rss_before = gateway.rss_mib();
    let mut open = Vec::with_capacity(registered.len());
    for (node_id, token) in &registered {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&address).await?;
        // An event stream, or a node's connection upgraded to a WebSocket (left idle: no frame).
        let (request, expected) = if over_connections {
            let request = format!(
                "GET /v1/nodes/{node_id}/connection HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
                 Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            );
            (request, b"101")
        } else {
            let request = format!(
                "GET /v1/nodes/{node_id}/tasks HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
            );
            (request, b"200")
        };
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0_u8; 12];
        stream.read_exact(&mut head).await?;
        anyhow::ensure!(head.ends_with(expected), "a node's channel answered {}", String::from_utf8_lossy(&head));
        open.push(stream);
    }
    // Each channel answered 200 after its catch-up read: every connection is set up. The rest of
    // the answers' headers is left unread: the connections only need to stay open.
    let rss_after = gateway.rss_mib();
    let figures = IdleChannels {
        nodes: open.len(),
        gateway_rss_before_mib: rss_before,
        gateway_rss_after_mib: rss_after,
        kib_per_connected_node: (rss_after - rss_before) * 1024.0 / open.len().max(1) as f64,
    };
    Ok((figures, open))
}

/// What the gateway phases need of the running grid.
pub(crate) struct GatewayPhases<'a> {
    pub(crate) gateway: &'a Service,
    pub(crate) listen: &'a str,
    pub(crate) base: &'a str,
    pub(crate) api_key: &'a str,
    pub(crate) pool: &'a sqlx::PgPool,
    pub(crate) http: &'a reqwest::Client,
}

impl GatewayPhases<'_> {
    /// The gateway at 20,000 offered requests per second, its CPU per request of each kind,
    /// and its memory with 9,000 more idle task channels (`BENCH_IDLE_NODES`).
    pub(crate) async fn run(
        &self,
        single_id: &str,
        single_token: &str,
        open_loop_seconds: u64,
    ) -> anyhow::Result<GatewayFigures> {
        // The gateway at 20,000 offered requests per second: answered at once (202 or 503).
        let address = self.listen.to_owned();
        let (gateway, api_key, pool, http, base) = (self.gateway, self.api_key, self.pool, self.http, self.base);
        let submission = raw_request("POST", "/v1/tasks", api_key, &thermal_task(0).to_string());
        let overload =
            flood(&address, Arc::new(submission.clone()), 20_000, open_loop_seconds, 128, gateway.pid()).await?;
        eprintln!("overload: {}", line(&overload));
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
        eprintln!("gateway CPU: heartbeat {}, submission {}", line(&per_heartbeat), line(&per_submission));
        // A report of work the node was never given: taken by the gateway (202), refused by the
        // writer, as a late report is.
        let report = || {
            let result = json!({"answer": 42});
            let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(result.to_string().as_bytes()));
            json!({"task_id": uuid::Uuid::new_v4(), "attempt": 1, "status": "completed", "result_json": result,
                   "result_hash": hash, "energy_used_wh": 0.5, "solar_contribution_wh": 0.5})
        };
        let report_request =
            raw_request("POST", &format!("/v1/nodes/{single_id}/reports"), single_token, &report().to_string());
        let per_report = gateway_cpu_per_request(gateway, &address, report_request, 2_000, open_loop_seconds).await?;
        // The same over the node's connection, one frame each.
        let beat = json!({"type": "heartbeat", "heartbeat": {"cpu_usage": 10.0, "solar_watts": 400.0}});
        let per_heartbeat_frame =
            gateway_cpu_per_frame(gateway, base, single_id, single_token, beat, 2_000, open_loop_seconds).await?;
        let report_frame = json!({"type": "report", "report": report()});
        let per_report_frame =
            gateway_cpu_per_frame(gateway, base, single_id, single_token, report_frame, 2_000, open_loop_seconds)
                .await?;
        eprintln!(
            "gateway CPU: report {}, heartbeat frame {}, report frame {}",
            line(&per_report),
            line(&per_heartbeat_frame),
            line(&per_report_frame)
        );
        let idle_nodes = setting("BENCH_IDLE_NODES", 9_000) as usize;
        let (idle, connections) = idle_channels(http, base, api_key, pool, gateway, idle_nodes, false).await?;
        eprintln!("idle channels: {}", line(&idle));
        drop(connections);
        let (idle_connections, connections) =
            idle_channels(http, base, api_key, pool, gateway, idle_nodes, true).await?;
        eprintln!("idle connections: {}", line(&idle_connections));
        drop(connections);
        Ok(GatewayFigures {
            overload_20000: overload,
            cpu_per_heartbeat: per_heartbeat,
            cpu_per_submission: per_submission,
            cpu_per_report: per_report,
            cpu_per_heartbeat_frame: per_heartbeat_frame,
            cpu_per_report_frame: per_report_frame,
            idle_channels: idle,
            idle_connections,
            rss_with_fleet_connected_mib: None,
            fleet_connected: None,
        })
    }
}

/// From each task's due submission time to its completion, as the event stream saw it.
pub(crate) fn completion_latency(grid: &Grid, submit: &OpenLoop, task_ids: &[(String, Instant)]) -> HalfCapacity {
    let timeline = grid.watch.timeline.lock().expect("not poisoned");
    let latencies: Vec<Duration> =
        task_ids.iter().filter_map(|(task_id, due)| Some(*timeline.completed.get(task_id)? - *due)).collect();
    HalfCapacity {
        offered_per_second: submit.offered_per_second,
        submitted: task_ids.len(),
        completed: latencies.len(),
        submit: submit.latency.clone(),
        submitted_to_completed: distribution(latencies),
    }
}

/// `kill -9` of the writer, five times: the time until the standby reports itself the writer
/// (it has reloaded the state from PostgreSQL and made Redis whole), and until a task submitted
/// then completes. The killed process comes back as the standby.
pub(crate) async fn takeovers(
    orchestrators: &mut [Orchestrator; 2],
    env: &[(&str, String)],
    http: &reqwest::Client,
    grid: &Grid,
) -> anyhow::Result<Takeovers> {
    let mut to_writer = Vec::new();
    let mut to_completed = Vec::new();
    for trial in 0..5 {
        let mut writer = 0;
        for (index, orchestrator) in orchestrators.iter().enumerate() {
            if orchestrator.readiness(http).await.is_some_and(|readiness| readiness.role == "writer") {
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
    Ok(Takeovers {
        trials: to_writer.len(),
        kill_to_writer: distribution(to_writer),
        kill_to_next_task_completed: distribution(to_completed),
    })
}

/// The settings of a grid of its own (a scratch database and namespace).
pub(crate) fn env_template() -> Vec<(&'static str, String)> {
    vec![("GRID_OPERATOR_KEY", OPERATOR_KEY.to_owned()), ("RUST_LOG", "info".to_owned())]
}

/// The writer's memory with `count` tasks queued (no node to run them), and the time a standby
/// takes over that state after a `kill -9`. The submissions go straight onto the commands
/// stream, as the gateway writes them.
pub(crate) async fn queued_memory(base_env: &[(&'static str, String)], count: usize) -> anyhow::Result<QueuedMemory> {
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
    let keys = grid_shared::wire::Keys::new(&scratch.namespace).map_err(anyhow::Error::msg)?;
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
                .arg(grid_shared::wire::fields::TYPE)
                .arg(&envelope.message_type)
                .arg(grid_shared::wire::fields::ENVELOPE)
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
                cell: None,
            });
            let envelope = Envelope::wrap(&submit, origin);
            pipe.cmd("XADD")
                .arg(keys.commands())
                .arg("*")
                .arg(grid_shared::wire::fields::TYPE)
                .arg(&envelope.message_type)
                .arg(grid_shared::wire::fields::ENVELOPE)
                .arg(envelope.to_json())
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    let applied = Instant::now();
    support::poll("the queue", || async {
        let readiness = orchestrators[0].readiness(&http).await?;
        (readiness.queued_tasks >= count as u64).then_some(())
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
    Ok(QueuedMemory {
        queued: count,
        seconds_to_apply_submissions: apply_seconds,
        writer_rss_mib,
        takeover_ms: millis(takeover),
        queued_after_takeover: readiness.queued_tasks,
        new_writer_rss_mib: standby_rss_mib,
    })
}

/// Waits (at most `limit`) until the given tasks are completed, so that the next phase starts
/// on a grid without backlog.
pub(crate) async fn drain(grid: &Grid, task_ids: &[(String, Instant)], limit: Duration) -> bool {
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
