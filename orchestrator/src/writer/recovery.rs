//! Making the writer's state and Redis whole: the fleet mirror at takeover, Redis after it lost
//! its data (or a publication failed), and the state after a failed transaction.

use std::collections::HashMap;

use chrono::Utc;
use grid_shared::domain::TaskStatus;
use grid_shared::envelope::Envelope;
use grid_shared::events::Event;
use grid_shared::ids::NodeId;
use tracing::{info, warn};

use super::{ReadMode, Writer, WriterError};
use crate::store::{load, streams};

impl Writer {
    /// Reads the live state of the fleet from Redis into a fresh mirror. Nodes holding tasks
    /// that Redis does not show alive get one TTL to send a heartbeat before their tasks are
    /// taken back.
    pub(super) async fn mirror_fleet(&mut self) -> Result<(), WriterError> {
        let now = Utc::now();
        let entries = {
            let mut conn = self.redis.get().await?;
            streams::fleet_snapshot(&mut conn, &self.config.grid.keys, now.timestamp_millis()).await?
        };
        for entry in &entries {
            self.state.heartbeat(entry);
        }
        let grace =
            now + chrono::Duration::milliseconds(i64::try_from(self.config.grid.node_ttl_ms).unwrap_or(i64::MAX));
        let silent: Vec<NodeId> = self
            .state
            .nodes
            .values()
            .filter(|node| !node.in_flight.is_empty() && !self.state.live.contains_key(&node.node_id))
            .map(|node| node.node_id)
            .collect();
        for node_id in silent {
            self.state.timers.node_expires(grace, node_id);
        }
        Ok(())
    }

    /// Makes Redis agree with PostgreSQL: groups exist, every committed event is published,
    /// and, when Redis lost its data (the writer's marker is gone), the nodes' channels are
    /// rebuilt with the work in flight.
    pub(super) async fn recover_redis(&mut self) -> Result<(), WriterError> {
        let keys = self.config.grid.keys.clone();
        // The blocking reader's connection may have died with a restarted Redis.
        self.reader = self.redis.dedicated().await?;
        let mut conn = self.redis.get().await?;
        streams::ensure_groups(&mut conn, &keys).await?;
        let marker = streams::marker(&mut conn, &keys).await?;
        let lost = marker.is_none();
        let in_flight = if lost {
            info!("Redis holds no writer marker (restarted empty, flushed, or first start): re-issuing work in flight");
            self.assignments_in_flight(&mut conn).await?
        } else {
            HashMap::new()
        };
        // Committed events not yet published (a crash, or a publication that failed).
        loop {
            let events = load::events_after(&self.pool, self.rules.cell.as_str(), self.published_seq, 5_000).await?;
            let Some(last) = events.last().map(|event| event.seq) else { break };
            let republished: Vec<streams::Republished<'_>> = events
                .iter()
                .map(|event| streams::Republished {
                    seq: event.seq,
                    event_type: &event.event_type,
                    envelope: &event.envelope,
                    node_id: event.node_id,
                    kind: event.kind.as_ref(),
                })
                .collect();
            let appended = streams::republish(&mut conn, &keys, &republished, self.config.events_stream_maxlen).await?;
            if self.rules.in_default_cell() {
                // The revocations among them go to the other cells again (each applies one once).
                let forwarded: Vec<Envelope> = events
                    .iter()
                    .filter(|event| event.event_type == "ConsentRevoked")
                    .filter_map(|event| Envelope::from_json(&event.envelope).ok())
                    .filter_map(|envelope| {
                        let event: Event = envelope.decode().ok()?;
                        streams::forwarded_revocation(&envelope, &event)
                    })
                    .collect();
                streams::forward(&mut conn, &self.config.grid, &forwarded).await?;
            }
            info!(from = self.published_seq + 1, to = last, appended, "published committed events");
            self.published_seq = last;
        }
        if !in_flight.is_empty() {
            // After every committed event: a node may have read ids up to the head before Redis
            // lost them, and its channel is read after the last id it saw.
            streams::reissue(&mut conn, &keys, self.published_seq, Utc::now().timestamp_millis(), &in_flight).await?;
            info!(
                tasks = in_flight.values().map(Vec::len).sum::<usize>(),
                nodes = in_flight.len(),
                head = self.published_seq,
                "re-issued the work in flight to the nodes' channels"
            );
        }
        let claimed: Vec<(NodeId, usize)> = self
            .state
            .nodes
            .values()
            .filter(|node| !node.in_flight.is_empty())
            .map(|node| (node.node_id, node.in_flight.len()))
            .collect();
        streams::write_all_claimed(&mut conn, &keys, &claimed).await?;
        let revoked = load::recently_revoked_keys(&self.pool, streams::REVOKED_MARKER_SECONDS).await?;
        let removed = streams::reconcile_revoked(&mut conn, &keys, &revoked).await?;
        if removed > 0 {
            warn!(removed, "removed revocation markers of keys PostgreSQL does not say revoked");
        }
        streams::set_marker(&mut conn, &keys, self.epoch).await?;
        self.redis_suspect = false;
        // Entries left pending (a publication that failed) are read again before new ones.
        if self.mode == ReadMode::New {
            self.enter_pending(false);
        }
        Ok(())
    }

    /// The assignments in flight by node, read from PostgreSQL, oldest first; the nodes'
    /// channels are emptied (what Redis still holds of them is older than what follows).
    async fn assignments_in_flight(
        &mut self,
        conn: &mut grid_shared::wire::connection::Conn,
    ) -> Result<HashMap<NodeId, Vec<Envelope>>, WriterError> {
        let in_flight: Vec<(NodeId, i64)> = self
            .state
            .tasks
            .values()
            .filter(|task| matches!(task.status, TaskStatus::Assigned | TaskStatus::Running))
            .filter_map(|task| Some((task.node_id?, task.assignment_seq?)))
            .collect();
        if in_flight.is_empty() {
            return Ok(HashMap::new());
        }
        warn!(tasks = in_flight.len(), "Redis lost its data: re-issuing the work in flight");
        let seqs: Vec<i64> = in_flight.iter().map(|(_, seq)| *seq).collect();
        let mut stored = load::events_at(&self.pool, self.rules.cell.as_str(), &seqs).await?;
        stored.sort_by_key(|event| event.seq);
        let mut channels: HashMap<NodeId, Vec<Envelope>> = HashMap::new();
        for event in &stored {
            let (Some(node_id), Some(message)) =
                (event.node_id, streams::stored_node_message(&event.envelope, event.kind.as_ref()))
            else {
                continue;
            };
            channels.entry(node_id).or_default().push(message);
        }
        let nodes: Vec<NodeId> = channels.keys().copied().collect();
        streams::clear_channels(&mut *conn, &self.config.grid.keys, &nodes).await?;
        Ok(channels)
    }

    /// After a failed transaction: the state in memory may hold decisions that were not
    /// committed. It is rebuilt from PostgreSQL, and the pending entries are applied one by one.
    pub async fn rebuild(&mut self) -> Result<(), WriterError> {
        if let Some(sealing) = self.sealing.take() {
            // Mined from a state that is being replaced: the reloaded chain says what to seal.
            sealing.abort();
        }
        let (state, quarantined) = load::load_state(&self.pool, &self.rules, Utc::now()).await?;
        self.state = state;
        self.status.metrics.counter("grid_tasks_quarantined_total", &[]).increment(quarantined.len() as u64);
        self.quarantined = quarantined;
        self.carry.clear();
        if self.mode == ReadMode::New {
            self.enter_pending(true);
        } else {
            // The entry that failed was read in this pass: the pass goes on after it, and
            // another pass retries it.
            self.mode = ReadMode::Pending { one_by_one: true };
            self.pass_failed = true;
        }
        {
            // Heartbeats read in the failed batch were not acknowledged: drop them (a fresh
            // snapshot of the fleet follows).
            let mut conn = self.redis.get().await?;
            streams::forget_heartbeats(&mut conn, &self.config.grid.keys, &self.config.consumer_name).await?;
        }
        self.placement_due = true;
        self.mirror_fleet().await?;
        self.redis_suspect = true;
        info!(open_tasks = self.state.tasks.len(), "state rebuilt from PostgreSQL after a failed batch");
        Ok(())
    }
}
