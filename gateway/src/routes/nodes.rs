//! Nodes: registration (organisation), heartbeats, the task channel and reports (the node
//! itself), and the read model of nodes with their live state and totals.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use grid_shared::carbon::MicroWattHours;
use grid_shared::cells::CellName;
use grid_shared::domain::{FieldError, NodeSpec};
use grid_shared::envelope::Envelope;
use grid_shared::ids::{NodeId, TaskId};
use grid_shared::live::{Heartbeat, HeartbeatEntry, eco_score};
use grid_shared::messages::{
    Command, RegisterNode, Report, Sha256Hex, TaskCompletedReport, TaskFailedReport, TaskStartedReport,
};
use grid_shared::signals::Zone;
use grid_shared::wire::scripts;
use grid_shared::wire::{HEARTBEAT_FEED_MAXLEN, StreamEntryId, fields};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Caller, Credential, NODE_TOKEN_PREFIX, NodeCaller, admission, new_secret};
use crate::channels::read_after;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiPath};
use crate::publish::{Stream as Target, correlation_id, origin_of, publish};
use crate::read_model::nodes::{NodeView, list_nodes};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/nodes", post(register_node).get(get_nodes))
        .route("/v1/nodes/{node_id}", get(get_node))
        .route("/v1/nodes/{node_id}/heartbeat", post(heartbeat))
        .route("/v1/nodes/{node_id}/reports", post(report))
}

/// The task channel is a stream: it is kept out of the request timeout.
pub fn streaming_router() -> Router<AppState> {
    Router::new()
        .route("/v1/nodes/{node_id}/tasks", get(task_channel))
        .route("/v1/nodes/{node_id}/connection", get(crate::routes::node_connection::node_connection))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterNodeRequest {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// 1 to 256.
    #[schema(minimum = 1, maximum = 256)]
    pub cpu_cores: i64,
    pub has_solar: bool,
    #[schema(min_length = 1, max_length = 100)]
    pub location: String,
    /// The node's carbon zone, an Electricity Maps zone id (`BE`, `FR`, `DE`, ...): its credits
    /// use that zone's grid intensity at the hour of the work. One of the zones the grid knows
    /// (`GRID_ZONES`); absent, the grid's default zone (`GRID_DEFAULT_ZONE`, `BE`).
    #[serde(default)]
    #[schema(example = "BE", pattern = "^[A-Z][A-Z0-9-]{0,31}$")]
    pub zone: Option<String>,
    /// What making the node emitted, in g CO₂e (1 to 10,000,000), from its maker's product carbon
    /// footprint: its share goes into each task's SCI. Absent: the grid's default for a Raspberry
    /// Pi (`GRID_EMBODIED_KG_CO2E`, 10 kg, an estimate; see the README).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000000, example = 10000)]
    pub embodied_g_co2e: Option<i64>,
    /// The cell the node joins (one of `GET /v1/cells`): only that cell's writer places work on
    /// it. Absent: the cell of its zone, else the grid's default cell.
    #[serde(default)]
    #[schema(example = "main", pattern = "^[a-z0-9][a-z0-9-]{0,31}$")]
    pub cell: Option<String>,
}

/// A cell a request names, checked against the grid's cells (`GRID_CELLS`).
pub fn known_cell(state: &AppState, requested: &str) -> Result<CellName, ApiError> {
    let cells = &state.config.grid.cells;
    let known = || cells.iter().map(|cell| cell.name.as_str()).collect::<Vec<_>>().join(", ");
    CellName::parse(requested)
        .ok()
        .filter(|cell| cells.get(cell).is_some())
        .ok_or_else(|| FieldError::new("cell", format!("the grid's cells are {}", known())).into())
}

/// The cell a read names (each cell has its own event sequence and proof chain), else the
/// grid's default cell.
pub fn cell_or_default(state: &AppState, requested: Option<&str>) -> Result<CellName, ApiError> {
    match requested {
        Some(requested) => known_cell(state, requested),
        None => Ok(state.default_cell().clone()),
    }
}

/// The cell of a node: the one it names, else the first cell of its zone, else the default.
pub fn registration_cell(state: &AppState, requested: Option<&str>, zone: &Zone) -> Result<CellName, ApiError> {
    let cells = &state.config.grid.cells;
    match requested {
        Some(requested) => known_cell(state, requested),
        None => Ok(cells.iter().find(|cell| &cell.zone == zone).unwrap_or(cells.default_cell()).name.clone()),
    }
}

/// The zone a registration names, checked against the zones the grid knows, or the default.
pub fn registration_zone(state: &AppState, requested: Option<&str>) -> Result<Zone, ApiError> {
    let grid = &state.config.grid;
    let Some(requested) = requested else { return Ok(grid.default_zone.clone()) };
    let zone = Zone::parse(requested)?;
    if !grid.zones.contains(&zone) {
        let known: Vec<&str> = grid.zones.iter().map(Zone::as_str).collect();
        return Err(FieldError::new("zone", format!("the grid knows the zones {}", known.join(", "))).into());
    }
    Ok(zone)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisterNodeResponse {
    pub node_id: uuid::Uuid,
    /// Shown once: only its SHA-256 is kept. Usable once the command is applied.
    pub token: String,
    pub command_id: uuid::Uuid,
}

/// Publishes `CMD:REGISTER_NODE` for the calling organisation; answers the id and the token.
pub async fn register(
    state: &AppState,
    caller: &Credential,
    headers: &HeaderMap,
    request: &RegisterNodeRequest,
) -> Result<RegisterNodeResponse, ApiError> {
    caller.organization()?;
    let zone = registration_zone(state, request.zone.as_deref())?;
    let cell = registration_cell(state, request.cell.as_deref(), &zone)?;
    let mut spec = NodeSpec::parse(&request.name, request.cpu_cores, request.has_solar, &request.location)?
        .in_zone(zone)
        .in_cell(cell.clone());
    if let Some(grams) = request.embodied_g_co2e {
        spec = spec.with_embodied(grams)?;
    }
    let node_id = NodeId::new();
    let token = new_secret(NODE_TOKEN_PREFIX);
    let command = Command::RegisterNode(RegisterNode { node_id, spec, token_hash: Sha256Hex::of_secret(&token) });
    let command_id =
        publish(state, &cell, Target::Commands, caller, origin_of(caller, correlation_id(headers)), &command).await?;
    Ok(RegisterNodeResponse { node_id: node_id.as_uuid(), token, command_id: command_id.as_uuid() })
}

#[utoipa::path(post, path = "/v1/nodes", tag = "nodes", request_body = RegisterNodeRequest, security(("bearer" = [])),
    responses(
        (status = 202, description = "Registration accepted", body = RegisterNodeResponse),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an organisation key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn register_node(
    State(state): State<AppState>,
    caller: Credential,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RegisterNodeRequest>,
) -> Result<(StatusCode, Json<RegisterNodeResponse>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(register(&state, &caller, &headers, &request).await?)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// CPU usage in percent, 0 to 100.
    #[schema(minimum = 0, maximum = 100)]
    pub cpu_usage: f64,
    /// Current solar production in watts, 0 to 100000.
    #[schema(minimum = 0, maximum = 100000)]
    pub solar_watts: f64,
    /// Tasks the node is running, as it counts them.
    #[serde(default)]
    pub running: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    pub node_id: uuid::Uuid,
    /// See the README for the formula.
    pub eco_score: f64,
}

/// Admits the node (rate limit) and writes its live state in one round trip (a script): its
/// hash (with its TTL), its expiry in the index of live nodes, and an entry on the
/// `{ns}:heartbeats` change feed that the writer's fleet mirror follows. Answers the eco score.
pub async fn record_heartbeat(
    state: &AppState,
    credential: &Credential,
    node: &NodeCaller,
    heartbeat: Heartbeat,
    running: u32,
) -> Result<f64, ApiError> {
    let grid = &state.config.grid;
    let keys = state.node_keys(node);
    let score = eco_score(heartbeat.solar_watts(), heartbeat.cpu_usage(), node.cpu_cores, grid.max_milliwatts_per_core);
    let now = chrono::Utc::now();
    let ttl = grid.node_ttl_ms;
    let expires_at_ms = now.timestamp_millis() + i64::try_from(ttl).unwrap_or(i64::MAX);
    let feed = HeartbeatEntry {
        node_id: node.node_id,
        cpu_usage: heartbeat.cpu_usage(),
        solar_watts: heartbeat.solar_watts(),
        eco_score: score,
        expires_at_ms,
    };
    let live = [
        ("cpu_cores", node.cpu_cores.to_string()),
        ("has_solar", u8::from(node.has_solar).to_string()),
        ("cpu_usage", heartbeat.cpu_usage().to_string()),
        ("solar_watts", heartbeat.solar_watts().to_string()),
        ("eco_score", score.to_string()),
        ("running", running.to_string()),
        ("last_heartbeat", now.to_rfc3339()),
    ];
    let check = credential.admission_check(state, keys);
    let (node_state, nodes_alive, heartbeats) = (keys.node_state(node.node_id), keys.nodes_alive(), keys.heartbeats());
    let script = scripts::Heartbeat {
        admission: &check,
        node_state: &node_state,
        nodes_alive: &nodes_alive,
        feed: &heartbeats,
        feed_maxlen: HEARTBEAT_FEED_MAXLEN,
        ttl_ms: ttl,
        expires_at_ms,
        node_id: &node.node_id.to_string(),
        state: &live,
        feed_entry: &feed.fields(),
    };
    let mut conn = state.redis.get().await?;
    let answer = script.run(&mut conn).await?;
    admission(answer, state, credential)?;
    Ok(score)
}

#[utoipa::path(post, path = "/v1/nodes/{node_id}/heartbeat", tag = "nodes", request_body = HeartbeatRequest,
    params(("node_id" = uuid::Uuid, Path, description = "The node")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Live state recorded", body = HeartbeatResponse),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not this token's node", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: Credential,
    ApiPath(node_id): ApiPath<uuid::Uuid>,
    ApiJson(request): ApiJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let node = caller.node(NodeId(node_id))?;
    let heartbeat = Heartbeat::parse(request.cpu_usage, request.solar_watts)?;
    let eco_score = record_heartbeat(&state, &caller, &node, heartbeat, request.running.unwrap_or(0)).await?;
    Ok(Json(HeartbeatResponse { node_id, eco_score }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    Started,
    Completed,
    Failed,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    pub task_id: uuid::Uuid,
    /// The attempt number received with `TASK:ASSIGNED`.
    #[schema(minimum = 1)]
    pub attempt: i32,
    pub status: ReportStatus,
    /// Completed: the result. `result_hash` is the SHA-256 of its canonical form (see there).
    #[serde(default)]
    pub result_json: Option<serde_json::Value>,
    /// Completed: SHA-256, as 64 lowercase hex digits, of the UTF-8 canonical form of
    /// `result_json`: no whitespace; object keys sorted by their UTF-8 bytes; strings escaping
    /// only `"`, `\` and characters below U+0020 (`\b \f \n \r \t`, else `\u00xx`); integers
    /// (within 64 bits) as digits; other numbers as 64-bit floats in shortest round-trip digits
    /// with `.0` when whole, plain when 1e-5 ≤ |x| < 1e16, else like `1e+16` or `1.5e-7`.
    /// Example: `{"months": [1, 2.50], "heating_kwh": 8424.0, "building": "Parc – bloc B"}` has
    /// the canonical form `{"building":"Parc – bloc B","heating_kwh":8424.0,"months":[1,2.5]}`
    /// and the hash `121deb67466edc48766b7e3aac5a533653631eca97b417c5595cd600e78c4539`.
    #[serde(default)]
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub result_hash: Option<String>,
    /// Completed: energy the task used, in Wh.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000)]
    pub energy_used_wh: Option<f64>,
    /// Completed: the part of it drawn from solar, in Wh.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000)]
    pub solar_contribution_wh: Option<f64>,
    /// Failed: what went wrong (at most 1000 characters).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1000)]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommandAccepted {
    pub command_id: uuid::Uuid,
}

/// Checks a report and turns it into the message the orchestrator reads.
pub fn parse_report(node_id: NodeId, request: ReportRequest) -> Result<Report, ApiError> {
    if request.attempt < 1 {
        return Err(ApiError::field("attempt", "must be 1 or more"));
    }
    let task_id = TaskId(request.task_id);
    let attempt = request.attempt;
    Ok(match request.status {
        ReportStatus::Started => Report::TaskStarted(TaskStartedReport { node_id, task_id, attempt }),
        ReportStatus::Failed => {
            let error = request.error.unwrap_or_default();
            if error.trim().is_empty() || error.chars().count() > 1000 {
                return Err(ApiError::field("error", "a failed report needs an error of 1 to 1000 characters"));
            }
            Report::TaskFailed(TaskFailedReport { node_id, task_id, attempt, error })
        }
        ReportStatus::Completed => {
            let result_hash = request.result_hash.ok_or_else(|| ApiError::field("result_hash", "is required"))?;
            Sha256Hex::parse(&result_hash).map_err(|reason| ApiError::field("result_hash", &reason))?;
            if let Some(result) = &request.result_json
                && Sha256Hex::of_secret(&result.to_string()).as_str() != result_hash
            {
                return Err(ApiError::field("result_hash", "is not the SHA-256 of result_json"));
            }
            let energy = request.energy_used_wh.ok_or_else(|| ApiError::field("energy_used_wh", "is required"))?;
            let energy_used = MicroWattHours::from_wh("energy_used_wh", energy)?;
            let solar_contribution =
                MicroWattHours::from_wh("solar_contribution_wh", request.solar_contribution_wh.unwrap_or(0.0))?;
            Report::TaskCompleted(TaskCompletedReport {
                node_id,
                task_id,
                attempt,
                result_json: request.result_json,
                result_hash,
                energy_used,
                solar_contribution,
            })
        }
    })
}

#[utoipa::path(post, path = "/v1/nodes/{node_id}/reports", tag = "nodes", request_body = ReportRequest,
    description = "A node reports each assignment with the `task_id` and `attempt` it came with: `completed` \
        (with `result_json`, `result_hash`, `energy_used_wh`, `solar_contribution_wh`) or `failed` (with `error`). \
        `started` is optional: short work costs two requests (the assignment read and this report). An assignment \
        neither started nor finished within the start lease (`GRID_START_LEASE_MS`, 30 s by default) is taken back, \
        so a node should send `started` for longer work.",
    params(("node_id" = uuid::Uuid, Path, description = "The node")), security(("bearer" = [])),
    responses(
        (status = 202, description = "Report accepted", body = CommandAccepted),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not this token's node", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn report(
    State(state): State<AppState>,
    caller: Credential,
    headers: HeaderMap,
    ApiPath(node_id): ApiPath<uuid::Uuid>,
    ApiJson(request): ApiJson<ReportRequest>,
) -> Result<(StatusCode, Json<CommandAccepted>), ApiError> {
    let node = caller.node(NodeId(node_id))?;
    let report = parse_report(node.node_id, request)?;
    let origin = origin_of(&caller, correlation_id(&headers));
    let command_id = publish(&state, state.node_cell(&node), Target::Reports, &caller, origin, &report).await?;
    Ok((StatusCode::ACCEPTED, Json(CommandAccepted { command_id: command_id.as_uuid() })))
}

/// Where a node's channel starts. With `Last-Event-ID` (a stream id), right after it. Without
/// one (a node that starts afresh): at its oldest assignment still in flight, else at the end,
/// so that a restarted node is not handed again the work it already finished.
pub(crate) async fn resume_point(
    state: &AppState,
    node: &NodeCaller,
    last_event_id: Option<&axum::http::HeaderValue>,
) -> Result<StreamEntryId, ApiError> {
    let node_id = node.node_id;
    if let Some(value) = last_event_id {
        return value
            .to_str()
            .ok()
            .and_then(StreamEntryId::parse)
            .ok_or_else(|| ApiError::field("Last-Event-ID", "must be a stream id like 12-0"));
    }
    // The stream's end is read first: an assignment relayed before it is committed, so the query
    // below sees it in flight; one relayed after it comes after the starting point anyway.
    let mut conn = state.redis.get().await?;
    let newest: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(state.node_keys(node).node_tasks(node_id))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await?;
    let end = newest.ids.first().and_then(|entry| StreamEntryId::parse(&entry.id)).unwrap_or(StreamEntryId::ZERO);
    let oldest_in_flight: Option<i64> = sqlx::query_scalar!(
        "select min(assignment_seq) from task
         where node_id = $1 and finished_at is null and status in ('assigned', 'running')",
        node_id.as_uuid()
    )
    .fetch_one(&state.pool)
    .await?;
    // An assignment's id is its event's (`<seq>-0`), and reads start after the id given.
    Ok(oldest_in_flight.map_or(end, |seq| StreamEntryId::of_event(seq - 1)))
}

/// A channel entry as the node reads it: its type (`TASK:ASSIGNED`, `TASK:CANCELLED`) and its
/// data (the payload, with the submission's `correlation_id`); `None` for an unreadable entry.
pub(crate) fn channel_event(entry: &redis::streams::StreamId) -> Option<(String, serde_json::Value)> {
    let text: String = entry.get(fields::ENVELOPE)?;
    let envelope = match Envelope::from_json(&text) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::warn!(entry_id = entry.id, %error, "skipping an unreadable task-channel entry");
            return None;
        }
    };
    let mut data = envelope.payload;
    if let Some(object) = data.as_object_mut() {
        object.insert("correlation_id".to_owned(), serde_json::Value::String(envelope.correlation_id.to_string()));
    }
    Some((envelope.message_type, data))
}

fn sse_event(entry: &redis::streams::StreamId) -> Option<SseEvent> {
    let (message_type, data) = channel_event(entry)?;
    Some(SseEvent::default().id(entry.id.clone()).event(message_type).data(data.to_string()))
}

/// A node's channel from `start` on, as it stands now (read in pages).
pub(crate) async fn catch_up(
    state: &AppState,
    node: &NodeCaller,
    start: StreamEntryId,
) -> Result<std::collections::VecDeque<std::sync::Arc<redis::streams::StreamId>>, ApiError> {
    let key = state.node_keys(node).node_tasks(node.node_id);
    let mut conn = state.redis.get().await?;
    let mut backlog = std::collections::VecDeque::new();
    let mut last = start;
    loop {
        let entries = read_after(&mut conn, &key, last, CATCH_UP_PAGE).await?;
        let full = entries.len() == CATCH_UP_PAGE;
        if let Some(newest) = entries.last().and_then(|entry| StreamEntryId::parse(&entry.id)) {
            last = newest;
        }
        backlog.extend(entries.into_iter().map(std::sync::Arc::new));
        if !full {
            return Ok(backlog);
        }
    }
}

#[utoipa::path(get, path = "/v1/nodes/{node_id}/tasks", tag = "nodes",
    params(("node_id" = uuid::Uuid, Path, description = "The node"),
           ("Last-Event-ID" = Option<String>, Header, description = "Resume after this stream id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Server-sent events: `TASK:ASSIGNED` with data `{task_id, attempt, deadline, kind}`, `TASK:CANCELLED`. The `id:` is the stream id (`<seq>-0`; `<seq>-<n>` for work re-issued after Redis lost its data). An assignment may come again (same `task_id` and `attempt`): keep running it, or send its report again if finished.", content_type = "text/event-stream", body = String),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not this token's node", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid Last-Event-ID", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn task_channel(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(node_id): ApiPath<uuid::Uuid>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let node = caller.node(NodeId(node_id))?;
    let permit = state.stream_permit()?;
    let start = resume_point(&state, &node, headers.get("last-event-id")).await?;
    // Registered before the catch-up read: an entry appended meanwhile comes through the reader.
    let subscription = state.channels.subscribe(node.node_id);
    let backlog = catch_up(&state, &node, start).await?;
    let stream = futures_util::stream::unfold(
        (backlog, subscription, start, permit),
        |(mut backlog, mut live, mut sent, permit)| async move {
            loop {
                let entry = match backlog.pop_front() {
                    Some(entry) => entry,
                    None => live.entries.recv().await?,
                };
                let Some(id) = StreamEntryId::parse(&entry.id) else { continue };
                // The reader may hand over what the catch-up read already had.
                if id <= sent {
                    continue;
                }
                sent = id;
                if let Some(event) = sse_event(&entry) {
                    return Some((Ok::<_, Infallible>(event), (backlog, live, sent, permit)));
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Entries read per request while a client catches up from its channel.
const CATCH_UP_PAGE: usize = 500;

#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's nodes (all for the operator), live state and totals", body = Vec<NodeView>),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A node token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_nodes(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<NodeView>>, ApiError> {
    Ok(Json(list_nodes(&state, caller.read_scope()?, None).await?))
}

#[utoipa::path(get, path = "/v1/nodes/{node_id}", tag = "nodes",
    params(("node_id" = uuid::Uuid, Path, description = "The node")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The node, its live state and totals", body = NodeView),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such node for this caller", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_node(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(node_id): ApiPath<uuid::Uuid>,
) -> Result<Json<NodeView>, ApiError> {
    let mut nodes = list_nodes(&state, caller.read_scope()?, Some(NodeId(node_id))).await?;
    nodes.pop().map(Json).ok_or(ApiError::NotFound("node"))
}
