//! Task rows, as the handlers read them back (always `for update`: they decide and write).

use chrono::{DateTime, Utc};
use grid_shared::domain::TaskStatus;
use grid_shared::ids::{NodeId, OrganizationId, TaskId};
use sqlx::{PgConnection, Row};

#[derive(Debug, Clone)]
pub struct TaskRow {
    pub task_id: TaskId,
    pub organization_id: OrganizationId,
    pub status: TaskStatus,
    pub attempts: i32,
    pub node_id: Option<NodeId>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub deadline: DateTime<Utc>,
    /// Results asked for, agreeing results needed, and the most results collected (see the
    /// `quorum` migration).
    pub replicas: u8,
    pub quorum: u8,
    pub result_limit: u8,
}

pub async fn lock_task(conn: &mut PgConnection, task_id: TaskId) -> Result<Option<TaskRow>, sqlx::Error> {
    let row = sqlx::query(
        "select task_id, organization_id, status, attempts, node_id, assigned_at, deadline, replicas, quorum,
             result_limit
         from task where task_id = $1 for update",
    )
    .bind(task_id.as_uuid())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        let status: String = row.try_get("status")?;
        Ok(TaskRow {
            task_id: TaskId(row.try_get("task_id")?),
            organization_id: OrganizationId(row.try_get("organization_id")?),
            status: TaskStatus::parse(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown task status {status:?}").into()))?,
            attempts: row.try_get("attempts")?,
            node_id: row.try_get::<Option<uuid::Uuid>, _>("node_id")?.map(NodeId),
            assigned_at: row.try_get("assigned_at")?,
            deadline: row.try_get("deadline")?,
            replicas: small(&row, "replicas")?,
            quorum: small(&row, "quorum")?,
            result_limit: small(&row, "result_limit")?,
        })
    })
    .transpose()
}

fn small(row: &sqlx::postgres::PgRow, column: &str) -> Result<u8, sqlx::Error> {
    let value: i16 = row.try_get(column)?;
    u8::try_from(value).map_err(|_| sqlx::Error::Decode(format!("{column} {value} out of range").into()))
}

/// Sets a task's status (the caller has checked the transition) with an optional reason.
pub async fn set_status(
    conn: &mut PgConnection,
    task_id: TaskId,
    status: TaskStatus,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    debug_assert!(!matches!(status, TaskStatus::Assigned | TaskStatus::Queued), "use assign/requeue");
    sqlx::query(
        "update task set status = $2, reason = coalesce($3, reason), updated_at = now(),
             finished_at = case when $2 in ('completed', 'failed', 'cancelled') then now() else finished_at end,
             started_at = case when $2 = 'running' then now() else started_at end
         where task_id = $1",
    )
    .bind(task_id.as_uuid())
    .bind(status.as_str())
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    if matches!(status, TaskStatus::Failed | TaskStatus::Cancelled) {
        // Results waiting for a quorum that will never come.
        sqlx::query("update task_result set verdict = 'inconclusive' where task_id = $1 and verdict = 'pending'")
            .bind(task_id.as_uuid())
            .execute(conn)
            .await?;
    }
    Ok(())
}
