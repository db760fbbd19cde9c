//! The nodes' task channels through one Redis reader per gateway.
//!
//! The writer appends each node message to the node's channel `{ns}:node:<id>:tasks` (ids
//! `<seq>-0`) and, in the same MULTI, a light notification `{n: node, i: entry id}` to
//! `{ns}:nodes:feed`. Each gateway runs one [`run_reader`]: it follows the feed with one
//! blocking connection, fetches the entries of the nodes connected *to it* in one pipelined
//! round trip, and fans them out in memory to their SSE clients. A client first catches up
//! from its channel (after `Last-Event-ID`, or its oldest assignment in flight), registered
//! beforehand so that nothing falls between the two; ids already sent are skipped.
//!
//! A client that cannot keep up (its bounded queue full), a feed trimmed past what the reader
//! read, or a reader that lost its connection close the affected streams: the node reconnects
//! with `Last-Event-ID` and catches up from its channel, losing nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grid_shared::ids::NodeId;
use grid_shared::wire::connection::Redis;
use grid_shared::wire::{Keys, StreamEntryId, fields};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Entries a client may have waiting before it is dropped (and reconnects).
const CLIENT_QUEUE: usize = 256;
/// Feed entries read per round trip.
const READ_COUNT: usize = 1_000;

/// A connected client: its number and its bounded queue (of shared entries: a queue's first
/// block of slots is allocated with it, and stays small).
type Client = (u64, mpsc::Sender<Arc<StreamId>>);

/// Who is connected to this gateway, by node.
#[derive(Default)]
pub struct NodeChannels {
    clients: Mutex<HashMap<NodeId, Vec<Client>>>,
    next_client: AtomicU64,
}

/// A client's registration; dropping it unregisters the client.
pub struct Subscription {
    channels: Arc<NodeChannels>,
    node_id: NodeId,
    client: u64,
    pub entries: mpsc::Receiver<Arc<StreamId>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut clients = self.channels.clients.lock().expect("not poisoned");
        if let Some(list) = clients.get_mut(&self.node_id) {
            list.retain(|(client, _)| *client != self.client);
            if list.is_empty() {
                clients.remove(&self.node_id);
            }
        }
    }
}

impl NodeChannels {
    pub fn subscribe(self: &Arc<Self>, node_id: NodeId) -> Subscription {
        let (sender, entries) = mpsc::channel(CLIENT_QUEUE);
        let client = self.next_client.fetch_add(1, Ordering::Relaxed);
        self.clients.lock().expect("not poisoned").entry(node_id).or_default().push((client, sender));
        Subscription { channels: self.clone(), node_id, client, entries }
    }

    /// Connected clients.
    pub fn clients(&self) -> usize {
        self.clients.lock().expect("not poisoned").values().map(Vec::len).sum()
    }

    fn connected(&self, node_id: NodeId) -> bool {
        self.clients.lock().expect("not poisoned").contains_key(&node_id)
    }

    /// Hands an entry to the node's clients; a client whose queue is full is dropped (its
    /// stream ends, and it resumes from its channel).
    fn deliver(&self, node_id: NodeId, entry: &Arc<StreamId>) {
        let mut clients = self.clients.lock().expect("not poisoned");
        if let Some(list) = clients.get_mut(&node_id) {
            list.retain(|(_, sender)| match sender.try_send(entry.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(%node_id, "a task-channel client fell behind; closing its stream");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
    }

    /// Ends every client's stream (each resumes from its channel).
    fn close_all(&self, why: &str) {
        let mut clients = self.clients.lock().expect("not poisoned");
        if !clients.is_empty() {
            tracing::warn!(clients = clients.values().map(Vec::len).sum::<usize>(), why, "closing every task channel");
        }
        clients.clear();
    }
}

/// Follows `{ns}:nodes:feed` until `shutdown`, reconnecting with a backoff when Redis fails.
pub async fn run_reader(channels: Arc<NodeChannels>, redis: Redis, keys: Keys, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => {
                channels.close_all("the gateway stops");
                return;
            }
            outcome = follow_feed(&channels, &redis, &keys) => outcome,
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, "the node-channel reader lost Redis; reconnecting");
        }
        channels.close_all("the node-channel reader reconnects");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn follow_feed(channels: &NodeChannels, redis: &Redis, keys: &Keys) -> redis::RedisResult<()> {
    let mut conn = redis.dedicated().await?;
    let feed = keys.nodes_feed();
    let newest: StreamRangeReply =
        redis::cmd("XREVRANGE").arg(&feed).arg("+").arg("-").arg("COUNT").arg(1).query_async(&mut conn).await?;
    let mut last = newest.ids.first().and_then(|entry| StreamEntryId::parse(&entry.id)).unwrap_or_default();
    let mut checked = tokio::time::Instant::now();
    // A client that connected before this point may have missed what came between its
    // catch-up and here: it resumes from its channel.
    channels.close_all("the node-channel reader (re)started");
    tracing::info!(from = %last, "following the node channels");
    loop {
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(1_000)
            .arg("STREAMS")
            .arg(&feed)
            .arg(last.to_string())
            .query_async(&mut conn)
            .await?;
        let notes: Vec<StreamId> = reply.into_iter().flat_map(|reply| reply.keys).flat_map(|key| key.ids).collect();
        let mut wanted: Vec<(NodeId, String)> = Vec::new();
        for note in &notes {
            if let Some(id) = StreamEntryId::parse(&note.id) {
                last = last.max(id);
            }
            let node: Option<NodeId> = note.get::<String>(fields::FEED_NODE).and_then(|text| text.parse().ok());
            let entry: Option<String> = note.get(fields::FEED_ENTRY);
            if let (Some(node_id), Some(entry)) = (node, entry)
                && channels.connected(node_id)
            {
                wanted.push((node_id, entry));
            }
        }
        if !wanted.is_empty() {
            let mut pipe = redis::pipe();
            for (node_id, entry) in &wanted {
                pipe.cmd("XRANGE").arg(keys.node_tasks(*node_id)).arg(entry).arg(entry);
            }
            let fetched: Vec<StreamRangeReply> = pipe.query_async(&mut conn).await?;
            for ((node_id, _), range) in wanted.iter().zip(fetched) {
                for entry in range.ids {
                    channels.deliver(*node_id, &Arc::new(entry));
                }
            }
        }
        if checked.elapsed() >= Duration::from_secs(1) || notes.is_empty() {
            checked = tokio::time::Instant::now();
            // A feed trimmed past what was read (or recreated after Redis lost its data): every
            // client resumes from its channel. (Every entry on a channel is notified: by the
            // writer's batches, its republication at takeover and its re-issue after Redis was
            // lost, so a new writer or a flushed Redis needs nothing more.)
            let oldest: StreamRangeReply =
                redis::cmd("XRANGE").arg(&feed).arg("-").arg("+").arg("COUNT").arg(1).query_async(&mut conn).await?;
            let oldest = oldest.ids.first().and_then(|entry| StreamEntryId::parse(&entry.id));
            if oldest.is_some_and(|oldest| oldest > last && last != StreamEntryId::ZERO) {
                channels.close_all("the feed was trimmed past what was read");
                last = oldest.unwrap_or(last);
            }
        }
    }
}

/// Reads a node's channel after `after`, oldest first, at most `count` entries.
pub async fn read_after(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
    after: StreamEntryId,
    count: usize,
) -> redis::RedisResult<Vec<StreamId>> {
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg(format!("({after}"))
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    Ok(reply.ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_that_falls_behind_is_dropped_and_others_are_not() {
        let channels = Arc::new(NodeChannels::default());
        let node_id = NodeId::new();
        let mut slow = channels.subscribe(node_id);
        let mut fast = channels.subscribe(node_id);
        let entry = Arc::new(StreamId { id: "1-0".to_owned(), map: HashMap::new(), ..Default::default() });
        for _ in 0..CLIENT_QUEUE {
            channels.deliver(node_id, &entry);
            fast.entries.recv().await.unwrap();
        }
        assert_eq!(channels.clients(), 2);
        channels.deliver(node_id, &entry);
        assert_eq!(channels.clients(), 1, "the full queue's client is dropped");
        assert!(fast.entries.recv().await.is_some());
        let mut received = 0;
        while slow.entries.recv().await.is_some() {
            received += 1;
        }
        assert_eq!(received, CLIENT_QUEUE, "the dropped client's stream ends after what it had");
        drop(fast);
        assert_eq!(channels.clients(), 0);
    }
}
