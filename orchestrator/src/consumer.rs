//! The consumer loop around one step: read entries of `{ns}:commands` and `{ns}:reports` as a
//! member of the consumer group, apply each in one transaction that records its id, commit, and
//! only then acknowledge. Entries that cannot be decoded, or keep failing, go to `{ns}:dlq`.

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
        for (source, stream, entry) in entries {
            let deliveries = if revisiting { self.deliveries(&stream, &entry.id).await? } else { 1 };
            match self.handle_entry(source, &stream, &entry, deliveries).await {
                Ok(Handled::Applied) => outcome.applied += 1,
                Ok(Handled::Duplicate) => outcome.duplicates += 1,
                Ok(Handled::DeadLettered) => outcome.dead_lettered += 1,
                Err(error) => {
                    // Not acknowledged: it stays pending and is retried (and dead-lettered if it keeps failing).
                    self.revisit_pending = true;
                    return Err(error);
                }
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

    async fn handle_entry(
        &self,
        source: Source,
        stream: &str,
        entry: &StreamId,
        deliveries: usize,
    ) -> Result<Handled, ConsumerError> {
        let envelope = match decode(source, entry) {
            Ok(decoded) => decoded,
            Err(error) => {
                self.dead_letter(stream, entry, &error.to_string(), deliveries).await?;
                return Ok(Handled::DeadLettered);
            }
        };
        if deliveries > self.config.max_deliveries {
            let reason = format!("not applied after {deliveries} deliveries");
            self.dead_letter(stream, entry, &reason, deliveries).await?;
            return Ok(Handled::DeadLettered);
        }
        let span = info_span!("apply", message_id = %envelope.0.id, message_type = %envelope.0.message_type,
            correlation_id = %envelope.0.correlation_id);
        let applied = self.apply(&envelope.0, &entry.id, envelope.1).instrument(span).await?;
        let mut conn = self.redis.get().await?;
        if let Some(decision) = &applied {
            for after in &decision.after_commit {
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
        redis::cmd("XACK").arg(stream).arg(ORCHESTRATOR_GROUP).arg(&entry.id).query_async::<()>(&mut *conn).await?;
        Ok(if applied.is_some() { Handled::Applied } else { Handled::Duplicate })
    }

    /// Applies one message in one transaction; `None` when it had already been applied.
    async fn apply(
        &self,
        envelope: &Envelope,
        entry_id: &str,
        message: Decoded,
    ) -> Result<Option<Decision>, ConsumerError> {
        let mut tx = self.pool.begin().await?;
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
        let context = Context { config: &self.config, envelope, entry_id, now: Utc::now() };
        let decision = match message {
            Decoded::Command(command) => handlers::apply_command(&mut tx, &context, command).await?,
            Decoded::Report(report) => handlers::apply_report(&mut tx, &context, report).await?,
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
        outbox::append(&mut tx, envelope.follow_up(Actor::Orchestrator), &decision.events).await?;
        tx.commit().await?;
        Ok(Some(decision))
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

enum Handled {
    Applied,
    Duplicate,
    DeadLettered,
}

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
