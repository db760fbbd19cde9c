//! Scheduling end to end over real PostgreSQL and Redis: solar preference, a node killed
//! mid-task, priority under contention, deadlines, cancellation on the node, and two
//! orchestrators racing over one fleet.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{completion, eventually, spawn_system, thermal_task, thermal_task_due};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(20);

async fn submit_all(system: &common::System, api_key: &str, bodies: Vec<Value>) -> Vec<String> {
    futures_util::stream::iter(bodies)
        .map(|body| async move {
            let accepted: Value = system.post("/v1/tasks", api_key, body).await.json().await.unwrap();
            accepted["task_id"].as_str().unwrap().to_owned()
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
}

async fn wait_all_completed(pool: &PgPool, expected: i64, limit: Duration) {
    eventually(limit, "every task to complete", || async {
        let done: i64 =
            sqlx::query_scalar("select count(*) from task where status = 'completed'").fetch_one(pool).await.ok()?;
        (done == expected).then_some(())
    })
    .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn with_slack_at_least_ninety_percent_of_tasks_run_on_solar_nodes(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let (_, api_key) = system.organization("Sunny").await;
    let (stop, fleet) = system.fleet(&api_key, 20, 2, 0.5, Duration::ZERO).await;
    let solar: HashSet<String> =
        fleet.nodes.iter().filter(|node| node.has_solar).map(|node| node.node_id.to_string()).collect();
    assert_eq!(solar.len(), 10);
    submit_all(&system, &api_key, (0..200).map(|_| thermal_task()).collect()).await;
    wait_all_completed(&pool, 200, Duration::from_secs(60)).await;
    let placed: Vec<uuid::Uuid> = sqlx::query_scalar("select node_id from task").fetch_all(&pool).await.unwrap();
    let on_solar = placed.iter().filter(|node_id| solar.contains(&node_id.to_string())).count();
    assert!(on_solar * 100 >= placed.len() * 90, "{on_solar} of {} tasks ran on solar nodes", placed.len());
    stop.send(true).unwrap();
    fleet.join().await;
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_killed_nodes_tasks_are_completed_elsewhere_and_credited_once(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[("GRID_NODE_TTL_MS", "1000"), ("GRID_REQUEUE_BACKOFF_MS", "100")]).await;
    let (_, api_key) = system.organization("Resilient").await;
    // Over HTTP: its computations outlive it and their reports still reach the gateway, late.
    let (kill, victim) = system.fleet_over_http(&api_key, 1, 2, Duration::from_secs(3)).await;
    let victim_id = victim.nodes[0].node_id.to_string();
    let tasks = submit_all(&system, &api_key, vec![thermal_task(), thermal_task()]).await;
    eventually(WAIT, "both tasks running on the victim", || async {
        let running: i64 =
            sqlx::query_scalar("select count(*) from task where status = 'running'").fetch_one(&pool).await.ok()?;
        (running == 2).then_some(())
    })
    .await;
    kill.send(true).unwrap();
    victim.join().await;

    let (stop, rescuer) = system.fleet(&api_key, 1, 2, 1.0, Duration::ZERO).await;
    let rescuer_id = rescuer.nodes[0].node_id.to_string();
    wait_all_completed(&pool, 2, WAIT).await;
    for task_id in &tasks {
        let task = system.task(&api_key, task_id).await;
        assert_eq!(task["node_id"].as_str(), Some(rescuer_id.as_str()));
        assert_eq!(task["attempts"], 2);
    }
    let requeued: i64 = sqlx::query_scalar(
        "select count(*) from event where event_type = 'TaskRequeued'
             and (envelope -> 'payload' -> 'reason')::jsonb = '{\"code\": \"taken_back\", \"cause\": {\"code\": \"node_offline\"}}'
             and envelope -> 'payload' ->> 'node_id' = $1",
    )
    .bind(&victim_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(requeued, 2);
    // Each task's history, as its organisation reads it: both attempts, and why the first ended.
    let history: Value = system.get(&format!("/v1/tasks/{}/events", tasks[0]), &api_key).await.json().await.unwrap();
    // (The rescuer's start report may come after its completion report was applied: a
    // completion needs no start, so the second attempt's `TaskStarted` may be missing.)
    let events: Vec<&Value> = history["events"].as_array().unwrap().iter().collect();
    let attempt = |event: &Value| event["envelope"]["payload"]["attempt"].as_i64();
    let second_start = |event: &&Value| event["type"] == "TaskStarted" && attempt(event) == Some(2);
    let steps: Vec<(&str, Option<i64>)> = events
        .iter()
        .filter(|event| !second_start(event))
        .map(|event| (event["type"].as_str().unwrap(), attempt(event)))
        .collect();
    assert_eq!(
        steps,
        [
            ("TaskAccepted", None),
            ("TaskAssigned", Some(1)),
            ("TaskStarted", Some(1)),
            ("TaskRequeued", Some(1)),
            ("TaskAssigned", Some(2)),
            ("TaskCompleted", Some(2)),
        ],
        "{history}"
    );
    assert!(events.windows(2).all(|pair| pair[0]["seq"].as_i64() < pair[1]["seq"].as_i64()), "in commit order");
    // The completion records its one credit: the rescuer's, with its leaf.
    let completed = &events.last().unwrap()["envelope"]["payload"];
    let credits = completed["credits"]["nodes"].as_array().expect("the completion records its credits");
    assert_eq!(credits.len(), 1, "{completed}");
    assert_eq!(credits[0]["node_id"], completed["node_id"]);
    assert_eq!(credits[0]["leaf"]["attempt"], 2);
    let taken_back = events[3]["reason_text"].as_str().unwrap();
    assert!(taken_back.starts_with("taken back: "), "{taken_back}");
    assert_eq!(history["truncated"], false);
    let (_, stranger) = system.organization("Stranger").await;
    let hidden = system.get(&format!("/v1/tasks/{}/events", tasks[0]), &stranger).await;
    assert_eq!(hidden.status(), 404, "another organisation's task has no history to read");
    // The victim's computations finish after it was killed and report late: refused.
    eventually(WAIT, "the victim's late reports to be refused", || async {
        let refused: i64 = sqlx::query_scalar(
            "select count(*) from processed_message where message_type = 'RPT:TASK_COMPLETED' and outcome = 'rejected'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (refused == 2).then_some(())
    })
    .await;
    let entries: i64 = sqlx::query_scalar("select count(*) from credit_entry").fetch_one(&pool).await.unwrap();
    let proofs: i64 = sqlx::query_scalar("select count(*) from proof_leaf").fetch_one(&pool).await.unwrap();
    assert_eq!((entries, proofs), (4, 2), "two tasks, each credited once");
    stop.send(true).unwrap();
    rescuer.join().await;
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn under_contention_higher_priority_tasks_are_assigned_first(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let (_, api_key) = system.organization("Busy").await;
    let priorities = [1_u8, 9, 5, 3, 7];
    let mut by_task = HashMap::new();
    for priority in priorities {
        let accepted: Value = system
            .post("/v1/tasks", &api_key, thermal_task_due(chrono::Duration::hours(1), priority))
            .await
            .json()
            .await
            .unwrap();
        system.settled(accepted["command_id"].as_str().unwrap(), &api_key).await;
        by_task.insert(accepted["task_id"].as_str().unwrap().to_owned(), priority);
    }
    // One core for five queued tasks: each is assigned when the previous one is done.
    let node = system.manual_node(&api_key, 1, 300.0).await;
    let mut channel = system.channel(&node, None).await;
    let mut served = Vec::new();
    for _ in 0..priorities.len() {
        let event = channel.next(WAIT).await;
        let data: Value = serde_json::from_str(&event.data).unwrap();
        let task_id = data["task_id"].as_str().unwrap().to_owned();
        served.push(by_task[&task_id]);
        let done: Value = system.report(&node, completion(&task_id, 1, 0.000001, 0.0)).await.json().await.unwrap();
        system.settled(done["command_id"].as_str().unwrap(), &node.token).await;
    }
    assert_eq!(served, [9, 7, 5, 3, 1]);
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_task_past_its_deadline_fails_its_node_is_told_and_nothing_is_credited(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let (_, api_key) = system.organization("Late").await;
    let node = system.manual_node(&api_key, 2, 300.0).await;
    let mut channel = system.channel(&node, None).await;
    let accepted: Value = system
        .post("/v1/tasks", &api_key, thermal_task_due(chrono::Duration::seconds(8), 5))
        .await
        .json()
        .await
        .unwrap();
    let task_id = accepted["task_id"].as_str().unwrap();
    assert_eq!(channel.next(WAIT).await.event.as_deref(), Some("TASK:ASSIGNED"));
    system.report(&node, json!({"task_id": task_id, "attempt": 1, "status": "started"})).await;
    let cancelled = channel.next(WAIT).await;
    assert_eq!(cancelled.event.as_deref(), Some("TASK:CANCELLED"));
    let data: Value = serde_json::from_str(&cancelled.data).unwrap();
    assert_eq!((data["task_id"].as_str(), data["reason"].as_str()), (Some(task_id), Some("deadline_exceeded")));
    let task = system.task(&api_key, task_id).await;
    assert_eq!((task["status"].as_str(), task["reason"]["code"].as_str()), (Some("failed"), Some("deadline_exceeded")));
    let late: Value = system.report(&node, completion(task_id, 1, 0.000001, 0.0)).await.json().await.unwrap();
    assert_eq!(system.settled(late["command_id"].as_str().unwrap(), &node.token).await["status"], "rejected");
    let entries: i64 = sqlx::query_scalar("select count(*) from credit_entry").fetch_one(&pool).await.unwrap();
    assert_eq!(entries, 0);
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_cancelled_running_task_is_stopped_on_its_node(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let (_, api_key) = system.organization("Changed mind").await;
    let task_length = Duration::from_secs(8);
    let (stop, fleet) = system.fleet(&api_key, 1, 2, 1.0, task_length).await;
    let node_id = fleet.nodes[0].node_id.to_string();
    let task_id = submit_all(&system, &api_key, vec![thermal_task()]).await.remove(0);
    let started = eventually(WAIT, "the task to run", || async {
        (system.task(&api_key, &task_id).await["status"] == "running").then_some(Instant::now())
    })
    .await;
    let running_on_node = |count: u64| {
        let path = format!("/v1/nodes/{node_id}");
        let (system, api_key) = (&system, &api_key);
        async move {
            let view: Value = system.get(&path, api_key).await.json().await.ok()?;
            (view["live"]["running"] == count).then_some(())
        }
    };
    eventually(WAIT, "the node to report the task running", || running_on_node(1)).await;
    let cancel =
        system.http.delete(system.url(&format!("/v1/tasks/{task_id}"))).bearer_auth(&api_key).send().await.unwrap();
    assert_eq!(cancel.status(), 202);
    let cancelled: Value = cancel.json().await.unwrap();
    assert_eq!(system.settled(cancelled["command_id"].as_str().unwrap(), &api_key).await["status"], "applied");
    // The node's own count of running tasks drops to zero: it stopped the computation.
    eventually(WAIT, "the node to stop the task", || running_on_node(0)).await;
    assert!(started.elapsed() < task_length, "stopped before the task could have finished");
    assert_eq!(system.task(&api_key, &task_id).await["status"], "cancelled");
    stop.send(true).unwrap();
    fleet.join().await;
    let reports: Vec<String> = sqlx::query_scalar(
        "select message_type from processed_message where message_type like 'RPT:%' order by processed_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(reports, ["RPT:TASK_STARTED"], "no completion was reported");
    system.stop().await;
}

/// The orchestrator processes `GET /v1/operations` lists, as "<role> <name>".
async fn orchestrators(system: &common::System) -> Option<Vec<String>> {
    let operations: Value = system.get("/v1/operations", common::OPERATOR_KEY).await.json().await.ok()?;
    let listed = operations["orchestrators"].as_array()?;
    listed.iter().map(|one| Some(format!("{} {}", one["role"].as_str()?, one["name"].as_str()?))).collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_standby_takes_over_from_a_stopping_writer_without_overfilling_or_assigning_twice(pool: PgPool) {
    let mut system = spawn_system(pool.clone(), &[]).await;
    let (_, api_key) = system.organization("Relay").await;
    // The first orchestrator is the writer by now (it applied the organisation); this one waits.
    system.add_orchestrator("orchestrator-standby");
    // The operator sees both: the writer, and the standby that would take over.
    eventually(WAIT, "the writer and its standby in /v1/operations", || async {
        let listed = orchestrators(&system).await?;
        (listed == ["writer orchestrator-test", "standby orchestrator-standby"]).then_some(())
    })
    .await;
    let (stop, fleet) = system.fleet(&api_key, 20, 2, 1.0, Duration::ZERO).await;

    // Sample the fleet while tasks run, across the handover.
    let finished = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (pool, finished) = (pool.clone(), finished.clone());
        tokio::spawn(async move {
            let (mut samples, mut worst) = (0_u32, 0_i64);
            while !finished.load(Ordering::Relaxed) {
                let in_flight: Vec<i64> = sqlx::query_scalar(
                    "select count(*) from task where status in ('assigned', 'running') group by node_id",
                )
                .fetch_all(&pool)
                .await
                .unwrap();
                worst = in_flight.into_iter().fold(worst, i64::max);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (samples, worst)
        })
    };
    let first_half = submit_all(&system, &api_key, (0..500).map(|_| thermal_task()).collect()).await;
    eventually(WAIT, "some tasks to complete", || async {
        let done: i64 =
            sqlx::query_scalar("select count(*) from task where status = 'completed'").fetch_one(&pool).await.ok()?;
        (done >= 100).then_some(())
    })
    .await;
    system.stop_first_orchestrator().await;
    eventually(WAIT, "the standby listed as the writer, alone", || async {
        let listed = orchestrators(&system).await?;
        (listed == ["writer orchestrator-standby"]).then_some(())
    })
    .await;
    let second_half = submit_all(&system, &api_key, (0..500).map(|_| thermal_task()).collect()).await;
    assert_eq!(first_half.len() + second_half.len(), 1000);
    wait_all_completed(&pool, 1000, Duration::from_secs(240)).await;
    finished.store(true, Ordering::Relaxed);
    let (samples, worst) = sampler.await.unwrap();
    assert!(samples > 10, "the fleet was sampled during the run ({samples} samples)");
    assert!(worst <= 2, "a node held {worst} tasks on 2 cores");
    let (most, _) = common::most_tasks_a_node_held(&pool).await;
    assert!(most <= 2, "the event archive shows a node holding {most} tasks on 2 cores");

    let twice: i64 = sqlx::query_scalar(
        "select count(*) from (select 1 from event where event_type = 'TaskAssigned'
             group by envelope -> 'payload' ->> 'task_id', envelope -> 'payload' ->> 'attempt' having count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(twice, 0, "no task was assigned twice for one attempt");
    let deciders: i64 = sqlx::query_scalar(
        "select count(distinct envelope -> 'payload' ->> 'assigned_by') from event where event_type = 'TaskAssigned'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(deciders, 2, "the writer placed tasks, then the standby that took over");
    let epoch: i64 = sqlx::query_scalar("select epoch from writer").fetch_one(&pool).await.unwrap();
    assert_eq!(epoch, 2, "two terms: the first writer's and the standby's");
    let credited: i64 =
        sqlx::query_scalar("select count(distinct task_id) from credit_entry").fetch_one(&pool).await.unwrap();
    assert_eq!(credited, 1000);
    stop.send(true).unwrap();
    fleet.join().await;
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_task_with_slack_waits_for_the_sun_and_an_urgent_one_does_not(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[("GRID_EXPECTED_RUNTIME_MS", "60000")]).await;
    let (_, api_key) = system.organization("Dawn").await;
    let shaded = system.manual_node(&api_key, 2, 0.0).await;
    let panels = system.manual_node(&api_key, 2, 0.0).await; // solar panels, before sunrise
    let relaxed: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let relaxed_id = relaxed["task_id"].as_str().unwrap();
    system.settled(relaxed["command_id"].as_str().unwrap(), &api_key).await;
    // Due in three minutes: three expected runtimes leave no slack, so it runs at once, sun or not.
    let urgent: Value = system
        .post("/v1/tasks", &api_key, thermal_task_due(chrono::Duration::minutes(3), 5))
        .await
        .json()
        .await
        .unwrap();
    let urgent_id = urgent["task_id"].as_str().unwrap();
    eventually(WAIT, "the urgent task to be placed", || async {
        (system.task(&api_key, urgent_id).await["status"] == "assigned").then_some(())
    })
    .await;
    // The scheduler has seen the relaxed task in that pass too, and left it waiting.
    assert_eq!(system.task(&api_key, relaxed_id).await["status"], "queued");

    panels.set_solar(300.0);
    let placed = eventually(WAIT, "the relaxed task to be placed in the sun", || async {
        let task = system.task(&api_key, relaxed_id).await;
        (task["status"] == "assigned").then_some(task)
    })
    .await;
    assert_eq!(placed["node_id"].as_str(), Some(panels.node_id.as_str()));
    assert_ne!(placed["node_id"].as_str(), Some(shaded.node_id.as_str()));
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_assignment_not_started_in_time_is_taken_back_and_its_node_told(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[("GRID_START_LEASE_MS", "500"), ("GRID_REQUEUE_BACKOFF_MS", "50")]).await;
    let (_, api_key) = system.organization("Sluggish").await;
    let node = system.manual_node(&api_key, 1, 300.0).await;
    let mut channel = system.channel(&node, None).await;
    let accepted: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let assigned = channel.next(WAIT).await;
    assert_eq!(assigned.event.as_deref(), Some("TASK:ASSIGNED"));
    let data: Value = serde_json::from_str(&assigned.data).unwrap();
    assert_eq!(data["task_id"], accepted["task_id"]);
    // It never starts: the lease passes, the node is told, and the task is offered again.
    let taken = channel.next(WAIT).await;
    assert_eq!(taken.event.as_deref(), Some("TASK:CANCELLED"));
    let data: Value = serde_json::from_str(&taken.data).unwrap();
    assert_eq!((data["reason"].as_str(), data["attempt"].as_i64()), (Some("start_lease_expired"), Some(1)));
    let again = channel.next(WAIT).await;
    let data: Value = serde_json::from_str(&again.data).unwrap();
    assert_eq!((again.event.as_deref(), data["attempt"].as_i64()), (Some("TASK:ASSIGNED"), Some(2)));
    let backoff: i64 = sqlx::query_scalar(
        "select (envelope -> 'payload' ->> 'retry_after_ms')::bigint from event where event_type = 'TaskRequeued' order by seq limit 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(backoff, 50, "the first requeue waits the base backoff");
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn after_the_attempt_limit_a_task_fails_into_the_dead_letter_stream(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[("GRID_NODE_TTL_MS", "1000"), ("GRID_MAX_ATTEMPTS", "1")]).await;
    let (_, api_key) = system.organization("Unlucky").await;
    let node = system.manual_node(&api_key, 1, 300.0).await;
    let mut channel = system.channel(&node, None).await;
    let accepted: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let task_id = accepted["task_id"].as_str().unwrap().to_owned();
    assert_eq!(channel.next(WAIT).await.event.as_deref(), Some("TASK:ASSIGNED"));
    node.go_silent();
    let task = eventually(WAIT, "the task to fail", || async {
        let task = system.task(&api_key, &task_id).await;
        (task["status"] == "failed").then_some(task)
    })
    .await;
    assert_eq!(task["reason"], json!({"code": "attempts_exhausted", "attempts": 1, "last": {"code": "node_offline"}}));
    assert_eq!(task["reason_text"], "failed after 1 attempts; the last one ended because its node went offline");
    let letter = system.first_dead_letter(WAIT, "the dead letter").await;
    assert_eq!(letter.get::<String>("entry_id").as_deref(), Some(task_id.as_str()));
    assert_eq!(letter.get::<String>("code").as_deref(), Some("attempts_exhausted"));
    assert_eq!(letter.get::<String>("reason"), task["reason_text"].as_str().map(str::to_owned));
    system.stop().await;
}
