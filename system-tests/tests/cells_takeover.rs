//! Several cells written by several orchestrator processes (`GRID_WRITER_CELLS`), each cell
//! under its own lease: `kill -9` of the process that writes one cell moves that cell alone to
//! a standby, while the other cells' writers keep their leases and go on completing tasks; a
//! writer frozen (SIGSTOP) while its cell is taken from it is fenced off when it wakes.
//!
//! Each gateway serves every cell; each cell's traffic comes through a gateway of its own here
//! (tasks and nodes name their cell), and the gateways and every orchestrator share one
//! namespace and one database.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cells::{WAIT, completed_in, gateways, process_settings, role_in, stop_fleets, stop_gateways, task_in};
use common::processes::Orchestrator;
use common::{eventually, fresh_namespace};
use futures_util::StreamExt;
use grid_shared::cells::CellName;
use serde_json::Value;
use sqlx::PgPool;

const CELLS: &str = "a:BE,b:BE,c:BE";

/// Submits a task of `cell` through `gateway` every 10 ms until `stop`; how many.
async fn steady_load(
    gateway: Arc<common::System>,
    api_key: String,
    cell: &'static str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> i64 {
    let mut submitted = 0;
    let mut every = tokio::time::interval(Duration::from_millis(10));
    while !*stop.borrow() {
        every.tick().await;
        let response = gateway.post("/v1/tasks", &api_key, task_in(cell)).await;
        assert_eq!(response.status(), 202);
        submitted += 1;
    }
    submitted
}

/// Submits `count` tasks of `cell` through `gateway`, a few at a time.
async fn submit(gateway: Arc<common::System>, api_key: String, cell: &str, count: usize) {
    futures_util::stream::iter(0..count)
        .for_each_concurrent(4, |_| {
            let (gateway, api_key) = (gateway.clone(), api_key.clone());
            async move {
                let response = gateway.post("/v1/tasks", &api_key, task_in(cell)).await;
                assert_eq!(response.status(), 202);
            }
        })
        .await;
}

/// The longest time between two completions of `cell` within `window` (in ms), and how many
/// completions fell in it.
async fn longest_gap(
    pool: &PgPool,
    cell: &str,
    window: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
) -> (i64, usize) {
    let times: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "select occurred_at from event where cell_id = $1 and event_type = 'TaskCompleted'
           and occurred_at between $2 and $3 order by occurred_at",
    )
    .bind(cell)
    .bind(window.0)
    .bind(window.1)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut edges = vec![window.0];
    edges.extend(times.iter().copied());
    edges.push(window.1);
    let gap = edges.windows(2).map(|pair| (pair[1] - pair[0]).num_milliseconds()).max().unwrap_or(0);
    (gap, times.len())
}

/// Per cell: every task completed once, assigned once per attempt, credited once; the cell's
/// events replay to its rows; its chain verifies.
async fn assert_each_cell_whole(pool: &PgPool, submitted: &[i64]) {
    for (cell, per_cell) in ["a", "b", "c"].into_iter().zip(submitted.iter().copied()) {
        assert_eq!(completed_in(pool, cell).await, per_cell, "cell {cell}");
        let twice: i64 = sqlx::query_scalar(
            "select count(*) from (select 1 from event where cell_id = $1 and event_type = 'TaskAssigned'
                 group by task_id, envelope -> 'payload' ->> 'attempt' having count(*) > 1) d",
        )
        .bind(cell)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(twice, 0, "no (task, attempt) of cell {cell} assigned twice");
        let credited: i64 =
            sqlx::query_scalar("select count(*) from credit_entry where cell_id = $1 and account = 'node'")
                .bind(cell)
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(credited, per_cell, "cell {cell}'s tasks credited once");
        let name = CellName::parse(cell).unwrap();
        let (_, divergences) = grid_orchestrator::replay::audit(pool, &name, 1).await.unwrap();
        assert_eq!(divergences, vec![], "cell {cell}");
        common::all_credits_sealed(pool).await;
        let chain = grid_orchestrator::ledger::verify_stored_chain(pool, cell, 8).await.unwrap();
        assert!(chain.valid && chain.leaves == per_cell as u64, "cell {cell}: {chain:?}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn killing_the_writer_of_one_cell_moves_that_cell_alone(pool: PgPool) {
    let namespace = fresh_namespace();
    let gateways = gateways(&pool, &namespace, CELLS, 3, &[]).await;
    let settings = process_settings(&gateways[0], &pool, CELLS);
    let mut only_a = Orchestrator::start("cells-a", &settings, &[("GRID_WRITER_CELLS", "a")]);
    role_in(&only_a, "a", "writer").await;
    let b_and_c = Orchestrator::start("cells-bc", &settings, &[("GRID_WRITER_CELLS", "b,c")]);
    let (b_before, c_before) = (role_in(&b_and_c, "b", "writer").await, role_in(&b_and_c, "c", "writer").await);
    // A standby for every cell: it waits on each cell's lease on its own.
    let standby = Orchestrator::start("cells-standby", &settings, &[]);
    for cell in ["a", "b", "c"] {
        role_in(&standby, cell, "standby").await;
    }

    // Work flows into every cell, a task every 10 ms, until well after the takeover.
    let (stop_load, load_stopped) = tokio::sync::watch::channel(false);
    let mut fleets = Vec::new();
    let mut loads = Vec::new();
    for (gateway, cell) in gateways.iter().zip(["a", "b", "c"]) {
        let (_, api_key) = gateway.organization(&format!("Cell {cell}")).await;
        fleets.push(gateway.fleet_in(Some(cell), &api_key, 3, 2, 1.0, Duration::from_millis(5)).await);
        loads.push(tokio::spawn(steady_load(gateway.clone(), api_key, cell, load_stopped.clone())));
    }
    eventually(WAIT, "every cell to complete some tasks", || async {
        let mut least = i64::MAX;
        for cell in ["a", "b", "c"] {
            least = least.min(completed_in(&pool, cell).await);
        }
        (least >= 40).then_some(())
    })
    .await;

    let killed_at = chrono::Utc::now();
    let clock = Instant::now();
    only_a.kill();
    let taken = role_in(&standby, "a", "writer").await;
    let takeover = clock.elapsed();
    let taken_at = chrono::Utc::now();
    assert_eq!(taken["epoch"], 2, "cell a has its second writer: {taken}");
    // The other cells never moved: same writer, same epoch.
    assert_eq!(role_in(&b_and_c, "b", "writer").await["epoch"], b_before["epoch"]);
    assert_eq!(role_in(&b_and_c, "c", "writer").await["epoch"], c_before["epoch"]);
    for cell in ["b", "c"] {
        role_in(&standby, cell, "standby").await;
    }

    // A second more of work after the takeover, for every cell.
    let more = completed_in(&pool, "a").await + 20;
    eventually(WAIT, "cell a's new writer to complete tasks", || async {
        (completed_in(&pool, "a").await >= more).then_some(())
    })
    .await;
    stop_load.send(true).unwrap();
    let mut submitted = Vec::new();
    for load in loads {
        submitted.push(load.await.unwrap());
    }
    eventually(Duration::from_secs(180), "every task of every cell to complete", || async {
        let mut all = true;
        for (cell, count) in ["a", "b", "c"].into_iter().zip(&submitted) {
            all &= completed_in(&pool, cell).await == *count;
        }
        all.then_some(())
    })
    .await;
    // Around the takeover of cell a (from its kill to a second after its new writer), cells b
    // and c went on completing tasks.
    let window = (killed_at, taken_at + chrono::Duration::seconds(1));
    let (gap_b, done_b) = longest_gap(&pool, "b", window).await;
    let (gap_c, done_c) = longest_gap(&pool, "c", window).await;
    eprintln!(
        "cell a taken over in {} ms; from its kill to a second later, cell b completed {done_b} tasks \
         (longest gap {gap_b} ms), cell c {done_c} (longest gap {gap_c} ms)",
        takeover.as_millis()
    );
    assert!(done_b > 0 && done_c > 0, "cells b and c completed tasks while cell a changed hands");
    assert_each_cell_whole(&pool, &submitted).await;

    stop_fleets(fleets).await;
    drop((b_and_c, standby));
    stop_gateways(gateways).await;
}

/// The session that holds `cell`'s advisory lock (its writer's lease), terminated as a network
/// partition would end it.
async fn cut_lease(pool: &PgPool, cell: &str) {
    let key = grid_orchestrator::lease::lock_key(&CellName::parse(cell).unwrap());
    let (class, object) = ((key >> 32) as u32 as i64, (key & 0xffff_ffff) as u32 as i64);
    let terminated: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_locks
         where locktype = 'advisory' and granted and classid::int8 = $1 and objid::int8 = $2 and objsubid = 1
           and database = (select oid from pg_database where datname = current_database())",
    )
    .bind(class)
    .bind(object)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(terminated, [true], "one session held cell {cell}'s lease");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_writer_frozen_while_its_cell_is_taken_is_fenced_off_when_it_wakes(pool: PgPool) {
    let namespace = fresh_namespace();
    let gateways = gateways(&pool, &namespace, CELLS, 2, &[]).await;
    let settings = process_settings(&gateways[0], &pool, CELLS);
    let frozen = Orchestrator::start("fenced-a", &settings, &[("GRID_WRITER_CELLS", "a")]);
    role_in(&frozen, "a", "writer").await;
    let b_writer = Orchestrator::start("fenced-b", &settings, &[("GRID_WRITER_CELLS", "b")]);
    role_in(&b_writer, "b", "writer").await;
    let standby = Orchestrator::start("fenced-standby", &settings, &[("GRID_WRITER_CELLS", "a")]);
    role_in(&standby, "a", "standby").await;

    let (_, key_a) = gateways[0].organization("Frozen cell").await;
    let (_, key_b) = gateways[1].organization("Awake cell").await;
    let (stop_a, fleet_a) = gateways[0].fleet_in(Some("a"), &key_a, 2, 2, 1.0, Duration::ZERO).await;
    let (stop_b, fleet_b) = gateways[1].fleet_in(Some("b"), &key_b, 2, 2, 1.0, Duration::ZERO).await;
    submit(gateways[0].clone(), key_a.clone(), "a", 10).await;
    eventually(WAIT, "cell a to complete its first tasks", || async {
        (completed_in(&pool, "a").await == 10).then_some(())
    })
    .await;

    // Frozen with its lease; its lease's session is then cut, and the standby takes the cell.
    frozen.pause();
    cut_lease(&pool, "a").await;
    let taken = role_in(&standby, "a", "writer").await;
    assert_eq!(taken["epoch"], 2, "{taken}");
    // Work arrives for the new writer while the old one sleeps, and in the other cell.
    submit(gateways[0].clone(), key_a.clone(), "a", 10).await;
    submit(gateways[1].clone(), key_b.clone(), "b", 10).await;
    frozen.resume();
    // Woken, the old writer steps down: its batch (the entries Redis handed it while it slept
    // on its read) meets epoch 2 in the `writer` row and is refused, or its lease check finds
    // its session gone, whichever it meets first. Nothing it held is lost: the new writer took
    // those entries back.
    let woke_to = eventually(WAIT, "the woken writer to step down", || async {
        let log = frozen.log();
        if log.contains("another writer took over: stepping down") {
            Some("the epoch check refused its batch")
        } else if log.contains("the lease's connection is gone: stepping down") {
            Some("its lease check found its session gone")
        } else {
            None
        }
    })
    .await;
    eprintln!("the frozen writer of cell a stepped down when it woke: {woke_to}");
    role_in(&frozen, "a", "standby").await;
    eventually(WAIT, "every task to complete", || async {
        (completed_in(&pool, "a").await == 20 && completed_in(&pool, "b").await == 10).then_some(())
    })
    .await;
    let epochs: Vec<(String, i64)> =
        sqlx::query_as("select cell_id, epoch from writer where cell_id in ('a', 'b') order by cell_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(epochs, [("a".to_owned(), 2), ("b".to_owned(), 1)], "only cell a changed hands");
    for cell in ["a", "b"] {
        let name = CellName::parse(cell).unwrap();
        let (_, divergences) = grid_orchestrator::replay::audit(&pool, &name, 1).await.unwrap();
        assert_eq!(divergences, vec![], "cell {cell}");
    }
    let twice: i64 = sqlx::query_scalar(
        "select count(*) from (select 1 from event where event_type = 'TaskAssigned'
             group by cell_id, task_id, envelope -> 'payload' ->> 'attempt' having count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(twice, 0, "no (task, attempt) assigned twice");

    stop_fleets(vec![(stop_a, fleet_a), (stop_b, fleet_b)]).await;
    drop((frozen, b_writer, standby));
    stop_gateways(gateways).await;
}

/// A key belongs to its organisation in every cell: rotated through one gateway, the old key is
/// refused at once by another gateway too, which had it in its cache, whichever cell a request
/// writes to (the default cell's writer marks the revocation under every cell's hash tag, where
/// the gateways check it in the same round trip as the write).
#[sqlx::test(migrations = "../migrations")]
async fn a_key_revoked_through_one_cell_is_refused_in_every_cell(pool: PgPool) {
    let namespace = fresh_namespace();
    let gateways = gateways(&pool, &namespace, "a:BE,b:BE", 2, &[]).await;
    let settings = process_settings(&gateways[0], &pool, "a:BE,b:BE");
    let orchestrator = Orchestrator::start("keys-ab", &settings, &[]);
    role_in(&orchestrator, "a", "writer").await;
    role_in(&orchestrator, "b", "writer").await;
    let (organization, old_key) = gateways[0].organization("Rotating in cell a").await;
    // The second gateway knows the old key (it is in its cache now).
    assert_eq!(gateways[1].get("/v1/tasks", &old_key).await.status(), 200);
    assert_eq!(gateways[1].post("/v1/tasks", &old_key, task_in("b")).await.status(), 202);

    let rotated: Value = gateways[0]
        .post(&format!("/v1/organizations/{organization}/keys"), &old_key, serde_json::json!({}))
        .await
        .json()
        .await
        .unwrap();
    let new_key = rotated["api_key"].as_str().unwrap().to_owned();
    let command = rotated["command_id"].as_str().unwrap();
    assert_eq!(gateways[0].settled(command, &new_key).await["status"], "applied");
    for cell in ["a", "b"] {
        assert_eq!(gateways[1].post("/v1/tasks", &old_key, task_in(cell)).await.status(), 401, "cell {cell}");
        assert_eq!(gateways[0].post("/v1/tasks", &old_key, task_in(cell)).await.status(), 401, "cell {cell}");
    }
    assert_eq!(gateways[1].get("/v1/tasks", &old_key).await.status(), 401);
    assert_eq!(gateways[1].get("/v1/tasks", &new_key).await.status(), 200);

    drop(orchestrator);
    stop_gateways(gateways).await;
}
