//! One cell taken over under load. A grid of three cells of its own (`a`, `b`, `c`, one Redis
//! server): cell `a` written by one orchestrator process, `b` and `c` by another, a third
//! standing by for all three; a simulated fleet per cell; tasks offered at a steady rate, each
//! in the cell the gateway chooses. Then `kill -9` of the process writing `a`, the others
//! untouched. Figures: kill → the standby writes `a`; kill → a task submitted to `a` just after
//! the kill completes (a completion seen after the kill may be one the killed writer committed,
//! published late); the completions per second of `b` and `c` before the kill and while `a` is
//! taken over; their longest gap between two completions around it.

use super::*;

const CELLS: [&str; 3] = ["a", "b", "c"];
/// Load before the kill, then after it (seconds).
const BEFORE: u64 = 4;
const AFTER: u64 = 6;

pub(crate) async fn cell_takeover(nodes: u64, rate: u64) -> anyhow::Result<CellTakeover> {
    let scratch = Scratch::new("cells").await?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let base = format!("http://{listen}");
    let mut env = grid_env(&scratch, &listen);
    env.push(("GRID_CELLS", CELLS.map(|cell| format!("{cell}:BE")).join(",")));
    migrate(&env)?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).timeout(Duration::from_secs(10)).build()?;
    let writing = |cells: &str| {
        let mut env = env.clone();
        env.push(("GRID_WRITER_CELLS", cells.to_owned()));
        env
    };
    let mut writer_a = Orchestrator::start("cells-writer-a", &writing("a"))?;
    writer_a.wait_for_cell_role(&http, "a", "writer").await;
    let writer_bc = Orchestrator::start("cells-writer-bc", &writing("b,c"))?;
    writer_bc.wait_for_cell_role(&http, "c", "writer").await;
    let standby = Orchestrator::start("cells-standby", &writing("*"))?;
    standby.wait_for_cell_role(&http, "a", "standby").await;
    let (gateway, api_key) = gateway_with_organisation("cells-gateway", &env, &http, &base, "cells").await?;
    let cells: Vec<String> = CELLS.map(str::to_owned).to_vec();
    let fleets = start_fleets(&format!("--gateway={base}"), &api_key, nodes, &cells)?;
    support::poll("the fleets", || async {
        let stats: Value =
            http.get(format!("{base}/v1/stats")).bearer_auth(&api_key).send().await.ok()?.json().await.ok()?;
        (stats["nodes"]["active_nodes"].as_i64()? >= nodes as i64).then_some(())
    })
    .await;
    // Each cell's completions, from its own event stream.
    let watches: Vec<Arc<Watch>> = CELLS.iter().map(|_| Arc::new(Watch::default())).collect();
    let followers: Vec<_> = CELLS
        .iter()
        .zip(&watches)
        .map(|(cell, watch)| {
            tokio::spawn(follow_events(reqwest::Client::new(), base.clone(), watch.clone(), Some(cell.to_string())))
        })
        .collect();
    let grid = Arc::new(Grid {
        base: base.clone(),
        http: http.clone(),
        api_key: api_key.clone(),
        watch: Arc::new(Watch::default()),
        shed: Default::default(),
    });
    let load = {
        let grid = grid.clone();
        tokio::spawn(async move { open_loop(&grid, rate, BEFORE + AFTER).await })
    };
    tokio::time::sleep(Duration::from_secs(BEFORE) + Duration::from_millis(100)).await;
    let killed = Instant::now();
    writer_a.service.child.kill()?;
    let _ = writer_a.service.child.wait();
    let mut probe = thermal_task(0);
    probe["cell"] = json!("a");
    let answered: Value =
        http.post(format!("{base}/v1/tasks")).bearer_auth(&api_key).json(&probe).send().await?.json().await?;
    let probe_id = answered["task_id"].as_str().unwrap_or_default().to_owned();
    standby.wait_for_cell_role(&http, "a", "writer").await;
    let kill_to_writer = killed.elapsed();
    let resumed = support::poll("the task submitted to cell a after the kill", || async {
        watches[0].timeline.lock().expect("not poisoned").completed.get(&probe_id).copied()
    })
    .await;
    let (offered, _) = load.await??;
    followers.iter().for_each(tokio::task::JoinHandle::abort);
    let others: Vec<Vec<Instant>> = watches[1..]
        .iter()
        .map(|watch| {
            let mut times: Vec<Instant> =
                watch.timeline.lock().expect("not poisoned").completed.values().copied().collect();
            times.sort();
            times
        })
        .collect();
    let before = (killed - Duration::from_secs(BEFORE - 1), killed);
    let during = (killed, resumed.max(killed + Duration::from_millis(1)));
    let per_second = |(from, to): (Instant, Instant)| {
        let done = others.iter().flatten().filter(|at| **at >= from && **at < to).count();
        done as f64 / (to - from).as_secs_f64()
    };
    // Around the takeover: from a second before the kill to a second after `a` resumed.
    let around = (killed - Duration::from_secs(1), resumed + Duration::from_secs(1));
    let longest_gap = others
        .iter()
        .map(|times| {
            let inside: Vec<&Instant> = times.iter().filter(|at| **at >= around.0 && **at <= around.1).collect();
            inside.windows(2).map(|pair| *pair[1] - *pair[0]).max().unwrap_or(around.1 - around.0)
        })
        .max()
        .unwrap_or_default();
    let figures = CellTakeover {
        cells: CELLS.len(),
        nodes,
        offered_per_second: rate,
        submit_errors: offered.errors,
        kill_to_writer_ms: millis(kill_to_writer),
        kill_to_cell_completed_task_ms: millis(resumed - killed),
        other_cells_completed_per_second_before: per_second(before),
        other_cells_completed_per_second_during: per_second(during),
        other_cells_longest_gap_ms: millis(longest_gap),
    };
    drop((fleets, gateway, standby, writer_bc, writer_a));
    scratch.remove().await?;
    Ok(figures)
}
