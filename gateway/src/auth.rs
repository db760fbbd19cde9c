//! Bearer authentication. Three kinds of caller: the operator (key from config), an
//! organisation (API key `gk_…`) and a node (token `gn_…`). Keys and tokens are looked up by
//! their SHA-256, so the secret itself is never stored nor compared.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use grid_shared::ids::{NodeId, OrganizationId};
use grid_shared::messages::Sha256Hex;
use sqlx::Row;

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

/// A fixed one-second window per credential, shared by every gateway through Redis.
async fn enforce_rate_limit(state: &AppState, credential: &Sha256Hex) -> Result<(), ApiError> {
    let second = chrono::Utc::now().timestamp();
    let window = state.keys().rate_window(&credential.as_str()[..16], second);
    let mut conn = state.redis.get().await?;
    let (count,): (u64,) =
        redis::pipe().atomic().incr(&window, 1).expire(&window, 2).ignore().query_async(&mut *conn).await?;
    if count > u64::from(state.config.rate_limit_per_second) {
        return Err(ApiError::RateLimited { retry_after_seconds: 1 });
    }
    Ok(())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header =
            parts.headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok()).ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let hash = Sha256Hex::of_secret(token);
        // Counted per credential before it is checked, so a flood of guesses costs no lookups.
        enforce_rate_limit(state, &hash).await?;
        if constant_time_eq(token.as_bytes(), state.config.operator_key.as_bytes()) {
            return Ok(Self::Operator);
        }
        if token.starts_with(API_KEY_PREFIX) {
            let organization: Option<uuid::Uuid> =
                sqlx::query_scalar("select organization_id from api_key where key_hash = $1 and revoked_at is null")
                    .bind(hash.as_str())
                    .fetch_optional(&state.pool)
                    .await?;
            return organization.map(|id| Self::Organization(OrganizationId(id))).ok_or(ApiError::Unauthorized);
        }
        if token.starts_with(NODE_TOKEN_PREFIX) {
            if let Some(node) = state.node_tokens.get(hash.as_str()) {
                return Ok(Self::Node(node));
            }
            let row =
                sqlx::query("select node_id, organization_id, cpu_cores, has_solar from node where token_hash = $1")
                    .bind(hash.as_str())
                    .fetch_optional(&state.pool)
                    .await?
                    .ok_or(ApiError::Unauthorized)?;
            let cpu_cores: i32 = row.try_get("cpu_cores")?;
            let node = NodeCaller {
                node_id: NodeId(row.try_get("node_id")?),
                organization_id: OrganizationId(row.try_get("organization_id")?),
                cpu_cores: u16::try_from(cpu_cores).unwrap_or(1),
                has_solar: row.try_get("has_solar")?,
            };
            state.node_tokens.insert(hash.as_str(), node);
            return Ok(Self::Node(node));
        }
        Err(ApiError::Unauthorized)
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
