//! Nodes with their live state (from Redis) and totals (from the ledger).

use std::collections::HashMap;

use grid_shared::carbon::{MicroWattHours, Nanograms, PicoEuros};
use grid_shared::cells::CellName;
use grid_shared::ids::{NodeId, OrganizationId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LiveState {
    pub cpu_usage: f64,
    pub solar_watts: f64,
    pub eco_score: f64,
    /// Tasks the node says it runs.
    pub running: u32,
    /// Cores claimed by assigned tasks.
    pub claimed: u32,
    pub last_heartbeat: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeTotals {
    /// Results accepted (confirmed by a quorum, or taken unchecked).
    pub tasks_completed: i64,
    /// Results outvoted by a quorum: never credited.
    pub results_disagreed: i64,
    /// Over every result the node reported, accepted or not.
    pub energy_used_wh: f64,
    pub solar_contribution_wh: f64,
    pub carbon_saved_kg: f64,
    /// The node owner's share, in euros (display) and pico-euros (exact).
    pub credits_eur: f64,
    pub credits_peur: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub node_id: uuid::Uuid,
    pub organization_id: uuid::Uuid,
    pub organization_name: String,
    pub name: String,
    pub cpu_cores: i32,
    pub has_solar: bool,
    pub location: String,
    /// Its carbon zone (an Electricity Maps zone id): its credits use that zone's intensity.
    pub zone: String,
    /// The embodied emissions it declared, g CO₂e (absent: the grid's default is used).
    pub embodied_g_co2e: Option<i64>,
    /// Its cell: only that cell's writer places work on it.
    pub cell: String,
    pub registered_at: chrono::DateTime<chrono::Utc>,
    /// When it last reported a result (an offline node's last sign of life the grid keeps).
    pub last_result_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether a heartbeat arrived within the node TTL.
    pub online: bool,
    pub live: Option<LiveState>,
    pub totals: NodeTotals,
    /// Consecutive results confirmed by a quorum; a disagreeing result resets it to 0. A node
    /// below the orchestrator's `GRID_TRUST_THRESHOLD` has each result checked by a replica.
    pub trust: i32,
}

pub async fn list_nodes(
    state: &AppState,
    scope: Option<OrganizationId>,
    only: Option<NodeId>,
) -> Result<Vec<NodeView>, ApiError> {
    let rows = sqlx::query!(
        r#"select n.node_id, n.organization_id, o.name as organization_name, n.name, n.cpu_cores, n.has_solar,
                n.location, n.zone, n.embodied_g_co2e, n.cell_id, n.registered_at, t.last_reported,
                n.trust, coalesce(t.completed, 0)::bigint as "completed!",
                coalesce(t.disagreed, 0)::bigint as "disagreed!", coalesce(t.energy, 0)::bigint as "energy!",
                coalesce(t.solar, 0)::bigint as "solar!", coalesce(c.carbon, 0)::bigint as "carbon!",
                coalesce(c.amount, 0)::bigint as "amount!"
         from node n
         left join (select cell_id, node_id, count(*) filter (where verdict in ('agreed', 'unchecked')) as completed,
                           count(*) filter (where verdict = 'disagreed') as disagreed,
                           sum(energy_uwh) as energy, sum(solar_uwh) as solar, max(reported_at) as last_reported
                    from task_result group by cell_id, node_id) t using (cell_id, node_id)
         join organization o on o.organization_id = n.organization_id
         left join (select cell_id, node_id, sum(carbon_ng) as carbon, sum(amount_peur) as amount
                    from credit_entry where account = 'node' group by cell_id, node_id) c using (cell_id, node_id)
         where ($1::uuid is null or n.organization_id = $1) and ($2::uuid is null or n.node_id = $2)
         order by n.registered_at, n.node_id
         limit 1000"#,
        scope.map(|id| id.as_uuid()),
        only.map(|id| id.as_uuid())
    )
    .fetch_all(&state.pool)
    .await?;
    // Each node's live state is in its cell's slot: one pipeline per cell.
    let mut by_cell: HashMap<String, (Vec<usize>, redis::Pipeline)> = HashMap::new();
    for (index, row) in rows.iter().enumerate() {
        let node_id = NodeId(row.node_id);
        let cell = row.cell_id.clone();
        let keys = CellName::parse(&cell).map(|cell| state.cell_keys(&cell)).unwrap_or_else(|_| state.keys());
        let (indices, pipe) = by_cell.entry(cell).or_insert_with(|| (Vec::new(), redis::pipe()));
        indices.push(index);
        pipe.cmd("HGETALL").arg(keys.node_state(node_id));
        // The cores its tasks in flight hold, as the active writer counts them.
        pipe.cmd("HGET").arg(keys.nodes_claimed()).arg(node_id.to_string());
    }
    let mut replies = vec![[redis::Value::Nil, redis::Value::Nil]; rows.len()];
    let mut conn = state.redis.get().await?;
    for (indices, pipe) in by_cell.into_values() {
        let answers: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        for (index, pair) in indices.into_iter().zip(answers.chunks(2)) {
            replies[index] = [pair[0].clone(), pair[1].clone()];
        }
    }
    let mut views = Vec::with_capacity(rows.len());
    for (row, live) in rows.into_iter().zip(replies) {
        let fields: HashMap<String, String> = redis::from_redis_value(live[0].clone()).unwrap_or_default();
        let claimed: u32 = redis::from_redis_value::<Option<u32>>(live[1].clone()).ok().flatten().unwrap_or(0);
        let number = |name: &str| fields.get(name).and_then(|value| value.parse::<f64>().ok());
        let live = match (number("cpu_usage"), number("solar_watts"), number("eco_score")) {
            (Some(cpu_usage), Some(solar_watts), Some(eco_score)) => Some(LiveState {
                cpu_usage,
                solar_watts,
                eco_score,
                running: fields.get("running").and_then(|value| value.parse().ok()).unwrap_or(0),
                claimed,
                last_heartbeat: fields.get("last_heartbeat").cloned().unwrap_or_default(),
            }),
            _ => None,
        };
        let amount: i64 = row.amount;
        views.push(NodeView {
            node_id: row.node_id,
            organization_id: row.organization_id,
            organization_name: row.organization_name,
            name: row.name,
            cpu_cores: row.cpu_cores,
            has_solar: row.has_solar,
            location: row.location,
            // A node registered before zones is in the grid's default zone.
            zone: row.zone.unwrap_or_else(|| state.config.grid.default_zone.to_string()),
            embodied_g_co2e: row.embodied_g_co2e,
            cell: row.cell_id,
            registered_at: row.registered_at,
            last_result_at: row.last_reported,
            online: live.is_some(),
            live,
            totals: NodeTotals {
                tasks_completed: row.completed,
                results_disagreed: row.disagreed,
                energy_used_wh: MicroWattHours(row.energy).as_wh(),
                solar_contribution_wh: MicroWattHours(row.solar).as_wh(),
                carbon_saved_kg: Nanograms(row.carbon).as_kg(),
                credits_eur: PicoEuros(amount).as_eur(),
                credits_peur: amount,
            },
            trust: row.trust,
        });
    }
    Ok(views)
}
