//! The grid's cells (DESIGN §11): a fixed list, named in `GRID_CELLS` as `name:ZONE` pairs
//! (`be-north:BE,be-south:BE,fr:FR`). The first is the default cell. Without `GRID_CELLS` the grid
//! has one cell, `main`, in the default zone: the grid of §9.

use serde::{Deserialize, Serialize};

use crate::signals::Zone;
use crate::wire::summary::CellSummary;

/// A cell's name: 1 to 32 characters of `a-z`, `0-9` and `-`, starting with a letter or digit.
/// It appears in Redis keys (the hash tag `{<ns>:<cell>}`) and in PostgreSQL (`cell_id`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CellName(String);

impl CellName {
    pub const MAX_LEN: usize = 32;
    /// The cell of a grid that names none.
    pub const DEFAULT: &'static str = "main";

    pub fn parse(raw: &str) -> Result<Self, String> {
        let text = raw.trim();
        let valid = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && !text.starts_with('-')
            && text.bytes().all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'-'));
        if !valid {
            return Err(format!(
                "cell name {text:?} must be 1 to 32 characters of a-z, 0-9 and '-', not starting with '-'"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CellName {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl std::fmt::Display for CellName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for CellName {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<CellName> for String {
    fn from(cell: CellName) -> String {
        cell.0
    }
}

/// A cell and the carbon zone its nodes are in by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub name: CellName,
    pub zone: Zone,
}

/// The grid's cells, the default first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cells(Vec<Cell>);

impl Cells {
    /// The one cell of a grid without `GRID_CELLS`.
    pub fn single(zone: Zone) -> Self {
        Self(vec![Cell { name: CellName::default(), zone }])
    }

    /// Parses `name:ZONE,name:ZONE,...`; a name without a zone takes `default_zone`. Names are
    /// unique; at least one cell.
    pub fn parse(text: &str, default_zone: &Zone) -> Result<Self, String> {
        let mut cells: Vec<Cell> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|part| !part.is_empty()) {
            let (name, zone) = match part.split_once(':') {
                Some((name, zone)) => {
                    (CellName::parse(name)?, Zone::parse(zone).map_err(|error| format!("{part:?}: {}", error.reason))?)
                }
                None => (CellName::parse(part)?, default_zone.clone()),
            };
            if cells.iter().any(|cell| cell.name == name) {
                return Err(format!("cell {name} is named twice"));
            }
            cells.push(Cell { name, zone });
        }
        if cells.is_empty() {
            return Err("must name at least one cell, such as main:BE".to_owned());
        }
        Ok(Self(cells))
    }

    pub fn default_cell(&self) -> &Cell {
        &self.0[0]
    }

    pub fn get(&self, name: &CellName) -> Option<&Cell> {
        self.0.iter().find(|cell| &cell.name == name)
    }

    /// A cell's place in the list (0: the default).
    pub fn position(&self, name: &CellName) -> Option<usize> {
        self.0.iter().position(|cell| &cell.name == name)
    }

    /// The cell at a place in the list.
    pub fn nth(&self, index: usize) -> Option<&Cell> {
        self.0.get(index)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Cell> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a task went to its cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellReason {
    /// The submission named it (data residency).
    Named,
    /// The grid has one cell.
    Only,
    /// The greenest of the cells with room (sun first, then the lowest grid intensity), the
    /// roomier of two drawn among the near-equals (within 10 %).
    GreenestWithRoom,
    /// No cell had room: the one with the shortest queue per free core.
    LeastLoaded,
    /// No cell published a summary lately: the default cell.
    NoSummary,
}

/// One cell as the choice saw it (from its writer's summary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellOption {
    pub cell: CellName,
    pub free_cores: u64,
    pub queued_tasks: u64,
    pub sunny_nodes: u64,
    pub intensity_mg_per_kwh: i64,
}

/// Where a task goes and why, with what the choice saw: recorded in the submission and in the
/// task's first event (`TaskAccepted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellChoice {
    pub cell: CellName,
    pub reason: CellReason,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<CellOption>,
}

impl CellChoice {
    pub fn named(cell: CellName) -> Self {
        Self { cell, reason: CellReason::Named, options: Vec::new() }
    }
}

/// A summary older than this is not used to choose (its writer may be gone).
pub const SUMMARY_FRESH_MS: i64 = 2_000;
/// Cells whose grid intensity is within this many percent of the best are near-equals.
pub const NEAR_EQUAL_PERCENT: i64 = 10;

/// Chooses the cell of a task that names none (DESIGN §11): among the cells whose summary is
/// fresh and that have room (more free cores than queued tasks), the greenest (a cell with a
/// node in the sun first, then the lowest intensity); among the near-equals, the roomier of two
/// drawn with `draw` (the power of two choices). Without room anywhere, the shortest queue per
/// free core; without a fresh summary, the default cell.
pub fn choose(cells: &Cells, summaries: &[(CellName, CellSummary)], now_ms: i64, draw: u64) -> CellChoice {
    if cells.len() == 1 {
        return CellChoice { cell: cells.default_cell().name.clone(), reason: CellReason::Only, options: Vec::new() };
    }
    let options: Vec<CellOption> = summaries
        .iter()
        .filter(|(cell, summary)| cells.get(cell).is_some() && now_ms - summary.at_ms <= SUMMARY_FRESH_MS)
        .map(|(cell, summary)| CellOption {
            cell: cell.clone(),
            free_cores: summary.free_cores,
            queued_tasks: summary.queued_tasks,
            sunny_nodes: summary.sunny_nodes,
            intensity_mg_per_kwh: summary.intensity_mg_per_kwh,
        })
        .collect();
    let Some(first) = options.first() else {
        return CellChoice { cell: cells.default_cell().name.clone(), reason: CellReason::NoSummary, options };
    };
    let room = |option: &CellOption| option.free_cores.saturating_sub(option.queued_tasks);
    let with_room: Vec<&CellOption> = options.iter().filter(|option| room(option) > 0).collect();
    if with_room.is_empty() {
        let load = |option: &CellOption| (option.queued_tasks as f64 + 1.0) / (option.free_cores as f64 + 1.0);
        let least = options.iter().fold(first, |best, option| if load(option) < load(best) { option } else { best });
        return CellChoice { cell: least.cell.clone(), reason: CellReason::LeastLoaded, options };
    }
    let greenness = |option: &CellOption| (option.sunny_nodes == 0, option.intensity_mg_per_kwh);
    let best = with_room.iter().map(|option| greenness(option)).min().unwrap_or((true, i64::MAX));
    let near: Vec<&CellOption> = with_room
        .into_iter()
        .filter(|option| {
            let (shaded, intensity) = greenness(option);
            shaded == best.0 && intensity.saturating_mul(100) <= best.1.saturating_mul(100 + NEAR_EQUAL_PERCENT)
        })
        .collect();
    // Two distinct near-equals drawn (one if it is alone), the roomier kept.
    let n = near.len() as u64;
    let i = draw % n;
    let j = if n > 1 { (i + 1 + (draw / n) % (n - 1)) % n } else { i };
    let (one, other) = (near[i as usize], near[j as usize]);
    let chosen = if room(other) > room(one) { other.cell.clone() } else { one.cell.clone() };
    CellChoice { cell: chosen, reason: CellReason::GreenestWithRoom, options }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be() -> Zone {
        Zone::parse("BE").unwrap()
    }

    #[test]
    fn cells_parse_with_their_zones_and_the_first_is_the_default() {
        let cells = Cells::parse("be-north:BE, be-south:BE,fr:FR", &be()).unwrap();
        let names: Vec<&str> = cells.iter().map(|cell| cell.name.as_str()).collect();
        assert_eq!(names, ["be-north", "be-south", "fr"]);
        assert_eq!(cells.default_cell().name.as_str(), "be-north");
        assert_eq!(cells.get(&CellName::parse("fr").unwrap()).unwrap().zone.as_str(), "FR");
        let single = Cells::parse("main", &be()).unwrap();
        assert_eq!(single, Cells::single(be()));
    }

    fn summary(free: u64, queued: u64, sunny: u64, intensity: i64, at_ms: i64) -> CellSummary {
        CellSummary {
            epoch: 1,
            holder: "o".to_owned(),
            at_ms,
            live_nodes: free,
            free_cores: free,
            sunny_nodes: sunny,
            solar_surplus_watts: 0.0,
            queued_tasks: queued,
            open_tasks: queued,
            zone: be(),
            intensity_mg_per_kwh: intensity,
            intensity_kind: crate::signals::IntensityKind::Average,
            intensity_source: "file".to_owned(),
        }
    }

    #[test]
    fn a_task_goes_to_the_greenest_cell_with_room_and_near_equals_share_by_room() {
        let cells = Cells::parse("night:BE,sunny:FR,dirty:DE", &be()).unwrap();
        let name = |text: &str| CellName::parse(text).unwrap();
        let now = 10_000;
        // The cell in the sun wins over a cleaner grid at night.
        let summaries = [
            (name("night"), summary(8, 0, 0, 50_000, now)),
            (name("sunny"), summary(4, 1, 2, 150_000, now)),
            (name("dirty"), summary(8, 0, 0, 400_000, now)),
        ];
        for draw in 0..20 {
            let choice = choose(&cells, &summaries, now, draw);
            assert_eq!((choice.cell.as_str(), choice.reason), ("sunny", CellReason::GreenestWithRoom));
            assert_eq!(choice.options.len(), 3, "the inputs are recorded");
        }
        // Without sun: the lowest intensity; near-equals share by their room.
        let summaries = [
            (name("night"), summary(8, 0, 0, 100_000, now)),
            (name("sunny"), summary(2, 1, 0, 105_000, now)),
            (name("dirty"), summary(8, 0, 0, 400_000, now)),
        ];
        let chosen: Vec<String> = (0..20).map(|draw| choose(&cells, &summaries, now, draw).cell.to_string()).collect();
        assert!(chosen.iter().all(|cell| cell != "dirty"), "{chosen:?}");
        assert!(
            chosen.iter().filter(|cell| *cell == "night").count() >= 10,
            "the roomier near-equal wins its draws: {chosen:?}"
        );
        // A full cell is passed over; no room anywhere: the shortest queue per free core.
        let summaries = [
            (name("night"), summary(2, 2, 0, 50_000, now)),
            (name("sunny"), summary(4, 9, 1, 50_000, now)),
            (name("dirty"), summary(4, 1, 0, 400_000, now)),
        ];
        assert_eq!(choose(&cells, &summaries, now, 3).cell.as_str(), "dirty");
        let summaries =
            [(name("night"), summary(1, 4, 0, 50_000, now)), (name("sunny"), summary(3, 4, 1, 50_000, now))];
        let choice = choose(&cells, &summaries, now, 3);
        assert_eq!((choice.cell.as_str(), choice.reason), ("sunny", CellReason::LeastLoaded));
        // Stale summaries are not used: the default cell.
        let summaries = [(name("sunny"), summary(8, 0, 1, 1, now - 5_000))];
        let choice = choose(&cells, &summaries, now, 3);
        assert_eq!((choice.cell.as_str(), choice.reason), ("night", CellReason::NoSummary));
        // One cell: that one, nothing read.
        let one = Cells::single(be());
        assert_eq!(choose(&one, &[], now, 0).reason, CellReason::Only);
    }

    #[test]
    fn bad_cell_lists_say_what_is_wrong() {
        for (text, says) in [
            ("", "at least one"),
            ("a:BE,a:FR", "named twice"),
            ("North:BE", "a-z"),
            ("-x:BE", "not starting"),
            ("x:be", "zone id"),
            ("a{b}:BE", "a-z"),
        ] {
            let error = Cells::parse(text, &be()).unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
        assert!(CellName::parse(&"a".repeat(33)).is_err());
    }
}
