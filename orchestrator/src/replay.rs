//! Replay: rebuild every projection from the events alone, and diff it against PostgreSQL.
//!
//! The projections are the task statuses (with their node and attempt), the ledger balances per
//! node and of the cooperative fund, each node's completed tasks and trust, and the proof
//! chain's heads (the last `kgp1` link, the last `kgp2` block). Events
//! carry the inputs of each decision, so nothing else is read. A divergence names the entity, the
//! field, the value the events imply and the value stored.
//!
//! A replay of a live grid reads through one [`Snapshot`]: the events up to the last one
//! committed when it was taken, and the tables as they were right after it (the writer commits
//! events and rows together), so the grid going on meanwhile is not a divergence.
//!
//! Each cell has its own event sequence and proof chain (DESIGN §11): a replay reads one cell's
//! events and compares them with that cell's rows.

use std::collections::{BTreeMap, HashMap};

use grid_shared::cells::CellName;
use grid_shared::domain::TaskStatus;
use grid_shared::envelope::{Envelope, Message};
use grid_shared::events::{CreditsDistributed, Event};
use grid_shared::ids::{NodeId, TaskId};
use grid_shared::wire::{StreamEntryId, fields};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskProjection {
    pub status: TaskStatus,
    pub node_id: Option<NodeId>,
    pub attempts: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Projection {
    pub events: u64,
    pub last_seq: i64,
    pub tasks: BTreeMap<TaskId, TaskProjection>,
    /// The node owner's credits, in pico-euros.
    pub node_credits: BTreeMap<NodeId, i64>,
    /// The carbon credited to each node, in ng.
    pub node_carbon: BTreeMap<NodeId, i64>,
    pub cooperative_fund: i64,
    pub completed_by_node: BTreeMap<NodeId, i64>,
    /// The last `kgp1` link (seq, hash) and the last `kgp2` block (height, hash).
    pub chain_head: Option<(i64, String)>,
    pub block_head: Option<(i64, String)>,
    /// Each node's trust, as the last quorum that judged one of its results left it.
    pub node_trust: BTreeMap<NodeId, u32>,
    /// Credits whose recorded split does not follow from their recorded inputs (solar energy,
    /// the signal's intensity, the policy's price and share): each is recomputed as replayed.
    pub misreckoned: Vec<Divergence>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Divergence {
    pub entity: String,
    pub field: String,
    pub expected: String,
    pub found: String,
}

impl Projection {
    fn task(&mut self, task_id: TaskId) -> &mut TaskProjection {
        self.tasks.entry(task_id).or_insert(TaskProjection { status: TaskStatus::Queued, node_id: None, attempts: 0 })
    }

    /// Applies one event, in commit order.
    pub fn apply(&mut self, seq: i64, event: &Event) {
        self.events += 1;
        self.last_seq = seq;
        match event {
            Event::TaskAccepted(accepted) => {
                self.task(accepted.task_id);
            }
            Event::TaskRejected(rejected) => self.task(rejected.task_id).status = TaskStatus::Rejected,
            Event::TaskAssigned(assigned) => {
                let task = self.task(assigned.task_id);
                *task = TaskProjection {
                    status: TaskStatus::Assigned,
                    node_id: Some(assigned.node_id),
                    attempts: assigned.attempt,
                };
            }
            Event::TaskStarted(started) => self.task(started.task_id).status = TaskStatus::Running,
            Event::TaskRequeued(requeued) => {
                let task = self.task(requeued.task_id);
                task.status = TaskStatus::Queued;
                task.node_id = None;
            }
            Event::TaskCompleted(completed) => {
                self.task(completed.task_id).status = TaskStatus::Completed;
                *self.completed_by_node.entry(completed.node_id).or_default() += 1;
                for credit in completed.credits_distributed() {
                    self.credit(seq, &credit);
                }
            }
            Event::TaskFailed(failed) => self.task(failed.task_id).status = TaskStatus::Failed,
            Event::TaskCancelled(cancelled) => self.task(cancelled.task_id).status = TaskStatus::Cancelled,
            Event::TaskQuarantined(quarantined) => self.task(quarantined.task_id).status = TaskStatus::Quarantined,
            // Written before credits were folded into the completion.
            Event::CreditsDistributed(credit) => self.credit(seq, credit),
            Event::GreenProofAppended(link) => self.chain_head = Some((link.seq, link.hash.clone())),
            Event::BlockSealed(block) => self.block_head = Some((block.height, block.hash.clone())),
            Event::TaskResultRecorded(recorded) => {
                // The result is kept; the task waits for another replica.
                let task = self.task(recorded.task_id);
                task.status = TaskStatus::Queued;
                task.node_id = None;
            }
            Event::NodeTrustChanged(changed) => {
                self.node_trust.insert(changed.node_id, changed.trust);
            }
            Event::OrganizationCreated(_)
            | Event::NodeRegistered(_)
            | Event::NodeWentOffline(_)
            | Event::ConsentGranted(_)
            | Event::ConsentRevoked(_)
            | Event::ParticipantDataPurged(_)
            | Event::ApiKeyRotated(_)
            | Event::EnergyContractDeclared(_) => {}
        }
    }

    /// Adds one credit to the balances, recomputed from its recorded inputs: a credit whose
    /// split does not follow from them is a divergence.
    fn credit(&mut self, seq: i64, credit: &CreditsDistributed) {
        let recomputed = credit.recomputed();
        if recomputed != credit.split {
            let show = |split: &grid_shared::carbon::CreditSplit| {
                format!("{} ng, {} + {} p€", split.carbon_saved.0, split.node_share.0, split.cooperative_share.0)
            };
            self.misreckoned.push(divergence(
                format!("credit of task {} to node {} (event {seq})", credit.task_id, credit.node_id),
                "split",
                show(&recomputed),
                show(&credit.split),
            ));
        }
        *self.node_credits.entry(credit.node_id).or_default() += credit.split.node_share.0;
        *self.node_carbon.entry(credit.node_id).or_default() += credit.split.carbon_saved.0;
        self.cooperative_fund += credit.split.cooperative_share.0;
    }

    pub fn apply_envelope(&mut self, seq: i64, text: &str) -> Result<(), String> {
        let envelope = Envelope::from_json(text).map_err(|error| format!("event {seq}: {error}"))?;
        let event: Event = envelope.into_message().map_err(|error| format!("event {seq}: {error}"))?;
        self.apply(seq, &event);
        Ok(())
    }
}

const PAGE: i64 = 10_000;
/// Pages fetched and parsed at once, ahead of the one being applied.
const PAGES_AHEAD: usize = 3;

/// One read-only view of the archive and the tables, shared by the concurrent page fetches
/// (`pg_export_snapshot`), held open until the replay's diff is done.
pub struct Snapshot {
    tx: Transaction<'static, Postgres>,
    id: String,
    scope: Scope,
    /// The cell's last event committed when the snapshot was taken (0 for none).
    pub last_seq: i64,
}

/// The cell a replay reads, and how its rows are told apart: by `cell_id`, or (a database from
/// before cells, such as a v1 archive checked before its migration) not at all, the whole
/// database being the one cell.
#[derive(Debug, Clone)]
struct Scope {
    cell: String,
    /// A constant predicate on `$1` (the cell): `cell_id = $1`, or always true.
    filter: &'static str,
}

impl Scope {
    async fn of(db: &mut PgConnection, cell: &CellName) -> Result<Self, ReplayError> {
        let cells: bool = sqlx::query_scalar(
            "select exists (select 1 from information_schema.columns
                            where table_schema = current_schema() and table_name = 'event' and column_name = 'cell_id')",
        )
        .fetch_one(&mut *db)
        .await?;
        let filter = if cells { "cell_id = $1" } else { "$1::text is not null" };
        Ok(Self { cell: cell.as_str().to_owned(), filter })
    }

    /// `sql` with each `{cell}` replaced by the filter (a constant: nothing from outside enters
    /// the statement).
    fn sql(&self, sql: &str) -> sqlx::AssertSqlSafe<String> {
        sqlx::AssertSqlSafe(sql.replace("{cell}", self.filter))
    }
}

/// Starts a read-only repeatable-read transaction, in the exported `snapshot` if given.
async fn begin_read_only(pool: &PgPool, snapshot: Option<&str>) -> Result<Transaction<'static, Postgres>, ReplayError> {
    let mut tx = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *tx).await?;
    if let Some(id) = snapshot {
        // `set transaction snapshot` takes no parameters; the id is PostgreSQL's own
        // (hexadecimal digits and dashes), checked anyway.
        if !id.bytes().all(|byte| byte.is_ascii_hexdigit() || byte == b'-') {
            return Err(ReplayError::Event(format!("unexpected snapshot id {id:?}")));
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("set transaction snapshot '{id}'"))).execute(&mut *tx).await?;
    }
    Ok(tx)
}

impl Snapshot {
    /// A snapshot of the grid for replaying `cell`.
    pub async fn take(pool: &PgPool, cell: &CellName) -> Result<Self, ReplayError> {
        let mut tx = begin_read_only(pool, None).await?;
        let id: String = sqlx::query_scalar("select pg_export_snapshot()").fetch_one(&mut *tx).await?;
        let scope = Scope::of(&mut tx, cell).await?;
        let last_seq: Option<i64> = sqlx::query_scalar(scope.sql("select max(seq) from event where {cell}"))
            .bind(&scope.cell)
            .fetch_one(&mut *tx)
            .await?;
        Ok(Self { tx, id, scope, last_seq: last_seq.unwrap_or(0) })
    }

    /// The cell this snapshot replays.
    pub fn cell(&self) -> &str {
        &self.scope.cell
    }

    /// Replays the archive from `from_seq` up to [`Self::last_seq`]. Windows of `seq`s are
    /// fetched and parsed concurrently, each on its own connection in this snapshot
    /// (PostgreSQL uses a backend, so a core, per query), and applied in order.
    pub async fn replay(&self, pool: &PgPool, from_seq: i64) -> Result<Projection, ReplayError> {
        let (windows, mut received) = tokio::sync::mpsc::channel(PAGES_AHEAD);
        let producer = {
            let (pool, id, scope, last) = (pool.clone(), self.id.clone(), self.scope.clone(), self.last_seq);
            tokio::spawn(async move {
                let mut first = from_seq.max(1);
                while first <= last {
                    let window_last = first.saturating_add(PAGE - 1).min(last);
                    let fetch = tokio::spawn(fetch_window(pool.clone(), id.clone(), scope.clone(), first, window_last));
                    if windows.send(fetch).await.is_err() {
                        return;
                    }
                    first = window_last.saturating_add(1);
                }
            })
        };
        let mut projection = Projection::default();
        while let Some(fetch) = received.recv().await {
            let page = fetch.await.map_err(|error| ReplayError::Event(format!("a page fetch stopped: {error}")))??;
            for (seq, event) in &page {
                projection.apply(*seq, event);
            }
        }
        let _ = producer.await;
        Ok(projection)
    }

    /// Compares `projection` with the tables as this snapshot sees them (see [`diff`]).
    pub async fn diff(&mut self, projection: &Projection, whole: bool) -> Result<Vec<Divergence>, ReplayError> {
        diff_scoped(&mut self.tx, &self.scope, projection, whole).await
    }
}

/// Fetches and parses the events of one window of `seq`s, in the exported `snapshot`.
async fn fetch_window(
    pool: PgPool,
    snapshot: String,
    scope: Scope,
    first: i64,
    last: i64,
) -> Result<Vec<(i64, Event)>, ReplayError> {
    let mut tx = begin_read_only(&pool, Some(&snapshot)).await?;
    // The envelopes as archived (`json`: their text, which PostgreSQL returns as stored); only the
    // version and the payload are read of each, the payload decoded once, and the type from the
    // row (an envelope archived whole holds it too).
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as(scope.sql(
            "select seq, event_type, envelope::text from event where {cell} and seq between $2 and $3 order by seq",
        ))
        .bind(&scope.cell)
        .bind(first)
        .bind(last)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    rows.into_iter()
        .map(|(seq, event_type, text)| {
            let archived: Archived<'_> =
                serde_json::from_str(&text).map_err(|error| ReplayError::Event(format!("event {seq}: {error}")))?;
            Event::from_text(&event_type, archived.version, archived.payload.get())
                .map(|event| (seq, event))
                .map_err(|error| ReplayError::Event(format!("event {seq}: {error}")))
        })
        .collect()
}

/// What replay reads of an archived envelope.
#[derive(serde::Deserialize)]
struct Archived<'a> {
    version: u16,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

/// Replays the cell's PostgreSQL archive from `from_seq` up to its last event when the replay
/// starts (in a [`Snapshot`] of its own: take one to diff against the same view).
pub async fn from_postgres(pool: &PgPool, cell: &CellName, from_seq: i64) -> Result<Projection, ReplayError> {
    Snapshot::take(pool, cell).await?.replay(pool, from_seq).await
}

/// Replays the cell's archive from `from_seq` and compares it with the cell's rows, both in one
/// [`Snapshot`] (whole when replayed from the first event).
pub async fn audit(
    pool: &PgPool,
    cell: &CellName,
    from_seq: i64,
) -> Result<(Projection, Vec<Divergence>), ReplayError> {
    let mut snapshot = Snapshot::take(pool, cell).await?;
    let projection = snapshot.replay(pool, from_seq).await?;
    let divergences = snapshot.diff(&projection, from_seq <= 1).await?;
    Ok((projection, divergences))
}

/// How long a replay from Redis waits for the stream to catch up with the archive (events are
/// published right after their commit).
const STREAM_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// Replays the `{ns}:events` stream (its ids are `<seq>-0`) from `from_seq` up to `until`
/// (a [`Snapshot`]'s last event, to diff against it), waiting up to five seconds for the
/// stream to reach it; it stops where the stream ends if it does not.
pub async fn from_redis(
    conn: &mut impl redis::aio::ConnectionLike,
    stream: &str,
    from_seq: i64,
    until: i64,
) -> Result<Projection, ReplayError> {
    let mut projection = Projection::default();
    if until < from_seq.max(1) {
        return Ok(projection);
    }
    let mut start = StreamEntryId::of_event(from_seq).to_string();
    let end = StreamEntryId::of_event(until).to_string();
    let waiting_since = tokio::time::Instant::now();
    loop {
        let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg(&end)
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut *conn)
            .await?;
        let count = page.ids.len();
        for entry in &page.ids {
            let seq = StreamEntryId::parse(&entry.id)
                .and_then(|id| id.event_seq())
                .ok_or_else(|| ReplayError::Event(format!("entry {} is not an event id like 12-0", entry.id)))?;
            let text: String = entry
                .get(fields::ENVELOPE)
                .ok_or_else(|| ReplayError::Event(format!("entry {} has no envelope", entry.id)))?;
            projection.apply_envelope(seq, &text).map_err(ReplayError::Event)?;
            start = format!("({}", entry.id);
        }
        if (count as i64) == PAGE {
            continue;
        }
        if projection.last_seq >= until || waiting_since.elapsed() > STREAM_CATCH_UP {
            return Ok(projection);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// This module's failures are the crate's [`crate::error::Error`].
pub type ReplayError = crate::error::Error;

fn divergence(entity: String, field: &str, expected: impl ToString, found: impl ToString) -> Divergence {
    Divergence { entity, field: field.to_owned(), expected: expected.to_string(), found: found.to_string() }
}

/// Compares a projection of the cell's events with its rows. With `whole` false (a replay from a
/// later seq), only the tasks the replay saw are compared.
pub async fn diff(
    db: &mut PgConnection,
    cell: &CellName,
    projection: &Projection,
    whole: bool,
) -> Result<Vec<Divergence>, ReplayError> {
    let scope = Scope::of(db, cell).await?;
    diff_scoped(db, &scope, projection, whole).await
}

async fn diff_scoped(
    db: &mut PgConnection,
    scope: &Scope,
    projection: &Projection,
    whole: bool,
) -> Result<Vec<Divergence>, ReplayError> {
    let mut divergences = projection.misreckoned.clone();
    let rows = sqlx::query(scope.sql("select task_id, status, node_id, attempts from task where {cell}"))
        .bind(&scope.cell)
        .fetch_all(&mut *db)
        .await?;
    let mut stored: HashMap<TaskId, (String, Option<uuid::Uuid>, i32)> = HashMap::with_capacity(rows.len());
    for row in &rows {
        stored.insert(
            TaskId(row.try_get("task_id")?),
            (row.try_get("status")?, row.try_get("node_id")?, row.try_get("attempts")?),
        );
    }
    for (task_id, expected) in &projection.tasks {
        let entity = format!("task {task_id}");
        let Some((status, node_id, attempts)) = stored.remove(task_id) else {
            divergences.push(divergence(entity, "row", "present", "missing"));
            continue;
        };
        if status != expected.status.as_str() {
            divergences.push(divergence(entity.clone(), "status", expected.status.as_str(), &status));
        }
        if attempts != expected.attempts {
            divergences.push(divergence(entity.clone(), "attempts", expected.attempts, attempts));
        }
        // A final task keeps the node it ended on; a queued one has none.
        if matches!(expected.status, TaskStatus::Assigned | TaskStatus::Running)
            && node_id != expected.node_id.map(|id| id.as_uuid())
        {
            let show = |id: Option<uuid::Uuid>| id.map_or("none".to_owned(), |id| id.to_string());
            divergences.push(divergence(
                entity,
                "node_id",
                show(expected.node_id.map(|id| id.as_uuid())),
                show(node_id),
            ));
        }
    }
    if !whole {
        return Ok(divergences);
    }
    for (task_id, (status, _, _)) in stored {
        divergences.push(divergence(format!("task {task_id}"), "row", "absent (no event)", status));
    }
    let balances = sqlx::query(scope.sql(
        "select node_id, coalesce(sum(amount_peur), 0)::bigint as amount, coalesce(sum(carbon_ng), 0)::bigint as carbon
         from credit_entry where {cell} and account = 'node' group by node_id",
    ))
    .bind(&scope.cell)
    .fetch_all(&mut *db)
    .await?;
    let mut credits: BTreeMap<NodeId, (i64, i64)> = BTreeMap::new();
    for row in &balances {
        credits.insert(NodeId(row.try_get("node_id")?), (row.try_get("amount")?, row.try_get("carbon")?));
    }
    let nodes: std::collections::BTreeSet<NodeId> =
        credits.keys().chain(projection.node_credits.keys()).copied().collect();
    for node_id in nodes {
        let (amount, carbon) = credits.get(&node_id).copied().unwrap_or((0, 0));
        let expected_amount = projection.node_credits.get(&node_id).copied().unwrap_or(0);
        let expected_carbon = projection.node_carbon.get(&node_id).copied().unwrap_or(0);
        if amount != expected_amount {
            divergences.push(divergence(format!("node {node_id}"), "credits_peur", expected_amount, amount));
        }
        if carbon != expected_carbon {
            divergences.push(divergence(format!("node {node_id}"), "carbon_ng", expected_carbon, carbon));
        }
    }
    let fund: i64 = sqlx::query_scalar(scope.sql(
        "select coalesce(sum(amount_peur), 0)::bigint from credit_entry where {cell} and account = 'cooperative'",
    ))
    .bind(&scope.cell)
    .fetch_one(&mut *db)
    .await?;
    if fund != projection.cooperative_fund {
        divergences.push(divergence("cooperative fund".to_owned(), "balance_peur", projection.cooperative_fund, fund));
    }
    let trusted: Vec<(uuid::Uuid, i32)> =
        sqlx::query_as(scope.sql("select node_id, trust from node where {cell} and trust > 0"))
            .bind(&scope.cell)
            .fetch_all(&mut *db)
            .await?;
    let mut stored_trust: BTreeMap<NodeId, u32> =
        trusted.into_iter().map(|(node_id, trust)| (NodeId(node_id), u32::try_from(trust).unwrap_or(0))).collect();
    for (node_id, expected) in &projection.node_trust {
        let found = stored_trust.remove(node_id).unwrap_or(0);
        if found != *expected {
            divergences.push(divergence(format!("node {node_id}"), "trust", expected, found));
        }
    }
    for (node_id, found) in stored_trust {
        divergences.push(divergence(format!("node {node_id}"), "trust", 0, found));
    }
    let head: Option<(i64, String)> =
        sqlx::query_as(scope.sql("select seq, hash from green_proof where {cell} order by seq desc limit 1"))
            .bind(&scope.cell)
            .fetch_optional(&mut *db)
            .await?;
    let show =
        |head: &Option<(i64, String)>| head.as_ref().map_or("none".to_owned(), |(seq, hash)| format!("{seq}:{hash}"));
    if head != projection.chain_head {
        divergences.push(divergence("proof chain".to_owned(), "head", show(&projection.chain_head), show(&head)));
    }
    // A database not yet migrated to proof blocks has none.
    let blocks_exist: bool =
        sqlx::query_scalar("select to_regclass('proof_block') is not null").fetch_one(&mut *db).await?;
    let block: Option<(i64, String)> = if blocks_exist {
        sqlx::query_as(scope.sql("select height, hash from proof_block where {cell} order by height desc limit 1"))
            .bind(&scope.cell)
            .fetch_optional(&mut *db)
            .await?
    } else {
        None
    };
    if block != projection.block_head {
        divergences.push(divergence(
            "proof chain".to_owned(),
            "block head",
            show(&projection.block_head),
            show(&block),
        ));
    }
    Ok(divergences)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use grid_shared::carbon::{CarbonPolicy, MicroWattHours};
    use grid_shared::events::{Credits, EnergyCheck, LeafPosition, NodeCredit, TaskCompleted};
    use grid_shared::signals::{SignalBook, Zone};

    use super::*;

    fn credit(node_id: NodeId, solar: i64, leaf_index: i64) -> NodeCredit {
        let signal = SignalBook::fixed(180_000).lookup(&Zone::parse("BE").unwrap(), Utc::now());
        NodeCredit {
            node_id,
            solar_contribution: MicroWattHours(solar),
            split: CarbonPolicy::default().credit_at(MicroWattHours(solar), signal.intensity_mg_per_kwh),
            signal,
            leaf: LeafPosition {
                block_height: 1,
                leaf_index,
                attempt: 1,
                energy_used: MicroWattHours(2 * solar),
                credited_at: Utc::now(),
                leaf_hash: "ab".repeat(32),
            },
        }
    }

    fn completion(task_id: TaskId, node_id: NodeId, credits: Vec<NodeCredit>) -> TaskCompleted {
        TaskCompleted {
            task_id,
            node_id,
            attempt: 1,
            result_hash: "cd".repeat(32),
            energy_used: MicroWattHours(2_000_000),
            solar_contribution: MicroWattHours(1_000_000),
            check: EnergyCheck {
                runtime_ms: 60_000,
                cpu_cores: 4,
                max_milliwatts_per_core: 2_000,
                energy_bound: MicroWattHours(133_333),
                refusal: None,
            },
            validation: None,
            sci: None,
            credits: (!credits.is_empty()).then(|| Credits { policy: CarbonPolicy::default(), nodes: credits }),
        }
    }

    #[test]
    fn a_completion_with_its_credits_replays_as_one_followed_by_credit_events() {
        let (task_id, node_id, peer) = (TaskId::new(), NodeId::new(), NodeId::new());
        let credits = vec![credit(node_id, 1_000_000, 0), credit(peer, 400_000, 1)];
        let folded = completion(task_id, node_id, credits.clone());
        let mut now = Projection::default();
        now.apply(7, &Event::TaskCompleted(folded.clone()));
        // An archive from before the fold: the completion, then a credit event per credit.
        let mut before = Projection::default();
        before.apply(7, &Event::TaskCompleted(completion(task_id, node_id, Vec::new())));
        for (seq, credit) in (8..).zip(folded.credits_distributed()) {
            before.apply(seq, &Event::CreditsDistributed(credit));
        }
        assert_eq!((now.node_credits.len(), now.misreckoned.len()), (2, 0));
        assert!(now.cooperative_fund > 0);
        assert_eq!(
            (now.node_credits, now.node_carbon, now.cooperative_fund, now.tasks, now.completed_by_node),
            (before.node_credits, before.node_carbon, before.cooperative_fund, before.tasks, before.completed_by_node)
        );
    }

    #[test]
    fn a_folded_credit_that_does_not_follow_from_its_inputs_is_a_divergence() {
        let (task_id, node_id) = (TaskId::new(), NodeId::new());
        let mut tampered = credit(node_id, 1_000_000, 0);
        tampered.split.node_share.0 += 1_000;
        tampered.split.cooperative_share.0 -= 1_000;
        let mut projection = Projection::default();
        projection.apply(7, &Event::TaskCompleted(completion(task_id, node_id, vec![tampered])));
        assert_eq!(projection.misreckoned.len(), 1, "{:?}", projection.misreckoned);
        let divergence = &projection.misreckoned[0];
        assert_eq!(divergence.entity, format!("credit of task {task_id} to node {node_id} (event 7)"));
        assert_eq!(divergence.field, "split");
    }
}
