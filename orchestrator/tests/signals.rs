//! The live carbon signal sources against a local server that answers the documented shapes
//! (Electricity Maps v3 `latest` and `forecast`, WattTime v3 `forecast`), and the ways a
//! source fails: an error status, nonsense, another zone. The fetcher runs off the writer; what
//! it learns reaches the writer's book through the watch channel, and a failing source is
//! skipped (counted, logged) while the chain falls through to the file and the fixed factor.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DurationRound, Utc};
use grid_orchestrator::signals::{SignalSettings, refresh, run_fetcher};
use grid_orchestrator::status::Status;
use grid_shared::signals::{IntensityKind, SignalBook, Zone};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(serde::Deserialize)]
struct ZoneQuery {
    zone: String,
}

#[derive(serde::Deserialize)]
struct RegionQuery {
    region: String,
    signal_type: String,
}

fn this_hour() -> chrono::DateTime<Utc> {
    Utc::now().duration_trunc(chrono::Duration::hours(1)).unwrap()
}

/// BE answers well; DE answers a negative intensity (nonsense); FR answers 500; a wrong token
/// gets 401.
async fn latest(headers: HeaderMap, Query(query): Query<ZoneQuery>) -> axum::response::Response {
    if headers.get("auth-token").and_then(|value| value.to_str().ok()) != Some("em-token") {
        return (StatusCode::UNAUTHORIZED, "no token").into_response();
    }
    let hour = this_hour().to_rfc3339();
    match query.zone.as_str() {
        "BE" => axum::Json(json!({"zone": "BE", "carbonIntensity": 151.6, "datetime": hour,
            "updatedAt": hour, "emissionFactorType": "lifecycle", "isEstimated": false}))
        .into_response(),
        "DE" => axum::Json(json!({"zone": "DE", "carbonIntensity": -40, "datetime": hour})).into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "upstream down").into_response(),
    }
}

async fn forecast(Query(query): Query<ZoneQuery>) -> axum::response::Response {
    let next = (this_hour() + chrono::Duration::hours(1)).to_rfc3339();
    match query.zone.as_str() {
        "BE" => axum::Json(json!({"zone": "BE", "forecast": [{"carbonIntensity": 120, "datetime": next}],
            "updatedAt": next}))
        .into_response(),
        zone => axum::Json(json!({"zone": zone, "forecast": []})).into_response(),
    }
}

async fn watttime(headers: HeaderMap, Query(query): Query<RegionQuery>) -> axum::response::Response {
    let authorised = headers.get("authorization").and_then(|value| value.to_str().ok()) == Some("Bearer wt-token");
    if !authorised || query.signal_type != "co2_moer" {
        return (StatusCode::FORBIDDEN, "no").into_response();
    }
    let hour = this_hour();
    let points: Vec<_> = (0..12)
        .map(|step| json!({"point_time": (hour + chrono::Duration::minutes(5 * step)).to_rfc3339(), "value": 1000.0}))
        .collect();
    match query.region.as_str() {
        "DE_REGION" => axum::Json(json!({"data": points, "meta": {"region": "DE_REGION", "signal_type": "co2_moer",
            "units": "lbs_co2_per_mwh", "data_point_period_seconds": 300}}))
        .into_response(),
        _ => axum::Json(json!({"data": points, "meta": {"units": "percentile"}})).into_response(),
    }
}

async fn serve() -> String {
    let router = axum::Router::new()
        .route("/v3/carbon-intensity/latest", get(latest))
        .route("/v3/carbon-intensity/forecast", get(forecast))
        .route("/v3/forecast", get(watttime));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

fn zone(name: &str) -> Zone {
    Zone::parse(name).unwrap()
}

/// Waits (at most 20 s) until the fetcher publishes a book.
async fn next_book(feed: &mut tokio::sync::watch::Receiver<Arc<SignalBook>>) -> Arc<SignalBook> {
    tokio::time::timeout(Duration::from_secs(20), feed.changed())
        .await
        .expect("the fetcher publishes within its first round")
        .unwrap();
    feed.borrow_and_update().clone()
}

#[tokio::test]
async fn live_sources_feed_the_writers_book_and_failing_ones_are_skipped() {
    let base = serve().await;
    let pairs = [
        ("GRID_CARBON_SOURCES", "electricitymaps,watttime,file".to_owned()),
        ("GRID_ELECTRICITYMAPS_URL", base.clone()),
        ("GRID_ELECTRICITYMAPS_TOKEN", "em-token".to_owned()),
        ("GRID_WATTTIME_URL", base.clone()),
        ("GRID_WATTTIME_TOKEN", "wt-token".to_owned()),
        ("GRID_WATTTIME_REGIONS", "DE=DE_REGION,FR=FR_REGION".to_owned()),
    ];
    let lookup = |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| value.clone());
    let settings = SignalSettings::from_lookup(&lookup, 180_000).unwrap();
    let (sender, mut feed) = tokio::sync::watch::channel(settings.initial.clone());
    let status = Arc::new(Status::new("signals-test"));
    let stop = CancellationToken::new();
    let zones = vec![zone("BE"), zone("DE"), zone("FR")];
    tokio::spawn(run_fetcher(settings, zones, sender, status.clone(), stop.clone()));
    let book = next_book(&mut feed).await;
    let now = Utc::now();

    // BE from Electricity Maps: this hour's latest, the next hour's forecast.
    let be = book.lookup(&zone("BE"), now);
    assert_eq!(
        (be.intensity_mg_per_kwh, be.source.as_str(), be.kind),
        (151_600, "electricitymaps:lifecycle", IntensityKind::Average)
    );
    assert_eq!(book.lookup(&zone("BE"), now + chrono::Duration::hours(1)).intensity_mg_per_kwh, 120_000);
    // DE: Electricity Maps answered nonsense, so WattTime (marginal, 1000 lbs/MWh) answers.
    let de = book.lookup(&zone("DE"), now);
    assert_eq!(
        (de.intensity_mg_per_kwh, de.source.as_str(), de.kind),
        (453_592, "watttime:co2_moer", IntensityKind::Marginal)
    );
    // FR: Electricity Maps failed and WattTime answered percentiles: the bundled file answers.
    let fr = book.lookup(&zone("FR"), now);
    assert!(fr.source.as_str().starts_with("file:carbon-intensity-synthetic-2026.csv"), "{fr:?}");
    // Each failure is counted by source.
    let metrics = status.metrics.render();
    let failures = |source: &str| {
        metrics
            .lines()
            .find(|line| {
                line.starts_with("grid_carbon_source_failures_total") && line.contains(&format!("source=\"{source}\""))
            })
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|count| count.parse::<u64>().ok())
    };
    assert_eq!(failures("electricitymaps:lifecycle"), Some(2), "DE and FR:\n{metrics}");
    assert_eq!(failures("watttime:co2_moer"), Some(1), "FR's percentiles:\n{metrics}");
    stop.cancel();
}

#[tokio::test]
async fn an_unreachable_source_leaves_the_file_and_the_fixed_factor() {
    // A port nothing listens on: the round fails for every zone and learns nothing.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let pairs = [
        ("GRID_CARBON_SOURCES", "electricitymaps,file".to_owned()),
        ("GRID_ELECTRICITYMAPS_URL", format!("http://{closed}")),
        ("GRID_CARBON_REFRESH_S", "10".to_owned()),
    ];
    let lookup = |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| value.clone());
    let settings = SignalSettings::from_lookup(&lookup, 180_000).unwrap();
    let status = Status::new("signals-test");
    let client = grid_orchestrator::signals::client().unwrap();
    let zones = [zone("BE"), zone("NL")];
    let learned = refresh(&settings, &zones, &settings.initial, &client, &status).await;
    assert!(learned.is_none(), "nothing learned, nothing to publish");
    let metrics = status.metrics.render();
    assert!(
        metrics.contains("grid_carbon_source_failures_total{source=\"electricitymaps:lifecycle\"} 2"),
        "both zones' failures are counted:\n{metrics}"
    );
    let book = &settings.initial;
    assert!(book.lookup(&zone("BE"), Utc::now()).source.as_str().starts_with("file:"));
    assert_eq!(book.lookup(&zone("NL"), Utc::now()).source.as_str(), "fixed");
}
