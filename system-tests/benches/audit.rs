//! `just bench-audit`: how fast the event log replays and the proof chain verifies, over a
//! synthetic archive written straight into a scratch database (40,000 completed, credited tasks:
//! 200,000 events; the first 1,000 credits as `kgp1` links, the rest as `kgp2` leaves in blocks
//! of 2,000), and what sealing costs per credited result. A report, not a test.

use std::time::Instant;

use chrono::Utc;
use grid_shared::blocks::{Block, BlockDraft, BlockVerifier, Leaf, StoredLeaf, inclusion_proof};
use grid_shared::carbon::{CarbonPolicy, MicroWattHours};
use grid_shared::domain::Priority;
use grid_shared::envelope::{Actor, Envelope, Origin};
use grid_shared::events::{
    CreditsDistributed, EnergyCheck, Event, ScoreInputs, TaskAccepted, TaskAssigned, TaskCompleted, TaskStarted,
};
use grid_shared::ids::{CoproprieteId, NodeId, OrganizationId, TaskId};
use grid_shared::merkle::Hash;
use grid_shared::proof::{GENESIS_HASH, ProofDraft, mine, storable_time};
use serde_json::json;

#[path = "support/mod.rs"]
mod support;

use support::Scratch;

const TASKS: usize = 40_000;
const V1_LINKS: usize = 1_000;
const BLOCK_LEAVES: usize = 2_000;
const DIFFICULTY: u8 = 8;

fn events_of(task_id: TaskId, node_id: NodeId) -> [Event; 5] {
    let inputs = ScoreInputs { node_id, solar_watts: 300.0, cpu_usage: 10.0, running: 0, cpu_cores: 4, eco_score: 0.9 };
    let solar = MicroWattHours(50);
    let policy = CarbonPolicy::default();
    [
        Event::TaskAccepted(TaskAccepted {
            task_id,
            copropriete_id: CoproprieteId::new(),
            kind: "building_thermal_simulation".into(),
            priority: Priority::DEFAULT,
            deadline: Utc::now(),
            participant_count: 0,
            cell: None,
        }),
        Event::TaskAssigned(TaskAssigned {
            task_id,
            node_id,
            attempt: 1,
            deadline: Utc::now(),
            chosen: inputs.clone(),
            runner_up: Some(inputs),
            assigned_by: "bench".into(),
        }),
        Event::TaskStarted(TaskStarted { task_id, node_id, attempt: 1 }),
        Event::TaskCompleted(TaskCompleted {
            task_id,
            node_id,
            attempt: 1,
            result_hash: "ab".repeat(32),
            energy_used: MicroWattHours(100),
            solar_contribution: solar,
            check: EnergyCheck {
                runtime_ms: 40,
                cpu_cores: 4,
                max_milliwatts_per_core: 2_000,
                energy_bound: MicroWattHours(88),
                refusal: None,
            },
            validation: None,
            sci: None,
            // This archive's credits are events of their own, as writers recorded them before
            // credits were folded into the completion.
            credits: None,
        }),
        Event::CreditsDistributed(CreditsDistributed {
            task_id,
            node_id,
            solar_contribution: solar,
            policy,
            signal: None,
            split: policy.credit(solar),
            leaf: None,
        }),
    ]
}

fn leaf_of(task_id: TaskId, node_id: NodeId) -> Leaf {
    let split = CarbonPolicy::default().credit(MicroWattHours(50));
    Leaf {
        task_id,
        node_id,
        attempt: 1,
        energy: MicroWattHours(100),
        solar: MicroWattHours(50),
        carbon: split.carbon_saved,
        node_share: split.node_share,
        cooperative_share: split.cooperative_share,
        credited_at: storable_time(Utc::now()),
        // The synthetic archive is of fixed-intensity (kgp2) leaves, as a grid from before
        // carbon signals holds them; a kgp3 line is about 120 bytes longer to hash.
        basis: None,
    }
}

/// Seals `leaves` into blocks of `BLOCK_LEAVES` after `prev_hash`, as the writer does (leaf
/// hash at credit time, root and proof of work at sealing).
fn seal_all(leaves: &[Leaf], prev_hash: &str) -> Vec<(Block, Vec<StoredLeaf>)> {
    let mut prev = prev_hash.to_owned();
    let mut blocks = Vec::new();
    for (index, chunk) in leaves.chunks(BLOCK_LEAVES).enumerate() {
        let hashes: Vec<Hash> = chunk.iter().map(Leaf::hash).collect();
        let block =
            BlockDraft::of_leaves(index as i64 + 1, &prev, &hashes, storable_time(Utc::now()), DIFFICULTY).mine();
        prev = block.hash.clone();
        let stored = chunk
            .iter()
            .zip(&hashes)
            .enumerate()
            .map(|(index, (leaf, hash))| StoredLeaf {
                leaf_index: index as i64,
                leaf: leaf.clone(),
                leaf_hash: hex::encode(hash),
            })
            .collect();
        blocks.push((block, stored));
    }
    blocks
}

async fn run() -> anyhow::Result<serde_json::Value> {
    let scratch = Scratch::new("audit").await?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&scratch.database_url).await?;
    grid_orchestrator::app::MIGRATOR.run(&pool).await?;
    let organization_id = OrganizationId::new();
    let node_id = NodeId::new();
    let origin = Origin {
        correlation_id: uuid::Uuid::new_v4(),
        causation_id: None,
        organization_id: Some(organization_id),
        actor: Actor::Orchestrator,
    };
    let clock = Instant::now();
    let mut seq = 0_i64;
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut all_leaves = Vec::with_capacity(TASKS);
    for chunk in 0..(TASKS / 1_000) {
        let (mut seqs, mut ids, mut kinds, mut bodies) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut links = Vec::with_capacity(1_000);
        for index in 0..1_000 {
            let task_id = TaskId(uuid::Uuid::from_u128((chunk * 1_000 + index) as u128 + 1));
            for event in events_of(task_id, node_id) {
                seq += 1;
                let envelope = Envelope::wrap(&event, origin);
                seqs.push(seq);
                ids.push(envelope.id.as_uuid());
                kinds.push(envelope.message_type.clone());
                bodies.push(serde_json::to_value(&envelope)?);
            }
            if chunk * 1_000 + index >= V1_LINKS {
                all_leaves.push(leaf_of(task_id, node_id));
                continue;
            }
            let split = CarbonPolicy::default().credit(MicroWattHours(50));
            let link = mine(ProofDraft {
                seq: (chunk * 1_000 + index + 1) as i64,
                task_id,
                node_id,
                energy: MicroWattHours(100),
                solar: MicroWattHours(50),
                carbon: split.carbon_saved,
                value: split.total,
                created_at: storable_time(Utc::now()),
                difficulty: DIFFICULTY,
                prev_hash: prev_hash.clone(),
            });
            prev_hash = link.hash.clone();
            links.push(link);
        }
        sqlx::query(
            "insert into event (seq, event_id, event_type, occurred_at, envelope)
             select seq, id, kind, now(), body from unnest($1::int8[], $2::uuid[], $3::text[], $4::jsonb[]) as t(seq, id, kind, body)",
        )
        .bind(&seqs)
        .bind(&ids)
        .bind(&kinds)
        .bind(&bodies)
        .execute(&pool)
        .await?;
        let mut conn = pool.acquire().await?;
        for link in &links {
            grid_orchestrator::ledger::insert_link(&mut conn, link).await?;
        }
    }
    // Sealing, as the writer pays it per credited result: the leaf's hash, the block's root and
    // its proof of work (median of three runs over the 39,000 leaves).
    let mut sealings = Vec::new();
    let mut blocks = Vec::new();
    for _ in 0..3 {
        let clock = Instant::now();
        blocks = seal_all(&all_leaves, &prev_hash);
        sealings.push(clock.elapsed());
    }
    sealings.sort();
    let sealing_us_per_leaf = sealings[1].as_secs_f64() * 1e6 / all_leaves.len() as f64;
    for (block, leaves) in &blocks {
        let draft = &block.draft;
        sqlx::query(
            "insert into proof_block (height, prev_hash, merkle_root, leaf_count, sealed_at, difficulty, nonce, hash)
             values ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(draft.height)
        .bind(&draft.prev_hash)
        .bind(&draft.merkle_root)
        .bind(i32::try_from(draft.leaf_count)?)
        .bind(draft.sealed_at)
        .bind(i16::from(draft.difficulty))
        .bind(block.nonce)
        .bind(&block.hash)
        .execute(&pool)
        .await?;
        sqlx::query(
            "insert into proof_leaf (block_height, leaf_index, task_id, node_id, attempt, energy_uwh, solar_uwh, carbon_ng,
                 node_peur, cooperative_peur, credited_at, leaf_hash)
             select $1, * from unnest($2::int4[], $3::uuid[], $4::uuid[], $5::int4[], $6::int8[], $7::int8[], $8::int8[],
                 $9::int8[], $10::int8[], $11::timestamptz[], $12::text[])",
        )
        .bind(draft.height)
        .bind(leaves.iter().map(|stored| i32::try_from(stored.leaf_index).unwrap_or(i32::MAX)).collect::<Vec<_>>())
        .bind(leaves.iter().map(|stored| stored.leaf.task_id.as_uuid()).collect::<Vec<_>>())
        .bind(leaves.iter().map(|stored| stored.leaf.node_id.as_uuid()).collect::<Vec<_>>())
        .bind(leaves.iter().map(|stored| stored.leaf.attempt).collect::<Vec<_>>())
        .bind(leaves.iter().map(|stored| stored.leaf.energy.0).collect::<Vec<_>>())
        .bind(leaves.iter().map(|stored| stored.leaf.solar.0).collect::<Vec<_>>())
        .bind(leaves.iter().map(|stored| stored.leaf.carbon.0).collect::<Vec<_>>())
        .bind(leaves.iter().map(|stored| stored.leaf.node_share.0).collect::<Vec<_>>())
        .bind(leaves.iter().map(|stored| stored.leaf.cooperative_share.0).collect::<Vec<_>>())
        .bind(leaves.iter().map(|stored| stored.leaf.credited_at).collect::<Vec<_>>())
        .bind(leaves.iter().map(|stored| stored.leaf_hash.as_str()).collect::<Vec<_>>())
        .execute(&pool)
        .await?;
    }
    let setup = clock.elapsed();
    // Verification in memory (the verifier's own speed) and the inclusion proof of a block of
    // 2,000 leaves.
    let mut checks = Vec::new();
    for _ in 0..3 {
        let clock = Instant::now();
        let mut verifier = BlockVerifier::new(DIFFICULTY, &prev_hash);
        anyhow::ensure!(blocks.iter().all(|(block, leaves)| verifier.push(block, leaves)), "the blocks do not verify");
        checks.push(clock.elapsed());
    }
    checks.sort();
    let leaves_per_second_in_memory = all_leaves.len() as f64 / checks[1].as_secs_f64();
    let first_leaves: Vec<Leaf> = blocks[0].1.iter().map(|stored| stored.leaf.clone()).collect();
    let proof_hashes = (0..first_leaves.len())
        .map(|index| inclusion_proof(&blocks[0].0, &first_leaves, index).map_or(0, |proof| proof.audit_path.len()))
        .max()
        .unwrap_or(0);

    // An archive an auditor replays is not minutes old: vacuumed, hint bits set. Each figure is
    // the median of three runs.
    sqlx::query("vacuum (analyze) event, green_proof, proof_block, proof_leaf").execute(&pool).await?;
    let mut replays = Vec::new();
    let mut projection = None;
    for _ in 0..3 {
        let clock = Instant::now();
        projection =
            Some(grid_orchestrator::replay::from_postgres(&pool, &grid_shared::cells::CellName::default(), 1).await?);
        replays.push(clock.elapsed());
    }
    let projection = projection.expect("three runs");
    replays.sort();
    let replay = replays[1];
    let events_per_second = projection.events as f64 / replay.as_secs_f64();
    let mut verifies = Vec::new();
    let mut verdict = None;
    for _ in 0..3 {
        let clock = Instant::now();
        verdict = Some(grid_orchestrator::ledger::verify_stored_chain(&pool, "main", DIFFICULTY).await?);
        verifies.push(clock.elapsed());
    }
    let verdict = verdict.expect("three runs");
    verifies.sort();
    let verify = verifies[1];
    anyhow::ensure!(
        verdict.valid && verdict.length == V1_LINKS as u64 && verdict.leaves == (TASKS - V1_LINKS) as u64,
        "the synthetic chain does not verify: {verdict:?}"
    );
    let entries_per_second = (verdict.length + verdict.leaves) as f64 / verify.as_secs_f64();
    pool.close().await;
    scratch.remove().await?;
    println!(
        "## Audit ({} events, {} kgp1 links, {} kgp2 leaves in {} blocks; written in {setup:?})\n",
        projection.events, verdict.length, verdict.leaves, verdict.blocks
    );
    println!("| figure | value |\n|---|---|");
    println!("| replay from PostgreSQL, events per second | {events_per_second:.0} |");
    println!("| replay of the whole archive | {replay:?} |");
    println!(
        "| sealing per credited result (leaf hash, root, proof of work at difficulty {DIFFICULTY}; blocks of {BLOCK_LEAVES}) | {sealing_us_per_leaf:.2} µs |"
    );
    println!("| block verification in memory, leaves per second | {leaves_per_second_in_memory:.0} |");
    println!(
        "| verification of the whole stored chain (read from PostgreSQL), links and leaves per second | {entries_per_second:.0} |"
    );
    println!("| verification of the whole stored chain | {verify:?} |");
    println!("| inclusion proof in a block of {BLOCK_LEAVES} leaves, hashes at most | {proof_hashes} |\n");
    Ok(
        json!({"events": projection.events, "replay_seconds": replay.as_secs_f64(), "events_per_second": events_per_second,
        "links": verdict.length, "leaves": verdict.leaves, "blocks": verdict.blocks,
        "verify_seconds": verify.as_secs_f64(), "links_per_second": entries_per_second,
        "stored_chain_entries_per_second": entries_per_second,
        "sealing_us_per_leaf": sealing_us_per_leaf, "verification_leaves_per_second": leaves_per_second_in_memory,
        "inclusion_proof_hashes_2000": proof_hashes}),
    )
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(run())?;
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&directory)?;
    std::fs::write(directory.join("audit.json"), serde_json::to_string_pretty(&report)?)?;
    println!("(written to target/bench/audit.json)");
    Ok(())
}
