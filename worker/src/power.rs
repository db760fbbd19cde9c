//! The power model a worker uses to estimate the energy of a task, documented so that anyone
//! can check a report:
//!
//! ```text
//! energy_wh  = active_watts_per_core × compute_seconds / 3600        (a task uses one core)
//! node_watts = idle_watts + running_tasks × active_watts_per_core
//! solar_wh   = energy_wh × min(1, solar_watts / node_watts)
//! ```
//!
//! Defaults are a Raspberry Pi 4: 2.7 W idle, 1.2 W more per busy core. The orchestrator bounds
//! claims at `cpu_cores × GRID_MAX_WATTS_PER_CORE` (2 W by default) over the runtime it measures.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerModel {
    pub idle_watts: f64,
    pub active_watts_per_core: f64,
}

impl Default for PowerModel {
    fn default() -> Self {
        Self { idle_watts: 2.7, active_watts_per_core: 1.2 }
    }
}

/// The energy figures of one task, in Wh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyEstimate {
    pub energy_wh: f64,
    pub solar_wh: f64,
}

impl PowerModel {
    pub fn estimate(&self, compute_seconds: f64, running_tasks: u32, solar_watts: f64) -> EnergyEstimate {
        let energy_wh = self.active_watts_per_core * compute_seconds.max(0.0) / 3600.0;
        let node_watts = self.idle_watts + f64::from(running_tasks.max(1)) * self.active_watts_per_core;
        let solar_share = (solar_watts.max(0.0) / node_watts).min(1.0);
        EnergyEstimate { energy_wh, solar_wh: energy_wh * solar_share }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_sun_covers_the_whole_task() {
        let estimate = PowerModel::default().estimate(3600.0, 1, 500.0);
        assert!((estimate.energy_wh - 1.2).abs() < 1e-12);
        assert_eq!(estimate.solar_wh, estimate.energy_wh);
    }

    #[test]
    fn no_sun_no_solar_and_partial_sun_in_proportion() {
        let model = PowerModel::default();
        assert_eq!(model.estimate(10.0, 1, 0.0).solar_wh, 0.0);
        let partial = model.estimate(3600.0, 1, 1.95);
        assert!((partial.solar_wh - 0.6).abs() < 1e-12);
    }
}
