//! The API's edges: rate limits, strict JSON, body limits, methods; every refusal a problem.

mod common;

use common::{spawn_system, thermal_task};
use serde_json::{Value, json};
use sqlx::PgPool;

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
async fn an_organisation_rotates_its_key_and_the_old_one_stops_working(pool: PgPool) {
    let system = spawn_system(pool, &[]).await;
    let (organization_a, old_key) = system.organization("Rotating").await;
    let (organization_b, key_b) = system.organization("Other").await;

    let response = system.post(&format!("/v1/organizations/{organization_a}/keys"), &old_key, json!({})).await;
    assert_eq!(response.status(), 202);
    let rotated: Value = response.json().await.unwrap();
    let new_key = rotated["api_key"].as_str().unwrap().to_owned();
    assert!(new_key.starts_with("gk_") && new_key.len() == 67);
    // The new key is unknown until the command is applied.
    common::eventually(std::time::Duration::from_secs(10), "the new key to work", || async {
        (system.get("/v1/tasks", &new_key).await.status() == 200).then_some(())
    })
    .await;
    assert_eq!(system.settled(rotated["command_id"].as_str().unwrap(), &new_key).await["status"], "applied");
    assert_eq!(system.get("/v1/tasks", &old_key).await.status(), 401);

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
