//! Tenant isolation: every route of the OpenAPI document, called by organisation A (with its API
//! key and with its node's token) against organisation B's resources, answers exactly as it
//! does for ids that exist nowhere, and no answer carries B's data.

mod common;

use std::time::Duration;

use common::{OPERATOR_KEY, eventually, spawn_system, thermal_task};
use serde_json::{Value, json};
use sqlx::PgPool;

struct Resources {
    organization_id: String,
    node_id: String,
    task_id: String,
    command_id: String,
    owner_id: String,
}

fn substitute(template: &str, resources: &Resources) -> String {
    template
        .replace("{organization_id}", &resources.organization_id)
        .replace("{node_id}", &resources.node_id)
        .replace("{task_id}", &resources.task_id)
        .replace("{command_id}", &resources.command_id)
        .replace("{owner_id}", &resources.owner_id)
}

fn body_for(path: &str, resources: &Resources) -> Option<Value> {
    Some(match path {
        "/v1/organizations" => json!({"name": "Intruder"}),
        "/v1/organizations/{organization_id}/keys" => json!({}),
        "/v1/nodes" | "/grid/register" => json!({"name": "pi", "cpu_cores": 2, "has_solar": true, "location": "Spa"}),
        "/v1/nodes/{node_id}/heartbeat" => json!({"cpu_usage": 1.0, "solar_watts": 10.0}),
        "/v1/nodes/{node_id}/reports" => json!({"task_id": resources.task_id, "attempt": 1, "status": "started"}),
        "/v1/tasks" => thermal_task(),
        "/v1/owners/{owner_id}/consent" => json!({"consent_version": "v1"}),
        "/grid/heartbeat" => json!({"node_id": resources.node_id, "cpu_usage": 1.0, "solar_watts": 10.0}),
        "/grid/report" => {
            json!({"task_id": resources.task_id, "result_hash": "ab".repeat(32), "energy_used_wh": 0.0, "solar_contribution_wh": 0.0})
        }
        _ => return None,
    })
}

#[sqlx::test(migrations = "../migrations")]
async fn no_route_leaks_another_organisations_resources(pool: PgPool) {
    let system = spawn_system(pool, &[]).await;
    let (_, key_a) = system.organization("Organisation A").await;
    let (organization_b, key_b) = system.organization("Organisation B").await;
    let node_a = system.manual_node(&key_a, 2, 0.0).await;
    let node_b = system.manual_node(&key_b, 2, 0.0).await;

    // B's resources: a node, a task, a command, a consent.
    let owner_b = uuid::Uuid::new_v4();
    let granted = system
        .http
        .put(system.url(&format!("/v1/owners/{owner_b}/consent")))
        .bearer_auth(&key_b)
        .json(&json!({"consent_version": "v1"}))
        .send()
        .await
        .unwrap();
    let granted: Value = granted.json().await.unwrap();
    system.settled(granted["command_id"].as_str().unwrap(), &key_b).await;
    let task_b: Value = system.post("/v1/tasks", &key_b, thermal_task()).await.json().await.unwrap();
    system.settled(task_b["command_id"].as_str().unwrap(), &key_b).await;
    let theirs = Resources {
        organization_id: organization_b.clone(),
        node_id: node_b.node_id.clone(),
        task_id: task_b["task_id"].as_str().unwrap().to_owned(),
        command_id: task_b["command_id"].as_str().unwrap().to_owned(),
        owner_id: owner_b.to_string(),
    };
    let nowhere = Resources {
        organization_id: uuid::Uuid::new_v4().to_string(),
        node_id: uuid::Uuid::new_v4().to_string(),
        task_id: uuid::Uuid::new_v4().to_string(),
        command_id: uuid::Uuid::new_v4().to_string(),
        owner_id: uuid::Uuid::new_v4().to_string(),
    };
    let secrets_of_b = [&theirs.node_id, &theirs.task_id, &theirs.command_id, &theirs.owner_id];

    let spec: Value = system.http.get(system.url("/api-docs/openapi.json")).send().await.unwrap().json().await.unwrap();
    let mut checked = 0;
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            for (caller, key) in [("organisation A", key_a.as_str()), ("node of A", node_a.token.as_str())] {
                let mut statuses = Vec::new();
                for resources in [&theirs, &nowhere] {
                    let mut url = system.url(&substitute(path, resources));
                    if path == "/grid/task" {
                        url.push_str(&format!("?node_id={}", resources.node_id));
                    }
                    let mut request =
                        system.http.request(method.to_uppercase().parse().unwrap(), &url).bearer_auth(key);
                    if let Some(body) = body_for(path, resources) {
                        request = request.json(&body);
                    }
                    let response = tokio::time::timeout(Duration::from_secs(5), request.send()).await;
                    // The task channel is a stream: its status is all there is to compare.
                    let Ok(Ok(response)) = response else { panic!("{method} {path} as {caller}: no answer") };
                    let status = response.status().as_u16();
                    let streaming = path.ends_with("/tasks") && path.contains("{node_id}");
                    let text = if streaming && status == 200 {
                        String::new()
                    } else {
                        response.text().await.unwrap_or_default()
                    };
                    for secret in secrets_of_b {
                        assert!(
                            !text.contains(secret.as_str()),
                            "{method} {path} as {caller} shows B's {secret}: {text}"
                        );
                    }
                    statuses.push(status);
                }
                assert_eq!(
                    statuses[0], statuses[1],
                    "{method} {path} as {caller} answers differently for B's resource and for nothing"
                );
                if path.contains('{') && method == "get" {
                    assert!(!(200..300).contains(&statuses[0]), "{method} {path} as {caller} answered {}", statuses[0]);
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 40, "every operation was walked ({checked})");

    // B's task is untouched: A's DELETE did not cancel it.
    let task = system.task(&key_b, &theirs.task_id).await;
    assert_ne!(task["status"], "cancelled");
    // Operator-only routes refuse organisations, and the operator sees everything.
    assert_eq!(system.post("/v1/organizations", &key_a, json!({"name": "x"})).await.status(), 403);
    let all: Value = system.get("/v1/nodes", OPERATOR_KEY).await.json().await.unwrap();
    assert!(all.as_array().unwrap().len() >= 2);
    eventually(Duration::from_secs(5), "B to still see its own task", || async {
        (system.get(&format!("/v1/tasks/{}", theirs.task_id), &key_b).await.status() == 200).then_some(())
    })
    .await;
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_pending_command_is_its_issuers_alone_and_nothing_of_it_stays_in_redis_once_applied(pool: PgPool) {
    let mut system = spawn_system(pool, &[]).await;
    let (_, key_a) = system.organization("Issuer").await;
    let (_, key_b) = system.organization("Bystander").await;
    system.stop_first_orchestrator().await;

    let submitted: Value = system.post("/v1/tasks", &key_a, thermal_task()).await.json().await.unwrap();
    let command = format!("/v1/commands/{}", submitted["command_id"].as_str().unwrap());
    let view: Value = system.get(&command, &key_a).await.json().await.unwrap();
    assert_eq!(view["status"], "pending");
    assert_eq!(system.get(&command, &key_b).await.status(), 404, "another organisation's command");
    assert_eq!(system.get(&command, common::OPERATOR_KEY).await.status(), 200);
    let unknown = format!("/v1/commands/{}", uuid::Uuid::new_v4());
    assert_eq!(system.get(&unknown, &key_a).await.status(), 404);
    let issuers: i64 = redis::cmd("HLEN")
        .arg(format!("{}:issuers", system.keys().tag()))
        .query_async(&mut system.redis.clone())
        .await
        .unwrap();
    assert_eq!(issuers, 1, "the pending submission's issuer");

    system.add_orchestrator("orchestrator-second");
    assert_eq!(system.settled(submitted["command_id"].as_str().unwrap(), &key_a).await["status"], "applied");
    common::eventually(std::time::Duration::from_secs(10), "the issuer to be forgotten", || async {
        let issuers: i64 = redis::cmd("HLEN")
            .arg(format!("{}:issuers", system.keys().tag()))
            .query_async(&mut system.redis.clone())
            .await
            .ok()?;
        (issuers == 0).then_some(())
    })
    .await;
    let per_message: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:command:*", system.keys().tag()))
        .query_async(&mut system.redis.clone())
        .await
        .unwrap();
    assert!(per_message.is_empty(), "{per_message:?}");
    system.stop().await;
}
