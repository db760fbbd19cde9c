//! Bearer authentication. Three kinds of caller: the operator (key from config), an
//! organisation (API key `gk_…`) and a node (token `gn_…`). Keys and tokens are looked up by
//! their SHA-256, so the secret itself is never stored nor compared.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use grid_shared::cells::CellName;
use grid_shared::ids::{NodeId, OrganizationId};
use grid_shared::messages::Sha256Hex;
use grid_shared::wire::Keys;
use grid_shared::wire::scripts::{self, Admission, AdmissionCheck};

use crate::error::ApiError;
use crate::state::AppState;

pub const API_KEY_PREFIX: &str = "gk_";
pub const NODE_TOKEN_PREFIX: &str = "gn_";

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeCaller {
    pub node_id: NodeId,
    pub organization_id: OrganizationId,
    pub cpu_cores: u16,
    pub has_solar: bool,
    /// Its cell's place in `GRID_CELLS` (see [`AppState::node_cell`]): its heartbeats, reports
    /// and task channel are that cell's.
    pub cell: u16,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Caller {
    Operator,
    Organization(OrganizationId),
    Node(NodeCaller),
}

impl Caller {
    pub fn organization(&self) -> Result<OrganizationId, ApiError> {
        match self {
            Self::Organization(organization_id) => Ok(*organization_id),
            _ => Err(ApiError::Forbidden("this route takes an organisation API key")),
        }
    }

    pub fn operator(&self) -> Result<(), ApiError> {
        match self {
            Self::Operator => Ok(()),
            _ => Err(ApiError::Forbidden("this route takes the operator key")),
        }
    }

    /// The node, when the caller is that node; another node's id is "not found".
    pub fn node(&self, node_id: NodeId) -> Result<NodeCaller, ApiError> {
        match self {
            Self::Node(node) if node.node_id == node_id => Ok(*node),
            Self::Node(_) => Err(ApiError::NotFound("node")),
            _ => Err(ApiError::Forbidden("this route takes the node's token")),
        }
    }

    /// The organisation whose data the caller may read; `None` for the operator (everything).
    pub fn read_scope(&self) -> Result<Option<OrganizationId>, ApiError> {
        match self {
            Self::Operator => Ok(None),
            Self::Organization(organization_id) => Ok(Some(*organization_id)),
            Self::Node(_) => Err(ApiError::Forbidden("this route takes an organisation API key or the operator key")),
        }
    }

    /// How the issuer of a command is remembered while it is pending.
    pub fn issuer_tag(&self) -> String {
        match self {
            Self::Operator => "operator".to_owned(),
            Self::Organization(organization_id) => format!("organization:{organization_id}"),
            Self::Node(node) => format!("node:{}", node.node_id),
        }
    }
}

/// Compares two secrets in time that depends on their lengths only.
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter().zip(right).fold(0_u8, |difference, (a, b)| difference | (a ^ b)) == 0
}

/// A fresh 256-bit secret with its prefix, as hex.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    format!("{prefix}{}", hex::encode(bytes))
}

/// A caller authenticated without Redis: by the operator key, or by a key or token found in the
/// cache (PostgreSQL is asked only on a miss, or when the entry is [`AuthCache::FRESH_FOR`]
/// old). Its admission (revocation marker, rate limit) is checked in the same Redis round trip
/// as the request's write: see [`crate::publish`] and [`crate::routes::nodes::record_heartbeat`].
/// Routes that write nothing take [`Caller`], whose extractor admits with a round trip of its own.
#[derive(Debug, Clone)]
pub struct Credential {
    pub caller: Caller,
    /// The SHA-256 of the key or token presented.
    pub sha256: Sha256Hex,
}

impl std::ops::Deref for Credential {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl Credential {
    /// `{ns:cell}:rate:<first 16 hex digits>:<second>`: a fixed one-second window per credential
    /// and cell, shared by every gateway through Redis (in the slot of the cell written to, so
    /// that the script that writes checks it: a credential's limit holds in each cell).
    pub fn rate_window(&self, keys: &Keys) -> String {
        keys.rate_window(&self.sha256.as_str()[..16], chrono::Utc::now().timestamp())
    }

    /// Its admission check (revocation marker, rate limit) in the cell whose `keys` the request
    /// writes, which every gateway script starts with (see `grid_shared::wire::scripts`). A
    /// revoked key's marker is written under every cell's tag.
    pub fn admission_check(&self, state: &AppState, keys: &Keys) -> AdmissionCheck {
        AdmissionCheck {
            rate_window: self.rate_window(keys),
            revocation_marker: keys.revoked_credential(self.sha256.as_str()),
            limit_per_second: state.config.rate_limit_per_second,
            revocable: self.revocable(),
        }
    }

    /// Whether a revocation marker can refuse it: API keys only (the operator key comes from the
    /// configuration, node tokens are never revoked).
    pub fn revocable(&self) -> bool {
        matches!(self.caller, Caller::Organization(_))
    }
}

/// What an admission check answered means for the request. The scripts' wrappers refuse an
/// answer they do not know (`ScriptError::Unknown`, a 500): the check fails closed, never open.
pub fn admission(answer: Admission, state: &AppState, credential: &Credential) -> Result<(), ApiError> {
    match answer {
        Admission::Admitted => Ok(()),
        Admission::Revoked => {
            state.auth.forget(credential.sha256.as_str());
            Err(ApiError::Unauthorized)
        }
        Admission::Limited => Err(ApiError::RateLimited { retry_after_seconds: 1 }),
    }
}

async fn admit(state: &AppState, credential: &Credential) -> Result<(), ApiError> {
    let mut conn = state.redis.get().await?;
    let answer = scripts::admit(&mut conn, &credential.admission_check(state, state.keys())).await?;
    admission(answer, state, credential)
}

/// Looks a key or token up in PostgreSQL: `None` when it is unknown (or revoked).
async fn look_up(state: &AppState, token: &str, hash: &Sha256Hex) -> Result<Option<Caller>, ApiError> {
    if token.starts_with(API_KEY_PREFIX) {
        let organization: Option<uuid::Uuid> = sqlx::query_scalar!(
            "select organization_id from api_key where key_hash = $1 and revoked_at is null",
            hash.as_str()
        )
        .fetch_optional(&state.pool)
        .await?;
        return Ok(organization.map(|id| Caller::Organization(OrganizationId(id))));
    }
    let row = sqlx::query!(
        "select node_id, organization_id, cpu_cores, has_solar, cell_id from node where token_hash = $1",
        hash.as_str()
    )
    .fetch_optional(&state.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let cpu_cores: i32 = row.cpu_cores;
    let cell_id: String = row.cell_id;
    let cells = &state.config.grid.cells;
    let Some(cell) = CellName::parse(&cell_id).ok().and_then(|cell| cells.position(&cell)) else {
        tracing::warn!(cell = %cell_id, "a node of a cell this gateway's GRID_CELLS does not name");
        return Err(ApiError::Forbidden("this node's cell is not one this gateway serves (see GRID_CELLS)"));
    };
    Ok(Some(Caller::Node(NodeCaller {
        node_id: NodeId(row.node_id),
        organization_id: OrganizationId(row.organization_id),
        cpu_cores: u16::try_from(cpu_cores).unwrap_or(1),
        has_solar: row.has_solar,
        cell: u16::try_from(cell).unwrap_or(0),
    })))
}

impl FromRequestParts<AppState> for Credential {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header =
            parts.headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok()).ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let sha256 = Sha256Hex::of_secret(token);
        if constant_time_eq(token.as_bytes(), state.config.operator_key.as_bytes()) {
            return Ok(Self { caller: Caller::Operator, sha256 });
        }
        if !token.starts_with(API_KEY_PREFIX) && !token.starts_with(NODE_TOKEN_PREFIX) {
            return Err(ApiError::Unauthorized);
        }
        let cached = state.auth.get(sha256.as_str());
        if let Some((caller, age)) = cached
            && age < AuthCache::FRESH_FOR
        {
            return Ok(Self { caller, sha256 });
        }
        match look_up(state, token, &sha256).await {
            Ok(Some(caller)) => {
                state.auth.insert(sha256.as_str(), caller);
                Ok(Self { caller, sha256 })
            }
            Ok(None) => {
                state.auth.forget(sha256.as_str());
                Err(ApiError::Unauthorized)
            }
            // A node of a cell this gateway does not serve: its configuration, not PostgreSQL.
            Err(error @ ApiError::Forbidden(_)) => Err(error),
            // PostgreSQL down or slow: a known credential goes on working for a while.
            Err(error) => match cached {
                Some((caller, age)) if age < AuthCache::USABLE_FOR => {
                    tracing::warn!(%error, "PostgreSQL did not answer; using the cached credential");
                    Ok(Self { caller, sha256 })
                }
                _ => Err(error),
            },
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// Authenticates, then admits (revocation marker and rate limit) in one Redis round trip.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let credential = Credential::from_request_parts(parts, state).await?;
        admit(state, &credential).await?;
        Ok(credential.caller)
    }
}

/// Keys and tokens found in PostgreSQL, by their SHA-256, with when they were read. Bounded:
/// past [`AuthCache::MAX_ENTRIES`] it starts over.
#[derive(Debug, Default)]
pub struct AuthCache {
    known: std::sync::RwLock<std::collections::HashMap<String, (Caller, std::time::Instant)>>,
}

impl AuthCache {
    const MAX_ENTRIES: usize = 200_000;
    /// An entry this young is used without asking PostgreSQL.
    pub const FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(600);
    /// An older one is used only when PostgreSQL does not answer, and not past this age: well
    /// inside the day a revocation marker is kept.
    pub const USABLE_FOR: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

    pub fn get(&self, sha256: &str) -> Option<(Caller, std::time::Duration)> {
        let known = self.known.read().expect("not poisoned");
        known.get(sha256).map(|(caller, read_at)| (*caller, read_at.elapsed()))
    }

    pub fn insert(&self, sha256: &str, caller: Caller) {
        let mut known = self.known.write().expect("not poisoned");
        if known.len() >= Self::MAX_ENTRIES {
            known.clear();
        }
        known.insert(sha256.to_owned(), (caller, std::time::Instant::now()));
    }

    pub fn forget(&self, sha256: &str) {
        self.known.write().expect("not poisoned").remove(sha256);
    }

    pub fn len(&self) -> usize {
        self.known.read().expect("not poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_256_bit_hex_with_their_prefix() {
        let key = new_secret(API_KEY_PREFIX);
        assert_eq!(key.len(), 3 + 64);
        assert!(key.starts_with("gk_"));
        assert_ne!(key, new_secret(API_KEY_PREFIX));
    }

    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
