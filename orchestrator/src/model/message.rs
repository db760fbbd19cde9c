//! A stream entry decoded into the message it carries (pure).

use grid_shared::envelope::{Actor, DecodeError, Envelope};
use grid_shared::messages::{Command, Report};

/// Which stream an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Commands,
    Reports,
}

#[derive(Debug, Clone)]
pub enum Decoded {
    Command(Command),
    Report(Report),
}

/// A decoded entry waiting to be applied.
#[derive(Debug, Clone)]
pub struct Ready {
    pub stream: String,
    pub entry_id: String,
    pub envelope: Envelope,
    pub decoded: Decoded,
}

impl Ready {
    /// A consent revocation is applied at the head of a batch of its own: it reads what
    /// PostgreSQL holds of the owner's tasks, so everything before it must be committed.
    pub fn needs_own_batch(&self) -> bool {
        matches!(self.decoded, Decoded::Command(Command::RevokeConsent(_)))
    }
}

/// Decodes the `envelope` field of an entry: its header (the payload left `null`: nothing reads
/// it once decoded) and its message, read from the payload's text. A report must come from the
/// node it is about (the gateway stamps the actor).
pub fn decode(source: Source, envelope_text: Option<&str>) -> Result<(Envelope, Decoded), DecodeError> {
    let text = envelope_text.ok_or(DecodeError::MissingEnvelope)?;
    match source {
        Source::Commands => {
            let (envelope, command) = Envelope::decode_text(text)?;
            Ok((envelope, Decoded::Command(command)))
        }
        Source::Reports => {
            let (envelope, report): (Envelope, Report) = Envelope::decode_text(text)?;
            if envelope.actor != Actor::Node(report.node_id()) {
                return Err(DecodeError::Payload {
                    message_type: envelope.message_type,
                    detail: "the report's node_id is not its actor".to_owned(),
                });
            }
            Ok((envelope, Decoded::Report(report)))
        }
    }
}
