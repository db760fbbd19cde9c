//! Forecast-aware deferral: when a deferrable task that found no node in the sun should start,
//! so that the grid energy it draws emits the least, from the hourly intensity the carbon
//! signals expect for its node's zone (a forecast where a live source gives one, else the file).
//!
//! The rule (`GRID_DEFERRAL=carbon`) keeps the solar-first rule and refines it:
//! - a node in the sun takes the task at once (both rules agree: no grid energy at all);
//! - while some node of the fleet is in the sun but has no free core, the task waits for one (a
//!   core frees within a task's runtime: solar-first);
//! - with no sun anywhere, the task waits while a later hour of its window is expected to be cleaner than
//!   this one by at least `min_saving_percent`, and runs on the grid in the cleanest hour
//!   (solar-first alone waits for the sun until the end of its window, then runs in whatever
//!   hour that is); the sun still takes it at once if it comes first.
//!
//! The window ends where waiting for the sun ends (`deadline − 3 × expected runtime`): a start
//! chosen here is never later, so waiting never makes a task miss its deadline.
//!
//! An [`Outlook`] is computed once per zone and placement round (one lookup per hour of the
//! horizon); each task's decision then costs O(1).

use chrono::{DateTime, Duration, Utc};
use grid_shared::signals::{SignalBook, Zone, hour_of};

/// How far ahead a task may be deferred for a cleaner hour: a week of hours.
pub const HORIZON_HOURS: usize = 168;

/// The expected intensity of a zone from this hour on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlook {
    hour: DateTime<Utc>,
    now_mg: i64,
    /// `best[k − 1]`: the lowest intensity among hours 1..=k after this one, and that hour's
    /// offset (the earliest of equals).
    best: Vec<(i64, u32)>,
}

/// What the forecast says a task should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarbonChoice {
    /// This hour is as clean as any of its window (within the saving asked for): run now.
    RunNow,
    /// Wait for a cleaner hour: start at `start` (the start of that hour, within the window).
    WaitUntil { start: DateTime<Utc>, now_mg: i64, then_mg: i64 },
}

impl Outlook {
    pub fn of(book: &SignalBook, zone: &Zone, now: DateTime<Utc>) -> Self {
        let hour = hour_of(now);
        let now_mg = book.lookup(zone, hour).intensity_mg_per_kwh;
        let mut best = Vec::with_capacity(HORIZON_HOURS);
        let mut lowest: Option<(i64, u32)> = None;
        for offset in 1..=HORIZON_HOURS as u32 {
            let mg = book.lookup(zone, hour + Duration::hours(i64::from(offset))).intensity_mg_per_kwh;
            if lowest.is_none_or(|(value, _)| mg < value) {
                lowest = Some((mg, offset));
            }
            best.push(lowest.unwrap_or((mg, offset)));
        }
        Self { hour, now_mg, best }
    }

    /// When a task whose window ends at `latest_start` should start: now, or the start of the
    /// cleanest later hour that begins within its window, if that hour is expected to emit at
    /// least `min_saving_percent` less than this one.
    pub fn decide(&self, now: DateTime<Utc>, latest_start: DateTime<Utc>, min_saving_percent: u8) -> CarbonChoice {
        if latest_start <= now || hour_of(now) != self.hour {
            return CarbonChoice::RunNow;
        }
        // Later hours that start within the window: those at offsets 1..=k.
        let span = (latest_start - self.hour).num_hours();
        let Ok(k) = usize::try_from(span.min(HORIZON_HOURS as i64)) else { return CarbonChoice::RunNow };
        let Some(&(then_mg, offset)) = k.checked_sub(1).and_then(|index| self.best.get(index)) else {
            return CarbonChoice::RunNow;
        };
        let saving = i128::from(self.now_mg) * i128::from(100 - min_saving_percent.min(100));
        if i128::from(then_mg) * 100 < saving {
            let start = self.hour + Duration::hours(i64::from(offset));
            return CarbonChoice::WaitUntil { start, now_mg: self.now_mg, then_mg };
        }
        CarbonChoice::RunNow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grid_shared::signals::{IntensityKind, Layer, SourceName};
    use proptest::prelude::*;

    fn book(start: DateTime<Utc>, values: &[i64]) -> SignalBook {
        let mut layer = Layer::new(SourceName::parse("file:test").unwrap(), IntensityKind::Average);
        for (offset, value) in values.iter().enumerate() {
            layer.insert(Zone::parse("DE").unwrap(), start + Duration::hours(offset as i64), *value);
        }
        SignalBook::fixed(999_000).then(layer)
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn it_waits_for_the_cleanest_hour_that_starts_within_the_window() {
        let start = at("2026-06-21T00:00:00Z");
        let de = Zone::parse("DE").unwrap();
        // Now 400; 300 in an hour; 100 in three hours; 50 in five.
        let book = book(start, &[400_000, 300_000, 350_000, 100_000, 200_000, 50_000, 500_000]);
        let now = start + Duration::minutes(20);
        let outlook = Outlook::of(&book, &de, now);
        let wait = |latest: DateTime<Utc>| outlook.decide(now, latest, 5);
        assert_eq!(wait(now), CarbonChoice::RunNow, "no window");
        assert_eq!(wait(start + Duration::minutes(59)), CarbonChoice::RunNow, "no later hour starts in the window");
        assert_eq!(
            wait(start + Duration::hours(4)),
            CarbonChoice::WaitUntil { start: start + Duration::hours(3), now_mg: 400_000, then_mg: 100_000 }
        );
        assert_eq!(
            wait(start + Duration::hours(5)),
            CarbonChoice::WaitUntil { start: start + Duration::hours(5), now_mg: 400_000, then_mg: 50_000 }
        );
        // A saving below the threshold is not worth the wait.
        let flat = self::book(start, &[100_000, 97_000, 99_000]);
        assert_eq!(Outlook::of(&flat, &de, now).decide(now, start + Duration::hours(2), 5), CarbonChoice::RunNow);
        assert!(matches!(
            Outlook::of(&flat, &de, now).decide(now, start + Duration::hours(2), 1),
            CarbonChoice::WaitUntil { .. }
        ));
    }

    proptest! {
        /// Whatever the forecast, a task never starts before now or after its window: the
        /// deferral never makes it late.
        #[test]
        fn a_deferred_start_is_never_after_the_window(
            values in proptest::collection::vec(0i64..900_000, 1..200),
            minutes_in in 0i64..60,
            window_minutes in -120i64..(200 * 60),
            saving in 0u8..=100,
        ) {
            let start = at("2026-03-01T00:00:00Z");
            let now = start + Duration::minutes(minutes_in);
            let latest = now + Duration::minutes(window_minutes);
            let outlook = Outlook::of(&book(start, &values), &Zone::parse("DE").unwrap(), now);
            match outlook.decide(now, latest, saving) {
                CarbonChoice::RunNow => {}
                CarbonChoice::WaitUntil { start: begin, now_mg, then_mg } => {
                    prop_assert!(begin > now && begin <= latest, "{begin} outside ({now}, {latest}]");
                    prop_assert!(then_mg < now_mg);
                    prop_assert_eq!(begin, hour_of(begin));
                }
            }
        }
    }
}
