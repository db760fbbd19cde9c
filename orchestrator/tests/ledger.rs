//! The ledger and the green-proof chain against real PostgreSQL: credits decided by the
//! lifecycle and written by the store, as the writer does, one batch per credit.

use chrono::Utc;
use grid_orchestrator::config::OrchestratorConfig;
use grid_orchestrator::ledger::verify_stored_chain;
use grid_orchestrator::model::lifecycle;
use grid_orchestrator::model::{ChainHead, Rules, TaskResult};
use grid_orchestrator::store::postgres::{self, StoreError};
use grid_orchestrator::writer::batch::Batch;
use grid_shared::carbon::MicroWattHours;
use grid_shared::ids::{NodeId, OrganizationId, TaskId};
use sqlx::PgPool;

const DIFFICULTY: u8 = 6;

async fn fixture(pool: &PgPool, tasks: usize) -> (NodeId, Vec<TaskId>) {
    let organization = uuid::Uuid::new_v4();
    sqlx::query("insert into organization (organization_id, name) values ($1, 'Ledger test')")
        .bind(organization)
        .execute(pool)
        .await
        .unwrap();
    let node_id = NodeId::new();
    sqlx::query(
        "insert into node (node_id, organization_id, name, cpu_cores, has_solar, location, token_hash)
         values ($1, $2, 'pi', 4, true, 'Namur', repeat('a', 64))",
    )
    .bind(node_id.as_uuid())
    .bind(organization)
    .execute(pool)
    .await
    .unwrap();
    let mut task_ids = Vec::new();
    for _ in 0..tasks {
        let task_id = TaskId::new();
        sqlx::query(
            "insert into task (task_id, organization_id, copropriete_id, kind_type, kind, priority, deadline, status,
                 correlation_id)
             values ($1, $2, $3, 'building_thermal_simulation', '{}', 5, now() + interval '1 hour', 'queued', $3)",
        )
        .bind(task_id.as_uuid())
        .bind(organization)
        .bind(uuid::Uuid::new_v4())
        .execute(pool)
        .await
        .unwrap();
        task_ids.push(task_id);
    }
    (node_id, task_ids)
}

fn rules() -> Rules {
    let settings = [("DATABASE_URL", "postgres://unused"), ("GRID_PROOF_DIFFICULTY", "6")];
    let config = OrchestratorConfig::from_lookup(|name| {
        settings.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
    })
    .unwrap();
    Rules::from_config(&config)
}

/// Credits a result of `solar_wh` Wh of sun and writes it in a batch of its own (epoch 0: no
/// writer has taken over in this database).
async fn credit(
    pool: &PgPool,
    chain: &mut ChainHead,
    node_id: NodeId,
    task_id: TaskId,
    solar_wh: i64,
) -> Result<(), StoreError> {
    let result = TaskResult {
        attempt: 1,
        node_id,
        owner_id: OrganizationId::new(),
        result_hash: "ab".repeat(32),
        energy: MicroWattHours(100_000_000),
        solar: MicroWattHours(solar_wh * 1_000_000),
        refusal: None,
    };
    let mut batch = Batch::default();
    batch.credits.push(lifecycle::credit(task_id, &result, chain, Utc::now(), &rules()));
    postgres::flush(pool, 0, &mut batch, 0).await.map(|_| ())
}

#[sqlx::test(migrations = "../migrations")]
async fn a_credit_is_two_entries_that_add_up_and_one_link(pool: PgPool) {
    let (node_id, tasks) = fixture(&pool, 1).await;
    credit(&pool, &mut ChainHead::default(), node_id, tasks[0], 60).await.unwrap();
    let entries: Vec<(String, i64, i64)> =
        sqlx::query_as("select account, carbon_ng, amount_peur from credit_entry order by account desc")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        entries,
        vec![("node".to_owned(), 10_800_000_000, 189_000_000), ("cooperative".to_owned(), 0, 81_000_000)]
    );
    let link: (i64, i64, String) =
        sqlx::query_as("select seq, value_peur, prev_hash from green_proof").fetch_one(&pool).await.unwrap();
    assert_eq!(link, (1, 270_000_000, grid_shared::proof::GENESIS_HASH.to_owned()));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_task_cannot_be_credited_twice(pool: PgPool) {
    let (node_id, tasks) = fixture(&pool, 1).await;
    let mut chain = ChainHead::default();
    credit(&pool, &mut chain, node_id, tasks[0], 60).await.unwrap();
    let again = credit(&pool, &mut chain, node_id, tasks[0], 60).await;
    assert!(
        matches!(again, Err(StoreError::Postgres(sqlx::Error::Database(ref error))) if error.is_unique_violation()),
        "{again:?}"
    );
    let entries: i64 = sqlx::query_scalar("select count(*) from credit_entry").fetch_one(&pool).await.unwrap();
    assert_eq!(entries, 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_stored_chain_verifies_and_tampering_is_found_at_its_link(pool: PgPool) {
    let (node_id, tasks) = fixture(&pool, 6).await;
    let mut chain = ChainHead::default();
    for (index, task_id) in tasks.iter().enumerate() {
        credit(&pool, &mut chain, node_id, *task_id, index as i64 + 1).await.unwrap();
    }
    let verdict = verify_stored_chain(&pool, DIFFICULTY).await.unwrap();
    assert!(verdict.valid);
    assert_eq!(verdict.length, 6);

    // Edit a field.
    sqlx::query("update green_proof set carbon_ng = carbon_ng + 1 where seq = 4").execute(&pool).await.unwrap();
    assert_eq!(verify_stored_chain(&pool, DIFFICULTY).await.unwrap().first_invalid_seq, Some(4));
    sqlx::query("update green_proof set carbon_ng = carbon_ng - 1 where seq = 4").execute(&pool).await.unwrap();
    assert!(verify_stored_chain(&pool, DIFFICULTY).await.unwrap().valid);

    // Swap two links.
    sqlx::query("update green_proof set seq = seq + 1000 where seq in (2, 3)").execute(&pool).await.unwrap();
    sqlx::query("update green_proof set seq = case seq when 1002 then 3 else 2 end where seq in (1002, 1003)")
        .execute(&pool)
        .await
        .unwrap();
    let swapped = verify_stored_chain(&pool, DIFFICULTY).await.unwrap();
    assert_eq!(swapped.first_invalid_seq, Some(2), "{swapped:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_deleted_link_is_found_where_it_was(pool: PgPool) {
    let (node_id, tasks) = fixture(&pool, 5).await;
    let mut chain = ChainHead::default();
    for task_id in &tasks {
        credit(&pool, &mut chain, node_id, *task_id, 2).await.unwrap();
    }
    sqlx::query("delete from green_proof where seq = 3").execute(&pool).await.unwrap();
    let verdict = verify_stored_chain(&pool, DIFFICULTY).await.unwrap();
    assert_eq!((verdict.valid, verdict.first_invalid_seq, verdict.length), (false, Some(3), 2));
}
