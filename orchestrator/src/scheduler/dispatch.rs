//! The scheduler's I/O: read the queue and the fleet, claim cores in Redis, record assignments.
//! Also the housekeeping that keeps the queue honest: tasks of nodes gone offline are requeued,
//! queued tasks past their deadline fail.

use chrono::{DateTime, Utc};
use grid_shared::envelope::{Actor, Origin};
use grid_shared::events::{Event, NodeWentOffline, TaskAssigned, TaskFailed, TaskRequeued};
use grid_shared::ids::{NodeId, OrganizationId, TaskId};
use sqlx::{PgPool, Row};
use tracing::{info, warn};

use super::{QueuedTask, solve};
use crate::config::OrchestratorConfig;
use crate::handlers::PendingEvent;
use crate::outbox;
use crate::store::redis::{Claim, claim_core, expired_nodes, forget_expired_node, live_nodes, release_core};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
}

fn orchestrator_origin(correlation_id: uuid::Uuid, organization_id: OrganizationId) -> Origin {
    Origin { correlation_id, causation_id: None, organization_id: Some(organization_id), actor: Actor::Orchestrator }
}

/// Assigns up to `batch` queued tasks; returns how many were assigned.
pub async fn assign_queued(
    pool: &PgPool,
    redis: &deadpool_redis::Pool,
    config: &OrchestratorConfig,
    batch: i64,
) -> Result<usize, DispatchError> {
    let keys = &config.grid.keys;
    let mut tx = pool.begin().await?;
    // Skip locked: another replica is placing those rows right now.
    let rows = sqlx::query(
        "select task_id, organization_id, priority, deadline, submitted_at, attempts, correlation_id
         from task where status = 'queued' and deadline > now()
         order by priority desc, deadline, submitted_at limit $1 for update skip locked",
    )
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut queued = Vec::with_capacity(rows.len());
    let mut details = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let task_id = TaskId(row.try_get("task_id")?);
        let priority: i16 = row.try_get("priority")?;
        let deadline: DateTime<Utc> = row.try_get("deadline")?;
        queued.push(QueuedTask {
            task_id,
            priority: priority as u8,
            deadline,
            submitted_at: row.try_get("submitted_at")?,
        });
        let organization_id = OrganizationId(row.try_get("organization_id")?);
        let attempts: i32 = row.try_get("attempts")?;
        let correlation_id: uuid::Uuid = row.try_get("correlation_id")?;
        details.insert(task_id, (organization_id, attempts, correlation_id, deadline));
    }
    let mut conn = redis.get().await?;
    let nodes = live_nodes(&mut *conn, keys, Utc::now().timestamp_millis()).await?;
    let plan = solve(&queued, &nodes);
    // Claim first, then write: the outbox lock (taken by the first append) is then held only
    // for PostgreSQL work, not across Redis round trips.
    let mut claimed: Vec<(NodeId, TaskId)> = Vec::with_capacity(plan.len());
    let mut placed = Vec::with_capacity(plan.len());
    for placement in plan {
        // The plan was made from a snapshot; the claim is what decides.
        match claim_core(&mut *conn, keys, placement.node_id, placement.task_id).await {
            Ok(Claim::Taken) => {
                claimed.push((placement.node_id, placement.task_id));
                placed.push(placement);
            }
            Ok(Claim::NodeFull | Claim::NodeOffline) => {}
            Err(error) => {
                release_all(&mut conn, config, &claimed).await;
                return Err(error.into());
            }
        }
    }
    let recorded = async {
        for placement in placed {
            let (organization_id, attempts, correlation_id, deadline) = details[&placement.task_id];
            let attempt = attempts + 1;
            sqlx::query(
                "update task set status = 'assigned', node_id = $2, attempts = $3, assigned_at = now(),
                     updated_at = now(), reason = null
                 where task_id = $1",
            )
            .bind(placement.task_id.as_uuid())
            .bind(placement.node_id.as_uuid())
            .bind(attempt)
            .execute(&mut *tx)
            .await?;
            let event = Event::TaskAssigned(TaskAssigned {
                task_id: placement.task_id,
                node_id: placement.node_id,
                attempt,
                deadline,
                chosen: placement.chosen,
                runner_up: placement.runner_up,
            });
            let pending = PendingEvent::new(event, Some(organization_id)).to_node(placement.node_id);
            outbox::append(&mut tx, orchestrator_origin(correlation_id, organization_id), &[pending]).await?;
        }
        tx.commit().await
    };
    if let Err(error) = recorded.await {
        release_all(&mut conn, config, &claimed).await;
        return Err(error.into());
    }
    Ok(claimed.len())
}

async fn release_all(conn: &mut deadpool_redis::Connection, config: &OrchestratorConfig, claimed: &[(NodeId, TaskId)]) {
    for (node_id, task_id) in claimed {
        if let Err(error) = release_core(&mut **conn, &config.grid.keys, *node_id, *task_id).await {
            warn!(%node_id, %task_id, %error, "could not release a claim after a failed assignment");
        }
    }
}

/// Requeues the tasks held by nodes whose live state expired; returns how many were requeued.
pub async fn requeue_from_offline_nodes(
    pool: &PgPool,
    redis: &deadpool_redis::Pool,
    config: &OrchestratorConfig,
) -> Result<usize, DispatchError> {
    let keys = &config.grid.keys;
    let now_ms = Utc::now().timestamp_millis();
    let mut conn = redis.get().await?;
    let mut requeued_total = 0;
    for node_id in expired_nodes(&mut *conn, keys, now_ms).await? {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query(
            "select task_id, organization_id, attempts, correlation_id from task
             where node_id = $1 and status in ('assigned', 'running') for update",
        )
        .bind(node_id.as_uuid())
        .fetch_all(&mut *tx)
        .await?;
        let mut requeued = Vec::with_capacity(rows.len());
        for row in &rows {
            let task_id = TaskId(row.try_get("task_id")?);
            let organization_id = OrganizationId(row.try_get("organization_id")?);
            let attempt: i32 = row.try_get("attempts")?;
            let correlation_id: uuid::Uuid = row.try_get("correlation_id")?;
            let (reason, event) = if attempt < config.max_attempts {
                crate::store::tasks::requeue(&mut tx, task_id, "node_offline").await?;
                (
                    "node_offline",
                    Event::TaskRequeued(TaskRequeued { task_id, node_id, attempt, reason: "node_offline".into() }),
                )
            } else {
                crate::store::tasks::set_status(
                    &mut tx,
                    task_id,
                    grid_shared::domain::TaskStatus::Failed,
                    Some("attempts_exhausted"),
                )
                .await?;
                (
                    "attempts_exhausted",
                    Event::TaskFailed(TaskFailed {
                        task_id,
                        node_id: Some(node_id),
                        attempt,
                        reason: "attempts_exhausted".into(),
                    }),
                )
            };
            info!(%task_id, %node_id, reason, "task taken from an offline node");
            outbox::append(
                &mut tx,
                orchestrator_origin(correlation_id, organization_id),
                &[PendingEvent::new(event, Some(organization_id))],
            )
            .await?;
            requeued.push(task_id);
        }
        let origin = Origin {
            correlation_id: node_id.as_uuid(),
            causation_id: None,
            organization_id: None,
            actor: Actor::Orchestrator,
        };
        let event = Event::NodeWentOffline(NodeWentOffline { node_id, requeued_tasks: requeued.clone() });
        outbox::append(&mut tx, origin, &[PendingEvent::new(event, None)]).await?;
        tx.commit().await?;
        forget_expired_node(&mut *conn, keys, node_id, now_ms).await?;
        requeued_total += requeued.len();
    }
    Ok(requeued_total)
}

/// Fails queued tasks whose deadline passed; returns how many.
pub async fn fail_overdue(pool: &PgPool) -> Result<usize, DispatchError> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "update task set status = 'failed', reason = 'deadline_exceeded', finished_at = now(), updated_at = now()
         where task_id in (select task_id from task where status = 'queued' and deadline <= now()
                           limit 500 for update skip locked)
         returning task_id, organization_id, attempts, correlation_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in &rows {
        let task_id = TaskId(row.try_get("task_id")?);
        let organization_id = OrganizationId(row.try_get("organization_id")?);
        let attempt: i32 = row.try_get("attempts")?;
        let correlation_id: uuid::Uuid = row.try_get("correlation_id")?;
        let event =
            Event::TaskFailed(TaskFailed { task_id, node_id: None, attempt, reason: "deadline_exceeded".into() });
        outbox::append(
            &mut tx,
            orchestrator_origin(correlation_id, organization_id),
            &[PendingEvent::new(event, Some(organization_id))],
        )
        .await?;
    }
    tx.commit().await?;
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
