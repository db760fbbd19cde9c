//! The node's one connection to the gateway (`GET /v1/nodes/{id}/connection`, a WebSocket): its
//! task channel comes down it, and its heartbeats and reports go up it, each answered as its
//! HTTP request would be (the README's Node protocol). [`Link`] is the agent's handle for
//! sending; [`run`] drives one connection until it ends, and the agent opens the next one
//! after the last entry id it read, as it does with the task channel's `Last-Event-ID`.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use grid_shared::ids::NodeId;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::client::{ClientError, ReportBody};
use crate::sse::SseEvent;

/// How long a heartbeat or a report waits for its answer, connection included.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames waiting to be sent while the connection is down (heartbeats and reports).
const QUEUE: usize = 64;

/// A frame to send, and where its answer goes.
pub struct Request {
    frame: Value,
    answer: oneshot::Sender<Result<Value, ClientError>>,
}

/// The agent's handle on its connection: each call sends one frame and waits for its answer.
#[derive(Clone)]
pub struct Link {
    requests: mpsc::Sender<Request>,
}

impl Link {
    /// A link, and the queue [`run`] takes its frames from (kept across reconnections).
    pub fn new() -> (Self, mpsc::Receiver<Request>) {
        let (requests, queue) = mpsc::channel(QUEUE);
        (Self { requests }, queue)
    }

    async fn ask(&self, frame: Value) -> Result<Value, ClientError> {
        let (answer, answered) = oneshot::channel();
        let asked = async {
            self.requests.send(Request { frame, answer }).await.map_err(|_| lost("the agent is stopping"))?;
            answered.await.map_err(|_| lost("the connection closed before answering"))?
        };
        tokio::time::timeout(ANSWER_TIMEOUT, asked).await.map_err(|_| lost("no answer in time"))?
    }

    /// Sends live state; answers the eco score.
    pub async fn heartbeat(&self, cpu_usage: f64, solar_watts: f64, running: u32) -> Result<f64, ClientError> {
        let heartbeat = json!({"cpu_usage": cpu_usage, "solar_watts": solar_watts, "running": running});
        let body = self.ask(json!({"type": "heartbeat", "heartbeat": heartbeat})).await?;
        Ok(body["eco_score"].as_f64().unwrap_or(0.0))
    }

    /// Sends a report, with the correlation id of its assignment.
    pub async fn report(&self, report: &ReportBody, correlation_id: Option<uuid::Uuid>) -> Result<(), ClientError> {
        let mut frame = json!({"type": "report", "report": report});
        if let Some(correlation_id) = correlation_id {
            frame["correlation_id"] = json!(correlation_id);
        }
        self.ask(frame).await.map(drop)
    }
}

fn lost(why: &str) -> ClientError {
    ClientError::Connection(why.to_owned())
}

/// The connection's address: the gateway's, `http` becoming `ws`.
fn address(gateway: &str, node_id: NodeId) -> Result<String, ClientError> {
    let rest = gateway
        .strip_prefix("http://")
        .ok_or_else(|| lost("the node's connection needs an http:// gateway address (no TLS in this build)"))?;
    Ok(format!("ws://{}/v1/nodes/{node_id}/connection", rest.trim_end_matches('/')))
}

/// What a refused handshake means to the agent, as for an HTTP answer.
fn refusal(response: &tungstenite::http::Response<Option<Vec<u8>>>) -> ClientError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
        .unwrap_or(1);
    answer_error(status, retry_after, String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into())
}

fn answer_error(status: u16, retry_after: u64, detail: String) -> ClientError {
    match status {
        401 => ClientError::Unauthorized(status),
        429 | 503 => ClientError::Busy { status, retry_after: Duration::from_secs(retry_after.clamp(1, 60)) },
        _ => ClientError::Refused { status, detail },
    }
}

/// Opens the node's connection (resuming after `last_event_id`), then sends the frames of
/// `queue` and hands each channel entry to `on_event` (as the task channel's event: `id`, type,
/// `data`), until the gateway closes it or it fails. Frames still unanswered then fail.
pub async fn run(
    gateway: &str,
    node_id: NodeId,
    token: &str,
    last_event_id: Option<&str>,
    queue: &mut mpsc::Receiver<Request>,
    mut on_event: impl FnMut(SseEvent),
) -> Result<(), ClientError> {
    let mut request = address(gateway, node_id)?.into_client_request().map_err(|error| lost(&error.to_string()))?;
    let headers = request.headers_mut();
    let bearer = format!("Bearer {token}").parse().map_err(|_| lost("the token is not a header value"))?;
    headers.insert("authorization", bearer);
    if let Some(last) = last_event_id {
        headers.insert("last-event-id", last.parse().map_err(|_| lost("the last event id is not a header value"))?);
    }
    // Small buffers: a node's frames are small, and a Pi's memory is not.
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(0);
    let (mut socket, _) = match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
        Ok(connected) => connected,
        Err(tungstenite::Error::Http(response)) => return Err(refusal(&response)),
        Err(error) => return Err(lost(&error.to_string())),
    };
    let mut pending: HashMap<u64, oneshot::Sender<Result<Value, ClientError>>> = HashMap::new();
    let mut next_ref: u64 = 1;
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                        tracing::warn!("an unreadable frame from the gateway");
                        continue;
                    };
                    if frame["type"] == "answer" {
                        let Some(waiting) = frame["ref"].as_u64().and_then(|reference| pending.remove(&reference)) else {
                            tracing::warn!(%frame, "the gateway refused a frame it could not tie to a request");
                            continue;
                        };
                        let _ = waiting.send(answered(frame));
                    } else {
                        on_event(SseEvent {
                            id: frame["id"].as_str().map(str::to_owned),
                            event: frame["type"].as_str().map(str::to_owned),
                            data: frame["data"].to_string(),
                        });
                    }
                }
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(lost(&error.to_string())),
            },
            request = queue.recv() => {
                let Some(Request { mut frame, answer }) = request else { return Ok(()) };
                frame["ref"] = json!(next_ref);
                pending.insert(next_ref, answer);
                next_ref += 1;
                if let Err(error) = socket.send(Message::Text(frame.to_string().into())).await {
                    return Err(lost(&error.to_string()));
                }
            }
        }
    }
}

/// An answer frame as the asker's result: its body, or its refusal.
fn answered(frame: Value) -> Result<Value, ClientError> {
    let status = frame["status"].as_u64().and_then(|status| u16::try_from(status).ok()).unwrap_or(0);
    if (200..300).contains(&status) {
        return Ok(frame["body"].clone());
    }
    let detail = frame["problem"]["detail"].as_str().unwrap_or_default().to_owned();
    Err(answer_error(status, frame["retry_after"].as_u64().unwrap_or(1), detail))
}
