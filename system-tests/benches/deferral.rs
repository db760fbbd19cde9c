//! `just bench-deferral`: a year of hourly intensity for a swinging zone (DE), a flat one (FR)
//! and Belgium (BE), from the bundled file, replayed through the scheduler's forecast rule
//! (`scheduler::carbon`, `GRID_DEFERRAL=carbon`): a one-hour task arrives at every hour of the
//! year with each slack class, on nodes without sun (all of its energy from the grid). Its
//! emissions are compared with running at once (no deferral) and with the solar-first rule
//! alone, which, with no sun coming, waits to the end of its window and runs then.
//!
//! The forecast here is the recorded year itself (a perfect forecast), so the savings are an
//! upper bound for a live forecast; and the bundled year is synthetic (see
//! `shared/data/synthesize_intensity.py`). A report, not a test. Published for comparison:
//! Wiesner et al., "Let's Wait Awhile" (Middleware 2021): up to about a fifth of emissions saved
//! by shifting within hours where the intensity swings (Germany, California), little where it
//! is flat (France).

use chrono::{DateTime, Duration, Utc};
use grid_orchestrator::scheduler::carbon::{CarbonChoice, Outlook};
use grid_shared::signals::{Basis, SignalBook, Zone, bundled_layer};

/// Slack classes: hours between a task's arrival and the end of its deferral window.
const SLACKS: [i64; 5] = [0, 3, 6, 12, 24];
const MIN_SAVING_PERCENT: u8 = 5;

struct Tally {
    at_once: i128,
    carbon: i128,
    solar_first: i128,
    deferred: u64,
    waited_hours: i64,
    tasks: u64,
}

fn percent_saved(baseline: i128, other: i128) -> f64 {
    let saved = if baseline == 0 { 0.0 } else { (baseline - other) as f64 * 100.0 / baseline as f64 };
    // No "-0.0 %" for a difference below the printed precision.
    if saved.abs() < 0.05 { 0.0 } else { saved }
}

/// What a credited task pays for its signal: one lookup in the writer's book (the bundled
/// year, then the fixed factor), timed over a million lookups across zones and hours.
fn lookup_cost(book: &SignalBook, start: DateTime<Utc>) -> f64 {
    let zones: Vec<Zone> = ["BE", "DE", "FR", "NL"].iter().filter_map(|zone| Zone::parse(zone).ok()).collect();
    let rounds = 1_000_000_u32;
    let clock = std::time::Instant::now();
    let mut sum = 0_i64;
    for round in 0..rounds {
        let at = start + Duration::minutes(i64::from(round % 500_000));
        let signal = book.lookup(&zones[round as usize % zones.len()], at);
        sum = sum.wrapping_add(std::hint::black_box(signal).intensity_mg_per_kwh);
    }
    std::hint::black_box(sum);
    clock.elapsed().as_secs_f64() * 1e9 / f64::from(rounds)
}

fn main() {
    let book = SignalBook::fixed(180_000).then(bundled_layer(Basis::Lifecycle));
    let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap_or_default();
    let hours = 365 * 24 - 24;
    let mut json = Vec::new();
    println!(
        "| zone | slack | tasks | at once, g/kWh | forecast rule | saved | solar-first alone | saved | deferred | mean wait |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let clock = std::time::Instant::now();
    let mut decisions = 0_u64;
    for name in ["DE", "FR", "BE"] {
        let zone = Zone::parse(name).unwrap_or_else(|_| unreachable!());
        let mut mixed = Tally { at_once: 0, carbon: 0, solar_first: 0, deferred: 0, waited_hours: 0, tasks: 0 };
        for slack in SLACKS {
            let mut tally = Tally { at_once: 0, carbon: 0, solar_first: 0, deferred: 0, waited_hours: 0, tasks: 0 };
            for hour in 0..hours {
                let arrival = start + Duration::hours(hour);
                let latest = arrival + Duration::hours(slack);
                let intensity = |at: DateTime<Utc>| i128::from(book.lookup(&zone, at).intensity_mg_per_kwh);
                let now_mg = intensity(arrival);
                let chosen = match Outlook::of(&book, &zone, arrival).decide(arrival, latest, MIN_SAVING_PERCENT) {
                    CarbonChoice::RunNow => arrival,
                    CarbonChoice::WaitUntil { start, .. } => start,
                };
                decisions += 1;
                assert!(chosen >= arrival && chosen <= latest, "never after the window");
                tally.at_once += now_mg;
                tally.carbon += intensity(chosen);
                tally.solar_first += intensity(latest);
                if chosen > arrival {
                    tally.deferred += 1;
                    tally.waited_hours += (chosen - arrival).num_hours();
                }
                tally.tasks += 1;
            }
            let mean = |sum: i128| sum as f64 / tally.tasks.max(1) as f64 / 1_000.0;
            println!(
                "| {name} | {slack} h | {} | {:.1} | {:.1} | {:.1} % | {:.1} | {:.1} % | {:.1} % | {:.1} h |",
                tally.tasks,
                mean(tally.at_once),
                mean(tally.carbon),
                percent_saved(tally.at_once, tally.carbon),
                mean(tally.solar_first),
                percent_saved(tally.at_once, tally.solar_first),
                tally.deferred as f64 * 100.0 / tally.tasks.max(1) as f64,
                tally.waited_hours as f64 / tally.deferred.max(1) as f64,
            );
            json.push(serde_json::json!({
                "zone": name, "slack_hours": slack, "tasks": tally.tasks,
                "at_once_mg_per_kwh": mean(tally.at_once) * 1_000.0,
                "forecast_rule_mg_per_kwh": mean(tally.carbon) * 1_000.0,
                "forecast_rule_saved_percent": percent_saved(tally.at_once, tally.carbon),
                "solar_first_mg_per_kwh": mean(tally.solar_first) * 1_000.0,
                "solar_first_saved_percent": percent_saved(tally.at_once, tally.solar_first),
                "deferred_percent": tally.deferred as f64 * 100.0 / tally.tasks.max(1) as f64,
            }));
            mixed.at_once += tally.at_once;
            mixed.carbon += tally.carbon;
            mixed.solar_first += tally.solar_first;
            mixed.tasks += tally.tasks;
        }
        println!(
            "| {name} | mixed (equal shares) | {} | | | **{:.1} %** | | {:.1} % | | |",
            mixed.tasks,
            percent_saved(mixed.at_once, mixed.carbon),
            percent_saved(mixed.at_once, mixed.solar_first)
        );
        json.push(serde_json::json!({
            "zone": name, "slack_hours": "mixed", "tasks": mixed.tasks,
            "forecast_rule_saved_percent": percent_saved(mixed.at_once, mixed.carbon),
            "solar_first_saved_percent": percent_saved(mixed.at_once, mixed.solar_first),
        }));
    }
    let elapsed = clock.elapsed();
    println!(
        "\n{decisions} decisions (an outlook of {} hours each, built per task here; the writer builds one per zone and round) in {:.2} s",
        grid_orchestrator::scheduler::carbon::HORIZON_HOURS,
        elapsed.as_secs_f64()
    );
    let lookup_ns = lookup_cost(&book, start);
    println!(
        "a credit's signal lookup (zone, hour, intensity, kind and source, cloned for the credit): {lookup_ns:.0} ns, \
         against about 100 µs of writer CPU per task"
    );
    json.push(serde_json::json!({"signal_lookup_ns": lookup_ns}));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-deferral.json");
    if let Err(error) = std::fs::write(path, serde_json::to_string_pretty(&json).unwrap_or_default()) {
        eprintln!("could not write {path}: {error}");
    }
}
