//! Grid totals, in the KoproGo `/grid/stats` shape, plus the exact figures beside the display
//! ones.

use grid_shared::carbon::{MicroWattHours, Nanograms};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::eur;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeStats {
    pub total_nodes: i64,
    pub active_nodes: i64,
    pub total_cpu_cores: i64,
    pub nodes_with_solar: i64,
    /// Solar energy used by credited tasks, in Wh.
    pub total_energy_saved_wh: f64,
    /// CO₂ avoided by credited tasks, in kg.
    pub total_carbon_credits: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskStats {
    pub total_tasks: i64,
    /// Queued, assigned or running.
    pub pending_tasks: i64,
    pub completed_tasks: i64,
    pub failed_tasks: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GridStats {
    pub nodes: NodeStats,
    pub tasks: TaskStats,
    pub cooperative_fund_eur: f64,
    /// Exact: the cooperative fund in pico-euros, carbon in ng, solar energy in µWh.
    pub cooperative_fund_peur: i64,
    pub total_carbon_ng: i64,
    pub total_solar_uwh: i64,
    pub node_credits_peur: i64,
}

pub async fn grid_stats(state: &AppState) -> Result<GridStats, ApiError> {
    let row = sqlx::query!(
        r#"select
            (select count(*) from node) as "total_nodes!",
            (select coalesce(sum(cpu_cores), 0)::bigint from node) as "total_cpu_cores!",
            (select count(*) from node where has_solar) as "nodes_with_solar!",
            (select count(*) from task) as "total_tasks!",
            (select count(*) from task where status in ('queued', 'assigned', 'running')) as "pending_tasks!",
            (select count(*) from task where status = 'completed') as "completed_tasks!",
            (select count(*) from task where status = 'failed') as "failed_tasks!",
            (select coalesce(sum(amount_peur), 0)::bigint from credit_entry where account = 'cooperative') as "fund!",
            (select coalesce(sum(amount_peur), 0)::bigint from credit_entry where account = 'node') as "node_credits!",
            (select coalesce(sum(carbon_ng), 0)::bigint from credit_entry) as "carbon!",
            -- Credited solar energy: the v1 links' and the block leaves' (since v2).
            ((select coalesce(sum(solar_uwh), 0) from green_proof)
                + (select coalesce(sum(solar_uwh), 0) from proof_leaf))::bigint as "solar!""#
    )
    .fetch_one(&state.pool)
    .await?;
    let mut conn = state.redis.get().await?;
    let mut active_nodes: i64 = 0;
    for cell in state.config.grid.cells.iter() {
        let alive: i64 = redis::cmd("ZCOUNT")
            .arg(state.cell_keys(&cell.name).nodes_alive())
            .arg(chrono::Utc::now().timestamp_millis())
            .arg("+inf")
            .query_async(&mut conn)
            .await?;
        active_nodes += alive;
    }
    let fund: i64 = row.fund;
    let carbon: i64 = row.carbon;
    let solar: i64 = row.solar;
    Ok(GridStats {
        nodes: NodeStats {
            total_nodes: row.total_nodes,
            active_nodes,
            total_cpu_cores: row.total_cpu_cores,
            nodes_with_solar: row.nodes_with_solar,
            total_energy_saved_wh: MicroWattHours(solar).as_wh(),
            total_carbon_credits: Nanograms(carbon).as_kg(),
        },
        tasks: TaskStats {
            total_tasks: row.total_tasks,
            pending_tasks: row.pending_tasks,
            completed_tasks: row.completed_tasks,
            failed_tasks: row.failed_tasks,
        },
        cooperative_fund_eur: eur(fund),
        cooperative_fund_peur: fund,
        total_carbon_ng: carbon,
        total_solar_uwh: solar,
        node_credits_peur: row.node_credits,
    })
}
