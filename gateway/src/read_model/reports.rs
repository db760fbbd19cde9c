//! Emissions reports over the credited results (one per proof leaf): energy, solar share,
//! location-based and market-based emissions side by side (never netted), avoided emissions
//! and credits, grouped by node, organisation or carbon zone. Every figure is an exact integer
//! summed from per-result integers (each division rounding down per result).

use chrono::{DateTime, Utc};
use grid_shared::ids::OrganizationId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

/// What a report's rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Node,
    Organisation,
    Zone,
}

/// One group's figures. Emissions and avoided emissions in ng CO₂e, energy in µWh, money in
/// pico-euros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EmissionsRow {
    /// The node's or organisation's id, or the zone id; `total` for the totals.
    pub group: String,
    /// The node's or organisation's name, or the zone id.
    pub name: String,
    /// Credited results in the period.
    pub results: i64,
    pub energy_uwh: i64,
    pub solar_uwh: i64,
    /// The sun's share of the energy, in percent with two decimals (rounded down), as text.
    pub solar_share_percent: String,
    /// Scope 2, location-based: the grid energy (energy − solar) × the intensity of the node's
    /// zone in that hour, the one its credit recorded (credits from before carbon signals: the
    /// fixed factor, `GRID_INTENSITY_KG_PER_KWH`).
    pub location_based_ng: i64,
    /// Scope 2, market-based: the grid energy × the factor of the electricity contract the
    /// node's organisation declared, over the results whose organisation declared one (see
    /// `market_based_results`). Reported beside the location-based figure, never netted.
    pub market_based_ng: i64,
    /// Results whose organisation had declared a contract (the market-based figure covers these).
    pub market_based_results: i64,
    /// The grid emissions the sun's energy avoided: the credits' CO₂ (solar × intensity).
    pub avoided_ng: i64,
    pub node_credits_peur: i64,
    pub cooperative_credits_peur: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmissionsReport {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub group_by: GroupBy,
    /// Ordered by name, then group id.
    pub rows: Vec<EmissionsRow>,
    pub totals: EmissionsRow,
}

/// The percentage `part / whole` with two decimals, rounded down, from integers.
fn share(part: i64, whole: i64) -> String {
    if whole <= 0 {
        return "0.00".to_owned();
    }
    let basis_points = i128::from(part.max(0)) * 10_000 / i128::from(whole);
    format!("{}.{:02}", basis_points / 100, basis_points % 100)
}

pub async fn emissions(
    state: &AppState,
    scope: Option<OrganizationId>,
    group_by: GroupBy,
    period: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
) -> Result<EmissionsReport, ApiError> {
    let group = match group_by {
        GroupBy::Node => "node",
        GroupBy::Organisation => "organisation",
        GroupBy::Zone => "zone",
    };
    let rows = sqlx::query!(
        r#"with credited as (
             select l.energy_uwh, l.solar_uwh, l.carbon_ng, l.node_peur, l.cooperative_peur,
                    greatest(l.energy_uwh - l.solar_uwh, 0)::numeric as grid_uwh,
                    coalesce(l.intensity_mg_per_kwh, $5) as intensity, o.market_factor_mg_per_kwh as factor,
                    case $6::text when 'node' then l.node_id::text when 'organisation' then n.organization_id::text
                         else coalesce(l.zone, n.zone, $4) end as group_key,
                    case $6::text when 'node' then n.name when 'organisation' then o.name
                         else coalesce(l.zone, n.zone, $4) end as group_name
             from proof_leaf l
             join node n on n.cell_id = l.cell_id and n.node_id = l.node_id
             join organization o on o.organization_id = n.organization_id
             where ($1::uuid is null or n.organization_id = $1)
               and ($2::timestamptz is null or l.credited_at >= $2)
               and ($3::timestamptz is null or l.credited_at < $3))
         select group_key as "group_key!", min(group_name) as "name!", count(*)::bigint as "results!",
                sum(energy_uwh)::bigint as "energy!", sum(solar_uwh)::bigint as "solar!",
                sum(div(grid_uwh * intensity, 1000))::bigint as "location_based!",
                coalesce(sum(div(grid_uwh * factor, 1000)) filter (where factor is not null), 0)::bigint
                    as "market_based!",
                count(*) filter (where factor is not null)::bigint as "market_results!",
                sum(carbon_ng)::bigint as "avoided!",
                sum(node_peur)::bigint as "node_credits!", sum(cooperative_peur)::bigint as "cooperative_credits!"
         from credited
         group by 1
         order by 2, 1"#,
        scope.map(|id| id.as_uuid()),
        period.0,
        period.1,
        state.config.grid.default_zone.as_str(),
        state.config.grid.carbon.grid_intensity_mg_per_kwh,
        group
    )
    .fetch_all(&state.pool)
    .await?;
    let report_rows: Vec<EmissionsRow> = rows
        .into_iter()
        .map(|row| EmissionsRow {
            group: row.group_key,
            name: row.name,
            results: row.results,
            energy_uwh: row.energy,
            solar_uwh: row.solar,
            solar_share_percent: share(row.solar, row.energy),
            location_based_ng: row.location_based,
            market_based_ng: row.market_based,
            market_based_results: row.market_results,
            avoided_ng: row.avoided,
            node_credits_peur: row.node_credits,
            cooperative_credits_peur: row.cooperative_credits,
        })
        .collect();
    let sum = |field: fn(&EmissionsRow) -> i64| report_rows.iter().map(field).sum::<i64>();
    let (energy, solar) = (sum(|row| row.energy_uwh), sum(|row| row.solar_uwh));
    let totals = EmissionsRow {
        group: "total".to_owned(),
        name: "total".to_owned(),
        results: sum(|row| row.results),
        energy_uwh: energy,
        solar_uwh: solar,
        solar_share_percent: share(solar, energy),
        location_based_ng: sum(|row| row.location_based_ng),
        market_based_ng: sum(|row| row.market_based_ng),
        market_based_results: sum(|row| row.market_based_results),
        avoided_ng: sum(|row| row.avoided_ng),
        node_credits_peur: sum(|row| row.node_credits_peur),
        cooperative_credits_peur: sum(|row| row.cooperative_credits_peur),
    };
    Ok(EmissionsReport { from: period.0, to: period.1, group_by, rows: report_rows, totals })
}

/// The CSV columns, in order.
pub const CSV_HEADER: &str = "group,name,results,energy_uwh,solar_uwh,solar_share_percent,location_based_ng,\
market_based_ng,market_based_results,avoided_ng,node_credits_peur,cooperative_credits_peur";

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180); a leading
/// `=`, `+`, `-` or `@` is prefixed with `'` so that a spreadsheet does not run it as a formula.
fn field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) { format!("'{text}") } else { text.to_owned() };
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text }
}

/// The report as CSV (RFC 4180, CRLF line ends): the header, one line per row, then the totals.
pub fn to_csv(report: &EmissionsReport) -> String {
    let mut out = String::with_capacity(256 * (report.rows.len() + 2));
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for row in report.rows.iter().chain(std::iter::once(&report.totals)) {
        let cells = [
            field(&row.group),
            field(&row.name),
            row.results.to_string(),
            row.energy_uwh.to_string(),
            row.solar_uwh.to_string(),
            row.solar_share_percent.clone(),
            row.location_based_ng.to_string(),
            row.market_based_ng.to_string(),
            row.market_based_results.to_string(),
            row.avoided_ng.to_string(),
            row.node_credits_peur.to_string(),
            row.cooperative_credits_peur.to_string(),
        ];
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_exact_and_fields_are_quoted_and_defused() {
        assert_eq!(share(1, 3), "33.33");
        assert_eq!(share(60, 100), "60.00");
        assert_eq!(share(0, 0), "0.00");
        assert_eq!(field("Coop, Liège"), "\"Coop, Liège\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=cmd()"), "'=cmd()");
        assert_eq!(field("BE"), "BE");
    }
}
