//! The writer's lease under real faults, with real orchestrator processes: `kill -9` of the
//! writer under load, and a crash between a batch's commit and its acknowledgement (an injected
//! abort). The standby takes over; no task is lost, none is assigned twice for one attempt,
//! none is credited twice, and the event archive replays into the tables.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::processes::{BusyCore, Orchestrator, WorkerFleet, database_url};
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
    let (_, divergences) =
        grid_orchestrator::replay::audit(pool, &grid_shared::cells::CellName::default(), 1).await.unwrap();
    assert_eq!(divergences, vec![]);
    let chain = grid_orchestrator::ledger::verify_stored_chain(pool, "main", 8).await.unwrap();
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
            .arg(format!("{}:{stream}", system.keys().tag()))
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

/// The crash loop an operator met (issue 17): a fleet dies (`kill -9`) holding assignments on a
/// machine with a core kept busy, while its writer is frozen, so that every node's expiry and
/// every start lease fall due in the same round when it wakes. Before the fix, the expiry took a
/// task back and the lease, handed out in the same round, took it back again from no node: the
/// writer panicked, and so did every standby that took over from the same rows. Now each timer
/// acts only on the state and attempt it was set for: the writer goes on, a new fleet comes, the
/// writer is killed, the standby takes over, and every task completes once.
#[sqlx::test(migrations = "../migrations")]
async fn a_fleet_killed_holding_assignments_crashes_no_writer_and_every_task_completes(pool: PgPool) {
    let _busy = BusyCore::start();
    let system = Arc::new(spawn_gateway(pool.clone(), &[("GRID_NODE_TTL_MS", "1500")]).await);
    let settings = process_settings(&system, &pool);
    let timers = [("GRID_NODE_TTL_MS", "1500"), ("GRID_START_LEASE_MS", "1500"), ("GRID_REQUEUE_BACKOFF_MS", "50")];
    let mut writer = Orchestrator::start("crash-loop-writer", &settings, &timers);
    writer.wait_for_role("writer", WAIT).await;
    let mut standby = Orchestrator::start("crash-loop-standby", &settings, &timers);
    standby.wait_for_role("standby", WAIT).await;
    let (_, api_key) = system.organization("Neighbourhood").await;
    // Tasks that take a minute: the fleet holds its assignments when it dies.
    let mut doomed = WorkerFleet::start("crash-loop-doomed-fleet", &system.base, &api_key, 5, 2, 60_000);
    eventually(WAIT, "the doomed fleet's nodes to be registered", || async {
        (count(&pool, "select count(*) from node").await == 5).then_some(())
    })
    .await;
    let tasks = submit(&system, &api_key, 10).await;
    eventually(WAIT, "every task to be on a node", || async {
        let on_nodes = count(&pool, "select count(*) from task where status in ('assigned', 'running')").await;
        (on_nodes == 10).then_some(())
    })
    .await;
    writer.pause();
    doomed.kill();
    // Frozen, the writer lets the nodes' live state expire and the start leases pass: nothing
    // to wait on but the clock (1.5 s each, with margin for the busy core).
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    writer.resume();
    eventually(WAIT, "the dead fleet's tasks to be taken back", || async {
        let taken_back = count(&pool, "select count(*) from event where event_type = 'TaskRequeued'").await;
        (taken_back >= 10).then_some(())
    })
    .await;
    assert!(writer.is_running(), "the writer goes on: {}", writer.log());
    let readiness = writer.wait_for_role("writer", WAIT).await;
    assert_eq!(readiness["epoch"], 1, "it never lost its lease: {readiness}");
    let twice = count(
        &pool,
        "select count(*) from (select 1 from event where event_type = 'TaskRequeued'
             group by envelope -> 'payload' ->> 'task_id', envelope -> 'payload' ->> 'attempt' having count(*) > 1) d",
    )
    .await;
    assert_eq!(twice, 0, "no assignment taken back twice");

    let (stop, fleet) = system.fleet(&api_key, 5, 2, 1.0, Duration::ZERO).await;
    writer.kill();
    let readiness = standby.wait_for_role("writer", WAIT).await;
    assert_eq!(readiness["epoch"], 2, "{readiness}");
    eventually(Duration::from_secs(120), "every task to complete", || async {
        (count(&pool, "select count(*) from task where status = 'completed'").await == tasks.len() as i64).then_some(())
    })
    .await;
    assert_nothing_lost_or_done_twice(&pool, tasks.len() as i64).await;
    assert!(standby.is_running());
    for (name, log) in [("writer", writer.log()), ("standby", standby.log())] {
        assert!(!log.contains("panicked"), "the {name} panicked: {log}");
        assert!(!log.contains("invariant violated"), "the {name} met state it did not expect: {log}");
    }
    stop.send(true).unwrap();
    fleet.join().await;
    drop(standby);
    Arc::into_inner(system).expect("the load is done").stop().await;
}

/// A row that contradicts itself (edited by hand, a bad restore: here an assigned task whose
/// attempt was lost, so no report could be fenced) is not trusted by the writer that takes
/// over: the task is quarantined with the problem, for an operator to see in the API and in
/// the metrics, and the writer goes on with everything else.
#[sqlx::test(migrations = "../migrations")]
async fn a_task_row_that_contradicts_itself_is_quarantined_at_takeover_and_the_rest_goes_on(pool: PgPool) {
    let system = Arc::new(spawn_gateway(pool.clone(), &[]).await);
    let settings = process_settings(&system, &pool);
    let mut writer = Orchestrator::start("quarantine-writer", &settings, &[]);
    writer.wait_for_role("writer", WAIT).await;
    let (_, api_key) = system.organization("Careful").await;
    let node = system.manual_node(&api_key, 1, 300.0).await;
    let mut channel = system.channel(&node, None).await;
    let task_id = submit(&system, &api_key, 1).await.remove(0);
    assert_eq!(channel.next(WAIT).await.event.as_deref(), Some("TASK:ASSIGNED"));
    writer.kill();
    sqlx::query("update task set attempts = 0 where task_id = $1::uuid").bind(&task_id).execute(&pool).await.unwrap();
    let taker = Orchestrator::start("quarantine-taker", &settings, &[]);
    let readiness = taker.wait_for_role("writer", WAIT).await;
    assert_eq!(readiness["epoch"], 2, "{readiness}");
    let task = eventually(WAIT, "the task to be quarantined", || async {
        let task = system.task(&api_key, &task_id).await;
        (task["status"] == "quarantined").then_some(task)
    })
    .await;
    assert_eq!(task["reason"]["code"], "quarantined", "{task}");
    assert!(task["reason"]["problem"].as_str().unwrap().contains("no attempt"), "{task}");
    assert!(task["reason_text"].as_str().unwrap().starts_with("quarantined: "), "{task}");
    let listed: Value = system.get("/v1/tasks?status=quarantined", &api_key).await.json().await.unwrap();
    assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(count(&pool, "select count(*) from event where event_type = 'TaskQuarantined'").await, 1);
    let metrics = reqwest::get(format!("http://{}/metrics", taker.admin)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("grid_tasks_quarantined_total 1"), "{metrics}");
    assert!(metrics.contains("grid_invariant_violations_total 0"), "{metrics}");

    // The grid goes on: the node's core is free again, and a new task runs there.
    let next = submit(&system, &api_key, 1).await.remove(0);
    let assigned = channel.next(WAIT).await;
    let data: Value = serde_json::from_str(&assigned.data).unwrap();
    assert_eq!((assigned.event.as_deref(), data["task_id"].as_str()), (Some("TASK:ASSIGNED"), Some(next.as_str())));
    let done: Value = system.report(&node, common::completion(&next, 1, 0.000001, 0.0)).await.json().await.unwrap();
    assert_eq!(system.settled(done["command_id"].as_str().unwrap(), &node.token).await["status"], "applied");
    assert_eq!(system.task(&api_key, &task_id).await["status"], "quarantined", "never scheduled again");
    assert!(!taker.log().contains("panicked"));
    drop(taker);
    Arc::into_inner(system).expect("nothing else holds it").stop().await;
}
