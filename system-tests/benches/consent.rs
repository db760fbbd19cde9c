//! `just bench-consent`: from `DELETE /v1/owners/{id}/consent` to the node running the owner's
//! task receiving `TASK:CANCELLED`, over a real gateway and orchestrator (in this process) on
//! PostgreSQL and Redis. A report, not a test.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use grid_worker::sse::{SseEvent, SseParser};
use serde_json::{Value, json};

#[path = "support/mod.rs"]
mod support;

use support::{Running, Scratch, percentile, poll};

const ROUNDS: usize = 30;

struct Channel {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
}

impl Channel {
    async fn next_of(&mut self, kind: &str) -> anyhow::Result<SseEvent> {
        loop {
            while let Some(event) = self.ready.pop_front() {
                if event.event.as_deref() == Some(kind) {
                    return Ok(event);
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.body.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the task channel closed"))??;
            self.ready.extend(self.parser.feed(&chunk));
        }
    }
}

async fn run() -> anyhow::Result<Value> {
    let scratch = Scratch::new("consent").await?;
    let running = Running::start(&scratch, &[]).await?;
    let (base, http, api_key) = (running.base.clone(), running.http.clone(), running.api_key.clone());
    let node: Value = http
        .post(format!("{base}/v1/nodes"))
        .bearer_auth(&api_key)
        .json(&json!({"name": "bench", "cpu_cores": 4, "has_solar": true, "location": "Bench"}))
        .send()
        .await?
        .json()
        .await?;
    let node_id = node["node_id"].as_str().unwrap_or_default().to_owned();
    let token = node["token"].as_str().unwrap_or_default().to_owned();
    let heartbeat_url = format!("{base}/v1/nodes/{node_id}/heartbeat");
    poll("the node", || async {
        let response = http
            .post(&heartbeat_url)
            .bearer_auth(&token)
            .json(&json!({"cpu_usage": 1.0, "solar_watts": 300.0}))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let beats = {
        let (http, url, token) = (http.clone(), heartbeat_url.clone(), token.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            loop {
                every.tick().await;
                let _ = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"cpu_usage": 1.0, "solar_watts": 300.0}))
                    .send()
                    .await;
            }
        })
    };
    let response = http.get(format!("{base}/v1/nodes/{node_id}/tasks")).bearer_auth(&token).send().await?;
    let mut channel =
        Channel { body: Box::pin(response.bytes_stream()), parser: SseParser::default(), ready: VecDeque::new() };

    let mut latencies = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let owners: Vec<uuid::Uuid> = (0..5).map(|_| uuid::Uuid::new_v4()).collect();
        for owner in &owners {
            let granted: Value = http
                .put(format!("{base}/v1/owners/{owner}/consent"))
                .bearer_auth(&api_key)
                .json(&json!({"consent_version": "bench"}))
                .send()
                .await?
                .json()
                .await?;
            let command = granted["command_id"].as_str().unwrap_or_default().to_owned();
            poll("the grant", || async {
                let view: Value = http
                    .get(format!("{base}/v1/commands/{command}"))
                    .bearer_auth(&api_key)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (view["status"] == "applied").then_some(())
            })
            .await;
        }
        let participants: Vec<Value> =
            owners.iter().map(|owner| json!({"owner_id": owner, "readings_kwh": [310.0, 290.5, 275.0]})).collect();
        let task = json!({"copropriete_id": uuid::Uuid::new_v4(), "deadline": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
            "kind": {"type": "energy_group_optimisation", "building_id": uuid::Uuid::new_v4(), "simulation_months": 12, "participants": participants}});
        let submitted: Value =
            http.post(format!("{base}/v1/tasks")).bearer_auth(&api_key).json(&task).send().await?.json().await?;
        let task_id = submitted["task_id"].as_str().unwrap_or_default().to_owned();
        let assigned = channel.next_of("TASK:ASSIGNED").await?;
        anyhow::ensure!(assigned.data.contains(&task_id), "an unexpected assignment");
        http.post(format!("{base}/v1/nodes/{node_id}/reports"))
            .bearer_auth(&token)
            .json(&json!({"task_id": task_id, "attempt": 1, "status": "started"}))
            .send()
            .await?;
        let clock = Instant::now();
        http.delete(format!("{base}/v1/owners/{}/consent", owners[0])).bearer_auth(&api_key).send().await?;
        let cancelled = channel.next_of("TASK:CANCELLED").await?;
        latencies.push(clock.elapsed());
        anyhow::ensure!(cancelled.data.contains(&task_id), "an unexpected cancellation");
    }
    beats.abort();
    running.stop().await;
    scratch.remove().await?;
    latencies.sort();
    println!("## From a consent revocation to the node told ({ROUNDS} revocations of a running task)\n");
    println!("| figure | value |\n|---|---|");
    println!("| p50 | {:?} |", percentile(&latencies, 0.5));
    println!("| p99 | {:?} |", percentile(&latencies, 0.99));
    println!("| max | {:?} |\n", latencies.last().copied().unwrap_or_default());
    Ok(json!({
        "rounds": ROUNDS,
        "revocation_to_node_ms": latencies.iter().map(|latency| latency.as_secs_f64() * 1e3).collect::<Vec<_>>(),
        "p50_ms": percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        "p99_ms": percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    }))
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(run())?;
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&directory)?;
    std::fs::write(directory.join("consent.json"), serde_json::to_string_pretty(&report)?)?;
    println!("(written to target/bench/consent.json)");
    Ok(())
}
