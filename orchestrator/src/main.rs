//! `orchestrator [run]`, `orchestrator migrate`, `orchestrator verify-proofs`, `orchestrator replay`,
//! `orchestrator simulate`.

use clap::{Parser, Subcommand};
use grid_orchestrator::app::{MIGRATOR, run};
use grid_orchestrator::config::OrchestratorConfig;
use grid_orchestrator::ledger::verify_stored_chain;
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
    /// Verify the green-proof chain; exits 1 at the first broken link.
    VerifyProofs,
    /// Rebuild every projection from the events alone and diff it against the tables; exits 1
    /// when anything diverges.
    Replay {
        /// Where the events are read: the PostgreSQL archive or the `{ns}:events` stream.
        #[arg(long, value_enum, default_value_t = Source::Postgres)]
        source: Source,
        /// The first event (seq) to replay; from a later one, only the tasks seen are compared.
        #[arg(long, default_value_t = 1)]
        from: i64,
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
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&config.database_url).await?;
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
        Action::Replay { source, from } => {
            let clock = std::time::Instant::now();
            // The grid may be running: the events and the tables are read in one snapshot.
            let mut snapshot = grid_orchestrator::replay::Snapshot::take(&pool).await?;
            let projection = match source {
                Source::Postgres => snapshot.replay(&pool, from).await?,
                Source::Redis => {
                    let mut conn = grid_orchestrator::store::streams::redis(&config.redis, 1)?.get().await?;
                    let events = config.grid.keys.events();
                    grid_orchestrator::replay::from_redis(&mut conn, &events, from, snapshot.last_seq).await?
                }
            };
            let seconds = clock.elapsed().as_secs_f64();
            let divergences = snapshot.diff(&projection, from <= 1).await?;
            let report = serde_json::json!({
                "events": projection.events,
                "last_seq": projection.last_seq,
                "seconds": seconds,
                "events_per_second": if seconds > 0.0 { projection.events as f64 / seconds } else { 0.0 },
                "tasks": projection.tasks.len(),
                "divergences": divergences,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !divergences.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Action::Simulate { .. } => Ok(()),
        Action::VerifyProofs => {
            let verdict = verify_stored_chain(&pool, config.grid.proof_difficulty).await?;
            println!("{}", serde_json::to_string_pretty(&verdict)?);
            if !verdict.valid {
                std::process::exit(1);
            }
            Ok(())
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
         per commit; {failed} seeds failed",
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
        stats.open_at_commits as f64 / stats.commits.max(1) as f64
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
