//! `just bench-audit`: how fast the event log replays and the proof chain verifies, over a
//! synthetic archive written straight into a scratch database (40,000 completed, credited tasks:
//! 200,000 events and 40,000 links). A report, not a test.

use std::time::Instant;

use chrono::Utc;
use grid_shared::carbon::{CarbonPolicy, MicroWattHours};
use grid_shared::domain::Priority;
use grid_shared::envelope::{Actor, Envelope, Origin};
use grid_shared::events::{
    CreditsDistributed, EnergyCheck, Event, ScoreInputs, TaskAccepted, TaskAssigned, TaskCompleted, TaskStarted,
};
use grid_shared::ids::{CoproprieteId, NodeId, OrganizationId, TaskId};
use grid_shared::proof::{GENESIS_HASH, ProofDraft, mine, storable_time};
use serde_json::json;

#[path = "support/mod.rs"]
mod support;

use support::Scratch;

const TASKS: usize = 40_000;
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
        }),
        Event::CreditsDistributed(CreditsDistributed {
            task_id,
            node_id,
            solar_contribution: solar,
            policy,
            split: policy.credit(solar),
        }),
    ]
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
    let setup = clock.elapsed();

    // An archive an auditor replays is not minutes old: vacuumed, hint bits set. Each figure is
    // the median of three runs.
    sqlx::query("vacuum (analyze) event, green_proof").execute(&pool).await?;
    let mut replays = Vec::new();
    let mut projection = None;
    for _ in 0..3 {
        let clock = Instant::now();
        projection = Some(grid_orchestrator::replay::from_postgres(&pool, 1).await?);
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
        verdict = Some(grid_orchestrator::ledger::verify_stored_chain(&pool, DIFFICULTY).await?);
        verifies.push(clock.elapsed());
    }
    let verdict = verdict.expect("three runs");
    verifies.sort();
    let verify = verifies[1];
    anyhow::ensure!(
        verdict.valid && verdict.length == TASKS as u64,
        "the synthetic chain does not verify: {verdict:?}"
    );
    let links_per_second = verdict.length as f64 / verify.as_secs_f64();
    pool.close().await;
    scratch.remove().await?;
    println!("## Audit ({} events, {} proof links; written in {setup:?})\n", projection.events, verdict.length);
    println!("| figure | value |\n|---|---|");
    println!("| replay from PostgreSQL, events per second | {events_per_second:.0} |");
    println!("| replay of the whole archive | {replay:?} |");
    println!("| chain verification, links per second (difficulty {DIFFICULTY}) | {links_per_second:.0} |");
    println!("| verification of the whole chain | {verify:?} |\n");
    Ok(
        json!({"events": projection.events, "replay_seconds": replay.as_secs_f64(), "events_per_second": events_per_second,
        "links": verdict.length, "verify_seconds": verify.as_secs_f64(), "links_per_second": links_per_second}),
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
