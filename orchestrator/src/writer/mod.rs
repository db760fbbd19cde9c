//! The active writer (DESIGN §9): one process per cell decides in memory and commits in
//! groups.
//!
//! Each [`Writer::step`]: read a batch (commands, reports and the heartbeat feed, waiting only
//! until the next timer is due); apply the heartbeats to the fleet mirror; fire due timers;
//! apply each new message to the state ([`apply`], pure); place queued tasks on the fleet;
//! write everything in one transaction of a few multi-row statements ([`crate::store::postgres`]);
//! commit; publish the committed events and node messages from memory in one MULTI, then
//! acknowledge. A batch is whatever arrived while the previous one committed.
//!
//! Failures: a PostgreSQL error leaves the batch unacknowledged, rebuilds the state from
//! PostgreSQL and applies the pending entries one by one, so that one failing message is
//! dead-lettered after its deliveries without holding back the others. A Redis error, or Redis
//! found empty, is recovered like a takeover: groups recreated, unpublished events published,
//! work in flight re-issued to the nodes' channels.

pub mod apply;
pub mod decide;
mod recovery;
pub mod rounds;
mod sealing;
mod term;

pub use term::serve;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use grid_shared::blocks::Block;
use grid_shared::ids::{MessageId, NodeId};
use grid_shared::messages::Command;
use grid_shared::wire::connection::{Conn, Redis};
use grid_shared::wire::summary::CellSummary;
use sqlx::PgPool;
use tracing::{debug, error, info, warn};

use crate::config::{Fault, OrchestratorConfig};
use crate::model::batch::Batch;
use crate::model::context::Context;
use crate::model::message::{Decoded, Ready, Source, decode};
use crate::model::restore::Quarantined;
use crate::model::{Rules, State};
use crate::status::{Role, Status};
use crate::store::postgres;
use crate::store::{load, streams, upgrade};
use decide::BatchLookups;
use rounds::place_round;

/// How often a writer waiting for messages looks whether the block being mined is done.
const SEALING_POLL_MS: u64 = 5;

/// How often the writer looks for entries held by another consumer, and how long such an entry
/// must have waited to be taken (a writer that lost its lease, frozen on its read).
const ORPHAN_CHECK_EVERY: Duration = Duration::from_secs(1);
const ORPHAN_IDLE_MS: u64 = 1_000;

fn start_of_pending() -> [String; 2] {
    ["0".to_owned(), "0".to_owned()]
}

/// The writer's failures are the crate's [`crate::error::Error`].
pub type WriterError = crate::error::Error;

/// Where the next read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadMode {
    /// This consumer's own unacknowledged entries, in batches (after a takeover) or one by one
    /// (after a failure, to find the message that fails).
    Pending {
        one_by_one: bool,
    },
    New,
}

/// What one step did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    pub messages: usize,
    pub events: usize,
    pub placed: usize,
    pub statements: u32,
}

pub struct Writer {
    config: Arc<OrchestratorConfig>,
    rules: Rules,
    pool: PgPool,
    redis: Redis,
    reader: Conn,
    epoch: i64,
    state: State,
    /// The clock, ids and draws of the decide path: seeded once at takeover, its time set at
    /// each step.
    context: Context,
    /// Tasks the last restore quarantined, written with the next batch.
    quarantined: Vec<Quarantined>,
    /// The last event seq published to Redis, and the last one recorded as published in
    /// `relay_cursor` (each batch records the previous ones; an idle writer catches up).
    published_seq: i64,
    recorded_seq: i64,
    /// Messages read but left for the next batch (after a consent revocation).
    carry: VecDeque<Ready>,
    /// When entries other consumers hold were last looked for (see [`streams::claim_orphans`]).
    last_orphan_check: Instant,
    mode: ReadMode,
    /// In pending mode, the entries of the commands and reports streams read so far in this
    /// pass; a pass in which a batch failed is followed by another, until none fails.
    pending_after: [String; 2],
    pass_failed: bool,
    /// Redis must be checked (and rebuilt from PostgreSQL if it lost its data).
    redis_suspect: bool,
    /// Something changed that may let a queued task be placed.
    placement_due: bool,
    last_round: Instant,
    /// When the cell's summary was last published (`None`: not since the takeover).
    last_summary: Option<Instant>,
    status: Arc<Status>,
    commits: u64,
    messages: u64,
    statements: u64,
    /// The proof of work of the next block, mined on a blocking thread.
    sealing: Option<tokio::task::JoinHandle<Block>>,
    blocks_sealed: u64,
    /// Newer carbon signals from the fetcher, when live sources are configured.
    signals: Option<crate::signals::Feed>,
}

impl Writer {
    /// Takes over as the writer holding `epoch`: loads the state from PostgreSQL, claims the
    /// entries other consumers left pending, mirrors the fleet, and makes Redis whole.
    pub async fn take_over(
        config: Arc<OrchestratorConfig>,
        pool: PgPool,
        redis: Redis,
        epoch: i64,
        status: Arc<Status>,
    ) -> Result<Self, WriterError> {
        let clock = Instant::now();
        let rules = Rules::from_config(&config);
        let reader = redis.dedicated().await?;
        let (state, quarantined) = load::load_state(&pool, &rules, Utc::now()).await?;
        let published_seq = load::relay_cursor(&pool, rules.cell.as_str()).await?;
        let mut context = Context::from_entropy(Utc::now());
        context.set_signals(config.signals.initial.clone());
        let mut writer = Self {
            config,
            rules,
            pool,
            redis,
            reader,
            epoch,
            state,
            context,
            quarantined,
            published_seq,
            recorded_seq: published_seq,
            carry: VecDeque::new(),
            last_orphan_check: Instant::now(),
            mode: ReadMode::Pending { one_by_one: false },
            pending_after: start_of_pending(),
            pass_failed: false,
            redis_suspect: true,
            placement_due: true,
            last_round: Instant::now(),
            last_summary: None,
            status,
            commits: 0,
            messages: 0,
            statements: 0,
            sealing: None,
            blocks_sealed: 0,
            signals: None,
        };
        let claimed = {
            let mut conn = writer.redis.get().await?;
            let keys = &writer.config.grid.keys;
            // (A Redis Cluster never held keys of the layout before cells.)
            // Only the default cell's: the one cell of a grid before cells.
            let default = keys.cell() == &writer.config.grid.cells.default_cell().name;
            if default && !writer.redis.is_cluster() && streams::marker(&mut conn, keys).await?.is_none() {
                // A first start after the upgrade to cells: the keys written before are moved
                // under the cell's tag (the marker with them, when Redis kept it), before the
                // groups are made and their pending entries claimed.
                let upgraded = upgrade::legacy_keys(&mut conn, keys).await?;
                if upgraded.moved_anything() {
                    info!(
                        renamed = upgraded.renamed,
                        merged = upgraded.merged,
                        dropped = upgraded.dropped,
                        cell = %keys.cell(),
                        "moved the Redis keys written before cells under the cell's tag"
                    );
                }
            }
            streams::ensure_groups(&mut conn, &writer.config.grid.keys).await?;
            streams::claim_all_pending(&mut conn, &writer.config.grid.keys, &writer.config.consumer_name).await?
        };
        writer.mirror_fleet().await?;
        writer.recover_redis().await?;
        // Shown at zero from the start, so that an alert can watch them.
        writer.status.metrics.counter("grid_invariant_violations_total", &[]).increment(0);
        let quarantined = writer.quarantined.len() as u64;
        writer.status.metrics.counter("grid_tasks_quarantined_total", &[]).increment(quarantined);
        info!(
            epoch,
            open_tasks = writer.state.tasks.len(),
            quarantined = writer.quarantined.len(),
            queued = writer.state.queue.len(),
            live_nodes = writer.state.fleet.len(),
            claimed_entries = claimed,
            load_ms = clock.elapsed().as_millis() as u64,
            "took over as the writer"
        );
        writer.report_status();
        Ok(writer)
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Reads this consumer's pending entries from the start, before new ones.
    fn enter_pending(&mut self, one_by_one: bool) {
        self.mode = ReadMode::Pending { one_by_one };
        self.pending_after = start_of_pending();
        self.pass_failed = false;
    }

    /// A committed batch's figures for `/metrics`: its size and commit time, its events by type,
    /// the credits it minted.
    fn record_metrics(&self, batch: &Batch, commit_seconds: f64) {
        let metrics = &self.status.metrics;
        metrics.histogram("grid_batch_messages", &[]).record(batch.messages as f64);
        metrics.histogram("grid_batch_commit_seconds", &[]).record(commit_seconds);
        let mut by_type: HashMap<&'static str, u64> = HashMap::new();
        for event in &batch.events {
            *by_type.entry(event.event_type).or_default() += 1;
        }
        for (event_type, count) in by_type {
            metrics.counter("grid_events_total", &[("type", event_type)]).increment(count);
        }
        if !batch.credits.is_empty() {
            let (mut node, mut cooperative, mut carbon) = (0_u64, 0_u64, 0_u64);
            for credit in &batch.credits {
                node += u64::try_from(credit.split.node_share.0).unwrap_or(0);
                cooperative += u64::try_from(credit.split.cooperative_share.0).unwrap_or(0);
                carbon += u64::try_from(credit.split.carbon_saved.0).unwrap_or(0);
            }
            metrics.counter("grid_credits_peur_total", &[("account", "node")]).increment(node);
            metrics.counter("grid_credits_peur_total", &[("account", "cooperative")]).increment(cooperative);
            metrics.counter("grid_carbon_saved_ng_total", &[]).increment(carbon);
        }
    }

    fn report_status(&self) {
        let (open, queued, live) = (self.state.tasks.len(), self.state.queue.len(), self.state.fleet.len());
        let (epoch, commits, messages, statements) = (self.epoch, self.commits, self.messages, self.statements);
        let (chain_height, pending_leaves, blocks_sealed) =
            (self.state.chain.height, self.state.chain.pending_leaves(), self.blocks_sealed);
        self.status.update(|snapshot| {
            snapshot.chain_height = chain_height;
            snapshot.pending_leaves = pending_leaves;
            snapshot.blocks_sealed = blocks_sealed;
            snapshot.messages = messages;
            snapshot.statements = statements;
            snapshot.role = Role::Writer;
            snapshot.epoch = Some(epoch);
            snapshot.open_tasks = open;
            snapshot.queued_tasks = queued;
            snapshot.live_nodes = live;
            snapshot.batches = commits;
            snapshot.problem = None;
        });
    }

    /// How long a read may wait: until the next timer (or the open block's closing), at most a
    /// tick, and a few milliseconds while a block is being mined (it is written when done).
    fn block_for(&self) -> Option<u64> {
        let tick = if self.sealing.is_some() { SEALING_POLL_MS.min(self.config.tick_ms) } else { self.config.tick_ms };
        let due = [self.state.timers.next_due(), self.state.chain.close_due_at(self.rules.seal_interval)]
            .into_iter()
            .flatten()
            .min();
        match due {
            None => Some(tick),
            Some(due) => {
                let wait = (due - Utc::now()).num_milliseconds();
                if wait <= 0 { None } else { Some(u64::try_from(wait).unwrap_or(tick).min(tick)) }
            }
        }
    }

    /// Reads entries, decodes them, and dead-letters those that cannot be applied.
    async fn read(&mut self, batch: &mut Batch) -> Result<Vec<Ready>, WriterError> {
        if !self.carry.is_empty() {
            return Ok(self.carry.drain(..).collect());
        }
        let keys = self.config.grid.keys.clone();
        // Every second, between batches (nothing of this writer's own is pending then): entries
        // Redis handed to a writer that lost its lease are taken back and read from the start.
        if self.mode == ReadMode::New && self.last_orphan_check.elapsed() >= ORPHAN_CHECK_EVERY {
            self.last_orphan_check = Instant::now();
            let mut conn = self.redis.get().await?;
            let consumer = &self.config.consumer_name;
            let claimed = streams::claim_orphans(&mut conn, &keys, consumer, ORPHAN_IDLE_MS).await?;
            if claimed > 0 {
                warn!(claimed, "took back entries another consumer held (a writer that lost its lease)");
                self.enter_pending(false);
            }
        }
        let (pending, count) = match self.mode {
            ReadMode::Pending { one_by_one: true } => (true, 1),
            ReadMode::Pending { one_by_one: false } => (true, self.config.batch_size),
            ReadMode::New => (false, self.config.batch_size),
        };
        let block = self.block_for();
        let after = pending.then_some(&self.pending_after);
        let read = streams::read(&mut self.reader, &keys, &self.config.consumer_name, count, block, after).await?;
        if pending && read.entries.is_empty() {
            if self.pass_failed {
                // Another pass over what is still pending (what failed, until dead-lettered).
                self.pending_after = start_of_pending();
                self.pass_failed = false;
            } else {
                if self.mode == (ReadMode::Pending { one_by_one: true }) {
                    info!("pending entries applied one by one; back to batches");
                }
                self.mode = ReadMode::New;
            }
        }
        if pending {
            for (source, _, entry) in &read.entries {
                let index = if *source == Source::Commands { 0 } else { 1 };
                self.pending_after[index] = entry.id.clone();
            }
        }
        for entry in &read.heartbeats {
            batch.heartbeat_acks.push(entry.id.clone());
            match streams::heartbeat_entry(entry) {
                Some(heartbeat) => {
                    if self.state.heartbeat(&heartbeat) {
                        self.placement_due = true;
                    }
                }
                None => debug!(entry_id = entry.id, "ignoring an unreadable heartbeat entry"),
            }
        }
        let mut ready = Vec::with_capacity(read.entries.len());
        let mut conn = None;
        for (source, stream, entry) in read.entries {
            let deliveries = if pending {
                let conn = match &mut conn {
                    Some(conn) => conn,
                    None => conn.insert(self.redis.get().await?),
                };
                streams::deliveries(&mut *conn, &stream, &entry.id).await?
            } else {
                1
            };
            let text: Option<String> = entry.get(grid_shared::wire::fields::ENVELOPE);
            let decoded = decode(source, text.as_deref());
            let refusal = match (&decoded, deliveries > self.config.max_deliveries) {
                (Err(error), _) => Some(error.to_string()),
                (Ok(_), true) => Some(format!("not applied after {deliveries} deliveries")),
                (Ok(_), false) => None,
            };
            if let Some(reason) = refusal {
                let conn = match &mut conn {
                    Some(conn) => conn,
                    None => conn.insert(self.redis.get().await?),
                };
                let message_id = decoded.as_ref().ok().map(|(envelope, _)| envelope.id);
                streams::dead_letter(&mut *conn, &keys, &stream, &entry, message_id, &reason, deliveries).await?;
                continue;
            }
            if let Ok((envelope, decoded)) = decoded {
                ready.push(Ready { stream, entry_id: entry.id, envelope, decoded });
            }
        }
        Ok(ready)
    }

    /// Records in `relay_cursor` how far the events were published (when stepping down).
    pub async fn record_published(&mut self) -> Result<(), WriterError> {
        if self.recorded_seq < self.published_seq {
            postgres::record_published(&self.pool, self.fence(), self.published_seq).await?;
            self.recorded_seq = self.published_seq;
        }
        Ok(())
    }

    /// Credits with the books `feed` hands over (the live sources' fetcher), from the next step.
    pub fn follow_signals(&mut self, mut feed: crate::signals::Feed) {
        self.context.set_signals(feed.borrow_and_update().clone());
        self.signals = Some(feed);
    }

    /// One batch: read, decide ([`decide`]), commit, publish, acknowledge.
    pub async fn step(&mut self) -> Result<StepReport, WriterError> {
        if self.redis_suspect {
            self.recover_redis().await?;
        }
        if let Some(feed) = &mut self.signals
            && feed.has_changed().unwrap_or(false)
        {
            // Swapped between steps: a decision never waits on a source.
            self.context.set_signals(feed.borrow_and_update().clone());
        }
        let mut batch = Batch::default();
        let mut ready = self.read(&mut batch).await?;
        self.context.set_now(Utc::now());
        self.carry.extend(decide::split_for_own_batch(&mut ready));
        let lookups = self.lookups(&ready).await?;
        let one_by_one = self.mode == (ReadMode::Pending { one_by_one: true });
        if !self.quarantined.is_empty() {
            let quarantined = std::mem::take(&mut self.quarantined);
            decide::quarantine(&mut self.state, &mut self.context, &mut batch, &quarantined);
        }
        let fired =
            decide::messages(&mut self.state, &self.rules, &mut self.context, &mut batch, ready, &lookups, one_by_one);
        self.placement_due |= fired > 0 || batch.writes();
        let periodic = self.last_round.elapsed() >= Duration::from_millis(self.config.tick_ms);
        if !one_by_one && (self.placement_due || periodic) {
            batch.placed = self.placement(&mut batch).await?;
        }
        if !one_by_one {
            self.context.set_now(Utc::now());
            self.seal(&mut batch).await;
        }
        self.count_violations(&batch);
        let report = self.commit(batch).await?;
        self.publish_summary().await;
        Ok(report)
    }

    /// The lease every transaction of this writer checks first: its cell's epoch.
    fn fence(&self) -> postgres::Fence<'_> {
        postgres::Fence { cell: &self.rules.cell, epoch: self.epoch }
    }

    /// The cell's summary (`{ns}:summary`), rewritten at most every
    /// [`CellSummary::EVERY_MS`]: free cores, sun, queue and the zone's intensity now, for
    /// `GET /v1/cells` (and, with several cells, the gateway's choice). A failure is logged, not
    /// fatal: the summary is advice, and the next step tries again.
    async fn publish_summary(&mut self) {
        if self.last_summary.is_some_and(|last| last.elapsed() < Duration::from_millis(CellSummary::EVERY_MS)) {
            return;
        }
        self.last_summary = Some(Instant::now());
        let now = Utc::now();
        let zone = &self.config.grid.cell().zone;
        let signal = self.context.signals().lookup(zone, now);
        let fleet = &self.state.fleet;
        let watts_per_core = fleet.watts_per_core();
        let summary = CellSummary {
            epoch: self.epoch,
            holder: self.config.consumer_name.clone(),
            at_ms: now.timestamp_millis(),
            live_nodes: fleet.len() as u64,
            free_cores: fleet.free_cores(),
            sunny_nodes: fleet.sunny_nodes(),
            solar_surplus_watts: fleet
                .nodes()
                .map(|node| (node.solar_watts - f64::from(node.claimed) * watts_per_core).max(0.0))
                .sum(),
            queued_tasks: self.state.queue.len() as u64,
            open_tasks: self.state.tasks.len() as u64,
            zone: zone.clone(),
            intensity_mg_per_kwh: signal.intensity_mg_per_kwh,
            intensity_kind: signal.kind,
            intensity_source: signal.source.to_string(),
        };
        let published = async {
            let mut conn = self.redis.get().await?;
            streams::write_summary(&mut conn, &self.config.grid.keys, &summary).await?;
            Ok::<(), WriterError>(())
        };
        if let Err(error) = published.await {
            warn!(%error, "the cell's summary was not published");
        }
    }

    /// Logs and counts what the batch refused on state it did not expect.
    fn count_violations(&self, batch: &Batch) {
        for violation in &batch.violations {
            error!(
                task_id = ?violation.task_id,
                refused = violation.refused,
                detail = violation.detail,
                "invariant violated: refused, and going on"
            );
        }
        if !batch.violations.is_empty() {
            let count = batch.violations.len() as u64;
            self.status.metrics.counter("grid_invariant_violations_total", &[]).increment(count);
        }
    }

    /// What a batch must read from PostgreSQL before it is decided.
    async fn lookups(&self, ready: &[Ready]) -> Result<BatchLookups, WriterError> {
        let mut lookups = BatchLookups::default();
        if ready.is_empty() {
            return Ok(lookups);
        }
        let message_ids: Vec<MessageId> = ready.iter().map(|message| message.envelope.id).collect();
        let task_ids = decide::submitted_tasks(ready);
        let (applied, existing) =
            load::already_known(&self.pool, self.rules.cell.as_str(), &message_ids, &task_ids).await?;
        lookups.applied = applied;
        lookups.decide.existing_tasks = existing;
        if !self.rules.in_default_cell() {
            let (organizations, consents) = decide::organisation_level_needs(&self.state, ready);
            if !organizations.is_empty() || !consents.is_empty() {
                (lookups.decide.organizations, lookups.decide.consents) =
                    load::organisation_level(&self.pool, &organizations, &consents).await?;
            }
        }
        if let Some(first) = ready.first()
            && let Decoded::Command(Command::RevokeConsent(revoke)) = &first.decoded
            && let Some(organization_id) = first.envelope.organization_id
        {
            lookups.decide.purge = Some(
                load::purge_targets(&self.pool, self.rules.cell.as_str(), organization_id, revoke.owner_id).await?,
            );
        }
        Ok(lookups)
    }

    /// A placement round over the head of the queue.
    async fn placement(&mut self, batch: &mut Batch) -> Result<usize, WriterError> {
        self.placement_due = false;
        self.last_round = Instant::now();
        let Some((candidates, groups)) = decide::placement_candidates(&self.state) else { return Ok(0) };
        // Group tasks: their consent is checked against PostgreSQL too before their data leaves.
        let blocked =
            if groups.is_empty() { Default::default() } else { load::consent_withdrawn(&self.pool, &groups).await? };
        Ok(place_round(&mut self.state, &self.rules, &mut self.context, batch, &candidates, &blocked))
    }

    /// Commits the batch, publishes it and acknowledges its entries.
    async fn commit(&mut self, mut batch: Batch) -> Result<StepReport, WriterError> {
        let mut report =
            StepReport { messages: batch.messages, events: batch.events.len(), placed: batch.placed, statements: 0 };
        if batch.is_empty() {
            if self.recorded_seq < self.published_seq {
                // Idle: the cursor catches up, so that it says what was published.
                postgres::record_published(&self.pool, self.fence(), self.published_seq).await?;
                self.recorded_seq = self.published_seq;
            }
            return Ok(report);
        }
        if !batch.revoked_keys.is_empty() {
            // Before the commit: once a client can see the rotation applied, no gateway takes
            // the old key. A commit that then fails leaves markers that the redelivered
            // rotation makes true, or that the next recovery removes. A key is the
            // organisation's in every cell: the markers go under every cell's tag, where each
            // cell's gateways check them (in their own slot).
            let mut conn = self.redis.get().await?;
            for cell in self.config.grid.cells.iter() {
                let keys = self.config.grid.keys.cell_keys(&cell.name);
                streams::mark_revoked(&mut conn, &keys, &batch.revoked_keys).await?;
            }
        }
        let mut commit_seconds = None;
        if batch.writes() {
            let clock = Instant::now();
            let stats = postgres::flush(&self.pool, self.fence(), &mut batch, self.published_seq).await?;
            commit_seconds = Some(clock.elapsed().as_secs_f64());
            self.recorded_seq = self.published_seq;
            report.statements = stats.statements;
            self.commits += 1;
            self.statements += u64::from(stats.statements);
            self.messages += batch.messages as u64;
            debug!(
                messages = batch.messages,
                events = batch.events.len(),
                placed = batch.placed,
                statements = stats.statements,
                commit_us = clock.elapsed().as_micros() as u64,
                "batch committed"
            );
            if let Some(Fault::AbortAfterCommit(after)) = self.config.fault
                && batch.messages > 0
                && self.commits >= after
            {
                error!(commits = self.commits, "fault injection: aborting between commit and acknowledgement");
                std::process::abort();
            }
        }
        let claimed: Vec<(NodeId, usize)> =
            batch.claimed_changed.iter().map(|node_id| (*node_id, self.state.claimed(*node_id))).collect();
        let publication = streams::Publication {
            keys: &self.config.grid.keys,
            events_maxlen: self.config.events_stream_maxlen,
            trim: self.mode == ReadMode::New && self.carry.is_empty(),
            claimed,
        };
        let forwarded: Vec<grid_shared::envelope::Envelope> = if self.rules.in_default_cell() {
            batch
                .events
                .iter()
                .filter_map(|event| streams::forwarded_revocation(&event.envelope, &event.event))
                .collect()
        } else {
            Vec::new()
        };
        let published = {
            let mut conn = self.redis.get().await?;
            match streams::publish(&mut conn, &batch, &publication).await {
                Ok(()) => streams::forward(&mut conn, &self.config.grid, &forwarded).await,
                failed => failed,
            }
        };
        if let Err(error) = published {
            // Committed but not published: recovery publishes from PostgreSQL, and the entries,
            // still pending, are acknowledged as redeliveries.
            self.redis_suspect = true;
            self.carry.clear();
            return Err(error.into());
        }
        if let Some(last) = batch.last_seq() {
            self.published_seq = last;
        }
        for dead in &batch.dead_tasks {
            warn!(task_id = %dead.task_id, attempts = dead.attempts, "task failed for good; sent to the dead-letter stream");
        }
        if let Some(seconds) = commit_seconds {
            self.record_metrics(&batch, seconds);
        }
        self.report_status();
        Ok(report)
    }
}
