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

/// Three cells on the cluster, written by two orchestrator processes (one writes `a`, the other
/// `b` and `c`), three gateways each serving every cell, each cell's traffic through one of them:
/// tasks complete and are credited in every cell; each cell's keys hash to one slot of their own
/// (but the default cell's, where an idempotency key's cell is kept); a key rotated through the
/// default cell writes its revocation markers in every cell's slot; no master ever refused a
/// command across slots.
#[sqlx::test(migrations = "../migrations")]
async fn three_cells_on_a_redis_cluster_each_keep_their_keys_in_their_own_slot(pool: PgPool) {
    use common::cells::{completed_in, gateways, process_settings, role_in, stop_fleets, stop_gateways, task_in};
    use common::processes::Orchestrator;

    let cluster = LocalCluster::start().await;
    let nodes = cluster.nodes();
    let namespace = common::fresh_namespace();
    let cells = ["a", "b", "c"];
    let gateways = gateways(&pool, &namespace, "a:BE,b:BE,c:BE", 3, &[("REDIS_CLUSTER_NODES", &nodes)]).await;
    let settings = process_settings(&gateways[0], &pool, "a:BE,b:BE,c:BE");
    let first = Orchestrator::start("cluster-a", &settings, &[("GRID_WRITER_CELLS", "a")]);
    let second = Orchestrator::start("cluster-bc", &settings, &[("GRID_WRITER_CELLS", "b,c")]);
    role_in(&first, "a", "writer").await;
    role_in(&second, "b", "writer").await;
    role_in(&second, "c", "writer").await;
    let mut fleets = Vec::new();
    let mut keys = Vec::new();
    for (gateway, cell) in gateways.iter().zip(cells) {
        let (organization, api_key) = gateway.organization(&format!("Clustered {cell}")).await;
        fleets.push(gateway.fleet_in(Some(cell), &api_key, 3, 2, 1.0, Duration::ZERO).await);
        for _ in 0..15 {
            assert_eq!(gateway.post("/v1/tasks", &api_key, task_in(cell)).await.status(), 202);
        }
        keys.push((organization, api_key));
    }
    eventually(Duration::from_secs(60), "every cell's tasks to complete", || async {
        let mut done = true;
        for cell in cells {
            done &= completed_in(&pool, cell).await == 15;
        }
        done.then_some(())
    })
    .await;
    let credited: Vec<(String, i64)> =
        sqlx::query_as("select cell_id, count(distinct task_id) from proof_leaf group by cell_id order by cell_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(credited, [("a".to_owned(), 15), ("b".to_owned(), 15), ("c".to_owned(), 15)]);
    // A rotation in cell a marks the old key in every cell's slot.
    let (organization, old_key) = &keys[0];
    let rotated: Value = gateways[0]
        .post(&format!("/v1/organizations/{organization}/keys"), old_key, serde_json::json!({}))
        .await
        .json()
        .await
        .unwrap();
    let new_key = rotated["api_key"].as_str().unwrap();
    assert_eq!(gateways[0].settled(rotated["command_id"].as_str().unwrap(), new_key).await["status"], "applied");
    assert_eq!(gateways[2].post("/v1/tasks", old_key, thermal_task()).await.status(), 401);
    stop_fleets(fleets).await;

    // Each cell's keys are under its tag, in one slot of its own; nothing crossed slots.
    let mut slots_of: std::collections::HashMap<&str, HashSet<i64>> = std::collections::HashMap::new();
    for port in &cluster.ports {
        let mut master = cluster.master(*port).await;
        let found: Vec<String> =
            redis::cmd("KEYS").arg(format!("*{namespace}*")).query_async(&mut master).await.unwrap();
        for key in &found {
            let cell = cells
                .into_iter()
                .find(|cell| key.starts_with(&format!("{{{namespace}:{cell}}}")))
                .unwrap_or_else(|| panic!("{key} is under no cell's tag"));
            let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut master).await.unwrap();
            slots_of.entry(cell).or_default().insert(slot);
        }
        let errors: String = redis::cmd("INFO").arg("errorstats").query_async(&mut master).await.unwrap();
        assert!(!errors.contains("CROSSSLOT"), "master {port} refused a command across slots: {errors}");
    }
    for cell in cells {
        assert_eq!(slots_of.get(cell).map(HashSet::len), Some(1), "cell {cell}'s keys in one slot: {slots_of:?}");
    }
    drop((first, second));
    stop_gateways(gateways).await;
}
