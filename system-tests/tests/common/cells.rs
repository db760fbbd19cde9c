//! A grid of several cells as this build runs it: gateways that each serve every cell, under one
//! namespace, orchestrator processes writing the cells (`GRID_WRITER_CELLS`), one database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;

use super::processes::{Orchestrator, database_url};
use super::{System, eventually, spawn_gateway};

pub const WAIT: Duration = Duration::from_secs(30);

/// `count` gateways of the grid of `cells` (`GRID_CELLS`, such as `a:BE,b:BE`), all under
/// `namespace`, with `extra` settings: each serves every cell.
pub async fn gateways(
    pool: &PgPool,
    namespace: &str,
    cells: &str,
    count: usize,
    extra: &[(&str, &str)],
) -> Vec<Arc<System>> {
    let mut gateways = Vec::new();
    for _ in 0..count {
        let mut settings = vec![("GRID_NAMESPACE", namespace), ("GRID_CELLS", cells)];
        settings.extend_from_slice(extra);
        gateways.push(Arc::new(spawn_gateway(pool.clone(), &settings).await));
    }
    gateways
}

/// A thermal task that must run in `cell`.
pub fn task_in(cell: &str) -> Value {
    let mut task = super::thermal_task();
    task["cell"] = Value::String(cell.to_owned());
    task
}

/// The orchestrators' settings: the grid's `cells` (`a:BE,b:BE,...`), the test's database and
/// namespace, and what `gateway` was started with.
pub fn process_settings(gateway: &System, pool: &PgPool, cells: &str) -> HashMap<String, String> {
    let mut settings = gateway.settings.clone();
    settings.insert("DATABASE_URL".to_owned(), database_url(pool));
    settings.insert("GRID_CELLS".to_owned(), cells.to_owned());
    settings
}

/// Waits until `orchestrator` reports `role` in `cell`; its entry there.
pub async fn role_in(orchestrator: &Orchestrator, cell: &str, role: &str) -> Value {
    eventually(WAIT, &format!("{} to be {role} of cell {cell}", orchestrator.name), || async {
        let readiness = orchestrator.readiness().await?;
        let entry = readiness["cells"].as_array()?.iter().find(|entry| entry["cell"] == cell)?.clone();
        (entry["role"] == role).then_some(entry)
    })
    .await
}

/// Tasks of `cell` completed so far.
pub async fn completed_in(pool: &PgPool, cell: &str) -> i64 {
    sqlx::query_scalar("select count(*) from task where cell_id = $1 and status = 'completed'")
        .bind(cell)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A simulated fleet and the sender that stops it (as [`System::fleet`] gives them).
pub type FleetHandle = (tokio::sync::watch::Sender<bool>, grid_worker::simulate::Fleet);

/// Stops `fleets` and waits for them.
pub async fn stop_fleets(fleets: Vec<FleetHandle>) {
    for (stop, fleet) in fleets {
        stop.send(true).unwrap();
        fleet.join().await;
    }
}

/// Stops the gateways (each removes the namespace's keys), once nothing else holds them.
pub async fn stop_gateways(gateways: Vec<Arc<System>>) {
    for gateway in gateways {
        Arc::into_inner(gateway).expect("nothing else holds the gateway").stop().await;
    }
}
