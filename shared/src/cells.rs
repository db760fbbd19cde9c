//! The grid's cells (DESIGN §11): a fixed list, named in `GRID_CELLS` as `name:ZONE` pairs
//! (`be-north:BE,be-south:BE,fr:FR`). The first is the default cell. Without `GRID_CELLS` the grid
//! has one cell, `main`, in the default zone: the grid of §9.

use serde::{Deserialize, Serialize};

use crate::signals::Zone;

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
