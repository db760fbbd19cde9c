//! `GET /v1/cells`: the grid's cells (`GRID_CELLS`), each with its writer and epoch (from
//! PostgreSQL's lease row), its backlog (from its streams) and what its writer last published in
//! its summary, as this gateway last read it for its choice of cells (at most 250 ms before):
//! live nodes, free cores, sun, queue and the zone's carbon intensity now.

use std::collections::HashMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use grid_shared::cells::CellName;
use grid_shared::wire::summary::CellSummary;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::routes::operations::WriterLease;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/cells", get(cells))
}

/// A summary older than this says its cell has no live writer (it is rewritten several times a
/// second while one writes).
const LIVE_FOR_MS: i64 = 2_000;

/// Whether the cell's writer is publishing its summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    /// Its summary is at most 2 s old: a writer is at work.
    Live,
    /// Its summary is older: no writer has written for a while (taking over, or none running).
    Stale,
    /// No summary yet: no writer has run this cell since it was set up.
    Unknown,
}

/// A cell's grid intensity in the current hour.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CellIntensity {
    /// Milligrams of CO₂e per kWh (exact integer).
    pub mg_per_kwh: i64,
    /// `average` (the zone's mix) or `marginal`.
    pub kind: String,
    /// The signal source that answered (`file`, `electricitymaps`, `watttime`, `fixed`, ...).
    pub source: String,
}

/// Commands and reports on the cell's streams, not yet trimmed (about those its writer has not
/// applied yet).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CellBacklog {
    pub commands: i64,
    pub reports: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Cell {
    /// Its name in `GRID_CELLS`.
    pub cell: String,
    /// The carbon zone of its nodes by default.
    pub zone: String,
    /// Whether it is the grid's default cell.
    pub default: bool,
    pub status: CellStatus,
    /// Its writer's lease: the process that holds it and the epoch every write checks.
    pub writer: WriterLease,
    pub backlog: CellBacklog,
    /// How old its summary is, in milliseconds (null: none yet). The figures below are from it.
    pub summary_age_ms: Option<i64>,
    pub live_nodes: Option<u64>,
    /// Cores of live nodes not held by a task.
    pub free_cores: Option<u64>,
    /// Live nodes with at least one core's worth of sun.
    pub sunny_nodes: Option<u64>,
    /// Watts of sun beyond what the tasks on the live nodes use.
    pub solar_surplus_watts: Option<f64>,
    pub queued_tasks: Option<u64>,
    pub open_tasks: Option<u64>,
    pub intensity: Option<CellIntensity>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Cells {
    /// The default cell first.
    pub cells: Vec<Cell>,
}

/// A cell's writer lease, as its `writer` row holds it (`none` at epoch 0 before any writer ran
/// the cell).
pub async fn writer_lease(state: &AppState, cell: &CellName) -> Result<WriterLease, ApiError> {
    let lease =
        sqlx::query_as!(WriterLease, "select holder, epoch, since from writer where cell_id = $1", cell.as_str())
            .fetch_optional(&state.pool)
            .await?;
    Ok(lease.unwrap_or_else(|| WriterLease { holder: "none".to_owned(), epoch: 0, since: Utc::now() }))
}

#[utoipa::path(get, path = "/v1/cells", tag = "health", security(("bearer" = [])),
    responses(
        (status = 200, description = "The grid's cells: each one's writer and epoch, backlog, free cores, sun, queue and carbon intensity now (organisations and the operator)", body = Cells),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A node token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cells(State(state): State<AppState>, caller: Caller) -> Result<Json<Cells>, ApiError> {
    caller.read_scope()?;
    let grid = &state.config.grid;
    let mut cells = Vec::with_capacity(grid.cells.len());
    let mut conn = state.redis.get().await?;
    // The summaries as this gateway last read them (at most 250 ms old): what its choice sees.
    let mut summaries: HashMap<CellName, CellSummary> = state.summaries.snapshot().into_iter().collect();
    for cell in grid.cells.iter() {
        let keys = state.cell_keys(&cell.name);
        let (commands, reports): (i64, i64) = redis::pipe()
            .cmd("XLEN")
            .arg(keys.commands())
            .cmd("XLEN")
            .arg(keys.reports())
            .query_async(&mut conn)
            .await?;
        let summary = summaries.remove(&cell.name);
        let age_ms = summary.as_ref().map(|summary| (Utc::now().timestamp_millis() - summary.at_ms).max(0));
        let status = match age_ms {
            None => CellStatus::Unknown,
            Some(age) if age <= LIVE_FOR_MS => CellStatus::Live,
            Some(_) => CellStatus::Stale,
        };
        cells.push(Cell {
            cell: cell.name.to_string(),
            zone: cell.zone.to_string(),
            default: cell.name == grid.cells.default_cell().name,
            status,
            writer: writer_lease(&state, &cell.name).await?,
            backlog: CellBacklog { commands, reports },
            summary_age_ms: age_ms,
            live_nodes: summary.as_ref().map(|summary| summary.live_nodes),
            free_cores: summary.as_ref().map(|summary| summary.free_cores),
            sunny_nodes: summary.as_ref().map(|summary| summary.sunny_nodes),
            solar_surplus_watts: summary.as_ref().map(|summary| summary.solar_surplus_watts),
            queued_tasks: summary.as_ref().map(|summary| summary.queued_tasks),
            open_tasks: summary.as_ref().map(|summary| summary.open_tasks),
            intensity: summary.map(|summary| CellIntensity {
                mg_per_kwh: summary.intensity_mg_per_kwh,
                kind: summary.intensity_kind.as_str().to_owned(),
                source: summary.intensity_source,
            }),
        });
    }
    Ok(Json(Cells { cells }))
}
