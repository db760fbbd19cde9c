//! The ledger by account: each node owner's credits (the 70 % shares of its nodes' results) and
//! the cooperative fund (the 30 % shares), summed from the credit entries.

use grid_shared::carbon::Nanograms;
use grid_shared::ids::OrganizationId;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::eur;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeCredits {
    pub node_id: uuid::Uuid,
    pub organization_id: uuid::Uuid,
    /// Credited results (one per task and node; a replicated task credits each agreeing node).
    pub credited_results: i64,
    /// Exact: pico-euros and ng of CO₂; beside them the display units.
    pub credits_peur: i64,
    pub credits_eur: f64,
    pub carbon_saved_ng: i64,
    pub carbon_saved_kg: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreditsView {
    /// The nodes in scope (an organisation's own, or all for the operator) that earned credits.
    pub nodes: Vec<NodeCredits>,
    /// The sum over `nodes`.
    pub node_credits_peur: i64,
    /// The whole cooperative fund (every member's 30 % shares), in pico-euros and euros.
    pub cooperative_fund_peur: i64,
    pub cooperative_fund_eur: f64,
}

pub async fn credits(state: &AppState, scope: Option<OrganizationId>) -> Result<CreditsView, ApiError> {
    let rows = sqlx::query(
        "select e.node_id, n.organization_id, count(*) as results, sum(e.amount_peur)::bigint as amount,
                sum(e.carbon_ng)::bigint as carbon
         from credit_entry e join node n using (node_id)
         where e.account = 'node' and ($1::uuid is null or n.organization_id = $1)
         group by e.node_id, n.organization_id
         order by amount desc, e.node_id
         limit 10000",
    )
    .bind(scope.map(|id| id.as_uuid()))
    .fetch_all(&state.pool)
    .await?;
    let fund: i64 = sqlx::query_scalar(
        "select coalesce(sum(amount_peur), 0)::bigint from credit_entry where account = 'cooperative'",
    )
    .fetch_one(&state.pool)
    .await?;
    let mut nodes = Vec::with_capacity(rows.len());
    for row in &rows {
        let amount: i64 = row.try_get("amount")?;
        let carbon: i64 = row.try_get("carbon")?;
        nodes.push(NodeCredits {
            node_id: row.try_get("node_id")?,
            organization_id: row.try_get("organization_id")?,
            credited_results: row.try_get("results")?,
            credits_peur: amount,
            credits_eur: eur(amount),
            carbon_saved_ng: carbon,
            carbon_saved_kg: Nanograms(carbon).as_kg(),
        });
    }
    Ok(CreditsView {
        node_credits_peur: nodes.iter().fold(0_i64, |sum, node| sum.saturating_add(node.credits_peur)),
        nodes,
        cooperative_fund_peur: fund,
        cooperative_fund_eur: eur(fund),
    })
}
