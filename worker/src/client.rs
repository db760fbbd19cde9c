//! HTTP to the gateway: the worker's only way out (no PostgreSQL, no Redis).

use std::time::Duration;

use futures_util::StreamExt;
use grid_shared::ids::NodeId;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::sse::{SseEvent, SseParser};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a registration is offered to a gateway that answers 503.
const REGISTRATION_TRIES: u32 = 30;

/// A 503's `Retry-After` (seconds), one second when absent, at most a minute.
fn retry_after(response: &reqwest::Response) -> Duration {
    let seconds = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(seconds.clamp(1, 60))
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The gateway does not know the token yet (registration not applied) or at all.
    #[error("the gateway refused the credentials ({0})")]
    Unauthorized(u16),
    #[error("the gateway answered {status}: {detail}")]
    Refused { status: u16, detail: String },
}

/// What `POST /v1/nodes` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub node_id: NodeId,
    pub token: String,
    pub command_id: uuid::Uuid,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeDeclaration {
    pub name: String,
    pub cpu_cores: u16,
    pub has_solar: bool,
    pub location: String,
}

/// A report, in the gateway's `POST /v1/nodes/{id}/reports` shape.
#[derive(Debug, Clone, Serialize)]
pub struct ReportBody {
    pub task_id: uuid::Uuid,
    pub attempt: i32,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_json: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_used_wh: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solar_contribution_wh: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base: String,
}

async fn checked(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(ClientError::Unauthorized(status.as_u16()));
    }
    let detail = response.text().await.unwrap_or_default();
    Err(ClientError::Refused { status: status.as_u16(), detail })
}

impl GatewayClient {
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned() })
    }

    /// Registers a node. A gateway at capacity answers 503 before doing anything: the request
    /// is sent again after its `Retry-After`, up to [`REGISTRATION_TRIES`] times.
    pub async fn register(&self, api_key: &str, node: &NodeDeclaration) -> Result<Registration, ClientError> {
        let mut tries = 1;
        loop {
            let response = self
                .http
                .post(format!("{}/v1/nodes", self.base))
                .bearer_auth(api_key)
                .timeout(REQUEST_TIMEOUT)
                .json(node)
                .send()
                .await?;
            if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE && tries < REGISTRATION_TRIES {
                tokio::time::sleep(retry_after(&response)).await;
                tries += 1;
                continue;
            }
            return Ok(checked(response).await?.json().await?);
        }
    }

    /// Sends live state; answers the eco score.
    pub async fn heartbeat(
        &self,
        node_id: NodeId,
        token: &str,
        cpu_usage: f64,
        solar_watts: f64,
        running: u32,
    ) -> Result<f64, ClientError> {
        let response = self
            .http
            .post(format!("{}/v1/nodes/{node_id}/heartbeat", self.base))
            .bearer_auth(token)
            .timeout(REQUEST_TIMEOUT)
            .json(&json!({"cpu_usage": cpu_usage, "solar_watts": solar_watts, "running": running}))
            .send()
            .await?;
        let body: serde_json::Value = checked(response).await?.json().await?;
        Ok(body["eco_score"].as_f64().unwrap_or(0.0))
    }

    /// Sends a report; `correlation_id` (from the assignment) lets the gateway keep the task's
    /// correlation id on the report.
    pub async fn report(
        &self,
        node_id: NodeId,
        token: &str,
        report: &ReportBody,
        correlation_id: Option<uuid::Uuid>,
    ) -> Result<(), ClientError> {
        let mut request = self
            .http
            .post(format!("{}/v1/nodes/{node_id}/reports", self.base))
            .bearer_auth(token)
            .timeout(REQUEST_TIMEOUT);
        if let Some(correlation_id) = correlation_id {
            request = request.header("x-request-id", correlation_id.to_string());
        }
        let response = request.json(report).send().await?;
        checked(response).await?;
        Ok(())
    }

    /// Opens the task channel, resuming after `last_event_id`, and calls `on_event` for each
    /// event until the stream ends or fails.
    pub async fn follow_tasks(
        &self,
        node_id: NodeId,
        token: &str,
        last_event_id: Option<&str>,
        mut on_event: impl FnMut(SseEvent),
    ) -> Result<(), ClientError> {
        let mut request = self.http.get(format!("{}/v1/nodes/{node_id}/tasks", self.base)).bearer_auth(token);
        if let Some(last) = last_event_id {
            request = request.header("Last-Event-ID", last);
        }
        let response = checked(request.send().await?).await?;
        let mut body = response.bytes_stream();
        let mut parser = SseParser::default();
        while let Some(chunk) = body.next().await {
            for event in parser.feed(&chunk?) {
                on_event(event);
            }
        }
        Ok(())
    }
}
