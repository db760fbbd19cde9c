//! The event archive, as pages: an organisation sees its own events, the operator all; and one
//! task's history.

use grid_shared::cells::CellName;
use grid_shared::envelope::Envelope;
use grid_shared::events::{Event, ReplicaNeeded};
use grid_shared::ids::{MessageId, OrganizationId, TaskId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Commit order; the stream id on `{ns}:events` is `<seq>-0`.
    pub seq: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// The versioned envelope, as relayed.
    pub envelope: serde_json::Value,
}

/// An event's row: the archive keeps its envelope without the fields the row holds in columns,
/// which its view puts back (`Envelope::from_archive`).
struct ArchivedRow {
    seq: i64,
    event_id: uuid::Uuid,
    event_type: String,
    occurred_at: chrono::DateTime<chrono::Utc>,
    organization_id: Option<uuid::Uuid>,
    envelope: String,
}

impl ArchivedRow {
    fn into_view(self) -> EventView {
        let ArchivedRow { seq, event_id, event_type, occurred_at, organization_id, envelope } = self;
        let whole = Envelope::from_archive(
            MessageId(event_id),
            &event_type,
            occurred_at,
            organization_id.map(OrganizationId),
            &envelope,
        )
        .unwrap_or_else(|error| {
            tracing::warn!(seq, %error, "an archived envelope does not read; shown as archived");
            envelope
        });
        let envelope = serde_json::from_str(&whole).unwrap_or(serde_json::Value::Null);
        EventView { seq, event_type, occurred_at, envelope }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// Pass as `after` for the next page; absent when this page is the end (for now).
    pub next_after: Option<i64>,
}

/// The most events one task's history returns (a task has a few per attempt, and at most a
/// handful of attempts).
pub const TASK_HISTORY_LIMIT: i64 = 1_000;

/// One event of a task's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskEvent {
    pub seq: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// The versioned envelope, as archived.
    pub envelope: serde_json::Value,
    /// Why, in a sentence, for the events that carry a reason (refused, taken back, failed,
    /// cancelled, completed without credit, another replica needed, quarantined).
    pub reason_text: Option<String>,
}

/// One task's archived events, in commit order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskHistory {
    pub task_id: uuid::Uuid,
    /// Accepted (or rejected), each assignment, start, requeue, result, verdict, completion,
    /// failure or cancellation, credit: every event about this task, oldest first.
    pub events: Vec<TaskEvent>,
    /// Set when the task had more than 1,000 events: the first 1,000 are listed.
    pub truncated: bool,
}

/// The archived events about `task_id`, if the task is the caller's (`scope`; the operator
/// sees every task's).
pub async fn of_task(
    state: &AppState,
    scope: Option<OrganizationId>,
    task_id: TaskId,
) -> Result<Option<TaskHistory>, ApiError> {
    let visible = sqlx::query_scalar!(
        r#"select 1 as "visible!" from task where task_id = $1 and ($2::uuid is null or organization_id = $2)"#,
        task_id.as_uuid(),
        scope.map(|id| id.as_uuid())
    )
    .fetch_optional(&state.pool)
    .await?;
    if visible.is_none() {
        return Ok(None);
    }
    let rows = sqlx::query_as!(
        ArchivedRow,
        r#"select seq, event_id, event_type, occurred_at, organization_id, envelope::text as "envelope!" from event
         where task_id = $1 order by seq limit $2"#,
        task_id.as_uuid(),
        TASK_HISTORY_LIMIT + 1
    )
    .map(ArchivedRow::into_view)
    .fetch_all(&state.pool)
    .await?;
    let truncated = rows.len() as i64 > TASK_HISTORY_LIMIT;
    let events = rows
        .into_iter()
        .take(TASK_HISTORY_LIMIT as usize)
        .map(|EventView { seq, event_type, occurred_at, envelope }| {
            let reason_text = reason_text(&envelope);
            TaskEvent { seq, event_type, occurred_at, envelope, reason_text }
        })
        .collect();
    Ok(Some(TaskHistory { task_id: task_id.as_uuid(), events, truncated }))
}

/// The sentence an archived event's reason reads as (none for an event without one, or one this
/// gateway cannot decode).
fn reason_text(envelope: &serde_json::Value) -> Option<String> {
    let envelope = Envelope::deserialize(envelope).ok()?;
    match envelope.decode::<Event>().ok()? {
        Event::TaskRejected(event) => Some(event.reason.to_string()),
        Event::TaskRequeued(event) => Some(event.reason.to_string()),
        Event::TaskFailed(event) => Some(event.reason.to_string()),
        Event::TaskCancelled(event) => Some(event.reason.to_string()),
        Event::TaskCompleted(event) => event.check.refusal,
        Event::TaskResultRecorded(event) => Some(match event.needed {
            ReplicaNeeded::Requested { replicas } => format!("{replicas} replicas were asked for"),
            ReplicaNeeded::UntrustedNode { trust, threshold } => {
                format!("its node's results are checked until its trust reaches {threshold} (it has {trust})")
            }
            ReplicaNeeded::SpotCheck { .. } => "drawn for a spot check".to_owned(),
            ReplicaNeeded::Disagreement { distinct_hashes } => {
                format!("the results so far disagree ({distinct_hashes} distinct hashes)")
            }
        }),
        Event::TaskQuarantined(event) => Some(event.problem),
        _ => None,
    }
}

/// A page of the cell's events after `after` (its own seq), those of `scope` only if given.
pub async fn page(
    state: &AppState,
    cell: &CellName,
    scope: Option<OrganizationId>,
    after: i64,
    limit: i64,
) -> Result<EventPage, ApiError> {
    let events = sqlx::query_as!(
        ArchivedRow,
        r#"select seq, event_id, event_type, occurred_at, organization_id, envelope::text as "envelope!" from event
         where cell_id = $4 and seq > $1 and ($2::uuid is null or organization_id = $2)
         order by seq limit $3"#,
        after,
        scope.map(|id| id.as_uuid()),
        limit,
        cell.as_str()
    )
    .map(ArchivedRow::into_view)
    .fetch_all(&state.pool)
    .await?;
    let next_after = if events.len() as i64 == limit { events.last().map(|event| event.seq) } else { None };
    Ok(EventPage { events, next_after })
}
