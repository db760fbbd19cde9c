//! How busy this gateway is, from the delay of its own runtime: a task that asks to wake every
//! [`TICK`] measures how late it wakes. When the gateway's CPU is saturated every request
//! waits as long, before a byte of it is read, and no concurrency count sees it (the queue
//! is in the sockets). Past `GATEWAY_MAX_DELAY_MS` of delay (smoothed), new work is refused
//! at once with a 503 until the delay falls again, while nodes' reports and heartbeats, which
//! finish work already accepted, are still served (the same signal as the event-loop delay of
//! Node's load-shedding plugins).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

const TICK: Duration = Duration::from_millis(2);

/// How long a full backlog is remembered: new commands meanwhile are refused without asking
/// Redis (a client told to come back after a second loses nothing by it).
pub const BACKLOG_MEMORY: Duration = Duration::from_millis(100);

/// The moment the gateway's clocks count from.
static ORIGIN: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);

fn now_us() -> u64 {
    u64::try_from(ORIGIN.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The smoothed delay, in microseconds, shared with the admission middleware; and until when
/// the grid's command backlog is known to be full.
#[derive(Debug, Default)]
pub struct Pressure {
    delay_us: AtomicU64,
    backlog_full_until_us: AtomicU64,
}

impl Pressure {
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// A command was refused for the backlog (`GATEWAY_MAX_BACKLOG`): remember it a moment.
    pub fn backlog_full(&self) {
        self.backlog_full_at(now_us());
    }

    /// Whether a backlog refusal is recent enough to refuse the next command at once.
    pub fn backlog_is_full(&self) -> bool {
        self.backlog_is_full_at(now_us())
    }

    fn backlog_full_at(&self, now_us: u64) {
        let until = now_us.saturating_add(u64::try_from(BACKLOG_MEMORY.as_micros()).unwrap_or(u64::MAX));
        self.backlog_full_until_us.fetch_max(until, Ordering::Relaxed);
    }

    fn backlog_is_full_at(&self, now_us: u64) -> bool {
        now_us < self.backlog_full_until_us.load(Ordering::Relaxed)
    }

    /// Takes one sample: the new delay weighs a quarter (about four ticks to follow a change).
    fn sample(&self, late: Duration) {
        let late = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        let previous = self.delay_us.load(Ordering::Relaxed);
        self.delay_us.store(previous - previous / 4 + late / 4, Ordering::Relaxed);
    }
}

/// Measures until `shutdown`.
pub async fn measure(pressure: std::sync::Arc<Pressure>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = tokio::select! {
            () = shutdown.cancelled() => return,
            instant = ticks.tick() => instant,
        };
        pressure.sample(due.elapsed());
    }
}

/// Whether a request finishes work already accepted (a node's report or heartbeat): it is
/// served under pressure, when new work is refused.
pub fn finishes_work(path: &str) -> bool {
    path.ends_with("/reports") || path.ends_with("/heartbeat") || path == "/grid/report"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_follows_samples_and_falls_back() {
        let pressure = Pressure::default();
        for _ in 0..20 {
            pressure.sample(Duration::from_millis(20));
        }
        assert!(pressure.delay() > Duration::from_millis(19), "{:?}", pressure.delay());
        for _ in 0..40 {
            pressure.sample(Duration::ZERO);
        }
        assert!(pressure.delay() < Duration::from_millis(1), "{:?}", pressure.delay());
    }

    #[test]
    fn a_full_backlog_is_remembered_a_moment() {
        let pressure = Pressure::default();
        let memory = u64::try_from(BACKLOG_MEMORY.as_micros()).unwrap();
        assert!(!pressure.backlog_is_full());
        pressure.backlog_full_at(1_000_000);
        assert!(pressure.backlog_is_full_at(1_000_000));
        assert!(pressure.backlog_is_full_at(1_000_000 + memory - 1));
        assert!(!pressure.backlog_is_full_at(1_000_000 + memory), "forgotten after {BACKLOG_MEMORY:?}");
        // And through the real clock.
        let fresh = Pressure::default();
        fresh.backlog_full();
        assert!(fresh.backlog_is_full());
    }

    #[test]
    fn node_traffic_that_finishes_work_is_told_apart() {
        assert!(finishes_work("/v1/nodes/5/reports"));
        assert!(finishes_work("/v1/nodes/5/heartbeat"));
        assert!(finishes_work("/grid/report"));
        assert!(finishes_work("/grid/heartbeat"));
        assert!(!finishes_work("/v1/tasks"));
        assert!(!finishes_work("/v1/nodes"));
    }
}
