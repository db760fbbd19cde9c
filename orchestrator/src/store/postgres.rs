//! The only code that writes the tables: one transaction per batch, fenced by the epoch of the
//! writer's cell, with one multi-row statement (`unnest`) per table the batch touches.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use grid_shared::cells::CellName;
use grid_shared::domain::{TaskInput, TaskKind};
use grid_shared::events::Event;
use grid_shared::ids::TaskId;
use grid_shared::reasons::{Refusal, TaskReason};
use sqlx::{PgConnection, PgPool};

use crate::model::batch::Batch;

/// This module's failures are the crate's [`crate::error::Error`] (`Fenced` or `Postgres`).
pub type StoreError = crate::error::Error;

/// What one flush cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlushStats {
    pub statements: u32,
}

/// The lease a transaction checks first: the writer's cell and the epoch it holds there.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub cell: &'a CellName,
    pub epoch: i64,
}

impl Fence<'_> {
    /// Reads the cell's `writer` row `for share` and refuses unless it still holds `epoch` (the
    /// row lock is held to commit, so a writer taking over waits for this transaction before it
    /// loads the state).
    async fn check(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        let current: i64 =
            sqlx::query_scalar!("select epoch from writer where cell_id = $1 for share", self.cell.as_str())
                .fetch_one(conn)
                .await?;
        if current != self.epoch {
            return Err(StoreError::Fenced { held: self.epoch, current });
        }
        Ok(())
    }
}

/// Writes a batch in one transaction, checking first that this writer still holds its cell's
/// lease (`fence`). `published_seq` is how far the event stream was published.
pub async fn flush(
    pool: &PgPool,
    fence: Fence<'_>,
    batch: &mut Batch,
    published_seq: i64,
) -> Result<FlushStats, StoreError> {
    let mut tx = pool.begin().await?;
    let mut stats = FlushStats::default();
    fence.check(&mut tx).await?;
    stats.statements += 1;
    let conn: &mut PgConnection = &mut tx;
    stats.statements += plan_by_keys(conn).await?;
    let cell = fence.cell.as_str();
    stats.statements += write_registry(conn, batch).await?;
    stats.statements += write_tasks(conn, cell, batch).await?;
    stats.statements += write_results(conn, cell, batch).await?;
    stats.statements += write_ledger(conn, cell, batch).await?;
    stats.statements += load_missing_inputs(conn, cell, batch).await?;
    stats.statements += write_events(conn, cell, batch, published_seq).await?;
    tx.commit().await?;
    Ok(stats)
}

/// Every statement of a batch finds its rows by their keys: the updates join the batch's
/// `unnest` to their table on its key. A table that grew faster than its statistics (a new
/// grid or cell in its first minutes, the bench: `task` with 150,000 row versions and no
/// `ANALYZE` yet) leaves the planner without the key's distinct count; it then took each of the
/// batch's rows to match hundreds and hashed the whole table for every batch (auto_explain:
/// a hash join over a sequential scan of `task`, 22 ms for 77 tasks, in 202 of the end-to-end
/// phase's batches). The batch's transaction turns sequential and bitmap scans, hash joins and
/// merge joins off for itself (`set_config(…, true)`: until it commits), so that each row is
/// found through its key by an index scan in a nested loop, whatever the statistics say.
pub(crate) async fn plan_by_keys(conn: &mut PgConnection) -> Result<u32, sqlx::Error> {
    sqlx::query!(
        "select set_config('enable_seqscan', 'off', true) as seqscan,
             set_config('enable_bitmapscan', 'off', true) as bitmapscan,
             set_config('enable_hashjoin', 'off', true) as hashjoin,
             set_config('enable_mergejoin', 'off', true) as mergejoin"
    )
    .fetch_one(conn)
    .await?;
    Ok(1)
}

/// A transaction for reads, planned as [`plan_by_keys`] plans a batch, for the lookups that run
/// outside one (by `= any($1)` and by a join on a key). They are prepared, and PostgreSQL keeps
/// a prepared statement's generic plan for the connection's life: one made while the tables were
/// small (a sequential scan of `processed_message`) went on scanning them once they held
/// hundreds of thousands of rows, 75–184 ms for each batch's lookup of its message ids
/// (auto_explain over `just bench`, where it happened in about half the runs: PostgreSQL's CPU
/// per task 2–14 times its usual for the rest of the run). Planned with sequential scans off,
/// every plan of these statements, generic or not, goes through the keys' indexes.
pub(crate) async fn keyed_read(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    plan_by_keys(&mut transaction).await?;
    Ok(transaction)
}

/// Records how far the events were published, in a transaction of its own (an idle writer).
pub async fn record_published(pool: &PgPool, fence: Fence<'_>, published_seq: i64) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    fence.check(&mut tx).await?;
    sqlx::query!(
        "update relay_cursor set last_seq = $1 where cell_id = $2 and last_seq < $1",
        published_seq,
        fence.cell.as_str()
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Organisations, keys, nodes and consent: few rows, rarely.
async fn write_registry(conn: &mut PgConnection, batch: &Batch) -> Result<u32, sqlx::Error> {
    let mut statements = 0;
    if !batch.organizations.is_empty() {
        let (ids, names): (Vec<uuid::Uuid>, Vec<&str>) =
            batch.organizations.iter().map(|(id, name)| (id.as_uuid(), name.as_str())).unzip();
        sqlx::query!(
            "insert into organization (organization_id, name) select * from unnest($1::uuid[], $2::text[])",
            &ids,
            &names as &[_]
        )
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    if !batch.api_keys.is_empty() {
        let (hashes, organizations): (Vec<&str>, Vec<uuid::Uuid>) =
            batch.api_keys.iter().map(|(hash, id)| (hash.as_str(), id.as_uuid())).unzip();
        sqlx::query!(
            "insert into api_key (key_hash, organization_id) select * from unnest($1::text[], $2::uuid[])",
            &hashes as &[_],
            &organizations
        )
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    for (organization_id, factor, label) in &batch.energy_contracts {
        sqlx::query!(
            "update organization set market_factor_mg_per_kwh = $2, market_factor_label = $3,
                 market_factor_declared_at = now()
             where organization_id = $1",
            organization_id.as_uuid(),
            factor,
            label
        )
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    for (organization_id, kept) in &batch.key_revocations {
        sqlx::query!(
            "update api_key set revoked_at = now()
             where organization_id = $1 and key_hash <> $2 and revoked_at is null",
            organization_id.as_uuid(),
            kept
        )
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    if !batch.nodes.is_empty() {
        let nodes = &batch.nodes;
        sqlx::query!(
            "insert into node (node_id, organization_id, name, cpu_cores, has_solar, location, token_hash, zone,
                 embodied_g_co2e, cell_id)
             select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::int4[], $5::bool[], $6::text[], $7::text[],
                 $8::text[], $9::int8[], $10::text[])",
            &nodes.iter().map(|node| node.node_id.as_uuid()).collect::<Vec<_>>(),
            &nodes.iter().map(|node| node.organization_id.as_uuid()).collect::<Vec<_>>(),
            &nodes.iter().map(|node| node.name.as_str()).collect::<Vec<_>>() as &[_],
            &nodes.iter().map(|node| i32::from(node.cpu_cores)).collect::<Vec<_>>(),
            &nodes.iter().map(|node| node.has_solar).collect::<Vec<_>>(),
            &nodes.iter().map(|node| node.location.as_str()).collect::<Vec<_>>() as &[_],
            &nodes.iter().map(|node| node.token_hash.as_str()).collect::<Vec<_>>() as &[_],
            &nodes.iter().map(|node| node.zone.as_str()).collect::<Vec<_>>() as &[_],
            &nodes.iter().map(|node| node.embodied_g).collect::<Vec<_>>() as &[_],
            &nodes.iter().map(|node| node.cell.as_str()).collect::<Vec<_>>() as &[_]
        )
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    for change in &batch.consent {
        if change.granted {
            sqlx::query!(
                "insert into consent (owner_id, organization_id, granted, granted_at, revoked_at, consent_ip,
                     consent_version)
                 values ($1, $2, true, $3, null, $4, $5)
                 on conflict (owner_id, organization_id) do update set granted = true, granted_at = $3,
                     revoked_at = null, consent_ip = $4, consent_version = $5",
                change.owner_id.as_uuid(),
                change.organization_id.as_uuid(),
                change.at,
                change.consent_ip.as_deref(),
                change.consent_version.as_deref()
            )
            .execute(&mut *conn)
            .await?;
        } else {
            sqlx::query!(
                "update consent set granted = false, revoked_at = $3 where owner_id = $1 and organization_id = $2",
                change.owner_id.as_uuid(),
                change.organization_id.as_uuid(),
                change.at
            )
            .execute(&mut *conn)
            .await?;
        }
        sqlx::query!(
            "insert into consent_history (owner_id, organization_id, action, at, consent_ip, consent_version)
             values ($1, $2, $3, $4, $5, $6)",
            change.owner_id.as_uuid(),
            change.organization_id.as_uuid(),
            if change.granted { "granted" } else { "revoked" },
            change.at,
            change.consent_ip.as_deref(),
            change.consent_version.as_deref()
        )
        .execute(&mut *conn)
        .await?;
        statements += 2;
    }
    Ok(statements)
}

/// New tasks in one insert (with the state they reached in the batch, so a task admitted and
/// placed in one batch is one row version), changed ones in one update.
///
/// The updates find their rows by their own ids (a task's, a result's, a node's: the leading
/// columns of the keys, which end with the cell) and name no cell: a constant `cell_id = $n`
/// beside them let PostgreSQL, its statistics behind a table growing by thousands of rows a
/// second, scan the whole cell through the key's last column and hash it (measured: a third
/// more PostgreSQL CPU per task). The writer only ever knows its own cell's ids.
async fn write_tasks(conn: &mut PgConnection, cell: &str, batch: &Batch) -> Result<u32, sqlx::Error> {
    let mut statements = 0;
    let inserted: HashSet<TaskId> = batch.task_inserts.iter().map(|insert| insert.task_id).collect();
    if !batch.task_inserts.is_empty() {
        // Every insert has its row (`Batch::task_row` is called with each).
        let rows: Vec<_> = batch
            .task_inserts
            .iter()
            .filter_map(|insert| batch.task_rows.get(&insert.task_id).map(|row| (insert, row)))
            .collect();
        sqlx::query!(
            "insert into task (task_id, organization_id, copropriete_id, kind_type, kind, priority, deadline, status,
                 attempts, node_id, assigned_at, started_at, finished_at, not_before, reason, correlation_id,
                 submitted_entry_id, replicas, quorum, result_limit, assignment_seq, submitted_at, updated_at, cell_id)
             select task_id, organization_id, copropriete_id, kind_type, kind::jsonb, priority, deadline, status, attempts,
                 node_id, assigned_at, started_at, finished_at, not_before, reason, correlation_id, submitted_entry_id,
                 replicas, quorum, result_limit, assignment_seq, submitted_at, submitted_at, $23
             from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::int2[], $7::timestamptz[],
                 $8::text[], $9::int4[], $10::uuid[], $11::timestamptz[], $12::timestamptz[], $13::timestamptz[],
                 $14::timestamptz[], $15::text[], $16::uuid[], $17::text[], $18::int2[], $19::int2[], $20::int2[],
                 $21::int8[], $22::timestamptz[])
                 as given(task_id, organization_id, copropriete_id, kind_type, kind, priority, deadline, status,
                     attempts, node_id, assigned_at, started_at, finished_at, not_before, reason, correlation_id,
                     submitted_entry_id, replicas, quorum, result_limit, assignment_seq, submitted_at)",
            &rows.iter().map(|(insert, _)| insert.task_id.as_uuid()).collect::<Vec<_>>(),
            &rows.iter().map(|(insert, _)| insert.organization_id.as_uuid()).collect::<Vec<_>>(),
            &rows.iter().map(|(insert, _)| insert.copropriete_id).collect::<Vec<_>>(),
            &rows.iter().map(|(insert, _)| insert.kind_type).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|(insert, _)| insert.kind_json.as_str()).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|(insert, _)| i16::from(insert.priority)).collect::<Vec<_>>(),
            &rows.iter().map(|(insert, _)| insert.deadline).collect::<Vec<_>>(),
            &rows.iter().map(|(_, row)| row.status.as_str()).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|(_, row)| row.attempts).collect::<Vec<_>>(),
            &rows.iter().map(|(_, row)| row.node_id.map(|id| id.as_uuid())).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|(_, row)| row.assigned_at).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|(_, row)| row.started_at).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|(_, row)| row.finished_at).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|(_, row)| row.not_before).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|(_, row)| row.reason.as_ref().map(TaskReason::to_stored)).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|(insert, _)| insert.correlation_id).collect::<Vec<_>>(),
            &rows.iter().map(|(insert, _)| insert.submitted_entry_id.as_str()).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|(insert, _)| i16::from(insert.replicas)).collect::<Vec<_>>(),
            &rows.iter().map(|(_, row)| i16::from(row.quorum)).collect::<Vec<_>>(),
            &rows.iter().map(|(_, row)| i16::from(row.result_limit)).collect::<Vec<_>>(),
            &rows.iter().map(|(_, row)| row.assignment_seq).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|(insert, _)| insert.submitted_at).collect::<Vec<_>>(),
            cell
        )
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    let updated: Vec<_> = batch
        .task_order
        .iter()
        .filter(|task_id| !inserted.contains(task_id))
        .filter_map(|task_id| batch.task_rows.get(task_id))
        .collect();
    if !updated.is_empty() {
        sqlx::query!(
            "update task t set status = g.status, attempts = g.attempts, node_id = g.node_id,
                 assigned_at = g.assigned_at, started_at = g.started_at, finished_at = g.finished_at,
                 not_before = g.not_before, reason = g.reason, quorum = g.quorum, result_limit = g.result_limit,
                 assignment_seq = g.assignment_seq, result_hash = coalesce(g.result_hash, t.result_hash),
                 energy_uwh = coalesce(g.energy_uwh, t.energy_uwh),
                 solar_uwh = coalesce(g.solar_uwh, t.solar_uwh),
                 sci_operational_ng = coalesce(g.sci_operational_ng, t.sci_operational_ng),
                 sci_embodied_ng = coalesce(g.sci_embodied_ng, t.sci_embodied_ng), updated_at = now()
             from unnest($1::uuid[], $2::text[], $3::int4[], $4::uuid[], $5::timestamptz[], $6::timestamptz[],
                 $7::timestamptz[], $8::timestamptz[], $9::text[], $10::int2[], $11::int2[], $12::int8[],
                 $13::text[], $14::int8[], $15::int8[], $16::int8[], $17::int8[])
                 as g(task_id, status, attempts, node_id, assigned_at, started_at, finished_at, not_before, reason,
                      quorum, result_limit, assignment_seq, result_hash, energy_uwh, solar_uwh, sci_operational_ng,
                      sci_embodied_ng)
             where t.task_id = g.task_id",
            &updated.iter().map(|row| row.task_id.as_uuid()).collect::<Vec<_>>(),
            &updated.iter().map(|row| row.status.as_str()).collect::<Vec<_>>() as &[_],
            &updated.iter().map(|row| row.attempts).collect::<Vec<_>>(),
            &updated.iter().map(|row| row.node_id.map(|id| id.as_uuid())).collect::<Vec<_>>() as &[_],
            &updated.iter().map(|row| row.assigned_at).collect::<Vec<_>>() as &[_],
            &updated.iter().map(|row| row.started_at).collect::<Vec<_>>() as &[_],
            &updated.iter().map(|row| row.finished_at).collect::<Vec<_>>() as &[_],
            &updated.iter().map(|row| row.not_before).collect::<Vec<_>>() as &[_],
            &updated.iter().map(|row| row.reason.as_ref().map(TaskReason::to_stored)).collect::<Vec<_>>() as &[_],
            &updated.iter().map(|row| i16::from(row.quorum)).collect::<Vec<_>>(),
            &updated.iter().map(|row| i16::from(row.result_limit)).collect::<Vec<_>>(),
            &updated.iter().map(|row| row.assignment_seq).collect::<Vec<_>>() as &[_],
            &updated.iter().map(|row| row.result.as_ref().map(|result| result.result_hash.as_str())).collect::<Vec<_>>()
                as &[_],
            &updated.iter().map(|row| row.result.as_ref().map(|result| result.energy.0)).collect::<Vec<_>>() as &[_],
            &updated.iter().map(|row| row.result.as_ref().map(|result| result.solar.0)).collect::<Vec<_>>() as &[_],
            &updated.iter().map(|row| row_sci(row).map(|sci| sci.operational_ng)).collect::<Vec<_>>() as &[_],
            &updated.iter().map(|row| row_sci(row).map(|sci| sci.embodied_ng)).collect::<Vec<_>>() as &[_],
        )
        .persistent(false)
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    if !batch.quarantined.is_empty() {
        // Only the status and the reason change: the rest of the row is the evidence.
        sqlx::query!(
            "update task t set status = 'quarantined', reason = g.reason, updated_at = now()
             from unnest($1::uuid[], $2::text[]) as g(task_id, reason) where t.task_id = g.task_id",
            &batch.quarantined.iter().map(|(task_id, _)| task_id.as_uuid()).collect::<Vec<_>>(),
            &batch.quarantined.iter().map(|(_, reason)| reason.to_stored()).collect::<Vec<_>>()
        )
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    for (organization_id, owner_id) in &batch.purges {
        // The readings leave every stored payload of the organisation's tasks that used them.
        sqlx::query!(
            "update task set kind = jsonb_set(kind, '{participants}', coalesce(
                 (select jsonb_agg(participant) from jsonb_array_elements(kind -> 'participants') participant
                  where participant ->> 'owner_id' <> $2), '[]'::jsonb)),
                 updated_at = now()
             where cell_id = $3 and organization_id = $1 and kind_type = 'energy_group_optimisation'
               and jsonb_path_query_array(kind, '$.participants[*].owner_id') @> jsonb_build_array($2::text)",
            organization_id.as_uuid(),
            owner_id.to_string(),
            cell
        )
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    Ok(statements)
}

fn row_sci(row: &crate::model::batch::TaskRow) -> Option<grid_shared::carbon::Sci> {
    row.result.as_ref().and_then(|result| result.sci)
}

async fn write_results(conn: &mut PgConnection, cell: &str, batch: &Batch) -> Result<u32, sqlx::Error> {
    let mut statements = 0;
    if !batch.results.is_empty() {
        let rows = &batch.results;
        sqlx::query!(
            "insert into task_result (task_id, attempt, node_id, owner_id, result_hash, result_json, energy_uwh,
                 solar_uwh, refusal, verdict, reported_at, cell_id)
             select task, attempt, node, owner, hash, result::json, energy, solar, refusal, verdict, at, $12
             from unnest($1::uuid[], $2::int4[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::int8[],
                 $8::int8[], $9::text[], $10::text[], $11::timestamptz[])
                 as given(task, attempt, node, owner, hash, result, energy, solar, refusal, verdict, at)",
            &rows.iter().map(|row| row.task_id.as_uuid()).collect::<Vec<_>>(),
            &rows.iter().map(|row| row.result.attempt).collect::<Vec<_>>(),
            &rows.iter().map(|row| row.result.node_id.as_uuid()).collect::<Vec<_>>(),
            &rows.iter().map(|row| row.result.owner_id.as_uuid()).collect::<Vec<_>>(),
            &rows.iter().map(|row| row.result.result_hash.as_str()).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|row| row.result_json.as_ref().map(ToString::to_string)).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|row| row.result.energy.0).collect::<Vec<_>>(),
            &rows.iter().map(|row| row.result.solar.0).collect::<Vec<_>>(),
            &rows.iter().map(|row| row.result.refusal.as_deref()).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|row| row.verdict.as_str()).collect::<Vec<_>>() as &[_],
            &rows.iter().map(|row| row.reported_at).collect::<Vec<_>>(),
            cell
        )
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    if !batch.verdicts.is_empty() {
        let verdicts = &batch.verdicts;
        sqlx::query!(
            "update task_result r set verdict = g.verdict
             from unnest($1::uuid[], $2::int4[], $3::text[]) as g(task_id, attempt, verdict)
             where r.task_id = g.task_id and r.attempt = g.attempt",
            &verdicts.iter().map(|(task_id, _, _)| task_id.as_uuid()).collect::<Vec<_>>(),
            &verdicts.iter().map(|(_, attempt, _)| *attempt).collect::<Vec<_>>(),
            &verdicts.iter().map(|(_, _, verdict)| verdict.as_str()).collect::<Vec<_>>() as &[_]
        )
        .persistent(false)
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    if !batch.trust.is_empty() {
        let (nodes, trust): (Vec<uuid::Uuid>, Vec<i32>) = batch
            .trust
            .iter()
            .map(|(node_id, trust)| (node_id.as_uuid(), i32::try_from(*trust).unwrap_or(i32::MAX)))
            .unzip();
        sqlx::query!(
            "update node n set trust = g.trust from unnest($1::uuid[], $2::int4[]) as g(node_id, trust)
             where n.node_id = g.node_id",
            &nodes,
            &trust
        )
        .persistent(false)
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    Ok(statements)
}

/// Each credited result's leaf, which is its two ledger entries too (node, cooperative fund: the
/// view `credit_entry`); then the blocks sealed in this batch.
async fn write_ledger(conn: &mut PgConnection, cell: &str, batch: &Batch) -> Result<u32, sqlx::Error> {
    let mut statements = 0;
    if !batch.credits.is_empty() {
        let credits = &batch.credits;
        let leaves: Vec<_> = credits.iter().map(|credit| &credit.leaf).collect();
        sqlx::query!(
            "insert into proof_leaf (block_height, leaf_index, task_id, node_id, attempt, energy_uwh, solar_uwh,
                 carbon_ng, node_peur, cooperative_peur, credited_at, leaf_hash, zone, intensity_hour,
                 intensity_mg_per_kwh, intensity_kind, intensity_source, price_peur_per_kg, node_share_percent, cell_id)
             select *, $20 from unnest($7::int8[], $8::int4[], $1::uuid[], $2::uuid[], $9::int4[], $10::int8[],
                 $11::int8[], $3::int8[], $4::int8[], $5::int8[], $6::timestamptz[], $12::text[], $13::text[],
                 $14::timestamptz[], $15::int8[], $16::text[], $17::text[], $18::int8[], $19::int2[])",
            &leaves.iter().map(|leaf| leaf.task_id.as_uuid()).collect::<Vec<_>>(),
            &leaves.iter().map(|leaf| leaf.node_id.as_uuid()).collect::<Vec<_>>(),
            &leaves.iter().map(|leaf| leaf.carbon.0).collect::<Vec<_>>(),
            &leaves.iter().map(|leaf| leaf.node_share.0).collect::<Vec<_>>(),
            &leaves.iter().map(|leaf| leaf.cooperative_share.0).collect::<Vec<_>>(),
            &leaves.iter().map(|leaf| leaf.credited_at).collect::<Vec<_>>(),
            &credits.iter().map(|credit| credit.block_height).collect::<Vec<_>>(),
            &credits.iter().map(|credit| i32::try_from(credit.leaf_index).unwrap_or(i32::MAX)).collect::<Vec<_>>(),
            &leaves.iter().map(|leaf| leaf.attempt).collect::<Vec<_>>(),
            &leaves.iter().map(|leaf| leaf.energy.0).collect::<Vec<_>>(),
            &leaves.iter().map(|leaf| leaf.solar.0).collect::<Vec<_>>(),
            &credits.iter().map(|credit| hex::encode(credit.leaf_hash)).collect::<Vec<_>>(),
            &leaves.iter().map(|leaf| leaf.basis.as_ref().map(|basis| basis.zone.as_str())).collect::<Vec<_>>()
                as &[_],
            &leaves.iter().map(|leaf| leaf.basis.as_ref().map(|basis| basis.hour)).collect::<Vec<_>>() as &[_],
            &leaves.iter().map(|leaf| leaf.basis.as_ref().map(|basis| basis.intensity_mg_per_kwh)).collect::<Vec<_>>()
                as &[_],
            &leaves
                .iter()
                .map(|leaf| leaf.basis.as_ref().map(|basis| basis.intensity_kind.as_str()))
                .collect::<Vec<_>>() as &[_],
            &leaves
                .iter()
                .map(|leaf| leaf.basis.as_ref().map(|basis| basis.intensity_source.as_str()))
                .collect::<Vec<_>>() as &[_],
            &leaves.iter().map(|leaf| leaf.basis.as_ref().map(|basis| basis.price_peur_per_kg)).collect::<Vec<_>>()
                as &[_],
            &leaves
                .iter()
                .map(|leaf| leaf.basis.as_ref().map(|basis| i16::from(basis.node_share_percent)))
                .collect::<Vec<_>>() as &[_],
            cell
        )
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    if !batch.sealed.is_empty() {
        let blocks = &batch.sealed;
        sqlx::query!(
            "insert into proof_block (height, prev_hash, merkle_root, leaf_count, sealed_at, difficulty, nonce, hash,
                 cell_id)
             select *, $9 from unnest($1::int8[], $2::text[], $3::text[], $4::int4[], $5::timestamptz[], $6::int2[],
                 $7::int8[], $8::text[])",
            &blocks.iter().map(|block| block.draft.height).collect::<Vec<_>>(),
            &blocks.iter().map(|block| block.draft.prev_hash.as_str()).collect::<Vec<_>>() as &[_],
            &blocks.iter().map(|block| block.draft.merkle_root.as_str()).collect::<Vec<_>>() as &[_],
            &blocks.iter().map(|block| i32::try_from(block.draft.leaf_count).unwrap_or(i32::MAX)).collect::<Vec<_>>(),
            &blocks.iter().map(|block| block.draft.sealed_at).collect::<Vec<_>>(),
            &blocks.iter().map(|block| i16::from(block.draft.difficulty)).collect::<Vec<_>>(),
            &blocks.iter().map(|block| block.nonce).collect::<Vec<_>>(),
            &blocks.iter().map(|block| block.hash.as_str()).collect::<Vec<_>>() as &[_],
            cell
        )
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    Ok(statements)
}

/// Reads back the input of tasks placed in this batch whose input was not kept in memory (a
/// large group task submitted in an earlier batch).
async fn load_missing_inputs(conn: &mut PgConnection, cell: &str, batch: &mut Batch) -> Result<u32, sqlx::Error> {
    let assigned =
        |event: &&mut crate::model::batch::NumberedEvent| event.event_type == "TaskAssigned" && event.input.is_none();
    let mut wanted: Vec<uuid::Uuid> = batch
        .events
        .iter_mut()
        .filter(assigned)
        .filter_map(|event| match &event.event {
            Event::TaskAssigned(assigned) => Some(assigned.task_id.as_uuid()),
            _ => None,
        })
        .collect();
    if wanted.is_empty() {
        return Ok(0);
    }
    wanted.sort();
    wanted.dedup();
    let mut inputs: HashMap<uuid::Uuid, Arc<TaskInput>> = HashMap::new();
    for insert in batch.task_inserts.iter().filter(|insert| wanted.contains(&insert.task_id.as_uuid())) {
        inputs.insert(insert.task_id.as_uuid(), Arc::new(insert.kind.anonymised()));
    }
    let missing: Vec<uuid::Uuid> = wanted.iter().filter(|id| !inputs.contains_key(id)).copied().collect();
    let mut statements = 0;
    if !missing.is_empty() {
        let rows =
            sqlx::query!("select task_id, kind from task where cell_id = $1 and task_id = any($2)", cell, &missing)
                .fetch_all(&mut *conn)
                .await?;
        statements += 1;
        for row in rows {
            let (task_id, kind) = (row.task_id, row.kind);
            // A stored kind that does not parse must not fail every batch that places its task:
            // the assignment is not sent, and its start lease takes the task back.
            match serde_json::from_value::<TaskKind>(kind) {
                Ok(kind) => {
                    inputs.insert(task_id, Arc::new(kind.anonymised()));
                }
                Err(error) => {
                    tracing::error!(%task_id, %error, "a stored task kind does not parse; its assignment is not sent")
                }
            }
        }
    }
    for event in batch.events.iter_mut().filter(|event| event.event_type == "TaskAssigned" && event.input.is_none()) {
        if let Event::TaskAssigned(assigned) = &event.event {
            event.input = inputs.get(&assigned.task_id.as_uuid()).cloned();
        }
    }
    Ok(statements)
}

/// The batch's events (the outbox and the archive) and its messages, then the relay cursor.
async fn write_events(
    conn: &mut PgConnection,
    cell: &str,
    batch: &Batch,
    published_seq: i64,
) -> Result<u32, sqlx::Error> {
    let mut statements = 0;
    if !batch.events.is_empty() {
        let events = &batch.events;
        sqlx::query!(
            "insert into event (seq, event_id, event_type, organization_id, node_id, occurred_at, envelope, task_id,
                 cell_id)
             select seq, id, kind, organization, node, at, body::json, task, $9
             from unnest($1::int8[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[], $6::timestamptz[], $7::text[],
                 $8::uuid[])
                 as given(seq, id, kind, organization, node, at, body, task)",
            &events.iter().map(|event| event.seq).collect::<Vec<_>>(),
            &events.iter().map(|event| event.envelope.id.as_uuid()).collect::<Vec<_>>(),
            &events.iter().map(|event| event.event_type).collect::<Vec<_>>() as &[_],
            &events.iter().map(|event| event.organization_id.map(|id| id.as_uuid())).collect::<Vec<_>>() as &[_],
            &events.iter().map(|event| event.notify_node.map(|id| id.as_uuid())).collect::<Vec<_>>() as &[_],
            &events.iter().map(|event| event.occurred_at).collect::<Vec<DateTime<Utc>>>(),
            &events.iter().map(|event| event.archived.as_str()).collect::<Vec<_>>() as &[_],
            &events.iter().map(|event| event.event.task_id().map(|id| id.as_uuid())).collect::<Vec<_>>() as &[_],
            cell
        )
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    if !batch.processed.is_empty() {
        let processed = &batch.processed;
        sqlx::query!(
            "insert into processed_message (message_id, message_type, organization_id, outcome, reason, cell_id)
             select id, kind, organization, case when reason is null then 'applied' else 'rejected' end, reason, $5
             from unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[]) as given(id, kind, organization, reason)",
            &processed.iter().map(|message| message.message_id.as_uuid()).collect::<Vec<_>>(),
            &processed.iter().map(|message| message.message_type.as_str()).collect::<Vec<_>>() as &[_],
            &processed.iter().map(|message| message.organization_id.map(|id| id.as_uuid())).collect::<Vec<_>>()
                as &[_],
            &processed.iter().map(|message| message.rejection.as_ref().map(Refusal::to_stored)).collect::<Vec<_>>()
                as &[_],
            cell
        )
        .execute(&mut *conn)
        .await?;
        statements += 1;
    }
    // How far the previous batches were published: a writer that takes over republishes the rest.
    sqlx::query!("update relay_cursor set last_seq = $1 where cell_id = $2 and last_seq < $1", published_seq, cell)
        .execute(&mut *conn)
        .await?;
    statements += 1;
    Ok(statements)
}
