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
