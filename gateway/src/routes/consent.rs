//! `PUT`, `GET`, `DELETE /v1/owners/{owner_id}/consent`: an owner's GDPR consent within the
//! calling organisation, and `GET /v1/owners`: its owners' states. The address recorded with a
//! grant is the peer's (GDPR Art. 30).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use axum::{Extension, Json, Router};
use grid_shared::ids::OwnerId;
use grid_shared::messages::{Command, GrantConsent, RevokeConsent};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Caller, Credential};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiPath};
use crate::publish::publish_organisation_level;
use crate::routes::nodes::CommandAccepted;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/owners", axum::routing::get(list))
        .route("/v1/owners/{owner_id}/consent", put(grant).get(read).delete(revoke))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OwnerQuery {
    /// Owners after this one (the previous page's `next_after`).
    pub after: Option<uuid::Uuid>,
    /// 1 to 1000; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OwnerConsent {
    pub owner_id: uuid::Uuid,
    pub granted: bool,
    pub granted_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    pub consent_version: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OwnerPage {
    /// By owner id.
    pub owners: Vec<OwnerConsent>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<uuid::Uuid>,
}

#[utoipa::path(get, path = "/v1/owners", tag = "consent", params(OwnerQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "The organisation's data owners with their consent state (the history is on each owner's consent)", body = OwnerPage),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    crate::extract::ApiQuery(query): crate::extract::ApiQuery<OwnerQuery>,
) -> Result<Json<OwnerPage>, ApiError> {
    let organization_id = caller.organization()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    let mut owners = sqlx::query_as!(
        OwnerConsent,
        "select owner_id, granted, granted_at, revoked_at, consent_version from consent
         where organization_id = $1 and ($2::uuid is null or owner_id > $2) order by owner_id limit $3",
        organization_id.as_uuid(),
        query.after,
        limit + 1
    )
    .fetch_all(&state.pool)
    .await?;
    let more = owners.len() as i64 > limit;
    owners.truncate(usize::try_from(limit).unwrap_or(0));
    let next_after = if more { owners.last().map(|owner| owner.owner_id) } else { None };
    Ok(Json(OwnerPage { owners, next_after }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantConsentRequest {
    /// The version of the consent clause the owner accepted (1 to 64 characters).
    #[schema(min_length = 1, max_length = 64)]
    pub consent_version: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsentChange {
    /// `granted` or `revoked`.
    pub action: String,
    pub at: chrono::DateTime<chrono::Utc>,
    pub consent_version: Option<String>,
    /// The client address of a grant (GDPR Art. 30).
    pub consent_ip: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsentView {
    pub owner_id: uuid::Uuid,
    pub granted: bool,
    pub granted_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    pub consent_version: String,
    pub consent_ip: Option<String>,
    /// Every grant and revocation, oldest first.
    pub history: Vec<ConsentChange>,
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest address
/// in `X-Forwarded-For` that is not one of ours. A malformed header is not believed.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let Some(forwarded) = headers.get("x-forwarded-for").and_then(|value| value.to_str().ok()) else {
        return Some(peer);
    };
    for candidate in forwarded.split(',').rev().map(str::trim) {
        let Ok(address) = candidate.parse::<IpAddr>() else { return Some(peer) };
        if !trusted.contains(&address) {
            return Some(address);
        }
    }
    Some(peer)
}

#[utoipa::path(put, path = "/v1/owners/{owner_id}/consent", tag = "consent", request_body = GrantConsentRequest,
    params(("owner_id" = uuid::Uuid, Path, description = "The data owner")), security(("bearer" = [])),
    responses(
        (status = 202, description = "Grant accepted", body = CommandAccepted),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn grant(
    State(state): State<AppState>,
    caller: Credential,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ApiPath(owner_id): ApiPath<uuid::Uuid>,
    ApiJson(request): ApiJson<GrantConsentRequest>,
) -> Result<(StatusCode, Json<CommandAccepted>), ApiError> {
    caller.organization()?;
    let version = request.consent_version.trim();
    if version.is_empty() || version.len() > 64 || version.chars().any(char::is_control) {
        return Err(ApiError::field("consent_version", "must be 1 to 64 printable characters"));
    }
    let command = Command::GrantConsent(GrantConsent {
        owner_id: OwnerId(owner_id),
        consent_version: version.to_owned(),
        consent_ip: client_ip(
            peer.map(|Extension(ConnectInfo(address))| address.ip()),
            &headers,
            &state.config.trusted_proxies,
        )
        .map(|address| address.to_string()),
    });
    let command_id = publish_organisation_level(&state, &caller, &headers, &command).await?;
    Ok((StatusCode::ACCEPTED, Json(CommandAccepted { command_id: command_id.as_uuid() })))
}

#[utoipa::path(get, path = "/v1/owners/{owner_id}/consent", tag = "consent",
    params(("owner_id" = uuid::Uuid, Path, description = "The data owner")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The owner's consent", body = ConsentView),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No consent recorded", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(owner_id): ApiPath<uuid::Uuid>,
) -> Result<Json<ConsentView>, ApiError> {
    let organization_id = caller.organization()?;
    let consent = sqlx::query!(
        "select granted, granted_at, revoked_at, consent_version, consent_ip from consent
         where owner_id = $1 and organization_id = $2",
        owner_id,
        organization_id.as_uuid()
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound("consent"))?;
    let history = sqlx::query_as!(
        ConsentChange,
        "select action, at, consent_version, consent_ip from consent_history
         where organization_id = $1 and owner_id = $2 order by consent_history_id",
        organization_id.as_uuid(),
        owner_id
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(ConsentView {
        owner_id,
        granted: consent.granted,
        granted_at: consent.granted_at,
        revoked_at: consent.revoked_at,
        consent_version: consent.consent_version,
        consent_ip: consent.consent_ip,
        history,
    }))
}

#[utoipa::path(delete, path = "/v1/owners/{owner_id}/consent", tag = "consent",
    params(("owner_id" = uuid::Uuid, Path, description = "The data owner")), security(("bearer" = [])),
    responses(
        (status = 202, description = "Revocation accepted", body = CommandAccepted),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Credential,
    headers: HeaderMap,
    ApiPath(owner_id): ApiPath<uuid::Uuid>,
) -> Result<(StatusCode, Json<CommandAccepted>), ApiError> {
    caller.organization()?;
    let command = Command::RevokeConsent(RevokeConsent { owner_id: OwnerId(owner_id) });
    let command_id = publish_organisation_level(&state, &caller, &headers, &command).await?;
    Ok((StatusCode::ACCEPTED, Json(CommandAccepted { command_id: command_id.as_uuid() })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn the_forwarded_address_is_believed_only_from_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        let headers = forwarded("203.0.113.5, 10.0.0.2");
        assert_eq!(client_ip(Some(stranger), &headers, &[proxy]), Some(stranger));
        assert_eq!(client_ip(Some(proxy), &headers, &[proxy]), "203.0.113.5".parse().ok());
        assert_eq!(client_ip(Some(proxy), &forwarded("not-an-ip"), &[proxy]), Some(proxy));
        assert_eq!(client_ip(Some(proxy), &HeaderMap::new(), &[proxy]), Some(proxy));
        assert_eq!(client_ip(None, &headers, &[proxy]), None);
    }
}
