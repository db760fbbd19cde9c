//! The gateway alone (`spawn_app`: the real router on port 0 over the test's own database and
//! Redis namespace, no orchestrator): what each request adds to the streams and the live state,
//! and what it refuses without adding anything. The rows a writer would have committed
//! (organisations, keys, nodes) are inserted by the test.

use grid_gateway::app::{build_state_with_pool, run};
use grid_gateway::config::GatewayConfig;
use grid_shared::envelope::{Actor, Envelope};
use grid_shared::ids::{NodeId, OrganizationId};
use grid_shared::messages::{Command, Report, Sha256Hex};
use grid_shared::wire::Keys;
use redis::streams::StreamRangeReply;
use serde_json::{Value, json};
use sqlx::PgPool;

const OPERATOR_KEY: &str = "api-test-operator-key-0123456789abcdef0123";

struct TestApp {
    base: String,
    keys: Keys,
    redis: redis::aio::MultiplexedConnection,
    http: reqwest::Client,
    pool: PgPool,
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn spawn_app(pool: PgPool) -> TestApp {
    let namespace = format!("gateway-api-{}", uuid::Uuid::new_v4().simple());
    let settings = [
        ("DATABASE_URL", "postgres://unused".to_owned()),
        ("REDIS_URL", redis_url()),
        ("GRID_NAMESPACE", namespace.clone()),
        ("GRID_OPERATOR_KEY", OPERATOR_KEY.to_owned()),
        ("GATEWAY_MAX_DELAY_MS", "60000".to_owned()),
    ];
    let config = GatewayConfig::from_lookup(|name| {
        settings.iter().find(|(key, _)| *key == name).map(|(_, value)| value.clone())
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = build_state_with_pool(config, pool.clone()).unwrap();
    tokio::spawn(run(listener, state, std::future::pending()));
    let client = redis::Client::open(redis_url()).unwrap();
    let redis = client.get_multiplexed_async_connection().await.unwrap();
    TestApp { base, keys: Keys::new(&namespace).unwrap(), redis, http: reqwest::Client::new(), pool }
}

impl TestApp {
    /// An organisation and its API key, as the writer would have committed them.
    async fn organization(&self) -> (OrganizationId, String) {
        let organization_id = OrganizationId::new();
        let key = format!("gk_{}", uuid::Uuid::new_v4().simple());
        sqlx::query("insert into organization (organization_id, name) values ($1, 'Tested')")
            .bind(organization_id.as_uuid())
            .execute(&self.pool)
            .await
            .unwrap();
        sqlx::query("insert into api_key (key_hash, organization_id) values ($1, $2)")
            .bind(Sha256Hex::of_secret(&key).as_str())
            .bind(organization_id.as_uuid())
            .execute(&self.pool)
            .await
            .unwrap();
        (organization_id, key)
    }

    /// A registered node of the organisation and its token.
    async fn node(&self, organization_id: OrganizationId) -> (NodeId, String) {
        let node_id = NodeId::new();
        let token = format!("gn_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(
            "insert into node (node_id, organization_id, name, cpu_cores, has_solar, location, token_hash)
             values ($1, $2, 'pi', 4, true, 'Namur', $3)",
        )
        .bind(node_id.as_uuid())
        .bind(organization_id.as_uuid())
        .bind(Sha256Hex::of_secret(&token).as_str())
        .execute(&self.pool)
        .await
        .unwrap();
        (node_id, token)
    }

    /// A GET's JSON body.
    async fn get_json(&self, path: &str, key: &str) -> Value {
        self.http.get(format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap().json().await.unwrap()
    }

    async fn post(&self, path: &str, key: &str, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).bearer_auth(key).json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// Every entry of a stream: (entry id, its `type` field, its envelope).
    async fn entries(&mut self, stream: &str) -> Vec<(String, String, Envelope)> {
        let range: StreamRangeReply =
            redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query_async(&mut self.redis).await.unwrap();
        range
            .ids
            .iter()
            .map(|entry| {
                let message_type: String = entry.get("type").unwrap_or_default();
                let text: String =
                    entry.get(grid_shared::wire::fields::ENVELOPE).expect("an entry carries its envelope");
                (entry.id.clone(), message_type, Envelope::from_json(&text).unwrap())
            })
            .collect()
    }

    async fn forget(mut self) {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(self.keys.all_keys_pattern()).query_async(&mut self.redis).await.unwrap_or_default();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut self.redis).await.unwrap();
        }
    }
}

fn thermal(deadline_minutes: i64) -> Value {
    let deadline = (chrono::Utc::now() + chrono::Duration::minutes(deadline_minutes)).to_rfc3339();
    json!({"copropriete_id": uuid::Uuid::new_v4(), "priority": 7, "deadline": deadline,
           "kind": {"type": "building_thermal_simulation", "building_id": uuid::Uuid::new_v4(),
                    "insulation_score": 0.4, "surface_m2": 90.0, "heating_degree_days": 2400.0}})
}

#[sqlx::test(migrations = "../migrations")]
async fn a_submission_is_one_command_on_the_stream_with_the_ids_it_answers(pool: PgPool) {
    let mut app = spawn_app(pool).await;
    let (organization_id, key) = app.organization().await;
    let correlation = uuid::Uuid::new_v4().to_string();
    let response = app.post("/v1/tasks", &key, thermal(30), &[("x-request-id", &correlation)]).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    let entries = app.entries(&app.keys.commands()).await;
    assert_eq!(entries.len(), 1);
    let (_, message_type, envelope) = &entries[0];
    assert_eq!(message_type, "CMD:SUBMIT_TASK");
    assert_eq!(envelope.id.to_string(), answer["command_id"].as_str().unwrap());
    assert_eq!(envelope.correlation_id.to_string(), correlation, "the request's id follows the command");
    assert_eq!(
        (envelope.actor, envelope.organization_id),
        (Actor::Organization(organization_id), Some(organization_id))
    );
    let Command::SubmitTask(submitted) = envelope.decode::<Command>().unwrap() else { panic!("{envelope:?}") };
    assert_eq!(submitted.task_id.to_string(), answer["task_id"].as_str().unwrap());
    assert_eq!((submitted.priority.value(), submitted.replicas.value()), (7, 1));
    // Its issuer is known until the writer acknowledges it: `GET /v1/commands/{id}` says pending.
    let view: Value = app
        .http
        .get(format!("{}/v1/commands/{}", app.base, envelope.id))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "pending");
    app.forget().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_repeated_submission_with_its_idempotency_key_is_published_once(pool: PgPool) {
    let mut app = spawn_app(pool).await;
    let (_, key) = app.organization().await;
    let body = thermal(30);
    let first: Value =
        app.post("/v1/tasks", &key, body.clone(), &[("idempotency-key", "batch-7")]).await.json().await.unwrap();
    let again = app.post("/v1/tasks", &key, body, &[("idempotency-key", "batch-7")]).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.json::<Value>().await.unwrap(), first, "the first answer, again");
    let other = app.post("/v1/tasks", &key, thermal(40), &[("idempotency-key", "batch-7")]).await;
    assert_eq!(other.status(), 409, "the key was used for another request");
    assert_eq!(app.entries(&app.keys.commands()).await.len(), 1);
    app.forget().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_invalid_submission_is_a_problem_and_publishes_nothing(pool: PgPool) {
    let mut app = spawn_app(pool).await;
    let (_, key) = app.organization().await;
    let mut body = thermal(30);
    body["priority"] = json!(11);
    body["kind"]["insulation_score"] = json!(3.0);
    let response = app.post("/v1/tasks", &key, body, &[]).await;
    assert_eq!(response.status(), 422);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().filter_map(|error| error["field"].as_str()).collect();
    assert!(fields.contains(&"priority"), "{problem}");
    let past = app.post("/v1/tasks", &key, thermal(-5), &[]).await;
    assert_eq!(past.status(), 422, "a deadline already passed");
    assert_eq!(app.entries(&app.keys.commands()).await.len(), 0);
    app.forget().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_heartbeat_writes_the_nodes_live_state_with_its_ttl_and_the_change_feed(pool: PgPool) {
    let mut app = spawn_app(pool).await;
    let (organization_id, _) = app.organization().await;
    let (node_id, token) = app.node(organization_id).await;
    let beat = json!({"cpu_usage": 25.0, "solar_watts": 180.0, "running": 1});
    let response = app.post(&format!("/v1/nodes/{node_id}/heartbeat"), &token, beat, &[]).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert!(answer["eco_score"].as_f64().is_some_and(|score| (0.0..=1.0).contains(&score)), "{answer}");
    let state: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(app.keys.node_state(node_id)).query_async(&mut app.redis).await.unwrap();
    assert_eq!(state.get("solar_watts").map(String::as_str), Some("180"), "{state:?}");
    assert_eq!(state.get("cpu_usage").map(String::as_str), Some("25"), "{state:?}");
    let ttl: i64 = redis::cmd("PTTL").arg(app.keys.node_state(node_id)).query_async(&mut app.redis).await.unwrap();
    assert!(ttl > 0 && ttl <= 15_000, "the live state expires with the node TTL: {ttl} ms");
    let feed: StreamRangeReply =
        redis::cmd("XRANGE").arg(app.keys.heartbeats()).arg("-").arg("+").query_async(&mut app.redis).await.unwrap();
    assert_eq!(feed.ids.len(), 1);
    assert_eq!(feed.ids[0].get::<String>("node_id"), Some(node_id.to_string()));
    // Another node's token may not beat for it: to that token, this node does not exist.
    let (_, stranger) = app.node(organization_id).await;
    let beat = json!({"cpu_usage": 1.0, "solar_watts": 0.0});
    let refused = app.post(&format!("/v1/nodes/{node_id}/heartbeat"), &stranger, beat, &[]).await;
    assert_eq!(refused.status(), 404);
    app.forget().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_report_is_published_with_its_node_as_actor_and_only_by_that_node(pool: PgPool) {
    let mut app = spawn_app(pool).await;
    let (organization_id, _) = app.organization().await;
    let (node_id, token) = app.node(organization_id).await;
    let task_id = uuid::Uuid::new_v4();
    let result = json!({"heat_loss_kwh": 1234.5});
    let report = json!({"task_id": task_id, "attempt": 2, "status": "completed", "result_json": result,
        "result_hash": Sha256Hex::of_secret(&result.to_string()).as_str(), "energy_used_wh": 0.5,
        "solar_contribution_wh": 0.25});
    let response = app.post(&format!("/v1/nodes/{node_id}/reports"), &token, report.clone(), &[]).await;
    assert_eq!(response.status(), 202);
    let entries = app.entries(&app.keys.reports()).await;
    assert_eq!(entries.len(), 1);
    let (_, message_type, envelope) = &entries[0];
    assert_eq!(message_type, "RPT:TASK_COMPLETED");
    assert_eq!(envelope.actor, Actor::Node(node_id));
    let Report::TaskCompleted(completed) = envelope.decode::<Report>().unwrap() else { panic!("{envelope:?}") };
    assert_eq!((completed.node_id, completed.task_id.as_uuid(), completed.attempt), (node_id, task_id, 2));
    assert_eq!((completed.energy_used.0, completed.solar_contribution.0), (500_000, 250_000), "µWh, exact");
    let (_, stranger) = app.node(organization_id).await;
    let refused = app.post(&format!("/v1/nodes/{node_id}/reports"), &stranger, report, &[]).await;
    assert_eq!(refused.status(), 404, "to another node's token, this node does not exist");
    assert_eq!(app.entries(&app.keys.reports()).await.len(), 1, "nothing more published");
    app.forget().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_unknown_key_publishes_nothing_and_the_operator_cannot_submit_tasks(pool: PgPool) {
    let mut app = spawn_app(pool).await;
    let unknown = app.post("/v1/tasks", "gk_unknown", thermal(30), &[]).await;
    assert_eq!(unknown.status(), 401);
    let operator = app.post("/v1/tasks", OPERATOR_KEY, thermal(30), &[]).await;
    assert_eq!(operator.status(), 403, "tasks belong to an organisation");
    assert_eq!(app.entries(&app.keys.commands()).await.len(), 0);
    app.forget().await;
}

impl TestApp {
    /// A task row, as the writer would have committed it.
    async fn task_row(
        &self,
        organization_id: OrganizationId,
        status: &str,
        kind: &str,
        minutes_ago: i64,
    ) -> uuid::Uuid {
        let task_id = uuid::Uuid::new_v4();
        let kind_json = if kind == "building_thermal_simulation" {
            json!({"type": kind, "building_id": uuid::Uuid::new_v4(), "insulation_score": 0.5, "surface_m2": 80.0,
                   "heating_degree_days": 2000.0})
        } else {
            json!({"type": kind, "building_id": uuid::Uuid::new_v4(), "simulation_months": 12, "participants": []})
        };
        let finished = ["completed", "failed", "cancelled", "rejected"].contains(&status);
        sqlx::query(
            "insert into task (task_id, organization_id, copropriete_id, kind_type, kind, priority, deadline, status,
                 correlation_id, submitted_at, finished_at)
             values ($1, $2, $3, $4, $5, 5, now() + interval '1 hour', $6, $3, now() - make_interval(mins => $7::int),
                 case when $8 then now() end)",
        )
        .bind(task_id)
        .bind(organization_id.as_uuid())
        .bind(uuid::Uuid::new_v4())
        .bind(kind)
        .bind(kind_json)
        .bind(status)
        .bind(i32::try_from(minutes_ago).unwrap())
        .bind(finished)
        .execute(&self.pool)
        .await
        .unwrap();
        task_id
    }

    async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap()
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn tasks_are_listed_and_counted_by_status_kind_time_and_id(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (organization_id, key) = app.organization().await;
    let (other_organization, _) = app.organization().await;
    let old_completed = app.task_row(organization_id, "completed", "building_thermal_simulation", 120).await;
    let queued = app.task_row(organization_id, "queued", "building_thermal_simulation", 5).await;
    let group = app.task_row(organization_id, "rejected", "energy_group_optimisation", 3).await;
    app.task_row(other_organization, "completed", "building_thermal_simulation", 1).await;
    let ids = |page: &Value| -> Vec<String> {
        page["tasks"].as_array().unwrap().iter().map(|task| task["task_id"].as_str().unwrap().to_owned()).collect()
    };
    let all: Value = app.get("/v1/tasks", &key).await.json().await.unwrap();
    assert_eq!(ids(&all), [group.to_string(), queued.to_string(), old_completed.to_string()], "newest first, its own");
    let groups: Value = app.get("/v1/tasks?kind=energy_group_optimisation", &key).await.json().await.unwrap();
    assert_eq!(ids(&groups), [group.to_string()]);
    assert_eq!(groups["tasks"][0]["input"]["participants"], 0, "a group's size, never its readings");
    let since = (chrono::Utc::now() - chrono::Duration::minutes(60)).to_rfc3339();
    let recent: Value = app
        .http
        .get(format!("{}/v1/tasks", app.base))
        .query(&[("since", since.as_str()), ("status", "queued")])
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&recent), [queued.to_string()]);
    let prefix = &old_completed.to_string()[..8];
    let found: Value = app.get(&format!("/v1/tasks?id_prefix={prefix}"), &key).await.json().await.unwrap();
    assert_eq!(ids(&found), [old_completed.to_string()]);
    let counts: Value = app.get("/v1/tasks/counts", &key).await.json().await.unwrap();
    assert_eq!((counts["total"].as_i64(), counts["counts"]["completed"].as_i64()), (Some(3), Some(1)), "{counts}");
    assert_eq!(counts["counts"]["quarantined"], 0, "every status named");
    for bad in ["/v1/tasks?kind=poetry", "/v1/tasks?id_prefix=XYZ!", "/v1/tasks?status=sleeping"] {
        let refused = app.get(bad, &key).await;
        assert_eq!(refused.status(), 422, "{bad}");
    }
    let backwards = app
        .http
        .get(format!("{}/v1/tasks/counts", app.base))
        .query(&[("since", since.as_str()), ("until", "2000-01-01T00:00:00Z")])
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(backwards.status(), 422);
    app.forget().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn the_operator_sees_the_writers_lease_the_backlogs_and_the_refusals(pool: PgPool) {
    let mut app = spawn_app(pool).await;
    let (_, key) = app.organization().await;
    app.post("/v1/tasks", &key, thermal(30), &[]).await;
    let operations: Value = app.get("/v1/operations", OPERATOR_KEY).await.json().await.unwrap();
    assert_eq!(operations["writer"]["epoch"], 0, "no writer took the lease yet: {operations}");
    assert_eq!(operations["orchestrators"], serde_json::json!([]), "no orchestrator runs: {operations}");
    assert_eq!((operations["command_backlog"].as_i64(), operations["dead_letters"].as_i64()), (Some(1), Some(0)));
    assert!(operations["grafana_url"].as_str().unwrap().starts_with("http"), "{operations}");
    assert_eq!(app.get("/v1/operations", &key).await.status(), 403, "operators only");
    assert_eq!(app.entries(&app.keys.commands()).await.len(), 1);
    app.forget().await;
}

/// A registration names its carbon zone, one the grid knows, or gets the default one; a zone
/// the grid does not know, or that is not a zone id, is refused with the reason and nothing is
/// published. The node's view shows its zone.
#[sqlx::test(migrations = "../migrations")]
async fn a_node_registers_in_a_known_carbon_zone_or_the_default(pool: PgPool) {
    let mut app = spawn_app(pool).await;
    let (organization_id, key) = app.organization().await;
    let body = |zone: Option<&str>| {
        let mut body = json!({"name": "pi", "cpu_cores": 4, "has_solar": true, "location": "Liège"});
        if let Some(zone) = zone {
            body["zone"] = json!(zone);
        }
        body
    };
    for (zone, reason) in [("NL", "the grid knows the zones BE, DE, FR"), ("be", "Electricity Maps zone id")] {
        let refused = app.post("/v1/nodes", &key, body(Some(zone)), &[]).await;
        assert_eq!(refused.status(), 422, "{zone}");
        assert_eq!(refused.headers()["content-type"], "application/problem+json");
        let problem: Value = refused.json().await.unwrap();
        assert!(problem.to_string().contains(reason), "{zone}: {problem}");
    }
    assert!(app.entries(&app.keys.commands()).await.is_empty(), "a refused registration publishes nothing");

    assert_eq!(app.post("/v1/nodes", &key, body(Some("FR")), &[]).await.status(), 202);
    assert_eq!(app.post("/v1/nodes", &key, body(None), &[]).await.status(), 202);
    let zones: Vec<Option<String>> = app
        .entries(&app.keys.commands())
        .await
        .into_iter()
        .map(|(_, _, envelope)| match envelope.into_message::<Command>().unwrap() {
            Command::RegisterNode(register) => register.spec.zone().map(ToString::to_string),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(zones, [Some("FR".to_owned()), Some("BE".to_owned())], "the default zone is named in the command");

    // A node registered before zones (no zone in its row) is in the default zone.
    let (node_id, _) = app.node(organization_id).await;
    let view = app.get_json(&format!("/v1/nodes/{node_id}"), &key).await;
    assert_eq!(view["zone"], "BE", "{view}");
    app.forget().await;
}

/// A submission and a registration may name a cell (data residency); an unknown one is a
/// problem naming the grid's cells and publishes nothing; the cell and why it was chosen travel
/// with the command; a node's cell is shown by `GET /v1/nodes/{id}` (the default one for a node
/// registered before cells).
#[sqlx::test(migrations = "../migrations")]
async fn a_task_or_a_node_may_name_a_known_cell_and_the_choice_travels_with_the_command(pool: PgPool) {
    use grid_shared::cells::CellReason;
    let mut app = spawn_app(pool).await;
    let (organization_id, key) = app.organization().await;
    let mut elsewhere = thermal(30);
    elsewhere["cell"] = json!("mars");
    let refused = app.post("/v1/tasks", &key, elsewhere, &[]).await;
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    assert!(problem.to_string().contains("the grid's cells are main"), "{problem}");
    let node = json!({"name": "pi", "cpu_cores": 4, "has_solar": true, "location": "Liège", "cell": "Main"});
    assert_eq!(app.post("/v1/nodes", &key, node, &[]).await.status(), 422);
    assert!(app.entries(&app.keys.commands()).await.is_empty(), "nothing refused is published");

    let mut named = thermal(30);
    named["cell"] = json!("main");
    assert_eq!(app.post("/v1/tasks", &key, named, &[]).await.status(), 202);
    assert_eq!(app.post("/v1/tasks", &key, thermal(30), &[]).await.status(), 202);
    let node = json!({"name": "pi", "cpu_cores": 4, "has_solar": true, "location": "Liège", "zone": "FR"});
    assert_eq!(app.post("/v1/nodes", &key, node, &[]).await.status(), 202);
    let mut choices = Vec::new();
    for (_, _, envelope) in app.entries(&app.keys.commands()).await {
        match envelope.into_message::<Command>().unwrap() {
            Command::SubmitTask(submit) => {
                let choice = submit.cell.expect("every submission says its cell");
                choices.push((choice.cell.to_string(), choice.reason));
            }
            Command::RegisterNode(register) => {
                assert_eq!(register.spec.cell().map(ToString::to_string).as_deref(), Some("main"), "the only cell");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(choices, [("main".to_owned(), CellReason::Named), ("main".to_owned(), CellReason::Only)]);
    let (node_id, _) = app.node(organization_id).await;
    let view = app.get_json(&format!("/v1/nodes/{node_id}"), &key).await;
    assert_eq!(view["cell"], "main", "a node registered before cells is in the default cell: {view}");
    app.forget().await;
}

/// The emissions report over a fixed ledger, as CSV, is byte for byte the golden files
/// `tests/golden/emissions-by-*.csv` (`UPDATE_GOLDEN=1` rewrites them: only when the report's
/// rule changes, checked by hand and said in the commit): location-based and market-based figures side by side, a kgp2
/// credit at the fixed factor, an organisation sees its own nodes only.
#[sqlx::test(migrations = "../migrations")]
async fn the_emissions_report_matches_its_golden_csv(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    // Fixed ids, so that the files name them.
    let organization = |id: &str, name: &str, factor: Option<i64>| {
        let (pool, id, name) = (pool.clone(), uuid::Uuid::parse_str(id).unwrap(), name.to_owned());
        async move {
            let key = format!("gk_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(
                "insert into organization (organization_id, name, market_factor_mg_per_kwh) values ($1, $2, $3)",
            )
            .bind(id)
            .bind(&name)
            .bind(factor)
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query("insert into api_key (key_hash, organization_id) values ($1, $2)")
                .bind(Sha256Hex::of_secret(&key).as_str())
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
            (OrganizationId(id), key)
        }
    };
    // Green Coop declared a supplier's mix of 25 g/kWh; Plain declared nothing.
    let (green, green_key) = organization("00000000-0000-0000-0000-0000000000f1", "Green Coop", Some(25_000)).await;
    let (plain, plain_key) = organization("00000000-0000-0000-0000-0000000000f2", "Plain, Inc.", None).await;
    let nodes = [
        ("00000000-0000-0000-0000-00000000000a", green, "pi-liege", Some("BE")),
        ("00000000-0000-0000-0000-00000000000b", green, "pi-lyon", Some("FR")),
        ("00000000-0000-0000-0000-00000000000c", plain, "pi-old", None),
    ];
    for (id, organization, name, zone) in nodes {
        sqlx::query(
            "insert into node (node_id, organization_id, name, cpu_cores, has_solar, location, token_hash, zone)
             values ($1::uuid, $2, $3, 4, true, 'x', md5($3) || md5($3), $4)",
        )
        .bind(id)
        .bind(organization.as_uuid())
        .bind(name)
        .bind(zone)
        .execute(&pool)
        .await
        .unwrap();
    }
    // (node, energy µWh, solar µWh, zone, intensity mg/kWh, credited at): the figures a writer
    // would have recorded, each split by the rule (price €0.025/kg, 70 %).
    let leaves = [
        ("a", 100_000, 60_000, Some("BE"), Some(150_000), "2026-12-01T10:00:00Z"),
        ("a", 50_000, 0, Some("BE"), Some(210_500), "2026-12-01T20:00:00Z"),
        ("b", 80_000, 80_000, Some("FR"), Some(40_000), "2026-12-02T12:00:00Z"),
        ("c", 120_000, 30_000, None, None, "2026-11-20T12:00:00Z"),
        ("c", 10_000, 10_000, Some("BE"), Some(999_999), "2026-12-05T00:00:00Z"),
    ];
    for (index, (node, energy, solar, zone, intensity, at)) in leaves.into_iter().enumerate() {
        let used = intensity.unwrap_or(180_000);
        let carbon: i64 = solar * used / 1_000;
        let total = i64::try_from(i128::from(carbon) * 25_000_000_000 / 1_000_000_000_000).unwrap();
        let node_share = total * 70 / 100;
        sqlx::query(
            "insert into proof_leaf (block_height, leaf_index, task_id, node_id, attempt, energy_uwh, solar_uwh,
                 carbon_ng, node_peur, cooperative_peur, credited_at, leaf_hash, zone, intensity_hour,
                 intensity_mg_per_kwh, intensity_kind, intensity_source, price_peur_per_kg, node_share_percent)
             values (1, $1, gen_random_uuid(), ('00000000-0000-0000-0000-00000000000' || $2)::uuid, 1, $3, $4, $5, $6,
                 $7, $8::timestamptz, repeat('0', 64), $9, case when $9 is null then null else date_trunc('hour', $8::timestamptz) end,
                 $10, case when $9 is null then null else 'average' end,
                 case when $9 is null then null else 'file:carbon-intensity-synthetic-2026.csv:lifecycle' end,
                 case when $9 is null then null else 25000000000 end, case when $9 is null then null else 70 end)",
        )
        .bind(i32::try_from(index).unwrap())
        .bind(node)
        .bind(energy)
        .bind(solar)
        .bind(carbon)
        .bind(node_share)
        .bind(total - node_share)
        .bind(at)
        .bind(zone)
        .bind(intensity)
        .execute(&pool)
        .await
        .unwrap();
    }
    let get = |path: String, key: String| {
        let request = app.http.get(format!("{}{path}", app.base)).bearer_auth(key);
        async move { request.send().await.unwrap() }
    };
    let period = "from=2026-11-01T00:00:00Z&to=2026-12-05T00:00:00Z";
    for group in ["zone", "node", "organisation"] {
        let response =
            get(format!("/v1/reports/emissions?{period}&group_by={group}&format=csv"), OPERATOR_KEY.into()).await;
        assert_eq!(response.status(), 200, "{group}");
        assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
        let csv = response.text().await.unwrap();
        let golden_path = format!("{}/tests/golden/emissions-by-{group}.csv", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden_path, &csv).unwrap();
        }
        let golden = std::fs::read_to_string(&golden_path).unwrap_or_default();
        assert_eq!(csv, golden, "{group}: the report differs from {golden_path}:\n{csv}");
    }
    // An organisation reads its own nodes only; JSON totals are the CSV's last line.
    let own: Value =
        get(format!("/v1/reports/emissions?{period}&group_by=node"), plain_key.clone()).await.json().await.unwrap();
    assert_eq!(own["rows"].as_array().unwrap().len(), 1, "{own}");
    assert_eq!(own["rows"][0]["name"], "pi-old");
    assert_eq!(own["totals"]["location_based_ng"], 16_200_000, "a kgp2 credit at the fixed factor: 90 mWh × 180 g/kWh");
    assert_eq!(own["totals"]["market_based_results"], 0, "no contract declared, no market-based figure");
    let green_report: Value = get(format!("/v1/reports/emissions?{period}"), green_key).await.json().await.unwrap();
    assert_eq!(green_report["totals"]["market_based_results"], 3);
    for (query, field) in [
        ("group_by=planet", "group_by"),
        ("format=xml", "format"),
        ("from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "to"),
    ] {
        let refused = get(format!("/v1/reports/emissions?{query}"), plain_key.clone()).await;
        assert_eq!(refused.status(), 422, "{query}");
        let problem: Value = refused.json().await.unwrap();
        assert!(problem.to_string().contains(field), "{query}: {problem}");
    }
    app.forget().await;
}

/// An organisation declares its electricity contract: one command on the stream with the
/// factor and label; a factor out of bounds or an empty label is refused with nothing
/// published; another organisation's id is a 404.
#[sqlx::test(migrations = "../migrations")]
async fn an_energy_contract_is_one_command_and_bad_ones_publish_nothing(pool: PgPool) {
    let mut app = spawn_app(pool).await;
    let (organization_id, key) = app.organization().await;
    let (other, _) = app.organization().await;
    let (http, base) = (app.http.clone(), app.base.clone());
    let put = |organization: OrganizationId, body: Value| {
        let request =
            http.put(format!("{base}/v1/organizations/{organization}/energy-contract")).bearer_auth(&key).json(&body);
        async move { request.send().await.unwrap() }
    };
    for (body, field) in [
        (json!({"factor_mg_per_kwh": -1, "label": "x"}), "factor_mg_per_kwh"),
        (json!({"factor_mg_per_kwh": 2_000_001, "label": "x"}), "factor_mg_per_kwh"),
        (json!({"factor_mg_per_kwh": 0, "label": "  "}), "label"),
    ] {
        let refused = put(organization_id, body.clone()).await;
        assert_eq!(refused.status(), 422, "{body}");
        let problem: Value = refused.json().await.unwrap();
        assert!(problem.to_string().contains(field), "{body}: {problem}");
    }
    assert_eq!(put(other, json!({"factor_mg_per_kwh": 0, "label": "x"})).await.status(), 404);
    assert!(app.entries(&app.keys.commands()).await.is_empty(), "nothing published");
    let accepted = put(organization_id, json!({"factor_mg_per_kwh": 12_000, "label": " Green tariff "})).await;
    assert_eq!(accepted.status(), 202);
    let entries = app.entries(&app.keys.commands()).await;
    assert_eq!(entries.len(), 1);
    let (_, message_type, envelope) = entries.into_iter().next().unwrap();
    assert_eq!(message_type, "CMD:DECLARE_ENERGY_CONTRACT");
    match envelope.into_message::<Command>().unwrap() {
        Command::DeclareEnergyContract(contract) => {
            assert_eq!((contract.organization_id, contract.factor_mg_per_kwh), (organization_id, 12_000));
            assert_eq!(contract.label, "Green tariff");
        }
        other => panic!("{other:?}"),
    }
    app.forget().await;
}
