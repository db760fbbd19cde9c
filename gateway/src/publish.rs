//! Publishing to the command and report streams: one atomic MULTI that appends the entry and
//! remembers who issued it (for `GET /v1/commands/{id}` while it is pending).

use grid_shared::envelope::{Actor, Envelope, Message, Origin};
use grid_shared::ids::MessageId;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// How long a pending command's issuer is remembered; an orchestrator applies commands in
/// milliseconds, a week covers any outage.
const ISSUER_TTL_SECONDS: u64 = 7 * 24 * 3600;

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

/// Appends a message to its stream and returns its id.
pub async fn publish(
    state: &AppState,
    stream: Stream,
    caller: &Caller,
    origin: Origin,
    message: &impl Message,
) -> Result<MessageId, ApiError> {
    publish_with_id(state, stream, caller, origin, MessageId::new(), message).await
}

/// Like [`publish`], with an id chosen by the caller (to remember it before publishing).
pub async fn publish_with_id(
    state: &AppState,
    stream: Stream,
    caller: &Caller,
    origin: Origin,
    id: MessageId,
    message: &impl Message,
) -> Result<MessageId, ApiError> {
    let envelope = Envelope::wrap_with_id(id, message, origin);
    let keys = state.keys();
    let stream_key = match stream {
        Stream::Commands => keys.commands(),
        Stream::Reports => keys.reports(),
    };
    let mut conn = state.redis.get().await?;
    redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(&stream_key)
        .arg("*")
        .arg("type")
        .arg(&envelope.message_type)
        .arg("envelope")
        .arg(envelope.to_json())
        .ignore()
        .cmd("SET")
        .arg(keys.command_issuer(envelope.id))
        .arg(caller.issuer_tag())
        .arg("EX")
        .arg(ISSUER_TTL_SECONDS)
        .ignore()
        .query_async::<()>(&mut *conn)
        .await?;
    tracing::info!(message_id = %envelope.id, message_type = %envelope.message_type,
        correlation_id = %envelope.correlation_id, "published");
    Ok(envelope.id)
}

/// The request's correlation id: the client's `X-Request-Id` when it is a UUID, else a new one.
pub fn correlation_id(headers: &axum::http::HeaderMap) -> Uuid {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| Uuid::parse_str(text).ok())
        .unwrap_or_else(Uuid::new_v4)
}
