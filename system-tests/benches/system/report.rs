//! The report in markdown, from the run's figures.

use super::*;

/// A figure as a cell of the report's table: whole numbers without decimals, others with two,
/// "—" for one not measured.
pub(crate) trait Cell {
    fn cell(&self) -> String;
}

impl Cell for f64 {
    fn cell(&self) -> String {
        if self.fract() == 0.0 { format!("{self:.0}") } else { format!("{self:.2}") }
    }
}

impl Cell for u64 {
    fn cell(&self) -> String {
        self.to_string()
    }
}

impl Cell for usize {
    fn cell(&self) -> String {
        self.to_string()
    }
}

impl Cell for i64 {
    fn cell(&self) -> String {
        self.to_string()
    }
}

impl<T: Cell> Cell for Option<T> {
    fn cell(&self) -> String {
        self.as_ref().map_or_else(|| "—".to_owned(), Cell::cell)
    }
}

pub(crate) fn markdown(report: &Report) -> String {
    let row = |label: &str, figure: &dyn Cell, target: &str| format!("| {label} | {} | {target} |\n", figure.cell());
    let mut out = String::new();
    let machine = &report.machine;
    out.push_str(&format!(
        "# KoproGo Grid bench, {} (commit {}{})\n\nMachine: {}, {} cores, {}, Linux {}; PostgreSQL {} \
         (synchronous_commit {}), {}.\n\n",
        report.at,
        machine.commit,
        if machine.uncommitted_changes { ", with uncommitted changes" } else { "" },
        machine.cpu,
        machine.cores,
        machine.memory,
        machine.kernel,
        machine.postgresql,
        machine.postgresql_synchronous_commit,
        machine.redis,
    ));
    out.push_str("| figure | measured | target |\n|---|---|---|\n");
    out.push_str(&row("fleet: simulated nodes (4 cores each), one process", &report.fleet.nodes, ""));
    out.push_str(&row("end to end: tasks submitted", &report.throughput.tasks_submitted, "50,000"));
    out.push_str(&row(
        "… submissions answered 503 (overloaded) and tried again after Retry-After",
        &report.throughput.submissions_refused_503_then_retried,
        "",
    ));
    out.push_str(&row("end to end: tasks completed, credited and proven", &report.throughput.tasks_completed, ""));
    out.push_str(&row("end to end: tasks/s", &report.throughput.tasks_per_second, "≥ 5,000"));
    out.push_str(&row("end to end: submit → completed p50 (ms)", &report.throughput.submit_to_completed.p50_ms, ""));
    out.push_str(&row("end to end: submit → completed p99 (ms)", &report.throughput.submit_to_completed.p99_ms, ""));
    out.push_str(&row("submit → assigned p50 (ms)", &report.throughput.submit_to_assigned.p50_ms, ""));
    out.push_str(&row("submit → assigned p99 (ms)", &report.throughput.submit_to_assigned.p99_ms, ""));
    let batched = &report.throughput_in_batches;
    out.push_str(&row("end to end in batches of 100 (`POST /v1/tasks/batch`): tasks/s", &batched.tasks_per_second, ""));
    out.push_str(&row("… submit → completed p99 (ms)", &batched.submit_to_completed.p99_ms, ""));
    out.push_str(&row("… control-plane CPU per task (µs)", &batched.control_plane_cpu_us_per_task, "≤ 180"));
    out.push_str(&row("… gateway CPU per task (µs)", &batched.per_task.gateway_cpu_us, ""));
    out.push_str(&row("… PostgreSQL CPU per task (µs)", &batched.per_task.postgresql_cpu_us, "≤ 100"));
    out.push_str(&row("… Redis CPU per task (µs)", &batched.per_task.redis_cpu_us, ""));
    out.push_str(&row("… orchestrator CPU per task (µs)", &batched.per_task.orchestrator_cpu_us, "≤ 60"));
    let bullmq = report.bullmq.as_ref();
    let version = bullmq.map_or_else(String::new, |bullmq| format!(" {}", bullmq.version));
    out.push_str(&row(
        &format!("BullMQ{version}, same run and Redis, in memory (not durable): jobs/s, one `add` per job"),
        &bullmq.map(|bullmq| bullmq.one_add_per_job.jobs_per_second),
        "",
    ));
    out.push_str(&row(
        "… in `addBulk` of 100: jobs/s",
        &bullmq.map(|bullmq| bullmq.add_bulk_of_100.jobs_per_second),
        "",
    ));
    out.push_str(&row(
        "… CPU per job, one `add` per job: producer + worker + Redis (µs)",
        &bullmq.map(|bullmq| bullmq.one_add_per_job.cpu_us_per_job.total),
        "",
    ));
    // A cell shows two decimals.
    let ratio = |grid: f64, baseline: f64| grid / baseline;
    out.push_str(&row(
        "end to end ÷ BullMQ: one task per request ÷ one `add` per job",
        &bullmq.map(|bullmq| ratio(report.throughput.tasks_per_second, bullmq.one_add_per_job.jobs_per_second)),
        "≥ 0.4",
    ));
    out.push_str(&row(
        "end to end ÷ BullMQ: batches of 100 ÷ one `add` per job",
        &bullmq.map(|bullmq| ratio(batched.tasks_per_second, bullmq.one_add_per_job.jobs_per_second)),
        "≥ 1.0",
    ));
    out.push_str(&row(
        "… batches of 100 ÷ `addBulk` of 100",
        &bullmq.map(|bullmq| ratio(batched.tasks_per_second, bullmq.add_bulk_of_100.jobs_per_second)),
        "",
    ));
    out.push_str(&row("sequential round trip p50 (ms)", &report.sequential.round_trip.p50_ms, ""));
    out.push_str(&row("sequential round trip p95 (ms)", &report.sequential.round_trip.p95_ms, ""));
    out.push_str(&row("sequential round trip p99 (ms)", &report.sequential.round_trip.p99_ms, "≤ 5"));
    // Where its time went, cut at the writer's readings of the clock: p50 / p99 of each part,
    // and each part's mean in the slowest 1 % of round trips.
    let segments = &report.sequential.segments;
    for (index, (label, part)) in [
        ("… sent → the writer took the submission", &segments.to_writer),
        ("… → the writer assigned it", &segments.to_assigned),
        ("… → the writer took its completion (assignment committed, node, report)", &segments.to_completed),
        ("… → seen on the event stream (completion committed, relayed)", &segments.to_seen),
    ]
    .into_iter()
    .enumerate()
    {
        out.push_str(&row(&format!("{label}: p50 (ms)"), &part.p50_ms, ""));
        out.push_str(&row(&format!("{label}: p99 (ms)"), &part.p99_ms, ""));
        out.push_str(&row(
            &format!("{label}: mean in the slowest 1 % (ms)"),
            &segments.slowest_percent_mean_ms[index],
            "",
        ));
    }
    out.push_str(&row("offered at half the measured capacity (tasks/s)", &report.half_capacity.offered_per_second, ""));
    out.push_str(&row("… submitted → completed p50 (ms)", &report.half_capacity.submitted_to_completed.p50_ms, ""));
    out.push_str(&row("… submitted → completed p99 (ms)", &report.half_capacity.submitted_to_completed.p99_ms, "≤ 50"));
    out.push_str(&row("orchestrator CPU per task (µs)", &report.throughput.per_task.orchestrator_cpu_us, "≤ 60"));
    out.push_str(&row("gateway CPU per task (µs)", &report.throughput.per_task.gateway_cpu_us, ""));
    out.push_str(&row("PostgreSQL CPU per task (µs)", &report.throughput.per_task.postgresql_cpu_us, "≤ 100"));
    out.push_str(&row("Redis CPU per task (µs)", &report.throughput.per_task.redis_cpu_us, ""));
    out.push_str(&row("SQL statements per task", &report.throughput.per_task.sql_statements, "report"));
    out.push_str(&row("WAL bytes per task", &report.throughput.per_task.wal_bytes, "report"));
    out.push_str(&row(
        "WAL bytes per task, in batches of 100",
        &report.throughput_in_batches.per_task.wal_bytes,
        "≤ 4,000",
    ));
    out.push_str(&row("… WAL records per task", &report.throughput.per_task.wal_records, ""));
    out.push_str(&row("… WAL full-page images per task", &report.throughput.per_task.wal_full_pages, ""));
    out.push_str(&row("stored event envelope, mean (bytes)", &report.throughput.per_task.event_envelope_bytes, ""));
    out.push_str(&row("task row, mean (bytes)", &report.throughput.per_task.task_row_bytes, ""));
    out.push_str(&row("row versions written per task, every table", &report.throughput.per_task.rows, "report"));
    out.push_str(&row(
        "index entries written per task, every table (at most: a partial index skips rows)",
        &report.throughput.per_task.index_entries,
        "report",
    ));
    out.push_str(&row("WAL flushes (fsync) per task", &report.throughput.per_task.wal_flushes, ""));
    out.push_str(&row("task row versions per task", &report.throughput.per_task.task_row_versions, ""));
    out.push_str(&row("share of task updates that were HOT", &report.throughput.per_task.task_hot_update_share, ""));
    out.push_str(&row("tasks per batch (mean)", &report.throughput.per_task.tasks_per_batch, ""));
    out.push_str(&row(
        "proof blocks sealed per second at this load",
        &report.throughput.proof_blocks.per_second,
        "report",
    ));
    out.push_str(&row("… leaves per block (mean)", &report.throughput.proof_blocks.leaves_per_block, ""));
    out.push_str(&row(
        "sealing per credited result, proof of work included (µs; blocks of 2,000, difficulty 8)",
        &report.other_benches.audit.as_ref().map(|audit| audit.sealing_us_per_leaf),
        "≤ 5",
    ));
    out.push_str(&row(
        "block verification, leaves per second (in memory)",
        &report.other_benches.audit.as_ref().map(|audit| audit.verification_leaves_per_second),
        "≥ 1,000,000",
    ));
    out.push_str(&row(
        "verification of the stored chain, links and leaves per second (read from PostgreSQL)",
        &report.other_benches.audit.as_ref().map(|audit| audit.stored_chain_entries_per_second),
        "",
    ));
    out.push_str(&row(
        "inclusion proof in a block of 2,000 leaves (hashes)",
        &report.other_benches.audit.as_ref().map(|audit| audit.inclusion_proof_hashes_2000),
        "≤ 11",
    ));
    let trials = report.takeover.trials;
    out.push_str(&row(
        &format!("writer takeover after kill -9, {trials} trials, p50 (ms)"),
        &report.takeover.kill_to_writer.p50_ms,
        "",
    ));
    out.push_str(&row(
        &format!("writer takeover after kill -9, {trials} trials, max (ms)"),
        &report.takeover.kill_to_writer.max_ms,
        "p99 ≤ 2,000",
    ));
    out.push_str(&row(
        "… until a task submitted then completed, max (ms)",
        &report.takeover.kill_to_next_task_completed.max_ms,
        "",
    ));
    let queued = report.queued.queued;
    out.push_str(&row(
        &format!("writer RSS with {queued} tasks queued (MiB)"),
        &report.queued.writer_rss_mib,
        "≤ 100 MB",
    ));
    out.push_str(&row(
        &format!("takeover of {queued} queued tasks after kill -9 (ms)"),
        &report.queued.takeover_ms,
        "",
    ));
    let cells = &report.cell_takeover;
    out.push_str(&row(
        &format!(
            "one cell of {} taken over after kill -9 under {} tasks/s, {} nodes (ms)",
            cells.cells, cells.offered_per_second, cells.nodes
        ),
        &cells.kill_to_writer_ms,
        "≤ 2,000",
    ));
    out.push_str(&row(
        "… until a task submitted to it after the kill completed (ms)",
        &cells.kill_to_cell_completed_task_ms,
        "",
    ));
    out.push_str(&row(
        "… the other cells' completions per second, before the kill",
        &cells.other_cells_completed_per_second_before,
        "",
    ));
    out.push_str(&row(
        "… the other cells' completions per second, during the takeover",
        &cells.other_cells_completed_per_second_during,
        "unchanged",
    ));
    out.push_str(&row(
        "… the other cells' longest gap between completions around it (ms)",
        &cells.other_cells_longest_gap_ms,
        "≤ 200",
    ));
    out.push_str(&row(
        "Redis memory of the grid's namespace after the runs (MiB)",
        &report.redis.namespace_mib,
        "report",
    ));
    out.push_str(&row("… keys in the namespace", &report.redis.namespace_keys, ""));
    out.push_str(&row("… the whole server's memory (shared)", &report.redis.server_used_memory_mib, ""));
    out.push_str(&row("… commands stream length", &report.redis.stream_lengths.commands, ""));
    out.push_str(&row("… reports stream length", &report.redis.stream_lengths.reports, ""));
    out.push_str(&row("… events stream length", &report.redis.stream_lengths.events, ""));
    for (open_loop, target) in report.open_loop_submit.iter().zip(["≤ 2", ""]) {
        let (rate, latency) = (open_loop.offered_per_second, &open_loop.latency);
        for (label, value, goal) in [
            ("p50", latency.p50_ms, ""),
            ("p95", latency.p95_ms, ""),
            ("p99", latency.p99_ms, target),
            ("p99.9", latency.p999_ms, ""),
        ] {
            out.push_str(&row(&format!("submit latency at {rate} req/s (open loop), {label} (ms)"), &value, goal));
        }
        let shed = open_loop.of_which_503;
        out.push_str(&row(
            &format!("submit errors at {rate} req/s (of which 503 overloaded: {shed})"),
            &open_loop.errors,
            "0",
        ));
    }
    out.push_str(&row(
        "scheduler decisions/s (pure)",
        &report.other_benches.scheduler.as_ref().map(|scheduler| scheduler.decisions.decisions_per_second),
        "≥ 50,000",
    ));
    out.push_str(&row(
        "scheduler placements/s through the writer (10,000 nodes, 100,000 queued)",
        &report.other_benches.scheduler.as_ref().map(|scheduler| scheduler.dispatch.assignments_per_second),
        "",
    ));
    out.push_str(&row(
        "replay events/s",
        &report.other_benches.audit.as_ref().map(|audit| audit.events_per_second),
        "≥ 200,000",
    ));

    out.push_str(&row(
        "gateway peak RSS before the 5,000 req/s phase (MiB)",
        &report.memory.gateway_peak_rss_before_overload_mib,
        "≤ 30",
    ));
    out.push_str(&row("gateway peak RSS after it (MiB)", &report.memory.gateway_peak_rss_mib, ""));
    out.push_str(&row(
        "gateway RSS with the fleet connected, idle moment (MiB)",
        &report.gateway.rss_with_fleet_connected_mib,
        "≤ 30",
    ));
    out.push_str(&row("… nodes connected", &report.gateway.fleet_connected, "1,000"));
    out.push_str(&row(
        "… anonymous memory the fleet's connecting added, per node (KiB)",
        &report.fleet.gateway_anonymous_kib_per_node,
        "report",
    ));
    let overload = &report.gateway.overload_20000;
    out.push_str(&row(
        &format!("offered {} req/s: share answered within 10 ms (202 or 503)", overload.offered_per_second),
        &overload.answered_within_10ms_share,
        "≥ 0.999",
    ));
    out.push_str(&row("… answered 202", &overload.with_status(202), ""));
    out.push_str(&row("… answered 503", &overload.with_status(503), ""));
    out.push_str(&row("… connection errors", &overload.errors, "0"));
    out.push_str(&row("… latency p50 (ms)", &overload.latency.p50_ms, ""));
    out.push_str(&row("… latency p99 (ms)", &overload.latency.p99_ms, ""));
    out.push_str(&row("… gateway peak RSS during it (MiB)", &overload.gateway_peak_rss_mib, "≤ 50"));
    out.push_str(&row(
        &format!("gateway CPU per heartbeat at {}/s (µs)", report.gateway.cpu_per_heartbeat.offered_per_second),
        &report.gateway.cpu_per_heartbeat.cpu_us_per_request,
        "≤ 40",
    ));
    out.push_str(&row(
        &format!(
            "gateway CPU per submission at {}/s, with its task's report and channel fan-out (µs)",
            report.gateway.cpu_per_submission.offered_per_second
        ),
        &report.gateway.cpu_per_submission.cpu_us_per_request,
        "≤ 40 per request",
    ));
    let gateway = &report.gateway;
    out.push_str(&row(
        &format!("gateway CPU per report at {}/s, over HTTP (µs)", gateway.cpu_per_report.offered_per_second),
        &gateway.cpu_per_report.cpu_us_per_request,
        "",
    ));
    out.push_str(&row(
        &format!(
            "gateway CPU per heartbeat frame at {}/s, over nodes' connections (µs)",
            gateway.cpu_per_heartbeat_frame.offered_per_second
        ),
        &gateway.cpu_per_heartbeat_frame.cpu_us_per_request,
        "≤ 30",
    ));
    out.push_str(&row("… answer latency p99 (ms)", &gateway.cpu_per_heartbeat_frame.latency.p99_ms, ""));
    out.push_str(&row(
        &format!(
            "gateway CPU per report frame at {}/s, over nodes' connections (µs)",
            gateway.cpu_per_report_frame.offered_per_second
        ),
        &gateway.cpu_per_report_frame.cpu_us_per_request,
        "≤ 30",
    ));
    out.push_str(&row("… answer latency p99 (ms)", &gateway.cpu_per_report_frame.latency.p99_ms, ""));
    out.push_str(&row("idle nodes' connections (WebSocket) opened", &gateway.idle_connections.nodes, ""));
    out.push_str(&row(
        "… gateway RSS growth per connected node (KiB)",
        &gateway.idle_connections.kib_per_connected_node,
        "small",
    ));
    out.push_str(&row(
        "idle task channels opened",
        &report.gateway.idle_channels.nodes,
        "9,000 (10,000 with the fleet)",
    ));
    out.push_str(&row(
        "gateway RSS with them open (MiB)",
        &report.gateway.idle_channels.gateway_rss_after_mib,
        "report",
    ));
    out.push_str(&row("… per connected node (KiB)", &report.gateway.idle_channels.kib_per_connected_node, "small"));
    out.push_str(&row("orchestrator peak RSS (MiB)", &report.memory.orchestrator_peak_rss_mib, ""));
    out.push_str(&row("single worker peak RSS (MiB)", &report.memory.single_worker_peak_rss_mib, "≤ 10"));
    out.push_str(&row(
        "fleet process peak RSS (MiB, all simulated nodes)",
        &report.memory.fleet_process_peak_rss_mib,
        "",
    ));
    out.push_str(&row("gateway binary, release (MiB)", &report.binary_sizes.gateway_mib, ""));
    out.push_str(&row("orchestrator binary, release (MiB)", &report.binary_sizes.orchestrator_mib, ""));
    out.push_str(&row("worker binary, release (MiB)", &report.binary_sizes.worker_mib, ""));
    out.push_str(&row("worker binary, edge profile (MiB)", &report.binary_sizes.worker_edge_mib, "≤ 5"));
    out.push_str(&row(
        "control-plane CPU per completed task (µs)",
        &report.throughput.control_plane_cpu_us_per_task,
        "≤ 180",
    ));
    out.push_str(&row("… as µg of CO₂ per task", &report.throughput.co2_micrograms_per_task, ""));
    out.push_str("\nWhat the end-to-end phase (one task per request) wrote per task, table by table:\n\n");
    out.push_str("| table | inserts | updates (of which HOT) | deletes | index entries |\n|---|---|---|---|---|\n");
    for (table, writes) in &report.throughput.per_task.by_table {
        out.push_str(&format!(
            "| {table} | {:.2} | {:.2} ({:.2}) | {:.2} | {:.2} |\n",
            writes.inserts, writes.updates, writes.hot_updates, writes.deletes, writes.index_entries
        ));
    }
    out.push_str(&format!(
        "\nPower model for the CPU figure: {}. The end-to-end phase stops waiting after its budget \
         (BENCH_E2E_SECONDS); `gave_up_after_budget` in the JSON says whether it did.\n",
        report.throughput.power_model
    ));
    out
}
