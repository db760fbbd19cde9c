//! The grid's cells as a user sees them: `GET /v1/cells` lists the cell with its writer, epoch,
//! backlog, nodes, free cores, sun and intensity from its writer's summary; `/readyz` says the
//! process's role per cell; every key the grid wrote is under the cell's hash tag.

mod common;

use std::time::Duration;

use common::{OPERATOR_KEY, eventually, spawn_system};
use serde_json::Value;
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(20);

#[sqlx::test(migrations = "../migrations")]
async fn the_cell_lists_its_writer_and_what_its_writer_last_saw(pool: PgPool) {
    let mut system = spawn_system(pool, &[("GRID_CELLS", "be-north:BE")]).await;
    let (_, api_key) = system.organization("Cellular").await;
    let node = system.manual_node(&api_key, 4, 500.0).await;
    // Its writer publishes the node it sees, in the sun, with its four cores free.
    let cell: Value = eventually(WAIT, "the cell's summary to show the node", || async {
        let cells: Value = system.get("/v1/cells", &api_key).await.json().await.ok()?;
        let cell = cells["cells"][0].clone();
        (cell["live_nodes"] == 1 && cell["status"] == "live").then_some(cell)
    })
    .await;
    assert_eq!(cell["cell"], "be-north");
    assert_eq!(cell["zone"], "BE");
    assert_eq!(cell["default"], true);
    assert_eq!(cell["free_cores"], 4);
    assert_eq!(cell["sunny_nodes"], 1);
    assert!(cell["solar_surplus_watts"].as_f64().unwrap() > 0.0, "{cell}");
    assert_eq!(cell["writer"]["holder"], "orchestrator-test");
    assert!(cell["writer"]["epoch"].as_i64().unwrap() >= 1);
    assert!(cell["intensity"]["mg_per_kwh"].as_i64().unwrap() > 0, "{cell}");
    assert!(cell["intensity"]["source"].as_str().unwrap().starts_with("file"), "{cell}");
    assert!(cell["summary_age_ms"].as_i64().unwrap() <= 2_000);
    // Its lease is its own row, keyed by the cell (the row of `main`, which a fresh database has,
    // stays untaken), and `GET /v1/cells` shows it.
    let leases: Vec<(String, i64, String)> =
        sqlx::query_as("select cell_id, epoch, holder from writer order by cell_id")
            .fetch_all(&system.pool)
            .await
            .unwrap();
    assert_eq!(
        leases,
        [("be-north".to_owned(), 1, "orchestrator-test".to_owned()), ("main".to_owned(), 0, "none".to_owned())]
    );
    assert_eq!(cell["writer"]["epoch"], 1);
    // The operator sees it too; a node's token is refused.
    assert_eq!(system.get("/v1/cells", OPERATOR_KEY).await.status(), 200);
    assert_eq!(system.get("/v1/cells", &node.token).await.status(), 403);
    // The process says its role in the cell.
    let address = system.status.snapshot().admin_address.expect("the admin endpoint listens");
    let ready: Value = reqwest::get(format!("http://{address}/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!(ready["cells"][0]["cell"], "be-north");
    assert_eq!(ready["cells"][0]["role"], "writer");
    // Every key the grid wrote for this namespace is under the cell's hash tag.
    let all: Vec<String> =
        redis::cmd("KEYS").arg(format!("*{}*", system.namespace)).query_async(&mut system.redis).await.unwrap();
    let tag = format!("{{{}:be-north}}:", system.namespace);
    assert!(!all.is_empty());
    assert!(all.iter().all(|key| key.starts_with(&tag)), "keys outside the cell's tag: {all:?}");
    system.stop().await;
}

/// Runs `count` thermal tasks in `system`'s cell on a fleet of its own, until every one ended, its
/// events were published and its credits sealed.
async fn run_tasks_in(system: &common::System, api_key: &str, cell: &str, count: usize) {
    let (stop, fleet) = system.fleet(api_key, 2, 2, 1.0, Duration::ZERO).await;
    for _ in 0..count {
        assert_eq!(system.post("/v1/tasks", api_key, common::thermal_task()).await.status(), 202);
    }
    eventually(Duration::from_secs(60), "the cell's tasks to end, relayed and sealed", || async {
        let (done, unrelayed, unsealed): (i64, i64, i64) = sqlx::query_as(
            "select (select count(*) from task where cell_id = $1 and status = 'completed'),
                    (select count(*) from event where cell_id = $1
                        and seq > (select last_seq from relay_cursor where cell_id = $1)),
                    (select count(*) from proof_leaf l where cell_id = $1 and not exists
                        (select 1 from proof_block b where b.cell_id = l.cell_id and b.height = l.block_height))",
        )
        .bind(cell)
        .fetch_one(&system.pool)
        .await
        .ok()?;
        (done == count as i64 && unrelayed == 0 && unsealed == 0).then_some(())
    })
    .await;
    stop.send(true).unwrap();
    fleet.join().await;
}

/// Two cells' writers on one database (two grids here, each serving its cell, as two
/// orchestrator processes would): each numbers its own events from 1, chains its own proof blocks
/// from height 1, and replays and verifies on its own; every row carries its cell; an inclusion
/// proof names its cell; the Python verifier checks each cell's chain and names the one a
/// tampered leaf breaks.
#[sqlx::test(migrations = "../migrations")]
async fn cells_on_one_database_keep_their_own_sequences_chains_and_audits(pool: PgPool) {
    let main = spawn_system(pool.clone(), &[]).await;
    let north = spawn_system(pool.clone(), &[("GRID_CELLS", "be-north:BE")]).await;
    let (_, main_key) = main.organization("South of the grid").await;
    let (_, north_key) = north.organization("North of the grid").await;
    run_tasks_in(&main, &main_key, "main", 6).await;
    run_tasks_in(&north, &north_key, "be-north", 4).await;

    // Each cell's events are numbered 1, 2, 3, … with no gap, and its blocks from height 1.
    let events: Vec<(String, i64, i64, i64)> =
        sqlx::query_as("select cell_id, min(seq), max(seq), count(*) from event group by cell_id order by cell_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    for (cell, first, last, count) in &events {
        assert_eq!((*first, *last), (1, *count), "cell {cell}'s events are its own sequence");
    }
    let blocks: Vec<(String, i64, String)> =
        sqlx::query_as("select cell_id, height, prev_hash from proof_block where height = 1 order by cell_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let genesis = "0".repeat(64);
    assert_eq!(
        blocks,
        [("be-north".to_owned(), 1, genesis.clone()), ("main".to_owned(), 1, genesis)],
        "each cell's chain starts at height 1 from the genesis hash"
    );
    // Every row a writer wrote is in its cell: tasks, results, credits, leaves, messages.
    for table in ["task", "task_result", "credit_entry", "proof_leaf", "processed_message", "node"] {
        let cells: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select cell_id, count(*) from {table} group by cell_id order by cell_id"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(cells.iter().map(|(cell, _)| cell.as_str()).collect::<Vec<_>>(), ["be-north", "main"], "{table}");
    }
    let tasks: Vec<(String, i64)> =
        sqlx::query_as("select cell_id, count(*) from task group by cell_id order by cell_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(tasks, [("be-north".to_owned(), 4), ("main".to_owned(), 6)]);

    // Replay and verification per cell: each cell's events replay to its own rows.
    for (cell, count) in [("main", 6), ("be-north", 4)] {
        let cell_name = grid_shared::cells::CellName::parse(cell).unwrap();
        let (projection, divergences) = grid_orchestrator::replay::audit(&pool, &cell_name, 1).await.unwrap();
        assert_eq!(divergences, vec![], "cell {cell} replays to its rows");
        assert_eq!(projection.tasks.len(), count, "cell {cell} replays its own tasks only");
        let verdict = grid_orchestrator::ledger::verify_stored_chain(&pool, cell, 8).await.unwrap();
        assert!(verdict.valid && verdict.leaves == count as u64, "cell {cell}: {verdict:?}");
    }
    // The command line replays every cell PostgreSQL has a writer for.
    let database: String = sqlx::query_scalar("select current_database()").fetch_one(&pool).await.unwrap();
    let base = std::env::var("DATABASE_URL").unwrap();
    let url = format!("{}/{database}", base.rsplit_once('/').unwrap().0);
    let replay = tokio::process::Command::new(common::processes::orchestrator_binary())
        .args(["replay"])
        .env("DATABASE_URL", &url)
        .env("REDIS_URL", common::redis_url())
        .env("GRID_NAMESPACE", &main.namespace)
        .output()
        .await
        .unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let report: Value = serde_json::from_slice(&replay.stdout).unwrap();
    let replayed: Vec<(&str, i64)> = report["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cell| (cell["cell"].as_str().unwrap(), cell["tasks"].as_i64().unwrap()))
        .collect();
    assert_eq!(replayed, [("main", 6), ("be-north", 4)]);

    // A task's inclusion proof names its cell; a grid's reads name only its own cells.
    let task_id: String = sqlx::query_scalar("select task_id::text from task where cell_id = 'be-north' limit 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    let proofs: Value = north.get(&format!("/v1/proofs/tasks/{task_id}"), &north_key).await.json().await.unwrap();
    assert_eq!(proofs["proofs"][0]["cell"], "be-north", "{proofs}");
    assert_eq!(proofs["proofs"][0]["status"], "sealed");
    let page: Value = north.get("/v1/proofs", &north_key).await.json().await.unwrap();
    assert_eq!(page["cell"], "be-north");
    assert_eq!(page["blocks"][0]["height"], 1);
    let verify: Value = north.get("/v1/proofs/verify", &north_key).await.json().await.unwrap();
    assert_eq!((verify["valid"].clone(), verify["cell"].clone()), (Value::Bool(true), Value::from("be-north")));
    let events: Value = main.get("/v1/events?limit=1", &main_key).await.json().await.unwrap();
    assert_eq!(events["events"][0]["seq"], 1);
    let unknown = main.get("/v1/events?cell=be-north", &main_key).await;
    assert_eq!(unknown.status(), 422, "a grid reads only its own cells");

    // The exported rows verify cell by cell; a leaf edited in one cell breaks that cell alone.
    let exported = |pool: PgPool| async move {
        sqlx::query_scalar::<_, Value>(
            "select json_build_object(
                 'links', (select coalesce(json_agg(g order by cell_id, seq), '[]'::json) from green_proof g),
                 'blocks', (select coalesce(json_agg(b order by cell_id, height), '[]'::json) from proof_block b),
                 'leaves', (select coalesce(json_agg(l order by cell_id, block_height, leaf_index), '[]'::json)
                            from proof_leaf l))::jsonb",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let (code, verdict) = common::python_verifier(&["8"], &exported(pool.clone()).await).await;
    assert_eq!(code, Some(0), "{verdict}");
    assert_eq!(verdict["cells"].as_array().unwrap().len(), 2, "{verdict}");
    sqlx::query("update proof_leaf set solar_uwh = solar_uwh + 1 where cell_id = 'be-north' and block_height = 1 and leaf_index = 0")
        .execute(&pool)
        .await
        .unwrap();
    let (code, verdict) = common::python_verifier(&["8"], &exported(pool.clone()).await).await;
    assert_eq!(code, Some(1), "{verdict}");
    assert_eq!((verdict["cell"].as_str(), verdict["first_invalid_block"].as_i64()), (Some("be-north"), Some(1)));
    let (code, _) = common::python_verifier(&["--cell", "main", "8"], &exported(pool.clone()).await).await;
    assert_eq!(code, Some(0), "the other cell's chain still holds");
    let verify: Value = north.get("/v1/proofs/verify?cell=be-north", &north_key).await.json().await.unwrap();
    assert_eq!(verify["valid"], false, "{verify}");
    let verify: Value = main.get("/v1/proofs/verify", &main_key).await.json().await.unwrap();
    assert_eq!(verify["valid"], true, "{verify}");

    main.stop().await;
    north.stop().await;
}

/// The `TaskAccepted` payload's `cell`: where the task went, why, and what the choice saw.
async fn accepted_cell(pool: &PgPool, task_id: &str) -> Value {
    sqlx::query_scalar(
        "select envelope -> 'payload' -> 'cell' from event
          where event_type = 'TaskAccepted' and envelope -> 'payload' ->> 'task_id' = $1",
    )
    .bind(task_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Submits a task; its id once the command is applied.
async fn submitted(system: &common::System, api_key: &str, body: Value) -> String {
    let response = system.post("/v1/tasks", api_key, body).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(system.settled(body["command_id"].as_str().unwrap(), api_key).await["status"], "applied");
    body["task_id"].as_str().unwrap().to_owned()
}

/// One gateway for a grid of two cells, one in the sun and one at night: a task that names its
/// cell runs there, on that cell's node, whose channel the gateway follows; a task that names
/// none goes to the sunny cell while it has room, then to the other; organisations, created
/// through the default cell, work in both; a cell the grid does not have is refused.
#[sqlx::test(migrations = "../migrations")]
async fn one_gateway_sends_each_task_to_its_cell_and_the_others_to_the_greenest_with_room(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[("GRID_CELLS", "sun:BE,night:BE")]).await;
    // Due within three runtimes: they run now, sun or not (a later deadline would wait for sun).
    let soon = || common::thermal_task_due(chrono::Duration::seconds(150), 5);
    let (_, api_key) = system.organization("Two cells").await;
    // Manual nodes hold the cores of the tasks they are given until they report.
    let sunny = system.manual_node_in(Some("sun"), &api_key, 2, 300.0).await;
    let dark = system.manual_node_in(Some("night"), &api_key, 2, 0.0).await;
    let mut dark_channel = system.channel(&dark, None).await;
    eventually(WAIT, "both cells' summaries to show their node", || async {
        let cells: Value = system.get("/v1/cells", &api_key).await.json().await.ok()?;
        let cells = cells["cells"].as_array()?.clone();
        let seen = |name: &str, sunny: u64| {
            cells.iter().any(|cell| {
                cell["cell"] == name
                    && cell["status"] == "live"
                    && cell["live_nodes"] == 1
                    && cell["sunny_nodes"] == sunny
            })
        };
        (seen("sun", 1) && seen("night", 0)).then_some(())
    })
    .await;

    // Named: the night cell, its node, through its channel.
    let mut night = soon();
    night["cell"] = Value::from("night");
    let named = submitted(&system, &api_key, night).await;
    let assigned = dark_channel.next(WAIT).await;
    assert!(assigned.data.contains(&named), "the night cell's node got its task: {}", assigned.data);
    let task = system.task(&api_key, &named).await;
    assert_eq!((task["cell"].as_str(), task["node_id"].as_str()), (Some("night"), Some(dark.node_id.as_str())));
    assert_eq!(accepted_cell(&pool, &named).await["reason"], "named");

    // Unnamed: the sunny cell, while its two cores are free.
    for _ in 0..2 {
        let chosen = submitted(&system, &api_key, soon()).await;
        let cell = accepted_cell(&pool, &chosen).await;
        assert_eq!(
            (cell["cell"].as_str(), cell["reason"].as_str()),
            (Some("sun"), Some("greenest_with_room")),
            "{cell}"
        );
        assert_eq!(cell["options"].as_array().map(Vec::len), Some(2), "the choice saw both cells: {cell}");
        let task = eventually(WAIT, "the task to be placed", || async {
            let task = system.task(&api_key, &chosen).await;
            (task["status"] == "assigned").then_some(task)
        })
        .await;
        assert_eq!(task["node_id"].as_str(), Some(sunny.node_id.as_str()));
    }
    // The sunny cell full, the next goes where there is room.
    eventually(WAIT, "the sunny cell's summary to show it full", || async {
        let cells: Value = system.get("/v1/cells", &api_key).await.json().await.ok()?;
        cells["cells"].as_array()?.iter().any(|cell| cell["cell"] == "sun" && cell["free_cores"] == 0).then_some(())
    })
    .await;
    let elsewhere = eventually(WAIT, "a task to go to the cell with room", || async {
        let chosen = submitted(&system, &api_key, soon()).await;
        let cell = accepted_cell(&pool, &chosen).await;
        (cell["cell"] == "night").then_some((chosen, cell))
    })
    .await;
    assert_eq!(elsewhere.1["reason"], "greenest_with_room", "{}", elsewhere.1);
    let placed = eventually(WAIT, "it to be placed", || async {
        let task = system.task(&api_key, &elsewhere.0).await;
        (task["status"] == "assigned").then_some(task)
    })
    .await;
    assert_eq!(placed["node_id"].as_str(), Some(dark.node_id.as_str()));

    // No task of one cell ever ran on another's node (the keys forbid it; the writers refuse it).
    let crossed: i64 = sqlx::query_scalar(
        "select count(*) from task t join node n on n.node_id = t.node_id where n.cell_id <> t.cell_id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(crossed, 0);
    let refused = system.post("/v1/tasks", &api_key, common::cells::task_in("moon")).await;
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    assert!(problem.to_string().contains("sun, night"), "the problem names the grid's cells: {problem}");
    system.stop().await;
}
