//! Publishing to the command and report streams in one Redis round trip: a script
//! (`grid_shared::wire`'s `lua/publish.lua`) admits the credential (revocation marker, rate limit), honours an `Idempotency-Key`, appends the entry
//! and remembers its issuer in `{ns}:issuers` until the writer acknowledges it (for
//! `GET /v1/commands/{id}` while it is pending). Nothing is kept per message past its entry
//! but the idempotency answer, which expires after 24 h. A command finding
//! `GATEWAY_MAX_BACKLOG` commands not yet applied is refused (503, `Retry-After`): the grid
//! takes no more work than its writer can catch up with.

use grid_shared::cells::CellName;
use grid_shared::envelope::{Actor, Envelope, Message, Origin};
use grid_shared::ids::MessageId;
use uuid::Uuid;

use grid_shared::wire::scripts;

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

/// What publishing did.
pub enum Published {
    Appended(MessageId),
    /// The `Idempotency-Key` was seen: the answer remembered under it.
    Remembered(String),
}

/// Appends a message to its stream in `cell` and returns its id.
pub async fn publish(
    state: &AppState,
    cell: &CellName,
    stream: Stream,
    credential: &Credential,
    origin: Origin,
    message: &(impl Message + serde::Serialize),
) -> Result<MessageId, ApiError> {
    match publish_once(state, cell, stream, credential, origin, MessageId::new(), message, None).await? {
        Published::Appended(id) => Ok(id),
        Published::Remembered(_) => Err(ApiError::Internal("an answer was remembered without a key".to_owned())),
    }
}

/// Publishes an organisation-level command (organisation, key, consent, contract) from a
/// request: to the default cell, whose writer alone applies them (README, Cells).
pub async fn publish_organisation_level(
    state: &AppState,
    credential: &Credential,
    headers: &axum::http::HeaderMap,
    command: &grid_shared::messages::Command,
) -> Result<MessageId, ApiError> {
    let origin = origin_of(credential, correlation_id(headers));
    publish(state, state.default_cell(), Stream::Commands, credential, origin, command).await
}

/// Like [`publish`], with an id chosen by the caller and an optional `Idempotency-Key`: the
/// publish script (`grid_shared::wire::scripts::Publish`) admits the credential, honours the
/// key, bounds the backlog, appends the entry and remembers its issuer, in one round trip, in
/// the slot of `cell` (the `remember` key must be one of that cell's).
#[allow(clippy::too_many_arguments)]
pub async fn publish_once(
    state: &AppState,
    cell: &CellName,
    stream: Stream,
    credential: &Credential,
    origin: Origin,
    id: MessageId,
    message: &(impl Message + serde::Serialize),
    remember: Option<scripts::Remember<'_>>,
) -> Result<Published, ApiError> {
    // The payload written straight from the message, not through a `serde_json::Value`.
    let envelope = Envelope::header_at(id, chrono::Utc::now(), message, origin);
    let keys = state.cell_keys(cell);
    // New work waits behind a bounded backlog; reports finish work already accepted.
    let (stream_key, max_backlog) = match stream {
        Stream::Commands => (keys.commands(), state.config.max_backlog),
        Stream::Reports => (keys.reports(), 0),
    };
    let check = credential.admission_check(state, keys);
    let issuers = keys.issuers();
    let envelope_json = envelope.text_with(message);
    let message_id = envelope.id.to_string();
    let issuer = credential.issuer_tag();
    let script = scripts::Publish {
        admission: &check,
        stream: &stream_key,
        issuers: &issuers,
        message_type: &envelope.message_type,
        envelope_json: &envelope_json,
        message_id: &message_id,
        issuer: &issuer,
        remember,
        max_backlog,
    };
    let mut conn = state.redis.get().await?;
    let published = script.run(&mut conn).await?;
    if published == scripts::Published::Appended {
        tracing::info!(message_id = %envelope.id, message_type = %envelope.message_type,
            correlation_id = %envelope.correlation_id, "published");
    }
    outcome(state, credential, published, envelope.id)
}

/// Publishes `commands` (each with its id and origin) to the command stream of `cell` in one
/// round trip, all or none, under one optional `Idempotency-Key` (`remember`, a key of that
/// cell): the batch form of [`publish_once`]. The batch is admitted as one request, and while
/// the stream holds fewer than `GATEWAY_MAX_BACKLOG` commands.
pub async fn publish_commands(
    state: &AppState,
    cell: &CellName,
    credential: &Credential,
    commands: &[(MessageId, Origin, grid_shared::messages::Command)],
    remember: Option<scripts::Remember<'_>>,
) -> Result<Published, ApiError> {
    let Some((first_id, _, first)) = commands.first() else {
        return Err(ApiError::Internal("an empty batch reached publishing".to_owned()));
    };
    // The script appends every entry under one type.
    if commands.iter().any(|(_, _, command)| command.message_type() != first.message_type()) {
        return Err(ApiError::Internal("a batch of commands of several types reached publishing".to_owned()));
    }
    let now = chrono::Utc::now();
    let entries: Vec<(String, String)> = commands
        .iter()
        .map(|(id, origin, command)| {
            let envelope = Envelope::header_at(*id, now, command, *origin);
            (envelope.id.to_string(), envelope.text_with(command))
        })
        .collect();
    let keys = state.cell_keys(cell);
    let check = credential.admission_check(state, keys);
    let (stream, issuers) = (keys.commands(), keys.issuers());
    let issuer = credential.issuer_tag();
    let script = scripts::PublishBatch {
        admission: &check,
        stream: &stream,
        issuers: &issuers,
        message_type: first.message_type(),
        entries: &entries,
        issuer: &issuer,
        remember,
        max_backlog: state.config.max_backlog,
    };
    let mut conn = state.redis.get().await?;
    let published = script.run(&mut conn).await?;
    if published == scripts::Published::Appended {
        tracing::info!(commands = commands.len(), first_message_id = %first_id, cell = %cell, "published a batch");
    }
    outcome(state, credential, published, *first_id)
}

/// What a publish script's answer means to the request that ran it.
fn outcome(
    state: &AppState,
    credential: &Credential,
    published: scripts::Published,
    id: MessageId,
) -> Result<Published, ApiError> {
    match published {
        scripts::Published::Appended => Ok(Published::Appended(id)),
        scripts::Published::Remembered(answer) => Ok(Published::Remembered(answer)),
        scripts::Published::Backlogged => {
            state.pressure.backlog_full();
            Err(ApiError::Backlogged)
        }
        scripts::Published::Refused(refusal) => {
            admission(refusal, state, credential)?;
            Err(ApiError::Internal(format!("the publish script refused with {refusal:?}")))
        }
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
