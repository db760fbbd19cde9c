//! What a node sees and says, driven by hand over HTTP: the task channel and its resumption,
//! cancellation, fencing of stale attempts, requeue when a node goes silent, and the KoproGo
//! compatibility routes.

mod common;

use std::time::Duration;

use common::{completion, eventually, spawn_system, thermal_task};
use serde_json::{Value, json};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(10);

#[sqlx::test(migrations = "../migrations")]
async fn a_node_gets_its_task_resumes_its_channel_and_is_told_of_a_cancellation(pool: PgPool) {
    let system = spawn_system(pool, &[]).await;
    let (_, api_key) = system.organization("Channel").await;
    let node = system.manual_node(&api_key, 2, 300.0).await;
    let mut channel = system.channel(&node, None).await;

    let correlation_id = uuid::Uuid::new_v4().to_string();
    let submit =
        system.http.post(system.url("/v1/tasks")).bearer_auth(&api_key).header("x-request-id", &correlation_id);
    let first: Value = submit.json(&thermal_task()).send().await.unwrap().json().await.unwrap();
    let task_id = first["task_id"].as_str().unwrap();
    let assigned = channel.next(WAIT).await;
    assert_eq!(assigned.event.as_deref(), Some("TASK:ASSIGNED"));
    let data: Value = serde_json::from_str(&assigned.data).unwrap();
    assert_eq!((data["task_id"].as_str(), data["attempt"].as_i64()), (Some(task_id), Some(1)));
    assert_eq!(data["kind"]["type"], "building_thermal_simulation");
    assert!(data["deadline"].is_string());
    assert_eq!(data["correlation_id"].as_str(), Some(correlation_id.as_str()), "the request's id follows the task");
    let resume_from = assigned.id.clone().expect("events carry their stream id");

    let started = system.http.post(system.url(&format!("/v1/nodes/{}/reports", node.node_id))).bearer_auth(&node.token);
    let started = started
        .header("x-request-id", &correlation_id)
        .json(&json!({"task_id": task_id, "attempt": 1, "status": "started"}));
    assert_eq!(started.send().await.unwrap().status(), 202);
    eventually(WAIT, "the task to run", || async {
        (system.task(&api_key, task_id).await["status"] == "running").then_some(())
    })
    .await;
    let cancel =
        system.http.delete(system.url(&format!("/v1/tasks/{task_id}"))).bearer_auth(&api_key).send().await.unwrap();
    assert_eq!(cancel.status(), 202);

    // A reconnection after the assignment sees only what came after it.
    drop(channel);
    let mut resumed = system.channel(&node, Some(&resume_from)).await;
    let cancelled = resumed.next(WAIT).await;
    assert_eq!(cancelled.event.as_deref(), Some("TASK:CANCELLED"));
    let data: Value = serde_json::from_str(&cancelled.data).unwrap();
    assert_eq!(data["task_id"].as_str(), Some(task_id));
    assert_eq!(system.task(&api_key, task_id).await["status"], "cancelled");
    let correlated: Vec<String> =
        sqlx::query_scalar("select event_type from event where envelope ->> 'correlation_id' = $1 order by seq")
            .bind(&correlation_id)
            .fetch_all(&system.pool)
            .await
            .unwrap();
    assert_eq!(correlated, ["TaskAccepted", "TaskAssigned", "TaskStarted"]);

    // A completion after the cancellation is refused and earns nothing.
    let late: Value = system.report(&node, completion(task_id, 1, 0.001, 0.0)).await.json().await.unwrap();
    let view = system.settled(late["command_id"].as_str().unwrap(), &node.token).await;
    assert_eq!(view["status"], "rejected", "{view}");
    assert!(system.task(&api_key, task_id).await["node_share_peur"].is_null());
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_silent_nodes_task_is_requeued_and_its_late_report_is_not_credited(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[("GRID_NODE_TTL_MS", "1000")]).await;
    let (_, api_key) = system.organization("Silence").await;
    let silent = system.manual_node(&api_key, 1, 300.0).await;
    let mut silent_channel = system.channel(&silent, None).await;
    silent.go_silent();
    let submitted: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let task_id = submitted["task_id"].as_str().unwrap();
    let assigned = silent_channel.next(WAIT).await;
    assert_eq!(assigned.event.as_deref(), Some("TASK:ASSIGNED"));

    // No more heartbeats from it: after the TTL its task goes back to the queue.
    let requeued = eventually(WAIT, "the requeue", || async {
        let task = system.task(&api_key, task_id).await;
        (task["status"] == "queued").then_some(task)
    })
    .await;
    assert_eq!(requeued["attempts"], 1);

    let rescuer = system.manual_node(&api_key, 1, 300.0).await;
    let mut rescuer_channel = system.channel(&rescuer, None).await;
    let reassigned = rescuer_channel.next(WAIT).await;
    let data: Value = serde_json::from_str(&reassigned.data).unwrap();
    assert_eq!((data["task_id"].as_str(), data["attempt"].as_i64()), (Some(task_id), Some(2)));
    let done: Value = system.report(&rescuer, completion(task_id, 2, 0.000001, 0.0)).await.json().await.unwrap();
    assert_eq!(system.settled(done["command_id"].as_str().unwrap(), &rescuer.token).await["status"], "applied");

    // The silent node wakes up and reports its old attempt: recorded, refused, not credited.
    let late: Value = system.report(&silent, completion(task_id, 1, 0.000001, 0.0)).await.json().await.unwrap();
    let view = system.settled(late["command_id"].as_str().unwrap(), &silent.token).await;
    assert_eq!(view["status"], "rejected");
    assert!(view["reason"].as_str().unwrap().contains("stale"), "{view}");
    // Completed meanwhile: the task is no longer in flight.
    assert_eq!(view["refusal"]["code"], "not_in_flight", "{view}");
    let task = system.task(&api_key, task_id).await;
    assert_eq!(
        (task["status"].as_str(), task["node_id"].as_str()),
        (Some("completed"), Some(rescuer.node_id.as_str()))
    );
    let entries: i64 = sqlx::query_scalar("select count(*) from credit_entry").fetch_one(&pool).await.unwrap();
    assert_eq!(entries, 2, "one task, credited once: a node entry and a fund entry");
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn energy_a_node_could_not_have_used_is_not_credited(pool: PgPool) {
    let system = spawn_system(pool, &[]).await;
    let (_, api_key) = system.organization("Honest").await;
    let node = system.manual_node(&api_key, 4, 300.0).await;
    let mut channel = system.channel(&node, None).await;
    let submitted: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let task_id = submitted["task_id"].as_str().unwrap();
    channel.next(WAIT).await;
    // 50 Wh in well under a minute: 4 cores at 2 W would need over six hours.
    let claim: Value = system.report(&node, completion(task_id, 1, 50.0, 40.0)).await.json().await.unwrap();
    assert_eq!(system.settled(claim["command_id"].as_str().unwrap(), &node.token).await["status"], "applied");
    let task = system.task(&api_key, task_id).await;
    assert_eq!(task["status"], "completed");
    assert!(task["node_share_peur"].is_null(), "{task}");
    assert_eq!(task["reason"]["code"], "not_credited", "{task}");
    assert!(task["reason"]["detail"].as_str().unwrap().contains("exceeds what 4 cores can draw"), "{task}");
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_existing_koprogo_node_client_works_through_the_grid_routes(pool: PgPool) {
    // Credits at the fixed factor alone (the chain `fixed`), so that the figures below are the README's.
    let system = spawn_system(pool, &[("GRID_CARBON_SOURCES", "fixed")]).await;
    let (_, api_key) = system.organization("Legacy").await;
    let registered = system
        .post(
            "/grid/register",
            &api_key,
            json!({"name": "RaspberryPi-001", "cpu_cores": 4, "has_solar": true, "location": "Brussels"}),
        )
        .await;
    assert_eq!(registered.status(), 201);
    let registered: Value = registered.json().await.unwrap();
    assert_eq!(
        (registered["name"].as_str(), registered["status"].as_str(), registered["eco_score"].as_f64()),
        (Some("RaspberryPi-001"), Some("active"), Some(0.0))
    );
    let (node_id, token) =
        (registered["id"].as_str().unwrap().to_owned(), registered["token"].as_str().unwrap().to_owned());

    let heartbeat = eventually(WAIT, "the registration", || async {
        let response = system
            .post("/grid/heartbeat", &token, json!({"node_id": node_id, "cpu_usage": 25.5, "solar_watts": 450}))
            .await;
        if response.status() == 200 { response.json::<Value>().await.ok() } else { None }
    })
    .await;
    assert_eq!(heartbeat["id"].as_str(), Some(node_id.as_str()));
    assert_eq!(heartbeat["eco_score"].as_f64(), Some(0.924));
    assert_eq!(system.get(&format!("/grid/task?node_id={node_id}"), &token).await.status(), 204);

    let submitted: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let task_id = submitted["task_id"].as_str().unwrap();
    let task = eventually(WAIT, "a task to poll", || async {
        let response = system.get(&format!("/grid/task?node_id={node_id}"), &token).await;
        if response.status() == 200 { response.json::<Value>().await.ok() } else { None }
    })
    .await;
    assert_eq!(task["id"].as_str(), Some(task_id));
    assert_eq!(task["task_type"], "building_thermal_simulation");
    assert!(task["deadline"].is_string() && task["data_url"].is_string() && task["estimated_reward"].is_number());
    assert_eq!(system.get(&format!("/grid/task?node_id={node_id}"), &token).await.status(), 204, "handed out once");

    // 2 µWh with 1 µWh of solar: 180 ng of CO₂, 4 p€, of which 2 for the node. The hash is the
    // KoproGo README's own example: opaque on this route. The answer is what was credited.
    let report = system
        .post("/grid/report", &token, json!({"task_id": task_id, "result_hash": "abc123def456", "energy_used_wh": 0.000002, "solar_contribution_wh": 0.000001}))
        .await;
    assert_eq!(report.status(), 200);
    let report: Value = report.json().await.unwrap();
    assert_eq!(
        (&report["outcome"], &report["message"], &report["node_share_eur"], &report["cooperative_share_eur"]),
        (&json!("credited"), &json!("Task completion credited"), &json!(2e-12), &json!(2e-12)),
        "{report}"
    );
    assert_eq!(report["carbon_credits"].as_f64(), Some(1.8e-10));
    let task = system.task(&api_key, task_id).await;
    assert_eq!(
        (&task["status"], &task["node_share_peur"], &task["result_hash"]),
        (&json!("completed"), &json!(2), &json!("abc123def456"))
    );

    // Energy the node could not have used is refused, and the answer says so: nothing credited.
    let submitted: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let task_id = submitted["task_id"].as_str().unwrap();
    eventually(WAIT, "a second task to poll", || async {
        let response = system.get(&format!("/grid/task?node_id={node_id}"), &token).await;
        (response.status() == 200).then_some(())
    })
    .await;
    let report: Value = system
        .post("/grid/report", &token, json!({"task_id": task_id, "result_hash": "abc123def456", "energy_used_wh": 500.0, "solar_contribution_wh": 500.0}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((&report["outcome"], &report["node_share_eur"]), (&json!("not_credited"), &json!(0.0)), "{report}");
    assert!(report["message"].as_str().unwrap().contains("exceeds what 4 cores can draw"), "{report}");
    // A hash that is not a visible-ASCII string of 1 to 128 characters is a clear 422.
    let bad = system
        .post(
            "/grid/report",
            &token,
            json!({"task_id": task_id, "result_hash": "", "energy_used_wh": 0.0, "solar_contribution_wh": 0.0}),
        )
        .await;
    assert_eq!(bad.status(), 422);

    let stats: Value = system.get("/grid/stats", &api_key).await.json().await.unwrap();
    for field in [
        "total_nodes",
        "active_nodes",
        "total_cpu_cores",
        "nodes_with_solar",
        "total_energy_saved_wh",
        "total_carbon_credits",
    ] {
        assert!(stats["nodes"][field].is_number(), "nodes.{field} in {stats}");
    }
    for field in ["total_tasks", "pending_tasks", "completed_tasks", "failed_tasks"] {
        assert!(stats["tasks"][field].is_number(), "tasks.{field} in {stats}");
    }
    assert!(stats["cooperative_fund_eur"].is_number());
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_node_starting_afresh_gets_its_work_in_flight_and_not_its_finished_work(pool: PgPool) {
    let system = spawn_system(pool, &[]).await;
    let (_, api_key) = system.organization("Restarting").await;
    let node = system.manual_node(&api_key, 1, 300.0).await;
    let mut channel = system.channel(&node, None).await;
    let task_id = |event: &grid_worker::sse::SseEvent| {
        serde_json::from_str::<Value>(&event.data).unwrap()["task_id"].as_str().unwrap().to_owned()
    };

    let first: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let first_id = first["task_id"].as_str().unwrap();
    assert_eq!(task_id(&channel.next(WAIT).await), first_id);
    let done: Value = system.report(&node, completion(first_id, 1, 0.000001, 0.0)).await.json().await.unwrap();
    system.settled(done["command_id"].as_str().unwrap(), &node.token).await;
    let second: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let second_id = second["task_id"].as_str().unwrap();
    assert_eq!(task_id(&channel.next(WAIT).await), second_id);

    // The node restarts and reconnects without Last-Event-ID: the finished task is not offered
    // again, the one in flight is.
    drop(channel);
    let mut fresh = system.channel(&node, None).await;
    let offered = fresh.next(WAIT).await;
    assert_eq!((offered.event.as_deref(), task_id(&offered)), (Some("TASK:ASSIGNED"), second_id.to_owned()));
    let done: Value = system.report(&node, completion(second_id, 1, 0.000001, 0.0)).await.json().await.unwrap();
    system.settled(done["command_id"].as_str().unwrap(), &node.token).await;

    // With nothing in flight, a fresh connection starts at the end of the channel.
    drop(fresh);
    let mut idle = system.channel(&node, None).await;
    let third: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    assert_eq!(task_id(&idle.next(WAIT).await), third["task_id"].as_str().unwrap());
    system.stop().await;
}

/// The event types recorded for one task, in order.
async fn task_events(pool: &PgPool, task_id: &str) -> Vec<String> {
    sqlx::query_scalar("select event_type from event where envelope -> 'payload' ->> 'task_id' = $1 order by seq")
        .bind(task_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn short_work_costs_two_requests_and_long_work_says_it_started(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let (_, api_key) = system.organization("Two requests").await;
    let ended = |task_id: String| {
        let system = &system;
        let api_key = &api_key;
        async move {
            eventually(WAIT, "the task to complete", || async {
                (system.task(api_key, &task_id).await["status"] == "completed").then_some(())
            })
            .await;
            task_id
        }
    };

    // Work that ends within a second is reported once: no `started`.
    let (stop, fleet) = system.fleet(&api_key, 1, 1, 1.0, Duration::ZERO).await;
    let short: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let short = ended(short["task_id"].as_str().unwrap().to_owned()).await;
    stop.send(true).unwrap();
    fleet.join().await;
    let events = task_events(&pool, &short).await;
    assert!(!events.contains(&"TaskStarted".to_owned()), "{events:?}");
    assert!(events.contains(&"TaskCompleted".to_owned()), "{events:?}");

    // Work still running after a second says so, before its result.
    let (stop, fleet) = system.fleet(&api_key, 1, 1, 1.0, Duration::from_millis(1_300)).await;
    let long: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let long = ended(long["task_id"].as_str().unwrap().to_owned()).await;
    stop.send(true).unwrap();
    fleet.join().await;
    let events = task_events(&pool, &long).await;
    let position = |kind: &str| events.iter().position(|event| event == kind);
    assert!(position("TaskStarted") < position("TaskCompleted") && position("TaskStarted").is_some(), "{events:?}");
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_node_reconnecting_to_another_gateway_resumes_there(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let other_gateway = system.another_gateway(pool).await;
    let (_, api_key) = system.organization("Two doors").await;
    let node = system.manual_node(&api_key, 4, 300.0).await;

    let mut first = system.channel(&node, None).await;
    let task_one: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let assigned = first.next(WAIT).await;
    assert!(assigned.data.contains(task_one["task_id"].as_str().unwrap()));
    let seen = assigned.id.clone().expect("events carry their stream id");
    drop(first);

    // Two more assignments while the node is away, then it comes back through the other gateway.
    let mut expected = Vec::new();
    for _ in 0..2 {
        let task: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
        expected.push(task["task_id"].as_str().unwrap().to_owned());
    }
    eventually(WAIT, "the two to be assigned", || async {
        let assigned: i64 = sqlx::query_scalar("select count(*) from task where status = 'assigned'")
            .fetch_one(&system.pool)
            .await
            .ok()?;
        (assigned == 3).then_some(())
    })
    .await;
    let mut resumed = system.channel_via(&other_gateway, &node, Some(&seen)).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let event = resumed.next(WAIT).await;
        let data: Value = serde_json::from_str(&event.data).unwrap();
        got.push(data["task_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, expected, "what came while it was away, in order, and not what it had seen");
    // And what comes next reaches it live through that gateway's one reader.
    let live: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let event = resumed.next(WAIT).await;
    assert!(event.data.contains(live["task_id"].as_str().unwrap()), "{}", event.data);
    system.stop().await;
}
