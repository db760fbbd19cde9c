//! The writer driven step by step (`Writer::step`) over real PostgreSQL and Redis, with no
//! gateway: the test adds entries to the streams as a gateway would, runs one step, and looks at
//! what it committed, published and acknowledged.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use grid_orchestrator::config::OrchestratorConfig;
use grid_orchestrator::lease::Lease;
use grid_orchestrator::status::Status;
use grid_orchestrator::writer::Writer;
use grid_shared::domain::{NodeSpec, OrganizationName, Priority, Replicas, TaskKind};
use grid_shared::envelope::{Actor, Envelope, Origin};
use grid_shared::ids::{BuildingId, CoproprieteId, NodeId, OrganizationId, TaskId};
use grid_shared::live::HeartbeatEntry;
use grid_shared::messages::{Command, CreateOrganization, RegisterNode, Sha256Hex, SubmitTask};
use grid_shared::wire::Keys;
use sqlx::PgPool;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A thermal simulation due in `due`, for `cell` (none named: the writer's).
fn thermal_submission(
    task_id: TaskId,
    due: chrono::Duration,
    cell: Option<grid_shared::cells::CellChoice>,
) -> SubmitTask {
    SubmitTask {
        task_id,
        copropriete_id: CoproprieteId::new(),
        priority: Priority::default(),
        deadline: Utc::now() + due,
        kind: TaskKind::BuildingThermalSimulation {
            building_id: BuildingId::new(),
            insulation_score: 0.5,
            surface_m2: 70.0,
            heating_degree_days: 2_000.0,
        },
        replicas: Replicas::default(),
        cell,
    }
}

struct Harness {
    writer: Writer,
    keys: Keys,
    redis: redis::aio::MultiplexedConnection,
    pool: PgPool,
    status: Arc<Status>,
    _lease: Lease,
}

/// A writer holding the lease of the test's database, on a namespace of its own.
async fn harness(pool: PgPool, settings: &[(&str, &str)]) -> Harness {
    harness_in(pool, &format!("writer-{}", uuid::Uuid::new_v4().simple()), settings).await
}

/// A writer on `namespace`, which may hold keys already.
async fn harness_in(pool: PgPool, namespace: &str, settings: &[(&str, &str)]) -> Harness {
    let namespace = namespace.to_owned();
    let mut all = vec![
        ("DATABASE_URL", "postgres://unused".to_owned()),
        ("REDIS_URL", redis_url()),
        ("GRID_NAMESPACE", namespace.clone()),
        ("GRID_CONSUMER_NAME", "writer-under-test".to_owned()),
        ("GRID_TICK_MS", "10".to_owned()),
        ("GRID_TRUST_THRESHOLD", "0".to_owned()),
        ("GRID_SPOT_CHECK_PPM", "0".to_owned()),
    ];
    all.extend(settings.iter().map(|(key, value)| (*key, (*value).to_owned())));
    let config = OrchestratorConfig::from_lookup(|name| {
        all.iter().rev().find(|(key, _)| *key == name).map(|(_, value)| value.clone())
    })
    .unwrap();
    let redis_pool = grid_orchestrator::store::streams::redis(&config.redis, 2).unwrap();
    let cell = config.grid.cells.default_cell().name.clone();
    let lease = Lease::acquire(&pool, "writer-under-test", &cell, &tokio_util::sync::CancellationToken::new())
        .await
        .unwrap()
        .expect("the lease of a fresh database");
    let status = Arc::new(Status::new("writer-under-test"));
    // The keys of the writer's cell (`GRID_CELLS`' first, `main` by default).
    let keys = config.grid.keys.clone();
    let writer =
        Writer::take_over(Arc::new(config), pool.clone(), redis_pool, lease.epoch, status.clone()).await.unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let redis = client.get_multiplexed_async_connection().await.unwrap();
    Harness { writer, keys, redis, pool, status, _lease: lease }
}

/// Appends a message to `stream` as the gateway does: `type` and `envelope` fields.
async fn append(redis: &mut redis::aio::MultiplexedConnection, stream: &str, envelope: &Envelope) {
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg(grid_shared::wire::fields::TYPE)
        .arg(&envelope.message_type)
        .arg(grid_shared::wire::fields::ENVELOPE)
        .arg(envelope.to_json())
        .query_async(redis)
        .await
        .unwrap();
}

impl Harness {
    /// Adds a command as the gateway does: `type` and `envelope` fields.
    async fn command(&mut self, actor: Actor, organization_id: Option<OrganizationId>, command: &Command) -> Envelope {
        let origin = Origin { correlation_id: uuid::Uuid::new_v4(), causation_id: None, organization_id, actor };
        let envelope = Envelope::wrap(command, origin);
        append(&mut self.redis, &self.keys.commands(), &envelope).await;
        envelope
    }

    async fn heartbeat(&mut self, node_id: NodeId, expires_in: chrono::Duration) {
        self.heartbeat_with_sun(node_id, expires_in, 300.0).await;
    }

    async fn heartbeat_with_sun(&mut self, node_id: NodeId, expires_in: chrono::Duration, solar_watts: f64) {
        let entry = HeartbeatEntry {
            node_id,
            cpu_usage: 5.0,
            solar_watts,
            eco_score: 0.8,
            expires_at_ms: (Utc::now() + expires_in).timestamp_millis(),
        };
        let mut command = redis::cmd("XADD");
        command.arg(self.keys.heartbeats()).arg("*");
        for (field, value) in entry.fields() {
            command.arg(field).arg(value);
        }
        let _: String = command.query_async(&mut self.redis).await.unwrap();
    }

    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// Steps until the message is applied or refused (the first step after a takeover reads
    /// the entries left pending, none here, before new ones); the last step's report.
    async fn step_until_processed(&mut self, envelope: &Envelope) -> grid_orchestrator::writer::StepReport {
        for _ in 0..50 {
            let report = self.writer.step().await.unwrap();
            let processed: i64 = sqlx::query_scalar("select count(*) from processed_message where message_id = $1")
                .bind(envelope.id.as_uuid())
                .fetch_one(&self.pool)
                .await
                .unwrap();
            if processed == 1 {
                return report;
            }
        }
        panic!("message {} not processed in 50 steps", envelope.id);
    }

    /// An organisation, committed.
    async fn organization(&mut self) -> OrganizationId {
        let organization_id = OrganizationId::new();
        let create = Command::CreateOrganization(CreateOrganization {
            organization_id,
            name: OrganizationName::parse("Stepped").unwrap(),
            api_key_hash: Sha256Hex::of_secret(&uuid::Uuid::new_v4().to_string()),
        });
        let envelope = self.command(Actor::Operator, None, &create).await;
        self.step_until_processed(&envelope).await;
        organization_id
    }

    async fn register(&mut self, organization_id: OrganizationId, cores: i64) -> NodeId {
        let node_id = NodeId::new();
        let register = Command::RegisterNode(RegisterNode {
            node_id,
            spec: NodeSpec::parse("stepped-pi", cores, true, "Mons").unwrap(),
            token_hash: Sha256Hex::of_secret(&uuid::Uuid::new_v4().to_string()),
        });
        let envelope = self.command(Actor::Organization(organization_id), Some(organization_id), &register).await;
        self.step_until_processed(&envelope).await;
        node_id
    }

    /// Adds a submission due in an hour (not stepped).
    async fn submit(&mut self, organization_id: OrganizationId) -> (TaskId, Envelope) {
        self.submit_due(organization_id, chrono::Duration::hours(1)).await
    }

    /// Adds a submission due in `due` (not stepped).
    async fn submit_due(&mut self, organization_id: OrganizationId, due: chrono::Duration) -> (TaskId, Envelope) {
        let task_id = TaskId::new();
        let submit = Command::SubmitTask(thermal_submission(task_id, due, None));
        let envelope = self.command(Actor::Organization(organization_id), Some(organization_id), &submit).await;
        (task_id, envelope)
    }

    async fn pending(&mut self) -> i64 {
        let summary: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
            .arg(self.keys.commands())
            .arg(grid_shared::wire::ORCHESTRATOR_GROUP)
            .query_async(&mut self.redis)
            .await
            .unwrap();
        summary.count() as i64
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn one_step_applies_what_it_read_commits_it_and_acknowledges_it(pool: PgPool) {
    let mut harness = harness(pool, &[]).await;
    let organization_id = harness.organization().await;
    assert_eq!(harness.count("select count(*) from organization").await, 1);
    assert_eq!(harness.count("select count(*) from event where event_type = 'OrganizationCreated'").await, 1);
    assert_eq!(harness.pending().await, 0, "acknowledged once committed");
    // A command of an organisation that does not exist is refused, with its reason, and acknowledged.
    let stranger = OrganizationId::new();
    let envelope = harness
        .command(
            Actor::Organization(stranger),
            Some(stranger),
            &Command::RegisterNode(RegisterNode {
                node_id: NodeId::new(),
                spec: NodeSpec::parse("lost", 2, false, "Arlon").unwrap(),
                token_hash: Sha256Hex::of_secret("lost"),
            }),
        )
        .await;
    let report = harness.step_until_processed(&envelope).await;
    assert_eq!(report.messages, 1);
    let (outcome, reason): (String, String) =
        sqlx::query_as("select outcome, reason from processed_message where message_id = $1")
            .bind(envelope.id.as_uuid())
            .fetch_one(&harness.pool)
            .await
            .unwrap();
    assert_eq!((outcome.as_str(), reason.as_str()), ("rejected", r#"{"code":"unknown_issuer"}"#));
    assert_eq!(harness.pending().await, 0);
    let _ = organization_id;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_submission_and_a_live_node_are_placed_in_one_step_and_the_node_told(pool: PgPool) {
    let mut harness = harness(pool, &[]).await;
    let organization_id = harness.organization().await;
    let node_id = harness.register(organization_id, 2).await;
    harness.heartbeat(node_id, chrono::Duration::seconds(15)).await;
    let (task_id, submission) = harness.submit(organization_id).await;
    let report = harness.step_until_processed(&submission).await;
    assert_eq!((report.messages, report.placed), (1, 1), "admitted and placed in one step: {report:?}");
    let (status, node, attempts): (String, Option<uuid::Uuid>, i32) =
        sqlx::query_as("select status, node_id, attempts from task where task_id = $1")
            .bind(task_id.as_uuid())
            .fetch_one(&harness.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), node, attempts), ("assigned", Some(node_id.as_uuid()), 1));
    let seq: i64 = sqlx::query_scalar("select assignment_seq from task where task_id = $1")
        .bind(task_id.as_uuid())
        .fetch_one(&harness.pool)
        .await
        .unwrap();
    let channel: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(harness.keys.node_tasks(node_id))
        .arg("-")
        .arg("+")
        .query_async(&mut harness.redis)
        .await
        .unwrap();
    let ids: Vec<&str> = channel.ids.iter().map(|entry| entry.id.as_str()).collect();
    assert_eq!(ids, [format!("{seq}-0")], "the node's channel holds its assignment, under the event's seq");
}

/// The crash loop of a dead fleet, one step at a time: a task is placed on a node that never
/// heartbeats again; the step that comes after both its node's expiry and its start lease
/// takes it back once (the lease, due in the same round, finds it no longer on a node), refuses
/// nothing and counts no violation.
#[sqlx::test(migrations = "../migrations")]
async fn a_dead_nodes_task_whose_lease_falls_due_with_its_expiry_is_taken_back_once(pool: PgPool) {
    let mut harness = harness(pool, &[("GRID_START_LEASE_MS", "100")]).await;
    let organization_id = harness.organization().await;
    let node_id = harness.register(organization_id, 1).await;
    harness.heartbeat(node_id, chrono::Duration::milliseconds(300)).await;
    let (task_id, submission) = harness.submit(organization_id).await;
    assert_eq!(harness.step_until_processed(&submission).await.placed, 1);
    // No step while the node's live state expires and the lease passes: nothing to wait on but
    // the clock.
    tokio::time::sleep(Duration::from_millis(400)).await;
    harness.writer.step().await.unwrap();
    let requeued: Vec<serde_json::Value> = sqlx::query_scalar(
        "select envelope -> 'payload' -> 'reason' from event where event_type = 'TaskRequeued' order by seq",
    )
    .fetch_all(&harness.pool)
    .await
    .unwrap();
    assert_eq!(requeued, [serde_json::json!({"code": "taken_back", "cause": {"code": "node_offline"}})]);
    let status: String = sqlx::query_scalar("select status from task where task_id = $1")
        .bind(task_id.as_uuid())
        .fetch_one(&harness.pool)
        .await
        .unwrap();
    assert_eq!(status, "queued");
    assert_eq!(harness.count("select count(*) from event where event_type = 'NodeWentOffline'").await, 1);
    let metrics = harness.status.metrics.render();
    assert!(metrics.contains("grid_invariant_violations_total 0"), "nothing refused on unexpected state:\n{metrics}");
}

/// An intensity file (the data portal's columns) for BE around the present hour: `values[k]`
/// g/kWh for the hour k after the present one, from an hour before it.
fn intensity_file(values: &[&str]) -> std::path::PathBuf {
    use chrono::DurationRound;
    let hour = Utc::now().duration_trunc(chrono::Duration::hours(1)).unwrap();
    let mut text =
        String::from("Datetime (UTC),Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA)\n");
    for (offset, value) in (-1..).zip(std::iter::once(&"500").chain(values)) {
        let at = hour + chrono::Duration::hours(offset);
        text.push_str(&format!("{},BE,{value},{value}\n", at.format("%Y-%m-%d %H:%M:%S")));
    }
    let path = std::env::temp_dir().join(format!("intensity-{}.csv", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, text).unwrap();
    path
}

/// The status of a task after the step that applies its submission, with a node in the zone
/// (BE) and no sun, under a deferral rule and an intensity file.
async fn placed_without_sun(pool: PgPool, deferral: &str, values: &[&str]) -> String {
    let file = intensity_file(values);
    let path = file.to_string_lossy().into_owned();
    let mut harness = harness(pool, &[("GRID_DEFERRAL", deferral), ("GRID_CARBON_FILE", &path)]).await;
    std::fs::remove_file(&file).unwrap();
    let organization_id = harness.organization().await;
    let node_id = harness.register(organization_id, 2).await;
    harness.heartbeat_with_sun(node_id, chrono::Duration::seconds(15), 0.0).await;
    // Three hours of slack: the next hour always starts within the window.
    let (task_id, submission) = harness.submit_due(organization_id, chrono::Duration::hours(3)).await;
    harness.step_until_processed(&submission).await;
    sqlx::query_scalar("select status from task where task_id = $1")
        .bind(task_id.as_uuid())
        .fetch_one(&harness.pool)
        .await
        .unwrap()
}

/// Where the rules agree: the grid is expected cleaner later (100 against 400 g/kWh), so
/// under the forecast rule the task waits for that hour, as it waits for the sun under the
/// solar-first rule.
#[sqlx::test(migrations = "../migrations")]
async fn without_sun_a_task_waits_when_a_cleaner_hour_is_coming(pool: PgPool) {
    // (Each figure holds for two hours, so that an hour turning during the test changes nothing.)
    assert_eq!(placed_without_sun(pool, "carbon", &["400", "400", "100", "350", "350"]).await, "queued");
}

#[sqlx::test(migrations = "../migrations")]
async fn without_sun_the_solar_first_rule_waits_for_the_sun(pool: PgPool) {
    assert_eq!(placed_without_sun(pool, "solar", &["100", "400", "400", "400"]).await, "queued");
}

/// Where they differ: this hour is the cleanest of the window (100 against 400 g/kWh later), so
/// the forecast rule runs the task on the grid now instead of waiting for the sun.
#[sqlx::test(migrations = "../migrations")]
async fn without_sun_the_forecast_rule_runs_a_task_in_the_cleanest_hour(pool: PgPool) {
    assert_eq!(placed_without_sun(pool, "carbon", &["100", "100", "400", "400", "400"]).await, "assigned");
}

/// A one-cell grid upgrades in place: the keys a namespace held before cells (`<ns>:commands`,
/// ...) move under the cell's tag when the writer takes over, with the command waiting there,
/// its consumer group, the remembered idempotency answer (and its TTL); a command a gateway of
/// the new version appended meanwhile under the new name is applied too.
#[sqlx::test(migrations = "../migrations")]
async fn a_namespace_written_before_cells_upgrades_in_place_and_loses_no_command(pool: PgPool) {
    use grid_shared::wire::ORCHESTRATOR_GROUP;
    let namespace = format!("writer-{}", uuid::Uuid::new_v4().simple());
    let keys = Keys::new(&namespace).unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let operator = Origin {
        correlation_id: uuid::Uuid::new_v4(),
        causation_id: None,
        organization_id: None,
        actor: Actor::Operator,
    };
    let create = |name: &str| {
        let organization_id = OrganizationId::new();
        let command = Command::CreateOrganization(CreateOrganization {
            organization_id,
            name: OrganizationName::parse(name).unwrap(),
            api_key_hash: Sha256Hex::of_secret(&uuid::Uuid::new_v4().to_string()),
        });
        (organization_id, Envelope::wrap(&command, operator))
    };
    // What the previous version left: a command on its stream, under its group, a marker, an
    // idempotency answer with its TTL.
    let (before, old_command) = create("Before cells");
    let legacy = |suffix: &str| format!("{namespace}:{suffix}");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(legacy("commands"))
        .arg(ORCHESTRATOR_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut redis)
        .await
        .unwrap();
    append(&mut redis, &legacy("commands"), &old_command).await;
    let _: () = redis::cmd("SET").arg(legacy("writer")).arg(0).query_async(&mut redis).await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(legacy("idempotency:x:key-1"))
        .arg("{}")
        .arg("EX")
        .arg(3_600)
        .query_async(&mut redis)
        .await
        .unwrap();
    // A gateway of the new version published under the new name before the writer took over.
    let (after, new_command) = create("After cells");
    append(&mut redis, &keys.commands(), &new_command).await;

    let mut harness = harness_in(pool, &namespace, &[]).await;
    harness.step_until_processed(&old_command).await;
    harness.step_until_processed(&new_command).await;
    let names: Vec<String> =
        sqlx::query_scalar("select name from organization where organization_id = any($1) order by name")
            .bind(vec![before.as_uuid(), after.as_uuid()])
            .fetch_all(&harness.pool)
            .await
            .unwrap();
    assert_eq!(names, ["After cells", "Before cells"]);
    let left: Vec<String> = redis::cmd("KEYS").arg(format!("{namespace}:*")).query_async(&mut redis).await.unwrap();
    assert!(left.is_empty(), "no key is left under the old names: {left:?}");
    let ttl: i64 =
        redis::cmd("TTL").arg(format!("{}:idempotency:x:key-1", keys.tag())).query_async(&mut redis).await.unwrap();
    assert!((1..=3_600).contains(&ttl), "the idempotency answer moved with its TTL ({ttl})");
    let marker: Option<i64> = redis::cmd("GET").arg(keys.writer_marker()).query_async(&mut redis).await.unwrap();
    assert!(marker.is_some(), "the writer's marker is under the cell's tag");
    assert_eq!(harness.pending().await, 0, "both commands acknowledged");
}

/// The writer serves its cell only: a submission for another cell is refused (`other_cell`),
/// nothing stored; one for its cell is accepted and its first event says the cell and why.
#[sqlx::test(migrations = "../migrations")]
async fn a_writer_refuses_another_cells_task_and_records_the_choice_of_its_own(pool: PgPool) {
    use grid_shared::cells::{CellChoice, CellName};
    let mut harness = harness(pool, &[("GRID_CELLS", "be-north:BE")]).await;
    let organization_id = harness.organization().await;
    let submit = |cell: &str| {
        let choice = CellChoice::named(CellName::parse(cell).unwrap());
        Command::SubmitTask(thermal_submission(TaskId::new(), chrono::Duration::hours(1), Some(choice)))
    };
    let actor = Actor::Organization(organization_id);
    let elsewhere = harness.command(actor, Some(organization_id), &submit("fr")).await;
    harness.step_until_processed(&elsewhere).await;
    let reason: String = sqlx::query_scalar("select reason from processed_message where message_id = $1")
        .bind(elsewhere.id.as_uuid())
        .fetch_one(&harness.pool)
        .await
        .unwrap();
    assert!(reason.contains(r#""code":"other_cell""#), "{reason}");
    assert_eq!(harness.count("select count(*) from task").await, 0, "nothing stored for another cell");
    let here = harness.command(actor, Some(organization_id), &submit("be-north")).await;
    harness.step_until_processed(&here).await;
    let accepted: serde_json::Value =
        sqlx::query_scalar("select envelope -> 'payload' -> 'cell' from event where event_type = 'TaskAccepted'")
            .fetch_one(&harness.pool)
            .await
            .unwrap();
    assert_eq!(accepted, serde_json::json!({"cell": "be-north", "reason": "named"}));
}
