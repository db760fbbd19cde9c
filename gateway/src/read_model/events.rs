//! The event archive, as pages: an organisation sees its own events, the operator all.

use grid_shared::ids::OrganizationId;
use serde::{Deserialize, Serialize};
use sqlx::Row;
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

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// Pass as `after` for the next page; absent when this page is the end (for now).
    pub next_after: Option<i64>,
}

pub async fn page(
    state: &AppState,
    scope: Option<OrganizationId>,
    after: i64,
    limit: i64,
) -> Result<EventPage, ApiError> {
    let rows = sqlx::query(
        "select seq, event_type, occurred_at, envelope from event
         where seq > $1 and ($2::uuid is null or organization_id = $2)
         order by seq limit $3",
    )
    .bind(after)
    .bind(scope.map(|id| id.as_uuid()))
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    let events = rows
        .iter()
        .map(|row| {
            Ok(EventView {
                seq: row.try_get("seq")?,
                event_type: row.try_get("event_type")?,
                occurred_at: row.try_get("occurred_at")?,
                envelope: row.try_get("envelope")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let next_after = if events.len() as i64 == limit { events.last().map(|event| event.seq) } else { None };
    Ok(EventPage { events, next_after })
}
