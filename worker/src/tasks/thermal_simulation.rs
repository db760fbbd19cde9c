//! Building heat loss by an hourly degree-day model.
//!
//! The envelope's U-value follows the insulation score (2.5 W/m²K uninsulated, 0.3 for a
//! passive house); the envelope area is 1.7 × the floor surface. A year of hourly outdoor
//! temperatures (seasonal and daily sinusoids around 10 °C) is scaled so that its degree-days
//! below 18 °C equal the given `heating_degree_days`; the heat demand is U × area × degree-hours.

use std::f64::consts::PI;
use std::sync::atomic::AtomicBool;

use grid_shared::ids::BuildingId;
use serde_json::json;

use super::{TaskError, check, round3};

const BASE_TEMPERATURE: f64 = 18.0;
const HOURS: usize = 8760;
const MONTH_DAYS: [usize; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
/// Each hour is integrated in this many steps, as a Pi-class workload of a few milliseconds.
const SUBSTEPS: usize = 60;

fn u_value(insulation_score: f64) -> f64 {
    2.5 - 2.2 * insulation_score
}

fn outdoor_temperature(hour: f64) -> f64 {
    let day = hour / 24.0;
    // Coldest mid-January and at 4 a.m.
    10.0 - 8.0 * (2.0 * PI * (day - 15.0) / 365.0).cos() - 3.0 * (2.0 * PI * (hour % 24.0 - 4.0) / 24.0).cos()
}

pub fn simulate(
    building_id: BuildingId,
    insulation_score: f64,
    surface_m2: f64,
    heating_degree_days: f64,
    cancelled: &AtomicBool,
) -> Result<serde_json::Value, TaskError> {
    if !(0.0..=1.0).contains(&insulation_score) || surface_m2 <= 0.0 || heating_degree_days < 0.0 {
        return Err(TaskError::Invalid("inputs out of range".to_owned()));
    }
    // Degree-hours per hour of the raw climate, integrated over substeps.
    let mut degree_hours = vec![0.0_f64; HOURS];
    for (hour, slot) in degree_hours.iter_mut().enumerate() {
        if hour % 730 == 0 {
            check(cancelled)?;
        }
        let mut sum = 0.0;
        for step in 0..SUBSTEPS {
            let at = hour as f64 + step as f64 / SUBSTEPS as f64;
            sum += (BASE_TEMPERATURE - outdoor_temperature(at)).max(0.0);
        }
        *slot = sum / SUBSTEPS as f64;
    }
    let raw_degree_days: f64 = degree_hours.iter().sum::<f64>() / 24.0;
    let scale = if raw_degree_days > 0.0 { heating_degree_days / raw_degree_days } else { 0.0 };
    let envelope_m2 = 1.7 * surface_m2;
    let conductance = |score: f64| u_value(score) * envelope_m2; // W/K
    let mut monthly = [0.0_f64; 12];
    let mut hour = 0;
    let mut peak_degrees: f64 = 0.0;
    for (month, days) in MONTH_DAYS.iter().enumerate() {
        for _ in 0..days * 24 {
            let degrees = degree_hours[hour] * scale;
            peak_degrees = peak_degrees.max(degrees);
            monthly[month] += conductance(insulation_score) * degrees / 1000.0;
            hour += 1;
        }
    }
    let annual: f64 = monthly.iter().sum();
    let at_full_insulation = annual * u_value(1.0) / u_value(insulation_score);
    Ok(json!({
        "kind": "building_thermal_simulation",
        "building_id": building_id,
        "u_value_w_m2k": round3(u_value(insulation_score)),
        "envelope_m2": round3(envelope_m2),
        "annual_heat_demand_kwh": round3(annual),
        "monthly_heat_demand_kwh": monthly.iter().map(|kwh| round3(*kwh)).collect::<Vec<_>>(),
        "peak_load_kw": round3(conductance(insulation_score) * peak_degrees / 1000.0),
        "demand_at_full_insulation_kwh": round3(at_full_insulation),
        "potential_saving_kwh": round3(annual - at_full_insulation),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(score: f64) -> serde_json::Value {
        simulate(BuildingId(uuid::Uuid::nil()), score, 100.0, 2500.0, &AtomicBool::new(false)).unwrap()
    }

    #[test]
    fn the_demand_matches_the_degree_day_formula() {
        // U × A × HDD × 24 h: 2.5 × 170 × 2500 × 24 / 1000 = 25 500 kWh for an uninsulated house.
        let annual = run(0.0)["annual_heat_demand_kwh"].as_f64().unwrap();
        assert!((annual - 25_500.0).abs() < 1.0, "{annual}");
    }

    #[test]
    fn better_insulation_needs_less_heat_and_winter_needs_more() {
        let poor = run(0.1);
        let good = run(0.9);
        assert!(good["annual_heat_demand_kwh"].as_f64() < poor["annual_heat_demand_kwh"].as_f64());
        let monthly = poor["monthly_heat_demand_kwh"].as_array().unwrap();
        assert!(monthly[0].as_f64().unwrap() > monthly[6].as_f64().unwrap());
    }

    #[test]
    fn it_is_deterministic_and_cancellable() {
        assert_eq!(run(0.4), run(0.4));
        let cancelled = AtomicBool::new(true);
        assert_eq!(simulate(BuildingId::new(), 0.4, 80.0, 2000.0, &cancelled), Err(TaskError::Cancelled));
    }
}
