//! The orchestrator's settings, from environment variables, checked at start.

use grid_shared::settings::{GridSettings, SettingsError, integer_in, read};

#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    pub database_url: String,
    /// `REDIS_CLUSTER_NODES` (a Redis Cluster) when set, else the server at `REDIS_URL`.
    pub redis: grid_shared::wire::connection::Target,
    pub grid: GridSettings,
    /// The cells this process writes, each under its own lease (`GRID_WRITER_CELLS`: `*`, every
    /// cell of `GRID_CELLS`, the default; or a list of them). For each, it is the writer or a
    /// standby, independently of the others.
    pub writer_cells: Vec<grid_shared::cells::CellName>,
    /// This process's name: in the consumer group, on its assignments and in the `writer` row;
    /// unique per process (`GRID_CONSUMER_NAME`).
    pub consumer_name: String,
    /// Entries read per stream and XREADGROUP, so the most messages one batch applies
    /// (`GRID_BATCH_SIZE`).
    pub batch_size: usize,
    /// `/healthz` and `/readyz` (role and epoch) listen here (`GRID_ADMIN_LISTEN`; `off` for none).
    pub admin_listen: Option<std::net::SocketAddr>,
    /// About how many events `{ns}:events` keeps (`GRID_EVENTS_STREAM_MAXLEN`); PostgreSQL
    /// keeps them all.
    pub events_stream_maxlen: usize,
    /// A block of the proof chain closes when it holds this many leaves
    /// (`GRID_BLOCK_MAX_LEAVES`) or when its first leaf is this old (`GRID_SEAL_INTERVAL_MS`).
    pub block_max_leaves: usize,
    pub seal_interval_ms: i64,
    /// A fault to inject, for tests only (`GRID_FAULT_INJECTION`).
    pub fault: Option<Fault>,
    /// Deliveries after which an entry that keeps failing goes to the dead-letter stream.
    pub max_deliveries: usize,
    /// Attempts after which a task that keeps failing on nodes is failed for good.
    pub max_attempts: i32,
    /// Fewest distinct participants a group task may have (k-anonymity); never below 5.
    pub k_anonymity_min: usize,
    /// How often the scheduler and the housekeeping run when nothing wakes them.
    pub tick_ms: u64,
    /// How long a task is expected to run, for the solar-deferral bound (`GRID_EXPECTED_RUNTIME_MS`).
    pub expected_runtime_ms: i64,
    /// How long a node has to start an assigned task before it is taken back (`GRID_START_LEASE_MS`).
    pub start_lease_ms: i64,
    /// The first requeue waits this long, doubling with each attempt (`GRID_REQUEUE_BACKOFF_MS`).
    pub requeue_backoff_ms: i64,
    /// Result validation: see [`Validation`].
    pub validation: Validation,
    /// Where carbon intensity comes from: see [`crate::signals`].
    pub signals: crate::signals::SignalSettings,
    /// How a deferrable task without sun waits (`GRID_DEFERRAL`, `GRID_DEFERRAL_MIN_SAVING_PERCENT`).
    pub deferral: Deferral,
    /// What a task's Software Carbon Intensity takes besides the grid's intensity.
    pub sci: SciSettings,
}

/// The factors of each task's SCI (see `grid_shared::carbon::Sci`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SciSettings {
    /// The panels' own life-cycle intensity, mg CO₂e/kWh (`GRID_SOLAR_INTENSITY_KG_PER_KWH`,
    /// 0.041: IPCC AR5 WGIII Annex III, median of rooftop PV).
    pub solar_intensity_mg_per_kwh: i64,
    /// The embodied emissions of a node that declares none, g CO₂e (`GRID_EMBODIED_KG_CO2E`, 10).
    pub default_embodied_g: i64,
    /// Over how long a node's embodied emissions are spread (`GRID_EMBODIED_LIFETIME_YEARS`, 5).
    pub lifetime_ms: i64,
}

/// How a deferrable task that finds no node in the sun waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// `solar`: it waits for a node in the sun until the end of its window, then runs anywhere.
    Solar,
    /// `carbon`: as `solar`, but it runs on the grid in the hour of its window the forecast
    /// expects to be cleanest (when that hour is at least `min_saving_percent` cleaner than the
    /// present one it waits for it; see [`crate::scheduler::carbon`]).
    Carbon { min_saving_percent: u8 },
}

/// A fault the writer injects on purpose, so that tests can crash it at a chosen point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `abort-after-commit:N`: the process aborts after its N-th commit of a batch with
    /// messages, before publishing and acknowledging it.
    AbortAfterCommit(u64),
}

impl Fault {
    pub fn parse(text: &str) -> Result<Option<Self>, String> {
        if text.is_empty() || text == "none" {
            return Ok(None);
        }
        let count = text
            .strip_prefix("abort-after-commit:")
            .and_then(|count| count.parse::<u64>().ok())
            .filter(|count| *count >= 1)
            .ok_or_else(|| format!("{text:?} is not a known fault (abort-after-commit:N, N >= 1)"))?;
        Ok(Some(Self::AbortAfterCommit(count)))
    }
}

/// Adaptive result validation (as in BOINC): an untrusted node's results are checked by a
/// replica on another owner's node; a trusted node's at a sampled rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validation {
    /// Consecutive agreeing results after which a node is trusted (`GRID_TRUST_THRESHOLD`; 0:
    /// every node is trusted from the start).
    pub trust_threshold: u32,
    /// Share of a trusted node's single-replica results checked, in parts per million
    /// (`GRID_SPOT_CHECK_PPM`).
    pub spot_check_ppm: u32,
    /// Replicas sent beyond the requested ones when results disagree, before the task fails
    /// with `no_quorum` (`GRID_EXTRA_REPLICAS`).
    pub extra_replicas: u8,
}

/// `GRID_WRITER_CELLS`: `*` (every cell of `GRID_CELLS`) or a comma-separated list of them, each
/// once.
fn writer_cells(grid: &GridSettings, text: &str) -> Result<Vec<grid_shared::cells::CellName>, String> {
    if text.trim() == "*" {
        return Ok(grid.cells.iter().map(|cell| cell.name.clone()).collect());
    }
    let known = || grid.cells.iter().map(|cell| cell.name.as_str()).collect::<Vec<_>>().join(", ");
    let mut cells = Vec::new();
    for name in text.split(',').map(str::trim) {
        let cell = grid_shared::cells::CellName::parse(name).map_err(|reason| format!("{name:?}: {reason}"))?;
        if grid.cells.get(&cell).is_none() {
            return Err(format!("{cell} is not a cell of GRID_CELLS ({})", known()));
        }
        if cells.contains(&cell) {
            return Err(format!("{cell} is named twice"));
        }
        cells.push(cell);
    }
    Ok(cells)
}

impl OrchestratorConfig {
    /// This configuration as one cell's writer sees it: the cell's keys (see
    /// [`GridSettings::for_cell`]).
    pub fn for_cell(&self, cell: &grid_shared::cells::CellName) -> Self {
        Self { grid: self.grid.for_cell(cell), ..self.clone() }
    }

    pub fn scheduling_policy(&self) -> crate::scheduler::Policy {
        crate::scheduler::Policy {
            watts_per_core: self.grid.max_milliwatts_per_core as f64 / 1000.0,
            expected_runtime: chrono::Duration::milliseconds(self.expected_runtime_ms),
        }
    }

    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let grid = GridSettings::from_lookup(&lookup)?;
        let writer_cells = read(&lookup, "GRID_WRITER_CELLS", "*", |text| writer_cells(&grid, text))?;
        let required = |variable: &'static str| {
            lookup(variable)
                .filter(|value| !value.trim().is_empty())
                .ok_or(SettingsError { variable, reason: "is required".to_owned() })
        };
        let default_consumer = format!("orchestrator-{}", uuid::Uuid::new_v4().simple());
        Ok(Self {
            database_url: required("DATABASE_URL")?,
            redis: grid_shared::settings::redis_target(&lookup)?,
            consumer_name: read(&lookup, "GRID_CONSUMER_NAME", &default_consumer, |text| {
                if text.is_empty() || text.len() > 100 {
                    Err("must be 1 to 100 characters".to_owned())
                } else {
                    Ok(text.to_owned())
                }
            })?,
            batch_size: read(&lookup, "GRID_BATCH_SIZE", "1000", integer_in(1, 10_000))?,
            admin_listen: read(&lookup, "GRID_ADMIN_LISTEN", "127.0.0.1:8091", |text| {
                if text == "off" {
                    return Ok(None);
                }
                text.parse().map(Some).map_err(|_| format!("{text:?} is not an address like 127.0.0.1:8091, or off"))
            })?,
            events_stream_maxlen: read(&lookup, "GRID_EVENTS_STREAM_MAXLEN", "20000", integer_in(100, 10_000_000))?,
            fault: read(&lookup, "GRID_FAULT_INJECTION", "none", Fault::parse)?,
            block_max_leaves: read(&lookup, "GRID_BLOCK_MAX_LEAVES", "2000", integer_in(1, 100_000))?,
            seal_interval_ms: read(&lookup, "GRID_SEAL_INTERVAL_MS", "250", integer_in(1, 60_000))?,
            max_deliveries: read(&lookup, "GRID_MAX_DELIVERIES", "5", integer_in(1, 1_000))?,
            max_attempts: read(&lookup, "GRID_MAX_ATTEMPTS", "3", integer_in(1, 100))?,
            k_anonymity_min: read(&lookup, "GRID_K_ANONYMITY_MIN", "5", integer_in(5, 10_000))?,
            tick_ms: read(&lookup, "GRID_TICK_MS", "200", integer_in(10, 60_000))?,
            expected_runtime_ms: read(&lookup, "GRID_EXPECTED_RUNTIME_MS", "60000", integer_in(1, 86_400_000))?,
            start_lease_ms: read(&lookup, "GRID_START_LEASE_MS", "30000", integer_in(100, 86_400_000))?,
            requeue_backoff_ms: read(&lookup, "GRID_REQUEUE_BACKOFF_MS", "500", integer_in(0, 60_000))?,
            validation: Validation {
                trust_threshold: read(&lookup, "GRID_TRUST_THRESHOLD", "3", integer_in(0, 1_000_000))?,
                spot_check_ppm: read(&lookup, "GRID_SPOT_CHECK_PPM", "50000", integer_in(0, 1_000_000))?,
                extra_replicas: read(&lookup, "GRID_EXTRA_REPLICAS", "2", integer_in(0, 5))?,
            },
            signals: crate::signals::SignalSettings::from_lookup(&lookup, grid.carbon.grid_intensity_mg_per_kwh)?,
            sci: SciSettings {
                solar_intensity_mg_per_kwh: read(&lookup, "GRID_SOLAR_INTENSITY_KG_PER_KWH", "0.041", |text| {
                    grid_shared::carbon::parse_scaled_decimal(text, 6)
                })?,
                default_embodied_g: read(&lookup, "GRID_EMBODIED_KG_CO2E", "10", |text| {
                    let grams = grid_shared::carbon::parse_scaled_decimal(text, 3)?;
                    if (1..=10_000_000).contains(&grams) {
                        Ok(grams)
                    } else {
                        Err("must be above 0 and at most 10000".into())
                    }
                })?,
                lifetime_ms: read(&lookup, "GRID_EMBODIED_LIFETIME_YEARS", "5", integer_in::<i64>(1, 50))?
                    * grid_shared::carbon::MS_PER_YEAR,
            },
            writer_cells,
            deferral: {
                let min_saving_percent = read(&lookup, "GRID_DEFERRAL_MIN_SAVING_PERCENT", "5", integer_in(0, 99))?;
                read(&lookup, "GRID_DEFERRAL", "carbon", |text| match text {
                    "solar" => Ok(Deferral::Solar),
                    "carbon" => Ok(Deferral::Carbon { min_saving_percent }),
                    other => Err(format!("{other:?} is neither solar nor carbon")),
                })?
            },
            grid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<OrchestratorConfig, SettingsError> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
        OrchestratorConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn an_orchestrator_writes_every_cell_or_those_it_names() {
        let base = [("DATABASE_URL", "postgres://x"), ("GRID_CELLS", "a:BE,b:BE,c:BE")];
        let every = config(&base).unwrap();
        let names =
            |config: &OrchestratorConfig| config.writer_cells.iter().map(|cell| cell.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&every), ["a", "b", "c"]);
        let some = config(&[base[0], base[1], ("GRID_WRITER_CELLS", "c, a")]).unwrap();
        assert_eq!(names(&some), ["c", "a"]);
        assert_eq!(some.for_cell(&some.writer_cells[0]).grid.keys.commands(), "{grid:c}:commands");
        for (bad, says) in [("d", "not a cell of GRID_CELLS (a, b, c)"), ("a,a", "named twice"), ("A", "\"A\"")] {
            let error = config(&[base[0], base[1], ("GRID_WRITER_CELLS", bad)]).unwrap_err();
            assert_eq!(error.variable, "GRID_WRITER_CELLS");
            assert!(error.reason.contains(says), "{bad}: {error}");
        }
    }
}
