//! `GET /v1/events`: the event log of one cell (each cell has its own sequence; the default
//! cell unless `cell` names another). As JSON, a page of the PostgreSQL archive by `after`
//! (seq); with `Accept: text/event-stream`, the cell's live `{ns:cell}:events` stream, whose
//! `id:` is the stream id (`<seq>-0`) and which `Last-Event-ID` resumes. An organisation sees its
//! own events, the operator all of them.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use grid_shared::cells::CellName;
use grid_shared::envelope::Envelope;
use grid_shared::ids::OrganizationId;
use grid_shared::wire::{StreamEntryId, fields};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::extract::ApiQuery;
use crate::read_model::events::{EventPage, page};
use crate::routes::nodes::cell_or_default;
use crate::state::AppState;

/// Served without the request timeout: the SSE form is a stream.
pub fn streaming_router() -> Router<AppState> {
    Router::new().route("/v1/events", get(events))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Events after this seq (JSON), or from it (SSE, when no `Last-Event-ID`).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// 1 to 1000; 100 when absent (JSON only).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// SSE only: start at the stream's end, with the events that come from now on (a live view
    /// that counts what happens now; `after` and `Last-Event-ID` resume instead).
    pub tail: Option<bool>,
    /// The cell whose events these are (each cell numbers its own events from 1); the grid's
    /// default cell when absent. 422 for a cell the grid does not have.
    pub cell: Option<String>,
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume the stream after this id (`<seq>-0`)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of events (JSON), or the live stream (`Accept: text/event-stream`)",
         content((EventPage = "application/json"), (String = "text/event-stream"))),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad `after`, `limit`, `Last-Event-ID` or `cell`", body = Problem,
         content_type = "application/problem+json"),
    ))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Response, ApiError> {
    let scope = caller.read_scope()?;
    let cell = cell_or_default(&state, query.cell.as_deref())?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::field("after", "must be 0 or more"));
    }
    if !wants_stream(&headers) {
        let limit = query.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::field("limit", "must be between 1 and 1000"));
        }
        return Ok(Json(page(&state, &cell, scope, after, limit).await?).into_response());
    }
    let start = match headers.get("last-event-id").and_then(|value| value.to_str().ok()) {
        Some(id) => StreamEntryId::parse(id)
            .filter(|id| id.event_seq().is_some())
            .ok_or_else(|| ApiError::field("Last-Event-ID", "must be an event id like 12-0"))?,
        None if query.tail == Some(true) => last_event_id(&state, &cell).await?,
        None => StreamEntryId::of_event(after),
    };
    Ok(stream(&state, &cell, scope, start).await?.into_response())
}

/// The id of the last entry on the cell's events stream (`0-0` when it is empty).
async fn last_event_id(state: &AppState, cell: &CellName) -> Result<StreamEntryId, ApiError> {
    let mut conn = state.redis.get().await?;
    let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(state.cell_keys(cell).events())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await?;
    Ok(last.ids.first().and_then(|entry| StreamEntryId::parse(&entry.id)).unwrap_or(StreamEntryId::ZERO))
}

fn visible(envelope: &Envelope, scope: Option<OrganizationId>) -> bool {
    scope.is_none() || envelope.organization_id == scope
}

async fn stream(
    state: &AppState,
    cell: &CellName,
    scope: Option<OrganizationId>,
    start: StreamEntryId,
) -> Result<impl IntoResponse, ApiError> {
    let permit = state.stream_permit()?;
    let conn = state.blocking_connection().await?;
    let events = crate::sse::follow(conn, state.cell_keys(cell).events(), start.to_string(), move |entry| {
        let _open = &permit;
        let text: String = entry.get(fields::ENVELOPE)?;
        // The header is enough to filter; the text goes out as it came.
        let (envelope, _) = Envelope::split(&text).ok()?;
        visible(&envelope, scope)
            .then(|| SseEvent::default().id(entry.id.clone()).event(envelope.message_type.clone()).data(text))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
