//! A namespace's Redis keys written before cells (`<ns>:commands`, `<ns>:node:<id>:tasks`, ...)
//! moved, in place, under the default cell's tag (`{<ns>:<cell>}:commands`, ...): a one-cell grid
//! upgrades without losing a command, a report or a node's channel.
//!
//! The writer runs it when it takes over and finds no marker under the cell's tag (a first start
//! after the upgrade, or a Redis that lost its data). A key whose new name is free is renamed
//! (with its TTL, and for a stream its consumer group and pending entries). One whose new name is
//! taken already (a gateway of the new version wrote there first) is merged: the entries of the
//! command, report and dead-letter streams are appended after the new ones (a message applied
//! twice is recognised by its id in PostgreSQL), the fields of a hash are added where absent, and
//! anything else (heartbeat feeds, live state, rate windows: rewritten within seconds) is
//! dropped, the newer copy kept.

use grid_shared::wire::{Keys, StreamEntryId};
use redis::aio::ConnectionLike;

/// What the upgrade did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Upgraded {
    pub renamed: usize,
    pub merged: usize,
    pub dropped: usize,
}

impl Upgraded {
    pub fn moved_anything(&self) -> bool {
        self.renamed + self.merged + self.dropped > 0
    }
}

/// Streams whose entries are work not yet applied, or the operators' dead letters: merged, never
/// dropped.
const KEPT_STREAMS: [&str; 3] = ["commands", "reports", "dlq"];

/// Moves every key of `keys`' namespace written before cells under `keys`' cell tag.
pub async fn legacy_keys(conn: &mut impl ConnectionLike, keys: &Keys) -> redis::RedisResult<Upgraded> {
    let prefix = keys.legacy_prefix();
    let mut legacy: Vec<String> = Vec::new();
    let mut cursor = 0_u64;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut *conn)
            .await?;
        legacy.extend(found);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut upgraded = Upgraded::default();
    for old in legacy {
        let Some(rest) = old.strip_prefix(&prefix) else { continue };
        let new = format!("{}:{rest}", keys.tag());
        let renamed: bool = redis::cmd("RENAMENX").arg(&old).arg(&new).query_async(&mut *conn).await?;
        if renamed {
            upgraded.renamed += 1;
            continue;
        }
        let kind: String = redis::cmd("TYPE").arg(&old).query_async(&mut *conn).await?;
        match kind.as_str() {
            "stream" if KEPT_STREAMS.contains(&rest) => {
                append_entries(conn, &old, &new).await?;
                upgraded.merged += 1;
            }
            "hash" => {
                let fields: Vec<(String, String)> = redis::cmd("HGETALL").arg(&old).query_async(&mut *conn).await?;
                let mut pipe = redis::pipe();
                for (field, value) in &fields {
                    pipe.cmd("HSETNX").arg(&new).arg(field).arg(value).ignore();
                }
                pipe.query_async::<()>(&mut *conn).await?;
                upgraded.merged += 1;
            }
            _ => upgraded.dropped += 1,
        }
        redis::cmd("DEL").arg(&old).query_async::<()>(&mut *conn).await?;
    }
    Ok(upgraded)
}

/// Appends the entries of stream `from` to stream `to`, oldest first, under new ids.
async fn append_entries(conn: &mut impl ConnectionLike, from: &str, to: &str) -> redis::RedisResult<()> {
    let mut start = StreamEntryId::ZERO.to_string();
    loop {
        // Each entry: its id, then its fields and values in their order.
        let page: Vec<(String, Vec<Vec<u8>>)> =
            redis::cmd("XRANGE").arg(from).arg(&start).arg("+").arg("COUNT").arg(1_000).query_async(&mut *conn).await?;
        let Some(last) = page.last().map(|(id, _)| id.clone()) else { break };
        let mut pipe = redis::pipe();
        for (_, fields) in &page {
            pipe.cmd("XADD").arg(to).arg("*").arg(fields).ignore();
        }
        pipe.query_async::<()>(&mut *conn).await?;
        start = format!("({last}");
    }
    Ok(())
}
