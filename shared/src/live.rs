//! A node's live state, as heartbeats keep it in `{ns}:node:<id>`, and its eco score.

use serde::{Deserialize, Serialize};

/// The power a core may draw at full load, in milliwatts, unless configured otherwise. A
/// Raspberry Pi 4 draws about 6.4 W with its 4 cores busy; 2 W a core leaves a margin.
pub const DEFAULT_MAX_MILLIWATTS_PER_CORE: i64 = 2_000;

/// The eco score of a node, between 0 and 1, rounded to three decimals:
///
/// ```text
/// solar_cover = clamp(solar_watts / (cpu_cores × max_watts_per_core), 0, 1)
/// idle        = 1 − cpu_usage / 100
/// eco_score   = 0.7 × solar_cover + 0.3 × idle
/// ```
///
/// A node whose panels cover its full-load draw and that sits idle scores 1.
pub fn eco_score(solar_watts: f64, cpu_usage: f64, cpu_cores: u16, max_milliwatts_per_core: i64) -> f64 {
    let full_load_watts = f64::from(cpu_cores) * max_milliwatts_per_core as f64 / 1000.0;
    let solar_cover = if full_load_watts > 0.0 { (solar_watts / full_load_watts).clamp(0.0, 1.0) } else { 0.0 };
    let idle = (1.0 - cpu_usage / 100.0).clamp(0.0, 1.0);
    ((0.7 * solar_cover + 0.3 * idle) * 1000.0).round() / 1000.0
}

/// A heartbeat's figures, checked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    cpu_usage: f64,
    solar_watts: f64,
}

impl Heartbeat {
    pub fn parse(cpu_usage: f64, solar_watts: f64) -> Result<Self, crate::domain::FieldError> {
        if !cpu_usage.is_finite() || !(0.0..=100.0).contains(&cpu_usage) {
            return Err(crate::domain::FieldError::new("cpu_usage", "must be a percentage between 0 and 100"));
        }
        if !solar_watts.is_finite() || !(0.0..=100_000.0).contains(&solar_watts) {
            return Err(crate::domain::FieldError::new(
                "solar_watts",
                "must be a number of watts between 0 and 100000",
            ));
        }
        Ok(Self { cpu_usage, solar_watts })
    }
    pub fn cpu_usage(&self) -> f64 {
        self.cpu_usage
    }
    pub fn solar_watts(&self) -> f64 {
        self.solar_watts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eco_score_follows_the_formula() {
        assert_eq!(eco_score(8.0, 0.0, 4, 2_000), 1.0);
        assert_eq!(eco_score(0.0, 100.0, 4, 2_000), 0.0);
        assert_eq!(eco_score(4.0, 50.0, 4, 2_000), 0.5);
        assert_eq!(eco_score(450.0, 25.5, 4, 2_000), 0.924);
    }

    #[test]
    fn heartbeats_are_checked() {
        assert!(Heartbeat::parse(25.5, 450.0).is_ok());
        assert_eq!(Heartbeat::parse(101.0, 0.0).unwrap_err().field, "cpu_usage");
        assert_eq!(Heartbeat::parse(1.0, f64::INFINITY).unwrap_err().field, "solar_watts");
    }
}
