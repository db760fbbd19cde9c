//! GDPR consent end to end: grants with their history and address, admission, and revocation
//! as a scheduling event that cancels, tells nodes and purges the owner's readings everywhere.

mod common;

use std::time::Duration;

use common::{completion, eventually, spawn_system, thermal_task};
use serde_json::{Value, json};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(20);
/// A reading no other participant has, to look for it everywhere afterwards.
const MARKER: f64 = 987.654;

async fn grant(system: &common::System, api_key: &str, owner: &uuid::Uuid) {
    let response = system
        .http
        .put(system.url(&format!("/v1/owners/{owner}/consent")))
        .bearer_auth(api_key)
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"consent_version": "2026-03"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(system.settled(body["command_id"].as_str().unwrap(), api_key).await["status"], "applied");
}

/// Revokes the owner's consent; waits until it is applied.
async fn revoke(system: &common::System, api_key: &str, owner: &uuid::Uuid) {
    let response = system
        .http
        .delete(system.url(&format!("/v1/owners/{owner}/consent")))
        .bearer_auth(api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(system.settled(body["command_id"].as_str().unwrap(), api_key).await["status"], "applied");
}

/// The next event on a node's channel cancels `task_id` for a consent revocation.
async fn told_of_revocation(channel: &mut common::Channel, task_id: &str) {
    let cancelled = channel.next(WAIT).await;
    assert_eq!(cancelled.event.as_deref(), Some("TASK:CANCELLED"));
    let data: Value = serde_json::from_str(&cancelled.data).unwrap();
    assert_eq!((data["task_id"].as_str(), data["reason"].as_str()), (Some(task_id), Some("consent_revoked")));
}

fn group_task(owners: &[uuid::Uuid]) -> Value {
    let participants: Vec<Value> = owners
        .iter()
        .enumerate()
        .map(|(index, owner)| {
            let reading = if index == 0 { MARKER } else { 200.0 + index as f64 };
            json!({"owner_id": owner, "readings_kwh": vec![reading; 12]})
        })
        .collect();
    json!({
        "copropriete_id": uuid::Uuid::new_v4(),
        "deadline": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
        "kind": {"type": "energy_group_optimisation", "building_id": uuid::Uuid::new_v4(), "simulation_months": 12,
                 "participants": participants}
    })
}

async fn all_stream_text(system: &common::System) -> String {
    let mut redis = system.redis.clone();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{{{}:*", system.namespace)).query_async(&mut redis).await.unwrap();
    let mut text = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut redis).await.unwrap();
        if kind == "stream" {
            let entries: redis::streams::StreamRangeReply =
                redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query_async(&mut redis).await.unwrap();
            for entry in entries.ids {
                text.push_str(&entry.get::<String>(grid_shared::wire::fields::ENVELOPE).unwrap_or_default());
            }
        }
    }
    text
}

#[sqlx::test(migrations = "../migrations")]
async fn revoking_consent_cancels_the_owners_tasks_tells_the_node_and_purges_the_readings(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let (_, api_key) = system.organization("Revocable").await;
    let owners: Vec<uuid::Uuid> = (0..6).map(|_| uuid::Uuid::new_v4()).collect();
    for owner in &owners {
        grant(&system, &api_key, owner).await;
    }
    let revoked_owner = owners[0];
    let node = system.manual_node(&api_key, 1, 300.0).await;
    let mut channel = system.channel(&node, None).await;

    let running: Value = system.post("/v1/tasks", &api_key, group_task(&owners)).await.json().await.unwrap();
    let running_id = running["task_id"].as_str().unwrap().to_owned();
    let assigned = channel.next(WAIT).await;
    assert!(assigned.data.contains(&running_id) && assigned.data.contains("987.654"), "the node got the readings");
    assert!(!assigned.data.contains(&revoked_owner.to_string()), "but not who they belong to");
    system.report(&node, json!({"task_id": running_id, "attempt": 1, "status": "started"})).await;
    eventually(WAIT, "the task to run", || async {
        (system.task(&api_key, &running_id).await["status"] == "running").then_some(())
    })
    .await;
    let queued: Value = system.post("/v1/tasks", &api_key, group_task(&owners)).await.json().await.unwrap();
    let queued_id = queued["task_id"].as_str().unwrap().to_owned();
    system.settled(queued["command_id"].as_str().unwrap(), &api_key).await;
    let unrelated: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let unrelated_id = unrelated["task_id"].as_str().unwrap().to_owned();
    system.settled(unrelated["command_id"].as_str().unwrap(), &api_key).await;

    revoke(&system, &api_key, &revoked_owner).await;

    // The node running the owner's data is told at once.
    told_of_revocation(&mut channel, &running_id).await;
    for task_id in [&running_id, &queued_id] {
        let task = system.task(&api_key, task_id).await;
        assert_eq!(
            (task["status"].as_str(), task["reason"]["code"].as_str()),
            (Some("cancelled"), Some("consent_revoked"))
        );
    }
    assert_ne!(system.task(&api_key, &unrelated_id).await["status"], "cancelled", "other tasks go on");

    // The readings are gone from every stored payload, the event log and Redis.
    let kinds: Vec<String> = sqlx::query_scalar("select kind::text from task").fetch_all(&pool).await.unwrap();
    for kind in &kinds {
        assert!(!kind.contains("987.654") && !kind.contains(&revoked_owner.to_string()), "{kind}");
    }
    let leaked: i64 = sqlx::query_scalar("select count(*) from event where envelope::text like '%987.654%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(leaked, 0, "events never carry readings");
    eventually(WAIT, "the Redis copies to be deleted", || async {
        (!all_stream_text(&system).await.contains("987.654")).then_some(())
    })
    .await;
    let purged: Value =
        sqlx::query_scalar("select envelope -> 'payload' from event where event_type = 'ParticipantDataPurged'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let mut purged_tasks: Vec<&str> = purged["task_ids"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    purged_tasks.sort();
    let mut expected = vec![running_id.as_str(), queued_id.as_str()];
    expected.sort();
    assert_eq!(purged_tasks, expected);

    // A result that arrives anyway is discarded.
    let late: Value = system.report(&node, completion(&running_id, 1, 0.000001, 0.0)).await.json().await.unwrap();
    assert_eq!(system.settled(late["command_id"].as_str().unwrap(), &node.token).await["status"], "rejected");

    // The record keeps both acts; the address is the peer's (no proxy is trusted here).
    let consent: Value =
        system.get(&format!("/v1/owners/{revoked_owner}/consent"), &api_key).await.json().await.unwrap();
    assert_eq!(consent["granted"], false);
    let actions: Vec<&str> =
        consent["history"].as_array().unwrap().iter().filter_map(|change| change["action"].as_str()).collect();
    assert_eq!(actions, ["granted", "revoked"]);
    assert_eq!(consent["history"][0]["consent_ip"], "127.0.0.1");
    assert_eq!(consent["consent_version"], "2026-03");
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_group_task_needs_every_participants_consent(pool: PgPool) {
    let system = spawn_system(pool, &[]).await;
    let (_, api_key) = system.organization("Careful").await;
    let owners: Vec<uuid::Uuid> = (0..5).map(|_| uuid::Uuid::new_v4()).collect();
    for owner in &owners[..4] {
        grant(&system, &api_key, owner).await;
    }
    let submitted: Value = system.post("/v1/tasks", &api_key, group_task(&owners)).await.json().await.unwrap();
    let view = system.settled(submitted["command_id"].as_str().unwrap(), &api_key).await;
    assert_eq!(view["status"], "rejected");
    let task = system.task(&api_key, submitted["task_id"].as_str().unwrap()).await;
    assert_eq!(task["reason"]["code"], "consent_not_granted");
    assert_eq!(task["reason"]["owner_id"].as_str(), Some(owners[4].to_string().as_str()));
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn consent_is_checked_again_at_dispatch(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let (_, api_key) = system.organization("Twice careful").await;
    let owners: Vec<uuid::Uuid> = (0..5).map(|_| uuid::Uuid::new_v4()).collect();
    for owner in &owners {
        grant(&system, &api_key, owner).await;
    }
    let group: Value = system.post("/v1/tasks", &api_key, group_task(&owners)).await.json().await.unwrap();
    assert_eq!(system.settled(group["command_id"].as_str().unwrap(), &api_key).await["status"], "applied");
    // A consent withdrawn behind the cascade's back (a restore from backup, a manual fix).
    sqlx::query("update consent set granted = false where owner_id = $1").bind(owners[2]).execute(&pool).await.unwrap();
    let _node = system.manual_node(&api_key, 4, 300.0).await;
    let other: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let other_id = other["task_id"].as_str().unwrap();
    eventually(WAIT, "the other task to be placed", || async {
        (system.task(&api_key, other_id).await["status"] == "assigned").then_some(())
    })
    .await;
    // The group task was in that scheduling pass too, with free cores: it was not sent.
    assert_eq!(system.task(&api_key, group["task_id"].as_str().unwrap()).await["status"], "queued");
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_organisation_lists_its_owners_consent_page_by_page_and_no_one_elses(pool: PgPool) {
    let system = spawn_system(pool, &[]).await;
    let (_, key_a) = system.organization("Owners A").await;
    let (_, key_b) = system.organization("Owners B").await;
    let mut owners_a: Vec<String> = Vec::new();
    for (key, count) in [(&key_a, 3), (&key_b, 1)] {
        for _ in 0..count {
            let owner = uuid::Uuid::new_v4().to_string();
            let response = system.http.put(system.url(&format!("/v1/owners/{owner}/consent"))).bearer_auth(key);
            let accepted: Value =
                response.json(&json!({"consent_version": "2026-01"})).send().await.unwrap().json().await.unwrap();
            assert_eq!(system.settled(accepted["command_id"].as_str().unwrap(), key).await["status"], "applied");
            if key == &key_a {
                owners_a.push(owner);
            }
        }
    }
    owners_a.sort();
    let first: Value = system.get("/v1/owners?limit=2", &key_a).await.json().await.unwrap();
    let listed: Vec<&str> =
        first["owners"].as_array().unwrap().iter().map(|owner| owner["owner_id"].as_str().unwrap()).collect();
    assert_eq!(listed, owners_a[..2].iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(first["owners"][0]["granted"], true);
    let next = first["next_after"].as_str().unwrap();
    let rest: Value = system.get(&format!("/v1/owners?limit=2&after={next}"), &key_a).await.json().await.unwrap();
    assert_eq!(rest["owners"].as_array().unwrap().len(), 1);
    assert_eq!(rest["owners"][0]["owner_id"].as_str(), Some(owners_a[2].as_str()));
    assert!(rest["next_after"].is_null());
    let other: Value = system.get("/v1/owners", &key_b).await.json().await.unwrap();
    assert_eq!(other["owners"].as_array().unwrap().len(), 1, "B sees its own owner only");
    assert!(!owners_a.iter().any(|owner| other.to_string().contains(owner.as_str())));
    assert_eq!(system.get("/v1/owners?limit=0", &key_a).await.status(), 422);
    assert_eq!(system.get("/v1/owners", common::OPERATOR_KEY).await.status(), 403, "an organisation's route");
    system.stop().await;
}

/// Consent is the organisation's in every cell. Granted through the default cell, it admits a
/// group task in another cell (whose writer reads the grant from PostgreSQL); revoked, the
/// default cell's writer forwards the revocation, and the other cell's writer cancels the
/// owner's tasks there (telling the node that runs one) and purges the readings, once.
#[sqlx::test(migrations = "../migrations")]
async fn a_revocation_reaches_the_owners_tasks_in_every_cell(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[("GRID_CELLS", "home:BE,away:BE")]).await;
    let (_, api_key) = system.organization("Two-cell copropriété").await;
    let owners: Vec<uuid::Uuid> = (0..6).map(|_| uuid::Uuid::new_v4()).collect();
    for owner in &owners {
        grant(&system, &api_key, owner).await;
    }
    let node = system.manual_node_in(Some("away"), &api_key, 1, 300.0).await;
    let mut channel = system.channel(&node, None).await;
    let in_away = |mut body: Value| {
        body["cell"] = json!("away");
        body
    };
    let running: Value = system.post("/v1/tasks", &api_key, in_away(group_task(&owners))).await.json().await.unwrap();
    let running_id = running["task_id"].as_str().unwrap().to_owned();
    assert_eq!(system.settled(running["command_id"].as_str().unwrap(), &api_key).await["status"], "applied");
    let assigned = channel.next(WAIT).await;
    assert!(assigned.data.contains(&running_id), "{}", assigned.data);
    system.report(&node, json!({"task_id": running_id, "attempt": 1, "status": "started"})).await;
    eventually(WAIT, "the task to run", || async {
        (system.task(&api_key, &running_id).await["status"] == "running").then_some(())
    })
    .await;
    let queued: Value = system.post("/v1/tasks", &api_key, in_away(group_task(&owners))).await.json().await.unwrap();
    let queued_id = queued["task_id"].as_str().unwrap().to_owned();
    assert_eq!(system.settled(queued["command_id"].as_str().unwrap(), &api_key).await["status"], "applied");
    for task_id in [&running_id, &queued_id] {
        assert_eq!(system.task(&api_key, task_id).await["cell"], "away");
    }

    let revoked_owner = owners[0];
    revoke(&system, &api_key, &revoked_owner).await;

    // The away cell's node is told, and both tasks there end cancelled for the revocation.
    told_of_revocation(&mut channel, &running_id).await;
    for task_id in [&running_id, &queued_id] {
        let task = eventually(WAIT, "the task to be cancelled", || async {
            let task = system.task(&api_key, task_id).await;
            (task["status"] == "cancelled").then_some(task)
        })
        .await;
        assert_eq!(task["reason"]["code"], "consent_revoked");
    }
    let kinds: Vec<String> =
        sqlx::query_scalar("select kind::text from task where cell_id = 'away'").fetch_all(&pool).await.unwrap();
    for kind in &kinds {
        assert!(!kind.contains("987.654") && !kind.contains(&revoked_owner.to_string()), "{kind}");
    }
    // Each cell's log says what it did: the revocation in both, the purge where the tasks were.
    let logged: Vec<(String, String)> = sqlx::query_as(
        "select cell_id, event_type from event
          where event_type in ('ConsentRevoked', 'ParticipantDataPurged') order by cell_id, seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let logged: Vec<(&str, &str)> = logged.iter().map(|(cell, kind)| (cell.as_str(), kind.as_str())).collect();
    assert_eq!(logged, [("away", "ConsentRevoked"), ("away", "ParticipantDataPurged"), ("home", "ConsentRevoked")]);
    // The consent's record keeps the two acts once (the away cell writes no consent rows).
    let consent: Value =
        system.get(&format!("/v1/owners/{revoked_owner}/consent"), &api_key).await.json().await.unwrap();
    let actions: Vec<&str> =
        consent["history"].as_array().unwrap().iter().filter_map(|change| change["action"].as_str()).collect();
    assert_eq!(actions, ["granted", "revoked"]);
    for cell in ["home", "away"] {
        let name = grid_shared::cells::CellName::parse(cell).unwrap();
        let (_, divergences) = grid_orchestrator::replay::audit(&pool, &name, 1).await.unwrap();
        assert_eq!(divergences, vec![], "cell {cell} replays to its rows");
    }
    system.stop().await;
}
