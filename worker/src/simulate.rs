//! A fleet of simulated Raspberry Pis in one process, for the demo and for load: each registers
//! through the API, then runs a real agent (real computations, real reports) with a simulated
//! solar curve.

use std::time::Duration;

use grid_shared::ids::NodeId;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::agent::{AgentConfig, Transport, run_agent};
use crate::client::{ClientError, GatewayClient, NodeDeclaration};
use crate::power::PowerModel;
use crate::solar::SolarSource;

const LOCATIONS: [&str; 6] = ["Bruxelles", "Liège", "Namur", "Gent", "Antwerpen", "Charleroi"];

#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub gateway: String,
    pub api_key: String,
    pub nodes: usize,
    pub cpu_cores: u16,
    /// The share of nodes with panels (the first ones).
    pub solar_fraction: f64,
    pub peak_watts: f64,
    /// A simulated day lasts this long; `None` follows the wall clock.
    pub day_seconds: Option<f64>,
    /// Constant solar watts for the nodes with panels instead of the daily curve.
    pub constant_solar_watts: Option<f64>,
    pub heartbeat_every: Duration,
    /// Each task lasts at least this long (a simulated Pi's speed).
    pub min_task_duration: Duration,
    /// Answer every task at once with a stand-in result (control-plane benches only).
    pub instant_results: bool,
    /// The carbon zone of the nodes; `None`: the grid's default zone.
    pub zone: Option<String>,
    /// The cell the nodes join; `None`: the grid's choice.
    pub cell: Option<String>,
    /// How the nodes talk to the gateway: one connection each (the default), or HTTP.
    pub transport: Transport,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedNode {
    pub node_id: NodeId,
    pub name: String,
    pub has_solar: bool,
}

pub struct Fleet {
    pub nodes: Vec<SimulatedNode>,
    handles: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Waits for every agent to stop (after the shutdown signal).
    pub async fn join(self) {
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

/// Registers `config.nodes` nodes and starts their agents.
pub async fn launch(config: FleetConfig, shutdown: watch::Receiver<bool>) -> Result<Fleet, ClientError> {
    let client = GatewayClient::new(&config.gateway)?;
    let solar_nodes = (config.nodes as f64 * config.solar_fraction).round() as usize;
    let mut nodes = Vec::with_capacity(config.nodes);
    let mut handles = Vec::with_capacity(config.nodes);
    for index in 0..config.nodes {
        let has_solar = index < solar_nodes;
        let declaration = NodeDeclaration {
            name: format!("sim-pi-{:03}", index + 1),
            cpu_cores: config.cpu_cores,
            has_solar,
            location: LOCATIONS[index % LOCATIONS.len()].to_owned(),
            zone: config.zone.clone(),
            cell: config.cell.clone(),
        };
        let registration = client.register(&config.api_key, &declaration).await?;
        let solar = match (has_solar, config.constant_solar_watts) {
            (false, _) => SolarSource::Constant(0.0),
            (true, Some(watts)) => SolarSource::Constant(watts),
            // Nodes spread over an hour and a half of longitude, as it were.
            (true, None) => SolarSource::Curve {
                peak_watts: config.peak_watts,
                day_seconds: config.day_seconds,
                phase_hours: (index % 7) as f64 * 0.25,
                started: std::time::Instant::now(),
            },
        };
        let agent = AgentConfig {
            client: client.clone(),
            node_id: registration.node_id,
            token: registration.token,
            cpu_cores: config.cpu_cores,
            heartbeat_every: config.heartbeat_every,
            solar,
            power: PowerModel::default(),
            measure_cpu: false,
            min_task_duration: config.min_task_duration,
            instant_results: config.instant_results,
            transport: config.transport,
        };
        nodes.push(SimulatedNode { node_id: registration.node_id, name: declaration.name, has_solar });
        handles.push(tokio::spawn(run_agent(agent, shutdown.clone())));
    }
    info!(nodes = nodes.len(), solar_nodes, "simulated fleet started");
    Ok(Fleet { nodes, handles })
}
