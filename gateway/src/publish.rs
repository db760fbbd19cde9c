//! Publishing to the command and report streams in one Redis round trip: a script admits the
//! credential (revocation marker, rate limit), honours an `Idempotency-Key`, appends the entry
//! and remembers its issuer in `{ns}:issuers` until the writer acknowledges it (for
//! `GET /v1/commands/{id}` while it is pending). Nothing is kept per message past its entry
//! but the idempotency answer, which expires after 24 h. A command finding
//! `GATEWAY_MAX_BACKLOG` commands not yet applied is refused (503, `Retry-After`): the grid
//! takes no more work than its writer can catch up with.

use grid_shared::envelope::{Actor, Envelope, Message, Origin};
use grid_shared::ids::MessageId;
use uuid::Uuid;

use crate::auth::{Caller, Credential, admission};
use crate::error::ApiError;
use crate::state::AppState;

/// The envelope's origin for a request by `caller`.
pub fn origin_of(caller: &Caller, correlation_id: Uuid) -> Origin {
    let (organization_id, actor) = match caller {
        Caller::Operator => (None, Actor::Operator),
        Caller::Organization(organization_id) => (Some(*organization_id), Actor::Organization(*organization_id)),
        Caller::Node(node) => (Some(node.organization_id), Actor::Node(node.node_id)),
    };
    Origin { correlation_id, causation_id: None, organization_id, actor }
}

pub enum Stream {
    Commands,
    Reports,
}

/// An `Idempotency-Key`'s Redis key, and the answer to remember under it.
pub struct Remember {
    pub key: String,
    pub answer: String,
    pub ttl_seconds: u64,
}

/// What publishing did.
pub enum Published {
    Appended(MessageId),
    /// The `Idempotency-Key` was seen: the answer remembered under it.
    Remembered(String),
}

/// Admission (see [`crate::auth::admission_lua`]), then the `Idempotency-Key`, the backlog
/// bound, the entry and its issuer. KEYS: 3 stream, 4 issuers, 5 idempotency key. ARGV: 3 type,
/// 4 envelope, 5 message id, 6 issuer, 7 answer to remember ('' without an idempotency key),
/// 8 its TTL, 9 the most entries the stream may hold ('0': no bound). The writer trims the
/// stream behind what it has acknowledged, so its length is the work not yet applied.
static PUBLISH_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(concat!(
        crate::auth::admission_lua!(),
        r"
local refused = refusal()
if refused then return {refused} end
if ARGV[7] ~= '' then
  local previous = redis.call('GET', KEYS[5])
  if previous then return {'remembered', previous} end
end
if ARGV[9] ~= '0' and redis.call('XLEN', KEYS[3]) >= tonumber(ARGV[9]) then return {'backlogged'} end
if ARGV[7] ~= '' then redis.call('SET', KEYS[5], ARGV[7], 'EX', ARGV[8]) end
redis.call('XADD', KEYS[3], '*', 'type', ARGV[3], 'envelope', ARGV[4])
redis.call('HSET', KEYS[4], ARGV[5], ARGV[6])
return {'appended'}
"
    ))
});

/// Appends a message to its stream and returns its id.
pub async fn publish(
    state: &AppState,
    stream: Stream,
    credential: &Credential,
    origin: Origin,
    message: &impl Message,
) -> Result<MessageId, ApiError> {
    match publish_once(state, stream, credential, origin, MessageId::new(), message, None).await? {
        Published::Appended(id) => Ok(id),
        Published::Remembered(_) => Err(ApiError::Internal("an answer was remembered without a key".to_owned())),
    }
}

/// Like [`publish`], with an id chosen by the caller and an optional `Idempotency-Key`.
pub async fn publish_once(
    state: &AppState,
    stream: Stream,
    credential: &Credential,
    origin: Origin,
    id: MessageId,
    message: &impl Message,
    remember: Option<Remember>,
) -> Result<Published, ApiError> {
    let envelope = Envelope::wrap_with_id(id, message, origin);
    let keys = state.keys();
    // New work waits behind a bounded backlog; reports finish work already accepted.
    let (stream_key, max_backlog) = match stream {
        Stream::Commands => (keys.commands(), state.config.max_backlog),
        Stream::Reports => (keys.reports(), 0),
    };
    let (remember_key, answer, ttl) = match &remember {
        Some(remember) => (remember.key.as_str(), remember.answer.as_str(), remember.ttl_seconds),
        None => (stream_key.as_str(), "", 0),
    };
    let mut conn = state.redis.get().await?;
    let reply: Vec<String> = credential
        .admission(state, &PUBLISH_SCRIPT)
        .key(&stream_key)
        .key(keys.issuers())
        .key(remember_key)
        .arg(&envelope.message_type)
        .arg(envelope.to_json())
        .arg(envelope.id.to_string())
        .arg(credential.issuer_tag())
        .arg(answer)
        .arg(ttl)
        .arg(max_backlog)
        .invoke_async(&mut *conn)
        .await?;
    match reply.first().map(String::as_str) {
        Some("appended") => {
            tracing::info!(message_id = %envelope.id, message_type = %envelope.message_type,
                correlation_id = %envelope.correlation_id, "published");
            Ok(Published::Appended(envelope.id))
        }
        Some("remembered") => Ok(Published::Remembered(reply.get(1).cloned().unwrap_or_default())),
        Some("backlogged") => {
            state.pressure.backlog_full();
            Err(ApiError::Backlogged)
        }
        Some(verdict) => {
            admission(verdict, state, credential)?;
            Err(ApiError::Internal(format!("the publish script answered {verdict:?}")))
        }
        None => Err(ApiError::Internal("the publish script answered nothing".to_owned())),
    }
}

/// The request's correlation id: the client's `X-Request-Id` when it is a UUID, else a new one.
pub fn correlation_id(headers: &axum::http::HeaderMap) -> Uuid {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| Uuid::parse_str(text).ok())
        .unwrap_or_else(Uuid::new_v4)
}
