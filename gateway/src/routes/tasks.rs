//! Tasks of the calling organisation: submit (honouring `Idempotency-Key`), list, read, cancel.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use grid_shared::cells::{CellChoice, CellName};
use grid_shared::domain::{
    FieldError, Participant, Priority, Replicas, TaskKind, TaskKindInput, TaskStatus, parse_deadline,
};
use grid_shared::ids::{BuildingId, CoproprieteId, MessageId, OrganizationId, OwnerId, TaskId};
use grid_shared::messages::{CancelTask, Command, Sha256Hex, SubmitTask};
use grid_shared::wire::scripts::Remember;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, Credential};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::publish::{Published, Stream, correlation_id, origin_of, publish, publish_commands, publish_once};
use crate::read_model::events::{TaskHistory, of_task};
use crate::read_model::tasks::{TaskPage, TaskSearch, TaskView, count_tasks, decode_cursor, find_task, list_tasks};
use crate::routes::nodes::{CommandAccepted, known_cell};
use crate::state::AppState;

/// How long an `Idempotency-Key` is remembered.
const IDEMPOTENCY_TTL_SECONDS: u64 = 24 * 3600;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tasks", post(submit_task).get(get_tasks))
        .route("/v1/tasks/batch", post(submit_task_batch))
        .route("/v1/tasks/counts", get(get_task_counts))
        .route("/v1/tasks/{task_id}", get(get_task).delete(cancel_task))
        .route("/v1/tasks/{task_id}/events", get(get_task_events))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantBody {
    pub owner_id: uuid::Uuid,
    /// Monthly consumption, in kWh (0 to 1,000,000 each), up to ten years.
    #[schema(min_items = 1, max_items = 120)]
    pub readings_kwh: Vec<f64>,
}

/// The computation to run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskKindBody {
    BuildingThermalSimulation {
        building_id: uuid::Uuid,
        /// 0 (none) to 1 (passive house).
        #[schema(minimum = 0, maximum = 1)]
        insulation_score: f64,
        /// Above 0.
        #[schema(exclusive_minimum = 0, maximum = 1000000)]
        surface_m2: f64,
        /// 0 or more.
        #[schema(minimum = 0, maximum = 10000)]
        heating_degree_days: f64,
    },
    EnergyGroupOptimisation {
        building_id: uuid::Uuid,
        /// 1 to 120.
        #[schema(minimum = 1, maximum = 120)]
        simulation_months: i64,
        /// At least 5 distinct consenting owners (k-anonymity).
        #[schema(min_items = 1, max_items = 1000)]
        participants: Vec<ParticipantBody>,
    },
}

impl From<TaskKindBody> for TaskKindInput {
    fn from(body: TaskKindBody) -> Self {
        match body {
            TaskKindBody::BuildingThermalSimulation {
                building_id,
                insulation_score,
                surface_m2,
                heating_degree_days,
            } => Self::BuildingThermalSimulation {
                building_id: BuildingId(building_id),
                insulation_score,
                surface_m2,
                heating_degree_days,
            },
            TaskKindBody::EnergyGroupOptimisation { building_id, simulation_months, participants } => {
                Self::EnergyGroupOptimisation {
                    building_id: BuildingId(building_id),
                    simulation_months,
                    participants: participants
                        .into_iter()
                        .map(|participant| Participant {
                            owner_id: OwnerId(participant.owner_id),
                            readings_kwh: participant.readings_kwh,
                        })
                        .collect(),
                }
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTaskRequest {
    pub copropriete_id: uuid::Uuid,
    /// 0 to 10; 5 when absent.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10)]
    pub priority: Option<i64>,
    /// In the future, at most a year ahead.
    pub deadline: DateTime<Utc>,
    pub kind: TaskKindBody,
    /// Results wanted, 1 to 3, each from a node of a different owner; the task completes when a
    /// majority agree on the result hash. 1 when absent.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3)]
    pub replicas: Option<i64>,
    /// The cell the task must run in (data residency), one of `GET /v1/cells`: only that cell's
    /// nodes run it. Absent: the grid chooses the greenest cell with room. The choice and what it
    /// saw are in the task's first event (`TaskAccepted.cell`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "main", pattern = "^[a-z0-9][a-z0-9-]{0,31}$")]
    pub cell: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubmitTaskResponse {
    pub task_id: uuid::Uuid,
    pub command_id: uuid::Uuid,
}

/// What an `Idempotency-Key` remembers: the answer, and the request it answered.
#[derive(Serialize, Deserialize)]
struct Remembered<R> {
    response: R,
    request_sha256: String,
}

impl<R: serde::de::DeserializeOwned> Remembered<R> {
    /// The answer remembered under the key, if it answered this very request (`request_sha256`);
    /// a key reused for another request, or on the other submission route, is a conflict.
    fn answer_to(previous: &str, request_sha256: &str) -> Result<R, ApiError> {
        let unreadable = || ApiError::Internal("an unreadable idempotency answer".to_owned());
        let seen: Remembered<serde::de::IgnoredAny> = serde_json::from_str(previous).map_err(|_| unreadable())?;
        if seen.request_sha256 != request_sha256 {
            return Err(ApiError::Conflict("this Idempotency-Key was used for a different request".to_owned()));
        }
        let remembered: Remembered<R> = serde_json::from_str(previous).map_err(|_| unreadable())?;
        Ok(remembered.response)
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok()
        .filter(|text| (1..=200).contains(&text.len()) && text.bytes().all(|byte| byte.is_ascii_graphic()));
    text.map(|text| Some(text.to_owned()))
        .ok_or_else(|| ApiError::field("Idempotency-Key", "must be 1 to 200 visible ASCII characters"))
}

/// A task request checked, but for its cell, which the route decides.
struct CheckedTask {
    copropriete_id: CoproprieteId,
    priority: Priority,
    deadline: DateTime<Utc>,
    kind: TaskKind,
    replicas: Replicas,
}

impl CheckedTask {
    fn check(request: SubmitTaskRequest, now: DateTime<Utc>) -> Result<Self, ApiError> {
        Ok(Self {
            copropriete_id: CoproprieteId(request.copropriete_id),
            priority: request.priority.map(Priority::parse).transpose()?.unwrap_or_default(),
            replicas: request.replicas.map(Replicas::parse).transpose()?.unwrap_or_default(),
            deadline: parse_deadline(request.deadline, now)?,
            kind: TaskKind::try_from(TaskKindInput::from(request.kind))?,
        })
    }

    /// The command submitting the task to `cell`, its id, and the answer to the caller.
    fn command(self, cell: CellChoice) -> (SubmitTaskResponse, MessageId, Command) {
        let (task_id, command_id) = (TaskId::new(), MessageId::new());
        let response = SubmitTaskResponse { task_id: task_id.as_uuid(), command_id: command_id.as_uuid() };
        let command = Command::SubmitTask(SubmitTask {
            task_id,
            copropriete_id: self.copropriete_id,
            priority: self.priority,
            deadline: self.deadline,
            kind: self.kind,
            replicas: self.replicas,
            cell: Some(cell),
        });
        (response, command_id, command)
    }
}

/// The cell a submission goes to: the one it names, else the greenest with room; with an
/// `Idempotency-Key` and no cell named, the first choice made under that key.
async fn cell_for(
    state: &AppState,
    organization_id: OrganizationId,
    named: Option<&str>,
    idempotency: Option<&str>,
) -> Result<CellChoice, ApiError> {
    let cell = match named {
        Some(requested) => CellChoice::named(known_cell(state, requested)?),
        None => state.summaries.choose(&state.config.grid.cells),
    };
    match idempotency {
        // A repeat goes where the first went (its answer is kept in that cell's slot).
        Some(key) if named.is_none() && state.config.grid.cells.len() > 1 => {
            pinned_cell(state, organization_id, key, cell).await
        }
        _ => Ok(cell),
    }
}

#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = SubmitTaskRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat a submission safely for 24 h")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Submission accepted; admission is decided by the orchestrator", body = SubmitTaskResponse),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an organisation key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Idempotency-Key reused for another request", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn submit_task(
    State(state): State<AppState>,
    caller: Credential,
    headers: HeaderMap,
    ApiJson(request): ApiJson<SubmitTaskRequest>,
) -> Result<(StatusCode, Json<SubmitTaskResponse>), ApiError> {
    let organization_id = caller.organization()?;
    let idempotency = idempotency_key(&headers)?;
    let request_sha256 =
        Sha256Hex::of_secret(&serde_json::to_string(&request).expect("requests serialise")).as_str().to_owned();
    let named = request.cell.clone();
    let task = CheckedTask::check(request, Utc::now())?;
    let cell = cell_for(&state, organization_id, named.as_deref(), idempotency.as_deref()).await?;
    let keys = state.cell_keys(&cell.cell);
    let (response, command_id, command) = task.command(cell.clone());
    let remembered = idempotency.map(|key| {
        let answer = Remembered { response: response.clone(), request_sha256: request_sha256.clone() };
        (keys.idempotency(organization_id, &key), serde_json::to_string(&answer).expect("serialisable"))
    });
    let remember =
        remembered.as_ref().map(|(key, answer)| Remember { key, answer, ttl_seconds: IDEMPOTENCY_TTL_SECONDS });
    let origin = origin_of(&caller, correlation_id(&headers));
    match publish_once(&state, &cell.cell, Stream::Commands, &caller, origin, command_id, &command, remember).await? {
        Published::Appended(_) => Ok((StatusCode::ACCEPTED, Json(response))),
        Published::Remembered(previous) => {
            Ok((StatusCode::ACCEPTED, Json(Remembered::answer_to(&previous, &request_sha256)?)))
        }
    }
}

/// The most tasks one `POST /v1/tasks/batch` takes.
pub const MAX_BATCH_TASKS: usize = 1000;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTaskBatchRequest {
    /// The cell every task of the batch must run in, one of `GET /v1/cells`. Absent: the grid
    /// chooses one cell, the greenest with room, for the whole batch. A task of the batch may
    /// name only this same cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "main", pattern = "^[a-z0-9][a-z0-9-]{0,31}$")]
    pub cell: Option<String>,
    /// 1 to 1,000 tasks, each as `POST /v1/tasks` takes one. Each is checked on its own: a task
    /// that is not valid is refused alone (its problem in `items`, its fields named
    /// `tasks[<index>].…`), and the others are submitted.
    #[schema(value_type = Vec<SubmitTaskRequest>, min_items = 1, max_items = 1000)]
    pub tasks: Vec<Box<serde_json::value::RawValue>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubmitTaskBatchResponse {
    /// The cell the batch went to.
    pub cell: String,
    /// Tasks submitted (each then admitted or rejected by the orchestrator, as one task is).
    pub accepted: usize,
    /// Tasks refused here, each with its problem in `items`.
    pub refused: usize,
    /// One per task of the request, in its order.
    pub items: Vec<BatchItem>,
}

/// What became of one task of a batch: its ids, or the problem that refused it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchItem {
    /// The task's place in the request's `tasks`, from 0.
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<uuid::Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<uuid::Uuid>,
    /// Why the task was refused (its fields named `tasks[<index>].…`); absent when submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// One task of a batch, checked: what a lone `POST /v1/tasks` would refuse it for, with its
/// fields named from the batch (`tasks[3].deadline`).
fn check_batch_item(
    index: usize,
    raw: &serde_json::value::RawValue,
    cell: Option<&str>,
    now: DateTime<Utc>,
) -> Result<CheckedTask, Vec<FieldError>> {
    let at = |field: &str| {
        if field.is_empty() { format!("tasks[{index}]") } else { format!("tasks[{index}].{field}") }
    };
    let request: SubmitTaskRequest =
        serde_json::from_str(raw.get()).map_err(|error| vec![FieldError::new(at(""), error.to_string())])?;
    if request.cell.is_some() && request.cell.as_deref() != cell {
        return Err(vec![FieldError::new(
            at("cell"),
            "a batch runs in one cell: name it once, on the batch (its `cell`), or not at all",
        )]);
    }
    CheckedTask::check(request, now).map_err(|error| match error {
        ApiError::Validation(fields) => {
            fields.into_iter().map(|field| FieldError::new(at(&field.field), field.reason)).collect()
        }
        other => vec![FieldError::new(at(""), other.to_string())],
    })
}

#[utoipa::path(post, path = "/v1/tasks/batch", tag = "tasks", request_body = SubmitTaskBatchRequest,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Repeat the whole batch safely for 24 h: the same answer, nothing submitted twice")),
    security(("bearer" = [])),
    description = "Submits up to 1,000 tasks in one request: the valid ones are appended to one cell's command \
                   stream in one Redis round trip, all or none, and answered with their ids in the request's order; \
                   an invalid task is refused alone, with its index and its problem. The batch counts as one \
                   request against the key's rate limit, and is refused whole (503, `Retry-After`) while the grid \
                   has `GATEWAY_MAX_BACKLOG` commands not yet applied (below it, a batch is taken whole). One \
                   `Idempotency-Key` covers the whole batch; a key used on `POST /v1/tasks` is a conflict here. \
                   A batch runs in one cell. The body limit (`GATEWAY_MAX_BODY_BYTES`, 4 MiB) holds 1,000 thermal \
                   simulations but only a few of the largest group optimisations (413 above it).",
    responses(
        (status = 202, description = "At least one task submitted: each task's ids or problem", body = SubmitTaskBatchResponse),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an organisation key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Idempotency-Key reused for another request", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No task submitted: the batch's own fields, or every task's problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn submit_task_batch(
    State(state): State<AppState>,
    caller: Credential,
    headers: HeaderMap,
    ApiJson(request): ApiJson<SubmitTaskBatchRequest>,
) -> Result<(StatusCode, Json<SubmitTaskBatchResponse>), ApiError> {
    let organization_id = caller.organization()?;
    let idempotency = idempotency_key(&headers)?;
    if !(1..=MAX_BATCH_TASKS).contains(&request.tasks.len()) {
        return Err(ApiError::field("tasks", "must hold 1 to 1,000 tasks"));
    }
    // The batch route's own hash: a key used on `POST /v1/tasks` is a conflict here.
    let request_sha256 =
        Sha256Hex::of_secret(&format!("batch {}", serde_json::to_string(&request).expect("requests serialise")))
            .as_str()
            .to_owned();
    let now = Utc::now();
    let checked: Vec<Result<CheckedTask, Vec<FieldError>>> = request
        .tasks
        .iter()
        .enumerate()
        .map(|(index, raw)| check_batch_item(index, raw, request.cell.as_deref(), now))
        .collect();
    if checked.iter().all(Result::is_err) {
        return Err(ApiError::Validation(checked.into_iter().filter_map(Result::err).flatten().collect()));
    }
    let cell = cell_for(&state, organization_id, request.cell.as_deref(), idempotency.as_deref()).await?;
    // One correlation id per task (one trace each), unless the client gave the request's own.
    let given = headers.get("x-request-id").map(|_| correlation_id(&headers));
    let mut items = Vec::with_capacity(checked.len());
    let mut commands = Vec::with_capacity(checked.len());
    for (index, task) in checked.into_iter().enumerate() {
        match task {
            Ok(task) => {
                let (response, command_id, command) = task.command(cell.clone());
                let origin = origin_of(&caller, given.unwrap_or_else(uuid::Uuid::new_v4));
                commands.push((command_id, origin, command));
                items.push(BatchItem {
                    index,
                    task_id: Some(response.task_id),
                    command_id: Some(response.command_id),
                    problem: None,
                });
            }
            Err(fields) => {
                let problem = ApiError::Validation(fields).problem();
                items.push(BatchItem { index, task_id: None, command_id: None, problem: Some(problem) });
            }
        }
    }
    let response = SubmitTaskBatchResponse {
        cell: cell.cell.as_str().to_owned(),
        accepted: commands.len(),
        refused: items.len() - commands.len(),
        items,
    };
    let keys = state.cell_keys(&cell.cell);
    let remembered = idempotency.map(|key| {
        let answer = Remembered { response: response.clone(), request_sha256: request_sha256.clone() };
        (keys.idempotency(organization_id, &key), serde_json::to_string(&answer).expect("serialisable"))
    });
    let remember =
        remembered.as_ref().map(|(key, answer)| Remember { key, answer, ttl_seconds: IDEMPOTENCY_TTL_SECONDS });
    match publish_commands(&state, &cell.cell, &caller, &commands, remember).await? {
        Published::Appended(_) => Ok((StatusCode::ACCEPTED, Json(response))),
        Published::Remembered(previous) => {
            Ok((StatusCode::ACCEPTED, Json(Remembered::answer_to(&previous, &request_sha256)?)))
        }
    }
}

/// The cell a keyed submission that names none goes to: the first choice made under its key
/// (kept 24 h under the default cell's tag), or `choice`, which becomes it.
async fn pinned_cell(
    state: &AppState,
    organization_id: OrganizationId,
    key: &str,
    choice: CellChoice,
) -> Result<CellChoice, ApiError> {
    let mut conn = state.redis.get().await?;
    let previous: Option<String> = redis::cmd("SET")
        .arg(state.keys().idempotency_cell(organization_id, key))
        .arg(choice.cell.as_str())
        .arg("NX")
        .arg("GET")
        .arg("EX")
        .arg(IDEMPOTENCY_TTL_SECONDS)
        .query_async(&mut conn)
        .await?;
    match previous.map(|cell| CellName::parse(&cell)) {
        None => Ok(choice),
        Some(Ok(cell)) if state.config.grid.cells.get(&cell).is_some() => {
            Ok(CellChoice { cell, reason: choice.reason, options: choice.options })
        }
        Some(_) => Err(ApiError::Internal("an idempotency key pinned to a cell the grid does not have".to_owned())),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskFilter {
    /// Only tasks in this status.
    #[param(pattern = "^(queued|assigned|running|completed|failed|cancelled|rejected|quarantined)$")]
    pub status: Option<String>,
    /// Only tasks of this kind.
    #[param(pattern = "^(building_thermal_simulation|energy_group_optimisation)$")]
    pub kind: Option<String>,
    /// Only tasks last assigned to this node.
    pub node_id: Option<uuid::Uuid>,
    /// Only tasks submitted at or after this instant (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only tasks submitted before this instant (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Only tasks whose id starts with these characters (4 to 36 of the lowercase hyphenated
    /// form: hexadecimal digits and dashes).
    #[param(pattern = "^[0-9a-f-]{4,36}$")]
    pub id_prefix: Option<String>,
    /// 1 to 500; 100 when absent.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// From a previous page's `next_cursor` (the same filters must be given with it).
    pub cursor: Option<String>,
}

impl TaskFilter {
    /// The filters, checked (the limit and cursor aside).
    fn search(&self) -> Result<TaskSearch, ApiError> {
        let status = self
            .status
            .as_deref()
            .map(|text| TaskStatus::parse(text).ok_or_else(|| ApiError::field("status", "is not a task status")))
            .transpose()?;
        const KINDS: [&str; 2] = ["building_thermal_simulation", "energy_group_optimisation"];
        if let Some(kind) = &self.kind
            && !KINDS.contains(&kind.as_str())
        {
            return Err(ApiError::field("kind", "must be building_thermal_simulation or energy_group_optimisation"));
        }
        if let (Some(since), Some(until)) = (self.since, self.until)
            && until <= since
        {
            return Err(ApiError::field("until", "must be after since"));
        }
        if let Some(prefix) = &self.id_prefix {
            let valid = (4..=36).contains(&prefix.len())
                && prefix.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f' | b'-'));
            if !valid {
                return Err(ApiError::field("id_prefix", "must be 4 to 36 lowercase hexadecimal digits and dashes"));
            }
        }
        Ok(TaskSearch {
            status,
            kind: self.kind.clone(),
            node_id: self.node_id,
            since: self.since,
            until: self.until,
            id_prefix: self.id_prefix.clone(),
        })
    }
}

/// The filters of `GET /v1/tasks/counts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskCountFilter {
    #[param(pattern = "^(building_thermal_simulation|energy_group_optimisation)$")]
    pub kind: Option<String>,
    pub node_id: Option<uuid::Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// How many tasks are in each status (every status named, zero included).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskCounts {
    pub counts: std::collections::BTreeMap<String, i64>,
    pub total: i64,
}

#[utoipa::path(get, path = "/v1/tasks/counts", tag = "tasks", params(TaskCountFilter), security(("bearer" = [])),
    responses(
        (status = 200, description = "The organisation's tasks counted by status (the operator: every task)", body = TaskCounts),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_task_counts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<TaskCountFilter>,
) -> Result<Json<TaskCounts>, ApiError> {
    let scope = caller.read_scope()?;
    let search = TaskFilter {
        status: None,
        kind: filter.kind,
        node_id: filter.node_id,
        since: filter.since,
        until: filter.until,
        id_prefix: None,
        limit: None,
        cursor: None,
    }
    .search()?;
    let counts = count_tasks(&state, scope, &search).await?;
    let total = counts.values().sum();
    Ok(Json(TaskCounts { counts, total }))
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(TaskFilter), security(("bearer" = [])),
    responses(
        (status = 200, description = "The organisation's tasks, newest first", body = TaskPage),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_tasks(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<TaskFilter>,
) -> Result<Json<TaskPage>, ApiError> {
    let scope = caller.read_scope()?;
    let search = filter.search()?;
    let limit = filter.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 500"));
    }
    let after = filter.cursor.as_deref().map(decode_cursor).transpose()?;
    Ok(Json(list_tasks(&state, scope, &search, after, limit).await?))
}

#[utoipa::path(get, path = "/v1/tasks/{task_id}", tag = "tasks",
    params(("task_id" = uuid::Uuid, Path, description = "The task")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The task, with its credits once completed", body = TaskView),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this caller", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_task(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(task_id): ApiPath<uuid::Uuid>,
) -> Result<Json<TaskView>, ApiError> {
    find_task(&state, caller.read_scope()?, TaskId(task_id)).await?.map(Json).ok_or(ApiError::NotFound("task"))
}

#[utoipa::path(get, path = "/v1/tasks/{task_id}/events", tag = "tasks",
    params(("task_id" = uuid::Uuid, Path, description = "The task")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The task's history: every archived event about it, in commit order (at most 1,000)", body = TaskHistory),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this caller", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_task_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(task_id): ApiPath<uuid::Uuid>,
) -> Result<Json<TaskHistory>, ApiError> {
    of_task(&state, caller.read_scope()?, TaskId(task_id)).await?.map(Json).ok_or(ApiError::NotFound("task"))
}

#[utoipa::path(delete, path = "/v1/tasks/{task_id}", tag = "tasks",
    params(("task_id" = uuid::Uuid, Path, description = "The task")), security(("bearer" = [])),
    responses(
        (status = 202, description = "Cancellation accepted", body = CommandAccepted),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this caller", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel_task(
    State(state): State<AppState>,
    caller: Credential,
    headers: HeaderMap,
    ApiPath(task_id): ApiPath<uuid::Uuid>,
) -> Result<(StatusCode, Json<CommandAccepted>), ApiError> {
    let organization_id = caller.organization()?;
    let task_id = TaskId(task_id);
    let Some(task) = find_task(&state, Some(organization_id), task_id).await? else {
        return Err(ApiError::NotFound("task"));
    };
    // To the writer of the task's cell.
    let cell = known_cell(&state, &task.cell)?;
    let command = Command::CancelTask(CancelTask { task_id });
    let origin = origin_of(&caller, correlation_id(&headers));
    let command_id = publish(&state, &cell, Stream::Commands, &caller, origin, &command).await?;
    Ok((StatusCode::ACCEPTED, Json(CommandAccepted { command_id: command_id.as_uuid() })))
}
