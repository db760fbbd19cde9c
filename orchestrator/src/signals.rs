//! The carbon signals the writer credits with, fetched off its decide path.
//!
//! The chain of sources is set by `GRID_CARBON_SOURCES` (default `file`), tried in that order
//! with the fixed factor (`GRID_INTENSITY_KG_PER_KWH`) last:
//! - `file`: an Electricity Maps data-portal CSV (`GRID_CARBON_FILE`), or when none is given
//!   the bundled synthetic year ([`grid_shared::signals::BUNDLED_CSV`]); read once at start;
//! - `electricitymaps`: the v3 API at `GRID_ELECTRICITYMAPS_URL` (`auth-token`
//!   `GRID_ELECTRICITYMAPS_TOKEN`), `/v3/carbon-intensity/latest` and `/forecast` per zone;
//! - `watttime`: the v3 API at `GRID_WATTTIME_URL` (bearer `GRID_WATTTIME_TOKEN`),
//!   `/v3/forecast?region=R&signal_type=co2_moer` for each zone's region (`GRID_WATTTIME_REGIONS`,
//!   `DE=DE,FR=FR`), marginal.
//!
//! The live sources are polled every `GRID_CARBON_REFRESH_S` by [`run_fetcher`], which hands
//! the writer a new [`SignalBook`] through a watch channel: the writer swaps it in between two
//! steps and never waits on the network. A source that fails, or answers something that is not
//! its documented shape or not a plausible intensity, is skipped for that round (a warning and
//! `grid_carbon_source_failures_total{source}`); the hours it answered before are kept (48 h).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use grid_shared::settings::{SettingsError, integer_in, read};
use grid_shared::signals::{
    Basis, IntensityKind, Layer, SignalBook, SourceError, SourceName, Zone, bundled_layer,
    parse_electricity_maps_forecast, parse_electricity_maps_latest, parse_portal_csv, parse_watttime,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::status::Status;

/// A live source's answers are kept this long after their hour (a credit looks up the hour it
/// is credited in; a report comes at most a start lease and a runtime after the work).
const KEEP_HOURS: i64 = 48;
/// One request to a live source may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A source of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File,
    ElectricityMaps { url: String, token: Option<String> },
    WattTime { url: String, token: Option<String>, regions: HashMap<Zone, String> },
}

impl Source {
    /// The name its answers are recorded under.
    pub fn name(&self, basis: Basis, file: &FileSource) -> SourceName {
        let text = match self {
            Self::File => file.name.clone(),
            Self::ElectricityMaps { .. } => format!("electricitymaps:{}", basis.as_str()),
            Self::WattTime { .. } => "watttime:co2_moer".to_owned(),
        };
        SourceName::parse(&text).unwrap_or_else(|_| SourceName::fixed())
    }

    fn is_live(&self) -> bool {
        !matches!(self, Self::File)
    }

    /// WattTime answers marginal intensities; the file and Electricity Maps, averages.
    fn kind(&self) -> IntensityKind {
        if matches!(self, Self::WattTime { .. }) { IntensityKind::Marginal } else { IntensityKind::Average }
    }
}

/// The file source: its layer (read at start) and the name it records.
#[derive(Clone)]
pub struct FileSource {
    pub name: String,
    pub layer: Arc<Layer>,
}

/// The signal settings, checked at start (a bad file or URL stops the process with the
/// variable's name).
#[derive(Clone)]
pub struct SignalSettings {
    pub basis: Basis,
    pub sources: Vec<Source>,
    pub file: FileSource,
    pub refresh: Duration,
    /// The book before any live source answered: the file and the fixed factor.
    pub initial: Arc<SignalBook>,
}

impl std::fmt::Debug for SignalSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalSettings")
            .field("basis", &self.basis)
            .field(
                "sources",
                &self.sources.iter().map(|source| source.name(self.basis, &self.file)).collect::<Vec<_>>(),
            )
            .field("file_hours", &self.file.layer.len())
            .field("refresh", &self.refresh)
            .finish()
    }
}

fn http_url(text: &str) -> Result<String, String> {
    let url = text.trim_end_matches('/');
    if url.starts_with("https://") {
        return Err(format!(
            "{url:?}: this build speaks plain HTTP to signal sources; reach an https API through a local \
             TLS-terminating proxy (for example stunnel or nginx) and give its http:// address"
        ));
    }
    if !url.starts_with("http://") || url.len() <= "http://".len() {
        return Err(format!("{url:?} is not an http:// URL"));
    }
    Ok(url.to_owned())
}

fn regions(text: &str) -> Result<HashMap<Zone, String>, String> {
    let mut regions = HashMap::new();
    for pair in text.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let (zone, region) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not ZONE=REGION"))?;
        let zone = Zone::parse(zone).map_err(|error| format!("{zone:?}: {}", error.reason))?;
        let region = region.trim();
        if region.is_empty() || !region.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
        {
            return Err(format!("{region:?} is not a WattTime region (letters, digits, _ and -)"));
        }
        regions.insert(zone, region.to_owned());
    }
    if regions.is_empty() {
        return Err("must map at least one zone to its WattTime region, as DE=DE".to_owned());
    }
    Ok(regions)
}

impl SignalSettings {
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>, fixed_mg_per_kwh: i64) -> Result<Self, SettingsError> {
        let basis = read(lookup, "GRID_CARBON_BASIS", "lifecycle", Basis::parse)?;
        let file = match lookup("GRID_CARBON_FILE").filter(|path| !path.trim().is_empty()) {
            None => FileSource {
                name: format!("file:{}:{}", grid_shared::signals::BUNDLED_NAME, basis.as_str()),
                layer: bundled_layer(basis),
            },
            Some(path) => {
                let error = |reason: String| SettingsError { variable: "GRID_CARBON_FILE", reason };
                let text = std::fs::read_to_string(path.trim()).map_err(|io| error(format!("{path}: {io}")))?;
                let base = std::path::Path::new(path.trim())
                    .file_name()
                    .map(|name| name.to_string_lossy().to_lowercase())
                    .unwrap_or_default();
                let cleaned: String = base
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
                    .take(50)
                    .collect();
                let name = format!("file:{cleaned}:{}", basis.as_str());
                let source = SourceName::parse(&name).map_err(error)?;
                let layer =
                    parse_portal_csv(&text, source, basis).map_err(|reason| error(format!("{path}: {reason}")))?;
                FileSource { name, layer: Arc::new(layer) }
            }
        };
        let mut sources = Vec::new();
        let order = read(lookup, "GRID_CARBON_SOURCES", "file", |text| Ok(text.to_owned()))?;
        let names: Vec<&str> = order.split(',').map(str::trim).filter(|name| !name.is_empty()).collect();
        for (index, name) in names.iter().enumerate() {
            let error = |reason: String| SettingsError { variable: "GRID_CARBON_SOURCES", reason };
            let source = match *name {
                "file" => Source::File,
                "electricitymaps" => Source::ElectricityMaps {
                    url: read(lookup, "GRID_ELECTRICITYMAPS_URL", "", http_url)?,
                    token: lookup("GRID_ELECTRICITYMAPS_TOKEN").filter(|token| !token.is_empty()),
                },
                "watttime" => Source::WattTime {
                    url: read(lookup, "GRID_WATTTIME_URL", "", http_url)?,
                    token: lookup("GRID_WATTTIME_TOKEN").filter(|token| !token.is_empty()),
                    regions: read(lookup, "GRID_WATTTIME_REGIONS", "", regions)?,
                },
                "fixed" if index + 1 == names.len() => continue,
                "fixed" => return Err(error("fixed answers every hour: it can only come last".to_owned())),
                other => {
                    return Err(error(format!("{other:?} is not a source (file, electricitymaps, watttime, fixed)")));
                }
            };
            if sources.contains(&source) {
                return Err(error(format!("{name} is named twice")));
            }
            sources.push(source);
        }
        let refresh_s: u64 = read(lookup, "GRID_CARBON_REFRESH_S", "300", integer_in(10, 86_400))?;
        let mut initial = SignalBook::fixed(fixed_mg_per_kwh);
        for source in &sources {
            initial = match source {
                Source::File => initial.then(file.layer.clone()),
                live => initial.then(Layer::new(live.name(basis, &file), live.kind())),
            };
        }
        Ok(Self { basis, sources, file, refresh: Duration::from_secs(refresh_s), initial: Arc::new(initial) })
    }

    /// Whether a live source needs the fetcher.
    pub fn has_live_source(&self) -> bool {
        self.sources.iter().any(Source::is_live)
    }
}

/// The book the writer credits with, as the fetcher last made it.
pub type Feed = watch::Receiver<Arc<SignalBook>>;

/// Polls the live sources every `refresh` until `shutdown`, publishing each new book on
/// `sender`. Never blocks the writer: it runs on its own task and the writer reads the latest
/// book when it has one.
pub async fn run_fetcher(
    settings: SignalSettings,
    zones: Vec<Zone>,
    sender: watch::Sender<Arc<SignalBook>>,
    status: Arc<Status>,
    shutdown: CancellationToken,
) {
    let client = match client() {
        Ok(client) => client,
        Err(error) => {
            warn!(%error, "no HTTP client for the carbon signal sources; crediting from the file and the fixed factor");
            return;
        }
    };
    let mut ticks = tokio::time::interval(settings.refresh);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while tokio::select! { () = shutdown.cancelled() => false, _ = ticks.tick() => true } {
        let current = sender.borrow().clone();
        if let Some(book) = refresh(&settings, &zones, &current, &client, &status).await {
            sender.send_replace(Arc::new(book));
        }
    }
}

/// The HTTP client of the live sources (each request bounded by [`REQUEST_TIMEOUT`]).
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()
}

/// One round: asks every live source for every zone and answers the book with what they said,
/// or `None` when no source answered anything (each failure counted and logged).
pub async fn refresh(
    settings: &SignalSettings,
    zones: &[Zone],
    current: &SignalBook,
    client: &reqwest::Client,
    status: &Status,
) -> Option<SignalBook> {
    let mut book = current.clone();
    let mut changed = false;
    for (position, source) in settings.sources.iter().enumerate().filter(|(_, source)| source.is_live()) {
        let name = source.name(settings.basis, &settings.file);
        let current = book.layers().iter().find(|layer| layer.source() == &name).map(|layer| (**layer).clone());
        let mut layer = current.unwrap_or_else(|| Layer::new(name.clone(), source.kind()));
        let mut answered = 0;
        for zone in zones {
            match fetch(client, source, zone).await {
                Ok(points) => {
                    answered += points.len();
                    for (hour, intensity) in points {
                        layer.insert(zone.clone(), hour, intensity);
                    }
                }
                Err(error) => {
                    status
                        .metrics
                        .counter("grid_carbon_source_failures_total", &[("source", name.as_str())])
                        .increment(1);
                    warn!(source = %name, %zone, %error, "a carbon signal source failed; skipped this round");
                }
            }
        }
        layer.forget_before(Utc::now() - chrono::Duration::hours(KEEP_HOURS));
        if answered > 0 {
            status.metrics.counter("grid_carbon_source_updates_total", &[("source", name.as_str())]).increment(1);
            info!(source = %name, hours = answered, "carbon signals refreshed");
            book.replace(layer, position);
            changed = true;
        }
    }
    changed.then_some(book)
}

/// One zone's hours from one live source.
async fn fetch(
    client: &reqwest::Client,
    source: &Source,
    zone: &Zone,
) -> Result<Vec<(DateTime<Utc>, i64)>, SourceError> {
    let get = |url: String, auth: Option<(&'static str, String)>| {
        let mut request = client.get(url);
        if let Some((header, value)) = auth {
            request = request.header(header, value);
        }
        async move {
            let response = request.send().await.map_err(|error| SourceError(format!("unreachable: {error}")))?;
            let status = response.status();
            let body = response.bytes().await.map_err(|error| SourceError(format!("body: {error}")))?;
            if !status.is_success() {
                return Err(SourceError(format!("answered {status}")));
            }
            Ok(body)
        }
    };
    match source {
        Source::File => Ok(Vec::new()),
        Source::ElectricityMaps { url, token } => {
            let auth = || token.clone().map(|token| ("auth-token", token));
            let latest = get(format!("{url}/v3/carbon-intensity/latest?zone={zone}"), auth()).await?;
            let mut points = vec![parse_electricity_maps_latest(&latest, zone)?];
            let forecast = get(format!("{url}/v3/carbon-intensity/forecast?zone={zone}"), auth()).await?;
            points.extend(parse_electricity_maps_forecast(&forecast, zone)?);
            Ok(points)
        }
        Source::WattTime { url, token, regions } => {
            let Some(region) = regions.get(zone) else { return Ok(Vec::new()) };
            let auth = token.clone().map(|token| ("authorization", format!("Bearer {token}")));
            let body = get(format!("{url}/v3/forecast?region={region}&signal_type=co2_moer"), auth).await?;
            parse_watttime(&body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<SignalSettings, SettingsError> {
        let lookup = |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned());
        SignalSettings::from_lookup(&lookup, 180_000)
    }

    #[test]
    fn by_default_the_bundled_file_then_the_fixed_factor() {
        let settings = settings(&[]).unwrap();
        assert_eq!(settings.sources, [Source::File]);
        assert!(!settings.has_live_source());
        let signal = settings.initial.lookup(&Zone::parse("DE").unwrap(), Utc::now());
        assert!(signal.source.as_str().starts_with("file:carbon-intensity-synthetic-2026.csv:lifecycle"));
        let unknown = settings.initial.lookup(&Zone::parse("NL").unwrap(), Utc::now());
        assert_eq!((unknown.intensity_mg_per_kwh, unknown.source.as_str()), (180_000, "fixed"));
    }

    #[test]
    fn bad_settings_name_their_variable() {
        for (pairs, variable) in [
            (&[("GRID_CARBON_SOURCES", "file,sundial")][..], "GRID_CARBON_SOURCES"),
            (&[("GRID_CARBON_SOURCES", "fixed,file")], "GRID_CARBON_SOURCES"),
            (&[("GRID_CARBON_SOURCES", "file,file")], "GRID_CARBON_SOURCES"),
            (&[("GRID_CARBON_SOURCES", "electricitymaps")], "GRID_ELECTRICITYMAPS_URL"),
            (
                &[("GRID_CARBON_SOURCES", "electricitymaps"), ("GRID_ELECTRICITYMAPS_URL", "https://api.example")],
                "GRID_ELECTRICITYMAPS_URL",
            ),
            (&[("GRID_CARBON_SOURCES", "watttime"), ("GRID_WATTTIME_URL", "http://x")], "GRID_WATTTIME_REGIONS"),
            (&[("GRID_CARBON_FILE", "/nonexistent/intensity.csv")], "GRID_CARBON_FILE"),
            (&[("GRID_CARBON_BASIS", "scope3")], "GRID_CARBON_BASIS"),
            (&[("GRID_CARBON_REFRESH_S", "1")], "GRID_CARBON_REFRESH_S"),
        ] {
            let error = settings(pairs).unwrap_err();
            assert_eq!(error.variable, variable, "{pairs:?}: {error}");
        }
    }

    #[test]
    fn a_live_source_keeps_its_place_in_the_chain() {
        let settings = settings(&[
            ("GRID_CARBON_SOURCES", "electricitymaps,file,fixed"),
            ("GRID_ELECTRICITYMAPS_URL", "http://127.0.0.1:9/"),
        ])
        .unwrap();
        assert!(settings.has_live_source());
        let names: Vec<&str> = settings.initial.layers().iter().map(|layer| layer.source().as_str()).collect();
        assert_eq!(names, ["electricitymaps:lifecycle", "file:carbon-intensity-synthetic-2026.csv:lifecycle"]);
    }
}
