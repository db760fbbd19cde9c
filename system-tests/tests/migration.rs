//! A v1 database upgrades in place: a database filled by the v1 orchestrator (the fixture
//! `fixtures/v1_grid.sql`, dumped from a v1 run: completed, replicated, rejected, cancelled,
//! queued, assigned and running tasks, consent granted and revoked, credits and the proof chain)
//! migrates to v2, replays into the same tables, and a v2 writer takes it over and finishes
//! its open work, its proof blocks chaining onto the v1 proof links.

mod common;

use std::time::Duration;

use common::{eventually, spawn_system};
use grid_orchestrator::app::MIGRATOR;
use grid_orchestrator::replay;
use sqlx::PgPool;

/// The last migration of v1.
const V1: i64 = 20261122060000;

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
        count(&pool, "select count(*) from event where (envelope -> 'payload' ? 'task_id') <> (task_id is not null)")
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
