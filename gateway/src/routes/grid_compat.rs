//! The KoproGo grid README's routes and JSON shapes, so that existing node clients keep working.
//! They add only Bearer auth (the organisation key to register, the node token after that) and
//! a few fields (the node token, the attempt, the command id).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use grid_shared::carbon::{MicroWattHours, Nanograms, PicoEuros};
use grid_shared::envelope::Envelope;
use grid_shared::ids::{MessageId, NodeId};
use grid_shared::live::Heartbeat;
use grid_shared::messages::{NodeMessage, Report};
use grid_shared::reasons::Refusal;
use grid_shared::wire::fields;
use redis::streams::StreamReadReply;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, Credential};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiQuery};
use crate::publish::{Stream, correlation_id, origin_of, publish};
use crate::read_model::stats::{GridStats, grid_stats};
use crate::routes::nodes::{
    RegisterNodeRequest, ReportRequest, ReportStatus, parse_report, record_heartbeat, register,
};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/grid/register", post(grid_register))
        .route("/grid/heartbeat", post(grid_heartbeat))
        .route("/grid/task", get(grid_task))
        .route("/grid/report", post(grid_report))
        .route("/grid/stats", get(grid_stats_route))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GridRegisterResponse {
    pub id: uuid::Uuid,
    pub name: String,
    pub eco_score: f64,
    pub status: String,
    /// The node token for the other routes; shown once.
    pub token: String,
    pub command_id: uuid::Uuid,
}

#[utoipa::path(post, path = "/grid/register", tag = "koprogo-compat", request_body = RegisterNodeRequest, security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered (applied asynchronously)", body = GridRegisterResponse),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an organisation key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn grid_register(
    State(state): State<AppState>,
    caller: Credential,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RegisterNodeRequest>,
) -> Result<(StatusCode, Json<GridRegisterResponse>), ApiError> {
    let registered = register(&state, &caller, &headers, &request).await?;
    Ok((
        StatusCode::CREATED,
        Json(GridRegisterResponse {
            id: registered.node_id,
            name: request.name.trim().to_owned(),
            eco_score: 0.0,
            status: "active".to_owned(),
            token: registered.token,
            command_id: registered.command_id,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GridHeartbeatRequest {
    pub node_id: uuid::Uuid,
    pub cpu_usage: f64,
    pub solar_watts: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GridHeartbeatResponse {
    pub id: uuid::Uuid,
    pub eco_score: f64,
}

#[utoipa::path(post, path = "/grid/heartbeat", tag = "koprogo-compat", request_body = GridHeartbeatRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "Live state recorded", body = GridHeartbeatResponse),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not this token's node", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn grid_heartbeat(
    State(state): State<AppState>,
    caller: Credential,
    ApiJson(request): ApiJson<GridHeartbeatRequest>,
) -> Result<Json<GridHeartbeatResponse>, ApiError> {
    let node = caller.node(NodeId(request.node_id))?;
    let heartbeat = Heartbeat::parse(request.cpu_usage, request.solar_watts)?;
    let eco_score = record_heartbeat(&state, &caller, &node, heartbeat, 0).await?;
    Ok(Json(GridHeartbeatResponse { id: request.node_id, eco_score }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GridTaskQuery {
    pub node_id: uuid::Uuid,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GridTaskResponse {
    pub id: uuid::Uuid,
    pub task_type: String,
    /// Where the input is: this API hands it over inline, in `kind`.
    pub data_url: String,
    pub deadline: chrono::DateTime<chrono::Utc>,
    /// The node's share, in euros, of the credits for one watt-hour of solar energy.
    pub estimated_reward: f64,
    pub attempt: i32,
    pub kind: serde_json::Value,
}

#[utoipa::path(get, path = "/grid/task", tag = "koprogo-compat", params(GridTaskQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "The next task assigned to the node", body = GridTaskResponse),
        (status = 204, description = "No task"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not this token's node", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn grid_task(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<GridTaskQuery>,
) -> Result<Response, ApiError> {
    let node = caller.node(NodeId(query.node_id))?;
    let keys = state.node_keys(&node);
    let mut conn = state.redis.get().await?;
    let cursor_key = keys.node_poll_cursor(node.node_id);
    let mut cursor: String = redis::cmd("GET")
        .arg(&cursor_key)
        .query_async::<Option<String>>(&mut conn)
        .await?
        .unwrap_or_else(|| "0".to_owned());
    loop {
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(50)
            .arg("STREAMS")
            .arg(keys.node_tasks(node.node_id))
            .arg(&cursor)
            .query_async(&mut conn)
            .await?;
        let entries: Vec<_> = reply.into_iter().flat_map(|reply| reply.keys).flat_map(|stream| stream.ids).collect();
        if entries.is_empty() {
            redis::cmd("SET").arg(&cursor_key).arg(&cursor).query_async::<()>(&mut conn).await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        for entry in entries {
            cursor = entry.id.clone();
            let assignment = entry
                .get::<String>(fields::ENVELOPE)
                .and_then(|text| Envelope::from_json(&text).ok())
                .and_then(|envelope| envelope.decode::<NodeMessage>().ok());
            if let Some(NodeMessage::TaskAssigned(assigned)) = assignment {
                redis::cmd("SET").arg(&cursor_key).arg(&cursor).query_async::<()>(&mut conn).await?;
                let reward = state.config.grid.carbon.credit(MicroWattHours(1_000_000)).node_share.as_eur();
                let response = GridTaskResponse {
                    id: assigned.task_id.as_uuid(),
                    task_type: assigned.kind.type_name().to_owned(),
                    data_url: format!("inline:{}", assigned.task_id),
                    deadline: assigned.deadline,
                    estimated_reward: reward,
                    attempt: assigned.attempt,
                    kind: serde_json::to_value(&assigned.kind).expect("task inputs serialise"),
                };
                return Ok(Json(response).into_response());
            }
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GridReportRequest {
    pub task_id: uuid::Uuid,
    /// The node's own hash of its result, opaque here: 1 to 128 visible ASCII characters. The
    /// results of a task's replicas are compared by it, so every node must hash the same way.
    #[schema(min_length = 1, max_length = 128)]
    pub result_hash: String,
    pub energy_used_wh: f64,
    pub solar_contribution_wh: f64,
    /// The attempt; the task's current one when absent.
    #[serde(default)]
    pub attempt: Option<i32>,
    #[serde(default)]
    pub result_json: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GridReportResponse {
    /// What became of the report: credited, refused (with the reason) or credit pending.
    pub message: String,
    /// `credited`, `pending` (the decision did not come within the wait, or a quorum is still
    /// open) or `not_credited`.
    pub outcome: String,
    /// What this report was actually credited, in kg of CO₂ and euros: zero unless `credited`.
    pub carbon_credits: f64,
    pub node_share_eur: f64,
    pub cooperative_share_eur: f64,
    pub command_id: uuid::Uuid,
}

/// An opaque result hash: 1 to 128 visible ASCII characters.
fn opaque_hash(text: &str) -> Result<(), ApiError> {
    if (1..=128).contains(&text.len()) && text.bytes().all(|byte| byte.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ApiError::field("result_hash", "must be 1 to 128 visible ASCII characters"))
    }
}

#[utoipa::path(post, path = "/grid/report", tag = "koprogo-compat", request_body = GridReportRequest, security(("bearer" = [])),
    description = "A completion report in the KoproGo shape. The result hash is opaque (the node's own format), \
        and is not checked against `result_json`. The answer waits, up to `GATEWAY_REPORT_DECISION_WAIT_MS` (2 s), \
        for the orchestrator's decision and gives what was actually credited: zero with `outcome: pending` when \
        the decision has not come yet or a quorum is still open, zero with `outcome: not_credited` and the reason \
        when the report was refused or judged implausible.",
    responses(
        (status = 200, description = "Report accepted; what it was credited", body = GridReportResponse),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a node token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not a task of this node", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn grid_report(
    State(state): State<AppState>,
    caller: Credential,
    headers: HeaderMap,
    ApiJson(request): ApiJson<GridReportRequest>,
) -> Result<Json<GridReportResponse>, ApiError> {
    let Caller::Node(node) = caller.caller else {
        return Err(ApiError::Forbidden("this route takes a node token"));
    };
    opaque_hash(&request.result_hash)?;
    let attempt = match request.attempt {
        Some(attempt) => attempt,
        None => sqlx::query_scalar!(
            "select attempts from task where task_id = $1 and node_id = $2",
            request.task_id,
            node.node_id.as_uuid()
        )
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound("task"))?,
    };
    // Checked as a `/v1` report would be, with a stand-in hash: the compatibility hash is opaque.
    let checked = parse_report(
        node.node_id,
        ReportRequest {
            task_id: request.task_id,
            attempt,
            status: ReportStatus::Completed,
            result_json: None,
            result_hash: Some("0".repeat(64)),
            energy_used_wh: Some(request.energy_used_wh),
            solar_contribution_wh: Some(request.solar_contribution_wh),
            error: None,
        },
    )?;
    let Report::TaskCompleted(mut completed) = checked else { unreachable!("built as a completion") };
    completed.result_hash = request.result_hash;
    completed.result_json = request.result_json;
    let report = Report::TaskCompleted(completed);
    let origin = origin_of(&caller, correlation_id(&headers));
    let command_id = publish(&state, state.node_cell(&node), Stream::Reports, &caller, origin, &report).await?;
    let wait = std::time::Duration::from_millis(state.config.report_decision_wait_ms);
    let decision = decided_credit(&state, command_id, request.task_id, attempt, node.node_id, wait).await?;
    Ok(Json(decision.answer(command_id.as_uuid())))
}

/// What the orchestrator made of a completion report.
enum Decision {
    Credited { carbon_ng: i64, node_peur: i64, cooperative_peur: i64 },
    Pending(&'static str),
    NotCredited(String),
}

impl Decision {
    fn answer(self, command_id: uuid::Uuid) -> GridReportResponse {
        let (message, outcome, carbon_ng, node_peur, cooperative_peur) = match self {
            Self::Credited { carbon_ng, node_peur, cooperative_peur } => {
                ("Task completion credited".to_owned(), "credited", carbon_ng, node_peur, cooperative_peur)
            }
            Self::Pending(why) => (format!("Task completion accepted; credit pending: {why}"), "pending", 0, 0, 0),
            Self::NotCredited(reason) => (format!("Task completion not credited: {reason}"), "not_credited", 0, 0, 0),
        };
        GridReportResponse {
            message,
            outcome: outcome.to_owned(),
            carbon_credits: Nanograms(carbon_ng).as_kg(),
            node_share_eur: PicoEuros(node_peur).as_eur(),
            cooperative_share_eur: PicoEuros(cooperative_peur).as_eur(),
            command_id,
        }
    }
}

/// Waits, up to `wait`, for the report's command to be decided, then reads what this result
/// (task, attempt, node) was credited.
async fn decided_credit(
    state: &AppState,
    command_id: MessageId,
    task_id: uuid::Uuid,
    attempt: i32,
    node_id: NodeId,
    wait: std::time::Duration,
) -> Result<Decision, ApiError> {
    let until = tokio::time::Instant::now() + wait;
    let mut pause = std::time::Duration::from_millis(2);
    let (outcome, reason) = loop {
        let row: Option<(String, Option<String>)> =
            sqlx::query!("select outcome, reason from processed_message where message_id = $1", command_id.as_uuid())
                .map(|row| (row.outcome, row.reason))
                .fetch_optional(&state.pool)
                .await?;
        if let Some(row) = row {
            break row;
        }
        if tokio::time::Instant::now() + pause > until {
            return Ok(Decision::Pending("the orchestrator has not decided yet; see the task"));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    };
    if outcome != "applied" {
        let reason = reason.map(|text| Refusal::from_stored(&text).to_string());
        return Ok(Decision::NotCredited(reason.unwrap_or_else(|| outcome.clone())));
    }
    let credited: Option<(i64, i64, i64)> = sqlx::query!(
        "select carbon_ng, node_peur, cooperative_peur from proof_leaf
         where task_id = $1 and attempt = $2 and node_id = $3",
        task_id,
        attempt,
        node_id.as_uuid()
    )
    .map(|row| (row.carbon_ng, row.node_peur, row.cooperative_peur))
    .fetch_optional(&state.pool)
    .await?;
    if let Some((carbon_ng, node_peur, cooperative_peur)) = credited {
        return Ok(Decision::Credited { carbon_ng, node_peur, cooperative_peur });
    }
    let result: Option<(String, Option<String>)> = sqlx::query!(
        "select verdict, refusal from task_result where task_id = $1 and attempt = $2 and node_id = $3",
        task_id,
        attempt,
        node_id.as_uuid()
    )
    .map(|row| (row.verdict, row.refusal))
    .fetch_optional(&state.pool)
    .await?;
    Ok(match result {
        Some((_, Some(refusal))) => Decision::NotCredited(refusal),
        Some((verdict, None)) if verdict == "pending" => Decision::Pending("the task waits for another replica"),
        Some((verdict, None)) => Decision::NotCredited(format!("the result's verdict is {verdict}")),
        None => Decision::NotCredited("the report was not recorded".to_owned()),
    })
}

#[utoipa::path(get, path = "/grid/stats", tag = "koprogo-compat", security(("bearer" = [])),
    responses(
        (status = 200, description = "Grid totals", body = GridStats),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn grid_stats_route(State(state): State<AppState>, caller: Caller) -> Result<Json<GridStats>, ApiError> {
    caller.read_scope()?;
    Ok(Json(grid_stats(&state).await?))
}
