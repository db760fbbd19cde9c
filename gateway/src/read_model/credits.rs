//! The ledger by account: each node owner's credits (the 70 % shares of its nodes' results) and
//! the cooperative fund (the 30 % shares), summed from the credit entries.

use grid_shared::carbon::Nanograms;
use grid_shared::ids::OrganizationId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::eur;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeCredits {
    pub node_id: uuid::Uuid,
    pub node_name: String,
    pub organization_id: uuid::Uuid,
    pub organization_name: String,
    /// Credited results (one per task and node; a replicated task credits each agreeing node),
    /// in the period asked for.
    pub credited_results: i64,
    /// Exact: pico-euros and ng of CO₂; beside them the display units.
    pub credits_peur: i64,
    pub credits_eur: f64,
    pub carbon_saved_ng: i64,
    pub carbon_saved_kg: f64,
    /// The recent average credit, as BOINC's RAC: every credit of the node (whatever the period)
    /// weighed down by half a week later, half again the next, … (a one-week half-life), per day,
    /// in pico-euros.
    pub recent_average_peur_per_day: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreditsView {
    /// The period the figures cover (credits at or after `since`, before `until`), when asked.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// The nodes in scope (an organisation's own, or all for the operator) that earned credits.
    pub nodes: Vec<NodeCredits>,
    /// The sum over `nodes`.
    pub node_credits_peur: i64,
    /// The whole cooperative fund (every member's 30 % shares), in pico-euros and euros.
    pub cooperative_fund_peur: i64,
    pub cooperative_fund_eur: f64,
}

/// A period of credits: at or after `since`, before `until` (each optional).
pub type Period = (Option<chrono::DateTime<chrono::Utc>>, Option<chrono::DateTime<chrono::Utc>>);

pub async fn credits(state: &AppState, scope: Option<OrganizationId>, period: Period) -> Result<CreditsView, ApiError> {
    let (since, until) = period;
    let rows = sqlx::query!(
        r#"with credited as (
             select e.cell_id, e.node_id, e.amount_peur, e.carbon_ng, e.created_at,
                    ($2::timestamptz is null or e.created_at >= $2) and ($3::timestamptz is null or e.created_at < $3)
                        as in_period
             from credit_entry e join node n using (cell_id, node_id)
             where e.account = 'node' and ($1::uuid is null or n.organization_id = $1))
         select c.node_id as "node_id!", n.name as node_name, n.organization_id, o.name as organization_name,
                count(*) filter (where c.in_period) as "results!",
                coalesce(sum(c.amount_peur) filter (where c.in_period), 0)::bigint as "amount!",
                coalesce(sum(c.carbon_ng) filter (where c.in_period), 0)::bigint as "carbon!",
                round(coalesce(sum(c.amount_peur * power(0.5::float8,
                    extract(epoch from now() - c.created_at)::float8 / 604800.0)), 0) * ln(2) / 7.0)::bigint as "rac!"
         from credited c join node n using (cell_id, node_id) join organization o on o.organization_id = n.organization_id
         group by c.node_id, n.name, n.organization_id, o.name
         order by "amount!" desc, "rac!" desc, c.node_id
         limit 10000"#, scope.map(|id| id.as_uuid()), since, until)
    .fetch_all(&state.pool)
    .await?;
    let fund: i64 = sqlx::query_scalar!(
        r#"select coalesce(sum(amount_peur), 0)::bigint as "fund!" from credit_entry where account = 'cooperative'
           and ($1::timestamptz is null or created_at >= $1) and ($2::timestamptz is null or created_at < $2)"#,
        since,
        until
    )
    .fetch_one(&state.pool)
    .await?;
    let mut nodes = Vec::with_capacity(rows.len());
    for row in rows {
        let (amount, carbon) = (row.amount, row.carbon);
        nodes.push(NodeCredits {
            node_id: row.node_id,
            node_name: row.node_name,
            organization_id: row.organization_id,
            organization_name: row.organization_name,
            credited_results: row.results,
            credits_peur: amount,
            credits_eur: eur(amount),
            carbon_saved_ng: carbon,
            carbon_saved_kg: Nanograms(carbon).as_kg(),
            recent_average_peur_per_day: row.rac,
        });
    }
    Ok(CreditsView {
        since,
        until,
        node_credits_peur: nodes.iter().fold(0_i64, |sum, node| sum.saturating_add(node.credits_peur)),
        nodes,
        cooperative_fund_peur: fund,
        cooperative_fund_eur: eur(fund),
    })
}
