//! `just bench`: the real binaries (`target/release/{orchestrator,gateway,worker}`) over a
//! scratch database and Redis namespace, driven over HTTP. The simulated fleet answers each task
//! at once (`worker simulate --instant-results`): the figures are the control plane's, not the
//! Pis' computations (one real `worker run` computes beside it, for its memory figure). It
//! measures the sequential round trip, end-to-end throughput with a fleet of simulated nodes,
//! open-loop submit latency, memory and CPU, gathers the figures of the other benches
//! (`target/bench/*.json`) and writes the report to `bench/results/` (markdown and JSON, both
//! from the typed figures of `figures.rs`). A report, not a test: nothing here asserts a time.
//!
//! Sizes can be changed with `BENCH_NODES` (1000), `BENCH_TASKS` (50000), `BENCH_SEQUENTIAL`
//! (1000), `BENCH_E2E_SECONDS` (150: the throughput phase stops waiting after this) and
//! `BENCH_OPEN_LOOP_SECONDS` (3 per rate); `BENCH_HALF_RATE` fixes the half-capacity rate.
//! For working on one part, nothing written: `BENCH_GATEWAY_ONLY=1` runs the gateway's phases
//! alone, `BENCH_STOP_AFTER_HALF=1` stops after the half-capacity phase, and
//! `BENCH_GATEWAY_BINARY=<path>` runs another build of the gateway (to compare two on one grid).
//! `BENCH_CELLS=a:BE,b:BE,c:BE` runs the grid in these cells (`GRID_CELLS`: one orchestrator
//! process writes them all, another stands by for all), the fleet split over them, one simulated
//! fleet process per cell, every submission left to the gateway's choice of cell.
//! The whole run starts with BullMQ on the same machine and Redis (`bench/bullmq/run.mjs`,
//! `BENCH_BULLMQ_JOBS` jobs each way, 20,000), the baseline of the end-to-end ratios.
//! `BENCH_CELL_TAKEOVER_ONLY=1` runs only the takeover of one cell of three under load
//! (`cells.rs`; `BENCH_CELL_TAKEOVER_RATE`, 300 tasks/s, and `BENCH_CELL_TAKEOVER_NODES`, 150).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};

mod cells;
mod figures;
mod measures;
mod phases;
mod processes;
mod report;
#[path = "../support/mod.rs"]
mod support;

use cells::*;
use figures::*;
use measures::*;
use phases::*;
use processes::*;
use report::*;

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

async fn run() -> anyhow::Result<Outcome> {
    let cell_takeover_rate = setting("BENCH_CELL_TAKEOVER_RATE", 300);
    let cell_takeover_nodes = setting("BENCH_CELL_TAKEOVER_NODES", 150);
    if std::env::var_os("BENCH_CELL_TAKEOVER_ONLY").is_some() {
        let figures = cell_takeover(cell_takeover_nodes, cell_takeover_rate).await?;
        return Ok(Outcome::CellTakeoverOnly { cell_takeover: figures });
    }
    let nodes = setting("BENCH_NODES", 1000);
    let tasks = setting("BENCH_TASKS", 50_000) as usize;
    let sequential_tasks = setting("BENCH_SEQUENTIAL", 1000) as usize;
    let budget = Duration::from_secs(setting("BENCH_E2E_SECONDS", 150));
    let open_loop_seconds = setting("BENCH_OPEN_LOOP_SECONDS", 3);
    let cells: Vec<String> = std::env::var("BENCH_CELLS")
        .ok()
        .map(|list| list.split(',').map(|cell| cell.trim().to_owned()).filter(|cell| !cell.is_empty()).collect())
        .unwrap_or_default();
    let cell_names: Vec<String> =
        cells.iter().map(|cell| cell.split(':').next().unwrap_or_default().to_owned()).collect();

    let scratch = Scratch::new("system").await?;
    let machine = machine(&scratch.database_url).await;
    // BullMQ first, on the machine before the grid starts, for the whole report only.
    let whole_run =
        std::env::var_os("BENCH_GATEWAY_ONLY").is_none() && std::env::var_os("BENCH_STOP_AFTER_HALF").is_none();
    let bullmq =
        if whole_run { bullmq_baseline(&scratch.redis_url, setting("BENCH_BULLMQ_JOBS", 20_000)) } else { None };
    let listen = format!("127.0.0.1:{}", free_port()?);
    let base = format!("http://{listen}");
    let mut env = grid_env(&scratch, &listen);
    if !cells.is_empty() {
        env.push(("GRID_CELLS", cells.join(",")));
    }
    migrate(&env)?;
    // A request that takes longer than 10 s counts as an error (an overloaded open-loop phase
    // then ends in bounded time).
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).timeout(Duration::from_secs(10)).build()?;
    // The writer, and a standby for the takeover trials.
    let writer = Orchestrator::start("orchestrator-a", &env)?;
    writer.wait_for_role(&http, "writer").await;
    let mut orchestrators = [writer, Orchestrator::start("orchestrator-b", &env)?];
    orchestrators[1].wait_for_role(&http, "standby").await;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&scratch.database_url).await?;
    let (gateway, api_key) = gateway_with_organisation("gateway", &env, &http, &base, "bench").await?;

    let watch = Arc::new(Watch::default());
    // A client of its own: reqwest's timeout covers a whole response, and this one never ends.
    // One per cell: each cell has its own event stream.
    let followers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>> = if cell_names.is_empty() {
        vec![tokio::spawn(follow_events(reqwest::Client::new(), base.clone(), watch.clone(), None))]
    } else {
        cell_names
            .iter()
            .map(|cell| {
                tokio::spawn(follow_events(reqwest::Client::new(), base.clone(), watch.clone(), Some(cell.clone())))
            })
            .collect()
    };
    let stop_following = || followers.iter().for_each(tokio::task::JoinHandle::abort);

    // One real worker, as on a Pi, and the simulated fleet in one process (one per cell).
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
    let anonymous_before_fleet = memory_mib_of(gateway.pid(), "RssAnon:");
    let fleet_started = Instant::now();
    let fleets = start_fleets(&gateway_arg, &api_key, nodes, &cell_names)?;
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
    let anonymous_with_fleet = memory_mib_of(gateway.pid(), "RssAnon:");
    let anonymous_kib_per_node = (anonymous_with_fleet - anonymous_before_fleet) * 1024.0 / wanted as f64;
    eprintln!(
        "{wanted} nodes alive after {fleet_seconds:.1} s; the gateway's anonymous memory \
         {anonymous_before_fleet:.1} → {anonymous_with_fleet:.1} MiB ({anonymous_kib_per_node:.1} KiB per node)"
    );

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
        eprintln!("open loop: {}", line(&at_1000));
        let (at_5000, _) = open_loop(&grid, 5000, open_loop_seconds).await?;
        eprintln!("open loop: {}", line(&at_5000));
        let phases = GatewayPhases {
            gateway: &gateway,
            listen: &listen,
            base: &base,
            api_key: &api_key,
            pool: &pool,
            http: &http,
        };
        let figures = phases.run(&single_id, &single_token_owned, open_loop_seconds).await?;
        stop_following();
        drop((fleets, worker, gateway, orchestrators));
        pool.close().await;
        scratch.remove().await?;
        return Ok(Outcome::GatewayOnly { open_loop_submit: vec![at_1000, at_5000], gateway: Box::new(figures) });
    }
    let sequential = sequential(&grid, &pool, sequential_tasks).await?;
    eprintln!("sequential: {}", line(&sequential));
    // Submit latency at 1,000 req/s on an idle grid, then its tasks drain before the throughput
    // phase; 5,000 req/s last, as it overloads this machine.
    let (at_1000, submitted) = open_loop(&grid, 1000, open_loop_seconds).await?;
    eprintln!("open loop: {}", line(&at_1000));
    let drained = drain(&grid, &submitted, Duration::from_secs(90)).await;
    let control_plane_cpu = || {
        (
            orchestrators.iter().map(|orchestrator| orchestrator.service.cpu_seconds()).sum::<f64>(),
            gateway.cpu_seconds(),
        )
    };
    // One task per request, then the same in batches of 100 (`POST /v1/tasks/batch`);
    // `BENCH_BATCHED_FIRST=1` swaps them, to see what the order costs (the tables grow).
    let order: [usize; 2] = if std::env::var_os("BENCH_BATCHED_FIRST").is_some() { [100, 1] } else { [1, 100] };
    let (mut throughput, mut batched) = (None, None);
    for batch in order {
        let measured =
            measured_throughput(&grid, tasks, batch, budget, &control_plane_cpu, &pool, &orchestrators[0], &http)
                .await?;
        if batch == 1 {
            eprintln!("throughput: {}", line(&measured));
            throughput = Some(measured);
        } else {
            eprintln!("throughput in batches of 100: {}", line(&measured));
            batched = Some(measured);
        }
    }
    let throughput = throughput.ok_or_else(|| anyhow::anyhow!("the phase of one task per request did not run"))?;
    let batched = batched.ok_or_else(|| anyhow::anyhow!("the phase in batches did not run"))?;
    if !cell_names.is_empty() {
        // Each cell's share of the tasks completed (the gateway chose their cells).
        let shares: Vec<(String, i64)> = sqlx::query_as(
            "select cell_id, count(*) from task where status = 'completed' group by cell_id order by cell_id",
        )
        .fetch_all(&pool)
        .await?;
        eprintln!("cells: {}", json!(shares.into_iter().collect::<HashMap<String, i64>>()));
    }
    // Submitted → completed at half the measured capacity, open loop.
    let half = setting("BENCH_HALF_RATE", (throughput.tasks_per_second / 2.0).max(10.0) as u64);
    let (half_load, half_ids) = open_loop(&grid, half, open_loop_seconds.max(5)).await?;
    drain(&grid, &half_ids, Duration::from_secs(60)).await;
    let at_half = completion_latency(&grid, &half_load, &half_ids);
    eprintln!("half load: {}", line(&at_half));
    if std::env::var_os("BENCH_STOP_AFTER_HALF").is_some() {
        eprintln!(
            "gateway RSS with the fleet connected: {:.1} MiB (anonymous {:.1}, files {:.1})",
            gateway.rss_mib(),
            memory_mib_of(gateway.pid(), "RssAnon:"),
            memory_mib_of(gateway.pid(), "RssFile:")
        );
        stop_following();
        drop((fleets, worker, gateway, orchestrators));
        pool.close().await;
        scratch.remove().await?;
        return Ok(Outcome::StoppedAfterHalf {
            half: at_half,
            throughput: Box::new(throughput),
            throughput_in_batches: Box::new(batched),
        });
    }
    let takeovers = takeovers(&mut orchestrators, &env, &http, &grid).await?;
    eprintln!("takeovers: {}", line(&takeovers));
    let redis = redis_footprint(&scratch.redis_url, &scratch.namespace).await?;
    eprintln!("redis: {}", line(&redis));
    let gateway_rss_before_overload = gateway.peak_rss_mib();
    let gateway_rss_connected = gateway.rss_mib();
    let (at_5000, _) = open_loop(&grid, 5000, open_loop_seconds).await?;
    eprintln!("open loop: {}", line(&at_5000));
    let open = vec![at_1000, at_5000];
    let phases =
        GatewayPhases { gateway: &gateway, listen: &listen, base: &base, api_key: &api_key, pool: &pool, http: &http };
    let mut gateway_figures = phases.run(&single_id, &single_token_owned, open_loop_seconds).await?;
    gateway_figures.rss_with_fleet_connected_mib = Some(gateway_rss_connected);
    gateway_figures.fleet_connected = Some(nodes + 1);
    let memory = Memory {
        gateway_peak_rss_before_overload_mib: gateway_rss_before_overload,
        gateway_peak_rss_mib: gateway.peak_rss_mib(),
        orchestrator_peak_rss_mib: orchestrators
            .iter()
            .map(|orchestrator| orchestrator.service.peak_rss_mib())
            .fold(0.0, f64::max),
        single_worker_peak_rss_mib: worker.peak_rss_mib(),
        fleet_process_peak_rss_mib: fleets.iter().map(Service::peak_rss_mib).fold(0.0, f64::max),
        fleet_nodes: nodes,
    };
    stop_following();
    let release = workspace().join("target/release");
    let sizes = BinarySizes {
        gateway_mib: file_size_mib(&release.join("gateway")),
        orchestrator_mib: file_size_mib(&release.join("orchestrator")),
        worker_mib: file_size_mib(&release.join("worker")),
        worker_edge_mib: file_size_mib(&workspace().join("target/edge/worker")),
    };
    for service in fleets.into_iter().chain([worker, gateway]) {
        eprintln!("stopping {}", service.name);
        drop(service);
    }
    drop(orchestrators);
    pool.close().await;
    scratch.remove().await?;
    let queued = queued_memory(&env_template(), setting("BENCH_QUEUED", 100_000) as usize).await?;
    eprintln!("queued: {}", line(&queued));
    let cell_takeover = cell_takeover(cell_takeover_nodes, cell_takeover_rate).await?;
    eprintln!("cell takeover: {}", line(&cell_takeover));
    Ok(Outcome::Report(Box::new(Report {
        machine,
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        fleet: Fleet {
            nodes,
            cores_per_node: 4,
            seconds_to_come_alive: fleet_seconds,
            gateway_anonymous_kib_per_node: anonymous_kib_per_node,
        },
        sequential,
        throughput,
        throughput_in_batches: batched,
        open_loop_submit: open,
        open_loop_1000_drained_before_throughput: drained,
        half_capacity: at_half,
        takeover: takeovers,
        redis,
        queued,
        cell_takeover,
        memory,
        gateway: gateway_figures,
        bullmq,
        binary_sizes: sizes,
        other_benches: OtherBenches { scheduler: other_bench("scheduler")?, audit: other_bench("audit")? },
    })))
}

/// The end-to-end phase (`throughput`) with `batch` tasks per request, and what it cost per
/// task: each process's CPU, SQL statements, WAL and task row versions (from the writer's
/// `/readyz` and PostgreSQL's counters), and proof blocks.
#[allow(clippy::too_many_arguments)]
async fn measured_throughput(
    grid: &Arc<Grid>,
    tasks: usize,
    batch: usize,
    budget: Duration,
    cpu: &dyn Fn() -> (f64, f64),
    pool: &sqlx::PgPool,
    writer: &Orchestrator,
    http: &reqwest::Client,
) -> anyhow::Result<Throughput> {
    let (postgres_before, writer_before) = (postgres_counters(pool).await?, writer.readiness(http).await);
    let mut throughput = throughput(grid, tasks, batch, budget, cpu).await?;
    let (postgres_after, writer_after) = (postgres_counters(pool).await?, writer.readiness(http).await);
    let completed = throughput.tasks_completed.max(1) as f64;
    let per_task = |value: f64| value / completed;
    let (statements, batches, blocks_sealed) = match (&writer_before, &writer_after) {
        (Some(before), Some(after)) => (
            after.statements.saturating_sub(before.statements) as f64,
            after.batches.saturating_sub(before.batches) as f64,
            after.blocks_sealed.saturating_sub(before.blocks_sealed) as f64,
        ),
        _ => (0.0, 0.0, 0.0),
    };
    let written = postgres_after - postgres_before;
    let (event_envelope_bytes, task_row_bytes): (f64, f64) = sqlx::query_as(
        "select (select coalesce(avg(pg_column_size(envelope)), 0)::float8 from event),
                (select coalesce(avg(pg_column_size(task.*)), 0)::float8 from task)",
    )
    .fetch_one(pool)
    .await?;
    throughput.per_task = PerTask {
        orchestrator_cpu_us: per_task(throughput.orchestrator_cpu_seconds) * 1e6,
        gateway_cpu_us: per_task(throughput.gateway_cpu_seconds) * 1e6,
        postgresql_cpu_us: per_task(throughput.postgresql_cpu_seconds) * 1e6,
        redis_cpu_us: per_task(throughput.redis_cpu_seconds) * 1e6,
        sql_statements: per_task(statements),
        wal_bytes: per_task(written.wal_bytes),
        wal_flushes: per_task(written.wal_flushes),
        wal_records: per_task(written.wal_records),
        wal_full_pages: per_task(written.wal_full_pages),
        task_row_versions: per_task(written.table("task").inserts + written.table("task").updates),
        task_hot_update_share: written.table("task").hot_updates / written.table("task").updates.max(1.0),
        rows: per_task(written.tables.values().map(TableWrites::rows).sum()),
        event_envelope_bytes,
        task_row_bytes,
        index_entries: per_task(written.tables.values().map(|writes| writes.index_entries).sum()),
        by_table: written
            .tables
            .iter()
            .map(|(table, writes)| {
                let per_task = TableWrites {
                    inserts: per_task(writes.inserts),
                    updates: per_task(writes.updates),
                    hot_updates: per_task(writes.hot_updates),
                    deletes: per_task(writes.deletes),
                    index_entries: per_task(writes.index_entries),
                };
                (table.clone(), per_task)
            })
            .collect(),
        tasks_per_batch: completed / batches.max(1.0),
    };
    throughput.proof_blocks = ProofBlocks {
        sealed: blocks_sealed,
        per_second: blocks_sealed / throughput.seconds.max(f64::EPSILON),
        leaves_per_block: completed / blocks_sealed.max(1.0),
    };
    Ok(throughput)
}

/// The figures another bench left in `target/bench/<name>.json`, if it ran.
fn other_bench<T: serde::de::DeserializeOwned>(name: &str) -> anyhow::Result<Option<T>> {
    let path = workspace().join(format!("target/bench/{name}.json"));
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let figures = serde_json::from_str(&text)
        .map_err(|error| anyhow::anyhow!("{} is not what the {name} bench writes: {error}", path.display()))?;
    Ok(Some(figures))
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = match runtime.block_on(run())? {
        Outcome::Report(report) => report,
        part => {
            println!("{}", serde_json::to_string_pretty(&part)?);
            return Ok(());
        }
    };
    let directory = workspace().join("bench/results");
    std::fs::create_dir_all(&directory)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let commit = if report.machine.commit.is_empty() { "unknown" } else { report.machine.commit.as_str() };
    let text = markdown(&report);
    for name in [format!("{stamp}-{commit}"), "latest".to_owned()] {
        std::fs::write(directory.join(format!("{name}.json")), serde_json::to_string_pretty(&report)?)?;
        std::fs::write(directory.join(format!("{name}.md")), &text)?;
    }
    println!("{text}\n(written to bench/results/{stamp}-{commit}.md and .json, and latest.md)");
    Ok(())
}
