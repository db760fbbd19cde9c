//! The ledger and the green-proof chain against real PostgreSQL: credits decided by the
//! lifecycle, blocks closed and mined as the writer does, both written by the store; then every
//! kind of tampering with the stored chain, each found at its block (and leaf, where it can be
//! named).

use chrono::Utc;
use grid_orchestrator::config::OrchestratorConfig;
use grid_orchestrator::ledger::verify_stored_chain;
use grid_orchestrator::model::batch::Batch;
use grid_orchestrator::model::lifecycle;
use grid_orchestrator::model::{ProofChain, Rules, TaskResult};
use grid_orchestrator::store::postgres::{self, StoreError};
use grid_shared::carbon::MicroWattHours;
use grid_shared::ids::{NodeId, OrganizationId, TaskId};
use grid_shared::proof::{GENESIS_HASH, ProofDraft, mine, storable_time};
use grid_shared::signals::SignalBook;
use sqlx::PgPool;

const DIFFICULTY: u8 = 6;

fn rules() -> Rules {
    let settings = [("DATABASE_URL", "postgres://unused"), ("GRID_PROOF_DIFFICULTY", "6")];
    let config = OrchestratorConfig::from_lookup(|name| {
        settings.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
    })
    .unwrap();
    Rules::from_config(&config)
}

fn result(node_id: NodeId, solar_wh: i64) -> TaskResult {
    TaskResult {
        attempt: 1,
        node_id,
        owner_id: OrganizationId::new(),
        result_hash: "ab".repeat(32),
        energy: MicroWattHours(100_000_000),
        solar: MicroWattHours(solar_wh * 1_000_000),
        refusal: None,
    }
}

/// Credits a result of `solar_wh` Wh of sun and writes it in a batch of its own (epoch 0: no
/// writer has taken over in this database).
async fn credit(
    pool: &PgPool,
    chain: &mut ProofChain,
    node_id: NodeId,
    task_id: TaskId,
    solar_wh: i64,
) -> Result<(), StoreError> {
    let mut batch = Batch::default();
    let rules = rules();
    let signal = SignalBook::fixed(rules.carbon.grid_intensity_mg_per_kwh).lookup(&rules.default_zone, Utc::now());
    batch.credits.push(lifecycle::credit(task_id, &result(node_id, solar_wh), signal, chain, Utc::now(), &rules));
    postgres::flush(pool, main_cell_at_epoch_0(), &mut batch, 0).await.map(|_| ())
}

/// Closes the open block, mines it and writes it, as the writer's sealing does.
async fn seal(pool: &PgPool, chain: &mut ProofChain) {
    assert!(chain.close_if_due(Utc::now() + chrono::Duration::days(1), usize::MAX, chrono::Duration::zero()));
    let block = chain.next_draft(Utc::now(), DIFFICULTY).expect("a closed block").mine();
    assert!(chain.sealed(block.draft.height, &block.hash));
    let mut batch = Batch::default();
    batch.sealed.push(block);
    postgres::flush(pool, main_cell_at_epoch_0(), &mut batch, 0).await.unwrap();
}

async fn node(pool: &PgPool) -> NodeId {
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
    node_id
}

async fn tasks(pool: &PgPool, count: usize) -> Vec<TaskId> {
    let organization: uuid::Uuid =
        sqlx::query_scalar("select organization_id from organization limit 1").fetch_one(pool).await.unwrap();
    let mut task_ids = Vec::new();
    for _ in 0..count {
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
    task_ids
}

/// Two `kgp1` links (as a v1 database has them), then three blocks of four leaves chained onto
/// the last link.
async fn chain_of_three_blocks(pool: &PgPool) -> ProofChain {
    let node_id = node(pool).await;
    let mut prev = GENESIS_HASH.to_owned();
    for (seq, task_id) in (1..).zip(tasks(pool, 2).await) {
        let link = mine(ProofDraft {
            seq,
            task_id,
            node_id,
            energy: MicroWattHours(1),
            solar: MicroWattHours(1),
            carbon: grid_shared::carbon::Nanograms(180),
            value: grid_shared::carbon::PicoEuros(4),
            created_at: storable_time(Utc::now()),
            difficulty: DIFFICULTY,
            prev_hash: prev.clone(),
        });
        prev = link.hash.clone();
        let mut conn = pool.acquire().await.unwrap();
        grid_orchestrator::ledger::insert_link(&mut conn, &link).await.unwrap();
    }
    let mut chain = ProofChain::new(0, &prev);
    for block in tasks(pool, 12).await.chunks(4) {
        for (solar, task_id) in (1..).zip(block) {
            credit(pool, &mut chain, node_id, *task_id, solar).await.unwrap();
        }
        seal(pool, &mut chain).await;
    }
    let verdict = verify_stored_chain(pool, "main", DIFFICULTY).await.unwrap();
    assert!(verdict.valid, "{verdict:?}");
    assert_eq!((verdict.length, verdict.blocks, verdict.leaves, verdict.head_height), (2, 3, 12, Some(3)));
    chain
}

/// Where the stored chain breaks: (block, leaf).
async fn broken_at(pool: &PgPool) -> (Option<i64>, Option<i64>) {
    let verdict = verify_stored_chain(pool, "main", DIFFICULTY).await.unwrap();
    assert!(!verdict.valid, "tampering went unnoticed: {verdict:?}");
    (verdict.first_invalid_block, verdict.first_invalid_leaf)
}

/// The fence of a database no writer took over yet: the cell `main` at epoch 0.
fn main_cell_at_epoch_0() -> postgres::Fence<'static> {
    static MAIN: std::sync::LazyLock<grid_shared::cells::CellName> =
        std::sync::LazyLock::new(grid_shared::cells::CellName::default);
    postgres::Fence { cell: &MAIN, epoch: 0 }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_credit_is_two_entries_that_add_up_and_a_leaf_of_the_open_block(pool: PgPool) {
    let node_id = node(&pool).await;
    let task = tasks(&pool, 1).await[0];
    let mut chain = ProofChain::new(0, GENESIS_HASH);
    credit(&pool, &mut chain, node_id, task, 60).await.unwrap();
    let entries: Vec<(String, i64, i64)> =
        sqlx::query_as("select account, carbon_ng, amount_peur from credit_entry order by account desc")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        entries,
        vec![("node".to_owned(), 10_800_000_000, 189_000_000), ("cooperative".to_owned(), 0, 81_000_000)]
    );
    let leaf: (i64, i32, i64, i64) =
        sqlx::query_as("select block_height, leaf_index, node_peur, cooperative_peur from proof_leaf")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(leaf, (1, 0, 189_000_000, 81_000_000));
    let blocks: i64 = sqlx::query_scalar("select count(*) from proof_block").fetch_one(&pool).await.unwrap();
    assert_eq!(blocks, 0, "pending: sealed later");
    seal(&pool, &mut chain).await;
    let verdict = verify_stored_chain(&pool, "main", DIFFICULTY).await.unwrap();
    assert!(verdict.valid && verdict.blocks == 1 && verdict.leaves == 1, "{verdict:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_result_cannot_be_credited_twice(pool: PgPool) {
    let node_id = node(&pool).await;
    let task = tasks(&pool, 1).await[0];
    let mut chain = ProofChain::new(0, GENESIS_HASH);
    credit(&pool, &mut chain, node_id, task, 60).await.unwrap();
    let again = credit(&pool, &mut chain, node_id, task, 60).await;
    assert!(
        matches!(again, Err(StoreError::Postgres(sqlx::Error::Database(ref error))) if error.is_unique_violation()),
        "{again:?}"
    );
    let entries: i64 = sqlx::query_scalar("select count(*) from credit_entry").fetch_one(&pool).await.unwrap();
    assert_eq!(entries, 2);
}

/// Each column of a leaf row, changed, is found at leaf 1 of block 2; changed back, the chain
/// verifies again.
#[sqlx::test(migrations = "../migrations")]
async fn an_edited_leaf_field_is_found_at_its_leaf(pool: PgPool) {
    chain_of_three_blocks(&pool).await;
    let edits = [
        ("task_id", "uuid", "gen_random_uuid()"),
        ("node_id", "uuid", "gen_random_uuid()"),
        ("attempt", "integer", "attempt + 1"),
        ("energy_uwh", "bigint", "energy_uwh + 1"),
        ("solar_uwh", "bigint", "solar_uwh + 1"),
        ("carbon_ng", "bigint", "carbon_ng + 1"),
        ("node_peur", "bigint", "node_peur + 1"),
        ("cooperative_peur", "bigint", "cooperative_peur - 1"),
        ("credited_at", "timestamptz", "credited_at + interval '1 microsecond'"),
        ("leaf_hash", "text", "repeat('0', 64)"),
        ("leaf_index", "integer", "leaf_index + 10"),
        ("zone", "text", "'FR'"),
        ("intensity_hour", "timestamptz", "intensity_hour - interval '1 hour'"),
        ("intensity_mg_per_kwh", "bigint", "intensity_mg_per_kwh + 1"),
        ("intensity_kind", "text", "'marginal'"),
        ("intensity_source", "text", "'file:forged.csv'"),
        ("price_peur_per_kg", "bigint", "price_peur_per_kg + 1"),
        ("node_share_percent", "smallint", "node_share_percent - 1"),
    ];
    for (column, kind, change) in edits {
        let original: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select {column}::text from proof_leaf where block_height = 2 and leaf_index = 1"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "update proof_leaf set {column} = {change} where block_height = 2 and leaf_index = 1"
        )))
        .execute(&pool)
        .await
        .unwrap();
        assert_eq!(broken_at(&pool).await, (Some(2), Some(1)), "an edited {column}");
        let key = if column == "leaf_index" { "leaf_index = 11" } else { "leaf_index = 1" };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "update proof_leaf set {column} = $1::{kind} where block_height = 2 and {key}"
        )))
        .bind(&original)
        .execute(&pool)
        .await
        .unwrap();
        assert!(verify_stored_chain(&pool, "main", DIFFICULTY).await.unwrap().valid, "{column} restored");
    }
}

/// A leaf whose intensity was lowered and its hash recomputed to match still does not hold:
/// its figures no longer follow from its basis, and the verifier names it.
#[sqlx::test(migrations = "../migrations")]
async fn a_credit_that_does_not_follow_from_its_basis_is_found_at_its_leaf(pool: PgPool) {
    chain_of_three_blocks(&pool).await;
    let blocks = grid_orchestrator::ledger::load_block_page(&pool, "main", 1, 1).await.unwrap();
    let (block, leaves) = blocks.into_iter().next().expect("block 2");
    assert_eq!(block.draft.height, 2);
    let mut stored = leaves.into_iter().find(|stored| stored.leaf_index == 1).expect("its leaf 1");
    let basis = stored.leaf.basis.as_mut().expect("a kgp3 leaf");
    assert_eq!(basis.intensity_source.as_str(), "fixed");
    basis.intensity_mg_per_kwh /= 2;
    let forged_hash = hex::encode(stored.leaf.hash());
    sqlx::query(
        "update proof_leaf set intensity_mg_per_kwh = $1, leaf_hash = $2 where block_height = 2 and leaf_index = 1",
    )
    .bind(basis_intensity(&stored))
    .bind(&forged_hash)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(broken_at(&pool).await, (Some(2), Some(1)));
    let verdict = verify_stored_chain(&pool, "main", DIFFICULTY).await.unwrap();
    assert!(verdict.reason.unwrap().contains("does not follow from its basis"));
}

fn basis_intensity(stored: &grid_shared::blocks::StoredLeaf) -> i64 {
    stored.leaf.basis.as_ref().map(|basis| basis.intensity_mg_per_kwh).unwrap_or_default()
}

/// Each column of a block row, changed, is found at that block.
#[sqlx::test(migrations = "../migrations")]
async fn an_edited_block_field_is_found_at_its_block(pool: PgPool) {
    chain_of_three_blocks(&pool).await;
    let edits = [
        ("prev_hash", "text", "repeat('1', 64)"),
        ("merkle_root", "text", "repeat('2', 64)"),
        ("leaf_count", "integer", "leaf_count + 1"),
        ("sealed_at", "timestamptz", "sealed_at + interval '1 microsecond'"),
        ("difficulty", "smallint", "difficulty + 1"),
        ("nonce", "bigint", "nonce + 1"),
        ("hash", "text", "repeat('0', 64)"),
    ];
    for (column, kind, change) in edits {
        let original: String =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select {column}::text from proof_block where height = 2")))
                .fetch_one(&pool)
                .await
                .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("update proof_block set {column} = {change} where height = 2")))
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(broken_at(&pool).await.0, Some(2), "an edited {column}");
        sqlx::query(sqlx::AssertSqlSafe(format!("update proof_block set {column} = $1::{kind} where height = 2")))
            .bind(&original)
            .execute(&pool)
            .await
            .unwrap();
        assert!(verify_stored_chain(&pool, "main", DIFFICULTY).await.unwrap().valid, "{column} restored");
    }
    // A kgp1 link edited before the blocks: found at its seq, and no block is checked.
    sqlx::query("update green_proof set solar_uwh = solar_uwh + 1 where seq = 2").execute(&pool).await.unwrap();
    let verdict = verify_stored_chain(&pool, "main", DIFFICULTY).await.unwrap();
    assert_eq!((verdict.valid, verdict.first_invalid_seq, verdict.blocks), (false, Some(2), 0));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_deleted_leaf_is_named(pool: PgPool) {
    chain_of_three_blocks(&pool).await;
    sqlx::query("delete from proof_leaf where block_height = 3 and leaf_index = 2").execute(&pool).await.unwrap();
    assert_eq!(broken_at(&pool).await, (Some(3), Some(2)));
}

#[sqlx::test(migrations = "../migrations")]
async fn swapped_leaves_break_their_block(pool: PgPool) {
    chain_of_three_blocks(&pool).await;
    sqlx::query("update proof_leaf set leaf_index = leaf_index + 100 where block_height = 2 and leaf_index in (0, 3)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "update proof_leaf set leaf_index = case leaf_index when 100 then 3 else 0 end
         where block_height = 2 and leaf_index in (100, 103)",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(broken_at(&pool).await.0, Some(2));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_deleted_block_is_found_where_it_was(pool: PgPool) {
    chain_of_three_blocks(&pool).await;
    sqlx::query("delete from proof_block where height = 2").execute(&pool).await.unwrap();
    assert_eq!(broken_at(&pool).await.0, Some(2));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_forged_block_appended_is_found(pool: PgPool) {
    let mut chain = chain_of_three_blocks(&pool).await;
    // A block that chains onto the head and holds a forged leaf, with a made-up hash.
    let node_id: uuid::Uuid = sqlx::query_scalar("select node_id from node limit 1").fetch_one(&pool).await.unwrap();
    let task = tasks(&pool, 1).await[0];
    credit(&pool, &mut chain, NodeId(node_id), task, 1_000).await.unwrap();
    assert!(chain.close_if_due(Utc::now() + chrono::Duration::days(1), usize::MAX, chrono::Duration::zero()));
    let mut forged = chain.next_draft(Utc::now(), DIFFICULTY).unwrap().mine();
    forged.hash = "00".repeat(32);
    let mut batch = Batch::default();
    batch.sealed.push(forged);
    postgres::flush(&pool, main_cell_at_epoch_0(), &mut batch, 0).await.unwrap();
    assert_eq!(broken_at(&pool).await.0, Some(4));
}
