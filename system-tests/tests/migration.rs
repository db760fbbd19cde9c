//! A v1 database upgrades in place: a database filled by the v1 orchestrator (the fixture
//! `fixtures/v1_grid.sql`, dumped from a v1 run: completed, replicated, rejected, cancelled,
//! queued, assigned and running tasks, consent granted and revoked, credits and the proof chain)
//! migrates to v2, replays into the same tables, and a v2 writer takes it over and finishes
//! its open work, its proof blocks chaining onto the v1 proof links.

mod common;

use std::time::Duration;

use common::{OPERATOR_KEY, eventually, spawn_system};
use grid_orchestrator::app::MIGRATOR;
use grid_orchestrator::replay;
use sqlx::PgPool;

/// The last migration of v1.
const V1: i64 = 20261122060000;

/// The last migration before the compact rows (20261205000000: envelopes as `json`, the ledger
/// in the proof leaves, a task's result JSON only in `task_result`).
const BEFORE_COMPACT_ROWS: i64 = 20261204060000;

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_v1_database_migrates_replays_and_is_taken_over(pool: PgPool) {
    MIGRATOR.run_to(V1, &pool).await.unwrap();
    sqlx::raw_sql(include_str!("fixtures/v1_grid.sql")).execute(&pool).await.unwrap();
    let (before, divergences) = replay::audit(&pool, &grid_shared::cells::CellName::default(), 1).await.unwrap();
    assert_eq!(divergences, vec![], "the fixture is a consistent v1 database");
    let open_before = count(&pool, "select count(*) from task where status in ('queued', 'assigned', 'running')").await;
    assert_eq!(open_before, 3, "the fixture has work queued, assigned and running");

    MIGRATOR.run(&pool).await.unwrap();
    let (after, divergences) = replay::audit(&pool, &grid_shared::cells::CellName::default(), 1).await.unwrap();
    assert_eq!(after, before, "the events are untouched");
    assert_eq!(
        count(
            &pool,
            "select count(*) from event where ((envelope -> 'payload')::jsonb ? 'task_id') <> (task_id is not null)"
        )
        .await,
        0,
        "every archived event about a task is filed under it"
    );
    assert!(count(&pool, "select count(*) from event where task_id is not null").await > 0);
    assert_eq!(divergences, vec![], "the migrated tables replay");
    assert_eq!(count(&pool, "select count(*) from task where status = 'rejected' and finished_at is null").await, 0);
    assert_eq!(
        count(&pool, "select count(*) from task where status in ('assigned', 'running') and assignment_seq is null")
            .await,
        0,
        "tasks in flight know their assignment's channel entry"
    );
    assert_eq!(count(&pool, "select epoch from writer").await, 0);
    assert_eq!(
        count(&pool, "select count(*) from writer where cell_id = 'main'").await,
        1,
        "the lease of the writer before cells is the lease of the cell main"
    );

    // A v2 writer takes the database over. The v1 nodes are silent: their tasks are taken back
    // after a TTL, and a new fleet finishes everything open.
    let system = spawn_system(pool.clone(), &[]).await;
    let (_, api_key) = system.organization("After the upgrade").await;
    let (stop, fleet) = system.fleet(&api_key, 2, 2, 1.0, Duration::ZERO).await;
    eventually(Duration::from_secs(60), "the open v1 work to complete", || async {
        (count(&pool, "select count(*) from task where status in ('queued', 'assigned', 'running')").await == 0)
            .then_some(())
    })
    .await;
    assert_eq!(count(&pool, "select count(*) from task where status = 'failed'").await, 0);
    assert_eq!(count(&pool, "select epoch from writer").await, 1);
    let links = count(&pool, "select count(*) from green_proof").await;
    assert_eq!(links, 25, "the v1 links stay as they were");
    common::all_credits_sealed(&pool).await;
    let first_block: String =
        sqlx::query_scalar("select prev_hash from proof_block where height = 1").fetch_one(&pool).await.unwrap();
    let last_link: String =
        sqlx::query_scalar("select hash from green_proof order by seq desc limit 1").fetch_one(&pool).await.unwrap();
    assert_eq!(first_block, last_link, "the first block chains onto the last kgp1 link");
    let chain = grid_orchestrator::ledger::verify_stored_chain(&pool, "main", 8).await.unwrap();
    let leaves = count(&pool, "select count(*) from proof_leaf").await;
    assert!(chain.valid && chain.length == links as u64 && chain.leaves == leaves as u64 && leaves >= 3, "{chain:?}");
    let (_, divergences) = replay::audit(&pool, &grid_shared::cells::CellName::default(), 1).await.unwrap();
    assert_eq!(divergences, vec![]);
    stop.send(true).unwrap();
    fleet.join().await;
    system.stop().await;
}

/// The ledger as its readers see it, every column but the v2 entries' ids.
const LEDGER: &str = "select task_id::text, account, node_id::text, carbon_ng, amount_peur, created_at::text, cell_id
     from credit_entry order by task_id, account";

type LedgerRow = (String, String, Option<String>, i64, i64, String, String);

/// A v2 database (the fixture `fixtures/v2_grid.sql`, dumped after `just demo` at the last
/// commit before the compact rows) migrates: the ledger reads the same from the proof leaves,
/// the envelopes keep their content, replay is exact, the results are served as before, the
/// GDPR index finds the same tasks, and a writer of this version goes on from it.
#[sqlx::test(migrations = false)]
async fn a_v2_database_migrates_to_compact_rows(pool: PgPool) {
    MIGRATOR.run_to(BEFORE_COMPACT_ROWS, &pool).await.unwrap();
    sqlx::raw_sql(include_str!("fixtures/v2_grid.sql")).execute(&pool).await.unwrap();
    let main = grid_shared::cells::CellName::default();
    let (before, divergences) = replay::audit(&pool, &main, 1).await.unwrap();
    assert_eq!(divergences, vec![], "the fixture is a consistent v2 database");
    let ledger_before: Vec<LedgerRow> = sqlx::query_as(LEDGER).fetch_all(&pool).await.unwrap();
    assert_eq!(ledger_before.len(), 32, "two entries for each of the 16 credits");
    let envelopes = "select seq, envelope::jsonb::text from event order by seq";
    let envelopes_before: Vec<(i64, String)> = sqlx::query_as(envelopes).fetch_all(&pool).await.unwrap();
    let results_before: Vec<(String, serde_json::Value)> =
        sqlx::query_as("select task_id::text, result_json from task where result_json is not null order by task_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(results_before.len(), 16);
    let (owner, organization): (uuid::Uuid, uuid::Uuid) =
        sqlx::query_as("select owner_id, organization_id from consent limit 1").fetch_one(&pool).await.unwrap();
    let using_owner = "select count(*) from task
         where kind -> 'participants' @> jsonb_build_array(jsonb_build_object('owner_id', $1::text))";
    let tasks_of_owner: i64 = sqlx::query_scalar(using_owner).bind(owner.to_string()).fetch_one(&pool).await.unwrap();
    assert!(tasks_of_owner > 0, "the fixture's group tasks use the owners' readings");

    MIGRATOR.run(&pool).await.unwrap();
    let ledger_after: Vec<LedgerRow> = sqlx::query_as(LEDGER).fetch_all(&pool).await.unwrap();
    assert_eq!(ledger_after, ledger_before, "the ledger reads the same from the leaves");
    assert_eq!(
        count(&pool, "select count(*) from credit_entry_before_leaves").await,
        0,
        "every v2 entry repeated its leaf"
    );
    let envelopes_after: Vec<(i64, String)> = sqlx::query_as(envelopes).fetch_all(&pool).await.unwrap();
    assert_eq!(envelopes_after, envelopes_before, "the envelopes keep their content");
    let (after, divergences) = replay::audit(&pool, &main, 1).await.unwrap();
    assert_eq!(after, before, "replay reads the same events");
    assert_eq!(divergences, vec![], "the migrated tables replay");
    let targets = grid_orchestrator::store::load::purge_targets(
        &pool,
        main.as_str(),
        grid_shared::ids::OrganizationId(organization),
        grid_shared::ids::OwnerId(owner),
    )
    .await
    .unwrap();
    assert_eq!(targets.task_ids.len() as i64, tasks_of_owner, "the owners' index finds the same tasks");

    // A writer of this version takes the database over.
    let system = spawn_system(pool.clone(), &[]).await;
    for (task_id, result) in &results_before {
        assert_eq!(&system.task(OPERATOR_KEY, task_id).await["result_json"], result, "{task_id}");
    }
    let (_, api_key) = system.organization("After the compact rows").await;
    let (stop, fleet) = system.fleet(&api_key, 2, 2, 1.0, Duration::ZERO).await;
    let response = system.post("/v1/tasks", &api_key, common::thermal_task()).await;
    assert_eq!(response.status(), 202);
    let task_id = response.json::<serde_json::Value>().await.unwrap()["task_id"].as_str().unwrap().to_owned();
    let task = eventually(Duration::from_secs(30), "the new task to complete", || async {
        let task = system.task(&api_key, &task_id).await;
        (task["status"] == "completed").then_some(task)
    })
    .await;
    let stored: serde_json::Value =
        sqlx::query_scalar("select result_json from task_result where task_id = $1::uuid and result_hash = $2")
            .bind(&task_id)
            .bind(task["result_hash"].as_str().unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(task["result_json"], stored, "the result is served from its task_result row");
    assert_eq!(
        count(&pool, "select count(*) from task where result_json is not null").await,
        16,
        "a new task's row does not repeat its result"
    );
    let entries: Vec<(String, i64)> =
        sqlx::query_as("select account, amount_peur from credit_entry where task_id = $1::uuid order by account desc")
            .bind(&task_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(entries.iter().map(|(account, _)| account.as_str()).collect::<Vec<_>>(), ["node", "cooperative"]);
    stop.send(true).unwrap();
    fleet.join().await;
    common::all_credits_sealed(&pool).await;
    let (_, divergences) = replay::audit(&pool, &main, 1).await.unwrap();
    assert_eq!(divergences, vec![]);
    system.stop().await;
}

/// A proof leaf's hash is checked without a regular expression's bounded repetition
/// (20261205020000): the check refuses what the one before it refused, and the fixture's leaves
/// pass it.
#[sqlx::test(migrations = false)]
async fn a_proof_leafs_hash_is_64_lower_case_hex_digits(pool: PgPool) {
    MIGRATOR.run_to(BEFORE_COMPACT_ROWS, &pool).await.unwrap();
    sqlx::raw_sql(include_str!("fixtures/v2_grid.sql")).execute(&pool).await.unwrap();
    MIGRATOR.run(&pool).await.unwrap();
    let leaf: String = sqlx::query_scalar("select leaf_hash from proof_leaf limit 1").fetch_one(&pool).await.unwrap();
    let refused = [
        leaf.to_uppercase(),
        leaf[1..].to_owned(),
        format!("{leaf}0"),
        format!("g{}", &leaf[1..]),
        format!("{}\n", &leaf[1..]),
        format!(" {}", &leaf[1..]),
        format!("é{}", &leaf[2..]),
        String::new(),
    ];
    let update = "update proof_leaf set leaf_hash = $1 where leaf_hash = $2";
    for hash in refused {
        let error = sqlx::query(update).bind(&hash).bind(&leaf).execute(&pool).await.unwrap_err();
        let constraint = error.as_database_error().and_then(|error| error.constraint().map(str::to_owned));
        assert_eq!(constraint.as_deref(), Some("proof_leaf_leaf_hash_check"), "{hash:?}");
    }
    let mut transaction = pool.begin().await.unwrap();
    let changed = sqlx::query(update).bind("0123456789abcdef".repeat(4)).bind(&leaf).execute(&mut *transaction).await;
    assert_eq!(changed.unwrap().rows_affected(), 1, "64 lower-case hex digits pass");
    transaction.rollback().await.unwrap();
}
