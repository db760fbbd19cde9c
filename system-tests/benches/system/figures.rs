//! The figures of a run, typed: what each phase measures and the report they make together.
//! Serialised as the report's JSON, with the keys of the earlier reports, so that runs compare.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Latencies of one kind, in milliseconds; the percentiles are absent when nothing was sampled.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Distribution {
    pub(crate) samples: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p95_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p999_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_ms: Option<f64>,
}

/// The machine and software a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) memory: String,
    pub(crate) kernel: String,
    pub(crate) postgresql: String,
    pub(crate) postgresql_synchronous_commit: String,
    pub(crate) redis: String,
    pub(crate) commit: String,
    pub(crate) uncommitted_changes: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Fleet {
    pub(crate) nodes: u64,
    pub(crate) cores_per_node: u32,
    pub(crate) seconds_to_come_alive: f64,
    /// What connecting the fleet added to the gateway's anonymous memory (heap and stacks), per
    /// node: its connection, buffers and channel, and what registering it left allocated.
    pub(crate) gateway_anonymous_kib_per_node: f64,
}

/// One task at a time, submitted then awaited to completion.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sequential {
    pub(crate) tasks: usize,
    pub(crate) seconds: f64,
    pub(crate) round_trip: Distribution,
    pub(crate) segments: RoundTripSegments,
}

/// A sequential round trip in four parts, cut at the writer's readings of the clock when it
/// decided each step (before that step's batch commits).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct RoundTripSegments {
    /// Sent → the writer decided the submission: the HTTP request, the gateway, the commands
    /// stream.
    pub(crate) to_writer: Distribution,
    /// → the writer decided its assignment.
    pub(crate) to_assigned: Distribution,
    /// → the writer decided its completion: the assignment's commit, the node's channel, the
    /// node's report through the gateway, the reports stream.
    pub(crate) to_completed: Distribution,
    /// → the bench saw it on the event stream: the completion's commit, the relay, the
    /// gateway's event stream.
    pub(crate) to_seen: Distribution,
    /// The slowest 1 % of round trips: each part's mean, in the order above.
    pub(crate) slowest_percent_mean_ms: [Option<f64>; 4],
}

/// What the end-to-end phase cost per completed task.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct PerTask {
    pub(crate) orchestrator_cpu_us: f64,
    pub(crate) gateway_cpu_us: f64,
    pub(crate) postgresql_cpu_us: f64,
    pub(crate) redis_cpu_us: f64,
    pub(crate) sql_statements: f64,
    pub(crate) wal_bytes: f64,
    pub(crate) wal_flushes: f64,
    pub(crate) wal_records: f64,
    /// Full-page images written per task (each up to a page, 8 KiB).
    pub(crate) wal_full_pages: f64,
    pub(crate) task_row_versions: f64,
    pub(crate) task_hot_update_share: f64,
    pub(crate) tasks_per_batch: f64,
    /// Row versions written per task, every table of the database (inserted, updated, deleted).
    pub(crate) rows: f64,
    /// Index entries written per task, every table.
    pub(crate) index_entries: f64,
    /// Mean stored size of an event's envelope (`json`: its text) and of a task row.
    pub(crate) event_envelope_bytes: f64,
    pub(crate) task_row_bytes: f64,
    /// Rows and index entries per task, table by table (the tables the phase wrote).
    pub(crate) by_table: std::collections::BTreeMap<String, crate::TableWrites>,
}

/// The proof blocks the writer sealed during the end-to-end phase.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ProofBlocks {
    pub(crate) sealed: f64,
    pub(crate) per_second: f64,
    pub(crate) leaves_per_block: f64,
}

/// The end-to-end phase: many tasks submitted by 64 clients at once, run by the fleet.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Throughput {
    /// Tasks per request: 1 (`POST /v1/tasks`) or a batch (`POST /v1/tasks/batch`).
    pub(crate) tasks_per_request: usize,
    pub(crate) tasks_submitted: usize,
    pub(crate) submissions_refused_503_then_retried: u64,
    pub(crate) tasks_completed: usize,
    pub(crate) submit_seconds: f64,
    pub(crate) seconds: f64,
    pub(crate) gave_up_after_budget: bool,
    pub(crate) tasks_per_second: f64,
    pub(crate) submit_to_completed: Distribution,
    pub(crate) submit_to_assigned: Distribution,
    pub(crate) control_plane_cpu_seconds: f64,
    pub(crate) orchestrator_cpu_seconds: f64,
    pub(crate) gateway_cpu_seconds: f64,
    pub(crate) postgresql_cpu_seconds: f64,
    pub(crate) redis_cpu_seconds: f64,
    pub(crate) control_plane_cpu_us_per_task: f64,
    pub(crate) co2_micrograms_per_task: f64,
    pub(crate) power_model: String,
    /// Filled in once the writer's and PostgreSQL's counters are read after the phase.
    pub(crate) per_task: PerTask,
    pub(crate) proof_blocks: ProofBlocks,
}

/// Submissions offered at a fixed rate whatever the answers (open loop).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OpenLoop {
    pub(crate) offered_per_second: u64,
    pub(crate) seconds: u64,
    pub(crate) errors: u64,
    pub(crate) of_which_503: u64,
    pub(crate) latency: Distribution,
}

/// Open-loop submissions at half the measured capacity, followed to their completion.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HalfCapacity {
    pub(crate) offered_per_second: u64,
    pub(crate) submitted: usize,
    pub(crate) completed: usize,
    pub(crate) submit: Distribution,
    pub(crate) submitted_to_completed: Distribution,
}

/// Writer `kill -9` trials.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Takeovers {
    pub(crate) trials: usize,
    pub(crate) kill_to_writer: Distribution,
    pub(crate) kill_to_next_task_completed: Distribution,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct StreamLengths {
    pub(crate) commands: i64,
    pub(crate) reports: i64,
    pub(crate) events: i64,
    pub(crate) heartbeats: i64,
    pub(crate) dlq: i64,
}

/// What the grid's namespace holds in Redis after the runs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RedisFootprint {
    pub(crate) namespace_mib: f64,
    pub(crate) namespace_keys: usize,
    pub(crate) server_used_memory_mib: f64,
    pub(crate) stream_lengths: StreamLengths,
}

/// The writer with many tasks queued and no node to run them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueuedMemory {
    pub(crate) queued: usize,
    pub(crate) seconds_to_apply_submissions: f64,
    pub(crate) writer_rss_mib: f64,
    pub(crate) takeover_ms: f64,
    pub(crate) queued_after_takeover: u64,
    pub(crate) new_writer_rss_mib: f64,
}

/// One cell of three taken over under load (`cells.rs`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CellTakeover {
    pub(crate) cells: usize,
    pub(crate) nodes: u64,
    pub(crate) offered_per_second: u64,
    pub(crate) submit_errors: u64,
    /// `kill -9` of the process writing the cell → the standby reports itself its writer.
    pub(crate) kill_to_writer_ms: f64,
    /// … → a task submitted to the cell just after the kill completes.
    pub(crate) kill_to_cell_completed_task_ms: f64,
    /// The two other cells' completions per second, in the 3 s before the kill and while the
    /// cell was taken over (kill → that task completed).
    pub(crate) other_cells_completed_per_second_before: f64,
    pub(crate) other_cells_completed_per_second_during: f64,
    /// The longest wait between two completions of either other cell, from a second before the
    /// kill to a second after that task completed.
    pub(crate) other_cells_longest_gap_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Memory {
    pub(crate) gateway_peak_rss_before_overload_mib: f64,
    pub(crate) gateway_peak_rss_mib: f64,
    pub(crate) orchestrator_peak_rss_mib: f64,
    pub(crate) single_worker_peak_rss_mib: f64,
    pub(crate) fleet_process_peak_rss_mib: f64,
    pub(crate) fleet_nodes: u64,
}

/// One kind of request offered at a fixed rate over raw keep-alive connections.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Flood {
    pub(crate) offered_per_second: u64,
    pub(crate) seconds: u64,
    pub(crate) connections: u64,
    pub(crate) offered: u64,
    pub(crate) answered: u64,
    pub(crate) errors: u64,
    /// Answers by HTTP status.
    pub(crate) by_status: BTreeMap<u16, u64>,
    pub(crate) answered_within_10ms_share: f64,
    pub(crate) latency: Distribution,
    pub(crate) gateway_peak_rss_mib: f64,
}

impl Flood {
    pub(crate) fn with_status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }
}

/// The gateway's CPU per request of one kind, its idle CPU over as long subtracted.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CpuPerRequest {
    pub(crate) offered_per_second: u64,
    pub(crate) answered: u64,
    pub(crate) by_status: BTreeMap<u16, u64>,
    pub(crate) latency: Distribution,
    pub(crate) gateway_cpu_seconds: f64,
    pub(crate) idle_cpu_seconds: f64,
    pub(crate) cpu_us_per_request: f64,
}

impl CpuPerRequest {
    /// `busy` CPU seconds over `answered` requests, less `idle` (as long left alone).
    pub(crate) fn less_idle(
        rate: u64,
        answered: u64,
        by_status: BTreeMap<u16, u64>,
        latency: Distribution,
        busy: f64,
        idle: f64,
    ) -> Self {
        Self {
            offered_per_second: rate,
            answered,
            cpu_us_per_request: (busy - idle).max(0.0) / answered.max(1) as f64 * 1e6,
            by_status,
            latency,
            gateway_cpu_seconds: busy,
            idle_cpu_seconds: idle,
        }
    }
}

/// Idle nodes' task channels held open, and the gateway's memory for them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdleChannels {
    pub(crate) nodes: usize,
    pub(crate) gateway_rss_before_mib: f64,
    pub(crate) gateway_rss_after_mib: f64,
    pub(crate) kib_per_connected_node: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct GatewayFigures {
    pub(crate) overload_20000: Flood,
    pub(crate) cpu_per_heartbeat: CpuPerRequest,
    pub(crate) cpu_per_submission: CpuPerRequest,
    pub(crate) cpu_per_report: CpuPerRequest,
    /// Over nodes' connections (WebSocket frames).
    pub(crate) cpu_per_heartbeat_frame: CpuPerRequest,
    pub(crate) cpu_per_report_frame: CpuPerRequest,
    /// Idle nodes each holding an event stream.
    pub(crate) idle_channels: IdleChannels,
    /// Idle nodes each holding a connection (WebSocket).
    pub(crate) idle_connections: IdleChannels,
    /// Set by the whole run (not by the gateway's phases alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rss_with_fleet_connected_mib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fleet_connected: Option<u64>,
}

/// Release binaries' sizes; absent when the binary was not built.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BinarySizes {
    pub(crate) gateway_mib: Option<f64>,
    pub(crate) orchestrator_mib: Option<f64>,
    pub(crate) worker_mib: Option<f64>,
    pub(crate) worker_edge_mib: Option<f64>,
}

/// `target/bench/scheduler.json` as the scheduler bench writes it: the figures this report
/// shows, and the rest kept as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SchedulerBench {
    pub(crate) decisions: SchedulerDecisions,
    pub(crate) dispatch: SchedulerDispatch,
    #[serde(flatten)]
    pub(crate) rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SchedulerDecisions {
    pub(crate) decisions_per_second: f64,
    #[serde(flatten)]
    pub(crate) rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SchedulerDispatch {
    pub(crate) assignments_per_second: f64,
    #[serde(flatten)]
    pub(crate) rest: serde_json::Map<String, serde_json::Value>,
}

/// `target/bench/audit.json` as the audit bench writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AuditBench {
    pub(crate) events_per_second: f64,
    pub(crate) sealing_us_per_leaf: f64,
    pub(crate) verification_leaves_per_second: f64,
    pub(crate) stored_chain_entries_per_second: f64,
    pub(crate) inclusion_proof_hashes_2000: u64,
    #[serde(flatten)]
    pub(crate) rest: serde_json::Map<String, serde_json::Value>,
}

/// BullMQ on the same machine and Redis, run by the bench before the grid starts
/// (`bench/bullmq/run.mjs`, which prints this): the baseline of the end-to-end ratio.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BullmqBench {
    pub(crate) version: String,
    pub(crate) one_add_per_job: BullmqPhase,
    pub(crate) add_bulk_of_100: BullmqPhase,
    #[serde(flatten)]
    pub(crate) rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BullmqPhase {
    pub(crate) jobs_per_second: f64,
    pub(crate) cpu_us_per_job: BullmqCpu,
    #[serde(flatten)]
    pub(crate) rest: serde_json::Map<String, serde_json::Value>,
}

/// Per job: the producing process, the worker process and the Redis server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BullmqCpu {
    pub(crate) total: f64,
    #[serde(flatten)]
    pub(crate) rest: serde_json::Map<String, serde_json::Value>,
}

/// The figures the other benches left in `target/bench/` (absent when they did not run).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct OtherBenches {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scheduler: Option<SchedulerBench>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) audit: Option<AuditBench>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) at: String,
    pub(crate) fleet: Fleet,
    pub(crate) sequential: Sequential,
    pub(crate) throughput: Throughput,
    /// The end-to-end phase again, in batches of 100 tasks per request.
    pub(crate) throughput_in_batches: Throughput,
    /// At 1,000 then 5,000 submissions per second.
    pub(crate) open_loop_submit: Vec<OpenLoop>,
    pub(crate) open_loop_1000_drained_before_throughput: bool,
    pub(crate) half_capacity: HalfCapacity,
    pub(crate) takeover: Takeovers,
    pub(crate) redis: RedisFootprint,
    pub(crate) queued: QueuedMemory,
    pub(crate) cell_takeover: CellTakeover,
    pub(crate) memory: Memory,
    pub(crate) gateway: GatewayFigures,
    /// Absent when `bench/bullmq` is not installed (`npm ci --prefix bench/bullmq`).
    pub(crate) bullmq: Option<BullmqBench>,
    pub(crate) binary_sizes: BinarySizes,
    pub(crate) other_benches: OtherBenches,
}

/// What a run ends with: the whole report, or the figures of the part it was asked to run.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Outcome {
    Report(Box<Report>),
    GatewayOnly { open_loop_submit: Vec<OpenLoop>, gateway: Box<GatewayFigures> },
    StoppedAfterHalf { half: HalfCapacity, throughput: Box<Throughput>, throughput_in_batches: Box<Throughput> },
    CellTakeoverOnly { cell_takeover: CellTakeover },
}

/// Figures on one line, for the progress a run prints.
pub(crate) fn line<T: Serialize>(figures: &T) -> String {
    serde_json::to_string(figures).unwrap_or_default()
}
