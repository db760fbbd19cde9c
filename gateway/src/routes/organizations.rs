//! `POST /v1/organizations` (operator): creates an organisation and answers its API key, once.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use axum::{Json, Router};
use grid_shared::domain::FieldError;
use grid_shared::domain::OrganizationName;
use grid_shared::ids::{MessageId, OrganizationId};
use grid_shared::messages::{Command, CreateOrganization, DeclareEnergyContract, RotateApiKey, Sha256Hex};
use grid_shared::signals::MAX_INTENSITY_MG_PER_KWH;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{API_KEY_PREFIX, Caller, Credential, new_secret};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiPath};
use crate::publish::publish_organisation_level;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/organizations", post(create_organization))
        .route("/v1/organizations/{organization_id}/keys", post(rotate_key))
        .route("/v1/organizations/{organization_id}/energy-contract", put(declare_energy_contract))
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
    caller: Credential,
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
    let command_id: MessageId = publish_organisation_level(&state, &caller, &headers, &command).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CreateOrganizationResponse {
            organization_id: organization_id.as_uuid(),
            api_key,
            command_id: command_id.as_uuid(),
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// Whether the organisation's other keys stop working (default true).
    #[serde(default)]
    pub revoke_previous: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RotateKeyResponse {
    /// Shown once: only its SHA-256 is kept. It works, and the previous keys stop, once the
    /// command is applied.
    pub api_key: String,
    pub command_id: uuid::Uuid,
}

#[utoipa::path(post, path = "/v1/organizations/{organization_id}/keys", tag = "organizations",
    request_body = RotateKeyRequest,
    params(("organization_id" = uuid::Uuid, Path, description = "The organisation")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Rotation accepted; poll the command", body = RotateKeyResponse),
        (status = 404, description = "Not this caller's organisation", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn rotate_key(
    State(state): State<AppState>,
    caller: Credential,
    headers: HeaderMap,
    ApiPath(organization_id): ApiPath<uuid::Uuid>,
    ApiJson(request): ApiJson<RotateKeyRequest>,
) -> Result<(StatusCode, Json<RotateKeyResponse>), ApiError> {
    let organization_id = own_organization(&caller, organization_id)?;
    let api_key = new_secret(API_KEY_PREFIX);
    let command = Command::RotateApiKey(RotateApiKey {
        organization_id,
        api_key_hash: Sha256Hex::of_secret(&api_key),
        revoke_previous: request.revoke_previous.unwrap_or(true),
    });
    let command_id = publish_organisation_level(&state, &caller, &headers, &command).await?;
    Ok((StatusCode::ACCEPTED, Json(RotateKeyResponse { api_key, command_id: command_id.as_uuid() })))
}

/// The organisation a route names, when the caller may act for it: the operator for any, an
/// organisation for itself. Another organisation's id is "not found": existence does not leak.
fn own_organization(caller: &Credential, organization_id: uuid::Uuid) -> Result<OrganizationId, ApiError> {
    let organization_id = OrganizationId(organization_id);
    match caller.caller {
        Caller::Operator => Ok(organization_id),
        Caller::Organization(own) if own == organization_id => Ok(organization_id),
        Caller::Organization(_) => Err(ApiError::NotFound("organisation")),
        Caller::Node(_) => Err(ApiError::Forbidden("this route takes an organisation API key or the operator key")),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnergyContractRequest {
    /// The emission factor of the contract the organisation's nodes draw grid energy under, in
    /// mg CO₂e per kWh (integer, 0 to 2,000,000): 0 for a tariff backed by guarantees of origin
    /// of wind or sun, the supplier's disclosed mix otherwise.
    #[schema(minimum = 0, maximum = 2000000, example = 0)]
    pub factor_mg_per_kwh: i64,
    /// What the contract is (1 to 100 characters), shown beside the market-based figures.
    #[schema(min_length = 1, max_length = 100, example = "Green tariff, wind guarantees of origin")]
    pub label: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnergyContractResponse {
    pub command_id: uuid::Uuid,
}

#[utoipa::path(put, path = "/v1/organizations/{organization_id}/energy-contract", tag = "organizations",
    request_body = EnergyContractRequest,
    params(("organization_id" = uuid::Uuid, Path, description = "The organisation")),
    security(("bearer" = [])),
    description = "Declares the electricity contract of the organisation's nodes: the factor of its market-based (Scope 2) \
                   figures in `GET /v1/reports/emissions`, reported beside the location-based ones and never netted into \
                   them. A new declaration replaces the previous one from the time it is applied.",
    responses(
        (status = 202, description = "Declaration accepted; poll the command", body = EnergyContractResponse),
        (status = 404, description = "Not this caller's organisation", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid factor or label", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn declare_energy_contract(
    State(state): State<AppState>,
    caller: Credential,
    headers: HeaderMap,
    ApiPath(organization_id): ApiPath<uuid::Uuid>,
    ApiJson(request): ApiJson<EnergyContractRequest>,
) -> Result<(StatusCode, Json<EnergyContractResponse>), ApiError> {
    let organization_id = own_organization(&caller, organization_id)?;
    let mut problems = Vec::new();
    if !(0..=MAX_INTENSITY_MG_PER_KWH).contains(&request.factor_mg_per_kwh) {
        problems
            .push(FieldError::new("factor_mg_per_kwh", format!("must be between 0 and {MAX_INTENSITY_MG_PER_KWH}")));
    }
    let label = request.label.trim();
    if label.is_empty() || label.chars().count() > 100 || label.chars().any(char::is_control) {
        problems.push(FieldError::new("label", "must be 1 to 100 characters, without control characters"));
    }
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    let command = Command::DeclareEnergyContract(DeclareEnergyContract {
        organization_id,
        factor_mg_per_kwh: request.factor_mg_per_kwh,
        label: label.to_owned(),
    });
    let command_id = publish_organisation_level(&state, &caller, &headers, &command).await?;
    Ok((StatusCode::ACCEPTED, Json(EnergyContractResponse { command_id: command_id.as_uuid() })))
}
