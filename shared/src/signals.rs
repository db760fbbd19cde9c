//! Carbon signals: the intensity of a zone's grid at an hour, and where that figure came from.
//!
//! A credit is worth the grid emissions its solar energy displaced, so it needs the intensity
//! of the node's zone at the hour of the work (DESIGN §4, carbon signals). Intensities come
//! from a chain of sources, tried in order, and the first that knows the zone and hour answers:
//!
//! 1. a file of hourly values per zone, in the columns of the Electricity Maps data portal
//!    ([`parse_portal_csv`]); the project bundles one synthetic year ([`BUNDLED_CSV`]);
//! 2. a live HTTP source speaking the Electricity Maps v3 or WattTime v3 shapes
//!    ([`parse_electricity_maps_latest`], [`parse_electricity_maps_forecast`],
//!    [`parse_watttime`]), fetched off the writer's decide path;
//! 3. the fixed factor of the configuration (`GRID_INTENSITY_KG_PER_KWH`), which always answers.
//!
//! The chain is a [`SignalBook`], a value handed to the writer's decisions as data: looking a
//! signal up never waits on the network, and the same book gives the same answer every time.
//! Every answer is a [`Signal`] that names its zone, hour, intensity (integer mg CO₂ per kWh),
//! kind (average or marginal) and source, and the credit records all of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::FieldError;

/// One synthetic year (2026) of hourly intensity for BE, DE and FR, in the portal's columns;
/// see `shared/data/synthesize_intensity.py` for how it is made. Not measurements.
pub const BUNDLED_CSV: &str = include_str!("../data/carbon-intensity-synthetic-2026.csv");
/// The name the bundled file's answers are recorded under.
pub const BUNDLED_NAME: &str = "carbon-intensity-synthetic-2026.csv";

/// The highest intensity a source may answer, in mg CO₂/kWh (2 kg/kWh: above any grid's
/// average, lignite included). A larger, negative or non-finite figure is nonsense.
pub const MAX_INTENSITY_MG_PER_KWH: i64 = 2_000_000;

/// Micrograms in a pound (exact, by the international definition of the pound).
const MICROGRAMS_PER_POUND: i64 = 453_592_370;

/// A carbon zone, as Electricity Maps names it: `BE`, `FR`, `DE`, `US-CAL-CISO`, `DK-DK1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Zone(String);

impl Zone {
    pub const MAX_LEN: usize = 32;

    /// Uppercase letters, digits and `-`, starting with a letter, at most 32 characters.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let text = raw.trim();
        let valid = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text.starts_with(|c: char| c.is_ascii_uppercase())
            && text.bytes().all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'-');
        if !valid {
            return Err(FieldError::new(
                "zone",
                "must be an Electricity Maps zone id: uppercase letters, digits and '-', such as BE, FR or DE",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Zone {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text).map_err(|error| error.reason)
    }
}

impl From<Zone> for String {
    fn from(zone: Zone) -> String {
        zone.0
    }
}

/// Parses a list of zones such as `BE,FR,DE` (a setting).
pub fn parse_zones(text: &str) -> Result<Vec<Zone>, String> {
    let mut zones: Vec<Zone> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        let zone = Zone::parse(part).map_err(|error| format!("{part:?}: {}", error.reason))?;
        if !zones.contains(&zone) {
            zones.push(zone);
        }
    }
    if zones.is_empty() {
        return Err("must name at least one zone".to_owned());
    }
    Ok(zones)
}

/// What an intensity measures: the average of the zone's generation mix, or the marginal
/// plant's (what one more kWh would emit, as WattTime's MOER).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntensityKind {
    Average,
    Marginal,
}

impl IntensityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Average => "average",
            Self::Marginal => "marginal",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "average" => Some(Self::Average),
            "marginal" => Some(Self::Marginal),
            _ => None,
        }
    }
}

/// Which column of a portal file, or which factor of a live source, is used: direct
/// (combustion) emissions or the life-cycle figure (Electricity Maps' default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Basis {
    Direct,
    Lifecycle,
}

impl Basis {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "direct" => Ok(Self::Direct),
            "lifecycle" => Ok(Self::Lifecycle),
            other => Err(format!("{other:?} is neither \"direct\" nor \"lifecycle\"")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Lifecycle => "lifecycle",
        }
    }
}

/// Where a signal came from, as recorded with a credit and in its proof leaf: lowercase
/// letters, digits and `.:_/@+-`, at most 80 characters (never `|`, the leaf's separator).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceName(String);

impl SourceName {
    pub const MAX_LEN: usize = 80;

    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b".:_/@+-".contains(&byte));
        if !valid {
            return Err(format!(
                "{text:?} is not a source name (lowercase letters, digits and .:_/@+-, at most {} characters)",
                Self::MAX_LEN
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The fixed factor of the configuration.
    pub fn fixed() -> Self {
        Self("fixed".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SourceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SourceName {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<SourceName> for String {
    fn from(source: SourceName) -> String {
        source.0
    }
}

/// The intensity a credit used: zone, hour (its start, UTC), intensity, kind and source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signal {
    pub zone: Zone,
    pub hour: DateTime<Utc>,
    pub intensity_mg_per_kwh: i64,
    pub kind: IntensityKind,
    pub source: SourceName,
}

/// The start of the UTC hour holding `at`.
pub fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = at.timestamp().div_euclid(3_600) * 3_600;
    DateTime::from_timestamp(seconds, 0).unwrap_or(at)
}

/// Hours since the Unix epoch: the key of an hourly series.
fn hour_index(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(3_600)
}

fn hour_at(index: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(index.saturating_mul(3_600), 0).unwrap_or_default()
}

/// Hourly intensities per zone from one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    source: SourceName,
    kind: IntensityKind,
    values: HashMap<Zone, BTreeMap<i64, i64>>,
    /// A "typical year" answers an hour it does not hold from the same month, day and hour of
    /// this year (29 February from the 28th), recording the source with a `+typical` suffix.
    typical_year: Option<i32>,
    typical_source: Option<SourceName>,
}

impl Layer {
    pub fn new(source: SourceName, kind: IntensityKind) -> Self {
        Self { source, kind, values: HashMap::new(), typical_year: None, typical_source: None }
    }

    /// Answers missing hours from the same hour of `year` (a bundled typical year).
    pub fn typical_of(mut self, year: i32) -> Self {
        self.typical_source = SourceName::parse(&format!("{}+typical-{year}", self.source)).ok();
        self.typical_year = Some(year);
        self
    }

    pub fn source(&self) -> &SourceName {
        &self.source
    }

    /// Records (or replaces) the intensity of `zone` in the hour holding `at`.
    pub fn insert(&mut self, zone: Zone, at: DateTime<Utc>, intensity_mg_per_kwh: i64) {
        self.values.entry(zone).or_default().insert(hour_index(at), intensity_mg_per_kwh);
    }

    /// Drops the hours before the one holding `at` (a live source's memory is bounded).
    pub fn forget_before(&mut self, at: DateTime<Utc>) {
        let first = hour_index(at);
        for series in self.values.values_mut() {
            *series = series.split_off(&first);
        }
    }

    /// How many hourly values it holds, over all zones.
    pub fn len(&self) -> usize {
        self.values.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.values.keys()
    }

    /// The first and last hours it holds for `zone`.
    pub fn span(&self, zone: &Zone) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let series = self.values.get(zone)?;
        Some((hour_at(*series.keys().next()?), hour_at(*series.keys().next_back()?)))
    }

    fn lookup(&self, zone: &Zone, hour: i64) -> Option<(i64, &SourceName)> {
        let series = self.values.get(zone)?;
        if let Some(value) = series.get(&hour) {
            return Some((*value, &self.source));
        }
        let year = self.typical_year?;
        let at = hour_at(hour);
        let day = if at.month() == 2 && at.day() == 29 { 28 } else { at.day() };
        let same = Utc.with_ymd_and_hms(year, at.month(), day, at.hour(), 0, 0).single()?;
        let value = series.get(&hour_index(same))?;
        Some((*value, self.typical_source.as_ref().unwrap_or(&self.source)))
    }
}

/// The chain of sources, tried in order, with the fixed factor last. Cheap to share (the
/// writer holds it behind an `Arc` and swaps it when the fetcher has news).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalBook {
    layers: Vec<Arc<Layer>>,
    fixed_mg_per_kwh: i64,
}

impl SignalBook {
    /// A book that answers the fixed factor for every zone and hour.
    pub fn fixed(fixed_mg_per_kwh: i64) -> Self {
        Self { layers: Vec::new(), fixed_mg_per_kwh }
    }

    /// Adds a source after those already in the chain.
    pub fn then(mut self, layer: impl Into<Arc<Layer>>) -> Self {
        self.layers.push(layer.into());
        self
    }

    pub fn layers(&self) -> &[Arc<Layer>] {
        &self.layers
    }

    /// Replaces the layer with the same source name (a live source's fresh answers), or adds it
    /// at `position` in the chain.
    pub fn replace(&mut self, layer: impl Into<Arc<Layer>>, position: usize) {
        let layer = layer.into();
        match self.layers.iter_mut().find(|existing| existing.source == layer.source) {
            Some(existing) => *existing = layer,
            None => self.layers.insert(position.min(self.layers.len()), layer),
        }
    }

    pub fn fixed_mg_per_kwh(&self) -> i64 {
        self.fixed_mg_per_kwh
    }

    /// The intensity of `zone` in the hour holding `at`: the first source that knows it, else
    /// the fixed factor.
    pub fn lookup(&self, zone: &Zone, at: DateTime<Utc>) -> Signal {
        let hour = hour_index(at);
        for layer in &self.layers {
            if let Some((intensity_mg_per_kwh, source)) = layer.lookup(zone, hour) {
                return Signal {
                    zone: zone.clone(),
                    hour: hour_at(hour),
                    intensity_mg_per_kwh,
                    kind: layer.kind,
                    source: source.clone(),
                };
            }
        }
        Signal {
            zone: zone.clone(),
            hour: hour_at(hour),
            intensity_mg_per_kwh: self.fixed_mg_per_kwh,
            kind: IntensityKind::Average,
            source: SourceName::fixed(),
        }
    }

    /// The expected intensity of `zone` for each hour from the one holding `from` to the one
    /// holding `until` (inclusive), as the chain answers it: a forecast where a source has one.
    pub fn hours(&self, zone: &Zone, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<Signal> {
        (hour_index(from)..=hour_index(until)).map(|hour| self.lookup(zone, hour_at(hour))).collect()
    }
}

/// Why a source's answer was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

fn nonsense(what: impl Into<String>) -> SourceError {
    SourceError(what.into())
}

/// Grams per kWh (a decimal from a file or a JSON number) as whole mg per kWh, refusing
/// nonsense (negative, not finite, above [`MAX_INTENSITY_MG_PER_KWH`]).
fn grams_to_mg(grams: f64) -> Result<i64, SourceError> {
    if !grams.is_finite() || grams < 0.0 {
        return Err(nonsense(format!("{grams} g/kWh is not an intensity")));
    }
    let mg = (grams * 1_000.0).round();
    if mg > MAX_INTENSITY_MG_PER_KWH as f64 {
        return Err(nonsense(format!("{grams} g/kWh is above {} g/kWh", MAX_INTENSITY_MG_PER_KWH / 1_000)));
    }
    Ok(mg as i64)
}

/// Splits one CSV line into fields (RFC 4180: fields may be quoted, `""` is a quote).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

fn parse_portal_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok().map(|naive| naive.and_utc())
}

pub const PORTAL_TIME: &str = "Datetime (UTC)";
pub const PORTAL_ZONE: &str = "Zone Id";
pub const PORTAL_DIRECT: &str = "Carbon Intensity gCO₂eq/kWh (direct)";
pub const PORTAL_LIFECYCLE: &str = "Carbon Intensity gCO₂eq/kWh (LCA)";

/// Reads a file in the columns of the Electricity Maps data portal (`Datetime (UTC)`,
/// `Zone Id`, `Carbon Intensity gCO₂eq/kWh (direct)`, `Carbon Intensity gCO₂eq/kWh (LCA)`;
/// other columns are ignored, in any order) into a layer of average intensities. A row without
/// a value in the chosen column is skipped; any other bad row refuses the file, naming its line.
pub fn parse_portal_csv(text: &str, source: SourceName, basis: Basis) -> Result<Layer, SourceError> {
    let mut lines = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| nonsense("the file is empty"))?;
    let header: Vec<String> = csv_fields(header.trim_start_matches('\u{feff}'));
    let column = |name: &str| {
        header
            .iter()
            .position(|field| field.trim() == name)
            .ok_or_else(|| nonsense(format!("the header has no {name:?} column")))
    };
    let (time, zone_column) = (column(PORTAL_TIME)?, column(PORTAL_ZONE)?);
    let value = column(match basis {
        Basis::Direct => PORTAL_DIRECT,
        Basis::Lifecycle => PORTAL_LIFECYCLE,
    })?;
    let mut layer = Layer::new(source, IntensityKind::Average);
    for (index, line) in lines {
        let number = index + 1;
        let fields = csv_fields(line);
        let field = |column: usize| fields.get(column).map(|field| field.trim()).unwrap_or("");
        let at = parse_portal_time(field(time))
            .ok_or_else(|| nonsense(format!("line {number}: {:?} is not a UTC date and time", field(time))))?;
        if at.minute() != 0 || at.second() != 0 || at.nanosecond() != 0 {
            return Err(nonsense(format!("line {number}: {at} is not the start of an hour")));
        }
        let zone = Zone::parse(field(zone_column))
            .map_err(|error| nonsense(format!("line {number}: {:?}: {}", field(zone_column), error.reason)))?;
        if field(value).is_empty() {
            continue;
        }
        let grams: f64 =
            field(value).parse().map_err(|_| nonsense(format!("line {number}: {:?} is not a number", field(value))))?;
        let mg = grams_to_mg(grams).map_err(|error| nonsense(format!("line {number}: {error}")))?;
        layer.insert(zone, at, mg);
    }
    if layer.is_empty() {
        return Err(nonsense("the file holds no intensity"));
    }
    Ok(layer)
}

/// The bundled synthetic year as a layer of life-cycle (or direct) averages, answering other
/// years from the same hour of 2026. Parsed once per process.
pub fn bundled_layer(basis: Basis) -> Arc<Layer> {
    fn parse(basis: Basis) -> Arc<Layer> {
        let name = format!("file:{BUNDLED_NAME}:{}", basis.as_str());
        let source = SourceName::parse(&name).unwrap_or_else(|_| SourceName::fixed());
        let layer = parse_portal_csv(BUNDLED_CSV, source.clone(), basis)
            .map(|layer| layer.typical_of(2026))
            .unwrap_or_else(|_| Layer::new(source, IntensityKind::Average));
        Arc::new(layer)
    }
    static LIFECYCLE: LazyLock<Arc<Layer>> = LazyLock::new(|| parse(Basis::Lifecycle));
    static DIRECT: LazyLock<Arc<Layer>> = LazyLock::new(|| parse(Basis::Direct));
    match basis {
        Basis::Lifecycle => LIFECYCLE.clone(),
        Basis::Direct => DIRECT.clone(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmPoint {
    carbon_intensity: Option<f64>,
    datetime: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmLatest {
    zone: String,
    carbon_intensity: Option<f64>,
    datetime: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmForecast {
    zone: String,
    forecast: Vec<EmPoint>,
}

fn expect_zone(answered: &str, asked: &Zone) -> Result<(), SourceError> {
    if answered != asked.as_str() {
        return Err(nonsense(format!("asked for zone {asked}, the answer is for {answered:?}")));
    }
    Ok(())
}

/// Electricity Maps v3 `GET /v3/carbon-intensity/latest?zone=Z`:
/// `{"zone":"DE","carbonIntensity":302,"datetime":"2019-05-21T00:00:00.000Z",...}` (g/kWh).
pub fn parse_electricity_maps_latest(body: &[u8], zone: &Zone) -> Result<(DateTime<Utc>, i64), SourceError> {
    let latest: EmLatest =
        serde_json::from_slice(body).map_err(|error| nonsense(format!("not an Electricity Maps answer: {error}")))?;
    expect_zone(&latest.zone, zone)?;
    let grams = latest.carbon_intensity.ok_or_else(|| nonsense("carbonIntensity is null"))?;
    Ok((hour_of(latest.datetime), grams_to_mg(grams)?))
}

/// Electricity Maps v3 `GET /v3/carbon-intensity/forecast?zone=Z`:
/// `{"zone":"DE","forecast":[{"carbonIntensity":304,"datetime":"..."}],...}`. Points without a
/// value are skipped; a point that is nonsense refuses the answer.
pub fn parse_electricity_maps_forecast(body: &[u8], zone: &Zone) -> Result<Vec<(DateTime<Utc>, i64)>, SourceError> {
    let forecast: EmForecast =
        serde_json::from_slice(body).map_err(|error| nonsense(format!("not an Electricity Maps forecast: {error}")))?;
    expect_zone(&forecast.zone, zone)?;
    let mut points = Vec::with_capacity(forecast.forecast.len());
    for point in forecast.forecast {
        if let Some(grams) = point.carbon_intensity {
            points.push((hour_of(point.datetime), grams_to_mg(grams)?));
        }
    }
    Ok(points)
}

#[derive(Deserialize)]
struct WtPoint {
    point_time: DateTime<Utc>,
    value: f64,
}

#[derive(Deserialize)]
struct WtMeta {
    units: String,
}

#[derive(Deserialize)]
struct WtAnswer {
    data: Vec<WtPoint>,
    meta: WtMeta,
}

/// WattTime v3 (`/v3/forecast`, `/v3/historical`): `{"data":[{"point_time":"...","value":870.3}],
/// "meta":{"units":"lbs_co2_per_mwh",...}}`, marginal emissions (MOER) in pounds of CO₂ per MWh,
/// usually every 5 minutes. Converted exactly (1 lb = 453.59237 g, so 1 lb/MWh = 453.59237
/// mg/kWh) and averaged per hour. Any other unit (a percentile) is refused.
pub fn parse_watttime(body: &[u8]) -> Result<Vec<(DateTime<Utc>, i64)>, SourceError> {
    let answer: WtAnswer =
        serde_json::from_slice(body).map_err(|error| nonsense(format!("not a WattTime answer: {error}")))?;
    if answer.meta.units != "lbs_co2_per_mwh" {
        return Err(nonsense(format!("units {:?}, not lbs_co2_per_mwh", answer.meta.units)));
    }
    let mut hours: BTreeMap<i64, (i128, i128)> = BTreeMap::new();
    for point in answer.data {
        if !point.value.is_finite() || point.value < 0.0 {
            return Err(nonsense(format!("{} lbs/MWh is not an intensity", point.value)));
        }
        // mg/kWh = lbs/MWh × 453,592.37 mg/lb ÷ 1,000 kWh/MWh, from thousandths of a pound.
        let milli_lbs = (point.value * 1_000.0).round() as i128;
        let mg = milli_lbs * i128::from(MICROGRAMS_PER_POUND) / 1_000_000_000;
        let sum = hours.entry(hour_index(point.point_time)).or_default();
        sum.0 += mg;
        sum.1 += 1;
    }
    let mut points = Vec::with_capacity(hours.len());
    for (hour, (sum, count)) in hours {
        let mean = i64::try_from(sum / count.max(1)).unwrap_or(i64::MAX);
        if mean > MAX_INTENSITY_MG_PER_KWH {
            return Err(nonsense(format!("{mean} mg/kWh is above {MAX_INTENSITY_MG_PER_KWH}")));
        }
        points.push((hour_at(hour), mean));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn zone(text: &str) -> Zone {
        Zone::parse(text).unwrap()
    }

    #[test]
    fn zones_are_electricity_maps_ids() {
        for good in ["BE", "FR", "DE", "US-CAL-CISO", "DK-DK1"] {
            assert_eq!(Zone::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "be", "1A", "B E", "BE|FR", &"A".repeat(33)] {
            assert!(Zone::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_zones("BE, FR,BE").unwrap(), vec![zone("BE"), zone("FR")]);
        assert!(parse_zones(" , ").is_err());
    }

    const PORTAL: &str = "\u{feff}Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,Data Source,Data Estimated,Data Estimation Method\n\
2024-01-01 00:00:00,Belgium,Belgium,BE,120.5,160.25,70.1,30.2,\"entsoe.eu, elia.be\",false,\n\
2024-01-01 01:00:00,Belgium,Belgium,BE,,170,70,30,entsoe.eu,true,TIME_SLICER_AVERAGE\n\
2024-01-01 00:00:00,Germany,Germany,DE,380,420.0004,50,45,entsoe.eu,false,\n";

    #[test]
    fn the_portal_columns_are_read_by_name_in_either_basis() {
        let source = SourceName::parse("file:portal.csv:lifecycle").unwrap();
        let book = SignalBook::fixed(180_000).then(parse_portal_csv(PORTAL, source, Basis::Lifecycle).unwrap());
        let be = book.lookup(&zone("BE"), at("2024-01-01T00:59:59Z"));
        assert_eq!(be.intensity_mg_per_kwh, 160_250);
        assert_eq!(be.hour, at("2024-01-01T00:00:00Z"));
        assert_eq!(be.kind, IntensityKind::Average);
        assert_eq!(be.source.as_str(), "file:portal.csv:lifecycle");
        assert_eq!(book.lookup(&zone("BE"), at("2024-01-01T01:30:00Z")).intensity_mg_per_kwh, 170_000);
        assert_eq!(book.lookup(&zone("DE"), at("2024-01-01T00:10:00Z")).intensity_mg_per_kwh, 420_000);

        let direct = parse_portal_csv(PORTAL, SourceName::parse("file:d").unwrap(), Basis::Direct).unwrap();
        // The direct column is empty at 01:00 for BE: that hour falls through to the fixed factor.
        let book = SignalBook::fixed(180_000).then(direct);
        assert_eq!(book.lookup(&zone("BE"), at("2024-01-01T00:00:00Z")).intensity_mg_per_kwh, 120_500);
        let fallen = book.lookup(&zone("BE"), at("2024-01-01T01:00:00Z"));
        assert_eq!((fallen.intensity_mg_per_kwh, fallen.source.as_str()), (180_000, "fixed"));
    }

    #[test]
    fn a_bad_file_is_refused_with_its_line() {
        let source = || SourceName::parse("file:x").unwrap();
        let header = "Datetime (UTC),Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA)\n";
        for (body, expected) in [
            ("2024-01-01 00:00:00,BE,1,-5\n", "line 2"),
            ("2024-01-01 00:30:00,BE,1,5\n", "not the start of an hour"),
            ("yesterday,BE,1,5\n", "not a UTC date"),
            ("2024-01-01 00:00:00,be,1,5\n", "zone id"),
            ("2024-01-01 00:00:00,BE,1,lots\n", "not a number"),
            ("2024-01-01 00:00:00,BE,1,9000\n", "above"),
        ] {
            let error = parse_portal_csv(&format!("{header}{body}"), source(), Basis::Lifecycle).unwrap_err();
            assert!(error.0.contains(expected), "{body}: {error}");
        }
        assert!(parse_portal_csv("Datetime (UTC),Zone Id\n", source(), Basis::Lifecycle).is_err());
        assert!(parse_portal_csv("", source(), Basis::Lifecycle).is_err());
    }

    #[test]
    fn the_bundled_year_answers_every_hour_of_its_zones_and_other_years_as_typical() {
        let layer = bundled_layer(Basis::Lifecycle);
        assert_eq!(layer.len(), 3 * 365 * 24);
        let book = SignalBook::fixed(180_000).then(layer);
        let in_year = book.lookup(&zone("DE"), at("2026-06-21T12:30:00Z"));
        assert_eq!(in_year.source.as_str(), "file:carbon-intensity-synthetic-2026.csv:lifecycle");
        let later = book.lookup(&zone("DE"), at("2028-06-21T12:10:00Z"));
        assert_eq!(later.intensity_mg_per_kwh, in_year.intensity_mg_per_kwh);
        assert_eq!(later.hour, at("2028-06-21T12:00:00Z"));
        assert_eq!(later.source.as_str(), "file:carbon-intensity-synthetic-2026.csv:lifecycle+typical-2026");
        assert!(book.lookup(&zone("FR"), at("2028-02-29T03:00:00Z")).source.as_str().ends_with("typical-2026"));
        // A zone the file does not hold gets the fixed factor.
        assert_eq!(book.lookup(&zone("NL"), at("2026-06-21T12:00:00Z")).source, SourceName::fixed());
        // The swinging zone swings, the flat one hardly does.
        let swing = |name: &str| {
            let day = book.hours(&zone(name), at("2026-06-21T00:00:00Z"), at("2026-06-21T23:00:00Z"));
            let values: Vec<i64> = day.iter().map(|signal| signal.intensity_mg_per_kwh).collect();
            values.iter().max().unwrap() - values.iter().min().unwrap()
        };
        assert!(swing("DE") > 5 * swing("FR"), "DE {} FR {}", swing("DE"), swing("FR"));
    }

    #[test]
    fn earlier_sources_win_and_a_replaced_layer_keeps_its_place() {
        let mut first = Layer::new(SourceName::parse("live:electricitymaps").unwrap(), IntensityKind::Average);
        first.insert(zone("BE"), at("2026-01-01T00:00:00Z"), 100_000);
        let mut book = SignalBook::fixed(180_000).then(bundled_layer(Basis::Lifecycle));
        book.replace(first.clone(), 0);
        assert_eq!(book.layers().len(), 2);
        assert_eq!(book.lookup(&zone("BE"), at("2026-01-01T00:20:00Z")).intensity_mg_per_kwh, 100_000);
        first.insert(zone("BE"), at("2026-01-01T00:00:00Z"), 90_000);
        book.replace(first, 0);
        assert_eq!(book.layers().len(), 2);
        assert_eq!(book.lookup(&zone("BE"), at("2026-01-01T00:20:00Z")).intensity_mg_per_kwh, 90_000);
    }

    #[test]
    fn electricity_maps_answers_are_read_and_nonsense_refused() {
        let be = zone("BE");
        let latest = br#"{"zone":"BE","carbonIntensity":152.4,"datetime":"2026-12-04T16:00:00.000Z","updatedAt":"2026-12-04T16:22:20.000Z","emissionFactorType":"lifecycle","isEstimated":true,"estimationMethod":"TIME_SLICER_AVERAGE"}"#;
        assert_eq!(parse_electricity_maps_latest(latest, &be).unwrap(), (at("2026-12-04T16:00:00Z"), 152_400));
        let forecast = br#"{"zone":"BE","forecast":[{"carbonIntensity":150,"datetime":"2026-12-04T17:00:00.000Z"},{"carbonIntensity":null,"datetime":"2026-12-04T18:00:00.000Z"},{"carbonIntensity":140.5,"datetime":"2026-12-04T19:00:00.000Z"}],"updatedAt":"2026-12-04T16:00:00Z"}"#;
        assert_eq!(
            parse_electricity_maps_forecast(forecast, &be).unwrap(),
            vec![(at("2026-12-04T17:00:00Z"), 150_000), (at("2026-12-04T19:00:00Z"), 140_500)]
        );
        for bad in [
            &br#"{"zone":"FR","carbonIntensity":50,"datetime":"2026-12-04T16:00:00Z"}"#[..],
            br#"{"zone":"BE","carbonIntensity":-1,"datetime":"2026-12-04T16:00:00Z"}"#,
            br#"{"zone":"BE","carbonIntensity":99999,"datetime":"2026-12-04T16:00:00Z"}"#,
            br#"{"zone":"BE","carbonIntensity":null,"datetime":"2026-12-04T16:00:00Z"}"#,
            br#"{"error":"unauthorized"}"#,
            b"<html>",
        ] {
            assert!(parse_electricity_maps_latest(bad, &be).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn watttime_pounds_per_mwh_become_mg_per_kwh_averaged_per_hour() {
        let body = br#"{"data":[{"point_time":"2026-12-04T16:00:00+00:00","value":1000.0},{"point_time":"2026-12-04T16:05:00+00:00","value":1000.0},{"point_time":"2026-12-04T17:00:00+00:00","value":500.5}],"meta":{"data_point_period_seconds":300,"region":"CAISO_NORTH","signal_type":"co2_moer","units":"lbs_co2_per_mwh","generated_at":"2026-12-04T16:00:00+00:00"}}"#;
        // 1000 lbs/MWh = 453,592.37 mg/kWh, rounded down to the mg.
        assert_eq!(
            parse_watttime(body).unwrap(),
            vec![(at("2026-12-04T16:00:00Z"), 453_592), (at("2026-12-04T17:00:00Z"), 227_022)]
        );
        let percentile =
            br#"{"data":[{"point_time":"2026-12-04T16:00:00+00:00","value":57}],"meta":{"units":"percentile"}}"#;
        assert!(parse_watttime(percentile).is_err());
        let negative =
            br#"{"data":[{"point_time":"2026-12-04T16:00:00+00:00","value":-3}],"meta":{"units":"lbs_co2_per_mwh"}}"#;
        assert!(parse_watttime(negative).is_err());
    }
}
