//! The computations, one module per kind. Both are deterministic: the same input gives the same
//! result, hence the same result hash. Both check a cancellation flag as they go.

pub mod group_optimisation;
pub mod thermal_simulation;

use std::sync::atomic::{AtomicBool, Ordering};

use grid_shared::domain::TaskInput;
use grid_shared::messages::Sha256Hex;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Invalid(String),
}

/// A result and its hash: SHA-256 of the compact JSON (keys sorted), as the gateway checks it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub result_json: serde_json::Value,
    pub result_hash: String,
}

pub fn run(input: &TaskInput, cancelled: &AtomicBool) -> Result<TaskResult, TaskError> {
    let result_json = match input {
        TaskInput::BuildingThermalSimulation { building_id, insulation_score, surface_m2, heating_degree_days } => {
            thermal_simulation::simulate(*building_id, *insulation_score, *surface_m2, *heating_degree_days, cancelled)?
        }
        TaskInput::EnergyGroupOptimisation { building_id, simulation_months, anonymised_readings } => {
            group_optimisation::optimise(*building_id, *simulation_months, anonymised_readings, cancelled)?
        }
    };
    let result_hash = Sha256Hex::of_secret(&result_json.to_string()).as_str().to_owned();
    Ok(TaskResult { result_json, result_hash })
}

/// A stand-in for the computation, for benches of the control plane: a deterministic result
/// (the SHA-256 of the input) at once, so that the figure measures the grid, not the Pi.
pub fn run_instant(input: &TaskInput) -> TaskResult {
    let input_json = serde_json::to_string(input).expect("task inputs serialise");
    let result_json = serde_json::json!({"instant": true, "input_sha256": Sha256Hex::of_secret(&input_json).as_str()});
    let result_hash = Sha256Hex::of_secret(&result_json.to_string()).as_str().to_owned();
    TaskResult { result_json, result_hash }
}

fn check(cancelled: &AtomicBool) -> Result<(), TaskError> {
    if cancelled.load(Ordering::Relaxed) { Err(TaskError::Cancelled) } else { Ok(()) }
}

/// Rounds for presentation, so that results read well; the computation itself is exact f64.
fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
