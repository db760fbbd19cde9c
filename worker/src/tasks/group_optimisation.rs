//! Group energy purchase: which share of the group's demand to buy at a fixed price, the rest
//! at a variable (monthly) price, over the simulated months.
//!
//! Prices are deterministic: the fixed price is €0.30/kWh; the variable one swings seasonally
//! around €0.27/kWh with a pseudo-random component seeded by the building id. For each fixed
//! share from 0 to 100 % (1 % steps) the cost is computed, plus a risk charge of 0.5 × the
//! standard deviation of the monthly bills; the share with the lowest total wins. Individual
//! households would pay a retail €0.34/kWh.

use std::sync::atomic::AtomicBool;

use grid_shared::ids::BuildingId;
use serde_json::json;

use super::{TaskError, check, round3};

const FIXED_PRICE: f64 = 0.30;
const VARIABLE_MEAN: f64 = 0.27;
const RETAIL_PRICE: f64 = 0.34;
const RISK_AVERSION: f64 = 0.5;

/// A deterministic price path: seasonal swing plus a linear-congruential jitter.
fn variable_prices(building_id: BuildingId, months: usize) -> Vec<f64> {
    let bytes = building_id.as_uuid().as_u128();
    let mut state = (bytes as u64) ^ ((bytes >> 64) as u64) | 1;
    (0..months)
        .map(|month| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let jitter = ((state >> 33) as f64 / (1_u64 << 31) as f64 - 0.5) * 0.08;
            let seasonal = 0.05 * (2.0 * std::f64::consts::PI * month as f64 / 12.0).cos();
            (VARIABLE_MEAN + seasonal + jitter).max(0.01)
        })
        .collect()
}

pub fn optimise(
    building_id: BuildingId,
    simulation_months: u32,
    readings: &[Vec<f64>],
    cancelled: &AtomicBool,
) -> Result<serde_json::Value, TaskError> {
    let months = simulation_months as usize;
    if months == 0 || readings.is_empty() || readings.iter().any(Vec::is_empty) {
        return Err(TaskError::Invalid("no months or no readings".to_owned()));
    }
    // Each participant's series repeats over the simulated months.
    let demand: Vec<f64> =
        (0..months).map(|month| readings.iter().map(|series| series[month % series.len()]).sum()).collect();
    let prices = variable_prices(building_id, months);
    let total_demand: f64 = demand.iter().sum();
    let mut best: Option<(u32, f64, f64)> = None;
    for percent in 0..=100_u32 {
        check(cancelled)?;
        let share = f64::from(percent) / 100.0;
        let bills: Vec<f64> = demand
            .iter()
            .zip(&prices)
            .map(|(kwh, price)| kwh * (share * FIXED_PRICE + (1.0 - share) * price))
            .collect();
        let cost: f64 = bills.iter().sum();
        let mean = cost / months as f64;
        let deviation = (bills.iter().map(|bill| (bill - mean).powi(2)).sum::<f64>() / months as f64).sqrt();
        let objective = cost + RISK_AVERSION * deviation;
        if best.is_none_or(|(_, _, best_objective)| objective < best_objective) {
            best = Some((percent, cost, objective));
        }
    }
    let (best_percent, best_cost, _) = best.expect("101 candidates were tried");
    let all_variable: f64 = demand.iter().zip(&prices).map(|(kwh, price)| kwh * price).sum();
    Ok(json!({
        "kind": "energy_group_optimisation",
        "building_id": building_id,
        "participants": readings.len(),
        "months": months,
        "total_demand_kwh": round3(total_demand),
        "best_fixed_share_percent": best_percent,
        "expected_cost_eur": round3(best_cost),
        "cost_all_fixed_eur": round3(total_demand * FIXED_PRICE),
        "cost_all_variable_eur": round3(all_variable),
        "saving_vs_individual_eur": round3(total_demand * RETAIL_PRICE - best_cost),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings() -> Vec<Vec<f64>> {
        (0..6)
            .map(|participant| {
                (0..12).map(|month| 200.0 + 10.0 * participant as f64 + 30.0 * (month % 4) as f64).collect()
            })
            .collect()
    }

    #[test]
    fn the_group_saves_against_individual_retail() {
        let result = optimise(BuildingId(uuid::Uuid::nil()), 24, &readings(), &AtomicBool::new(false)).unwrap();
        assert!(result["saving_vs_individual_eur"].as_f64().unwrap() > 0.0);
        let expected = result["expected_cost_eur"].as_f64().unwrap();
        let fixed = result["cost_all_fixed_eur"].as_f64().unwrap();
        let variable = result["cost_all_variable_eur"].as_f64().unwrap();
        assert!(expected >= variable.min(fixed) - 1e-6 && expected <= variable.max(fixed) + 1e-6);
        assert_eq!(result["months"], 24);
    }

    #[test]
    fn it_is_deterministic() {
        let building = BuildingId::new();
        let flag = AtomicBool::new(false);
        assert_eq!(optimise(building, 12, &readings(), &flag), optimise(building, 12, &readings(), &flag));
    }
}
