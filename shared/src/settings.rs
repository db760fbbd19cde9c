//! Settings read by more than one service. Parsed from a lookup function (the environment in
//! the binaries, a map in tests) so that this crate does no I/O; each error names the variable.

use crate::carbon::{CarbonPolicy, parse_scaled_decimal};
use crate::cells::{CellName, Cells};
use crate::live::DEFAULT_MAX_MILLIWATTS_PER_CORE;
use crate::proof::MAX_DIFFICULTY;
use crate::signals::{Zone, parse_zones};
use crate::wire::Keys;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub reason: String,
}

/// What the gateway and the orchestrator must agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridSettings {
    /// The keys of the default cell (`GRID_NAMESPACE`, default `grid`).
    pub keys: Keys,
    /// The grid's cells (`GRID_CELLS`, `name:ZONE,...`; default one cell, `main`, in the default
    /// zone), the default first. Each cell's zone is a known zone.
    pub cells: Cells,
    /// How long a node's live state lives after its last heartbeat (`GRID_NODE_TTL_MS`).
    pub node_ttl_ms: u64,
    pub carbon: CarbonPolicy,
    pub proof_difficulty: u8,
    pub max_milliwatts_per_core: i64,
    /// The carbon zones nodes may register in (`GRID_ZONES`, default those of the bundled
    /// intensity file), the default one included.
    pub zones: Vec<Zone>,
    /// The zone of a node that names none (`GRID_DEFAULT_ZONE`, default `BE`).
    pub default_zone: Zone,
}

impl Default for GridSettings {
    fn default() -> Self {
        Self::from_lookup(|_| None).expect("the defaults are valid")
    }
}

/// Reads one variable, or its default, and parses it.
pub fn read<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, SettingsError> {
    let raw = lookup(variable).unwrap_or_else(|| default.to_owned());
    parse(raw.trim()).map_err(|reason| SettingsError { variable, reason })
}

/// Parses an integer in `min..=max`.
pub fn integer_in<T: TryFrom<i64>>(min: i64, max: i64) -> impl FnOnce(&str) -> Result<T, String> {
    move |text| {
        let value: i64 = text.parse().map_err(|_| format!("{text:?} is not an integer"))?;
        if !(min..=max).contains(&value) {
            return Err(format!("{value} is not between {min} and {max}"));
        }
        T::try_from(value).map_err(|_| format!("{value} is out of range"))
    }
}

impl GridSettings {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let keys = read(&lookup, "GRID_NAMESPACE", "grid", Keys::new)?;
        let node_ttl_ms = read(&lookup, "GRID_NODE_TTL_MS", "15000", integer_in(1_000, 3_600_000))?;
        let grid_intensity_mg_per_kwh =
            read(&lookup, "GRID_INTENSITY_KG_PER_KWH", "0.18", |text| parse_scaled_decimal(text, 6))?;
        let price_pico_eur_per_kg =
            read(&lookup, "GRID_CREDIT_PRICE_EUR_PER_KG", "0.025", |text| parse_scaled_decimal(text, 12))?;
        let node_share_percent = read(&lookup, "GRID_NODE_SHARE_PERCENT", "70", integer_in(0, 100))?;
        let proof_difficulty = read(&lookup, "GRID_PROOF_DIFFICULTY", "8", integer_in(0, i64::from(MAX_DIFFICULTY)))?;
        let default_watts = format!("{}", DEFAULT_MAX_MILLIWATTS_PER_CORE as f64 / 1000.0);
        let max_milliwatts_per_core = read(&lookup, "GRID_MAX_WATTS_PER_CORE", &default_watts, |text| {
            let milliwatts = parse_scaled_decimal(text, 3)?;
            if milliwatts == 0 { Err("must be above 0".to_owned()) } else { Ok(milliwatts) }
        })?;
        let default_zone =
            read(&lookup, "GRID_DEFAULT_ZONE", "BE", |text| Zone::parse(text).map_err(|error| error.reason))?;
        let mut zones = read(&lookup, "GRID_ZONES", "BE,DE,FR", parse_zones)?;
        if !zones.contains(&default_zone) {
            zones.push(default_zone.clone());
        }
        let cells = read(&lookup, "GRID_CELLS", CellName::DEFAULT, |text| Cells::parse(text, &default_zone))?;
        if let Some(cell) = cells.iter().find(|cell| !zones.contains(&cell.zone)) {
            let known: Vec<&str> = zones.iter().map(Zone::as_str).collect();
            return Err(SettingsError {
                variable: "GRID_CELLS",
                reason: format!(
                    "cell {} is in zone {}, which GRID_ZONES ({}) does not name",
                    cell.name,
                    cell.zone,
                    known.join(",")
                ),
            });
        }
        let keys = keys.cell_keys(&cells.default_cell().name);
        Ok(Self {
            keys,
            cells,
            node_ttl_ms,
            zones,
            default_zone,
            carbon: CarbonPolicy { grid_intensity_mg_per_kwh, price_pico_eur_per_kg, node_share_percent },
            proof_difficulty,
            max_milliwatts_per_core,
        })
    }
}

/// Where Redis is: `REDIS_CLUSTER_NODES` (`host:port,...`, a Redis Cluster) when set, else the
/// server at `REDIS_URL`.
#[cfg(feature = "redis")]
pub fn redis_target(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<crate::wire::connection::Target, SettingsError> {
    let url = read(lookup, "REDIS_URL", "redis://127.0.0.1:6379", |text| Ok(text.to_owned()))?;
    let nodes = lookup("REDIS_CLUSTER_NODES");
    crate::wire::connection::Target::from_settings(&url, nodes.as_deref())
        .map_err(|reason| SettingsError { variable: "REDIS_CLUSTER_NODES", reason })
}

impl GridSettings {
    /// These settings seen from one of the grid's cells: its keys (under its hash tag) are the
    /// keys, and [`Self::cell`] is it.
    pub fn for_cell(&self, cell: &CellName) -> Self {
        Self { keys: self.keys.cell_keys(cell), ..self.clone() }
    }

    /// The cell these settings are seen from (the default cell unless [`Self::for_cell`] chose
    /// another).
    pub fn cell(&self) -> &crate::cells::Cell {
        self.cells.get(self.keys.cell()).unwrap_or_else(|| self.cells.default_cell())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_are_the_readme_figures() {
        let settings = GridSettings::default();
        assert_eq!(settings.keys.namespace(), "grid");
        assert_eq!(settings.keys.tag(), "{grid:main}");
        assert_eq!(settings.cells.len(), 1);
        assert_eq!(settings.cells.default_cell().zone.as_str(), "BE");
        assert_eq!(settings.carbon, CarbonPolicy::default());
        assert_eq!(settings.max_milliwatts_per_core, 2_000);
        assert_eq!(settings.proof_difficulty, 8);
        assert_eq!(settings.default_zone.as_str(), "BE");
        let zones: Vec<&str> = settings.zones.iter().map(Zone::as_str).collect();
        assert_eq!(zones, ["BE", "DE", "FR"]);
    }

    #[test]
    fn the_default_zone_is_always_a_known_zone() {
        let map: HashMap<&str, &str> = [("GRID_ZONES", "FR"), ("GRID_DEFAULT_ZONE", "NL")].into();
        let settings = GridSettings::from_lookup(|name| map.get(name).map(|value| value.to_string())).unwrap();
        let zones: Vec<&str> = settings.zones.iter().map(Zone::as_str).collect();
        assert_eq!(zones, ["FR", "NL"]);
        let map: HashMap<&str, &str> = [("GRID_DEFAULT_ZONE", "be")].into();
        let error = GridSettings::from_lookup(|name| map.get(name).map(|value| value.to_string())).unwrap_err();
        assert_eq!(error.variable, "GRID_DEFAULT_ZONE");
    }

    #[test]
    fn cells_are_named_with_known_zones_and_the_first_is_the_default() {
        let map: HashMap<&str, &str> = [("GRID_CELLS", "be-north:BE,fr:FR"), ("GRID_NAMESPACE", "g")].into();
        let settings = GridSettings::from_lookup(|name| map.get(name).map(|value| value.to_string())).unwrap();
        assert_eq!(settings.cells.len(), 2);
        assert_eq!(settings.keys.commands(), "{g:be-north}:commands");
        let fr = CellName::parse("fr").unwrap();
        assert_eq!(settings.cell().name.as_str(), "be-north", "seen from the default cell");
        assert_eq!(settings.for_cell(&fr).keys.commands(), "{g:fr}:commands");
        assert_eq!(settings.for_cell(&fr).cell().zone.as_str(), "FR");
        assert_eq!(settings.cells.position(&fr), Some(1));
        assert_eq!(settings.cells.nth(1).map(|cell| cell.zone.as_str()), Some("FR"));
        let map: HashMap<&str, &str> = [("GRID_CELLS", "fr:FR"), ("GRID_NAMESPACE", "g")].into();
        let settings = GridSettings::from_lookup(|name| map.get(name).map(|value| value.to_string())).unwrap();
        assert_eq!(settings.keys.tag(), "{g:fr}");
        let map: HashMap<&str, &str> = [("GRID_CELLS", "nl:NL")].into();
        let error = GridSettings::from_lookup(|name| map.get(name).map(|value| value.to_string())).unwrap_err();
        assert_eq!(error.variable, "GRID_CELLS");
        assert!(error.reason.contains("NL"), "{error}");
        let map: HashMap<&str, &str> = [("GRID_CELLS", "A:BE")].into();
        let error = GridSettings::from_lookup(|name| map.get(name).map(|value| value.to_string())).unwrap_err();
        assert_eq!(error.variable, "GRID_CELLS");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let map: HashMap<&str, &str> = [("GRID_INTENSITY_KG_PER_KWH", "lots")].into();
        let error = GridSettings::from_lookup(|name| map.get(name).map(|value| value.to_string())).unwrap_err();
        assert_eq!(error.variable, "GRID_INTENSITY_KG_PER_KWH");
        let map: HashMap<&str, &str> = [("GRID_PROOF_DIFFICULTY", "99")].into();
        let error = GridSettings::from_lookup(|name| map.get(name).map(|value| value.to_string())).unwrap_err();
        assert_eq!(error.variable, "GRID_PROOF_DIFFICULTY");
    }
}
