//! `GET /v1/commands/{id}`: pending, applied or rejected, for whoever issued it.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use grid_shared::ids::MessageId;

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::extract::ApiPath;
use crate::read_model::commands::{CommandView, find_command};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/commands/{command_id}", get(get_command))
}

#[utoipa::path(get, path = "/v1/commands/{command_id}", tag = "commands",
    params(("command_id" = uuid::Uuid, Path, description = "The id answered when the command was accepted")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The command's status", body = CommandView),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown to this caller", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_command(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(command_id): ApiPath<uuid::Uuid>,
) -> Result<Json<CommandView>, ApiError> {
    find_command(&state, &caller, MessageId(command_id)).await?.map(Json).ok_or(ApiError::NotFound("command"))
}
