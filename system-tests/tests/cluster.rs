//! The grid on a Redis Cluster of three masters (`REDIS_CLUSTER_NODES`), started by the test:
//! nodes register, heartbeat and take their tasks through their channels, tasks complete and are
//! credited, the event stream follows; every key of the cell hashes to one slot, and no master
//! ever refused a command for crossing slots.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::cluster::LocalCluster;
use common::{OPERATOR_KEY, eventually, spawn_system, thermal_task};
use futures_util::StreamExt;
use serde_json::Value;
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn a_grid_on_a_redis_cluster_completes_its_tasks_with_its_cells_keys_in_one_slot(pool: PgPool) {
    let cluster = LocalCluster::start().await;
    let nodes = cluster.nodes();
    let system = spawn_system(pool.clone(), &[("REDIS_CLUSTER_NODES", &nodes), ("GRID_CELLS", "be-north:BE")]).await;
    let (_, api_key) = system.organization("Clustered").await;
    let (stop, fleet) = system.fleet(&api_key, 6, 2, 0.5, Duration::ZERO).await;
    // The live event stream, read through the cluster by the gateway.
    let events = system
        .http
        .get(system.url("/v1/events?tail=true"))
        .bearer_auth(OPERATOR_KEY)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let mut events = events.bytes_stream();
    for _ in 0..40 {
        let accepted = system.post("/v1/tasks", &api_key, thermal_task()).await;
        assert_eq!(accepted.status(), 202);
    }
    eventually(Duration::from_secs(60), "every task to complete", || async {
        let done: i64 =
            sqlx::query_scalar("select count(*) from task where status = 'completed'").fetch_one(&pool).await.ok()?;
        (done == 40).then_some(())
    })
    .await;
    let credited: i64 =
        sqlx::query_scalar("select count(distinct task_id) from proof_leaf").fetch_one(&pool).await.unwrap();
    assert_eq!(credited, 40, "every task credited once in the proof chain");
    let first = tokio::time::timeout(Duration::from_secs(10), events.next()).await.expect("an event streams");
    assert!(first.is_some_and(|chunk| chunk.is_ok()));
    // What the gateway answers about its cell comes from the cluster too.
    let cells: Value = system.get("/v1/cells", &api_key).await.json().await.unwrap();
    assert_eq!(cells["cells"][0]["status"], "live", "{cells}");
    stop.send(true).unwrap();
    fleet.join().await;

    // Every key of the namespace is on one master, in one slot: the cell's tag.
    let tag = format!("{{{}:be-north}}", system.namespace);
    let mut holders = HashSet::new();
    let mut slots = HashSet::new();
    let mut count = 0;
    for port in &cluster.ports {
        let mut master = cluster.master(*port).await;
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("*{}*", system.namespace)).query_async(&mut master).await.unwrap();
        for key in &keys {
            assert!(key.starts_with(&tag), "{key} is not under the cell's tag {tag}");
            let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut master).await.unwrap();
            slots.insert(slot);
            holders.insert(*port);
            count += 1;
        }
        let errors: String = redis::cmd("INFO").arg("errorstats").query_async(&mut master).await.unwrap();
        assert!(!errors.contains("CROSSSLOT"), "master {port} refused a command across slots: {errors}");
    }
    assert!(count > 20, "the grid wrote its keys to the cluster ({count})");
    assert_eq!(slots.len(), 1, "the cell's keys are in one slot: {slots:?}");
    assert_eq!(holders.len(), 1, "and so on one master: {holders:?}");
    system.stop().await;
}
