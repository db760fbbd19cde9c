//! The grid's cells as a user sees them: `GET /v1/cells` lists the cell with its writer, epoch,
//! backlog, nodes, free cores, sun and intensity from its writer's summary; `/readyz` says the
//! process's role per cell; every key the grid wrote is under the cell's hash tag.

mod common;

use std::time::Duration;

use common::{OPERATOR_KEY, eventually, spawn_system};
use serde_json::Value;
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(20);

#[sqlx::test(migrations = "../migrations")]
async fn the_cell_lists_its_writer_and_what_its_writer_last_saw(pool: PgPool) {
    let mut system = spawn_system(pool, &[("GRID_CELLS", "be-north:BE")]).await;
    let (_, api_key) = system.organization("Cellular").await;
    let node = system.manual_node(&api_key, 4, 500.0).await;
    // Its writer publishes the node it sees, in the sun, with its four cores free.
    let cell: Value = eventually(WAIT, "the cell's summary to show the node", || async {
        let cells: Value = system.get("/v1/cells", &api_key).await.json().await.ok()?;
        let cell = cells["cells"][0].clone();
        (cell["live_nodes"] == 1 && cell["status"] == "live").then_some(cell)
    })
    .await;
    assert_eq!(cell["cell"], "be-north");
    assert_eq!(cell["zone"], "BE");
    assert_eq!(cell["default"], true);
    assert_eq!(cell["free_cores"], 4);
    assert_eq!(cell["sunny_nodes"], 1);
    assert!(cell["solar_surplus_watts"].as_f64().unwrap() > 0.0, "{cell}");
    assert_eq!(cell["writer"]["holder"], "orchestrator-test");
    assert!(cell["writer"]["epoch"].as_i64().unwrap() >= 1);
    assert!(cell["intensity"]["mg_per_kwh"].as_i64().unwrap() > 0, "{cell}");
    assert!(cell["intensity"]["source"].as_str().unwrap().starts_with("file"), "{cell}");
    assert!(cell["summary_age_ms"].as_i64().unwrap() <= 2_000);
    // Its lease is its own row, keyed by the cell (the row of `main`, which a fresh database has,
    // stays untaken), and `GET /v1/cells` shows it.
    let leases: Vec<(String, i64, String)> =
        sqlx::query_as("select cell_id, epoch, holder from writer order by cell_id")
            .fetch_all(&system.pool)
            .await
            .unwrap();
    assert_eq!(
        leases,
        [("be-north".to_owned(), 1, "orchestrator-test".to_owned()), ("main".to_owned(), 0, "none".to_owned())]
    );
    assert_eq!(cell["writer"]["epoch"], 1);
    // The operator sees it too; a node's token is refused.
    assert_eq!(system.get("/v1/cells", OPERATOR_KEY).await.status(), 200);
    assert_eq!(system.get("/v1/cells", &node.token).await.status(), 403);
    // The process says its role in the cell.
    let address = system.status.snapshot().admin_address.expect("the admin endpoint listens");
    let ready: Value = reqwest::get(format!("http://{address}/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!(ready["cells"][0]["cell"], "be-north");
    assert_eq!(ready["cells"][0]["role"], "writer");
    // Every key the grid wrote for this namespace is under the cell's hash tag.
    let all: Vec<String> =
        redis::cmd("KEYS").arg(format!("*{}*", system.namespace)).query_async(&mut system.redis).await.unwrap();
    let tag = format!("{{{}:be-north}}:", system.namespace);
    assert!(!all.is_empty());
    assert!(all.iter().all(|key| key.starts_with(&tag)), "keys outside the cell's tag: {all:?}");
    system.stop().await;
}
