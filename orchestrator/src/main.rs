//! `orchestrator [run]`, `orchestrator migrate`, `orchestrator verify-proofs`, `orchestrator replay`,
//! `orchestrator simulate`.

use clap::{Parser, Subcommand};
use grid_orchestrator::app::{MIGRATOR, run};
use grid_orchestrator::config::OrchestratorConfig;
use grid_orchestrator::ledger::verify_stored_chain;
use grid_shared::cells::CellName;
use sqlx::migrate::MigrateDatabase;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "orchestrator", about = "KoproGo Grid orchestrator: applies commands and reports, schedules tasks")]
struct Cli {
    #[command(subcommand)]
    command: Option<Action>,
}

#[derive(Subcommand)]
enum Action {
    /// Apply commands and reports, schedule tasks and relay events (the default).
    Run,
    /// Apply the database migrations and exit.
    Migrate,
    /// Verify the green-proof chain of each cell (each has its own); exits 1 at the first broken
    /// link of any.
    VerifyProofs {
        /// One cell; without it, every cell of `GRID_CELLS` and every cell PostgreSQL has a
        /// writer for.
        #[arg(long)]
        cell: Option<String>,
    },
    /// Rebuild every projection from the events alone and diff it against the tables; exits 1
    /// when anything diverges.
    Replay {
        /// Where the events are read: the PostgreSQL archive or the `{ns}:events` stream.
        #[arg(long, value_enum, default_value_t = Source::Postgres)]
        source: Source,
        /// The first event (seq, the cell's own) to replay; from a later one, only the tasks seen
        /// are compared.
        #[arg(long, default_value_t = 1)]
        from: i64,
        /// One cell; without it, every cell of `GRID_CELLS` and every cell PostgreSQL has a
        /// writer for, one after the other.
        #[arg(long)]
        cell: Option<String>,
    },
    /// Explore seeded random histories of the grid's core in memory (no database, no Redis),
    /// checking its invariants after every step; exits 1 when a seed fails, printing the
    /// command that replays it and the shortest history that still fails.
    Simulate {
        /// How many seeds, from `--first-seed`.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// Operations per seed.
        #[arg(long, default_value_t = 5_000)]
        steps: usize,
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        /// Replay this one seed (as printed by a failure).
        #[arg(long)]
        seed: Option<u64>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Source {
    Postgres,
    Redis,
}

/// One line on failure (the cause chain), not a backtrace: `RUST_BACKTRACE` is for panics.
fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let outcome = runtime.map_err(anyhow::Error::from).and_then(|runtime| runtime.block_on(run_command()));
    if let Err(error) = outcome {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run_command() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Action::Simulate { seeds, steps, first_seed, seed }) = cli.command {
        let (first, count) = seed.map_or((first_seed, seeds), |seed| (seed, 1));
        std::process::exit(simulate(first, count, steps));
    }
    grid_shared::logging::init().map_err(anyhow::Error::msg)?;
    let config = OrchestratorConfig::from_env().map_err(|error| anyhow::anyhow!("configuration: {error}"))?;
    let action = cli.command.unwrap_or(Action::Run);
    if matches!(action, Action::Run | Action::Migrate) && !sqlx::Postgres::database_exists(&config.database_url).await?
    {
        sqlx::Postgres::create_database(&config.database_url).await?;
        tracing::info!("database created");
    }
    // No JIT: the writer's statements run for milliseconds, and a batch's update estimated
    // without statistics (850 rows per key) crossed `jit_above_cost` and compiled 26 functions
    // for one batch (auto_explain, `just bench-scheduler`).
    let options: sqlx::postgres::PgConnectOptions = config.database_url.parse()?;
    let pool =
        sqlx::postgres::PgPoolOptions::new().max_connections(8).connect_with(options.options([("jit", "off")])).await?;
    match action {
        Action::Run => {
            let shutdown = CancellationToken::new();
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                trigger.cancel();
            });
            run(config, pool, shutdown).await
        }
        Action::Migrate => {
            MIGRATOR.run(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Action::Replay { source, from, cell } => {
            let cells = audited_cells(&pool, &config, cell.as_deref()).await?;
            let clock = std::time::Instant::now();
            let (mut events, mut tasks, mut divergences, mut reports) = (0, 0, Vec::new(), Vec::new());
            for cell in &cells {
                let started = std::time::Instant::now();
                // The grid may be running: the cell's events and rows are read in one snapshot.
                let mut snapshot = grid_orchestrator::replay::Snapshot::take(&pool, cell).await?;
                let projection = match source {
                    Source::Postgres => snapshot.replay(&pool, from).await?,
                    Source::Redis => {
                        let mut conn = grid_orchestrator::store::streams::redis(&config.redis, 1)?.get().await?;
                        let stream = config.grid.keys.cell_keys(cell).events();
                        grid_orchestrator::replay::from_redis(&mut conn, &stream, from, snapshot.last_seq).await?
                    }
                };
                let found = snapshot.diff(&projection, from <= 1).await?;
                reports.push(serde_json::json!({
                    "cell": cell,
                    "events": projection.events,
                    "last_seq": projection.last_seq,
                    "seconds": started.elapsed().as_secs_f64(),
                    "tasks": projection.tasks.len(),
                    "divergences": found,
                }));
                events += projection.events;
                tasks += projection.tasks.len();
                divergences.extend(found);
            }
            let seconds = clock.elapsed().as_secs_f64();
            let report = serde_json::json!({
                "cells": reports,
                "events": events,
                "seconds": seconds,
                "events_per_second": if seconds > 0.0 { events as f64 / seconds } else { 0.0 },
                "tasks": tasks,
                "divergences": divergences,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !divergences.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Action::Simulate { .. } => Ok(()),
        Action::VerifyProofs { cell } => {
            let cells = audited_cells(&pool, &config, cell.as_deref()).await?;
            let mut valid = true;
            let mut verdicts = Vec::new();
            for cell in &cells {
                let verdict = verify_stored_chain(&pool, cell.as_str(), config.grid.proof_difficulty).await?;
                valid &= verdict.valid;
                let mut verdict = serde_json::to_value(&verdict)?;
                verdict["cell"] = serde_json::json!(cell);
                verdicts.push(verdict);
            }
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "valid": valid, "cells": verdicts }))?);
            if !valid {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// The cells an audit reads: the one named (which must be the grid's or have data), else every
/// cell of `GRID_CELLS` and every cell PostgreSQL has a writer for.
async fn audited_cells(
    pool: &sqlx::PgPool,
    config: &OrchestratorConfig,
    named: Option<&str>,
) -> anyhow::Result<Vec<CellName>> {
    let mut cells: Vec<CellName> = config.grid.cells.iter().map(|cell| cell.name.clone()).collect();
    let written: Vec<String> =
        sqlx::query_scalar!("select cell_id from writer order by cell_id").fetch_all(pool).await?;
    for name in written {
        if let Ok(cell) = CellName::parse(&name)
            && !cells.contains(&cell)
        {
            cells.push(cell);
        }
    }
    match named {
        None => Ok(cells),
        Some(name) => {
            let cell = CellName::parse(name).map_err(|reason| anyhow::anyhow!("--cell: {reason}"))?;
            if !cells.contains(&cell) {
                let known: Vec<&str> = cells.iter().map(CellName::as_str).collect();
                anyhow::bail!("--cell {cell}: not a cell of this grid (its cells: {})", known.join(", "));
            }
            Ok(vec![cell])
        }
    }
}

/// Explores seeds in chunks, saying how far it got; the exit code.
fn simulate(first: u64, seeds: u64, steps: usize) -> i32 {
    use grid_orchestrator::simulation::{Settings, Stats, describe_failure, explore};
    let settings = Settings::default();
    println!("simulating seeds {first}..{} with {steps} operations each", first.saturating_add(seeds));
    let clock = std::time::Instant::now();
    let (mut stats, mut done, mut failed) = (Stats::default(), 0, 0);
    let chunk = 10.max(seeds / 20);
    while done < seeds {
        let count = chunk.min(seeds - done);
        let exploration = explore(first + done, count, steps, &settings);
        stats += exploration.stats;
        done += count;
        for outcome in &exploration.failures {
            failed += 1;
            if let Some(failure) = &outcome.failure {
                println!("{}", describe_failure(outcome.seed, steps, failure, &settings));
            }
        }
        let seconds = clock.elapsed().as_secs_f64();
        println!(
            "{done}/{seeds} seeds, {} operations ({:.0}/s), {} commits, {} takeovers, {} Redis losses, {} failed",
            stats.operations,
            stats.operations as f64 / seconds.max(1e-9),
            stats.commits,
            stats.takeovers,
            stats.redis_losses,
            failed
        );
    }
    println!(
        "done in {:.1} s: {} operations, {} writer steps, {} messages, {} events; {} tasks submitted: {} completed, \
         {} failed, {} cancelled, {} rejected; {} credits, {} node deaths, {} crashes, {} quarantined, {:.0} open tasks \
         per commit; {} histories in a cell other than the default ({} organisation-level commands misrouted to it, \
         {} revocations forwarded); {failed} seeds failed",
        clock.elapsed().as_secs_f64(),
        stats.operations,
        stats.writer_steps,
        stats.messages,
        stats.events,
        stats.submitted,
        stats.completed,
        stats.failed,
        stats.cancelled,
        stats.rejected,
        stats.credited,
        stats.node_deaths,
        stats.crashes,
        stats.quarantined,
        stats.open_at_commits as f64 / stats.commits.max(1) as f64,
        stats.away_histories,
        stats.misrouted_organisation_commands,
        stats.forwarded_revocations
    );
    i32::from(failed > 0)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
