//! Driving a grid from the outside, for the demo and for load: create an organisation, submit a
//! batch of sample tasks of both kinds (with the consents the group tasks need), wait for them
//! and report the throughput.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use serde_json::{Value, json};
use tracing::info;

use crate::client::{BUSY_TRIES, ClientError, send_patiently};

pub struct Driver {
    http: reqwest::Client,
    base: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    pub submitted: usize,
    pub completed: usize,
    pub failed_or_rejected: usize,
    pub seconds: f64,
}

/// Where the submitted tasks stand, while they are waited for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub completed: usize,
    pub unsuccessful: usize,
    /// Waiting in the queue: for a free core, or (deferrable ones) for a node in the sun.
    pub queued: usize,
    /// Assigned to a node or running there.
    pub on_nodes: usize,
    pub seconds: u64,
}

impl LoadReport {
    pub fn tasks_per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.completed as f64 / self.seconds } else { 0.0 }
    }
}

/// Sends a request, honouring the gateway's `503`/`429` + `Retry-After` (see
/// [`send_patiently`]), and reads the JSON it answers.
async fn json_of(request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
    Ok(send_patiently(request, BUSY_TRIES).await?.json().await?)
}

impl Driver {
    pub fn new(base: &str) -> Self {
        Self { http: reqwest::Client::new(), base: base.trim_end_matches('/').to_owned() }
    }

    async fn wait_for_command(&self, key: &str, command_id: &str) -> Result<Value, ClientError> {
        loop {
            let view =
                json_of(self.http.get(format!("{}/v1/commands/{command_id}", self.base)).bearer_auth(key)).await?;
            if view["status"] != "pending" {
                return Ok(view);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates an organisation with the operator key; answers `{organization_id, api_key}` once
    /// the key works.
    pub async fn create_organization(&self, operator_key: &str, name: &str) -> Result<Value, ClientError> {
        let created = json_of(
            self.http
                .post(format!("{}/v1/organizations", self.base))
                .bearer_auth(operator_key)
                .json(&json!({"name": name})),
        )
        .await?;
        let view = self.wait_for_command(operator_key, created["command_id"].as_str().unwrap_or_default()).await?;
        if view["status"] != "applied" {
            return Err(ClientError::Refused { status: 409, detail: view.to_string() });
        }
        Ok(json!({"organization_id": created["organization_id"], "api_key": created["api_key"]}))
    }

    /// Submits `count` sample tasks (one in four a group optimisation), one per request or (`batch`
    /// above 1) in batches of `batch` (`POST /v1/tasks/batch`), then waits until each is final or
    /// `timeout` passes, telling `progress` where they stand every few seconds.
    pub async fn submit_samples(
        &self,
        api_key: &str,
        count: usize,
        batch: usize,
        timeout: Duration,
        mut progress: impl FnMut(Progress),
    ) -> Result<LoadReport, ClientError> {
        let owners: Vec<uuid::Uuid> = (0..6).map(|_| uuid::Uuid::new_v4()).collect();
        for owner in &owners {
            let granted = json_of(
                self.http
                    .put(format!("{}/v1/owners/{owner}/consent", self.base))
                    .bearer_auth(api_key)
                    .json(&json!({"consent_version": "demo-2026"})),
            )
            .await?;
            self.wait_for_command(api_key, granted["command_id"].as_str().unwrap_or_default()).await?;
        }
        let clock = Instant::now();
        let mut waiting = if batch <= 1 {
            self.submit_one_by_one(api_key, count, &owners).await?
        } else {
            self.submit_in_batches(api_key, count, batch, &owners).await?
        };
        info!(count, seconds = clock.elapsed().as_secs_f64(), "tasks submitted; waiting for them");
        let deadline = Instant::now() + timeout;
        let (mut completed, mut unsuccessful) = (0, 0);
        let mut last_told = Instant::now();
        while !waiting.is_empty() && Instant::now() < deadline {
            // Newest first: our tasks are on the first pages.
            let mut cursor: Option<String> = None;
            let outstanding = waiting.len();
            let mut seen = 0;
            let (mut queued, mut on_nodes) = (0, 0);
            loop {
                let mut request =
                    self.http.get(format!("{}/v1/tasks", self.base)).bearer_auth(api_key).query(&[("limit", "500")]);
                if let Some(after) = &cursor {
                    request = request.query(&[("cursor", after)]);
                }
                let page = json_of(request).await?;
                for task in page["tasks"].as_array().into_iter().flatten() {
                    let Some(task_id) = task["task_id"].as_str() else { continue };
                    if !waiting.contains(task_id) {
                        continue;
                    }
                    seen += 1;
                    match task["status"].as_str() {
                        Some("completed") => completed += 1,
                        Some("failed" | "rejected" | "cancelled" | "quarantined") => unsuccessful += 1,
                        Some("queued") => {
                            queued += 1;
                            continue;
                        }
                        _ => {
                            on_nodes += 1;
                            continue;
                        }
                    }
                    waiting.remove(task_id);
                }
                cursor = page["next_cursor"].as_str().map(str::to_owned);
                if cursor.is_none() || seen >= outstanding {
                    break;
                }
            }
            if !waiting.is_empty() {
                info!(completed, waiting = waiting.len(), "progress");
                if last_told.elapsed() >= Duration::from_secs(5) {
                    last_told = Instant::now();
                    let seconds = clock.elapsed().as_secs();
                    progress(Progress { completed, unsuccessful, queued, on_nodes, seconds });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(LoadReport {
            submitted: count,
            completed,
            failed_or_rejected: unsuccessful,
            seconds: clock.elapsed().as_secs_f64(),
        })
    }

    /// Sixteen submissions in flight at a time, as a dashboard would send them; the task ids.
    async fn submit_one_by_one(
        &self,
        api_key: &str,
        count: usize,
        owners: &[uuid::Uuid],
    ) -> Result<HashSet<String>, ClientError> {
        let submissions = futures_util::stream::iter(0..count)
            .map(|index| {
                let request = self
                    .http
                    .post(format!("{}/v1/tasks", self.base))
                    .bearer_auth(api_key)
                    .json(&sample_task(index, owners));
                async move { json_of(request).await }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        let mut waiting = HashSet::with_capacity(count);
        for accepted in submissions {
            waiting.insert(accepted?["task_id"].as_str().unwrap_or_default().to_owned());
        }
        Ok(waiting)
    }

    /// Batches of `batch` tasks (`POST /v1/tasks/batch`), four in flight, each under its own
    /// `Idempotency-Key`; the task ids. A task the gateway refused is an error: samples are valid.
    async fn submit_in_batches(
        &self,
        api_key: &str,
        count: usize,
        batch: usize,
        owners: &[uuid::Uuid],
    ) -> Result<HashSet<String>, ClientError> {
        let chunks: Vec<Vec<Value>> = (0..count)
            .step_by(batch)
            .map(|first| (first..(first + batch).min(count)).map(|index| sample_task(index, owners)).collect())
            .collect();
        let answers = futures_util::stream::iter(chunks)
            .map(|tasks| {
                let request = self
                    .http
                    .post(format!("{}/v1/tasks/batch", self.base))
                    .bearer_auth(api_key)
                    .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                    .json(&json!({"tasks": tasks}));
                async move { json_of(request).await }
            })
            .buffer_unordered(4)
            .collect::<Vec<_>>()
            .await;
        let mut waiting = HashSet::with_capacity(count);
        for answer in answers {
            for item in answer?["items"].as_array().into_iter().flatten() {
                match item["task_id"].as_str() {
                    Some(task_id) => waiting.insert(task_id.to_owned()),
                    None => return Err(ClientError::Refused { status: 422, detail: item["problem"].to_string() }),
                };
            }
        }
        Ok(waiting)
    }
}

/// A sample task: a thermal simulation, or (one in four) a group optimisation over `owners`.
pub fn sample_task(index: usize, owners: &[uuid::Uuid]) -> Value {
    // Four minutes: a task waits for the sun at most one (three expected runtimes of margin).
    let deadline = (chrono::Utc::now() + chrono::Duration::minutes(4)).to_rfc3339();
    if index.is_multiple_of(4) {
        let participants: Vec<Value> = owners
            .iter()
            .enumerate()
            .map(|(rank, owner)| json!({"owner_id": owner, "readings_kwh": (0..12).map(|month| 220.0 + (rank * 9 + month * 17 % 60) as f64).collect::<Vec<_>>()}))
            .collect();
        json!({"copropriete_id": uuid::Uuid::new_v4(), "priority": index % 11, "deadline": deadline,
               "kind": {"type": "energy_group_optimisation", "building_id": uuid::Uuid::new_v4(), "simulation_months": 24,
                        "participants": participants}})
    } else {
        json!({"copropriete_id": uuid::Uuid::new_v4(), "priority": index % 11, "deadline": deadline,
               "kind": {"type": "building_thermal_simulation", "building_id": uuid::Uuid::new_v4(),
                        "insulation_score": (index % 10) as f64 / 10.0, "surface_m2": 50.0 + (index % 150) as f64,
                        "heating_degree_days": 2300.0 + (index % 7) as f64 * 50.0}})
    }
}
