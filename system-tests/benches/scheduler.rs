//! `just bench-scheduler`: how fast the scheduler decides, and how fast a dead node's tasks come
//! back to the queue. A report, not a test: nothing here asserts a time.
//!
//! 1. Decisions: 10,000 live nodes and 100,000 queued tasks, placed one decision at a time by the
//!    pure placer (the same code `solve` runs); decisions per second and the latency of one.
//! 2. Placement through the writer: the same fleet in Redis and the same queue in PostgreSQL; a
//!    writer takes over (loads the 100,000 queued tasks and mirrors the fleet), then places them
//!    batch by batch (pure rounds, one transaction of multi-row statements per batch, events
//!    published from memory): the takeover's time and assignments per second.
//! 3. Node death: a real gateway and orchestrator (in this process) over PostgreSQL and Redis,
//!    a node holding a task stops heartbeating; the time from its last heartbeat until the task
//!    is queued again, with `GRID_NODE_TTL_MS=1000`.

use std::time::{Duration, Instant};

use chrono::Utc;
use grid_orchestrator::scheduler::{Decision, LiveNode, Placer, Policy, QueuedTask, queue_order};
use grid_shared::ids::{NodeId, TaskId};
use serde_json::{Value, json};

#[path = "support/mod.rs"]
mod support;

use support::{Running, Scratch, percentile, poll};

const NODES: usize = 10_000;
const TASKS: usize = 100_000;
const TTL_MS: u64 = 1_000;
const DEATHS: usize = 7;

/// A small deterministic generator, so that every run decides the same problem.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn decisions() -> Value {
    let mut random = Lcg(42);
    let now = Utc::now();
    let nodes: Vec<LiveNode> = (0..NODES)
        .map(|index| LiveNode {
            node_id: NodeId(uuid::Uuid::from_u128(index as u128 + 1)),
            cpu_cores: 16,
            claimed: random.below(4) as u32,
            solar_watts: if index % 2 == 0 { random.below(600) as f64 } else { 0.0 },
            cpu_usage: random.below(100) as f64,
            eco_score: random.below(1000) as f64 / 1000.0,
            expires_at: now + chrono::Duration::seconds(15),
        })
        .collect();
    let mut tasks: Vec<QueuedTask> = (0..TASKS)
        .map(|index| QueuedTask {
            task_id: TaskId(uuid::Uuid::from_u128(u128::MAX - index as u128)),
            priority: random.below(11) as u8,
            deadline: now + chrono::Duration::seconds(60 + random.below(7_200) as i64),
            submitted_at: now - chrono::Duration::milliseconds(random.below(60_000) as i64),
            excluded: Vec::new(),
        })
        .collect();
    let policy = Policy { watts_per_core: 2.0, expected_runtime: chrono::Duration::seconds(60) };

    let clock = Instant::now();
    tasks.sort_by(queue_order);
    let sort = clock.elapsed();
    let clock = Instant::now();
    let mut placer = Placer::new(now, &nodes, policy);
    let build = clock.elapsed();
    let mut latencies = Vec::with_capacity(TASKS);
    let (mut placed, mut waiting, mut no_capacity) = (0, 0, 0);
    let total = Instant::now();
    for task in &tasks {
        let clock = Instant::now();
        let decision = placer.place(task);
        latencies.push(clock.elapsed());
        match decision {
            Decision::Placed(_) => placed += 1,
            Decision::WaitForSun => waiting += 1,
            Decision::NoCapacity | Decision::NoEligibleNode => no_capacity += 1,
        }
    }
    let deciding = total.elapsed();
    latencies.sort();
    let per_second = TASKS as f64 / deciding.as_secs_f64();
    println!("## Scheduler decisions ({NODES} live nodes × 16 cores, {TASKS} queued tasks)\n");
    println!("| figure | value |\n|---|---|");
    println!("| decisions per second | {per_second:.0} |");
    println!("| one decision p50 | {:?} |", percentile(&latencies, 0.5));
    println!("| one decision p99 | {:?} |", percentile(&latencies, 0.99));
    println!("| one decision max | {:?} |", latencies.last().copied().unwrap_or_default());
    println!("| queue sort | {sort:?} |");
    println!("| fleet heap build | {build:?} |");
    println!("| placed / waiting for sun / no capacity | {placed} / {waiting} / {no_capacity} |\n");
    json!({
        "nodes": NODES, "tasks": TASKS, "decisions_per_second": per_second,
        "decision_p50_ns": percentile(&latencies, 0.5).as_nanos() as u64,
        "decision_p99_ns": percentile(&latencies, 0.99).as_nanos() as u64,
        "sort_ms": sort.as_secs_f64() * 1e3, "heap_build_ms": build.as_secs_f64() * 1e3,
        "placed": placed, "waiting_for_sun": waiting, "no_capacity": no_capacity,
    })
}

async fn dispatch_path() -> anyhow::Result<Value> {
    let scratch = Scratch::new("dispatch").await?;
    let settings = |name: &str| -> Option<String> {
        match name {
            "DATABASE_URL" => Some(scratch.database_url.clone()),
            "REDIS_URL" => Some(scratch.redis_url.clone()),
            "GRID_NAMESPACE" => Some(scratch.namespace.clone()),
            "GRID_ADMIN_LISTEN" => Some("off".to_owned()),
            _ => None,
        }
    };
    let config = grid_orchestrator::config::OrchestratorConfig::from_lookup(settings)?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&scratch.database_url).await?;
    grid_orchestrator::app::MIGRATOR.run(&pool).await?;
    let organization = uuid::Uuid::new_v4();
    sqlx::query("insert into organization (organization_id, name) values ($1, 'bench')")
        .bind(organization)
        .execute(&pool)
        .await?;
    let nodes: Vec<uuid::Uuid> = sqlx::query_scalar(
        "insert into node (node_id, organization_id, name, cpu_cores, has_solar, location, token_hash)
         select gen_random_uuid(), $1, 'bench-' || i, 16, true, 'Bench', md5(i::text) || md5('t' || i::text)
         from generate_series(1, $2) i returning node_id",
    )
    .bind(organization)
    .bind(NODES as i32)
    .fetch_all(&pool)
    .await?;
    sqlx::query(
        "insert into task (task_id, organization_id, copropriete_id, kind_type, kind, priority, deadline, status,
             correlation_id)
         select gen_random_uuid(), $1, gen_random_uuid(), 'building_thermal_simulation',
             jsonb_build_object('type', 'building_thermal_simulation', 'building_id', gen_random_uuid(),
                 'insulation_score', 0.5, 'surface_m2', 90.0, 'heating_degree_days', 2400.0),
             (random() * 10)::int, now() + interval '10 minutes' + random() * interval '2 hours', 'queued',
             gen_random_uuid()
         from generate_series(1, $2)",
    )
    .bind(organization)
    .bind(TASKS as i32)
    .execute(&pool)
    .await?;
    let keys = &config.grid.keys;
    let redis = grid_orchestrator::store::streams::redis(&config.redis, 4)?;
    let mut conn = redis.get().await?;
    let expires = Utc::now().timestamp_millis() + 3_600_000;
    let mut random = Lcg(7);
    for chunk in nodes.chunks(1_000) {
        let mut pipe = redis::pipe();
        for node_id in chunk {
            let node_id = NodeId(*node_id);
            let solar = if random.below(2) == 0 { random.below(600) } else { 0 };
            pipe.cmd("HSET")
                .arg(keys.node_state(node_id))
                .arg(&[
                    ("cpu_cores", "16".to_owned()),
                    ("solar_watts", solar.to_string()),
                    ("cpu_usage", "10".to_owned()),
                    ("eco_score", "0.5".to_owned()),
                ])
                .ignore()
                .cmd("PEXPIRE")
                .arg(keys.node_state(node_id))
                .arg(3_600_000)
                .ignore()
                .cmd("ZADD")
                .arg(keys.nodes_alive())
                .arg(expires)
                .arg(node_id.to_string())
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    drop(conn);
    let config = std::sync::Arc::new(config);
    let status = std::sync::Arc::new(grid_orchestrator::status::Status::new("bench"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let cell = config.grid.cells.default_cell().name.clone();
    let lease =
        grid_orchestrator::lease::Lease::acquire(&pool, "bench", &cell, &shutdown).await?.expect("not shut down");
    let clock = Instant::now();
    let mut writer =
        grid_orchestrator::writer::Writer::take_over(config.clone(), pool.clone(), redis.clone(), lease.epoch, status)
            .await?;
    let takeover = clock.elapsed();
    let budget = Duration::from_secs(60);
    let started = Instant::now();
    let (mut assigned, mut batches, mut statements) = (0_usize, Vec::new(), 0_u32);
    while started.elapsed() < budget && assigned < TASKS {
        let clock = Instant::now();
        let step = writer.step().await?;
        if step.placed > 0 {
            batches.push(clock.elapsed());
            statements += step.statements;
        }
        assigned += step.placed;
    }
    let elapsed = started.elapsed();
    batches.sort();
    let per_second = assigned as f64 / elapsed.as_secs_f64();
    println!("## Placement through the writer ({NODES} nodes × 16 cores, {TASKS} queued)\n");
    println!("| figure | value |\n|---|---|");
    println!("| takeover: load {TASKS} queued tasks, mirror {NODES} nodes | {takeover:?} |");
    println!("| assignments per second | {per_second:.0} |");
    println!(
        "| assigned in {:.1} s, in {} batches, {statements} SQL statements | {assigned} |",
        elapsed.as_secs_f64(),
        batches.len()
    );
    println!("| one batch p50 | {:?} |", percentile(&batches, 0.5));
    println!("| one batch max | {:?} |\n", batches.last().copied().unwrap_or_default());
    lease.release().await;
    pool.close().await;
    scratch.remove().await?;
    Ok(json!({"assignments_per_second": per_second, "assigned": assigned, "seconds": elapsed.as_secs_f64(),
        "takeover_ms": takeover.as_secs_f64() * 1e3, "batches": batches.len(), "statements": statements,
        "batch_p50_ms": percentile(&batches, 0.5).as_secs_f64() * 1e3}))
}

async fn node_death() -> anyhow::Result<Value> {
    let scratch = Scratch::new("death").await?;
    let running = Running::start(&scratch, &[("GRID_NODE_TTL_MS", TTL_MS.to_string())]).await?;
    let (base, pool, http, api_key) =
        (running.base.clone(), running.pool.clone(), running.http.clone(), running.api_key.clone());
    let mut latencies = Vec::new();
    for _ in 0..DEATHS {
        let node: Value = http
            .post(format!("{base}/v1/nodes"))
            .bearer_auth(&api_key)
            .json(&json!({"name": "doomed", "cpu_cores": 1, "has_solar": true, "location": "Bench"}))
            .send()
            .await?
            .json()
            .await?;
        let (node_id, token) =
            (node["node_id"].as_str().unwrap_or_default(), node["token"].as_str().unwrap_or_default());
        let heartbeat = || {
            http.post(format!("{base}/v1/nodes/{node_id}/heartbeat"))
                .bearer_auth(token)
                .json(&json!({"cpu_usage": 1.0, "solar_watts": 300.0}))
                .send()
        };
        poll("the node", || async { (heartbeat().await.ok()?.status() == 200).then_some(()) }).await;
        let task = json!({"copropriete_id": uuid::Uuid::new_v4(), "deadline": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
            "kind": {"type": "building_thermal_simulation", "building_id": uuid::Uuid::new_v4(), "insulation_score": 0.5,
                     "surface_m2": 80.0, "heating_degree_days": 2400.0}});
        let submitted: Value =
            http.post(format!("{base}/v1/tasks")).bearer_auth(&api_key).json(&task).send().await?.json().await?;
        let task_id = uuid::Uuid::parse_str(submitted["task_id"].as_str().unwrap_or_default())?;
        let status = |wanted: &'static str| {
            let pool = pool.clone();
            async move {
                let status: Option<String> = sqlx::query_scalar("select status from task where task_id = $1")
                    .bind(task_id)
                    .fetch_optional(&pool)
                    .await
                    .ok()?;
                (status.as_deref() == Some(wanted)).then_some(())
            }
        };
        poll("the assignment", || status("assigned")).await;
        heartbeat().await?;
        let last_heartbeat = Instant::now();
        poll("the requeue", || status("queued")).await;
        latencies.push(last_heartbeat.elapsed());
        // Out of the way of the next round's node.
        http.delete(format!("{base}/v1/tasks/{task_id}")).bearer_auth(&api_key).send().await?;
        poll("the cancellation", || status("cancelled")).await;
    }
    running.stop().await;
    scratch.remove().await?;
    latencies.sort();
    let ttl = Duration::from_millis(TTL_MS);
    println!("## From a node's death to its task back in the queue ({DEATHS} deaths, TTL {TTL_MS} ms)\n");
    println!("| figure | value |\n|---|---|");
    println!("| p50 after the last heartbeat | {:?} |", percentile(&latencies, 0.5));
    println!("| max after the last heartbeat | {:?} |", latencies.last().copied().unwrap_or_default());
    println!("| max beyond the TTL | {:?} |\n", latencies.last().copied().unwrap_or_default().saturating_sub(ttl));
    Ok(json!({
        "deaths": DEATHS, "ttl_ms": TTL_MS,
        "requeue_after_last_heartbeat_ms": latencies.iter().map(|latency| latency.as_secs_f64() * 1e3).collect::<Vec<_>>(),
    }))
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let decisions = decisions();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let dispatch = runtime.block_on(dispatch_path())?;
    let death = runtime.block_on(node_death())?;
    let report = json!({"machine": format!("{} cores", std::thread::available_parallelism().map(usize::from).unwrap_or(1)),
        "decisions": decisions, "dispatch": dispatch, "node_death": death});
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&directory)?;
    std::fs::write(directory.join("scheduler.json"), serde_json::to_string_pretty(&report)?)?;
    println!("(written to target/bench/scheduler.json)");
    Ok(())
}
