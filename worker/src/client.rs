//! HTTP to the gateway: the worker's only way out (no PostgreSQL, no Redis).

use std::time::Duration;

use futures_util::StreamExt;
use grid_shared::ids::NodeId;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::sse::{SseEvent, SseParser};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a request is offered to a gateway that answers it busy (503 at capacity,
/// 429 over the rate), each time after its `Retry-After`: about half a minute of refusals.
pub const BUSY_TRIES: u32 = 30;

/// A busy answer's `Retry-After` (seconds), one second when absent, at most a minute.
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
    /// The gateway is at capacity (503) or the credential over its rate (429): the request may
    /// be sent again after `retry_after`.
    #[error("the gateway is busy ({status}); it asks to come back after {}s", retry_after.as_secs())]
    Busy { status: u16, retry_after: Duration },
    #[error("the gateway answered {status}: {detail}")]
    Refused { status: u16, detail: String },
    /// The node's connection (a WebSocket) could not be opened, or was lost before an answer.
    #[error("the node's connection: {0}")]
    Connection(String),
}

impl ClientError {
    /// How long to wait before sending again, when the gateway said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Sends `request`, and again after each busy answer's `Retry-After` (503, 429), at most
/// `tries` times in all; answers the first other response, checked. A refused burst is slowed,
/// never fatal (unless the gateway stays busy for all of it).
pub async fn send_patiently(request: reqwest::RequestBuilder, tries: u32) -> Result<reqwest::Response, ClientError> {
    let mut tried = 1;
    loop {
        let attempt = request.try_clone().ok_or(ClientError::Refused {
            status: 0,
            detail: "a request with a streamed body cannot be sent again".to_owned(),
        })?;
        match checked(attempt.send().await?).await {
            Err(ClientError::Busy { retry_after, .. }) if tried < tries => {
                tracing::debug!(?retry_after, tried, "the gateway is busy; sending again after its Retry-After");
                tokio::time::sleep(retry_after).await;
                tried += 1;
            }
            answered => return answered,
        }
    }
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
    /// The carbon zone of its electricity (one of the grid's `GRID_ZONES`); absent, the
    /// grid's default zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The cell the node joins (`GET /v1/cells`); absent, the grid's choice (its zone's cell,
    /// else the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
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

/// The response when successful, else its refusal.
pub async fn checked(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(ClientError::Unauthorized(status.as_u16()));
    }
    if matches!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE | reqwest::StatusCode::TOO_MANY_REQUESTS) {
        return Err(ClientError::Busy { status: status.as_u16(), retry_after: retry_after(&response) });
    }
    let detail = response.text().await.unwrap_or_default();
    Err(ClientError::Refused { status: status.as_u16(), detail })
}

impl GatewayClient {
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned() })
    }

    /// The gateway's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Registers a node. A gateway at capacity answers 503 before doing anything: the request
    /// is sent again after its `Retry-After`, up to [`BUSY_TRIES`] times.
    pub async fn register(&self, api_key: &str, node: &NodeDeclaration) -> Result<Registration, ClientError> {
        let request =
            self.http.post(format!("{}/v1/nodes", self.base)).bearer_auth(api_key).timeout(REQUEST_TIMEOUT).json(node);
        Ok(send_patiently(request, BUSY_TRIES).await?.json().await?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers each connection's request with the next of `answers`.
    async fn answering(answers: Vec<&'static str>) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut served = 0;
            for answer in answers {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = [0_u8; 4096];
                let _ = stream.read(&mut request).await.unwrap();
                stream.write_all(answer.as_bytes()).await.unwrap();
                stream.shutdown().await.unwrap();
                served += 1;
            }
            served
        });
        (base, server)
    }

    const BUSY: &str =
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    const ACCEPTED: &str = "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}";

    #[tokio::test]
    async fn a_busy_gateway_is_asked_again_after_its_retry_after() {
        let (base, server) = answering(vec![BUSY, ACCEPTED]).await;
        let started = std::time::Instant::now();
        let request = reqwest::Client::new().post(format!("{base}/v1/tasks")).json(&json!({"a": 1}));
        let response = send_patiently(request, 5).await.unwrap();
        assert_eq!(response.status(), 202);
        assert!(started.elapsed() >= Duration::from_secs(1), "waited the Retry-After");
        assert_eq!(server.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_gateway_busy_for_every_try_is_an_error_that_says_when_to_come_back() {
        let (base, server) = answering(vec![BUSY, BUSY]).await;
        let request = reqwest::Client::new().get(format!("{base}/v1/tasks"));
        let error = send_patiently(request, 2).await.unwrap_err();
        assert_eq!(error.retry_after(), Some(Duration::from_secs(1)), "{error}");
        assert_eq!(server.await.unwrap(), 2);
    }
}
