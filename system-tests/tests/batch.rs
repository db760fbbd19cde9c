//! `POST /v1/tasks/batch` over the real gateway, orchestrator, PostgreSQL and Redis: each task
//! of a batch is checked on its own, the valid ones run, a repeat under its `Idempotency-Key`
//! gets the first answer, and a full backlog refuses the whole batch.

mod common;

use std::time::Duration;

use common::{eventually, spawn_system, thermal_task};
use serde_json::{Value, json};
use sqlx::PgPool;

/// The organisation's tasks, as `GET /v1/tasks` lists them (ids).
async fn listed_tasks(system: &common::System, api_key: &str) -> Vec<String> {
    let page: Value = system.get("/v1/tasks?limit=500", api_key).await.json().await.unwrap();
    page["tasks"].as_array().unwrap().iter().map(|task| task["task_id"].as_str().unwrap().to_owned()).collect()
}

async fn post_batch(system: &common::System, api_key: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = system.http.post(system.url("/v1/tasks/batch")).bearer_auth(api_key).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("the gateway answers")
}

#[sqlx::test(migrations = "../migrations")]
async fn a_batch_submits_its_valid_tasks_and_refuses_each_invalid_one_alone(pool: PgPool) {
    let system = spawn_system(pool, &[]).await;
    let (_, api_key) = system.organization("Batch").await;
    let (stop_fleet, fleet) = system.fleet(&api_key, 2, 2, 1.0, Duration::ZERO).await;

    let mut late = thermal_task();
    late["deadline"] = json!((chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339());
    let mut too_insulated = thermal_task();
    too_insulated["kind"]["insulation_score"] = json!(2.0);
    let mut elsewhere = thermal_task();
    elsewhere["cell"] = json!("main");
    let body = json!({"tasks": [thermal_task(), late, thermal_task(), too_insulated, {"deadline": 3}, elsewhere]});
    let response = post_batch(&system, &api_key, Some("batch-1"), &body).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!((answer["accepted"].as_u64(), answer["refused"].as_u64()), (Some(2), Some(4)), "{answer}");
    assert_eq!(answer["cell"], "main");
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items.len(), 6);
    for (index, item) in items.iter().enumerate() {
        assert_eq!(item["index"], index, "{item}");
    }
    let refused_field = |index: usize| items[index]["problem"]["errors"][0]["field"].as_str().unwrap().to_owned();
    assert_eq!(refused_field(1), "tasks[1].deadline");
    assert_eq!(refused_field(3), "tasks[3].kind.insulation_score");
    assert_eq!(refused_field(4), "tasks[4]", "a task of the wrong shape refuses itself");
    // A batch runs in one cell: a task naming one, when the batch names none, is refused.
    assert_eq!(refused_field(5), "tasks[5].cell");
    for index in [1, 3, 4, 5] {
        assert_eq!(items[index]["problem"]["status"], 422, "{}", items[index]);
        assert!(items[index].get("task_id").is_none(), "{}", items[index]);
    }
    let submitted: Vec<String> =
        [0, 2].iter().map(|&index| items[index]["task_id"].as_str().unwrap().to_owned()).collect();

    // Both run to completion, and they are the organisation's only tasks.
    for task_id in &submitted {
        eventually(Duration::from_secs(30), "a task of the batch to complete", || async {
            (system.task(&api_key, task_id).await["status"] == "completed").then_some(())
        })
        .await;
    }
    let mut listed = listed_tasks(&system, &api_key).await;
    listed.sort();
    let mut expected = submitted.clone();
    expected.sort();
    assert_eq!(listed, expected);

    // The same batch under the same key: the first answer, nothing submitted twice.
    let repeat = post_batch(&system, &api_key, Some("batch-1"), &body).await;
    assert_eq!(repeat.status(), 202);
    assert_eq!(repeat.json::<Value>().await.unwrap(), answer);
    assert_eq!(listed_tasks(&system, &api_key).await.len(), 2);
    // The key for another batch, or for a lone task: a conflict.
    let other = json!({"tasks": [thermal_task()]});
    assert_eq!(post_batch(&system, &api_key, Some("batch-1"), &other).await.status(), 409);
    let lone = system
        .http
        .post(system.url("/v1/tasks"))
        .bearer_auth(&api_key)
        .header("idempotency-key", "batch-1")
        .json(&thermal_task())
        .send()
        .await
        .unwrap();
    assert_eq!(lone.status(), 409);

    // Nothing valid: 422, every task's problem, nothing submitted.
    let mut bad = thermal_task();
    bad["priority"] = json!(11);
    let refused = post_batch(&system, &api_key, None, &json!({"tasks": [bad, {"nonsense": true}]})).await;
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|error| error["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["tasks[0].priority", "tasks[1]"], "{problem}");
    // The batch's own bounds.
    let empty = post_batch(&system, &api_key, None, &json!({"tasks": []})).await;
    assert_eq!(empty.status(), 422);
    assert_eq!(empty.json::<Value>().await.unwrap()["errors"][0]["field"], "tasks");
    let too_many = json!({"tasks": vec![thermal_task(); 1001]});
    assert_eq!(post_batch(&system, &api_key, None, &too_many).await.status(), 422);
    let unknown_cell =
        post_batch(&system, &api_key, None, &json!({"cell": "nowhere", "tasks": [thermal_task()]})).await;
    assert_eq!(unknown_cell.status(), 422);
    assert_eq!(listed_tasks(&system, &api_key).await.len(), 2);

    stop_fleet.send(true).unwrap();
    fleet.join().await;
    system.stop().await;
}

/// A batch is admitted whole or not at all: while the grid has `GATEWAY_MAX_BACKLOG` commands
/// not yet applied (here no writer runs), it is refused with a 503 and `Retry-After`, and none
/// of its tasks is appended.
#[sqlx::test(migrations = "../migrations")]
async fn a_full_backlog_refuses_a_batch_whole(pool: PgPool) {
    let mut system = spawn_system(pool, &[("GATEWAY_MAX_BACKLOG", "10")]).await;
    let (_, api_key) = system.organization("Busy batches").await;
    system.stop_first_orchestrator().await;
    let waiting = system.xlen("commands").await;
    assert!(waiting < 10, "{waiting} commands left behind by the setup");
    let twelve = json!({"tasks": vec![thermal_task(); 12]});
    let first = post_batch(&system, &api_key, None, &twelve).await;
    assert_eq!(first.status(), 202, "a batch is admitted while the stream holds fewer than the bound");
    assert_eq!(system.xlen("commands").await, waiting + 12, "the whole batch appended");
    let refused = post_batch(&system, &api_key, None, &twelve).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(system.xlen("commands").await, waiting + 12, "nothing of the refused batch appended");
    system.stop().await;
}
