//! Housekeeping that keeps the queue honest, run by every replica (each step locks the rows
//! it moves, so replicas do not collide):
//! - the tasks of a node whose live state expired are taken back;
//! - an assignment not started within `GRID_START_LEASE_MS` is taken back (a running task on a
//!   live node is never taken: liveness is the heartbeat, not the runtime);
//! - work past its deadline fails (`deadline_exceeded`), and its node is told;
//! - cores left claimed by tasks no longer on their node are freed.
//!
//! A task taken back is requeued after an exponential backoff (`GRID_REQUEUE_BACKOFF_MS ×
//! 2^(attempt − 1)`, at most a minute), until `GRID_MAX_ATTEMPTS`; then it fails and the
//! dead-letter stream gets the reason.

use chrono::Utc;
use grid_shared::domain::TaskStatus;
use grid_shared::envelope::{Actor, Origin};
use grid_shared::events::{Event, NodeWentOffline, TaskFailed, TaskRequeued};
use grid_shared::ids::{NodeId, OrganizationId, TaskId};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use tracing::{info, warn};

use super::dispatch::{DispatchError, orchestrator_origin};
use crate::config::OrchestratorConfig;
use crate::handlers::PendingEvent;
use crate::outbox;
use crate::store::redis::{dead_letter_task, expired_nodes, forget_expired_node, live_nodes, release_core};
use crate::store::tasks::set_status;

const MAX_BACKOFF_MS: i64 = 60_000;

/// A task on a node, as the housekeeping reads it.
#[derive(Debug, Clone, Copy)]
pub struct InFlight {
    pub task_id: TaskId,
    pub organization_id: OrganizationId,
    pub node_id: NodeId,
    pub attempt: i32,
    pub correlation_id: uuid::Uuid,
}

impl InFlight {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            task_id: TaskId(row.try_get("task_id")?),
            organization_id: OrganizationId(row.try_get("organization_id")?),
            node_id: NodeId(row.try_get("node_id")?),
            attempt: row.try_get("attempts")?,
            correlation_id: row.try_get("correlation_id")?,
        })
    }
}

/// What taking a task back decided.
#[derive(Debug, Clone)]
pub struct TakenBack {
    pub event: Event,
    /// Set when the attempts are exhausted: the reason for the dead-letter stream.
    pub dead_letter: Option<String>,
}

pub fn backoff_ms(base_ms: i64, attempt: i32) -> i64 {
    let exponent = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(20);
    base_ms.saturating_mul(1_i64 << exponent).min(MAX_BACKOFF_MS)
}

/// Requeues a task off its node (after a backoff), or fails it when its attempts are spent.
pub async fn take_back(
    conn: &mut PgConnection,
    task: &InFlight,
    reason: &str,
    config: &OrchestratorConfig,
) -> Result<TakenBack, sqlx::Error> {
    // Assignments that ended in a recorded result (a replica) are not failed attempts.
    let results: i64 = sqlx::query_scalar("select count(*) from task_result where task_id = $1")
        .bind(task.task_id.as_uuid())
        .fetch_one(&mut *conn)
        .await?;
    let failures = task.attempt - i32::try_from(results).unwrap_or(0);
    if failures < config.max_attempts {
        let retry_after_ms = backoff_ms(config.requeue_backoff_ms, failures);
        sqlx::query(
            "update task set status = 'queued', node_id = null, assigned_at = null, started_at = null, reason = $2,
                 not_before = now() + make_interval(secs => $3::float8 / 1000), updated_at = now()
             where task_id = $1",
        )
        .bind(task.task_id.as_uuid())
        .bind(reason)
        .bind(retry_after_ms as f64)
        .execute(&mut *conn)
        .await?;
        let event = Event::TaskRequeued(TaskRequeued {
            task_id: task.task_id,
            node_id: task.node_id,
            attempt: task.attempt,
            reason: reason.to_owned(),
            retry_after_ms,
        });
        return Ok(TakenBack { event, dead_letter: None });
    }
    let final_reason = format!("attempts_exhausted: {reason}");
    set_status(conn, task.task_id, TaskStatus::Failed, Some(&final_reason)).await?;
    let event = Event::TaskFailed(TaskFailed {
        task_id: task.task_id,
        node_id: Some(task.node_id),
        attempt: task.attempt,
        reason: final_reason.clone(),
    });
    Ok(TakenBack { event, dead_letter: Some(final_reason) })
}

/// Takes back the tasks of nodes whose live state expired; returns how many.
pub async fn requeue_from_offline_nodes(
    pool: &PgPool,
    redis: &deadpool_redis::Pool,
    config: &OrchestratorConfig,
) -> Result<usize, DispatchError> {
    let keys = &config.grid.keys;
    let now_ms = Utc::now().timestamp_millis();
    let mut conn = redis.get().await?;
    let mut moved = 0;
    for node_id in expired_nodes(&mut *conn, keys, now_ms).await? {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query(
            "select task_id, organization_id, node_id, attempts, correlation_id from task
             where node_id = $1 and status in ('assigned', 'running') for update",
        )
        .bind(node_id.as_uuid())
        .fetch_all(&mut *tx)
        .await?;
        let tasks = rows.iter().map(InFlight::from_row).collect::<Result<Vec<_>, _>>()?;
        let mut dead_letters = Vec::new();
        for task in &tasks {
            let taken = take_back(&mut tx, task, "node_offline", config).await?;
            info!(task_id = %task.task_id, %node_id, "task taken from an offline node");
            let origin = orchestrator_origin(task.correlation_id, task.organization_id);
            outbox::append(&mut tx, origin, &[PendingEvent::new(taken.event, Some(task.organization_id))]).await?;
            dead_letters.extend(taken.dead_letter.map(|reason| (*task, reason)));
        }
        let origin = Origin {
            correlation_id: node_id.as_uuid(),
            causation_id: None,
            organization_id: None,
            actor: Actor::Orchestrator,
        };
        let requeued_tasks = tasks.iter().map(|task| task.task_id).collect();
        let event = Event::NodeWentOffline(NodeWentOffline { node_id, requeued_tasks });
        outbox::append(&mut tx, origin, &[PendingEvent::new(event, None)]).await?;
        tx.commit().await?;
        for task in &tasks {
            release_core(&mut *conn, keys, node_id, task.task_id).await?;
        }
        for (task, reason) in dead_letters {
            dead_letter_task(&mut *conn, keys, task.task_id, task.attempt, &reason).await?;
        }
        forget_expired_node(&mut *conn, keys, node_id, now_ms).await?;
        moved += tasks.len();
    }
    Ok(moved)
}

/// Takes back assignments whose node has not started them within the start lease.
pub async fn expire_start_leases(
    pool: &PgPool,
    redis: &deadpool_redis::Pool,
    config: &OrchestratorConfig,
) -> Result<usize, DispatchError> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "select task_id, organization_id, node_id, attempts, correlation_id from task
         where status = 'assigned' and assigned_at < now() - make_interval(secs => $1::float8 / 1000)
         limit 500 for update skip locked",
    )
    .bind(config.start_lease_ms as f64)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let tasks = rows.iter().map(InFlight::from_row).collect::<Result<Vec<_>, _>>()?;
    let mut dead_letters = Vec::new();
    for task in &tasks {
        let taken = take_back(&mut tx, task, "start_lease_expired", config).await?;
        warn!(task_id = %task.task_id, node_id = %task.node_id, "assignment not started in time: taken back");
        // The node is told, in case it starts late.
        let pending = PendingEvent::new(taken.event, Some(task.organization_id)).to_node(task.node_id);
        outbox::append(&mut tx, orchestrator_origin(task.correlation_id, task.organization_id), &[pending]).await?;
        dead_letters.extend(taken.dead_letter.map(|reason| (*task, reason)));
    }
    tx.commit().await?;
    after_taking(redis, config, &tasks, dead_letters).await?;
    Ok(tasks.len())
}

async fn after_taking(
    redis: &deadpool_redis::Pool,
    config: &OrchestratorConfig,
    tasks: &[InFlight],
    dead_letters: Vec<(InFlight, String)>,
) -> Result<(), DispatchError> {
    let keys = &config.grid.keys;
    let mut conn = redis.get().await?;
    for task in tasks {
        release_core(&mut *conn, keys, task.node_id, task.task_id).await?;
    }
    for (task, reason) in dead_letters {
        dead_letter_task(&mut *conn, keys, task.task_id, task.attempt, &reason).await?;
    }
    Ok(())
}

/// Fails work whose deadline passed (queued, assigned or running); a node holding such a task
/// is told to stop. Returns how many.
pub async fn fail_overdue(
    pool: &PgPool,
    redis: &deadpool_redis::Pool,
    config: &OrchestratorConfig,
) -> Result<usize, DispatchError> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "select task_id, organization_id, node_id, attempts, correlation_id from task
         where status in ('queued', 'assigned', 'running') and deadline <= now()
         limit 500 for update skip locked",
    )
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut on_nodes = Vec::new();
    for row in &rows {
        let task_id = TaskId(row.try_get("task_id")?);
        let organization_id = OrganizationId(row.try_get("organization_id")?);
        let node_id: Option<uuid::Uuid> = row.try_get("node_id")?;
        let attempt: i32 = row.try_get("attempts")?;
        let correlation_id: uuid::Uuid = row.try_get("correlation_id")?;
        set_status(&mut tx, task_id, TaskStatus::Failed, Some("deadline_exceeded")).await?;
        let node_id = node_id.map(NodeId);
        let event = Event::TaskFailed(TaskFailed { task_id, node_id, attempt, reason: "deadline_exceeded".into() });
        let mut pending = PendingEvent::new(event, Some(organization_id));
        if let Some(node_id) = node_id {
            pending = pending.to_node(node_id);
            on_nodes.push(InFlight { task_id, organization_id, node_id, attempt, correlation_id });
        }
        outbox::append(&mut tx, orchestrator_origin(correlation_id, organization_id), &[pending]).await?;
    }
    tx.commit().await?;
    after_taking(redis, config, &on_nodes, Vec::new()).await?;
    Ok(rows.len())
}

/// Frees cores still claimed by tasks that are no longer in flight on that node (a release
/// lost to a Redis error or a crash between commit and release). A claim is freed only when it
/// was already stale at the previous pass (`suspects`): a release that is merely late (the
/// consumer releases right after its commit) is not a leak. Queued tasks are left alone: their
/// claim may belong to an assignment being committed right now.
pub async fn reconcile_claims(
    pool: &PgPool,
    redis: &deadpool_redis::Pool,
    config: &OrchestratorConfig,
    suspects: &mut std::collections::HashSet<(NodeId, TaskId)>,
) -> Result<usize, DispatchError> {
    let keys = &config.grid.keys;
    let mut conn = redis.get().await?;
    let nodes = live_nodes(&mut *conn, keys, Utc::now().timestamp_millis()).await?;
    let mut held: Vec<(NodeId, TaskId)> = Vec::new();
    for node in nodes.iter().filter(|node| node.claimed > 0) {
        let members: Vec<String> =
            redis::cmd("SMEMBERS").arg(keys.node_claims(node.node_id)).query_async(&mut *conn).await?;
        held.extend(members.iter().filter_map(|member| member.parse().ok()).map(|task_id| (node.node_id, task_id)));
    }
    if held.is_empty() {
        suspects.clear();
        return Ok(0);
    }
    let task_ids: Vec<uuid::Uuid> = held.iter().map(|(_, task_id)| task_id.as_uuid()).collect();
    let rows = sqlx::query("select task_id, status, node_id from task where task_id = any($1)")
        .bind(&task_ids)
        .fetch_all(pool)
        .await?;
    let mut in_flight = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let status: String = row.try_get("status")?;
        let node_id: Option<uuid::Uuid> = row.try_get("node_id")?;
        in_flight.insert(TaskId(row.try_get("task_id")?), (status, node_id.map(NodeId)));
    }
    let mut freed = 0;
    let mut stale_now = std::collections::HashSet::new();
    for (node_id, task_id) in held {
        let keep = match in_flight.get(&task_id) {
            Some((status, _)) if status == "queued" => true,
            Some((status, holder)) => matches!(status.as_str(), "assigned" | "running") && *holder == Some(node_id),
            None => false,
        };
        if keep {
            continue;
        }
        if suspects.contains(&(node_id, task_id)) {
            release_core(&mut *conn, keys, node_id, task_id).await?;
            warn!(%node_id, %task_id, "freed a core left claimed by a task no longer on the node");
            freed += 1;
        } else {
            stale_now.insert((node_id, task_id));
        }
    }
    *suspects = stale_now;
    Ok(freed)
}
