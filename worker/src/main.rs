//! `worker register`, `worker run`, `worker simulate`, and for demos `worker organization`,
//! `worker submit`.

use std::time::Duration;

use clap::{Parser, Subcommand};
use grid_shared::ids::NodeId;
use grid_worker::agent::{AgentConfig, Transport, run_agent};
use grid_worker::client::{GatewayClient, NodeDeclaration};
use grid_worker::load::{Driver, Progress};
use grid_worker::power::PowerModel;
use grid_worker::simulate::{FleetConfig, launch};
use grid_worker::solar::SolarSource;
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "worker", about = "KoproGo Grid worker: runs tasks on a node")]
struct Cli {
    /// The gateway's base URL.
    #[arg(long, env = "GRID_GATEWAY_URL", default_value = "http://127.0.0.1:8081", global = true)]
    gateway: String,
    #[command(subcommand)]
    command: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Register this node with an organisation API key; prints the node id and token (once).
    Register {
        #[arg(long, env = "GRID_API_KEY")]
        api_key: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 4)]
        cores: u16,
        #[arg(long)]
        solar: bool,
        #[arg(long, default_value = "Bruxelles")]
        location: String,
        /// The carbon zone of the node's electricity (one of the grid's zones); absent, the
        /// grid's default zone.
        #[arg(long)]
        zone: Option<String>,
        /// The cell the node joins (one of `GET /v1/cells`); absent, its zone's cell, else the
        /// grid's default cell.
        #[arg(long)]
        cell: Option<String>,
    },
    /// Run this node: heartbeats, task channel, computations, reports.
    Run {
        #[arg(long, env = "GRID_NODE_ID")]
        node_id: NodeId,
        #[arg(long, env = "GRID_NODE_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long, default_value_t = 4)]
        cores: u16,
        /// Constant solar production in watts; omit to simulate a daily curve.
        #[arg(long)]
        solar_watts: Option<f64>,
        /// The simulated curve's peak, when `--solar-watts` is not given.
        #[arg(long, default_value_t = 0.0)]
        peak_watts: f64,
        /// Seconds between heartbeats.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// `connection`: one WebSocket for the task channel, heartbeats and reports; `http`: the
        /// channel's event stream and a request per heartbeat and per report.
        #[arg(long, value_enum, default_value_t = Transport::Connection)]
        transport: Transport,
    },
    /// Create an organisation with the operator key; prints its id and API key (once).
    Organization {
        #[arg(long, env = "GRID_OPERATOR_KEY", hide_env_values = true)]
        operator_key: String,
        #[arg(long, default_value = "Demo copropriété")]
        name: String,
    },
    /// Submit sample tasks of both kinds, wait for them, and print the throughput.
    Submit {
        #[arg(long, env = "GRID_API_KEY", hide_env_values = true)]
        api_key: String,
        #[arg(long, default_value_t = 100)]
        tasks: usize,
        /// Submit in batches of this many tasks (`POST /v1/tasks/batch`, 1 to 1,000); 1 sends
        /// one request per task.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
        batch: u16,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Exit with an error unless every task completed (the demo in CI).
        #[arg(long)]
        require_all: bool,
    },
    /// Run a fleet of simulated nodes in this process.
    Simulate {
        #[arg(long, env = "GRID_API_KEY")]
        api_key: String,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 4)]
        cores: u16,
        #[arg(long, default_value_t = 0.6)]
        solar_fraction: f64,
        #[arg(long, default_value_t = 500.0)]
        peak_watts: f64,
        /// Length of a simulated day in seconds (0 follows the wall clock).
        #[arg(long, default_value_t = 600.0)]
        day_seconds: f64,
        #[arg(long, default_value_t = 2000)]
        heartbeat_ms: u64,
        /// Each simulated task lasts at least this long, as on a real Pi.
        #[arg(long, default_value_t = 0)]
        min_task_ms: u64,
        /// Constant sun on the nodes with panels, in watts, instead of the daily curve.
        #[arg(long)]
        constant_solar_watts: Option<f64>,
        /// Answer each task at once with the SHA-256 of its input instead of computing it, so
        /// that a bench measures the control plane (the nodes' results are then not real).
        #[arg(long)]
        instant_results: bool,
        /// The carbon zone of the nodes' electricity (one of the grid's zones); absent, the
        /// grid's default zone.
        #[arg(long)]
        zone: Option<String>,
        /// The cell the nodes join (one of `GET /v1/cells`); absent, their zone's cell, else the
        /// grid's default cell.
        #[arg(long)]
        cell: Option<String>,
        /// `connection`: one WebSocket per node; `http`: an event stream and a request per
        /// heartbeat and per report.
        #[arg(long, value_enum, default_value_t = Transport::Connection)]
        transport: Transport,
    },
}

/// One line on failure (the cause chain), not a backtrace: `RUST_BACKTRACE` is for panics.
fn main() {
    if let Err(error) = run() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    grid_shared::logging::init().map_err(anyhow::Error::msg)?;
    let cli = Cli::parse();
    // One thread: a Pi's cores are for the computations (run on the blocking pool).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = stop.send(true);
        });
        match cli.command {
            Action::Register { api_key, name, cores, solar, location, zone, cell } => {
                let client = GatewayClient::new(&cli.gateway)?;
                let declaration = NodeDeclaration { name, cpu_cores: cores, has_solar: solar, location, zone, cell };
                let registration = client.register(&api_key, &declaration).await?;
                println!("{}", serde_json::to_string_pretty(&registration)?);
                eprintln!(
                    "keep the token: it is shown once. Run with: worker run --node-id {} --token <token>",
                    registration.node_id
                );
            }
            Action::Organization { operator_key, name } => {
                let created = Driver::new(&cli.gateway).create_organization(&operator_key, &name).await?;
                println!("{}", serde_json::to_string_pretty(&created)?);
            }
            Action::Submit { api_key, tasks, batch, timeout, require_all } => {
                let tell = |progress: Progress| {
                    let waiting = if progress.queued > 0 {
                        format!(
                            "; {} queued (waiting for a free core, or, deferrable, for a node in the sun)",
                            progress.queued
                        )
                    } else {
                        String::new()
                    };
                    eprintln!(
                        "  {:>4} s: {} completed, {} on nodes{waiting}",
                        progress.seconds, progress.completed, progress.on_nodes
                    );
                };
                let driver = Driver::new(&cli.gateway);
                let report = driver
                    .submit_samples(&api_key, tasks, usize::from(batch), Duration::from_secs(timeout), tell)
                    .await?;
                println!(
                    "{} submitted, {} completed, {} failed or rejected, in {:.2} s: {:.1} tasks/s",
                    report.submitted,
                    report.completed,
                    report.failed_or_rejected,
                    report.seconds,
                    report.tasks_per_second()
                );
                if require_all && report.completed < report.submitted {
                    anyhow::bail!(
                        "{} of {} tasks did not complete (see GET /v1/tasks for their reasons)",
                        report.submitted - report.completed,
                        report.submitted
                    );
                }
            }
            Action::Run { node_id, token, cores, solar_watts, peak_watts, interval, transport } => {
                let solar = match solar_watts {
                    Some(watts) => SolarSource::Constant(watts),
                    None => SolarSource::Curve {
                        peak_watts,
                        day_seconds: None,
                        phase_hours: 0.0,
                        started: std::time::Instant::now(),
                    },
                };
                let config = AgentConfig {
                    client: GatewayClient::new(&cli.gateway)?,
                    node_id,
                    token,
                    cpu_cores: cores,
                    heartbeat_every: Duration::from_secs(interval.max(1)),
                    solar,
                    power: PowerModel::default(),
                    measure_cpu: true,
                    min_task_duration: Duration::ZERO,
                    instant_results: false,
                    transport,
                };
                run_agent(config, shutdown).await;
            }
            Action::Simulate {
                api_key,
                nodes,
                cores,
                solar_fraction,
                peak_watts,
                day_seconds,
                heartbeat_ms,
                min_task_ms,
                constant_solar_watts,
                instant_results,
                zone,
                cell,
                transport,
            } => {
                let config = FleetConfig {
                    gateway: cli.gateway,
                    api_key,
                    nodes,
                    cpu_cores: cores,
                    solar_fraction,
                    peak_watts,
                    day_seconds: (day_seconds > 0.0).then_some(day_seconds),
                    constant_solar_watts,
                    heartbeat_every: Duration::from_millis(heartbeat_ms.max(100)),
                    min_task_duration: Duration::from_millis(min_task_ms),
                    instant_results,
                    zone,
                    cell,
                    transport,
                };
                launch(config, shutdown).await?.join().await;
            }
        }
        Ok(())
    })
}
