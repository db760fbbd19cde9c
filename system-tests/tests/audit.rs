//! Audit: the event log replays into the same state as the tables (from PostgreSQL or Redis,
//! twice alike), edits of the tables are reported precisely, and the proof chain verifies with
//! an independent script.

mod common;

use std::time::Duration;

use common::{eventually, spawn_system, thermal_task};
use grid_orchestrator::replay::{self, Divergence};
use serde_json::{Value, json};
use sqlx::PgPool;

async fn run_some_tasks(system: &common::System, api_key: &str, count: usize) {
    let (stop, fleet) = system.fleet(api_key, 2, 2, 1.0, Duration::ZERO).await;
    for _ in 0..count {
        system.post("/v1/tasks", api_key, thermal_task()).await;
    }
    // One rejected and one cancelled too, so that every kind of ending is replayed.
    let owners: Vec<uuid::Uuid> = (0..2).map(|_| uuid::Uuid::new_v4()).collect();
    let small_group = json!({"copropriete_id": uuid::Uuid::new_v4(), "deadline": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
        "kind": {"type": "energy_group_optimisation", "building_id": uuid::Uuid::new_v4(), "simulation_months": 12,
                 "participants": owners.iter().map(|owner| json!({"owner_id": owner, "readings_kwh": [1.0]})).collect::<Vec<_>>()}});
    system.post("/v1/tasks", api_key, small_group).await;
    eventually(Duration::from_secs(60), "every task to end and every event to be relayed", || async {
        let open: i64 =
            sqlx::query_scalar("select count(*) from task where status in ('queued', 'assigned', 'running')")
                .fetch_one(&system.pool)
                .await
                .ok()?;
        let total: i64 = sqlx::query_scalar("select count(*) from task").fetch_one(&system.pool).await.ok()?;
        let unrelayed: i64 =
            sqlx::query_scalar("select count(*) from event where seq > (select last_seq from relay_cursor)")
                .fetch_one(&system.pool)
                .await
                .ok()?;
        (open == 0 && total == count as i64 + 1 && unrelayed == 0).then_some(())
    })
    .await;
    common::all_credits_sealed(&system.pool).await;
    stop.send(true).unwrap();
    fleet.join().await;
}

fn fields(divergences: &[Divergence]) -> Vec<(String, String)> {
    divergences.iter().map(|divergence| (divergence.entity.clone(), divergence.field.clone())).collect()
}

/// Replay while the grid works: the events and the tables are read in one snapshot, so what
/// the writer commits meanwhile is no divergence.
#[sqlx::test(migrations = "../migrations")]
async fn replay_of_a_running_grid_diffs_empty(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let (_, api_key) = system.organization("Busy").await;
    let (stop, fleet) = system.fleet(&api_key, 4, 2, 1.0, Duration::from_millis(20)).await;
    let submitting = {
        let (http, url, key) = (system.http.clone(), system.url("/v1/tasks"), api_key.clone());
        tokio::spawn(async move {
            for _ in 0..400 {
                let response = http.post(&url).bearer_auth(&key).json(&thermal_task()).send().await.unwrap();
                assert_eq!(response.status(), 202);
            }
        })
    };
    let mut audits_with_work_open = 0;
    while !submitting.is_finished() {
        let (projection, divergences) =
            replay::audit(&pool, &grid_shared::cells::CellName::default(), 1).await.unwrap();
        assert_eq!(divergences, vec![], "after event {}", projection.last_seq);
        if projection.tasks.values().any(|task| !task.status.is_final()) {
            audits_with_work_open += 1;
        }
    }
    submitting.await.unwrap();
    assert!(audits_with_work_open >= 3, "{audits_with_work_open} audits ran while work was open");
    stop.send(true).unwrap();
    fleet.join().await;
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn replay_matches_the_tables_and_reports_every_edit(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let (_, api_key) = system.organization("Audited").await;
    run_some_tasks(&system, &api_key, 20).await;

    let (from_postgres, divergences) = replay::audit(&pool, &grid_shared::cells::CellName::default(), 1).await.unwrap();
    assert!(from_postgres.events > 60, "{} events", from_postgres.events);
    assert_eq!(divergences, vec![], "a clean run diffs empty");
    let mut redis = system.redis.clone();
    let events = format!("{}:events", system.keys().tag());
    let from_redis = replay::from_redis(&mut redis, &events, 1, from_postgres.last_seq).await.unwrap();
    assert_eq!(from_redis, from_postgres, "the stream and the archive tell the same story");
    assert_eq!(
        replay::from_postgres(&pool, &grid_shared::cells::CellName::default(), 1).await.unwrap(),
        from_postgres,
        "replaying twice gives the same result"
    );

    // Hand edits: a balance, a status, the fund, the chain head.
    let (task_id, node_id): (uuid::Uuid, uuid::Uuid) =
        sqlx::query_as("select task_id, node_id from credit_entry where account = 'node' limit 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    // The ledger is the proof leaves (the view `credit_entry` reads each leaf's two entries).
    sqlx::query("update proof_leaf set node_peur = node_peur + 1 where task_id = $1")
        .bind(task_id)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("update task set status = 'failed' where task_id = $1").bind(task_id).execute(&pool).await.unwrap();
    sqlx::query("update proof_leaf set cooperative_peur = cooperative_peur + 5 where task_id = $1")
        .bind(task_id)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("delete from proof_block where height = (select max(height) from proof_block)")
        .execute(&pool)
        .await
        .unwrap();
    let divergences = replay::diff(
        &mut pool.acquire().await.unwrap(),
        &grid_shared::cells::CellName::default(),
        &from_postgres,
        true,
    )
    .await
    .unwrap();
    assert_eq!(
        fields(&divergences),
        vec![
            (format!("task {task_id}"), "status".to_owned()),
            (format!("node {node_id}"), "credits_peur".to_owned()),
            ("cooperative fund".to_owned(), "balance_peur".to_owned()),
            ("proof chain".to_owned(), "block head".to_owned()),
        ]
    );
    assert_eq!((divergences[0].expected.as_str(), divergences[0].found.as_str()), ("completed", "failed"));
    let expected: i64 = divergences[1].expected.parse().unwrap();
    assert_eq!(divergences[1].found, (expected + 1).to_string());
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn the_replay_command_exits_non_zero_on_a_divergence(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let (_, api_key) = system.organization("Commanded").await;
    run_some_tasks(&system, &api_key, 5).await;
    let database: String = sqlx::query_scalar("select current_database()").fetch_one(&pool).await.unwrap();
    let base = std::env::var("DATABASE_URL").unwrap();
    let url = format!("{}/{database}", base.rsplit_once('/').unwrap().0);
    let replay = |from: &str| {
        let mut command = tokio::process::Command::new(common::processes::orchestrator_binary());
        command
            .args(["replay", "--from", from])
            .env("DATABASE_URL", &url)
            .env("REDIS_URL", common::redis_url())
            .env("GRID_NAMESPACE", &system.namespace);
        command
    };
    let clean = replay("1").output().await.unwrap();
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stdout));
    let report: Value = serde_json::from_slice(&clean.stdout).unwrap();
    assert_eq!(report["divergences"], json!([]));
    assert!(report["events_per_second"].as_f64().unwrap() > 0.0);
    sqlx::query("update task set attempts = attempts + 7 where status = 'completed' and task_id = (select min(task_id::text)::uuid from task where status = 'completed')")
        .execute(&pool)
        .await
        .unwrap();
    let edited = replay("1").output().await.unwrap();
    assert_eq!(edited.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&edited.stdout).unwrap();
    assert_eq!(report["divergences"][0]["field"], "attempts");
    system.stop().await;
}

/// The rows of the chain as the README's recipe exports them.
async fn exported_chain(pool: &PgPool) -> Value {
    sqlx::query_scalar(
        "select json_build_object(
             'links', (select coalesce(json_agg(g order by seq), '[]'::json) from green_proof g),
             'blocks', (select coalesce(json_agg(b order by height), '[]'::json) from proof_block b),
             'leaves', (select coalesce(json_agg(l order by block_height, leaf_index), '[]'::json) from proof_leaf l))::jsonb",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn an_independent_python_script_verifies_the_chain_and_a_tasks_proof_and_finds_tampering(pool: PgPool) {
    // Small blocks, so that the chain has several. A block closes once it holds 3 leaves, but
    // takes every credit of the batch that fills it (§10: whole writer transactions), and the
    // fleet runs at most 4 tasks at once: 8 credits make at least 2 blocks.
    let system = spawn_system(pool.clone(), &[("GRID_BLOCK_MAX_LEAVES", "3")]).await;
    let (_, api_key) = system.organization("Verified").await;
    run_some_tasks(&system, &api_key, 8).await;
    let (code, verdict) = common::python_verifier(&["8"], &exported_chain(&pool).await).await;
    assert_eq!(code, Some(0), "{verdict}");
    assert_eq!(verdict["leaves"], 8);
    assert!(verdict["blocks"].as_u64().unwrap() >= 2, "{verdict}");
    let ours: Value = system.get("/v1/proofs/verify", &api_key).await.json().await.unwrap();
    assert_eq!(
        (verdict["head_hash"].clone(), verdict["head_height"].clone()),
        (ours["head_hash"].clone(), ours["head_height"].clone())
    );

    // One task's inclusion proof, from the API, checked by the script from the leaf to the block:
    // the last leaf of the largest block, so that its audit path is not empty.
    let (task_id, height, index): (uuid::Uuid, i64, i32) = sqlx::query_as(
        "select task_id, block_height, leaf_index from proof_leaf
         where block_height = (select height from proof_block order by leaf_count desc, height desc limit 1)
         order by leaf_index desc limit 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(index >= 1, "a block holds several leaves");
    let proofs: Value = system.get(&format!("/v1/proofs/tasks/{task_id}"), &api_key).await.json().await.unwrap();
    assert_eq!(proofs["proofs"][0]["status"], "sealed", "{proofs}");
    assert_eq!(
        (proofs["proofs"][0]["block_height"].clone(), proofs["proofs"][0]["leaf_index"].clone()),
        (json!(height), json!(index))
    );
    let (code, checked) = common::python_verifier(&["--proof"], &proofs).await;
    assert_eq!(code, Some(0), "{checked}");
    // The shared verifier agrees, and a proof with a changed leaf does not hold.
    let proof: grid_shared::blocks::InclusionProof = serde_json::from_value(json!({
        "leaf_line": proofs["proofs"][0]["leaf_line"], "leaf_hash": proofs["proofs"][0]["leaf_hash"],
        "leaf_index": proofs["proofs"][0]["leaf_index"], "tree_size": proofs["proofs"][0]["tree_size"],
        "audit_path": proofs["proofs"][0]["audit_path"], "block_line": proofs["proofs"][0]["block"]["line"],
        "block_hash": proofs["proofs"][0]["block"]["hash"]}))
    .unwrap();
    assert_eq!(proof.verify(), Ok(()));
    let mut forged = proofs.clone();
    let line = forged["proofs"][0]["leaf_line"].as_str().unwrap().replacen("|1|", "|2|", 1);
    forged["proofs"][0]["leaf_line"] = json!(line);
    let (code, _) = common::python_verifier(&["--proof"], &forged).await;
    assert_eq!(code, Some(1), "a forged leaf line is refused");
    // The leaf records the carbon signal its credit used (kgp3). A forger who inflates the
    // credit in the line and re-hashes it is caught: the figures no longer follow from it.
    let line = proofs["proofs"][0]["leaf_line"].as_str().unwrap();
    let mut fields: Vec<String> = line.split('|').map(str::to_owned).collect();
    assert_eq!((fields[0].as_str(), fields.len()), ("kgp3-leaf", 17), "{line}");
    assert_eq!(fields[6], "BE", "the node's zone: the grid's default");
    fields[13] = (fields[13].parse::<i64>().unwrap() + 1_000).to_string();
    let inflated_line = fields.join("|");
    let mut inflated = proofs.clone();
    inflated["proofs"][0]["leaf_hash"] = json!(hex::encode(grid_shared::merkle::leaf_hash(inflated_line.as_bytes())));
    inflated["proofs"][0]["leaf_line"] = json!(inflated_line);
    let (code, checked) = common::python_verifier(&["--proof"], &inflated).await;
    assert_eq!(code, Some(1), "{checked}");
    assert!(checked["proofs"][0]["reason"].as_str().unwrap().contains("does not follow from its basis"), "{checked}");

    // An edited leaf is named; a forged block appended is found.
    let edit = |delta: i64| {
        sqlx::query("update proof_leaf set energy_uwh = energy_uwh + $1 where block_height = $2 and leaf_index = $3")
            .bind(delta)
            .bind(height)
            .bind(index)
            .execute(&pool)
    };
    edit(1).await.unwrap();
    let (code, verdict) = common::python_verifier(&["8"], &exported_chain(&pool).await).await;
    assert_eq!(
        (code, verdict["first_invalid_block"].clone(), verdict["first_invalid_leaf"].clone()),
        (Some(1), json!(height), json!(index))
    );
    edit(-1).await.unwrap();
    sqlx::query(
        "insert into proof_block (height, prev_hash, merkle_root, leaf_count, sealed_at, difficulty, nonce, hash)
         select height + 1, hash, merkle_root, leaf_count, now(), difficulty, 0, repeat('0', 64)
         from proof_block order by height desc limit 1",
    )
    .execute(&pool)
    .await
    .unwrap();
    let forged_height: i64 = sqlx::query_scalar("select max(height) from proof_block").fetch_one(&pool).await.unwrap();
    let (code, verdict) = common::python_verifier(&["8"], &exported_chain(&pool).await).await;
    assert_eq!((code, verdict["first_invalid_block"].clone()), (Some(1), json!(forged_height)));
    let ours: Value = system.get("/v1/proofs/verify", &api_key).await.json().await.unwrap();
    assert_eq!(ours["first_invalid_block"], forged_height);
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn the_event_log_pages_and_streams_each_organisation_its_own_events(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[("GRID_BLOCK_MAX_LEAVES", "1")]).await;
    let (organization_a, key_a) = system.organization("Pages A").await;
    let (organization_b, key_b) = system.organization("Pages B").await;
    run_some_tasks(&system, &key_a, 3).await;
    let task_b: Value = system.post("/v1/tasks", &key_b, thermal_task()).await.json().await.unwrap();
    system.settled(task_b["command_id"].as_str().unwrap(), &key_b).await;

    // Pages of the archive, scoped.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = system.get(&format!("/v1/events?after={after}&limit=4"), &key_a).await.json().await.unwrap();
        for event in page["events"].as_array().unwrap() {
            assert_eq!(event["envelope"]["organization_id"].as_str(), Some(organization_a.as_str()), "{event}");
            seen.push(event["seq"].as_i64().unwrap());
        }
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert!(seen.len() > 10 && seen.windows(2).all(|pair| pair[0] < pair[1]), "{seen:?}");
    let everything: Value = system.get("/v1/events?limit=1000", common::OPERATOR_KEY).await.json().await.unwrap();
    let organizations: std::collections::HashSet<&str> = everything["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|event| event["envelope"]["organization_id"].as_str())
        .collect();
    assert!(organizations.contains(organization_a.as_str()) && organizations.contains(organization_b.as_str()));

    // The live stream, resumed after a given event.
    let resume_after = seen[seen.len() - 3];
    let response = system
        .http
        .get(system.url("/v1/events"))
        .bearer_auth(&key_a)
        .header("accept", "text/event-stream")
        .header("last-event-id", format!("{resume_after}-0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = Box::pin(response.bytes_stream());
    let mut parser = grid_worker::sse::SseParser::default();
    let mut streamed = Vec::new();
    while streamed.len() < 2 {
        use futures_util::StreamExt;
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next()).await.unwrap().unwrap().unwrap();
        for event in parser.feed(&chunk) {
            let envelope: Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(envelope["organization_id"].as_str(), Some(organization_a.as_str()));
            streamed.push(event.id.unwrap());
        }
    }
    assert_eq!(streamed, [format!("{}-0", seen[seen.len() - 2]), format!("{}-0", seen[seen.len() - 1])]);

    // The chain's blocks, page by page (one leaf each here); blocks name no task, so B sees them
    // too, but not A's tasks' proofs.
    let blocks: i64 = sqlx::query_scalar("select count(*) from proof_block").fetch_one(&pool).await.unwrap();
    assert!(blocks >= 2, "{blocks} blocks");
    let first: Value = system.get("/v1/proofs?limit=1", common::OPERATOR_KEY).await.json().await.unwrap();
    assert_eq!(first["blocks"].as_array().unwrap().len(), 1, "{first}");
    let next = first["next_after_height"].as_i64().unwrap();
    let rest: Value =
        system.get(&format!("/v1/proofs?after_height={next}&limit=100"), &key_b).await.json().await.unwrap();
    assert_eq!(rest["blocks"].as_array().unwrap().len() as i64, blocks - 1);
    assert_eq!(rest["blocks"][0]["height"].as_i64(), Some(next + 1));
    assert_eq!(rest["blocks"][0]["prev_hash"], first["blocks"][0]["hash"]);
    let task_a: uuid::Uuid =
        sqlx::query_scalar("select task_id from proof_leaf limit 1").fetch_one(&pool).await.unwrap();
    let mine: Value = system.get(&format!("/v1/proofs/tasks/{task_a}"), &key_a).await.json().await.unwrap();
    assert_eq!(mine["proofs"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(system.get(&format!("/v1/proofs/tasks/{task_a}"), &key_b).await.status(), 404);
    let links_of_b: Value = system.get("/v1/proofs/links", &key_b).await.json().await.unwrap();
    assert_eq!(links_of_b["proofs"], json!([]));
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_credit_is_proven_pending_until_its_block_is_sealed_then_sealed(pool: PgPool) {
    // Blocks close three seconds after their first leaf: long enough to see the credit pending.
    let system = spawn_system(pool.clone(), &[("GRID_SEAL_INTERVAL_MS", "3000")]).await;
    let (_, api_key) = system.organization("Patient").await;
    let node = system.manual_node(&api_key, 1, 300.0).await;
    let mut channel = system.channel(&node, None).await;
    let submitted: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let task_id = submitted["task_id"].as_str().unwrap().to_owned();
    channel.next(Duration::from_secs(10)).await;
    let completed_at = std::time::Instant::now();
    // 10 µWh, 5 of them solar: within what one core can draw in the time since assignment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    system.report(&node, common::completion(&task_id, 1, 0.000_01, 0.000_005)).await;
    let pending = eventually(Duration::from_secs(10), "the credit's leaf", || async {
        let proofs: Value = system.get(&format!("/v1/proofs/tasks/{task_id}"), &api_key).await.json().await.ok()?;
        proofs["proofs"].as_array().is_some_and(|proofs| !proofs.is_empty()).then_some(proofs)
    })
    .await;
    assert!(completed_at.elapsed() < Duration::from_secs(3), "looked before the block could close");
    assert_eq!(pending["proofs"][0]["status"], "pending", "{pending}");
    assert_eq!(pending["proofs"][0]["audit_path"], json!([]));
    let sealed = eventually(Duration::from_secs(10), "the block to be sealed", || async {
        let proofs: Value = system.get(&format!("/v1/proofs/tasks/{task_id}"), &api_key).await.json().await.ok()?;
        (proofs["proofs"][0]["status"] == "sealed").then_some(proofs)
    })
    .await;
    assert_eq!(sealed["proofs"][0]["leaf_hash"], pending["proofs"][0]["leaf_hash"], "the leaf did not change");
    let (code, checked) = common::python_verifier(&["--proof"], &sealed).await;
    assert_eq!(code, Some(0), "{checked}");
    let sealed_events: i64 = sqlx::query_scalar("select count(*) from event where event_type = 'BlockSealed'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sealed_events, 1);
    system.stop().await;
}
