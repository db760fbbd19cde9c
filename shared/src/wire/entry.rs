//! Stream entry ids, `<ms>-<seq>`, ordered as Redis orders them.
//!
//! The writer publishes each committed event, and the node message it causes, under the id
//! `<event seq>-0` ([`StreamEntryId::of_event`]): an event published again keeps its id, and a
//! client resuming with `Last-Event-ID` names the event it saw last.

/// A stream entry id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamEntryId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamEntryId {
    /// `0-0`: before every entry.
    pub const ZERO: Self = Self { ms: 0, seq: 0 };

    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// `<seq>-0`: the id of the committed event `seq` (and of the node message it caused); a
    /// negative seq is taken as 0.
    pub fn of_event(seq: i64) -> Self {
        Self { ms: u64::try_from(seq).unwrap_or(0), seq: 0 }
    }

    /// The event seq of an id `<seq>-0`; `None` for an id of another shape.
    pub fn event_seq(&self) -> Option<i64> {
        if self.seq == 0 { i64::try_from(self.ms).ok() } else { None }
    }

    /// Parses `<ms>-<seq>` (both parts decimal); `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-')?;
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(Self { ms: ms.parse().ok()?, seq: seq.parse().ok()? })
    }
}

impl std::fmt::Display for StreamEntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// An id as a command's argument (`XADD <key> … <id>`), written into the command without a
/// `String` of it.
#[cfg(feature = "redis")]
impl redis::ToRedisArgs for StreamEntryId {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        // Writing into the command's own buffer cannot fail.
        let _ = write!(out.writer_for_next_arg(), "{}-{}", self.ms, self.seq);
    }
}

impl std::str::FromStr for StreamEntryId {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text).ok_or_else(|| format!("{text:?} is not a stream id like 12-0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_print_and_order_as_redis_orders_them() {
        let ids = ["9-0", "10-0", "10-2", "10-10"].map(|text| StreamEntryId::parse(text).unwrap());
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(StreamEntryId::parse("12-3").unwrap().to_string(), "12-3");
        for bad in ["12", "a-1", "-1", "1-", "+1-0", "1-0-0", " 1-0", ""] {
            assert_eq!(StreamEntryId::parse(bad), None, "{bad:?}");
        }
    }

    #[cfg(feature = "redis")]
    #[test]
    fn an_id_is_one_argument_as_it_prints() {
        use redis::ToRedisArgs;
        assert_eq!(StreamEntryId::new(1_733_000_000_000, 7).to_redis_args(), vec![b"1733000000000-7".to_vec()]);
    }

    #[test]
    fn event_ids_carry_the_event_seq() {
        assert_eq!(StreamEntryId::of_event(42).to_string(), "42-0");
        assert_eq!(StreamEntryId::of_event(42).event_seq(), Some(42));
        assert_eq!(StreamEntryId::new(42, 1).event_seq(), None);
        assert_eq!(StreamEntryId::of_event(-3), StreamEntryId::ZERO);
    }
}
