//! The scheduler's I/O: read the queue and the fleet, claim cores in Redis, record assignments.

use chrono::{DateTime, Utc};
use grid_shared::envelope::{Actor, Origin};
use grid_shared::events::{Event, TaskAssigned};
use grid_shared::ids::{NodeId, OrganizationId, TaskId};
use sqlx::{PgPool, Row};
use tracing::warn;

use super::{Problem, QueuedTask, solve};
use crate::config::OrchestratorConfig;
use crate::handlers::PendingEvent;
use crate::outbox;
use crate::store::redis::{Claim, claim_cores, live_nodes, release_core};

/// This module's failures are the crate's [`crate::error::Error`].
pub type DispatchError = crate::error::Error;

pub(crate) fn orchestrator_origin(correlation_id: uuid::Uuid, organization_id: OrganizationId) -> Origin {
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
    // The fleet first: with no free core anywhere there is nothing to read or lock, and no more
    // rows are locked than could be placed (locking a thousand queued rows to place a few was
    // the largest cost of PostgreSQL under load).
    let mut conn = redis.get().await?;
    let now = Utc::now();
    let nodes = live_nodes(&mut *conn, keys, now.timestamp_millis()).await?;
    let free: i64 = nodes
        .iter()
        .filter(|node| node.expires_at > now)
        .map(|node| i64::from(node.cpu_cores).saturating_sub(i64::from(node.claimed)).max(0))
        .sum();
    if free == 0 {
        return Ok(0);
    }
    // Twice the free cores: room for tasks that wait for the sun or may not go to some nodes.
    let batch = batch.min(free.saturating_mul(2));
    let mut tx = pool.begin().await?;
    // Skip locked: another replica is placing those rows right now.
    let rows = sqlx::query(
        "select task_id, organization_id, priority, deadline, submitted_at, attempts, correlation_id,
             -- Replicas run on distinct owners: not on a node of an owner that returned a result.
             case when exists (select 1 from task_result r where r.task_id = task.task_id)
                  then array(select n.node_id from node n where n.organization_id in
                                 (select r.owner_id from task_result r where r.task_id = task.task_id))
                  else '{}'::uuid[] end as excluded
         from task
         where task_id in (
             -- In the queue index's own order, so that PostgreSQL walks it and stops at the
             -- limit (a task past its deadline is left to the solver and the housekeeping).
             (select task_id from task where status = 'queued' and (not_before is null or not_before <= now())
              order by priority desc, deadline, submitted_at limit $1)
             union
             -- The most urgent too, so that a low priority never starves a deadline.
             (select task_id from task where status = 'queued' and (not_before is null or not_before <= now())
              order by deadline limit $1))
           and status = 'queued'
           -- Consent is checked again at dispatch: no owner's data is sent without it.
           and not exists (
               select 1 from jsonb_array_elements(
                   case when kind_type = 'energy_group_optimisation' then kind -> 'participants' else '[]'::jsonb end
               ) participant
               where not exists (select 1 from consent c where c.owner_id = (participant ->> 'owner_id')::uuid
                                 and c.organization_id = task.organization_id and c.granted))
         for update skip locked",
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
            excluded: row.try_get::<Vec<uuid::Uuid>, _>("excluded")?.into_iter().map(NodeId).collect(),
        });
        let organization_id = OrganizationId(row.try_get("organization_id")?);
        let attempts: i32 = row.try_get("attempts")?;
        let correlation_id: uuid::Uuid = row.try_get("correlation_id")?;
        details.insert(task_id, (organization_id, attempts, correlation_id, deadline));
    }
    let plan = solve(&Problem { now, tasks: &queued, nodes: &nodes, policy: config.scheduling_policy() }).placements;
    // Claim first, then write: the outbox lock (taken by the first append) is then held only
    // for PostgreSQL work, not across Redis round trips.
    // The plan was made from a snapshot; the claims are what decide (one round trip).
    let wanted: Vec<(NodeId, TaskId)> = plan.iter().map(|placement| (placement.node_id, placement.task_id)).collect();
    let answers = match claim_cores(&mut *conn, keys, &wanted).await {
        Ok(answers) => answers,
        Err(error) => {
            // Some claims may have been taken before the failure: give them all back.
            release_all(&mut conn, config, &wanted).await;
            return Err(error.into());
        }
    };
    let placed: Vec<_> = plan
        .into_iter()
        .zip(answers)
        .filter(|(_, answer)| *answer == Claim::Taken)
        .map(|(placement, _)| placement)
        .collect();
    let claimed: Vec<(NodeId, TaskId)> =
        placed.iter().map(|placement| (placement.node_id, placement.task_id)).collect();
    if placed.is_empty() {
        return Ok(0);
    }
    let recorded = async {
        let mut task_ids = Vec::with_capacity(placed.len());
        let mut node_ids = Vec::with_capacity(placed.len());
        let mut attempts = Vec::with_capacity(placed.len());
        let mut pending = Vec::with_capacity(placed.len());
        for placement in placed {
            let (organization_id, previous_attempts, correlation_id, deadline) = details[&placement.task_id];
            let attempt = previous_attempts + 1;
            task_ids.push(placement.task_id.as_uuid());
            node_ids.push(placement.node_id.as_uuid());
            attempts.push(attempt);
            let event = Event::TaskAssigned(TaskAssigned {
                task_id: placement.task_id,
                node_id: placement.node_id,
                attempt,
                deadline,
                chosen: placement.chosen,
                runner_up: placement.runner_up,
                assigned_by: config.consumer_name.clone(),
            });
            let origin = orchestrator_origin(correlation_id, organization_id);
            pending.push((origin, PendingEvent::new(event, Some(organization_id)).to_node(placement.node_id)));
        }
        sqlx::query(
            "update task t set status = 'assigned', node_id = given.node_id, attempts = given.attempt,
                 assigned_at = now(), updated_at = now(), reason = null, not_before = null
             from unnest($1::uuid[], $2::uuid[], $3::int4[]) as given(task_id, node_id, attempt)
             where t.task_id = given.task_id",
        )
        .bind(&task_ids)
        .bind(&node_ids)
        .bind(&attempts)
        .execute(&mut *tx)
        .await?;
        let events: Vec<(Origin, &PendingEvent)> = pending.iter().map(|(origin, event)| (*origin, event)).collect();
        outbox::append_each(&mut tx, &events).await?;
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
