//! One error type for the whole API, answered as `application/problem+json` (RFC 9457) with a
//! stable `type` per kind. Server-side failures are logged with their cause and answered with a
//! generic text: internal details never reach the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use grid_shared::domain::FieldError;
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_BASE: &str = "https://koprogo.coop/grid/problems/";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedBody(String),
    #[error("the request does not match the expected shape: {0}")]
    InvalidBody(String),
    #[error("the query string is not valid: {0}")]
    InvalidQuery(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("a bearer token is required, and this one is not valid")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many requests with this credential; retry after {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    #[error("this route does not take this method")]
    MethodNotAllowed,
    #[error("this route is a WebSocket: send a GET with `Connection: Upgrade` and `Upgrade: websocket` ({0})")]
    UpgradeRequired(String),
    #[error("the request body is larger than this server accepts")]
    PayloadTooLarge,
    #[error("the request took longer than this server allows")]
    Timeout,
    #[error("no route here")]
    NoRoute,
    #[error("a dependency is unavailable")]
    Unavailable(String),
    #[error("the gateway is at capacity; retry after 1 s")]
    Overloaded,
    #[error("the grid has as many commands waiting as it takes (GATEWAY_MAX_BACKLOG); retry after 1 s")]
    Backlogged,
    #[error("internal error")]
    Internal(String),
}

/// The problem document.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A stable URI naming the kind of problem.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For validation problems: each field (as a JSON path) and why it was refused.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<ProblemField>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ProblemField {
    pub field: String,
    pub reason: String,
}

impl ApiError {
    pub fn field(field: &str, reason: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, reason)])
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::MalformedBody(_) => (StatusCode::BAD_REQUEST, "malformed-body", "Malformed request body"),
            Self::InvalidBody(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", "Request body has the wrong shape")
            }
            Self::InvalidQuery(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-query", "Invalid query string"),
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation-failed", "Validation failed"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type")
            }
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed"),
            Self::UpgradeRequired(_) => (StatusCode::UPGRADE_REQUIRED, "upgrade-required", "Upgrade required"),
            Self::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout", "Request timed out"),
            Self::NoRoute => (StatusCode::NOT_FOUND, "no-route", "No such route"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            Self::Overloaded | Self::Backlogged => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Over capacity"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal server error"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.parts();
        let detail = match self {
            Self::Unavailable(_) => "a backing service is unavailable; retry later".to_owned(),
            Self::Internal(_) => "an internal error occurred; it has been logged".to_owned(),
            Self::MalformedBody(text)
            | Self::InvalidBody(text)
            | Self::InvalidQuery(text)
            | Self::Conflict(text)
            | Self::UnsupportedMediaType(text) => text.clone(),
            other => other.to_string(),
        };
        let errors = match self {
            Self::Validation(fields) => fields
                .iter()
                .map(|error| ProblemField { field: error.field.clone(), reason: error.reason.clone() })
                .collect(),
            _ => Vec::new(),
        };
        let detail = match self {
            Self::Validation(fields) => fields.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            _ => detail,
        };
        Problem {
            problem_type: format!("{PROBLEM_BASE}{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Unavailable(cause) => {
                tracing::warn!(cause, "request failed: dependency unavailable")
            }
            Self::Internal(cause) => tracing::error!(cause, "request failed: internal error"),
            _ => {}
        }
        let (status, _, _) = self.parts();
        let mut response = (status, Json(self.problem())).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if matches!(self, Self::Unauthorized) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, Self::UpgradeRequired(_)) {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        match self {
            Self::RateLimited { retry_after_seconds } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            }
            // Every 503 says when to come back: a dependency lost, a timeout, or no capacity.
            Self::Unavailable(_) | Self::Timeout | Self::Overloaded | Self::Backlogged => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            _ => {}
        }
        response
    }
}

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        Self::Validation(vec![error])
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::Unavailable(error.to_string())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(error: redis::RedisError) -> Self {
        Self::Unavailable(format!("redis: {error}"))
    }
}

impl From<grid_shared::wire::scripts::ScriptError> for ApiError {
    /// Redis unreachable is a 503; an answer the script's wrapper does not know refuses the
    /// request (500, logged), it never admits it.
    fn from(error: grid_shared::wire::scripts::ScriptError) -> Self {
        match error {
            grid_shared::wire::scripts::ScriptError::Redis(error) => error.into(),
            unknown => Self::Internal(unknown.to_string()),
        }
    }
}
