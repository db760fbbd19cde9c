//! A cell's summary (DESIGN §11): what its writer publishes in `{ns}:summary`, a hash rewritten
//! at most every [`CellSummary::EVERY_MS`] while it writes, for `GET /v1/cells` and, with several
//! cells, for the gateway's choice of a cell for a task.

use std::collections::HashMap;

use crate::signals::{IntensityKind, Zone};

/// A cell's state as its writer last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct CellSummary {
    /// The writer's epoch and its process name (`GRID_CONSUMER_NAME`).
    pub epoch: i64,
    pub holder: String,
    /// When it was written (the writer's clock, ms since the epoch).
    pub at_ms: i64,
    pub live_nodes: u64,
    /// Cores of live nodes not held by a task.
    pub free_cores: u64,
    /// Live nodes with at least one core's worth of sun.
    pub sunny_nodes: u64,
    /// Watts of sun beyond what the tasks on them use, over the live nodes that have any.
    pub solar_surplus_watts: f64,
    pub queued_tasks: u64,
    pub open_tasks: u64,
    /// The cell's zone and its grid's intensity in the current hour, with where it came from.
    pub zone: Zone,
    pub intensity_mg_per_kwh: i64,
    pub intensity_kind: IntensityKind,
    pub intensity_source: String,
}

impl CellSummary {
    /// How often a writer rewrites it, at most (and at least, while it writes).
    pub const EVERY_MS: u64 = 250;

    /// Its fields, as the hash holds them.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("epoch", self.epoch.to_string()),
            ("holder", self.holder.clone()),
            ("at_ms", self.at_ms.to_string()),
            ("live_nodes", self.live_nodes.to_string()),
            ("free_cores", self.free_cores.to_string()),
            ("sunny_nodes", self.sunny_nodes.to_string()),
            ("solar_surplus_watts", self.solar_surplus_watts.to_string()),
            ("queued_tasks", self.queued_tasks.to_string()),
            ("open_tasks", self.open_tasks.to_string()),
            ("zone", self.zone.to_string()),
            ("intensity_mg_per_kwh", self.intensity_mg_per_kwh.to_string()),
            ("intensity_kind", self.intensity_kind.as_str().to_owned()),
            ("intensity_source", self.intensity_source.clone()),
        ]
    }

    /// Reads it back; `None` when a field is missing or out of range (a hash written by another
    /// version, or not at all).
    pub fn parse(hash: &HashMap<String, String>) -> Option<Self> {
        let text = |name: &str| hash.get(name).map(String::as_str);
        let count = |name: &str| text(name)?.parse::<u64>().ok();
        let watts =
            text("solar_surplus_watts")?.parse::<f64>().ok().filter(|watts| watts.is_finite() && *watts >= 0.0)?;
        Some(Self {
            epoch: text("epoch")?.parse().ok()?,
            holder: text("holder")?.to_owned(),
            at_ms: text("at_ms")?.parse().ok()?,
            live_nodes: count("live_nodes")?,
            free_cores: count("free_cores")?,
            sunny_nodes: count("sunny_nodes")?,
            solar_surplus_watts: watts,
            queued_tasks: count("queued_tasks")?,
            open_tasks: count("open_tasks")?,
            zone: Zone::parse(text("zone")?).ok()?,
            intensity_mg_per_kwh: text("intensity_mg_per_kwh")?.parse().ok().filter(|value: &i64| *value >= 0)?,
            intensity_kind: IntensityKind::parse(text("intensity_kind")?)?,
            intensity_source: text("intensity_source")?.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_back_as_written_and_a_partial_one_not_at_all() {
        let summary = CellSummary {
            epoch: 7,
            holder: "orchestrator-1".to_owned(),
            at_ms: 1_764_806_400_000,
            live_nodes: 12,
            free_cores: 30,
            sunny_nodes: 4,
            solar_surplus_watts: 41.5,
            queued_tasks: 3,
            open_tasks: 20,
            zone: Zone::parse("BE").unwrap(),
            intensity_mg_per_kwh: 152_000,
            intensity_kind: IntensityKind::Average,
            intensity_source: "file".to_owned(),
        };
        let hash: HashMap<String, String> =
            summary.fields().into_iter().map(|(field, value)| (field.to_owned(), value)).collect();
        assert_eq!(CellSummary::parse(&hash), Some(summary));
        let mut partial = hash.clone();
        partial.remove("free_cores");
        assert_eq!(CellSummary::parse(&partial), None);
        let mut negative = hash;
        negative.insert("intensity_mg_per_kwh".to_owned(), "-1".to_owned());
        assert_eq!(CellSummary::parse(&negative), None);
    }
}
