//! The whole loop over real PostgreSQL and Redis: gateway, orchestrator and simulated nodes,
//! driven over HTTP.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{OPERATOR_KEY, eventually, spawn_system};
use grid_shared::carbon::{CarbonPolicy, MicroWattHours};
use grid_shared::envelope::Envelope;
use grid_shared::signals::{Basis, SignalBook, Zone, bundled_layer};
use grid_worker::simulate::{FleetConfig, launch};
use serde_json::{Value, json};
use sqlx::PgPool;

fn thermal(index: usize) -> Value {
    json!({
        "copropriete_id": uuid::Uuid::new_v4(),
        "priority": index % 11,
        "deadline": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339(),
        "kind": {"type": "building_thermal_simulation", "building_id": uuid::Uuid::new_v4(),
                 "insulation_score": (index % 10) as f64 / 10.0, "surface_m2": 60.0 + index as f64,
                 "heating_degree_days": 2400.0}
    })
}

fn group(owners: &[uuid::Uuid]) -> Value {
    let participants: Vec<Value> = owners
        .iter()
        .enumerate()
        .map(|(index, owner)| json!({"owner_id": owner, "readings_kwh": (0..12).map(|month| 250.0 + (index * 7 + month * 13) as f64).collect::<Vec<_>>()}))
        .collect();
    json!({
        "copropriete_id": uuid::Uuid::new_v4(),
        "deadline": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339(),
        "kind": {"type": "energy_group_optimisation", "building_id": uuid::Uuid::new_v4(), "simulation_months": 24,
                 "participants": participants}
    })
}

#[sqlx::test(migrations = "../migrations")]
async fn a_hundred_tasks_run_on_three_nodes_and_are_credited_exactly_once(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let (organization_id, api_key) = system.organization("Copropriété du Parc").await;

    // Owners consent before their readings are used.
    let owners: Vec<uuid::Uuid> = (0..6).map(|_| uuid::Uuid::new_v4()).collect();
    for owner in &owners {
        let response = system
            .http
            .put(system.url(&format!("/v1/owners/{owner}/consent")))
            .bearer_auth(&api_key)
            .json(&json!({"consent_version": "2026-01"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        assert_eq!(system.settled(body["command_id"].as_str().unwrap(), &api_key).await["status"], "applied");
    }

    let (stop_fleet, fleet_shutdown) = tokio::sync::watch::channel(false);
    let fleet = launch(
        FleetConfig {
            gateway: system.base.clone(),
            api_key: api_key.clone(),
            nodes: 3,
            cpu_cores: 2,
            solar_fraction: 0.67,
            peak_watts: 500.0,
            day_seconds: None,
            constant_solar_watts: Some(400.0),
            heartbeat_every: Duration::from_millis(200),
            min_task_duration: Duration::ZERO,
            instant_results: false,
            zone: None,
            cell: None,
            transport: Default::default(),
        },
        fleet_shutdown,
    )
    .await
    .expect("the fleet registers");

    let mut task_ids = Vec::new();
    for index in 0..100 {
        let body = if index % 4 == 0 { group(&owners) } else { thermal(index) };
        let response = system.post("/v1/tasks", &api_key, body).await;
        assert_eq!(response.status(), 202);
        let accepted: Value = response.json().await.unwrap();
        task_ids.push(accepted["task_id"].as_str().unwrap().to_owned());
    }

    let tasks: Vec<Value> = eventually(Duration::from_secs(90), "every task to complete", || async {
        let mut views = Vec::new();
        for task_id in &task_ids {
            let view: Value = system.get(&format!("/v1/tasks/{task_id}"), &api_key).await.json().await.ok()?;
            if view["status"] != "completed" {
                return None;
            }
            views.push(view);
        }
        Some(views)
    })
    .await;

    // Exactly once: one completion event, one pair of ledger entries and one proof per task.
    let completions: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "select (envelope -> 'payload' ->> 'task_id')::uuid, count(*) from event where event_type = 'TaskCompleted' group by 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(completions.len(), 100);
    assert!(completions.iter().all(|(_, count)| *count == 1));
    let proofs: i64 =
        sqlx::query_scalar("select count(distinct task_id) from proof_leaf").fetch_one(&pool).await.unwrap();
    let entries: i64 = sqlx::query_scalar("select count(*) from credit_entry").fetch_one(&pool).await.unwrap();
    assert_eq!((proofs, entries), (100, 200));

    // Credits follow the formula at the intensity of the node's zone (the default, BE) in the
    // hour of the credit, from the bundled file, and the shares add up exactly.
    let policy = CarbonPolicy::default();
    let signals = SignalBook::fixed(policy.grid_intensity_mg_per_kwh).then(bundled_layer(Basis::Lifecycle));
    for task in &tasks {
        let solar = MicroWattHours((task["solar_contribution_wh"].as_f64().unwrap() * 1e6).round() as i64);
        let credit = &task["credits"][0];
        assert_eq!(task["credits"].as_array().map(Vec::len), Some(1), "{task}");
        let hour: chrono::DateTime<chrono::Utc> = serde_json::from_value(credit["hour"].clone()).unwrap();
        let expected = signals.lookup(&Zone::parse("BE").unwrap(), hour);
        assert_eq!(credit["zone"], "BE");
        assert_eq!(credit["intensity_mg_per_kwh"].as_i64(), Some(expected.intensity_mg_per_kwh), "{credit}");
        assert_eq!(credit["intensity_source"], expected.source.as_str());
        assert_eq!(credit["intensity_kind"], "average");
        let split = policy.credit_at(solar, expected.intensity_mg_per_kwh);
        // Its SCI: operational (grid energy at the zone's intensity, the sun at the panels'
        // factor) plus an embodied share, apart and summed.
        let sci = &task["sci"];
        let (operational, embodied) = (sci["operational_ng"].as_i64().unwrap(), sci["embodied_ng"].as_i64().unwrap());
        let energy = MicroWattHours((task["energy_used_wh"].as_f64().unwrap() * 1e6).round() as i64);
        let expected_operational =
            grid_shared::carbon::Sci::operational(energy, solar, expected.intensity_mg_per_kwh, 41_000);
        assert_eq!(operational, expected_operational, "{task}");
        assert!(embodied >= 0, "{task}");
        assert_eq!(sci["total_ng"].as_i64(), Some(operational + embodied));
        assert_eq!(task["carbon_saved_ng"].as_i64(), Some(split.carbon_saved.0), "{task}");
        assert_eq!(task["node_share_peur"].as_i64(), Some(split.node_share.0));
        assert_eq!(task["cooperative_share_peur"].as_i64(), Some(split.cooperative_share.0));
        assert_eq!(split.node_share.0 + split.cooperative_share.0, split.total.0);
        assert!(task["result_hash"].as_str().is_some_and(|hash| hash.len() == 64));
    }
    let nodes_used: HashSet<&str> = tasks.iter().filter_map(|task| task["node_id"].as_str()).collect();
    assert!(nodes_used.len() >= 2, "work spread over the fleet: {nodes_used:?}");
    // Each result is kept as the text its hash is the SHA-256 of.
    let (kept, hashed): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where encode(sha256(convert_to(result_json::text, 'UTF8')), 'hex') = result_hash)
         from task_result where result_json is not null",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(kept >= 100, "every task's result kept: {kept}");
    assert_eq!(hashed, kept, "each in the text its hash commits to");
    // The archive keeps each envelope without the fields its row holds; readers get it whole.
    let repeated: i64 = sqlx::query_scalar(
        "select count(*) from event
         where envelope::jsonb ?| array['id', 'type', 'occurred_at', 'organization_id']",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(repeated, 0, "no archived envelope repeats its row's columns");
    let history: Value = system.get(&format!("/v1/tasks/{}/events", task_ids[0]), &api_key).await.json().await.unwrap();
    for event in history["events"].as_array().unwrap() {
        let envelope = Envelope::from_json(&event["envelope"].to_string()).expect("a whole envelope");
        assert_eq!(envelope.message_type, event["type"].as_str().unwrap());
        assert_eq!(serde_json::to_value(envelope.occurred_at).unwrap(), event["occurred_at"]);
        assert_eq!(envelope.organization_id.map(|id| id.to_string()).as_deref(), Some(organization_id.as_str()));
    }

    // The stats agree with the ledger.
    let stats: Value = system.get("/v1/stats", &api_key).await.json().await.unwrap();
    let fund: i64 = sqlx::query_scalar(
        "select coalesce(sum(amount_peur), 0)::bigint from credit_entry where account = 'cooperative'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stats["cooperative_fund_peur"].as_i64(), Some(fund));
    let solar: i64 = sqlx::query_scalar("select coalesce(sum(solar_uwh), 0)::bigint from proof_leaf")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stats["total_solar_uwh"].as_i64(), Some(solar), "the credited sun, from the block leaves");
    assert_eq!(stats["tasks"]["completed_tasks"], 100);
    assert_eq!(stats["nodes"]["total_nodes"], 3);
    assert_eq!(stats["nodes"]["active_nodes"], 3);
    let compat: Value = system.get("/grid/stats", &api_key).await.json().await.unwrap();
    assert_eq!(compat["cooperative_fund_peur"], stats["cooperative_fund_peur"]);

    // The chain verifies once every credit is sealed, and an edited leaf breaks it at that leaf.
    common::all_credits_sealed(&pool).await;
    let verdict: Value = system.get("/v1/proofs/verify", &api_key).await.json().await.unwrap();
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["leaves"], 100);
    let (height, index): (i64, i32) = sqlx::query_as(
        "select block_height, leaf_index from proof_leaf order by block_height, leaf_index offset 41 limit 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::query("update proof_leaf set solar_uwh = solar_uwh + 1 where block_height = $1 and leaf_index = $2")
        .bind(height)
        .bind(index)
        .execute(&pool)
        .await
        .unwrap();
    let verdict: Value = system.get("/v1/proofs/verify", OPERATOR_KEY).await.json().await.unwrap();
    assert_eq!(
        (verdict["valid"].clone(), verdict["first_invalid_block"].clone(), verdict["first_invalid_leaf"].clone()),
        (json!(false), json!(height), json!(index)),
        "{verdict}"
    );
    let offline = grid_orchestrator::ledger::verify_stored_chain(&pool, "main", 8).await.unwrap();
    assert_eq!((offline.first_invalid_block, offline.first_invalid_leaf), (Some(height), Some(i64::from(index))));

    stop_fleet.send(true).unwrap();
    fleet.join().await;
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn the_same_command_added_twice_changes_nothing(pool: PgPool) {
    let mut system = spawn_system(pool.clone(), &[]).await;
    let (_, api_key) = system.organization("Twice").await;
    let response = system.post("/v1/tasks", &api_key, thermal(1)).await;
    let accepted: Value = response.json().await.unwrap();
    let command_id = accepted["command_id"].as_str().unwrap().to_owned();
    assert_eq!(system.settled(&command_id, &api_key).await["status"], "applied");

    // Replay the very entry the gateway wrote, as a redelivery would.
    let stream = format!("{}:commands", system.keys().tag());
    let entries: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").query_async(&mut system.redis).await.unwrap();
    let original = entries
        .ids
        .iter()
        .find(|entry| {
            entry.get::<String>(grid_shared::wire::fields::ENVELOPE).is_some_and(|text| text.contains(&command_id))
        })
        .unwrap();
    let envelope: String = original.get(grid_shared::wire::fields::ENVELOPE).unwrap();
    let duplicate_id: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg(grid_shared::wire::fields::TYPE)
        .arg("CMD:SUBMIT_TASK")
        .arg(grid_shared::wire::fields::ENVELOPE)
        .arg(&envelope)
        .query_async(&mut system.redis)
        .await
        .unwrap();

    eventually(Duration::from_secs(10), "the duplicate to be read and acknowledged", || async {
        let groups: redis::streams::StreamInfoGroupsReply =
            redis::cmd("XINFO").arg("GROUPS").arg(&stream).query_async(&mut system.redis.clone()).await.ok()?;
        let group = groups.groups.first()?;
        (group.pending == 0 && group.last_delivered_id == duplicate_id).then_some(())
    })
    .await;
    let tasks: i64 = sqlx::query_scalar("select count(*) from task").fetch_one(&pool).await.unwrap();
    let accepted_events: i64 = sqlx::query_scalar("select count(*) from event where event_type = 'TaskAccepted'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((tasks, accepted_events), (1, 1));
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_invalid_body_gets_a_problem_and_publishes_nothing(pool: PgPool) {
    let mut system = spawn_system(pool, &[]).await;
    let (_, api_key) = system.organization("Strict").await;
    let before = system.xlen("commands").await;

    let mut bad = thermal(1);
    bad["kind"]["insulation_score"] = json!(3.5);
    let response = system.post("/v1/tasks", &api_key, bad).await;
    assert_eq!(response.status(), 422);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "kind.insulation_score", "{problem}");
    assert!(problem["type"].as_str().unwrap().ends_with("/validation-failed"));

    let response = system
        .http
        .post(system.url("/v1/tasks"))
        .bearer_auth(&api_key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/problem+json");

    let response = system
        .post("/v1/nodes", &api_key, json!({"name": "pi", "cpu_cores": 0, "has_solar": true, "location": "Mons"}))
        .await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "cpu_cores");

    let response = system.post("/v1/tasks", "gk_not-a-key", thermal(2)).await;
    assert_eq!(response.status(), 401);
    let response = system.post("/v1/organizations", &api_key, json!({"name": "sneaky"})).await;
    assert_eq!(response.status(), 403);

    assert_eq!(system.xlen("commands").await, before, "nothing was published");
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn undecodable_entries_go_to_the_dead_letter_stream_with_the_reason(pool: PgPool) {
    let mut system = spawn_system(pool, &[]).await;
    let stream = format!("{}:commands", system.keys().tag());
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg(grid_shared::wire::fields::TYPE)
        .arg("CMD:NOPE")
        .arg(grid_shared::wire::fields::ENVELOPE)
        .arg("{\"broken\": true}")
        .query_async(&mut system.redis)
        .await
        .unwrap();
    let entry = system.first_dead_letter(Duration::from_secs(10), "a dead letter").await;
    let reason: String = entry.get("reason").unwrap();
    assert!(reason.contains("envelope"), "{reason}");
    assert_eq!(entry.get::<String>(grid_shared::wire::fields::ENVELOPE).as_deref(), Some("{\"broken\": true}"));
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_message_that_fails_in_its_batch_does_not_hold_back_the_others(pool: PgPool) {
    // PostgreSQL refuses one organisation (an error, not a rejection): its batch fails, its
    // neighbours are applied one by one, and it is dead-lettered once its deliveries are spent.
    sqlx::raw_sql(
        "create function refuse_poison() returns trigger language plpgsql as $$
         begin if new.name = 'poison' then raise exception 'refused for the test'; end if; return new; end $$;
         create trigger refuse_poison before insert on organization for each row execute function refuse_poison();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut system = spawn_system(pool.clone(), &[("GRID_MAX_DELIVERIES", "2"), ("GRID_CLAIM_IDLE_MS", "100")]).await;
    let stream = format!("{}:commands", system.keys().tag());
    let names = ["first", "poison", "last"];
    let mut batch = redis::pipe();
    batch.atomic();
    for name in names {
        use grid_shared::envelope::{Actor, Envelope, Origin};
        use grid_shared::messages::{Command, CreateOrganization, Sha256Hex};
        let command = Command::CreateOrganization(CreateOrganization {
            organization_id: grid_shared::ids::OrganizationId::new(),
            name: grid_shared::domain::OrganizationName::parse(name).unwrap(),
            api_key_hash: Sha256Hex::of_secret(name),
        });
        let origin = Origin {
            correlation_id: uuid::Uuid::new_v4(),
            causation_id: None,
            organization_id: None,
            actor: Actor::Operator,
        };
        let envelope = Envelope::wrap(&command, origin);
        batch
            .cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg(grid_shared::wire::fields::TYPE)
            .arg("CMD:CREATE_ORGANIZATION")
            .arg(grid_shared::wire::fields::ENVELOPE)
            .arg(envelope.to_json());
    }
    // One MULTI: the consumer reads the three in one batch.
    let _: Vec<String> = batch.query_async(&mut system.redis).await.unwrap();
    let entry = system.first_dead_letter(Duration::from_secs(20), "the poison to be dead-lettered").await;
    assert!(entry.get::<String>(grid_shared::wire::fields::ENVELOPE).unwrap().contains("poison"));
    let mut created: Vec<String> = sqlx::query_scalar("select name from organization").fetch_all(&pool).await.unwrap();
    created.sort();
    assert_eq!(created, ["first", "last"]);
    let events: i64 = sqlx::query_scalar("select count(*) from event where event_type = 'OrganizationCreated'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 2, "each applied once");
    let groups: redis::streams::StreamInfoGroupsReply =
        redis::cmd("XINFO").arg("GROUPS").arg(&stream).query_async(&mut system.redis).await.unwrap();
    assert_eq!(groups.groups[0].pending, 0, "everything acknowledged");
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_group_task_below_k_anonymity_is_rejected_with_the_reason(pool: PgPool) {
    let system = spawn_system(pool, &[]).await;
    let (_, api_key) = system.organization("Small group").await;
    let owners: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::new_v4()).collect();
    let accepted: Value = system.post("/v1/tasks", &api_key, group(&owners)).await.json().await.unwrap();
    let view = system.settled(accepted["command_id"].as_str().unwrap(), &api_key).await;
    assert_eq!(view["status"], "rejected");
    assert!(view["reason"].as_str().unwrap().contains("at least 5"), "{view}");
    let task: Value = system
        .get(&format!("/v1/tasks/{}", accepted["task_id"].as_str().unwrap()), &api_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(task["status"], "rejected");
    assert_eq!(task["reason"]["code"], "k_anonymity_violated");
    assert_eq!((task["reason"]["min"].clone(), task["reason"]["got"].clone()), (json!(5), json!(3)));
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn entries_left_pending_by_a_dead_consumer_are_claimed_and_applied(pool: PgPool) {
    use grid_shared::envelope::{Actor, Envelope, Origin};
    use grid_shared::messages::{Command, CreateOrganization, Sha256Hex};

    // A consumer reads a command and dies before acknowledging it.
    let namespace = common::fresh_namespace();
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let stream = grid_shared::wire::Keys::new(&namespace).unwrap().commands();
    let organization_id = grid_shared::ids::OrganizationId::new();
    let command = Command::CreateOrganization(CreateOrganization {
        organization_id,
        name: grid_shared::domain::OrganizationName::parse("Orphaned").unwrap(),
        api_key_hash: Sha256Hex::of_secret("gk_orphan"),
    });
    let origin = Origin {
        correlation_id: uuid::Uuid::new_v4(),
        causation_id: None,
        organization_id: None,
        actor: Actor::Operator,
    };
    let envelope = Envelope::wrap(&command, origin);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("orchestrator")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg(grid_shared::wire::fields::TYPE)
        .arg(&envelope.message_type)
        .arg(grid_shared::wire::fields::ENVELOPE)
        .arg(envelope.to_json())
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("orchestrator")
        .arg("dead-replica")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut redis)
        .await
        .unwrap();

    let system =
        spawn_system(pool.clone(), &[("GRID_NAMESPACE", namespace.as_str()), ("GRID_CLAIM_IDLE_MS", "200")]).await;
    eventually(Duration::from_secs(10), "the orphaned command to be applied", || async {
        let exists: bool = sqlx::query_scalar("select exists (select 1 from organization where organization_id = $1)")
            .bind(organization_id.as_uuid())
            .fetch_one(&pool)
            .await
            .ok()?;
        exists.then_some(())
    })
    .await;
    // Acknowledged by its new owner, after the commit.
    eventually(Duration::from_secs(10), "the claimed entry to be acknowledged", || async {
        let groups: redis::streams::StreamInfoGroupsReply =
            redis::cmd("XINFO").arg("GROUPS").arg(&stream).query_async(&mut redis.clone()).await.ok()?;
        (groups.groups.first()?.pending == 0).then_some(())
    })
    .await;
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_nodes_view_shows_the_cores_its_tasks_in_flight_hold(pool: PgPool) {
    let system = spawn_system(pool, &[]).await;
    let (_, api_key) = system.organization("Counted").await;
    let node = system.manual_node(&api_key, 2, 300.0).await;
    let mut channel = system.channel(&node, None).await;
    let claimed = || async {
        let view: Value = system.get(&format!("/v1/nodes/{}", node.node_id), &api_key).await.json().await.ok()?;
        view["live"]["claimed"].as_u64()
    };
    let submitted: Value = system.post("/v1/tasks", &api_key, common::thermal_task()).await.json().await.unwrap();
    let task_id = submitted["task_id"].as_str().unwrap().to_owned();
    channel.next(Duration::from_secs(10)).await;
    eventually(Duration::from_secs(10), "one core held", || async { (claimed().await? == 1).then_some(()) }).await;
    system.report(&node, common::completion(&task_id, 1, 0.000_1, 0.0)).await;
    eventually(Duration::from_secs(10), "the core freed", || async { (claimed().await? == 0).then_some(()) }).await;
    system.stop().await;
}
