//! `GET /v1/operations`: what an operator watches, in one answer: which process writes and at
//! which epoch, the commands and reports waiting for it, the dead letters, this gateway's
//! refusals, and where the Grafana board is.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/operations", get(operations))
}

/// The writer's lease, as the `writer` row holds it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WriterLease {
    /// The orchestrator process that holds it (its `GRID_CONSUMER_NAME`); the others stand by.
    pub holder: String,
    /// Incremented at every takeover; every write of the writer checks it.
    pub epoch: i64,
    pub since: DateTime<Utc>,
}

/// An orchestrator process, as PostgreSQL sees its lease session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrchestratorProcess {
    /// Its `GRID_CONSUMER_NAME`.
    pub name: String,
    /// `writer` (it holds the lease) or `standby` (it waits for it).
    pub role: String,
    /// When its lease session opened: since when it has stood by (or, for the writer, since
    /// when it waited before taking over).
    pub since: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Operations {
    /// The default cell's writer (`GET /v1/cells` lists every cell's).
    pub writer: WriterLease,
    /// The orchestrator processes connected to this grid's database: the writer, then the
    /// standbys that would take over if it died (none listed: no takeover is possible).
    pub orchestrators: Vec<OrchestratorProcess>,
    /// Commands (submissions, registrations, consent, keys) on their streams, not yet trimmed,
    /// summed over the cells: about those the writers have not applied yet (each trims to
    /// within about 100).
    pub command_backlog: i64,
    /// Nodes' reports likewise.
    pub report_backlog: i64,
    /// Entries on the dead-letter streams (undecodable messages, tasks failed for good).
    pub dead_letters: i64,
    /// Requests this gateway refused with 503 for capacity, load or the grid's backlog, since it
    /// started (poll it for a rate).
    pub gateway_refusals: u64,
    /// Where the Grafana board of these series is (`GATEWAY_GRAFANA_URL`).
    pub grafana_url: String,
}

#[utoipa::path(get, path = "/v1/operations", tag = "health", security(("bearer" = [])),
    responses(
        (status = 200, description = "The writer's lease, the backlogs and dead letters, this gateway's refusals (operator only)", body = Operations),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn operations(State(state): State<AppState>, caller: Caller) -> Result<Json<Operations>, ApiError> {
    caller.operator()?;
    let writer = crate::routes::cells::writer_lease(&state, state.keys().cell()).await?;
    // Each orchestrator's lease session is named `grid-orchestrator:<name>` and holds the
    // writer's advisory lock (the writer) or waits on it (a standby).
    let orchestrators = sqlx::query!(
        r#"select substr(a.application_name, length('grid-orchestrator:') + 1) as "name!",
             bool_or(l.granted) as "writing!", min(a.backend_start) as "since!"
         from pg_stat_activity a join pg_locks l on l.pid = a.pid and l.locktype = 'advisory'
         where a.datname = current_database() and a.application_name like 'grid-orchestrator:%'
         group by a.pid, a.application_name
         order by 2 desc, 3"#
    )
    .map(|row| OrchestratorProcess {
        name: row.name,
        role: if row.writing { "writer" } else { "standby" }.to_owned(),
        since: row.since,
    })
    .fetch_all(&state.pool)
    .await?;
    // Summed over the cells (`GET /v1/cells` has each one's).
    let mut conn = state.redis.get().await?;
    let (mut command_backlog, mut report_backlog, mut dead_letters) = (0_i64, 0_i64, 0_i64);
    for cell in state.config.grid.cells.iter() {
        let keys = state.cell_keys(&cell.name);
        let (commands, reports, dead): (i64, i64, i64) = redis::pipe()
            .cmd("XLEN")
            .arg(keys.commands())
            .cmd("XLEN")
            .arg(keys.reports())
            .cmd("XLEN")
            .arg(keys.dead_letters())
            .query_async(&mut conn)
            .await?;
        (command_backlog, report_backlog, dead_letters) =
            (command_backlog + commands, report_backlog + reports, dead_letters + dead);
    }
    Ok(Json(Operations {
        writer,
        orchestrators,
        command_backlog,
        report_backlog,
        dead_letters,
        gateway_refusals: state.pressure.refusals(),
        grafana_url: state.config.grafana_url.clone(),
    }))
}
