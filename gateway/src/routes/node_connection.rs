//! One connection per node: a WebSocket that carries the node's task channel to it and its
//! heartbeats and reports back, in place of the channel's stream plus a request per heartbeat and
//! per report (those routes stay, for existing clients).
//!
//! Frames are JSON text. To the node: each channel entry as
//! `{"type": "TASK:ASSIGNED" | "TASK:CANCELLED", "id": "<stream id>", "data": {...}}` (the same
//! `id` and `data` as the channel's server-sent events), and an answer to each of its frames,
//! `{"type": "answer", "ref": <its ref>, "status": <HTTP status>, "body": {...}}` or
//! `{..., "problem": {...}}` (with `retry_after` in seconds for 429 and 503). From the node:
//! `{"type": "heartbeat", "ref": n, "heartbeat": <POST /v1/nodes/{id}/heartbeat's body>}` and
//! `{"type": "report", "ref": n, "report": <POST /v1/nodes/{id}/reports' body>,
//! "correlation_id"?: "<the assignment's>"}`. Each frame is admitted, checked and published as
//! its HTTP request would be, and answered in the order received.
//!
//! Resume: the connection starts after `Last-Event-ID` (a header, or `?last_event_id=` for
//! clients that cannot set headers), else at the node's oldest assignment in flight, exactly as
//! the task channel does; a node that reconnects with the last `id` it read loses nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use grid_shared::ids::NodeId;
use grid_shared::live::Heartbeat;
use grid_shared::wire::StreamEntryId;
use redis::streams::StreamId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::IntoParams;

use crate::auth::{Credential, NodeCaller};
use crate::channels::Subscription;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiPath, ApiQuery};
use crate::publish::{Stream as Target, origin_of, publish};
use crate::routes::nodes::{
    CommandAccepted, HeartbeatRequest, HeartbeatResponse, ReportRequest, catch_up, channel_event, parse_report,
    record_heartbeat, resume_point,
};
use crate::state::AppState;

/// Read buffer per connection: a node's frames are small (a heartbeat about 150 bytes; a report's
/// result at most what the body limit allows, read in several reads). Tungstenite's default,
/// 128 KiB, would cost a thousand nodes 128 MiB; 4 KiB cost them 4 MiB.
const READ_BUFFER_BYTES: usize = 1024;
/// A ping this often keeps proxies from closing an idle connection, and finds a dead peer.
const PING_EVERY: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResumeQuery {
    /// Resume after this stream id, for clients that cannot send a `Last-Event-ID` header.
    pub last_event_id: Option<String>,
}

/// A frame from the node.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum NodeFrame {
    Heartbeat {
        #[serde(rename = "ref")]
        reference: u64,
        heartbeat: HeartbeatRequest,
    },
    Report {
        #[serde(rename = "ref")]
        reference: u64,
        report: ReportRequest,
        #[serde(default)]
        correlation_id: Option<uuid::Uuid>,
    },
}

/// The answer to a node's frame: its HTTP request's status, and its body or its problem.
#[derive(Debug, Serialize)]
struct Answer {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref")]
    reference: Option<u64>,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<Problem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

impl Answer {
    fn ok(reference: u64, status: u16, body: impl Serialize) -> Self {
        let body = serde_json::to_value(body).ok();
        Self { kind: "answer", reference: Some(reference), status, body, problem: None, retry_after: None }
    }

    fn refused(reference: Option<u64>, error: &ApiError) -> Self {
        let problem = error.problem();
        let retry_after = match error {
            ApiError::RateLimited { retry_after_seconds } => Some(*retry_after_seconds),
            ApiError::Unavailable(_) | ApiError::Timeout | ApiError::Overloaded | ApiError::Backlogged => Some(1),
            _ => None,
        };
        Self { kind: "answer", reference, status: problem.status, body: None, problem: Some(problem), retry_after }
    }
}

#[utoipa::path(get, path = "/v1/nodes/{node_id}/connection", tag = "nodes",
    description = "One connection per node (WebSocket, `Upgrade: websocket`, the node's token as a bearer): the task \
        channel's entries to the node as `{type, id, data}` text frames, its heartbeats \
        (`{\"type\": \"heartbeat\", \"ref\": n, \"heartbeat\": {...}}`) and reports \
        (`{\"type\": \"report\", \"ref\": n, \"report\": {...}, \"correlation_id\"?}`) back, each answered \
        `{\"type\": \"answer\", \"ref\": n, \"status\", \"body\" | \"problem\", \"retry_after\"?}` as its HTTP route \
        would answer it. Resumes after `Last-Event-ID` (header, or `last_event_id` in the query) exactly as \
        `GET /v1/nodes/{node_id}/tasks`. See the README's Node protocol.",
    params(("node_id" = uuid::Uuid, Path, description = "The node"),
           ("Last-Event-ID" = Option<String>, Header, description = "Resume after this stream id"),
           ResumeQuery),
    security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not this token's node", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        (status = 426, description = "Not a WebSocket upgrade request", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn node_connection(
    State(state): State<AppState>,
    caller: Credential,
    headers: HeaderMap,
    ApiPath(node_id): ApiPath<uuid::Uuid>,
    ApiQuery(query): ApiQuery<ResumeQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let node = caller.node(NodeId(node_id))?;
    let upgrade = upgrade.map_err(|rejection| ApiError::UpgradeRequired(rejection.body_text()))?;
    let permit = state.stream_permit()?;
    let from_query = query
        .last_event_id
        .map(|text| HeaderValue::from_str(&text).map_err(|_| ApiError::field("last_event_id", "is not a stream id")))
        .transpose()?;
    let start = resume_point(&state, &node, headers.get("last-event-id").or(from_query.as_ref())).await?;
    // Registered before the catch-up read: an entry appended meanwhile comes through the reader.
    let subscription = state.channels.subscribe(node.node_id);
    let backlog = catch_up(&state, &node, start).await?;
    let max_frame = state.config.max_body_bytes;
    Ok(upgrade.read_buffer_size(READ_BUFFER_BYTES).write_buffer_size(0).max_message_size(max_frame).on_upgrade(
        // Boxed: axum's upgrade task would otherwise hold this future inline beside its own.
        move |socket| {
            Box::pin(async move {
                let connection = Connection { state, caller, node, socket, sent: start };
                connection.serve(backlog, subscription).await;
                drop(permit);
            })
        },
    ))
}

struct Connection {
    state: AppState,
    caller: Credential,
    node: NodeCaller,
    socket: WebSocket,
    /// The newest channel entry sent (the reader may hand over what the catch-up read had).
    sent: StreamEntryId,
}

/// Why a connection ends.
enum End {
    /// The node closed it, or it broke.
    Gone,
    /// The node fell behind its channel, or the reader lost it: it reconnects and resumes.
    Resume,
    /// Its token no longer admits it.
    Refused,
}

impl Connection {
    async fn serve(mut self, mut backlog: VecDeque<Arc<StreamId>>, mut live: Subscription) {
        let node_id = self.node.node_id;
        tracing::debug!(%node_id, "node connected");
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        let end = loop {
            if let Some(entry) = backlog.pop_front() {
                if !self.send_entry(&entry).await {
                    break End::Gone;
                }
                continue;
            }
            tokio::select! {
                entry = live.entries.recv() => match entry {
                    Some(entry) => if !self.send_entry(&entry).await { break End::Gone },
                    None => break End::Resume,
                },
                frame = self.socket.recv() => match frame {
                    // Boxed: a frame's handling (its Redis scripts' futures) would otherwise be
                    // inline in every idle connection's task, 9.5 KB of it, not 1.7.
                    Some(Ok(Message::Text(text))) => match Box::pin(self.answer(text.as_str())).await {
                        Ok(()) => {}
                        Err(end) => break end,
                    },
                    Some(Ok(Message::Binary(_))) => {
                        let error = ApiError::MalformedBody("frames are JSON text".to_owned());
                        if !self.send(&Answer::refused(None, &error)).await { break End::Gone }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break End::Gone,
                },
                _ = ping.tick() => {
                    if self.socket.send(Message::Ping(Default::default())).await.is_err() { break End::Gone }
                }
            }
        };
        let reason = match end {
            End::Gone => None,
            End::Resume => Some((1012, "resume from your last id")),
            End::Refused => Some((1008, "the token is not admitted")),
        };
        if let Some((code, reason)) = reason {
            let frame = axum::extract::ws::CloseFrame { code, reason: reason.into() };
            let _ = self.socket.send(Message::Close(Some(frame))).await;
        }
        tracing::debug!(%node_id, "node disconnected");
    }

    async fn send(&mut self, answer: &Answer) -> bool {
        let text = serde_json::to_string(answer).unwrap_or_default();
        self.socket.send(Message::Text(text.into())).await.is_ok()
    }

    async fn send_entry(&mut self, entry: &StreamId) -> bool {
        let Some(id) = StreamEntryId::parse(&entry.id) else { return true };
        if id <= self.sent {
            return true;
        }
        self.sent = id;
        let Some((message_type, data)) = channel_event(entry) else { return true };
        let frame = json!({"type": message_type, "id": entry.id, "data": data});
        self.socket.send(Message::Text(frame.to_string().into())).await.is_ok()
    }

    /// Handles one frame of the node and sends its answer; a refused token ends the connection.
    async fn answer(&mut self, text: &str) -> Result<(), End> {
        let started = std::time::Instant::now();
        let (kind, answer) = match serde_json::from_str::<NodeFrame>(text) {
            Err(error) => {
                let reference = serde_json::from_str::<Value>(text).ok().and_then(|frame| frame["ref"].as_u64());
                ("unreadable", Answer::refused(reference, &ApiError::InvalidBody(error.to_string())))
            }
            Ok(NodeFrame::Heartbeat { reference, heartbeat }) => {
                let answer = match beat(&self.state, &self.caller, &self.node, heartbeat).await {
                    Ok(response) => Answer::ok(reference, 200, response),
                    Err(error) => Answer::refused(Some(reference), &error),
                };
                ("heartbeat", answer)
            }
            Ok(NodeFrame::Report { reference, report, correlation_id }) => {
                let answer = match publish_report(&self.state, &self.caller, &self.node, report, correlation_id).await {
                    Ok(accepted) => Answer::ok(reference, 202, accepted),
                    Err(error) => Answer::refused(Some(reference), &error),
                };
                ("report", answer)
            }
        };
        let metrics = &self.state.metrics;
        let status = answer.status.to_string();
        metrics.counter("grid_node_frames_total", &[("type", kind), ("status", &status)]).increment(1);
        metrics
            .histogram("grid_node_frame_duration_seconds", &[("type", kind)])
            .record(started.elapsed().as_secs_f64());
        let refused = answer.status == 401;
        if !self.send(&answer).await {
            return Err(End::Gone);
        }
        if refused { Err(End::Refused) } else { Ok(()) }
    }
}

/// A heartbeat frame, recorded as `POST /v1/nodes/{id}/heartbeat` records it.
async fn beat(
    state: &AppState,
    caller: &Credential,
    node: &NodeCaller,
    request: HeartbeatRequest,
) -> Result<HeartbeatResponse, ApiError> {
    let heartbeat = Heartbeat::parse(request.cpu_usage, request.solar_watts)?;
    let eco_score = record_heartbeat(state, caller, node, heartbeat, request.running.unwrap_or(0)).await?;
    Ok(HeartbeatResponse { node_id: node.node_id.as_uuid(), eco_score })
}

/// A report frame, published as `POST /v1/nodes/{id}/reports` publishes it.
async fn publish_report(
    state: &AppState,
    caller: &Credential,
    node: &NodeCaller,
    request: ReportRequest,
    correlation_id: Option<uuid::Uuid>,
) -> Result<CommandAccepted, ApiError> {
    let report = parse_report(node.node_id, request)?;
    let origin = origin_of(caller, correlation_id.unwrap_or_else(uuid::Uuid::new_v4));
    let command_id = publish(state, state.node_cell(node), Target::Reports, caller, origin, &report).await?;
    Ok(CommandAccepted { command_id: command_id.as_uuid() })
}
