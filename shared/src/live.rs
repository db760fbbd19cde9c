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

/// One entry of the `{ns}:heartbeats` change feed: a node's live state as of one heartbeat,
/// and when it expires without another. The gateway writes it next to the node's hash; the
/// active writer reads it to keep its mirror of the fleet current.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeartbeatEntry {
    pub node_id: crate::ids::NodeId,
    pub cpu_usage: f64,
    pub solar_watts: f64,
    pub eco_score: f64,
    /// Milliseconds since the Unix epoch (UTC) at which the state expires.
    pub expires_at_ms: i64,
}

impl HeartbeatEntry {
    /// The stream entry's fields, in order.
    pub fn fields(&self) -> [(&'static str, String); 5] {
        [
            ("node_id", self.node_id.to_string()),
            ("cpu_usage", self.cpu_usage.to_string()),
            ("solar_watts", self.solar_watts.to_string()),
            ("eco_score", self.eco_score.to_string()),
            ("expires_at_ms", self.expires_at_ms.to_string()),
        ]
    }

    /// Reads an entry back from its fields; `None` when one is missing or not a finite number
    /// in range (the entry is then ignored: the next heartbeat brings the state again).
    pub fn parse(field: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let number = |name: &str| field(name)?.parse::<f64>().ok().filter(|value| value.is_finite());
        let heartbeat = Heartbeat::parse(number("cpu_usage")?, number("solar_watts")?).ok()?;
        let eco_score = number("eco_score").filter(|score| (0.0..=1.0).contains(score))?;
        Some(Self {
            node_id: field("node_id")?.parse().ok()?,
            cpu_usage: heartbeat.cpu_usage(),
            solar_watts: heartbeat.solar_watts(),
            eco_score,
            expires_at_ms: field("expires_at_ms")?.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_entry_reads_back_and_refuses_what_is_out_of_range() {
        let entry = HeartbeatEntry {
            node_id: crate::ids::NodeId::new(),
            cpu_usage: 12.5,
            solar_watts: 300.0,
            eco_score: 0.9,
            expires_at_ms: 1_790_000_000_000,
        };
        let fields: std::collections::HashMap<&str, String> = entry.fields().into_iter().collect();
        assert_eq!(HeartbeatEntry::parse(|name| fields.get(name).cloned()), Some(entry));
        let mut broken = fields.clone();
        broken.insert("solar_watts", "-3".into());
        assert_eq!(HeartbeatEntry::parse(|name| broken.get(name).cloned()), None);
        broken = fields;
        broken.remove("node_id");
        assert_eq!(HeartbeatEntry::parse(|name| broken.get(name).cloned()), None);
    }

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
