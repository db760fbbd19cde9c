//! Solar production: a constant figure from the command line, or a simulated daily curve.
//!
//! The curve is zero at night and a half sine between 6:00 and 18:00, peaking at noon:
//! `watts = peak × sin(π × (hour − 6) / 12)`. A simulated day can be compressed (`day_seconds`),
//! so that a demo or a test sees a whole day within minutes: a compressed day starts at 9:00
//! when the fleet starts. `phase_hours` shifts a node's clock. On the wall clock, hours are UTC.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The simulated hour at which a compressed day starts.
const COMPRESSED_DAY_STARTS_AT: f64 = 9.0;

#[derive(Debug, Clone, PartialEq)]
pub enum SolarSource {
    Constant(f64),
    Curve { peak_watts: f64, day_seconds: Option<f64>, phase_hours: f64, started: Instant },
}

impl SolarSource {
    pub fn watts_now(&self) -> f64 {
        match self {
            Self::Constant(watts) => *watts,
            Self::Curve { peak_watts, day_seconds, phase_hours, started } => {
                let clock_hour = match day_seconds {
                    Some(day_length) => COMPRESSED_DAY_STARTS_AT + started.elapsed().as_secs_f64() / day_length * 24.0,
                    None => {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map(|since| since.as_secs_f64())
                            .unwrap_or(0.0);
                        (now % 86_400.0) / 3600.0
                    }
                };
                curve_watts(*peak_watts, (clock_hour + phase_hours).rem_euclid(24.0))
            }
        }
    }
}

pub fn curve_watts(peak_watts: f64, hour: f64) -> f64 {
    if !(6.0..=18.0).contains(&hour) {
        return 0.0;
    }
    (peak_watts * (std::f64::consts::PI * (hour - 6.0) / 12.0).sin()).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_peaks_at_noon_and_sleeps_at_night() {
        assert_eq!(curve_watts(500.0, 12.0), 500.0);
        assert_eq!(curve_watts(500.0, 3.0), 0.0);
        assert!((curve_watts(500.0, 9.0) - 353.553).abs() < 0.01);
    }
}
