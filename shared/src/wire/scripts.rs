//! The grid's Lua scripts, each in its own file under `lua/`, each with one typed wrapper that
//! names its keys and arguments, and an enum for its answer. An answer a wrapper does not know
//! (a script changed under a running build, a proxy answering for Redis) is
//! [`ScriptError::Unknown`]: the caller refuses, it never takes it for success.
//!
//! Every key a script touches is a key of one cell ([`super::Keys`]), so that it runs in one
//! slot of a Redis Cluster.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, Script, ToRedisArgs};

/// Why a script gave no answer the caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("the {script} script answered {answer}, which this build does not know")]
    Unknown { script: &'static str, answer: String },
}

fn unknown(script: &'static str, answer: impl std::fmt::Debug) -> ScriptError {
    ScriptError::Unknown { script, answer: format!("{answer:?}") }
}

/// A gateway script: the admission check (`lua/admission.lua`) followed by the script's own.
macro_rules! admitting {
    ($file:literal) => {
        LazyLock::new(|| Script::new(concat!(include_str!("lua/admission.lua"), include_str!($file))))
    };
}

static ADMIT: LazyLock<Script> = admitting!("lua/admit.lua");
static PUBLISH: LazyLock<Script> = admitting!("lua/publish.lua");
static PUBLISH_BATCH: LazyLock<Script> = admitting!("lua/publish_batch.lua");
static HEARTBEAT: LazyLock<Script> = admitting!("lua/heartbeat.lua");
static XADD_IF_NEWER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/xadd_if_newer.lua")));
const FORGET_IF_EXPIRED: &str = include_str!("lua/forget_if_expired.lua");
const TRIM_ACKNOWLEDGED: &str = include_str!("lua/trim_acknowledged.lua");

/// A credential's admission in a cell: its rate window and revocation marker there (both under
/// the cell's tag), the requests it may make per second, and whether a marker can revoke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionCheck {
    pub rate_window: String,
    pub revocation_marker: String,
    pub limit_per_second: u32,
    pub revocable: bool,
}

impl AdmissionCheck {
    /// The script's `EVALSHA` with the admission's keys and `keys` after them, and the
    /// admission's arguments: the caller adds the script's own arguments.
    fn invocation(&self, script: &'static Script, keys: &[&str]) -> Invocation {
        let mut invocation = Invocation::new(script, [self.rate_window.as_str(), &self.revocation_marker], keys);
        invocation.arg(self.limit_per_second).arg(if self.revocable { "1" } else { "0" });
        invocation
    }
}

/// A gateway script's call, written straight into one `EVALSHA` command as it is built. The
/// redis crate's `ScriptInvocation` keeps every key and argument in a buffer of its own and
/// copies them into the command when it is sent: forty allocations for a heartbeat, on the
/// path every node takes every few seconds. Keys come first, as `EVALSHA` wants them.
struct Invocation {
    script: &'static Script,
    cmd: Cmd,
}

impl Invocation {
    fn new<const N: usize>(script: &'static Script, first: [&str; N], keys: &[&str]) -> Self {
        let mut cmd = Cmd::with_capacity(16, 512);
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(N + keys.len());
        for key in first.iter().chain(keys) {
            cmd.arg(*key);
        }
        Self { script, cmd }
    }

    fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// Runs it; a server that does not hold the script yet (a restarted or flushed Redis)
    /// loads it, and the call is made again.
    async fn invoke<T: FromRedisValue>(&self, conn: &mut impl ConnectionLike) -> redis::RedisResult<T> {
        match self.cmd.query_async(conn).await {
            Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script.load_async(conn).await?;
                self.cmd.query_async(conn).await
            }
            answer => answer,
        }
    }
}

/// What an admission check answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Revoked,
    Limited,
}

impl Admission {
    /// The script's answer; anything else is not an admission (`None`).
    pub fn parse(answer: &str) -> Option<Self> {
        match answer {
            "admitted" => Some(Self::Admitted),
            "revoked" => Some(Self::Revoked),
            "limited" => Some(Self::Limited),
            _ => None,
        }
    }
}

/// `lua/admit.lua`: admission alone, for a request that writes nothing to Redis.
pub async fn admit(conn: &mut impl ConnectionLike, check: &AdmissionCheck) -> Result<Admission, ScriptError> {
    let answer: String = check.invocation(&ADMIT, &[]).invoke(conn).await?;
    Admission::parse(&answer).ok_or_else(|| unknown("admit", answer))
}

/// An `Idempotency-Key`'s Redis key (in the cell of the stream), and the answer to remember.
#[derive(Debug, Clone, Copy)]
pub struct Remember<'a> {
    pub key: &'a str,
    pub answer: &'a str,
    pub ttl_seconds: u64,
}

impl<'a> Remember<'a> {
    /// A publish script's idempotency key, answer and TTL. Without an answer to remember the
    /// key is the stream's (KEYS[5] is then not touched; the stream keeps it in the cell).
    fn arguments(remember: Option<Self>, stream: &'a str) -> (&'a str, &'a str, u64) {
        match remember {
            Some(remember) => (remember.key, remember.answer, remember.ttl_seconds),
            None => (stream, "", 0),
        }
    }
}

/// `lua/publish.lua`: admission, the `Idempotency-Key`, the backlog bound, then the entry
/// (`type`, `envelope`) and its issuer in the issuers hash.
#[derive(Debug)]
pub struct Publish<'a> {
    pub admission: &'a AdmissionCheck,
    pub stream: &'a str,
    pub issuers: &'a str,
    pub message_type: &'a str,
    pub envelope_json: &'a str,
    pub message_id: &'a str,
    pub issuer: &'a str,
    pub remember: Option<Remember<'a>>,
    /// The most entries the stream may hold (its work not yet applied); 0: no bound.
    pub max_backlog: u64,
}

/// What the publish script did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Appended,
    /// The `Idempotency-Key` was seen: the answer remembered under it.
    Remembered(String),
    /// The stream holds `max_backlog` entries already.
    Backlogged,
    /// Admission refused it (revoked or limited), nothing written.
    Refused(Admission),
}

impl Published {
    fn parse(reply: &[String]) -> Option<Self> {
        match reply {
            [answer] if answer == "appended" => Some(Self::Appended),
            [answer, previous] if answer == "remembered" => Some(Self::Remembered(previous.clone())),
            [answer] if answer == "backlogged" => Some(Self::Backlogged),
            [answer] => match Admission::parse(answer)? {
                Admission::Admitted => None,
                refused => Some(Self::Refused(refused)),
            },
            _ => None,
        }
    }
}

impl Publish<'_> {
    pub async fn run(&self, conn: &mut impl ConnectionLike) -> Result<Published, ScriptError> {
        let (remember_key, answer, ttl) = Remember::arguments(self.remember, self.stream);
        let reply: Vec<String> = self
            .admission
            .invocation(&PUBLISH, &[self.stream, self.issuers, remember_key])
            .arg(self.message_type)
            .arg(self.envelope_json)
            .arg(self.message_id)
            .arg(self.issuer)
            .arg(answer)
            .arg(ttl)
            .arg(self.max_backlog)
            .invoke(conn)
            .await?;
        Published::parse(&reply).ok_or_else(|| unknown("publish", reply))
    }
}

/// `lua/publish_batch.lua`: admission, the `Idempotency-Key`, the backlog bound, then every
/// entry of a batch (`type`, `envelope`) and its issuer, all in one round trip and all or none.
#[derive(Debug)]
pub struct PublishBatch<'a> {
    pub admission: &'a AdmissionCheck,
    pub stream: &'a str,
    pub issuers: &'a str,
    pub message_type: &'a str,
    /// Each entry's message id and envelope, in the order they are appended.
    pub entries: &'a [(String, String)],
    pub issuer: &'a str,
    pub remember: Option<Remember<'a>>,
    /// The stream is refused new entries while it holds this many (0: no bound).
    pub max_backlog: u64,
}

impl PublishBatch<'_> {
    pub async fn run(&self, conn: &mut impl ConnectionLike) -> Result<Published, ScriptError> {
        let (remember_key, answer, ttl) = Remember::arguments(self.remember, self.stream);
        let mut invocation = self.admission.invocation(&PUBLISH_BATCH, &[self.stream, self.issuers, remember_key]);
        invocation.arg(self.message_type).arg(self.issuer).arg(answer).arg(ttl).arg(self.max_backlog);
        for (message_id, envelope) in self.entries {
            invocation.arg(message_id).arg(envelope);
        }
        let reply: Vec<String> = invocation.invoke(conn).await?;
        Published::parse(&reply).ok_or_else(|| unknown("publish_batch", reply))
    }
}

/// `lua/heartbeat.lua`: admission, then a node's live state: its hash (with a TTL), its place
/// in the index of live nodes, and an entry on the heartbeat feed.
#[derive(Debug)]
pub struct Heartbeat<'a> {
    pub admission: &'a AdmissionCheck,
    pub node_state: &'a str,
    pub nodes_alive: &'a str,
    pub feed: &'a str,
    pub feed_maxlen: usize,
    pub ttl_ms: u64,
    pub expires_at_ms: i64,
    pub node_id: &'a str,
    /// The node's live state, field by field.
    pub state: &'a [(&'static str, String)],
    /// The feed entry's fields.
    pub feed_entry: &'a [(&'static str, String)],
}

impl Heartbeat<'_> {
    pub async fn run(&self, conn: &mut impl ConnectionLike) -> Result<Admission, ScriptError> {
        let mut invocation = self.admission.invocation(&HEARTBEAT, &[self.node_state, self.nodes_alive, self.feed]);
        invocation
            .arg(self.ttl_ms)
            .arg(self.expires_at_ms)
            .arg(self.node_id)
            .arg(self.feed_maxlen)
            .arg(self.state.len() * 2);
        for (field, value) in self.state.iter().chain(self.feed_entry) {
            invocation.arg(*field).arg(value);
        }
        let answer: String = invocation.invoke(conn).await?;
        Admission::parse(&answer).ok_or_else(|| unknown("heartbeat", answer))
    }
}

/// A node channel's entry to notify on the nodes' feed.
#[derive(Debug, Clone)]
pub struct Notify<'a> {
    pub feed: &'a str,
    pub feed_maxlen: usize,
    pub node_id: String,
}

/// `lua/xadd_if_newer.lua`: publishes a committed event (or the node message it caused) again,
/// under `<seq>-0`, unless the stream holds it or a later one already.
#[derive(Debug)]
pub struct XaddIfNewer<'a> {
    pub stream: &'a str,
    pub maxlen: usize,
    pub seq: i64,
    pub message_type: &'a str,
    pub envelope_json: &'a str,
    pub notify: Option<Notify<'a>>,
}

/// What publishing again did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Republished {
    Appended,
    AlreadyThere,
}

impl Republished {
    pub fn parse(answer: i64) -> Result<Self, ScriptError> {
        match answer {
            1 => Ok(Self::Appended),
            0 => Ok(Self::AlreadyThere),
            other => Err(unknown("xadd_if_newer", other)),
        }
    }
}

impl XaddIfNewer<'_> {
    /// Makes the script known to Redis, so that a pipeline may run it by its hash.
    pub async fn load(conn: &mut impl ConnectionLike) -> Result<(), ScriptError> {
        let _: String = XADD_IF_NEWER.load_async(conn).await?;
        Ok(())
    }

    /// Adds the invocation to a pipeline (after [`Self::load`]); its answer is a
    /// [`Republished`] (see [`Republished::parse`]).
    pub fn add_to(&self, pipe: &mut redis::Pipeline) {
        let mut invocation = XADD_IF_NEWER.key(self.stream);
        if let Some(notify) = &self.notify {
            invocation.key(notify.feed);
        }
        invocation.arg(self.seq).arg(self.maxlen).arg(self.message_type).arg(self.envelope_json);
        if let Some(notify) = &self.notify {
            invocation.arg(&notify.node_id).arg(notify.feed_maxlen);
        }
        pipe.invoke_script(&invocation);
    }
}

/// `lua/forget_if_expired.lua`, as an `EVAL` command for a MULTI: drops a node from the index of
/// live nodes unless a heartbeat renewed it meanwhile. Its answer is a [`Forgotten`].
pub fn forget_if_expired(nodes_alive: &str, node_id: &str, now_ms: i64) -> redis::Cmd {
    let mut command = redis::cmd("EVAL");
    command.arg(FORGET_IF_EXPIRED).arg(1).arg(nodes_alive).arg(node_id).arg(now_ms);
    command
}

/// `lua/trim_acknowledged.lua`, as an `EVAL` command for a MULTI: trims `stream` up to the
/// newest entry acknowledged, but never past the oldest entry still pending in `group` (held by
/// another consumer until the active writer claims it). Answers the id trimmed to.
pub fn trim_acknowledged(stream: &str, group: &str, newest_acknowledged: &str) -> redis::Cmd {
    let mut command = redis::cmd("EVAL");
    command.arg(TRIM_ACKNOWLEDGED).arg(1).arg(stream).arg(group).arg(newest_acknowledged);
    command
}

/// What [`forget_if_expired`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgotten {
    Dropped,
    Renewed,
}

impl Forgotten {
    pub fn parse(answer: i64) -> Result<Self, ScriptError> {
        match answer {
            1 => Ok(Self::Dropped),
            0 => Ok(Self::Renewed),
            other => Err(unknown("forget_if_expired", other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_known_answers_mean_anything() {
        assert_eq!(Admission::parse("admitted"), Some(Admission::Admitted));
        assert_eq!(Admission::parse("revoked"), Some(Admission::Revoked));
        assert_eq!(Admission::parse("limited"), Some(Admission::Limited));
        for unknown in ["", "OK", "admitted ", "appended", "nil"] {
            assert_eq!(Admission::parse(unknown), None, "{unknown:?}");
        }
        let reply = |parts: &[&str]| parts.iter().map(|part| (*part).to_owned()).collect::<Vec<_>>();
        assert_eq!(Published::parse(&reply(&["appended"])), Some(Published::Appended));
        assert_eq!(Published::parse(&reply(&["remembered", "{}"])), Some(Published::Remembered("{}".to_owned())));
        assert_eq!(Published::parse(&reply(&["backlogged"])), Some(Published::Backlogged));
        assert_eq!(Published::parse(&reply(&["limited"])), Some(Published::Refused(Admission::Limited)));
        for unknown in [&[][..], &["admitted"], &["remembered"], &["appended", "x"], &["OK"]] {
            assert_eq!(Published::parse(&reply(unknown)), None, "{unknown:?}");
        }
        assert!(Republished::parse(2).is_err());
        assert!(Forgotten::parse(-1).is_err());
    }
}
