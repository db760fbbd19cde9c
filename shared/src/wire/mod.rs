//! The Redis protocol of the grid, typed: key names per cell ([`keys`]), stream entry ids
//! ([`StreamEntryId`]), the field names of stream entries ([`fields`]), the caps of the streams,
//! a cell's published summary ([`summary::CellSummary`]),
//! and, with the `redis` feature, the commands and Lua scripts ([`scripts`]: each script in its
//! own `.lua` file beside this one, with one typed wrapper and an enum for its answer; an answer
//! a wrapper does not know is an error, never taken for success).

#[cfg(feature = "redis")]
pub mod connection;
pub mod entry;
pub mod keys;
#[cfg(feature = "redis")]
pub mod scripts;
pub mod summary;

pub use entry::StreamEntryId;
pub use keys::{Keys, ORCHESTRATOR_GROUP};

/// The field names of the grid's stream entries.
pub mod fields {
    /// The message or event type (`CMD:SUBMIT_TASK`, `TaskAssigned`, ...), beside its envelope.
    pub const TYPE: &str = "type";
    /// The JSON envelope ([`crate::envelope::Envelope`]).
    pub const ENVELOPE: &str = "envelope";
    /// `{ns}:nodes:feed`: the node whose channel got an entry, and that entry's id.
    pub const FEED_NODE: &str = "n";
    pub const FEED_ENTRY: &str = "i";
    /// `{ns}:dlq`: where the entry came from, its id there, why it was refused, how many times
    /// it was delivered, and for a failed task its reason code.
    pub const DEAD_STREAM: &str = "stream";
    pub const DEAD_ENTRY_ID: &str = "entry_id";
    pub const DEAD_REASON: &str = "reason";
    pub const DEAD_DELIVERIES: &str = "deliveries";
    pub const DEAD_CODE: &str = "code";
}

/// Node channels keep about this many entries; a node that was away longer resumes from the
/// oldest kept (its stale assignments were requeued meanwhile anyway).
pub const NODE_CHANNEL_MAXLEN: usize = 1_000;
/// About this many notifications are kept on `{ns}:nodes:feed` (about 100 bytes each): the
/// gateways read it continuously; one that falls further behind has its clients reconnect.
pub const NODES_FEED_MAXLEN: usize = 100_000;
/// The dead-letter stream keeps about this many entries.
pub const DEAD_LETTERS_MAXLEN: usize = 100_000;
/// The heartbeat feed keeps about this many entries: the writer reads it continuously, and
/// rebuilds its mirror from the nodes' hashes when it takes over.
pub const HEARTBEAT_FEED_MAXLEN: usize = 50_000;

/// `XADD <key> MAXLEN ~ <maxlen> <id or *>`: a capped append, to which the caller adds the
/// entry's fields.
#[cfg(feature = "redis")]
pub fn xadd_capped(key: &str, maxlen: usize, id: Option<StreamEntryId>) -> redis::Cmd {
    let mut command = redis::Cmd::new();
    add_capped(&mut command, key, maxlen, id);
    command
}

/// `XADD <key> MAXLEN ~ <maxlen> <id or *> type <type> envelope <json>`: a message or event,
/// its command's buffers sized once for its ten arguments (the writer publishes one per event).
#[cfg(feature = "redis")]
pub fn xadd_envelope(
    key: &str,
    maxlen: usize,
    id: Option<StreamEntryId>,
    message_type: &str,
    envelope_json: &str,
) -> redis::Cmd {
    // The fixed arguments take at most 84 bytes: XADD, MAXLEN, ~, type, envelope, the cap (20
    // digits) and the id (41).
    let mut command = redis::Cmd::with_capacity(10, 84 + key.len() + message_type.len() + envelope_json.len());
    add_capped(&mut command, key, maxlen, id);
    command.arg(fields::TYPE).arg(message_type).arg(fields::ENVELOPE).arg(envelope_json);
    command
}

#[cfg(feature = "redis")]
fn add_capped(command: &mut redis::Cmd, key: &str, maxlen: usize, id: Option<StreamEntryId>) {
    command.arg("XADD").arg(key).arg("MAXLEN").arg("~").arg(maxlen);
    match id {
        Some(id) => command.arg(id),
        None => command.arg("*"),
    };
}

#[cfg(all(test, feature = "redis"))]
mod tests {
    use super::*;

    fn arguments(command: &redis::Cmd) -> Vec<String> {
        command
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => "<not a plain argument>".to_owned(),
            })
            .collect()
    }

    #[test]
    fn an_envelope_is_appended_capped_under_its_id_with_its_two_fields() {
        let command =
            xadd_envelope("grid:{main}:events", 20_000, Some(StreamEntryId::of_event(42)), "TaskAssigned", "{}");
        assert_eq!(
            arguments(&command),
            ["XADD", "grid:{main}:events", "MAXLEN", "~", "20000", "42-0", "type", "TaskAssigned", "envelope", "{}"]
        );
        let command = xadd_capped("grid:{main}:dlq", 10, None);
        assert_eq!(arguments(&command), ["XADD", "grid:{main}:dlq", "MAXLEN", "~", "10", "*"]);
    }
}
