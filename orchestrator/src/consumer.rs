//! The consumer loop around one step: read a batch of entries of `{ns}:commands` and
//! `{ns}:reports` as a member of the consumer group, apply the batch in one transaction that
//! records every message id, commit, and only then acknowledge. A batch that fails is applied
//! again message by message. Entries that cannot be decoded, or keep failing, go to `{ns}:dlq`.

use std::sync::Arc;

use chrono::Utc;
use grid_shared::envelope::{Actor, DecodeError, Envelope};
use grid_shared::keys::ORCHESTRATOR_GROUP;
use grid_shared::messages::{Command, Report};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use sqlx::PgPool;
use tokio::sync::Notify;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::OrchestratorConfig;
use crate::handlers::{self, AfterCommit, Context, Decision};
use crate::outbox;
use crate::store::redis::{dead_letter_task, release_core};

/// This module's failures are the crate's [`crate::error::Error`].
pub type ConsumerError = crate::error::Error;

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepOutcome {
    pub applied: usize,
    pub duplicates: usize,
    pub dead_lettered: usize,
}

impl StepOutcome {
    pub fn entries(&self) -> usize {
        self.applied + self.duplicates + self.dead_lettered
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Commands,
    Reports,
}

/// Wakes the relay and the scheduler when a step committed something.
#[derive(Debug, Default)]
pub struct Wakeups {
    pub relay: Notify,
    pub scheduler: Notify,
}

pub struct Consumer {
    pool: PgPool,
    redis: deadpool_redis::Pool,
    reader: MultiplexedConnection,
    config: Arc<OrchestratorConfig>,
    wakeups: Arc<Wakeups>,
    /// Read this consumer's own pending entries before new ones (at start, and after an error).
    revisit_pending: bool,
}

impl Consumer {
    pub async fn new(
        pool: PgPool,
        redis: deadpool_redis::Pool,
        config: Arc<OrchestratorConfig>,
        wakeups: Arc<Wakeups>,
    ) -> Result<Self, ConsumerError> {
        let reader = crate::store::redis::blocking_connection(&config.redis_url).await?;
        let consumer = Self { pool, redis, reader, config, wakeups, revisit_pending: true };
        consumer.ensure_groups().await?;
        Ok(consumer)
    }

    fn streams(&self) -> [String; 2] {
        [self.config.grid.keys.commands(), self.config.grid.keys.reports()]
    }

    async fn ensure_groups(&self) -> Result<(), ConsumerError> {
        let mut conn = self.redis.get().await?;
        for stream in self.streams() {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(ORCHESTRATOR_GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut *conn)
                .await;
            match created {
                Ok(()) => info!(stream, "consumer group created"),
                Err(error) if error.code() == Some("BUSYGROUP") => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Reads one batch (waiting up to `block_ms` for it) and applies it.
    pub async fn step(&mut self, block_ms: u64) -> Result<StepOutcome, ConsumerError> {
        let revisiting = self.revisit_pending;
        let start_id = if revisiting { "0" } else { ">" };
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(ORCHESTRATOR_GROUP)
            .arg(&self.config.consumer_name)
            .arg("COUNT")
            .arg(self.config.batch_size);
        if !revisiting {
            read.arg("BLOCK").arg(block_ms);
        }
        read.arg("STREAMS").arg(&self.streams()).arg(start_id).arg(start_id);
        let reply: Option<StreamReadReply> = read.query_async(&mut self.reader).await?;
        let mut outcome = StepOutcome::default();
        let mut entries = Vec::new();
        for stream in reply.map(|reply| reply.keys).unwrap_or_default() {
            let source =
                if stream.key == self.config.grid.keys.commands() { Source::Commands } else { Source::Reports };
            entries.extend(stream.ids.into_iter().map(|entry| (source, stream.key.clone(), entry)));
        }
        if revisiting && entries.is_empty() {
            self.revisit_pending = false;
        }
        let mut ready = Vec::with_capacity(entries.len());
        for (source, stream, entry) in entries {
            let deliveries = if revisiting { self.deliveries(&stream, &entry.id).await? } else { 1 };
            match self.admit(source, &stream, &entry, deliveries).await {
                Ok(Some((envelope, decoded))) => ready.push(Ready { stream, entry, envelope, decoded }),
                Ok(None) => outcome.dead_lettered += 1,
                Err(error) => {
                    self.revisit_pending = true;
                    return Err(error);
                }
            }
        }
        match self.apply_ready(ready).await {
            Ok((applied, duplicates)) => {
                outcome.applied += applied;
                outcome.duplicates += duplicates;
            }
            Err(error) => {
                // Not acknowledged: they stay pending and are retried (and dead-lettered if they keep failing).
                self.revisit_pending = true;
                return Err(error);
            }
        }
        if outcome.applied > 0 {
            self.wakeups.relay.notify_one();
            self.wakeups.scheduler.notify_one();
        }
        Ok(outcome)
    }

    /// Takes over entries another consumer left pending for longer than `claim_idle_ms`.
    pub async fn claim_abandoned(&mut self) -> Result<StepOutcome, ConsumerError> {
        let mut outcome = StepOutcome::default();
        for stream in self.streams() {
            let source = if stream == self.config.grid.keys.commands() { Source::Commands } else { Source::Reports };
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(ORCHESTRATOR_GROUP)
                .arg(&self.config.consumer_name)
                .arg(self.config.claim_idle_ms)
                .arg("0-0")
                .arg("COUNT")
                .arg(self.config.batch_size)
                .query_async(&mut self.reader)
                .await?;
            for entry in reply.claimed {
                warn!(stream, entry_id = entry.id, "claimed an entry abandoned by another consumer");
                let deliveries = self.deliveries(&stream, &entry.id).await?;
                match self.handle_entry(source, &stream, &entry, deliveries).await? {
                    Handled::Applied => outcome.applied += 1,
                    Handled::Duplicate => outcome.duplicates += 1,
                    Handled::DeadLettered => outcome.dead_lettered += 1,
                }
            }
        }
        if outcome.applied > 0 {
            self.wakeups.relay.notify_one();
            self.wakeups.scheduler.notify_one();
        }
        Ok(outcome)
    }

    async fn deliveries(&mut self, stream: &str, entry_id: &str) -> Result<usize, ConsumerError> {
        let pending: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(stream)
            .arg(ORCHESTRATOR_GROUP)
            .arg(entry_id)
            .arg(entry_id)
            .arg(1)
            .query_async(&mut self.reader)
            .await?;
        Ok(pending.ids.first().map_or(1, |entry| entry.times_delivered))
    }

    /// Decodes an entry for applying; `None` when it went to the dead-letter stream instead
    /// (undecodable, or delivered too often).
    async fn admit(
        &self,
        source: Source,
        stream: &str,
        entry: &StreamId,
        deliveries: usize,
    ) -> Result<Option<(Envelope, Decoded)>, ConsumerError> {
        let decoded = match decode(source, entry) {
            Ok(decoded) => decoded,
            Err(error) => {
                self.dead_letter(stream, entry, &error.to_string(), deliveries).await?;
                return Ok(None);
            }
        };
        if deliveries > self.config.max_deliveries {
            let reason = format!("not applied after {deliveries} deliveries");
            self.dead_letter(stream, entry, &reason, deliveries).await?;
            return Ok(None);
        }
        Ok(Some(decoded))
    }

    async fn handle_entry(
        &self,
        source: Source,
        stream: &str,
        entry: &StreamId,
        deliveries: usize,
    ) -> Result<Handled, ConsumerError> {
        let Some((envelope, decoded)) = self.admit(source, stream, entry, deliveries).await? else {
            return Ok(Handled::DeadLettered);
        };
        let (applied, _) = self
            .apply_ready(vec![Ready { stream: stream.to_owned(), entry: entry.clone(), envelope, decoded }])
            .await?;
        Ok(if applied == 1 { Handled::Applied } else { Handled::Duplicate })
    }

    /// Applies a batch of messages in one transaction (one commit, so one WAL flush, for the
    /// lot), each still recorded by its id; then does their Redis work and acknowledges them.
    /// If the batch fails, each message is applied in a transaction of its own, so that one
    /// failing message does not hold back the others. Returns (applied, duplicates).
    async fn apply_ready(&self, ready: Vec<Ready>) -> Result<(usize, usize), ConsumerError> {
        if ready.is_empty() {
            return Ok((0, 0));
        }
        let (done, failure) = match self.apply_batch(&ready).await {
            Ok(decisions) => (ready.iter().zip(decisions).collect::<Vec<_>>(), None),
            Err(error) if ready.len() > 1 => {
                warn!(%error, entries = ready.len(), "a batch failed; applying its messages one by one");
                let mut done = Vec::with_capacity(ready.len());
                let mut failure = None;
                for message in &ready {
                    match self.apply_batch(std::slice::from_ref(message)).await {
                        Ok(mut one) => done.push((message, one.pop().flatten())),
                        // Left pending: retried, and dead-lettered if it keeps failing.
                        Err(error) => failure = failure.or(Some(error)),
                    }
                }
                (done, failure)
            }
            Err(error) => return Err(error),
        };
        self.after_commit(&done).await?;
        if let Some(error) = failure {
            return Err(error);
        }
        let applied = done.iter().filter(|(_, decision)| decision.is_some()).count();
        Ok((applied, done.len() - applied))
    }

    /// The Redis work of committed messages, then their acknowledgement (one round trip).
    async fn after_commit(&self, done: &[(&Ready, Option<Decision>)]) -> Result<(), ConsumerError> {
        let mut conn = self.redis.get().await?;
        for (_, decision) in done {
            for after in decision.iter().flat_map(|decision| &decision.after_commit) {
                match after {
                    AfterCommit::ReleaseCore { node_id, task_id } => {
                        release_core(&mut *conn, &self.config.grid.keys, *node_id, *task_id).await?
                    }
                    AfterCommit::DeadLetterTask { task_id, attempts, reason } => {
                        dead_letter_task(&mut *conn, &self.config.grid.keys, *task_id, *attempts, reason).await?
                    }
                    AfterCommit::DeleteEntries { stream, entry_ids } => {
                        redis::cmd("XDEL").arg(stream).arg(entry_ids).query_async::<()>(&mut *conn).await?
                    }
                }
            }
        }
        if done.is_empty() {
            return Ok(());
        }
        let mut acks = redis::pipe();
        for (message, _) in done {
            acks.cmd("XACK").arg(&message.stream).arg(ORCHESTRATOR_GROUP).arg(&message.entry.id).ignore();
        }
        acks.query_async::<()>(&mut *conn).await?;
        Ok(())
    }

    /// Applies messages in one transaction; for each, `None` when it had already been applied.
    async fn apply_batch(&self, ready: &[Ready]) -> Result<Vec<Option<Decision>>, ConsumerError> {
        let mut tx = self.pool.begin().await?;
        let mut decisions = Vec::with_capacity(ready.len());
        for message in ready {
            let envelope = &message.envelope;
            let span = info_span!("apply", message_id = %envelope.id, message_type = %envelope.message_type,
                correlation_id = %envelope.correlation_id);
            let decision = apply_one(&mut tx, &self.config, message).instrument(span).await?;
            decisions.push(decision);
        }
        // The events of the whole batch, each with its message as origin, in one append: the
        // outbox lock is taken once and held only until the commit.
        let origins: Vec<_> = ready.iter().map(|message| message.envelope.follow_up(Actor::Orchestrator)).collect();
        let events: Vec<_> = decisions
            .iter()
            .zip(&origins)
            .filter_map(|(decision, origin)| decision.as_ref().map(|decision| (origin, decision)))
            .flat_map(|(origin, decision)| decision.events.iter().map(move |event| (*origin, event)))
            .collect();
        outbox::append_each(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(decisions)
    }

    async fn dead_letter(
        &self,
        stream: &str,
        entry: &StreamId,
        reason: &str,
        deliveries: usize,
    ) -> Result<(), ConsumerError> {
        // The reason stays in the dead-letter entry: a payload error may quote the payload.
        warn!(stream, entry_id = entry.id, deliveries, "entry sent to the dead-letter stream");
        let original: String = entry.get("envelope").unwrap_or_default();
        let message_type: String = entry.get("type").unwrap_or_default();
        let mut conn = self.redis.get().await?;
        // Written before the acknowledgement: a crash between the two repeats the dead letter,
        // it never loses the entry.
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(self.config.grid.keys.dead_letters())
            .arg("*")
            .arg("stream")
            .arg(stream)
            .arg("entry_id")
            .arg(&entry.id)
            .arg("type")
            .arg(message_type)
            .arg("reason")
            .arg(reason)
            .arg("deliveries")
            .arg(deliveries)
            .arg("envelope")
            .arg(original)
            .ignore()
            .cmd("XACK")
            .arg(stream)
            .arg(ORCHESTRATOR_GROUP)
            .arg(&entry.id)
            .ignore()
            .query_async::<()>(&mut *conn)
            .await?;
        Ok(())
    }
}

/// A decoded entry waiting to be applied.
struct Ready {
    stream: String,
    entry: StreamId,
    envelope: Envelope,
    decoded: Decoded,
}

/// Applies one message inside `tx`, recording its id; `None` when it had already been applied.
async fn apply_one(
    tx: &mut sqlx::PgConnection,
    config: &OrchestratorConfig,
    message: &Ready,
) -> Result<Option<Decision>, ConsumerError> {
    let envelope = &message.envelope;
    let fresh = sqlx::query(
        "insert into processed_message (message_id, message_type, organization_id, outcome)
         values ($1, $2, $3, 'applied') on conflict do nothing",
    )
    .bind(envelope.id.as_uuid())
    .bind(&envelope.message_type)
    .bind(envelope.organization_id.map(|id| id.as_uuid()))
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        debug!("already applied: acknowledging the redelivery");
        return Ok(None);
    }
    let context = Context { config, envelope, entry_id: &message.entry.id, now: Utc::now() };
    let decision = match message.decoded.clone() {
        Decoded::Command(command) => handlers::apply_command(tx, &context, command).await?,
        Decoded::Report(report) => handlers::apply_report(tx, &context, report).await?,
    };
    if let Some(reason) = &decision.rejection {
        sqlx::query("update processed_message set outcome = 'rejected', reason = $2 where message_id = $1")
            .bind(envelope.id.as_uuid())
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        // The reason may name an owner: it is kept in PostgreSQL for the issuer, not logged.
        info!("message rejected");
    }
    Ok(Some(decision))
}

enum Handled {
    Applied,
    Duplicate,
    DeadLettered,
}

#[derive(Clone)]
enum Decoded {
    Command(Command),
    Report(Report),
}

fn decode(source: Source, entry: &StreamId) -> Result<(Envelope, Decoded), DecodeError> {
    let text: String = entry.get("envelope").ok_or(DecodeError::MissingEnvelope)?;
    let envelope = Envelope::from_json(&text)?;
    let decoded = match source {
        Source::Commands => Decoded::Command(envelope.decode()?),
        Source::Reports => {
            let report: Report = envelope.decode()?;
            // A report must come from the node it is about (the gateway stamps the actor).
            let reporter = match &report {
                Report::TaskStarted(payload) => payload.node_id,
                Report::TaskCompleted(payload) => payload.node_id,
                Report::TaskFailed(payload) => payload.node_id,
            };
            if envelope.actor != Actor::Node(reporter) {
                return Err(DecodeError::Payload {
                    message_type: envelope.message_type.clone(),
                    detail: "the report's node_id is not its actor".to_owned(),
                });
            }
            Decoded::Report(report)
        }
    };
    Ok((envelope, decoded))
}
