//! One node's agent: heartbeats with its live state, follows its task channel (resuming after a
//! disconnect with `Last-Event-ID`), runs each assigned task off the async thread, and reports.
//! All three go over the node's one connection (a WebSocket, [`crate::connection`]) unless
//! [`Transport::Http`] asks for a request per heartbeat and per report beside the channel's
//! stream (the routes older gateways have).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grid_shared::ids::{NodeId, TaskId};
use grid_shared::messages::{TaskAssignment, TaskCancellation};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::client::{ClientError, GatewayClient, ReportBody};
use crate::connection::{self, Link};
use crate::cpu::CpuMeter;
use crate::power::PowerModel;
use crate::solar::SolarSource;
use crate::sse::SseEvent;
use crate::tasks::{self, TaskError};

#[derive(Clone)]
pub struct AgentConfig {
    pub client: GatewayClient,
    pub node_id: NodeId,
    pub token: String,
    pub cpu_cores: u16,
    pub heartbeat_every: Duration,
    pub solar: SolarSource,
    pub power: PowerModel,
    /// Report the machine's real CPU usage (a simulated fleet shares one machine: it reports
    /// its own load instead).
    pub measure_cpu: bool,
    /// A simulated Pi takes at least this long per task (a Raspberry Pi is several times slower
    /// than a server core); zero on a real node.
    pub min_task_duration: Duration,
    /// Answer with [`tasks::run_instant`] instead of computing (control-plane benches only).
    pub instant_results: bool,
    pub transport: Transport,
}

/// How the agent talks to the gateway once its node is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Transport {
    /// One WebSocket per node (`GET /v1/nodes/{id}/connection`) for the task channel, the
    /// heartbeats and the reports.
    #[default]
    Connection,
    /// The task channel's event stream, and a request per heartbeat and per report.
    Http,
}

/// Assignments already taken, so that a replayed channel does not run a task twice, with the
/// final report of those finished: an assignment received again for a finished task (the
/// orchestrator re-issues work in flight when Redis lost its data, and the report may have
/// been lost with it) is answered with that report again.
#[derive(Default)]
struct Seen {
    reports: HashMap<(TaskId, i32), Option<ReportBody>>,
    order: VecDeque<(TaskId, i32)>,
}

impl Seen {
    const CAPACITY: usize = 10_000;

    fn first_time(&mut self, key: (TaskId, i32)) -> bool {
        if self.reports.contains_key(&key) {
            return false;
        }
        self.reports.insert(key, None);
        self.order.push_back(key);
        if self.order.len() > Self::CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.reports.remove(&oldest);
        }
        true
    }

    /// Keeps the final report of an assignment.
    fn finished(&mut self, key: (TaskId, i32), report: ReportBody) {
        if let Some(slot) = self.reports.get_mut(&key) {
            *slot = Some(report);
        }
    }

    /// The final report of an assignment already finished, if kept.
    fn report_of(&self, key: (TaskId, i32)) -> Option<ReportBody> {
        self.reports.get(&key).cloned().flatten()
    }
}

struct Shared {
    config: AgentConfig,
    /// The node's connection, with [`Transport::Connection`].
    link: Option<Link>,
    running: AtomicU32,
    cancels: Mutex<HashMap<TaskId, Arc<AtomicBool>>>,
    seen: Mutex<Seen>,
}

/// Runs the agent until `shutdown` turns true.
pub async fn run_agent(config: AgentConfig, mut shutdown: watch::Receiver<bool>) {
    let (link, mut queue) = match config.transport {
        Transport::Connection => {
            let (link, queue) = Link::new();
            (Some(link), Some(queue))
        }
        Transport::Http => (None, None),
    };
    let shared = Arc::new(Shared {
        config,
        link,
        running: AtomicU32::new(0),
        cancels: Mutex::default(),
        seen: Mutex::default(),
    });
    let node_id = shared.config.node_id;
    if !wait_until_registered(&shared, &mut shutdown).await {
        return;
    }
    info!(%node_id, transport = ?shared.config.transport, "node registered; following its task channel");
    let heartbeats = tokio::spawn(heartbeat_loop(shared.clone(), shutdown.clone()));
    let mut last_event_id: Option<String> = None;
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        let followed = {
            let shared = shared.clone();
            let config = &shared.config;
            let resume_from = last_event_id.clone();
            let last = &mut last_event_id;
            let on_event = |event: SseEvent| {
                if let Some(id) = &event.id {
                    *last = Some(id.clone());
                }
                handle_event(&shared, event);
            };
            let follow = async {
                match queue.as_mut() {
                    Some(queue) => {
                        let gateway = config.client.base();
                        connection::run(gateway, node_id, &config.token, resume_from.as_deref(), queue, on_event).await
                    }
                    None => config.client.follow_tasks(node_id, &config.token, resume_from.as_deref(), on_event).await,
                }
            };
            tokio::select! {
                result = follow => Some(result),
                _ = shutdown.changed() => None,
            }
        };
        match followed {
            None => break,
            Some(Ok(())) => {
                debug!(%node_id, "task channel closed; reconnecting");
                backoff = Duration::from_millis(100);
            }
            Some(Err(error)) => {
                warn!(%node_id, %error, "task channel failed; reconnecting");
                // A busy gateway says when to come back.
                backoff = backoff.max(error.retry_after().unwrap_or_default());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    heartbeats.abort();
}

impl Shared {
    /// Sends live state over the node's connection, else as a request.
    async fn heartbeat(&self, cpu_usage: f64, solar_watts: f64, running: u32) -> Result<f64, ClientError> {
        let config = &self.config;
        match &self.link {
            Some(link) => link.heartbeat(cpu_usage, solar_watts, running).await,
            None => config.client.heartbeat(config.node_id, &config.token, cpu_usage, solar_watts, running).await,
        }
    }

    /// Sends a report over the node's connection, else as a request.
    async fn report(&self, report: &ReportBody, correlation_id: Option<uuid::Uuid>) -> Result<(), ClientError> {
        let config = &self.config;
        match &self.link {
            Some(link) => link.report(report, correlation_id).await,
            None => config.client.report(config.node_id, &config.token, report, correlation_id).await,
        }
    }
}

fn solar_now(shared: &Shared) -> f64 {
    shared.config.solar.watts_now()
}

/// Heartbeats until the gateway knows the token (registration is applied asynchronously).
async fn wait_until_registered(shared: &Shared, shutdown: &mut watch::Receiver<bool>) -> bool {
    let config = &shared.config;
    let mut attempts = 0_u32;
    loop {
        match config.client.heartbeat(config.node_id, &config.token, 0.0, solar_now(shared), 0).await {
            Ok(_) => return true,
            Err(ClientError::Unauthorized(_)) => {
                attempts += 1;
                if attempts.is_multiple_of(50) {
                    info!(node_id = %config.node_id, "still waiting for the registration to be applied");
                }
            }
            Err(error) => warn!(node_id = %config.node_id, %error, "heartbeat failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.changed() => return false,
        }
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut meter = CpuMeter::default();
    loop {
        let config = &shared.config;
        let running = shared.running.load(Ordering::Relaxed);
        let cpu_usage = if config.measure_cpu {
            meter.sample()
        } else {
            100.0 * f64::from(running) / f64::from(config.cpu_cores.max(1))
        };
        if let Err(error) = shared.heartbeat(cpu_usage.min(100.0), solar_now(&shared), running).await {
            warn!(node_id = %config.node_id, %error, "heartbeat failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(config.heartbeat_every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn handle_event(shared: &Arc<Shared>, event: SseEvent) {
    match event.event.as_deref() {
        Some("TASK:ASSIGNED") => match serde_json::from_str::<TaskAssignment>(&event.data) {
            Ok(assignment) => {
                let key = (assignment.task_id, assignment.attempt);
                let (first, finished) = {
                    let mut seen = shared.seen.lock().expect("not poisoned");
                    (seen.first_time(key), seen.report_of(key))
                };
                // The gateway adds the correlation id of the submission to the event's data.
                let correlation_id = serde_json::from_str::<serde_json::Value>(&event.data)
                    .ok()
                    .and_then(|data| data["correlation_id"].as_str().and_then(|text| text.parse().ok()));
                if first {
                    tokio::spawn(execute(shared.clone(), assignment, correlation_id));
                } else if let Some(report) = finished {
                    info!(task_id = %assignment.task_id, "assignment received again for a finished task: reporting again");
                    let shared = shared.clone();
                    tokio::spawn(async move { send_report(&shared, &report, correlation_id).await });
                }
            }
            Err(error) => warn!(%error, "unreadable TASK:ASSIGNED"),
        },
        Some("TASK:CANCELLED") => match serde_json::from_str::<TaskCancellation>(&event.data) {
            Ok(cancellation) => {
                if let Some(flag) = shared.cancels.lock().expect("not poisoned").get(&cancellation.task_id) {
                    info!(task_id = %cancellation.task_id, reason = cancellation.reason, "stopping a cancelled task");
                    flag.store(true, Ordering::Relaxed);
                }
                // A cancellation that arrives before its assignment runs is remembered too.
                shared.seen.lock().expect("not poisoned").first_time((cancellation.task_id, cancellation.attempt));
            }
            Err(error) => warn!(%error, "unreadable TASK:CANCELLED"),
        },
        other => debug!(event = ?other, "ignoring an event"),
    }
}

/// Work that finishes sooner is reported once, completed or failed, without `started`.
pub const REPORT_STARTED_AFTER: Duration = Duration::from_secs(1);

#[tracing::instrument(skip_all, fields(task_id = %assignment.task_id, attempt = assignment.attempt, correlation_id = ?correlation_id))]
async fn execute(shared: Arc<Shared>, assignment: TaskAssignment, correlation_id: Option<uuid::Uuid>) {
    let config = &shared.config;
    let task_id = assignment.task_id;
    let flag = Arc::new(AtomicBool::new(false));
    shared.cancels.lock().expect("not poisoned").insert(task_id, flag.clone());
    let started = ReportBody {
        task_id: task_id.as_uuid(),
        attempt: assignment.attempt,
        status: "started",
        result_json: None,
        result_hash: None,
        energy_used_wh: None,
        solar_contribution_wh: None,
        error: None,
    };
    let running = shared.running.fetch_add(1, Ordering::Relaxed) + 1;
    let clock = Instant::now();
    let input = assignment.kind.clone();
    let cancelled = flag.clone();
    let min_duration = config.min_task_duration;
    let instant = config.instant_results;
    let mut computation = tokio::task::spawn_blocking(move || {
        let result = if instant { tasks::run_instant(&input) } else { tasks::run(&input, &cancelled)? };
        // The simulated Pi is still busy: it stops at once when the task is cancelled.
        while clock.elapsed() < min_duration {
            if cancelled.load(Ordering::Relaxed) {
                return Err(TaskError::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(5).min(min_duration));
        }
        Ok(result)
    });
    // Short work costs two requests (assignment read, result sent): `started` is sent only for
    // work still running after `REPORT_STARTED_AFTER`, well inside the start lease.
    let outcome = match tokio::time::timeout(REPORT_STARTED_AFTER, &mut computation).await {
        Ok(outcome) => outcome,
        Err(_) => {
            send_report(&shared, &started, correlation_id).await;
            computation.await
        }
    };
    let seconds = clock.elapsed().as_secs_f64();
    shared.running.fetch_sub(1, Ordering::Relaxed);
    shared.cancels.lock().expect("not poisoned").remove(&task_id);
    let report = match outcome {
        Ok(Ok(result)) => {
            let estimate = config.power.estimate(seconds, running, solar_now(&shared));
            info!(%task_id, attempt = assignment.attempt, seconds, energy_wh = estimate.energy_wh, "task completed");
            ReportBody {
                status: "completed",
                result_json: Some(result.result_json),
                result_hash: Some(result.result_hash),
                energy_used_wh: Some(estimate.energy_wh),
                solar_contribution_wh: Some(estimate.solar_wh),
                ..started
            }
        }
        Ok(Err(TaskError::Cancelled)) => {
            info!(%task_id, "task stopped: cancelled");
            return;
        }
        Ok(Err(TaskError::Invalid(reason))) => ReportBody { status: "failed", error: Some(reason), ..started },
        Err(join_error) => {
            ReportBody { status: "failed", error: Some(format!("the computation panicked: {join_error}")), ..started }
        }
    };
    shared.seen.lock().expect("not poisoned").finished((task_id, assignment.attempt), report.clone());
    send_report(&shared, &report, correlation_id).await;
}

/// Sends a report, retrying transient failures; a refusal (4xx) is final.
async fn send_report(shared: &Shared, report: &ReportBody, correlation_id: Option<uuid::Uuid>) {
    let mut delay = Duration::from_millis(100);
    let (mut failures, mut busy) = (0, 0);
    while failures < 8 && busy < crate::client::BUSY_TRIES {
        match shared.report(report, correlation_id).await {
            Ok(()) => return,
            Err(ClientError::Refused { status, detail }) if status < 500 => {
                warn!(task_id = %report.task_id, status, detail, "report refused");
                return;
            }
            // The gateway is busy and says when to come back: a report is not lost for it.
            Err(ClientError::Busy { retry_after, .. }) => {
                busy += 1;
                debug!(task_id = %report.task_id, ?retry_after, "gateway busy; report sent again after its Retry-After");
                tokio::time::sleep(retry_after).await;
            }
            Err(error) => {
                failures += 1;
                warn!(task_id = %report.task_id, %error, "report failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    warn!(task_id = %report.task_id, "report given up after retries; the lease will requeue the task");
}
