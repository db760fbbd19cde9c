//! The versioned envelope every message travels in, and the decoding of its payload.
//!
//! On a Redis stream an entry has two fields: `type` (for people and tools reading the stream)
//! and `envelope` (the JSON of [`Envelope`]). Readers accept every version they have ever
//! written; anything else is a [`DecodeError`], which sends the entry to the dead-letter stream.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::ids::{MessageId, NodeId, OrganizationId};

/// Who caused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    Operator,
    Organization(OrganizationId),
    Node(NodeId),
    Orchestrator,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: MessageId,
    #[serde(rename = "type")]
    pub message_type: String,
    pub version: u16,
    pub occurred_at: DateTime<Utc>,
    /// The id of the request (or first message) that started this chain of work.
    pub correlation_id: Uuid,
    /// The id of the message that directly caused this one.
    pub causation_id: Option<Uuid>,
    pub organization_id: Option<OrganizationId>,
    pub actor: Actor,
    pub payload: serde_json::Value,
}

/// Where a message comes from, for the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub organization_id: Option<OrganizationId>,
    pub actor: Actor,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the entry has no `envelope` field")]
    MissingEnvelope,
    #[error("the envelope is not valid JSON of the envelope shape: {0}")]
    Envelope(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("unsupported version {version} of {message_type}")]
    UnsupportedVersion { message_type: String, version: u16 },
    #[error("the payload of {message_type} does not parse: {detail}")]
    Payload { message_type: String, detail: String },
}

/// A family of messages (commands, reports, events, node messages) with a type string per variant.
pub trait Message: Sized {
    fn message_type(&self) -> &'static str;
    fn version(&self) -> u16;
    fn to_payload(&self) -> serde_json::Value;
    fn from_source(message_type: &str, version: u16, payload: PayloadSource<'_>) -> Result<Self, DecodeError>;

    fn from_parts(message_type: &str, version: u16, payload: serde_json::Value) -> Result<Self, DecodeError> {
        Self::from_source(message_type, version, PayloadSource::Value(payload))
    }

    /// Like [`Message::from_parts`], from the payload's JSON text, without building a
    /// `serde_json::Value` first (replay reads millions of them).
    fn from_text(message_type: &str, version: u16, payload: &str) -> Result<Self, DecodeError> {
        Self::from_source(message_type, version, PayloadSource::Text(payload))
    }
}

/// A payload as parsed JSON or as its text.
pub enum PayloadSource<'a> {
    Value(serde_json::Value),
    Text(&'a str),
}

impl PayloadSource<'_> {
    pub fn parse<T: serde::de::DeserializeOwned>(self) -> serde_json::Result<T> {
        match self {
            Self::Value(value) => serde_json::from_value(value),
            Self::Text(text) => serde_json::from_str(text),
        }
    }
}

impl Envelope {
    /// Wraps a message now, with a fresh random id (the gateway, the worker, tests).
    pub fn wrap(message: &impl Message, origin: Origin) -> Self {
        Self::wrap_with_id(MessageId::new(), message, origin)
    }

    pub fn wrap_with_id(id: MessageId, message: &impl Message, origin: Origin) -> Self {
        Self::wrap_at(id, Utc::now(), message, origin)
    }

    /// Wraps a message with the id and time given: the writer's decisions take both from their
    /// context, so that a seeded simulation replays them exactly.
    pub fn wrap_at(id: MessageId, occurred_at: DateTime<Utc>, message: &impl Message, origin: Origin) -> Self {
        Self {
            id,
            message_type: message.message_type().to_owned(),
            version: message.version(),
            occurred_at,
            correlation_id: origin.correlation_id,
            causation_id: origin.causation_id,
            organization_id: origin.organization_id,
            actor: origin.actor,
            payload: message.to_payload(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serialises")
    }

    /// The envelope of `message` (the envelope's own payload is not read) as JSON text, the
    /// payload written straight from the message: the same text as [`Envelope::to_json`] of
    /// the full envelope, but its keys in the order the message declares them, without
    /// building a `serde_json::Value` first (the writer writes an envelope per event).
    pub fn text_with<M: Message + Serialize>(&self, message: &M) -> String {
        #[derive(Serialize)]
        struct Text<'a, M> {
            id: MessageId,
            #[serde(rename = "type")]
            message_type: &'a str,
            version: u16,
            occurred_at: DateTime<Utc>,
            correlation_id: Uuid,
            causation_id: Option<Uuid>,
            organization_id: Option<OrganizationId>,
            actor: Actor,
            payload: &'a M,
        }
        let text = Text {
            id: self.id,
            message_type: &self.message_type,
            version: self.version,
            occurred_at: self.occurred_at,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            organization_id: self.organization_id,
            actor: self.actor,
            payload: message,
        };
        serde_json::to_string(&text).unwrap_or_else(|_| self.to_json())
    }

    /// The envelope of `message` as the event archive keeps it, and as it is published: the
    /// archived text holds all but the four fields its row holds in columns (`event_id`,
    /// `event_type`, `occurred_at`, `organization_id`), and the published text is those four
    /// then the archived text's fields, the payload written
    /// straight from the message. The time must be whole microseconds (PostgreSQL's
    /// precision; the writer's clock is), or the row's column would not give it back.
    pub fn archived_and_published<M: Serialize>(&self, message: &M) -> (String, String) {
        let archived = serde_json::to_string(&ArchivedText {
            version: self.version,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            actor: self.actor,
            payload: message,
        })
        .expect("a message's fields are all plain data, and always serialise");
        let published =
            Self::join_archived(self.id, &self.message_type, self.occurred_at, self.organization_id, &archived);
        (archived, published)
    }

    /// The whole envelope of an archived event, from its row: its columns' four fields, then the
    /// archived text's (an object, as [`Envelope::archived_and_published`] wrote it).
    fn join_archived(
        id: MessageId,
        message_type: &str,
        occurred_at: DateTime<Utc>,
        organization_id: Option<OrganizationId>,
        archived: &str,
    ) -> String {
        let mut text = serde_json::to_string(&RowFields { id, message_type, occurred_at, organization_id })
            .expect("ids, names and times always serialise");
        text.pop();
        text.push(',');
        text.push_str(archived.trim_start().strip_prefix('{').unwrap_or(archived));
        text
    }

    /// The whole envelope's text of an archived event, from its row (see
    /// [`Envelope::archived_and_published`]). An envelope archived whole (by writers before the
    /// archive left out the row's fields) is returned as it is; a text that is neither is an
    /// error.
    pub fn from_archive(
        id: MessageId,
        message_type: &str,
        occurred_at: DateTime<Utc>,
        organization_id: Option<OrganizationId>,
        archived: &str,
    ) -> Result<String, DecodeError> {
        let probe: ArchivedProbe<'_> =
            serde_json::from_str(archived).map_err(|error| DecodeError::Envelope(error.to_string()))?;
        Ok(match probe.id {
            Some(_) => archived.to_owned(),
            None => Self::join_archived(id, message_type, occurred_at, organization_id, archived),
        })
    }

    /// An envelope for `message` with an empty (`null`) payload: for [`Envelope::text_with`],
    /// where the message itself is at hand.
    pub fn header_at(id: MessageId, occurred_at: DateTime<Utc>, message: &impl Message, origin: Origin) -> Self {
        Self {
            id,
            message_type: message.message_type().to_owned(),
            version: message.version(),
            occurred_at,
            correlation_id: origin.correlation_id,
            causation_id: origin.causation_id,
            organization_id: origin.organization_id,
            actor: origin.actor,
            payload: serde_json::Value::Null,
        }
    }

    pub fn from_json(text: &str) -> Result<Self, DecodeError> {
        serde_json::from_str(text).map_err(|error| DecodeError::Envelope(error.to_string()))
    }

    /// The envelope of `text` without its payload (`null`), and the payload's text as it is
    /// there, not parsed: a reader that decodes the payload into its message type
    /// ([`Envelope::decode_text`]) or does not read it at all skips building a
    /// `serde_json::Value` of it.
    pub fn split(text: &str) -> Result<(Self, &RawValue), DecodeError> {
        #[derive(Deserialize)]
        struct Parts<'a> {
            id: MessageId,
            #[serde(rename = "type")]
            message_type: String,
            version: u16,
            occurred_at: DateTime<Utc>,
            correlation_id: Uuid,
            causation_id: Option<Uuid>,
            organization_id: Option<OrganizationId>,
            actor: Actor,
            #[serde(borrow)]
            payload: &'a RawValue,
        }
        let parts: Parts<'_> = serde_json::from_str(text).map_err(|error| DecodeError::Envelope(error.to_string()))?;
        let header = Self {
            id: parts.id,
            message_type: parts.message_type,
            version: parts.version,
            occurred_at: parts.occurred_at,
            correlation_id: parts.correlation_id,
            causation_id: parts.causation_id,
            organization_id: parts.organization_id,
            actor: parts.actor,
            payload: serde_json::Value::Null,
        };
        Ok((header, parts.payload))
    }

    /// The envelope of `text` without its payload (`null`), and its message, decoded straight
    /// from the payload's text: what [`Envelope::from_json`] then [`Envelope::decode`] give,
    /// without a `serde_json::Value` of the payload and its copy.
    pub fn decode_text<M: Message>(text: &str) -> Result<(Self, M), DecodeError> {
        let (header, payload) = Self::split(text)?;
        let message = M::from_text(&header.message_type, header.version, payload.get())?;
        Ok((header, message))
    }

    pub fn decode<M: Message>(&self) -> Result<M, DecodeError> {
        M::from_parts(&self.message_type, self.version, self.payload.clone())
    }

    /// Like [`Envelope::decode`], without copying the payload.
    pub fn into_message<M: Message>(self) -> Result<M, DecodeError> {
        M::from_parts(&self.message_type, self.version, self.payload)
    }

    /// The origin of a message caused by this one.
    pub fn follow_up(&self, actor: Actor) -> Origin {
        Origin {
            correlation_id: self.correlation_id,
            causation_id: Some(self.id.as_uuid()),
            organization_id: self.organization_id,
            actor,
        }
    }
}

/// Declares a message family: each variant's type string and the versions it reads.
/// Only version 1 exists so far; a version 2 adds an arm that upgrades the old payload.
#[macro_export]
macro_rules! message_family {
    ($(#[$meta:meta])* $family:ident { $($(#[$vmeta:meta])* $variant:ident($payload:ty) = $type_name:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $family {
            $($(#[$vmeta])* $variant($payload),)+
        }

        impl $family {
            /// Every type string of the family.
            pub const TYPES: &'static [&'static str] = &[$($type_name),+];
        }

        /// A message serialises as its payload (the envelope says its type).
        impl ::serde::Serialize for $family {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self { $(Self::$variant(payload) => payload.serialize(serializer),)+ }
            }
        }

        impl $crate::envelope::Message for $family {
            fn message_type(&self) -> &'static str {
                match self { $(Self::$variant(_) => $type_name,)+ }
            }

            fn version(&self) -> u16 {
                1
            }

            fn to_payload(&self) -> serde_json::Value {
                match self {
                    $(Self::$variant(payload) => serde_json::to_value(payload).expect("payloads always serialise"),)+
                }
            }

            fn from_source(message_type: &str, version: u16, payload: $crate::envelope::PayloadSource<'_>)
                -> Result<Self, $crate::envelope::DecodeError> {
                match message_type {
                    $($type_name => {
                        if version != 1 {
                            return Err($crate::envelope::DecodeError::UnsupportedVersion {
                                message_type: message_type.to_owned(), version });
                        }
                        payload.parse::<$payload>().map(Self::$variant).map_err(|error| {
                            $crate::envelope::DecodeError::Payload {
                                message_type: message_type.to_owned(), detail: error.to_string() }
                        })
                    })+
                    other => Err($crate::envelope::DecodeError::UnknownType(other.to_owned())),
                }
            }
        }
    };
}

/// What the event archive keeps of an envelope ([`Envelope::archived_and_published`]).
#[derive(Serialize)]
struct ArchivedText<'a, P: ?Sized> {
    version: u16,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    actor: Actor,
    payload: &'a P,
}

/// What an event's row holds of its envelope in columns.
#[derive(Serialize)]
struct RowFields<'a> {
    id: MessageId,
    #[serde(rename = "type")]
    message_type: &'a str,
    occurred_at: DateTime<Utc>,
    organization_id: Option<OrganizationId>,
}

/// An archived envelope, read far enough to tell its form: whole (with its `id`) or without
/// the row's fields.
#[derive(Deserialize)]
struct ArchivedProbe<'a> {
    #[serde(default)]
    id: Option<MessageId>,
    #[serde(rename = "version")]
    _version: u16,
    #[serde(rename = "correlation_id")]
    _correlation_id: Uuid,
    #[serde(rename = "actor")]
    _actor: Actor,
    #[serde(borrow, rename = "payload")]
    _payload: &'a RawValue,
}
