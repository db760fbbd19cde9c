//! The outbox: events are written in the transaction that caused them, and relayed to Redis
//! after commit, in commit order.
//!
//! Order: every appending transaction takes [`OUTBOX_LOCK`] just before inserting its events and
//! holds it to commit, so `seq` values are handed out in commit order. The relay publishes each
//! event with the explicit stream id `<seq>-0`, on `{ns}:events` and (for `TaskAssigned` and
//! `TaskCancelled`) on the node's task channel, in one MULTI/EXEC; an event already on the
//! stream (a relay that died before marking it) is skipped, so nothing is published twice.

use grid_shared::domain::TaskKind;
use grid_shared::envelope::{Actor, Envelope, Origin};
use grid_shared::events::Event;
use grid_shared::ids::{MessageId, NodeId};
use grid_shared::keys::Keys;
use grid_shared::messages::{NodeMessage, TaskAssignment, TaskCancellation};
use sqlx::{PgConnection, PgPool, Row};

use crate::handlers::PendingEvent;

pub const OUTBOX_LOCK: i64 = 0x4B47_0001;
const RELAY_LOCK: i64 = 0x4B47_0003;
/// Node channels keep about this many entries; a node that was away longer resumes from the
/// oldest kept (its stale assignments were requeued meanwhile anyway).
const NODE_CHANNEL_MAXLEN: usize = 1_000;

/// Appends events to the outbox inside the caller's transaction.
pub async fn append(conn: &mut PgConnection, origin: Origin, events: &[PendingEvent]) -> Result<(), sqlx::Error> {
    let originated: Vec<(Origin, &PendingEvent)> = events.iter().map(|pending| (origin, pending)).collect();
    append_each(conn, &originated).await
}

/// Appends events, each with its own origin, in one statement (in the order given).
pub async fn append_each(conn: &mut PgConnection, events: &[(Origin, &PendingEvent)]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query("select pg_advisory_xact_lock($1)").bind(OUTBOX_LOCK).execute(&mut *conn).await?;
    let count = events.len();
    let (mut ids, mut types, mut organizations, mut nodes, mut times, mut bodies) = (
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
    );
    for (origin, pending) in events {
        let origin = Origin { organization_id: pending.organization_id, ..*origin };
        let envelope = Envelope::wrap(&pending.event, origin);
        ids.push(envelope.id.as_uuid());
        types.push(envelope.message_type.clone());
        // The nil UUID stands for "none" in the arrays, and becomes NULL again below.
        organizations.push(pending.organization_id.map_or(uuid::Uuid::nil(), |id| id.as_uuid()));
        nodes.push(pending.notify_node.map_or(uuid::Uuid::nil(), |id| id.as_uuid()));
        times.push(envelope.occurred_at);
        bodies.push(serde_json::to_value(&envelope).expect("envelopes serialise"));
    }
    // Rows are inserted in the given order, so their seq follows it.
    sqlx::query(
        "insert into event (event_id, event_type, organization_id, node_id, occurred_at, envelope)
         select id, kind, nullif(organization, '00000000-0000-0000-0000-000000000000'),
                nullif(node, '00000000-0000-0000-0000-000000000000'), at, body
         from unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::timestamptz[], $6::jsonb[])
             with ordinality as given(id, kind, organization, node, at, body, position)
         order by position",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&organizations)
    .bind(&nodes)
    .bind(&times)
    .bind(&bodies)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// This module's failures are the crate's [`crate::error::Error`].
pub type RelayError = crate::error::Error;

/// Publishes up to `batch` unrelayed events; returns how many were marked relayed. Only one
/// relay runs at a time across replicas (the others return 0 at once).
pub async fn relay_once(
    pool: &PgPool,
    redis: &deadpool_redis::Pool,
    keys: &Keys,
    batch: i64,
) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    let locked: bool =
        sqlx::query_scalar("select pg_try_advisory_xact_lock($1)").bind(RELAY_LOCK).fetch_one(&mut *tx).await?;
    if !locked {
        return Ok(0);
    }
    let cursor: i64 = sqlx::query_scalar("select last_seq from relay_cursor").fetch_one(&mut *tx).await?;
    let rows = sqlx::query(
        "select e.seq, e.event_type, e.node_id, e.envelope::text as envelope, t.kind
         from event e
         left join task t on e.node_id is not null and e.event_type = 'TaskAssigned'
             and t.task_id = (e.envelope -> 'payload' ->> 'task_id')::uuid
         where e.seq > $1 order by e.seq limit $2",
    )
    .bind(cursor)
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut conn = redis.get().await?;
    let last_published = last_stream_seq(&mut conn, &keys.events()).await?;
    let mut pipe = redis::pipe();
    pipe.atomic();
    let mut seqs = Vec::with_capacity(rows.len());
    for row in &rows {
        let seq: i64 = row.try_get("seq")?;
        seqs.push(seq);
        if seq <= last_published {
            continue;
        }
        let stream_id = format!("{seq}-0");
        let event_type: String = row.try_get("event_type")?;
        let envelope_text: String = row.try_get("envelope")?;
        pipe.cmd("XADD")
            .arg(keys.events())
            .arg(&stream_id)
            .arg("type")
            .arg(&event_type)
            .arg("envelope")
            .arg(&envelope_text)
            .ignore();
        let node_id: Option<uuid::Uuid> = row.try_get("node_id")?;
        let kind: Option<serde_json::Value> = row.try_get("kind")?;
        if let Some(node_id) = node_id
            && let Some(message) = node_message(&envelope_text, kind)
        {
            pipe.cmd("XADD")
                .arg(keys.node_tasks(NodeId(node_id)))
                .arg("MAXLEN")
                .arg("~")
                .arg(NODE_CHANNEL_MAXLEN)
                .arg(&stream_id)
                .arg("type")
                .arg(&message.message_type)
                .arg("envelope")
                .arg(message.to_json())
                .ignore();
        }
    }
    pipe.query_async::<()>(&mut *conn).await?;
    let last = seqs.last().copied().unwrap_or(cursor);
    sqlx::query("update relay_cursor set last_seq = $1").bind(last).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(seqs.len())
}

/// The seq of the newest entry on a stream whose ids are `<seq>-0` (0 when empty).
async fn last_stream_seq(conn: &mut deadpool_redis::Connection, stream: &str) -> redis::RedisResult<i64> {
    let newest: redis::streams::StreamRangeReply =
        redis::cmd("XREVRANGE").arg(stream).arg("+").arg("-").arg("COUNT").arg(1).query_async(&mut **conn).await?;
    Ok(newest
        .ids
        .first()
        .and_then(|entry| entry.id.split_once('-'))
        .and_then(|(millis, _)| millis.parse().ok())
        .unwrap_or(0))
}

/// The message a node receives for an event, built at relay time so that the event archive
/// never holds the task's data.
fn node_message(envelope_text: &str, kind: Option<serde_json::Value>) -> Option<Envelope> {
    let envelope = Envelope::from_json(envelope_text).ok()?;
    let origin = envelope.follow_up(Actor::Orchestrator);
    let message = match envelope.decode::<Event>().ok()? {
        Event::TaskAssigned(assigned) => {
            let kind: TaskKind = serde_json::from_value(kind?).ok()?;
            NodeMessage::TaskAssigned(TaskAssignment {
                task_id: assigned.task_id,
                attempt: assigned.attempt,
                deadline: assigned.deadline,
                kind: kind.anonymised(),
            })
        }
        Event::TaskCancelled(cancelled) => NodeMessage::TaskCancelled(TaskCancellation {
            task_id: cancelled.task_id,
            attempt: cancelled.attempt,
            reason: cancelled.reason,
        }),
        // A task taken back or failed while on the node: the node must stop it.
        Event::TaskRequeued(requeued) => NodeMessage::TaskCancelled(TaskCancellation {
            task_id: requeued.task_id,
            attempt: requeued.attempt,
            reason: requeued.reason,
        }),
        Event::TaskFailed(failed) => NodeMessage::TaskCancelled(TaskCancellation {
            task_id: failed.task_id,
            attempt: failed.attempt,
            reason: failed.reason,
        }),
        _ => return None,
    };
    // The node message's id derives from the event's, so a re-relay would carry the same id.
    Some(Envelope::wrap_with_id(MessageId(envelope.id.as_uuid()), &message, origin))
}
