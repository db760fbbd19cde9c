//! The writer's lease under real faults, with real orchestrator processes: `kill -9` of the
//! writer under load, and a crash between a batch's commit and its acknowledgement (an injected
//! abort). The standby takes over; no task is lost, none is assigned twice for one attempt,
//! none is credited twice, and the event archive replays into the tables.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::processes::{Orchestrator, database_url};
use common::{eventually, spawn_gateway, thermal_task};
use futures_util::StreamExt;
use serde_json::Value;
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(30);

/// The settings the processes share: the test's database and namespace.
fn process_settings(system: &common::System, pool: &PgPool) -> HashMap<String, String> {
    let mut settings = system.settings.clone();
    settings.insert("DATABASE_URL".to_owned(), database_url(pool));
    settings
}

async fn submit(system: &Arc<common::System>, api_key: &str, count: usize) -> Vec<String> {
    futures_util::stream::iter(0..count)
        .map(|_| {
            let (system, api_key) = (system.clone(), api_key.to_owned());
            async move {
                let response = system.post("/v1/tasks", &api_key, thermal_task()).await;
                assert_eq!(response.status(), 202);
                let body: Value = response.json().await.unwrap();
                body["task_id"].as_str().unwrap().to_owned()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Everything the faults must not break: each task completed once, credited once, assigned
/// once per attempt; no node over its cores; the archive replays into the tables; the chain
/// verifies.
async fn assert_nothing_lost_or_done_twice(pool: &PgPool, tasks: i64) {
    assert_eq!(count(pool, "select count(*) from task where status = 'completed'").await, tasks);
    assert_eq!(count(pool, "select count(*) from event where event_type = 'TaskAccepted'").await, tasks);
    assert_eq!(count(pool, "select count(*) from event where event_type = 'TaskCompleted'").await, tasks);
    let twice = count(
        pool,
        "select count(*) from (select 1 from event where event_type = 'TaskAssigned'
             group by envelope -> 'payload' ->> 'task_id', envelope -> 'payload' ->> 'attempt' having count(*) > 1) d",
    )
    .await;
    assert_eq!(twice, 0, "no (task, attempt) assigned twice");
    assert_eq!(count(pool, "select count(*) from credit_entry where account = 'node'").await, tasks, "credited once");
    assert_eq!(count(pool, "select count(distinct task_id) from proof_leaf").await, tasks);
    common::all_credits_sealed(pool).await;
    let (most, _) = common::most_tasks_a_node_held(pool).await;
    assert!(most <= 2, "a node held {most} tasks on 2 cores");
    let (_, divergences) = grid_orchestrator::replay::audit(pool, 1).await.unwrap();
    assert_eq!(divergences, vec![]);
    let chain = grid_orchestrator::ledger::verify_stored_chain(pool, 8).await.unwrap();
    assert!(chain.valid && chain.leaves == tasks as u64, "{chain:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_writer_killed_under_load_is_replaced_by_its_standby_and_nothing_is_lost_or_done_twice(pool: PgPool) {
    let system = Arc::new(spawn_gateway(pool.clone(), &[]).await);
    let settings = process_settings(&system, &pool);
    let mut writer = Orchestrator::start("kill9-writer", &settings, &[]);
    writer.wait_for_role("writer", WAIT).await;
    let standby = Orchestrator::start("kill9-standby", &settings, &[]);
    standby.wait_for_role("standby", WAIT).await;
    let (_, api_key) = system.organization("Unkillable").await;
    let (stop, fleet) = system.fleet(&api_key, 10, 2, 1.0, Duration::from_millis(5)).await;

    let load = {
        let (system, api_key) = (system.clone(), api_key.clone());
        tokio::spawn(async move { submit(&system, &api_key, 1500).await })
    };
    eventually(WAIT, "some tasks to complete", || async {
        (count(&pool, "select count(*) from task where status = 'completed'").await >= 300).then_some(())
    })
    .await;
    let killed_at = Instant::now();
    writer.kill();
    let readiness = standby.wait_for_role("writer", WAIT).await;
    let takeover = killed_at.elapsed();
    assert_eq!(readiness["epoch"], 2, "{readiness}");
    assert!(takeover < WAIT);
    let submitted = load.await.unwrap();
    assert_eq!(submitted.len(), 1500, "every submission was accepted, before, during and after the takeover");
    eventually(Duration::from_secs(240), "every task to complete", || async {
        (count(&pool, "select count(*) from task where status = 'completed'").await == 1500).then_some(())
    })
    .await;
    assert_nothing_lost_or_done_twice(&pool, 1500).await;
    stop.send(true).unwrap();
    fleet.join().await;
    drop(standby);
    Arc::into_inner(system).expect("the load is done").stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_batch_redelivered_after_a_crash_between_commit_and_acknowledgement_changes_nothing(pool: PgPool) {
    let system = Arc::new(spawn_gateway(pool.clone(), &[]).await);
    let settings = process_settings(&system, &pool);
    // The writer aborts right after its 40th commit with messages: committed, not published,
    // not acknowledged.
    let mut writer =
        Orchestrator::start("fault-writer", &settings, &[("GRID_FAULT_INJECTION", "abort-after-commit:40")]);
    writer.wait_for_role("writer", WAIT).await;
    let standby = Orchestrator::start("fault-standby", &settings, &[]);
    standby.wait_for_role("standby", WAIT).await;
    let (_, api_key) = system.organization("Crash-consistent").await;
    let (stop, fleet) = system.fleet(&api_key, 10, 2, 1.0, Duration::from_millis(5)).await;
    let submitted = submit(&system, &api_key, 400).await;
    let status = writer.exited(Duration::from_secs(60)).await;
    #[cfg(unix)]
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(6), "aborted (SIGABRT): {status}");
    let readiness = standby.wait_for_role("writer", WAIT).await;
    assert_eq!(readiness["epoch"], 2, "{readiness}");
    eventually(Duration::from_secs(120), "every task to complete", || async {
        (count(&pool, "select count(*) from task where status = 'completed'").await == submitted.len() as i64)
            .then_some(())
    })
    .await;
    assert_nothing_lost_or_done_twice(&pool, submitted.len() as i64).await;
    // The aborted batch's entries were delivered again and acknowledged without effect.
    let log = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-logs/fault-writer.log"),
    )
    .unwrap();
    assert!(log.contains("fault injection: aborting between commit and acknowledgement"), "{log}");
    let mut redis = system.redis.clone();
    for stream in ["commands", "reports"] {
        let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(format!("{}:{stream}", system.namespace))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(groups.groups[0].pending, 0, "{stream}: everything acknowledged");
    }
    stop.send(true).unwrap();
    fleet.join().await;
    drop(standby);
    Arc::into_inner(system).expect("the load is done").stop().await;
}
