//! `POST /v1/organizations` (operator): creates an organisation and answers its API key, once.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use grid_shared::domain::OrganizationName;
use grid_shared::ids::{MessageId, OrganizationId};
use grid_shared::messages::{Command, CreateOrganization, Sha256Hex};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{API_KEY_PREFIX, Caller, new_secret};
use crate::error::{ApiError, Problem};
use crate::extract::ApiJson;
use crate::publish::{Stream, correlation_id, origin_of, publish};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/organizations", post(create_organization))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganizationRequest {
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateOrganizationResponse {
    pub organization_id: uuid::Uuid,
    /// Shown once: only its SHA-256 is kept. Usable once the command is applied.
    pub api_key: String,
    pub command_id: uuid::Uuid,
}

#[utoipa::path(post, path = "/v1/organizations", tag = "organizations",
    request_body = CreateOrganizationRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Creation accepted; poll the command", body = CreateOrganizationResponse),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_organization(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateOrganizationRequest>,
) -> Result<(StatusCode, Json<CreateOrganizationResponse>), ApiError> {
    caller.operator()?;
    let name = OrganizationName::parse(&request.name)?;
    let organization_id = OrganizationId::new();
    let api_key = new_secret(API_KEY_PREFIX);
    let command = Command::CreateOrganization(CreateOrganization {
        organization_id,
        name,
        api_key_hash: Sha256Hex::of_secret(&api_key),
    });
    let command_id: MessageId =
        publish(&state, Stream::Commands, &caller, origin_of(&caller, correlation_id(&headers)), &command).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CreateOrganizationResponse {
            organization_id: organization_id.as_uuid(),
            api_key,
            command_id: command_id.as_uuid(),
        }),
    ))
}
