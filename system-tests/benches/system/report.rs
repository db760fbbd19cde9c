//! The report in markdown, from the run's figures.

use super::*;

pub(crate) fn figure(value: &Value, path: &[&str]) -> String {
    let mut at = value;
    for key in path {
        at = &at[*key];
    }
    match at {
        Value::Number(number) => {
            let number = number.as_f64().unwrap_or(0.0);
            if number.fract() == 0.0 { format!("{number:.0}") } else { format!("{number:.2}") }
        }
        Value::Null => "—".to_owned(),
        other => other.to_string(),
    }
}

pub(crate) fn markdown(report: &Value) -> String {
    let row = |label: &str, path: &[&str], target: &str| format!("| {label} | {} | {target} |\n", figure(report, path));
    let mut out = String::new();
    let machine = &report["machine"];
    out.push_str(&format!(
        "# KoproGo Grid bench, {} (commit {}{})\n\nMachine: {}, {} cores, {}, Linux {}; PostgreSQL {} \
         (synchronous_commit {}), {}.\n\n",
        report["at"].as_str().unwrap_or_default(),
        machine["commit"].as_str().unwrap_or_default(),
        if machine["uncommitted_changes"] == true { ", with uncommitted changes" } else { "" },
        machine["cpu"].as_str().unwrap_or_default(),
        machine["cores"],
        machine["memory"].as_str().unwrap_or_default(),
        machine["kernel"].as_str().unwrap_or_default(),
        machine["postgresql"].as_str().unwrap_or_default(),
        machine["postgresql_synchronous_commit"].as_str().unwrap_or_default(),
        machine["redis"].as_str().unwrap_or_default(),
    ));
    out.push_str("| figure | measured | target |\n|---|---|---|\n");
    out.push_str(&row("fleet: simulated nodes (4 cores each), one process", &["fleet", "nodes"], ""));
    out.push_str(&row("end to end: tasks submitted", &["throughput", "tasks_submitted"], "50,000"));
    out.push_str(&row(
        "… submissions answered 503 (overloaded) and tried again after Retry-After",
        &["throughput", "submissions_refused_503_then_retried"],
        "",
    ));
    out.push_str(&row("end to end: tasks completed, credited and proven", &["throughput", "tasks_completed"], ""));
    out.push_str(&row("end to end: tasks/s", &["throughput", "tasks_per_second"], "≥ 5,000"));
    out.push_str(&row("end to end: submit → completed p50 (ms)", &["throughput", "submit_to_completed", "p50_ms"], ""));
    out.push_str(&row("end to end: submit → completed p99 (ms)", &["throughput", "submit_to_completed", "p99_ms"], ""));
    out.push_str(&row("submit → assigned p50 (ms)", &["throughput", "submit_to_assigned", "p50_ms"], ""));
    out.push_str(&row("submit → assigned p99 (ms)", &["throughput", "submit_to_assigned", "p99_ms"], ""));
    out.push_str(&row("sequential round trip p50 (ms)", &["sequential", "round_trip", "p50_ms"], ""));
    out.push_str(&row("sequential round trip p95 (ms)", &["sequential", "round_trip", "p95_ms"], ""));
    out.push_str(&row("sequential round trip p99 (ms)", &["sequential", "round_trip", "p99_ms"], "≤ 5"));
    out.push_str(&row("offered at half the measured capacity (tasks/s)", &["half_capacity", "offered_per_second"], ""));
    out.push_str(&row("… submitted → completed p50 (ms)", &["half_capacity", "submitted_to_completed", "p50_ms"], ""));
    out.push_str(&row(
        "… submitted → completed p99 (ms)",
        &["half_capacity", "submitted_to_completed", "p99_ms"],
        "≤ 50",
    ));
    out.push_str(&row("orchestrator CPU per task (µs)", &["throughput", "per_task", "orchestrator_cpu_us"], "≤ 60"));
    out.push_str(&row("gateway CPU per task (µs)", &["throughput", "per_task", "gateway_cpu_us"], ""));
    out.push_str(&row("PostgreSQL CPU per task (µs)", &["throughput", "per_task", "postgresql_cpu_us"], "≤ 100"));
    out.push_str(&row("Redis CPU per task (µs)", &["throughput", "per_task", "redis_cpu_us"], ""));
    out.push_str(&row("SQL statements per task", &["throughput", "per_task", "sql_statements"], "report"));
    out.push_str(&row("WAL bytes per task", &["throughput", "per_task", "wal_bytes"], "report"));
    out.push_str(&row("WAL flushes (fsync) per task", &["throughput", "per_task", "wal_flushes"], ""));
    out.push_str(&row("task row versions per task", &["throughput", "per_task", "task_row_versions"], ""));
    out.push_str(&row("share of task updates that were HOT", &["throughput", "per_task", "task_hot_update_share"], ""));
    out.push_str(&row("tasks per batch (mean)", &["throughput", "per_task", "tasks_per_batch"], ""));
    out.push_str(&row(
        "proof blocks sealed per second at this load",
        &["throughput", "proof_blocks", "per_second"],
        "report",
    ));
    out.push_str(&row("… leaves per block (mean)", &["throughput", "proof_blocks", "leaves_per_block"], ""));
    out.push_str(&row(
        "sealing per credited result, proof of work included (µs; blocks of 2,000, difficulty 8)",
        &["other_benches", "audit", "sealing_us_per_leaf"],
        "≤ 5",
    ));
    out.push_str(&row(
        "block verification, leaves per second (in memory)",
        &["other_benches", "audit", "verification_leaves_per_second"],
        "≥ 1,000,000",
    ));
    out.push_str(&row(
        "verification of the stored chain, links and leaves per second (read from PostgreSQL)",
        &["other_benches", "audit", "stored_chain_entries_per_second"],
        "",
    ));
    out.push_str(&row(
        "inclusion proof in a block of 2,000 leaves (hashes)",
        &["other_benches", "audit", "inclusion_proof_hashes_2000"],
        "≤ 11",
    ));
    out.push_str(&row(
        "writer takeover after kill -9, 5 trials, p50 (ms)",
        &["takeover", "kill_to_writer", "p50_ms"],
        "",
    ));
    out.push_str(&row(
        "writer takeover after kill -9, 5 trials, max (ms)",
        &["takeover", "kill_to_writer", "max_ms"],
        "p99 ≤ 2,000",
    ));
    out.push_str(&row(
        "… until a task submitted then completed, max (ms)",
        &["takeover", "kill_to_next_task_completed", "max_ms"],
        "",
    ));
    out.push_str(&row("writer RSS with 100,000 tasks queued (MiB)", &["queued", "writer_rss_mib"], "≤ 100 MB"));
    out.push_str(&row("takeover of 100,000 queued tasks after kill -9 (ms)", &["queued", "takeover_ms"], ""));
    out.push_str(&row(
        "Redis memory of the grid's namespace after the runs (MiB)",
        &["redis", "namespace_mib"],
        "report",
    ));
    out.push_str(&row("… keys in the namespace", &["redis", "namespace_keys"], ""));
    out.push_str(&row("… the whole server's memory (shared)", &["redis", "server_used_memory_mib"], ""));
    out.push_str(&row("… commands stream length", &["redis", "stream_lengths", "commands"], ""));
    out.push_str(&row("… reports stream length", &["redis", "stream_lengths", "reports"], ""));
    out.push_str(&row("… events stream length", &["redis", "stream_lengths", "events"], ""));
    for (index, target) in [(0, "≤ 2"), (1, "")] {
        let rate = report["open_loop_submit"][index]["offered_per_second"].as_u64().unwrap_or(0);
        for (label, key) in [("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms")] {
            let value = report["open_loop_submit"][index]["latency"][key].as_f64().unwrap_or(0.0);
            let goal = if key == "p99_ms" { target } else { "" };
            out.push_str(&format!(
                "| submit latency at {rate} req/s (open loop), {label} (ms) | {value:.2} | {goal} |\n"
            ));
        }
        let errors = report["open_loop_submit"][index]["errors"].as_u64().unwrap_or(0);
        let shed = report["open_loop_submit"][index]["of_which_503"].as_u64().unwrap_or(0);
        out.push_str(&format!("| submit errors at {rate} req/s (of which 503 overloaded: {shed}) | {errors} | 0 |\n"));
    }
    out.push_str(&row(
        "scheduler decisions/s (pure)",
        &["other_benches", "scheduler", "decisions", "decisions_per_second"],
        "≥ 50,000",
    ));
    out.push_str(&row(
        "scheduler placements/s through the writer (10,000 nodes, 100,000 queued)",
        &["other_benches", "scheduler", "dispatch", "assignments_per_second"],
        "",
    ));
    out.push_str(&row("replay events/s", &["other_benches", "audit", "events_per_second"], "≥ 200,000"));

    out.push_str(&row(
        "gateway peak RSS before the 5,000 req/s phase (MiB)",
        &["memory", "gateway_peak_rss_before_overload_mib"],
        "≤ 30",
    ));
    out.push_str(&row("gateway peak RSS after it (MiB)", &["memory", "gateway_peak_rss_mib"], ""));
    out.push_str(&row(
        "gateway RSS with the fleet connected, idle moment (MiB)",
        &["gateway", "rss_with_fleet_connected_mib"],
        "≤ 30",
    ));
    out.push_str(&row("… nodes connected", &["gateway", "fleet_connected"], "1,000"));
    let overload = &["gateway", "overload_20000"];
    let at = |key: &'static str| [overload[0], overload[1], key];
    out.push_str(&row(
        "offered 20,000 req/s: share answered within 10 ms (202 or 503)",
        &at("answered_within_10ms_share"),
        "≥ 0.999",
    ));
    out.push_str(&row("… answered 202", &["gateway", "overload_20000", "by_status", "202"], ""));
    out.push_str(&row("… answered 503", &["gateway", "overload_20000", "by_status", "503"], ""));
    out.push_str(&row("… connection errors", &at("errors"), "0"));
    out.push_str(&row("… latency p50 (ms)", &["gateway", "overload_20000", "latency", "p50_ms"], ""));
    out.push_str(&row("… latency p99 (ms)", &["gateway", "overload_20000", "latency", "p99_ms"], ""));
    out.push_str(&row("… gateway peak RSS during it (MiB)", &at("gateway_peak_rss_mib"), "≤ 50"));
    out.push_str(&row(
        "gateway CPU per heartbeat at 2,000/s (µs)",
        &["gateway", "cpu_per_heartbeat", "cpu_us_per_request"],
        "≤ 40",
    ));
    out.push_str(&row(
        "gateway CPU per submission at 2,000/s, with its task's report and channel fan-out (µs)",
        &["gateway", "cpu_per_submission", "cpu_us_per_request"],
        "≤ 40 per request",
    ));
    out.push_str(&row(
        "idle task channels opened",
        &["gateway", "idle_channels", "nodes"],
        "9,000 (10,000 with the fleet)",
    ));
    out.push_str(&row(
        "gateway RSS with them open (MiB)",
        &["gateway", "idle_channels", "gateway_rss_after_mib"],
        "report",
    ));
    out.push_str(&row("… per connected node (KiB)", &["gateway", "idle_channels", "kib_per_connected_node"], "small"));
    out.push_str(&row("orchestrator peak RSS (MiB)", &["memory", "orchestrator_peak_rss_mib"], ""));
    out.push_str(&row("single worker peak RSS (MiB)", &["memory", "single_worker_peak_rss_mib"], "≤ 10"));
    out.push_str(&row(
        "fleet process peak RSS (MiB, all simulated nodes)",
        &["memory", "fleet_process_peak_rss_mib"],
        "",
    ));
    out.push_str(&row("gateway binary, release (MiB)", &["binary_sizes", "gateway_mib"], ""));
    out.push_str(&row("orchestrator binary, release (MiB)", &["binary_sizes", "orchestrator_mib"], ""));
    out.push_str(&row("worker binary, release (MiB)", &["binary_sizes", "worker_mib"], ""));
    out.push_str(&row("worker binary, edge profile (MiB)", &["binary_sizes", "worker_edge_mib"], "≤ 5"));
    out.push_str(&row(
        "control-plane CPU per completed task (µs)",
        &["throughput", "control_plane_cpu_us_per_task"],
        "≤ 100",
    ));
    out.push_str(&row("… as µg of CO₂ per task", &["throughput", "co2_micrograms_per_task"], ""));
    out.push_str(&format!(
        "\nPower model for the CPU figure: {}. The end-to-end phase stops waiting after its budget \
         (BENCH_E2E_SECONDS); `gave_up_after_budget` in the JSON says whether it did.\n",
        report["throughput"]["power_model"].as_str().unwrap_or_default()
    ));
    out
}
