//! One trace per task: with JSON logs (what `GRID_LOG_FORMAT=json` installs), a task's
//! correlation id, given by the client as `X-Request-Id`, is on the log lines of every hop:
//! the gateway publishing the submission, the orchestrator applying it, the worker running the
//! task, the gateway publishing its report, the orchestrator applying that.
//!
//! Alone in its test binary: it installs the process's log subscriber.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, spawn_system, thermal_task};
use serde_json::Value;
use sqlx::PgPool;

/// Log lines, kept in memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_tasks_correlation_id_runs_through_every_services_json_log_lines(pool: PgPool) {
    let lines = Lines::default();
    let writer = lines.clone();
    // The services' JSON format (see `grid_shared::logging`), with the orchestrator's debug
    // lines (one per message applied) and the request spans off.
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(true)
        .with_env_filter("info,grid_orchestrator=debug,tower_http=off,sqlx=warn")
        .with_writer(move || writer.clone())
        .init();
    let system = spawn_system(pool, &[]).await;
    let (_, api_key) = system.organization("Traced").await;
    let (stop, fleet) = system.fleet(&api_key, 1, 1, 1.0, Duration::ZERO).await;
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let submitted: Value = system
        .http
        .post(system.url("/v1/tasks"))
        .bearer_auth(&api_key)
        .header("x-request-id", &correlation_id)
        .json(&thermal_task())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let task_id = submitted["task_id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(20), "the task to complete", || async {
        (system.task(&api_key, &task_id).await["status"] == "completed").then_some(())
    })
    .await;
    // The orchestrator logs the report's application right after its commit.
    let traced = eventually(Duration::from_secs(10), "the report's application in the log", || async {
        let text = String::from_utf8(lines.0.lock().expect("not poisoned").clone()).unwrap();
        let traced: Vec<Value> = text
            .lines()
            .filter(|line| line.contains(&correlation_id))
            .map(|line| serde_json::from_str(line).expect("every line is one JSON object"))
            .collect();
        let reports_applied = traced
            .iter()
            .filter(|line| line["message"] == "message applied" && line["span"]["message_type"] == "RPT:TASK_COMPLETED")
            .count();
        (reports_applied == 1).then_some(traced)
    })
    .await;
    stop.send(true).unwrap();
    fleet.join().await;

    let hops: Vec<(String, String, String)> = traced
        .iter()
        .map(|line| {
            let kind = line["message_type"].as_str().or_else(|| line["span"]["message_type"].as_str()).unwrap_or("");
            (
                line["target"].as_str().unwrap_or("").to_owned(),
                line["message"].as_str().unwrap_or("").to_owned(),
                kind.to_owned(),
            )
        })
        .collect();
    let saw = |target: &str, message: &str, kind: &str| {
        hops.iter().any(|(t, m, k)| t.starts_with(target) && m == message && k == kind)
    };
    assert!(saw("grid_gateway", "published", "CMD:SUBMIT_TASK"), "{hops:#?}");
    assert!(saw("grid_orchestrator", "message applied", "CMD:SUBMIT_TASK"), "{hops:#?}");
    assert!(saw("grid_worker", "task completed", ""), "{hops:#?}");
    assert!(saw("grid_gateway", "published", "RPT:TASK_COMPLETED"), "{hops:#?}");
    assert!(saw("grid_orchestrator", "message applied", "RPT:TASK_COMPLETED"), "{hops:#?}");
    // The worker's line is in its task's span, which names the task.
    let worker = traced.iter().find(|line| line["message"] == "task completed").unwrap();
    assert_eq!(worker["span"]["task_id"].as_str(), Some(task_id.as_str()), "{worker}");
    system.stop().await;
}
