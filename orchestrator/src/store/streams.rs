//! Redis: the streams the writer reads and acknowledges, what it publishes after a commit, the
//! fleet's live state, and the recovery when Redis lost its data.

use std::collections::HashMap;

use grid_shared::domain::{TaskInput, TaskKind};
use grid_shared::envelope::{Actor, Envelope, Origin};
use grid_shared::events::Event;
use grid_shared::ids::{MessageId, NodeId};
use grid_shared::live::HeartbeatEntry;
use grid_shared::messages::{Command, NodeMessage, RevokeConsent, TaskAssignment, TaskCancellation};
use grid_shared::wire::connection::{Redis, Target};
use grid_shared::wire::scripts::{self, XaddIfNewer};
use grid_shared::wire::{
    self, DEAD_LETTERS_MAXLEN, Keys, NODE_CHANNEL_MAXLEN, NODES_FEED_MAXLEN, ORCHESTRATOR_GROUP, StreamEntryId, fields,
};
use redis::aio::ConnectionLike;
use redis::streams::{StreamAutoClaimReply, StreamId};

use crate::model::batch::Batch;
use crate::model::message::Source;

/// Appends the notification of a node-channel entry to `{ns}:nodes:feed`.
fn notify(pipe: &mut redis::Pipeline, keys: &Keys, node_id: NodeId, entry_id: StreamEntryId) {
    let mut command = wire::xadd_capped(&keys.nodes_feed(), NODES_FEED_MAXLEN, None);
    command.arg(fields::FEED_NODE).arg(node_id.to_string()).arg(fields::FEED_ENTRY).arg(entry_id.to_string());
    pipe.add_command(command).ignore();
}

/// The revocation the default cell's writer forwards to every other cell for a committed
/// `ConsentRevoked` (DESIGN §11): the revocation command, by the orchestrator, with the id of
/// the command it applied, so that a cell applies it once however often it is forwarded (a
/// recovery forwards again what it publishes again). `None` for any other event.
pub fn forwarded_revocation(envelope: &Envelope, event: &Event) -> Option<Envelope> {
    let Event::ConsentRevoked(revoked) = event else { return None };
    let command_id = MessageId(envelope.causation_id?);
    let origin = Origin {
        correlation_id: envelope.correlation_id,
        causation_id: Some(envelope.id.as_uuid()),
        organization_id: envelope.organization_id,
        actor: Actor::Orchestrator,
    };
    let command = Command::RevokeConsent(RevokeConsent { owner_id: revoked.owner_id });
    Some(Envelope::wrap_at(command_id, envelope.occurred_at, &command, origin))
}

/// Appends `forwarded` commands to the command stream of every cell of `grid` but the writer's
/// own (one command per entry: each cell's stream is in a slot of its own).
pub async fn forward(
    conn: &mut impl ConnectionLike,
    grid: &grid_shared::settings::GridSettings,
    forwarded: &[Envelope],
) -> redis::RedisResult<()> {
    if forwarded.is_empty() {
        return Ok(());
    }
    for cell in grid.cells.iter().filter(|cell| &cell.name != grid.keys.cell()) {
        let commands = grid.keys.cell_keys(&cell.name).commands();
        for envelope in forwarded {
            redis::cmd("XADD")
                .arg(&commands)
                .arg("*")
                .arg(fields::TYPE)
                .arg(&envelope.message_type)
                .arg(fields::ENVELOPE)
                .arg(envelope.to_json())
                .query_async::<()>(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// The writer's Redis (a server or a cluster), whose connections never time a reply out: a slow
/// reply is better than a lost acknowledgement. Blocking reads take [`Redis::dedicated`].
pub fn redis(target: &Target, max_size: usize) -> redis::RedisResult<Redis> {
    Redis::open(target, max_size, None)
}

/// The streams the writer consumes as the group `orchestrator`.
pub fn consumed(keys: &Keys) -> [String; 3] {
    [keys.commands(), keys.reports(), keys.heartbeats()]
}

/// Creates the consumer groups that do not exist (from the start of each stream, so that
/// entries added after a flush and before this call are read).
pub async fn ensure_groups(conn: &mut impl ConnectionLike, keys: &Keys) -> redis::RedisResult<()> {
    for stream in consumed(keys) {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(ORCHESTRATOR_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Ok(()) => tracing::info!(stream, "consumer group created"),
            Err(error) if error.code() == Some("BUSYGROUP") => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// What one read brought.
#[derive(Debug, Default)]
pub struct Read {
    pub entries: Vec<(Source, String, StreamId)>,
    pub heartbeats: Vec<StreamId>,
}

/// Reads new entries (waiting up to `block_ms`, or not at all when `None`), or with
/// `pending_after` this consumer's own entries not yet acknowledged, after the given ids of the
/// commands and reports streams.
pub async fn read(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    consumer: &str,
    count: usize,
    block_ms: Option<u64>,
    pending_after: Option<&[String; 2]>,
) -> redis::RedisResult<Read> {
    let pending = pending_after.is_some();
    let mut command = redis::cmd("XREADGROUP");
    command.arg("GROUP").arg(ORCHESTRATOR_GROUP).arg(consumer).arg("COUNT").arg(count);
    if let (Some(block_ms), false) = (block_ms, pending) {
        command.arg("BLOCK").arg(block_ms.max(1));
    }
    let [commands, reports, heartbeats] = consumed(keys);
    if let Some([after_commands, after_reports]) = pending_after {
        command.arg("STREAMS").arg(&commands).arg(&reports).arg(after_commands).arg(after_reports);
    } else {
        command.arg("STREAMS").arg(&commands).arg(&reports).arg(&heartbeats).arg(">").arg(">").arg(">");
    }
    // Parsed from the reply itself: the redis crate's `StreamReadReply` copies the whole reply
    // before parsing it (an allocation per field of every entry).
    let reply: Option<ReadReply> = command.query_async(conn).await?;
    let mut read = Read::default();
    for (key, rows) in reply.unwrap_or_default().into_iter().flatten() {
        let entries = rows.into_iter().flatten().map(|(id, map)| StreamId {
            id,
            map,
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        });
        if key == heartbeats {
            read.heartbeats.extend(entries);
            continue;
        }
        let source = if key == commands { Source::Commands } else { Source::Reports };
        read.entries.extend(entries.map(|entry| (source, key.clone(), entry)));
    }
    Ok(read)
}

/// An `XREADGROUP` reply: for each stream (one key per map), its entries (one id per map) with
/// their fields.
type ReadReply = Vec<HashMap<String, Vec<HashMap<String, HashMap<String, redis::Value>>>>>;

/// How many times an entry was delivered.
pub async fn deliveries(conn: &mut impl ConnectionLike, stream: &str, entry_id: &str) -> redis::RedisResult<usize> {
    let pending: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(stream)
        .arg(ORCHESTRATOR_GROUP)
        .arg(entry_id)
        .arg(entry_id)
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(pending.ids.first().map_or(1, |entry| entry.times_delivered))
}

/// Moves an entry to the dead-letter stream with the reason, and acknowledges it (written
/// first: a crash between the two repeats the dead letter, it never loses the entry).
pub async fn dead_letter(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    stream: &str,
    entry: &StreamId,
    message_id: Option<MessageId>,
    reason: &str,
    deliveries: usize,
) -> redis::RedisResult<()> {
    // The reason stays in the dead-letter entry: a payload error may quote the payload.
    tracing::warn!(stream, entry_id = entry.id, deliveries, "entry sent to the dead-letter stream");
    let original: String = entry.get(fields::ENVELOPE).unwrap_or_default();
    let message_type: String = entry.get(fields::TYPE).unwrap_or_default();
    let mut pipe = redis::pipe();
    pipe.atomic();
    if let Some(message_id) = message_id {
        pipe.cmd("HDEL").arg(keys.issuers()).arg(message_id.to_string()).ignore();
    }
    let mut dead = wire::xadd_capped(&keys.dead_letters(), DEAD_LETTERS_MAXLEN, None);
    dead.arg(fields::DEAD_STREAM)
        .arg(stream)
        .arg(fields::DEAD_ENTRY_ID)
        .arg(&entry.id)
        .arg(fields::TYPE)
        .arg(message_type)
        .arg(fields::DEAD_REASON)
        .arg(reason)
        .arg(fields::DEAD_DELIVERIES)
        .arg(deliveries)
        .arg(fields::ENVELOPE)
        .arg(original);
    pipe.add_command(dead)
        .ignore()
        .cmd("XACK")
        .arg(stream)
        .arg(ORCHESTRATOR_GROUP)
        .arg(&entry.id)
        .ignore()
        .query_async::<()>(conn)
        .await
}

/// At takeover: every entry another consumer of the group left pending becomes this one's,
/// and the other consumers are removed.
pub async fn claim_all_pending(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    consumer: &str,
) -> redis::RedisResult<usize> {
    let mut claimed = 0;
    for stream in [keys.commands(), keys.reports()] {
        let mut cursor = StreamEntryId::ZERO.to_string();
        loop {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(ORCHESTRATOR_GROUP)
                .arg(consumer)
                .arg(0)
                .arg(&cursor)
                .arg("COUNT")
                .arg(1_000)
                .query_async(&mut *conn)
                .await?;
            claimed += reply.claimed.len();
            cursor = reply.next_stream_id;
            if StreamEntryId::parse(&cursor).is_none_or(|cursor| cursor == StreamEntryId::ZERO) {
                break;
            }
        }
    }
    for stream in consumed(keys) {
        let consumers: Vec<HashMap<String, redis::Value>> =
            redis::cmd("XINFO").arg("CONSUMERS").arg(&stream).arg(ORCHESTRATOR_GROUP).query_async(&mut *conn).await?;
        for info in consumers {
            let name: Option<String> = info.get("name").and_then(|value| redis::from_redis_value(value.clone()).ok());
            if let Some(name) = name.filter(|name| name != consumer) {
                redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&stream)
                    .arg(ORCHESTRATOR_GROUP)
                    .arg(&name)
                    .query_async::<()>(&mut *conn)
                    .await?;
            }
        }
    }
    Ok(claimed)
}

/// Entries that another consumer of the group holds unacknowledged for at least `min_idle_ms`
/// become this one's (`XCLAIM`); how many. Only the active writer reads the streams, so such
/// an entry was delivered to a writer that lost its lease without noticing yet: a process frozen
/// (SIGSTOP, a paused VM) while blocked on its read, to which Redis still hands new entries.
pub async fn claim_orphans(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    consumer: &str,
    min_idle_ms: u64,
) -> redis::RedisResult<usize> {
    let mut claimed = 0;
    for stream in [keys.commands(), keys.reports()] {
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(ORCHESTRATOR_GROUP)
            .arg("IDLE")
            .arg(min_idle_ms)
            .arg("-")
            .arg("+")
            .arg(1_000)
            .query_async(&mut *conn)
            .await?;
        let orphans: Vec<&str> =
            pending.iter().filter(|(_, owner, _, _)| owner != consumer).map(|(id, _, _, _)| id.as_str()).collect();
        if orphans.is_empty() {
            continue;
        }
        let mut claim = redis::cmd("XCLAIM");
        claim.arg(&stream).arg(ORCHESTRATOR_GROUP).arg(consumer).arg(min_idle_ms).arg(&orphans).arg("JUSTID");
        let ids: Vec<String> = claim.query_async(&mut *conn).await?;
        claimed += ids.len();
    }
    Ok(claimed)
}

/// Drops this consumer's unacknowledged heartbeat entries (after a failed batch).
pub async fn forget_heartbeats(conn: &mut impl ConnectionLike, keys: &Keys, consumer: &str) -> redis::RedisResult<()> {
    redis::cmd("XGROUP")
        .arg("DELCONSUMER")
        .arg(keys.heartbeats())
        .arg(ORCHESTRATOR_GROUP)
        .arg(consumer)
        .query_async(conn)
        .await
}

/// The message a node receives for an event, if any. Its id derives from the event's, so a
/// message published again carries the same id.
pub fn node_message(envelope: &Envelope, event: &Event, input: Option<&TaskInput>) -> Option<Envelope> {
    let origin = envelope.follow_up(Actor::Orchestrator);
    let message = match event {
        Event::TaskAssigned(assigned) => NodeMessage::TaskAssigned(TaskAssignment {
            task_id: assigned.task_id,
            attempt: assigned.attempt,
            deadline: assigned.deadline,
            kind: input?.clone(),
        }),
        Event::TaskCancelled(cancelled) => NodeMessage::TaskCancelled(TaskCancellation {
            task_id: cancelled.task_id,
            attempt: cancelled.attempt,
            reason: cancelled.reason.for_node().to_owned(),
        }),
        // A task taken back or failed while on the node: the node must stop it.
        Event::TaskRequeued(requeued) => NodeMessage::TaskCancelled(TaskCancellation {
            task_id: requeued.task_id,
            attempt: requeued.attempt,
            reason: requeued.reason.for_node().to_owned(),
        }),
        Event::TaskFailed(failed) => NodeMessage::TaskCancelled(TaskCancellation {
            task_id: failed.task_id,
            attempt: failed.attempt,
            reason: failed.reason.for_node().to_owned(),
        }),
        _ => return None,
    };
    Some(Envelope::wrap_with_id(MessageId(envelope.id.as_uuid()), &message, origin))
}

/// What the publication of a committed batch does besides publishing its events.
pub struct Publication<'a> {
    pub keys: &'a Keys,
    pub events_maxlen: usize,
    /// Trim the commands and reports streams behind the acknowledged entries (not while
    /// entries of this consumer wait to be retried).
    pub trim: bool,
    /// The count of tasks in flight of each node whose count changed.
    pub claimed: Vec<(NodeId, usize)>,
}

/// Publishes a committed batch in one MULTI: its events on `{ns}:events` (ids `<seq>-0`), the
/// node messages on their channels, the dead letters and deletions, the fleet's claimed
/// cores; then acknowledges its entries and trims the streams behind them.
pub async fn publish(
    conn: &mut impl ConnectionLike,
    batch: &Batch,
    publication: &Publication<'_>,
) -> redis::RedisResult<()> {
    let keys = publication.keys;
    let mut pipe = redis::pipe();
    pipe.atomic();
    let events_key = keys.events();
    for event in &batch.events {
        let stream_id = StreamEntryId::of_event(event.seq);
        pipe.add_command(wire::xadd_envelope(
            &events_key,
            publication.events_maxlen,
            Some(stream_id),
            event.event_type,
            &event.text,
        ))
        .ignore();
        if let Some(node_id) = event.notify_node
            && let Some(message) = node_message(&event.envelope, &event.event, event.input.as_deref())
        {
            pipe.add_command(wire::xadd_envelope(
                &keys.node_tasks(node_id),
                NODE_CHANNEL_MAXLEN,
                Some(stream_id),
                &message.message_type,
                &message.to_json(),
            ))
            .ignore();
            notify(&mut pipe, keys, node_id, stream_id);
        }
    }
    for dead in &batch.dead_tasks {
        let mut command = wire::xadd_capped(&keys.dead_letters(), DEAD_LETTERS_MAXLEN, None);
        command
            .arg(fields::DEAD_STREAM)
            .arg("tasks")
            .arg(fields::DEAD_ENTRY_ID)
            .arg(dead.task_id.to_string())
            .arg(fields::TYPE)
            .arg("TASK:FAILED")
            .arg(fields::DEAD_REASON)
            .arg(dead.reason.to_string())
            .arg(fields::DEAD_CODE)
            .arg(dead.reason.code())
            .arg(fields::DEAD_DELIVERIES)
            .arg(dead.attempts);
        pipe.add_command(command).ignore();
    }
    if !batch.deleted_submissions.is_empty() {
        pipe.cmd("XDEL").arg(keys.commands()).arg(&batch.deleted_submissions).ignore();
    }
    for (node_id, entry_id) in &batch.deleted_assignments {
        pipe.cmd("XDEL").arg(keys.node_tasks(*node_id)).arg(entry_id).ignore();
    }
    for node_id in &batch.offline_nodes {
        // Out of the index of live nodes, unless a heartbeat renewed it meanwhile.
        pipe.add_command(scripts::forget_if_expired(
            &keys.nodes_alive(),
            &node_id.to_string(),
            chrono::Utc::now().timestamp_millis(),
        ))
        .ignore();
    }
    if !publication.claimed.is_empty() {
        let mut hset = redis::cmd("HSET");
        hset.arg(keys.nodes_claimed());
        for (node_id, count) in &publication.claimed {
            hset.arg(node_id.to_string()).arg(*count);
        }
        pipe.add_command(hset).ignore();
    }
    let mut newest: HashMap<&str, &str> = HashMap::new();
    for entry in &batch.acks {
        newest.insert(entry.stream.as_str(), entry.id.as_str());
    }
    let mut by_stream: HashMap<&str, Vec<&str>> = HashMap::new();
    for entry in &batch.acks {
        by_stream.entry(entry.stream.as_str()).or_default().push(entry.id.as_str());
    }
    for (stream, ids) in &by_stream {
        pipe.cmd("XACK").arg(*stream).arg(ORCHESTRATOR_GROUP).arg(ids).ignore();
    }
    if !batch.issued.is_empty() {
        let ids: Vec<String> = batch.issued.iter().map(ToString::to_string).collect();
        pipe.cmd("HDEL").arg(keys.issuers()).arg(ids).ignore();
    }
    if !batch.heartbeat_acks.is_empty() {
        pipe.cmd("XACK").arg(keys.heartbeats()).arg(ORCHESTRATOR_GROUP).arg(&batch.heartbeat_acks).ignore();
    }
    if publication.trim {
        for (stream, id) in newest {
            // Entries before the newest acknowledged one are done with (stream ids only grow),
            // but for those another consumer still holds: a writer that lost its lease may have
            // been handed entries on its blocked read, which this one claims once they are idle
            // (a plain `XTRIM MINID` here deleted them first: lost submissions).
            pipe.add_command(scripts::trim_acknowledged(stream, ORCHESTRATOR_GROUP, id)).ignore();
        }
    }
    pipe.query_async::<()>(conn).await
}

/// A stored event to publish again (see [`crate::store::load::StoredEvent`]).
pub struct Republished<'a> {
    pub seq: i64,
    pub event_type: &'a str,
    pub envelope: &'a str,
    pub node_id: Option<NodeId>,
    pub kind: Option<&'a serde_json::Value>,
}

/// The node message of a stored event, rebuilt as it was first published.
pub fn stored_node_message(envelope_text: &str, kind: Option<&serde_json::Value>) -> Option<Envelope> {
    let (envelope, event): (Envelope, Event) = Envelope::decode_text(envelope_text).ok()?;
    let input =
        kind.and_then(|kind| serde_json::from_value::<TaskKind>(kind.clone()).ok()).map(|kind| kind.anonymised());
    node_message(&envelope, &event, input.as_ref())
}

/// Publishes stored events again, skipping those already on each stream; how many entries it
/// appended (events and node messages).
pub async fn republish(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    events: &[Republished<'_>],
    events_maxlen: usize,
) -> Result<usize, scripts::ScriptError> {
    if events.is_empty() {
        return Ok(0);
    }
    // A pipeline runs scripts by their hash: the script must be known first.
    XaddIfNewer::load(&mut *conn).await?;
    let events_key = keys.events();
    let feed = keys.nodes_feed();
    let mut pipe = redis::pipe();
    for event in events {
        XaddIfNewer {
            stream: &events_key,
            maxlen: events_maxlen,
            seq: event.seq,
            message_type: event.event_type,
            envelope_json: event.envelope,
            notify: None,
        }
        .add_to(&mut pipe);
        if let Some(node_id) = event.node_id
            && let Some(message) = stored_node_message(event.envelope, event.kind)
        {
            XaddIfNewer {
                stream: &keys.node_tasks(node_id),
                maxlen: NODE_CHANNEL_MAXLEN,
                seq: event.seq,
                message_type: &message.message_type,
                envelope_json: &message.to_json(),
                notify: Some(scripts::Notify {
                    feed: &feed,
                    feed_maxlen: NODES_FEED_MAXLEN,
                    node_id: node_id.to_string(),
                }),
            }
            .add_to(&mut pipe);
        }
    }
    let answers: Vec<i64> = pipe.query_async(conn).await?;
    let mut appended = 0;
    for answer in answers {
        if scripts::Republished::parse(answer)? == scripts::Republished::Appended {
            appended += 1;
        }
    }
    Ok(appended)
}

/// Empties the channels of these nodes (before they are rebuilt).
pub async fn clear_channels(conn: &mut impl ConnectionLike, keys: &Keys, nodes: &[NodeId]) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for node_id in nodes {
        pipe.cmd("DEL").arg(keys.node_tasks(*node_id)).ignore();
    }
    pipe.query_async::<()>(conn).await
}

/// Appends the assignments in flight to their nodes' channels again (Redis lost them), under
/// ids `<head>-<n>` after the last committed event `head`, with `n` = the time in milliseconds
/// × 1,000 + 1, 2, … (a node holds fewer than 1,000 tasks): every id a node may have read
/// before is at most `<head>-0`, or an earlier re-issue at the same head, so a node reading
/// after the last id it saw gets them (and ignores an assignment it holds already), and later
/// assignments (`<seq>-0`, seq > head) still come after them.
pub async fn reissue(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    head: i64,
    now_ms: i64,
    channels: &HashMap<NodeId, Vec<Envelope>>,
) -> redis::RedisResult<()> {
    let base = u64::try_from(now_ms).unwrap_or(0).saturating_mul(1_000);
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (node_id, messages) in channels {
        for (index, message) in (1..).zip(messages) {
            let entry_id = StreamEntryId::new(u64::try_from(head).unwrap_or(0), base + index);
            pipe.add_command(wire::xadd_envelope(
                &keys.node_tasks(*node_id),
                NODE_CHANNEL_MAXLEN,
                Some(entry_id),
                &message.message_type,
                &message.to_json(),
            ))
            .ignore();
            notify(&mut pipe, keys, *node_id, entry_id);
        }
    }
    pipe.query_async::<()>(conn).await
}

/// The live state of every node whose heartbeat has not expired, read from the index and the
/// nodes' hashes (at takeover; afterwards the change feed keeps the mirror current).
pub async fn fleet_snapshot(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    now_ms: i64,
) -> redis::RedisResult<Vec<HeartbeatEntry>> {
    let scored: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(keys.nodes_alive())
        .arg(now_ms)
        .arg("+inf")
        .arg("BYSCORE")
        .arg("WITHSCORES")
        .query_async(&mut *conn)
        .await?;
    let nodes: Vec<(NodeId, i64)> =
        scored.iter().filter_map(|(id, score)| Some((id.parse::<NodeId>().ok()?, *score as i64))).collect();
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (node_id, _) in &nodes {
        pipe.cmd("HGETALL").arg(keys.node_state(*node_id));
    }
    let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut *conn).await?;
    Ok(nodes
        .into_iter()
        .zip(hashes)
        .filter_map(|((node_id, expires_at_ms), fields)| {
            let field = |name: &str| match name {
                "node_id" => Some(node_id.to_string()),
                "expires_at_ms" => Some(expires_at_ms.to_string()),
                other => fields.get(other).cloned(),
            };
            HeartbeatEntry::parse(field)
        })
        .collect())
}

/// Reads a heartbeat entry of the change feed.
pub fn heartbeat_entry(entry: &StreamId) -> Option<HeartbeatEntry> {
    HeartbeatEntry::parse(|name| entry.get::<String>(name))
}

/// The writer's marker: its epoch, or `None` when Redis lost it.
pub async fn marker(conn: &mut impl ConnectionLike, keys: &Keys) -> redis::RedisResult<Option<i64>> {
    redis::cmd("GET").arg(keys.writer_marker()).query_async(conn).await
}

pub async fn set_marker(conn: &mut impl ConnectionLike, keys: &Keys, epoch: i64) -> redis::RedisResult<()> {
    redis::cmd("SET").arg(keys.writer_marker()).arg(epoch).query_async(conn).await
}

/// How long a revoked key's marker is kept: the gateways re-read a cached key from PostgreSQL
/// well within it (see the gateway's `AuthCache`).
pub const REVOKED_MARKER_SECONDS: u64 = 24 * 3600;

/// Marks API keys (by their SHA-256) as revoked for every gateway, and lists each in the cell's
/// index of markers (`{ns}:revocations`, scored by when the marker expires), so that the markers
/// are found again without scanning the keyspace (which a Redis Cluster cannot do for one slot).
pub async fn mark_revoked(conn: &mut impl ConnectionLike, keys: &Keys, hashes: &[String]) -> redis::RedisResult<()> {
    if hashes.is_empty() {
        return Ok(());
    }
    let expires = chrono::Utc::now().timestamp() + i64::try_from(REVOKED_MARKER_SECONDS).unwrap_or(i64::MAX);
    let mut pipe = redis::pipe();
    for hash in hashes {
        pipe.cmd("SET").arg(keys.revoked_credential(hash)).arg(1).arg("EX").arg(REVOKED_MARKER_SECONDS).ignore();
        pipe.cmd("ZADD").arg(keys.revocations()).arg(expires).arg(hash).ignore();
    }
    pipe.query_async(conn).await
}

/// Makes the revocation markers say what PostgreSQL says: each key revoked within the marker's
/// lifetime is marked, and a marker of a key that is not revoked (a rotation whose commit
/// failed and never came again) is removed. Answers how many it removed.
pub async fn reconcile_revoked(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    revoked: &[String],
) -> redis::RedisResult<usize> {
    let now = chrono::Utc::now().timestamp();
    let (listed,): (Vec<String>,) = redis::pipe()
        .cmd("ZREMRANGEBYSCORE")
        .arg(keys.revocations())
        .arg("-inf")
        .arg(now)
        .ignore()
        .cmd("ZRANGE")
        .arg(keys.revocations())
        .arg(0)
        .arg(-1)
        .query_async(&mut *conn)
        .await?;
    let known: std::collections::HashSet<&str> = revoked.iter().map(String::as_str).collect();
    let stale: Vec<&String> = listed.iter().filter(|hash| !known.contains(hash.as_str())).collect();
    if !stale.is_empty() {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for hash in &stale {
            pipe.cmd("DEL").arg(keys.revoked_credential(hash)).ignore();
            pipe.cmd("ZREM").arg(keys.revocations()).arg(*hash).ignore();
        }
        pipe.query_async::<()>(&mut *conn).await?;
    }
    mark_revoked(conn, keys, revoked).await?;
    Ok(stale.len())
}

/// Rewrites the cell's summary (`{ns}:summary`).
pub async fn write_summary(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    summary: &grid_shared::wire::summary::CellSummary,
) -> redis::RedisResult<()> {
    redis::cmd("HSET").arg(keys.summary()).arg(summary.fields()).query_async(conn).await
}

/// Replaces the `{ns}:nodes:claimed` hash.
pub async fn write_all_claimed(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    claimed: &[(NodeId, usize)],
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("DEL").arg(keys.nodes_claimed()).ignore();
    if !claimed.is_empty() {
        let mut hset = redis::cmd("HSET");
        hset.arg(keys.nodes_claimed());
        for (node_id, count) in claimed {
            hset.arg(node_id.to_string()).arg(*count);
        }
        pipe.add_command(hset).ignore();
    }
    pipe.query_async(conn).await
}

/// A stream's figures for `/metrics`: its length, and for a stream the orchestrators read as a
/// group, the entries pending (delivered, not acknowledged) and the lag (not yet delivered).
#[derive(Debug, Default)]
pub struct StreamFigures {
    pub stream: &'static str,
    pub length: u64,
    pub group: Option<(u64, u64)>,
}

/// The figures of the grid's streams, in one pipelined round trip.
pub async fn stream_figures(conn: &mut impl ConnectionLike, keys: &Keys) -> redis::RedisResult<Vec<StreamFigures>> {
    let streams: [(&'static str, String, bool); 6] = [
        ("commands", keys.commands(), true),
        ("reports", keys.reports(), true),
        ("heartbeats", keys.heartbeats(), true),
        ("events", keys.events(), false),
        ("dlq", keys.dead_letters(), false),
        ("nodes_feed", keys.nodes_feed(), false),
    ];
    let mut pipe = redis::pipe();
    for (_, key, _) in &streams {
        pipe.cmd("XLEN").arg(key);
    }
    let lengths: Vec<u64> = pipe.query_async(&mut *conn).await?;
    let mut figures = Vec::with_capacity(streams.len());
    for ((name, key, grouped), length) in streams.iter().zip(lengths) {
        let group = if *grouped {
            // A stream or group not created yet answers an error: no group figures then.
            let groups: redis::RedisResult<Vec<HashMap<String, redis::Value>>> =
                redis::cmd("XINFO").arg("GROUPS").arg(key).query_async(&mut *conn).await;
            groups.ok().and_then(|groups| {
                let ours = groups.into_iter().find(|group| {
                    matches!(group.get("name"), Some(redis::Value::BulkString(name)) if name == ORCHESTRATOR_GROUP.as_bytes())
                })?;
                let number = |field: &str| match ours.get(field) {
                    Some(redis::Value::Int(value)) => u64::try_from(*value).ok(),
                    _ => None,
                };
                Some((number("pending").unwrap_or(0), number("lag").unwrap_or(0)))
            })
        } else {
            None
        };
        figures.push(StreamFigures { stream: name, length, group });
    }
    Ok(figures)
}
