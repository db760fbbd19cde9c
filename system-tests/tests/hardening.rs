//! The API's edges: rate limits, strict JSON, body limits, methods; every refusal a problem.

mod common;

use common::{spawn_system, thermal_task};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::time::Duration;

fn is_problem(response: &reqwest::Response) -> bool {
    response.headers().get("content-type").is_some_and(|value| value == "application/problem+json")
}

#[sqlx::test(migrations = "../migrations")]
async fn a_credential_over_its_rate_gets_429_with_retry_after(pool: PgPool) {
    let system = spawn_system(pool, &[("GATEWAY_RATE_LIMIT_PER_SECOND", "5")]).await;
    let (_, api_key) = system.organization("Hasty").await;
    let mut limited = None;
    for _ in 0..20 {
        let response = system.get("/v1/tasks", &api_key).await;
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("twenty requests within a second or two exceed five a second");
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(is_problem(&response));
    let problem: Value = response.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/rate-limited"));
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_fields_wrong_methods_and_huge_bodies_are_refused_as_problems(pool: PgPool) {
    let mut system = spawn_system(pool, &[("GATEWAY_MAX_BODY_BYTES", "4096")]).await;
    let (_, api_key) = system.organization("Strict").await;
    let before = system.xlen("commands").await;

    let mut extra = thermal_task();
    extra["colour"] = json!("blue");
    let response = system.post("/v1/tasks", &api_key, extra).await;
    assert_eq!(response.status(), 422);
    assert!(is_problem(&response));
    assert!(response.text().await.unwrap().contains("colour"));

    let mut extra_in_kind = thermal_task();
    extra_in_kind["kind"]["colour"] = json!("blue");
    assert_eq!(system.post("/v1/tasks", &api_key, extra_in_kind).await.status(), 422);

    let wrong_method = system.http.patch(system.url("/v1/tasks")).bearer_auth(&api_key).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert!(is_problem(&wrong_method));

    let mut huge = thermal_task();
    huge["copropriete_id"] = json!("x".repeat(10_000));
    let response = system.post("/v1/tasks", &api_key, huge).await;
    assert_eq!(response.status(), 413);
    assert!(is_problem(&response));

    let not_json = system.http.post(system.url("/v1/tasks")).bearer_auth(&api_key).body("{}").send().await.unwrap();
    assert_eq!(not_json.status(), 415);
    assert!(is_problem(&not_json));

    assert_eq!(system.xlen("commands").await, before, "nothing was published");
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_organisation_rotates_its_key_and_the_old_one_stops_working_on_every_gateway(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let other_gateway = system.another_gateway(pool).await;
    let (organization_a, old_key) = system.organization("Rotating").await;
    let (organization_b, key_b) = system.organization("Other").await;
    // Both gateways know the old key (it is in their caches).
    let submit = |base: String, key: String| {
        let http = system.http.clone();
        async move {
            http.post(format!("{base}/v1/tasks")).bearer_auth(key).json(&thermal_task()).send().await.unwrap().status()
        }
    };
    assert_eq!(submit(system.base.clone(), old_key.clone()).await, 202);
    assert_eq!(submit(other_gateway.clone(), old_key.clone()).await, 202);

    let response = system.post(&format!("/v1/organizations/{organization_a}/keys"), &old_key, json!({})).await;
    assert_eq!(response.status(), 202);
    let rotated: Value = response.json().await.unwrap();
    let new_key = rotated["api_key"].as_str().unwrap().to_owned();
    assert!(new_key.starts_with("gk_") && new_key.len() == 67);
    // The new key is unknown until the command is applied (asked with it, the command answers
    // only once applied); right after, the old one is refused by the other gateway too, for a
    // write (no PostgreSQL on its path) and for a read.
    let view = common::eventually(std::time::Duration::from_secs(10), "the rotation to apply", || async {
        let view: Value = system
            .get(&format!("/v1/commands/{}", rotated["command_id"].as_str().unwrap()), &new_key)
            .await
            .json()
            .await
            .ok()?;
        (view["status"] == "applied").then_some(view)
    })
    .await;
    assert_eq!(view["status"], "applied");
    assert_eq!(submit(other_gateway.clone(), old_key.clone()).await, 401);
    let read = system.http.get(format!("{other_gateway}/v1/tasks")).bearer_auth(&old_key).send().await.unwrap();
    assert_eq!(read.status(), 401);
    assert_eq!(submit(system.base.clone(), old_key.clone()).await, 401);
    assert_eq!(system.get("/v1/tasks", &old_key).await.status(), 401);
    assert_eq!(submit(other_gateway.clone(), new_key.clone()).await, 202);

    // Another organisation's keys are "not found"; the operator may rotate them, keeping the old.
    assert_eq!(
        system.post(&format!("/v1/organizations/{organization_b}/keys"), &new_key, json!({})).await.status(),
        404
    );
    let by_operator: Value = system
        .post(
            &format!("/v1/organizations/{organization_b}/keys"),
            common::OPERATOR_KEY,
            json!({"revoke_previous": false}),
        )
        .await
        .json()
        .await
        .unwrap();
    let second_key_b = by_operator["api_key"].as_str().unwrap().to_owned();
    assert_eq!(
        system.settled(by_operator["command_id"].as_str().unwrap(), common::OPERATOR_KEY).await["status"],
        "applied"
    );
    assert_eq!(system.get("/v1/tasks", &key_b).await.status(), 200);
    assert_eq!(system.get("/v1/tasks", &second_key_b).await.status(), 200);
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn known_keys_submit_while_postgres_is_down_and_reads_say_unavailable(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let (_, api_key) = system.organization("Offline reads").await;
    // A gateway with a PostgreSQL pool of its own, which it then loses.
    let own_pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let gateway = system.another_gateway(own_pool.clone()).await;
    let node = system.manual_node(&api_key, 1, 100.0).await;
    let submit = || system.http.post(format!("{gateway}/v1/tasks")).bearer_auth(&api_key).json(&thermal_task()).send();
    assert_eq!(submit().await.unwrap().status(), 202, "the key is looked up once");
    let heartbeat = || {
        system
            .http
            .post(format!("{gateway}/v1/nodes/{}/heartbeat", node.node_id))
            .bearer_auth(&node.token)
            .json(&json!({"cpu_usage": 5.0, "solar_watts": 100.0}))
            .send()
    };
    assert_eq!(heartbeat().await.unwrap().status(), 200);
    own_pool.close().await;

    let accepted = submit().await.unwrap();
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(heartbeat().await.unwrap().status(), 200);
    let read = system.http.get(format!("{gateway}/v1/tasks")).bearer_auth(&api_key).send().await.unwrap();
    assert_eq!(read.status(), 503);
    assert_eq!(read.headers()["retry-after"], "1");
    assert!(is_problem(&read));
    // An unknown key cannot be checked: refused as unavailable, not let in.
    let unknown = system.http.post(format!("{gateway}/v1/tasks")).bearer_auth(format!("gk_{}", "0".repeat(64)));
    assert_eq!(unknown.json(&thermal_task()).send().await.unwrap().status(), 503);
    // The submission accepted meanwhile is applied (through the first gateway's reads).
    assert_eq!(system.settled(accepted["command_id"].as_str().unwrap(), &api_key).await["status"], "applied");
    system.stop().await;
}

/// Past `GATEWAY_MAX_BACKLOG` commands not yet applied (here no writer runs), new commands are
/// refused at once with a 503 and `Retry-After`, and nothing is appended; a repeated request
/// with its `Idempotency-Key` still gets its first answer, and node reports, which finish work
/// already accepted, are still taken.
#[sqlx::test(migrations = "../migrations")]
async fn past_its_backlog_the_grid_refuses_new_commands_but_not_reports(pool: PgPool) {
    const BACKLOG: i64 = 10;
    let mut system = spawn_system(pool, &[("GATEWAY_MAX_BACKLOG", "10")]).await;
    let (_, api_key) = system.organization("Busy").await;
    let node = system.manual_node(&api_key, 4, 400.0).await;
    system.stop_first_orchestrator().await;
    let waiting = system.xlen("commands").await;
    assert!(waiting < BACKLOG, "{waiting} commands left behind by the setup");
    let (http, tasks, task) = (system.http.clone(), system.url("/v1/tasks"), thermal_task());
    let submit = |key: Option<&'static str>| {
        let mut request = http.post(&tasks).bearer_auth(&api_key).json(&task);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        async move { request.send().await.expect("the gateway answers") }
    };
    let first = submit(Some("first-of-the-backlog")).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    for _ in waiting + 1..BACKLOG {
        assert_eq!(submit(None).await.status(), 202);
    }
    let refused = submit(None).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(is_problem(&refused));
    let problem: Value = refused.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/overloaded"), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("GATEWAY_MAX_BACKLOG"), "{problem}");
    assert_eq!(system.xlen("commands").await, BACKLOG, "the refused command was not appended");
    // The gateway remembers the full backlog a moment, and refuses without asking Redis; after
    // it, a retry with its key gets its first answer.
    assert_eq!(submit(None).await.status(), 503);
    let again = common::eventually(Duration::from_secs(5), "the retry's first answer", || async {
        let answer = submit(Some("first-of-the-backlog")).await;
        (answer.status() == 202).then_some(answer)
    })
    .await;
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let report =
        system.report(&node, json!({"task_id": uuid::Uuid::new_v4(), "attempt": 1, "status": "started"})).await;
    assert_eq!(report.status(), 202, "reports are taken whatever the backlog");
    assert_eq!(system.xlen("commands").await, BACKLOG);
    system.stop().await;
}
