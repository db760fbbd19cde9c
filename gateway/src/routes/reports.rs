//! Reports: `GET /v1/reports/emissions` (JSON or CSV).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::extract::ApiQuery;
use crate::read_model::reports::{self, EmissionsReport, GroupBy};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/reports/emissions", get(emissions))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EmissionsQuery {
    /// Results credited at or after this instant (RFC 3339); all time when absent.
    pub from: Option<DateTime<Utc>>,
    /// Results credited before this instant (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// `node`, `organisation` or `zone`; `organisation` when absent.
    pub group_by: Option<GroupBy>,
    /// `json` (default) or `csv` (RFC 4180, `text/csv`, the totals as the last line).
    pub format: Option<String>,
}

#[utoipa::path(get, path = "/v1/reports/emissions", tag = "ledger", params(EmissionsQuery), security(("bearer" = [])),
    description = "Emissions over the credited results of the period (an organisation sees its own nodes, the operator \
                   all), grouped by node, organisation or carbon zone: energy, the sun's share, Scope 2 location-based \
                   emissions (grid energy, energy − solar, × the intensity of the node's zone in that hour, as its credit \
                   recorded it) and market-based emissions (grid energy × the factor of the electricity contract the node's \
                   organisation declared, `PUT /v1/organizations/{id}/energy-contract`, over the results it covers), side \
                   by side and never netted; avoided emissions (the credits' CO₂, solar × intensity) and credits. Exact \
                   integers: ng CO₂e, µWh, pico-euros; each division rounds down per result. `format=csv` answers the same \
                   as CSV with a header line and the totals last.",
    responses(
        (status = 200, description = "The report (JSON, or text/csv with format=csv)", body = EmissionsReport),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid period, grouping or format", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn emissions(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<EmissionsQuery>,
) -> Result<Response, ApiError> {
    let scope = caller.read_scope()?;
    if let (Some(from), Some(to)) = (query.from, query.to)
        && to <= from
    {
        return Err(ApiError::field("to", "must be after from"));
    }
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::field("format", "must be json or csv")),
    };
    let group_by = query.group_by.unwrap_or(GroupBy::Organisation);
    let report = reports::emissions(&state, scope, group_by, (query.from, query.to)).await?;
    if !csv {
        return Ok(Json(report).into_response());
    }
    let name = format!(
        "emissions-by-{}.csv",
        serde_json::to_value(group_by).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        reports::to_csv(&report),
    )
        .into_response())
}
