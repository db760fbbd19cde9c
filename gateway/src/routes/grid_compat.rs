//! The KoproGo grid README's routes and JSON shapes, so that existing node clients keep working.
//! They add only Bearer auth (the organisation key to register, the node token after that) and
//! a few fields (the node token, the attempt, the command id).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use grid_shared::carbon::MicroWattHours;
use grid_shared::envelope::Envelope;
use grid_shared::ids::NodeId;
use grid_shared::live::Heartbeat;
use grid_shared::messages::{NodeMessage, Report};
use redis::streams::StreamReadReply;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
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
    caller: Caller,
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
    caller: Caller,
    ApiJson(request): ApiJson<GridHeartbeatRequest>,
) -> Result<Json<GridHeartbeatResponse>, ApiError> {
    let node = caller.node(NodeId(request.node_id))?;
    let heartbeat = Heartbeat::parse(request.cpu_usage, request.solar_watts)?;
    let eco_score = record_heartbeat(&state, &node, heartbeat, 0).await?;
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
    let keys = state.keys();
    let mut conn = state.redis.get().await?;
    let cursor_key = keys.node_poll_cursor(node.node_id);
    let mut cursor: String = redis::cmd("GET")
        .arg(&cursor_key)
        .query_async::<Option<String>>(&mut *conn)
        .await?
        .unwrap_or_else(|| "0".to_owned());
    loop {
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(50)
            .arg("STREAMS")
            .arg(keys.node_tasks(node.node_id))
            .arg(&cursor)
            .query_async(&mut *conn)
            .await?;
        let entries: Vec<_> = reply.into_iter().flat_map(|reply| reply.keys).flat_map(|stream| stream.ids).collect();
        if entries.is_empty() {
            redis::cmd("SET").arg(&cursor_key).arg(&cursor).query_async::<()>(&mut *conn).await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        for entry in entries {
            cursor = entry.id.clone();
            let assignment = entry
                .get::<String>("envelope")
                .and_then(|text| Envelope::from_json(&text).ok())
                .and_then(|envelope| envelope.decode::<NodeMessage>().ok());
            if let Some(NodeMessage::TaskAssigned(assigned)) = assignment {
                redis::cmd("SET").arg(&cursor_key).arg(&cursor).query_async::<()>(&mut *conn).await?;
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
    pub message: String,
    /// The credits this report would earn, in kg of CO₂ and euros, if the orchestrator finds it
    /// plausible (see the task for what was credited).
    pub carbon_credits: f64,
    pub node_share_eur: f64,
    pub cooperative_share_eur: f64,
    pub command_id: uuid::Uuid,
}

#[utoipa::path(post, path = "/grid/report", tag = "koprogo-compat", request_body = GridReportRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "Report accepted", body = GridReportResponse),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a node token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not a task of this node", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn grid_report(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<GridReportRequest>,
) -> Result<Json<GridReportResponse>, ApiError> {
    let Caller::Node(node) = caller else {
        return Err(ApiError::Forbidden("this route takes a node token"));
    };
    let attempt = match request.attempt {
        Some(attempt) => attempt,
        None => sqlx::query_scalar::<_, i32>("select attempts from task where task_id = $1 and node_id = $2")
            .bind(request.task_id)
            .bind(node.node_id.as_uuid())
            .fetch_optional(&state.pool)
            .await?
            .ok_or(ApiError::NotFound("task"))?,
    };
    let report = parse_report(
        node.node_id,
        ReportRequest {
            task_id: request.task_id,
            attempt,
            status: ReportStatus::Completed,
            result_json: request.result_json,
            result_hash: Some(request.result_hash),
            energy_used_wh: Some(request.energy_used_wh),
            solar_contribution_wh: Some(request.solar_contribution_wh),
            error: None,
        },
    )?;
    let Report::TaskCompleted(completed) = &report else { unreachable!("built as a completion") };
    let split = state.config.grid.carbon.credit(completed.solar_contribution);
    let command_id =
        publish(&state, Stream::Reports, &caller, origin_of(&caller, correlation_id(&headers)), &report).await?;
    Ok(Json(GridReportResponse {
        message: "Task completion accepted".to_owned(),
        carbon_credits: split.carbon_saved.as_kg(),
        node_share_eur: split.node_share.as_eur(),
        cooperative_share_eur: split.cooperative_share.as_eur(),
        command_id: command_id.as_uuid(),
    }))
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
