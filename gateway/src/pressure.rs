//! How busy this gateway is, from the delay of its own runtime: a task that asks to wake every
//! [`TICK`] measures how late it wakes. When the gateway's CPU is saturated every request
//! waits as long, before a byte of it is read, and no concurrency count sees it (the queue
//! is in the sockets). When every tick of a whole window (`GATEWAY_MAX_DELAY_WINDOW_MS`) woke
//! later than `GATEWAY_MAX_DELAY_MS`, the runtime is saturated, not merely busy for a moment:
//! new work is refused at once with a 503 until a tick is on time again, while nodes' reports
//! and heartbeats, which finish work already accepted, are still served (the event-loop delay
//! of Node's load-shedding plugins, held for a window so that one late tick, a burst on an
//! idle gateway, or a busy moment of a shared machine refuses nothing).

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

/// The smoothed delay, in microseconds (for the metrics), since when every tick has been late
/// (0: the last one was on time), shared with the admission middleware; and until when the
/// grid's command backlog is known to be full.
#[derive(Debug)]
pub struct Pressure {
    /// Requests refused with 503 for capacity, load or the backlog (for `GET /v1/operations`).
    refused: AtomicU64,
    delay_us: AtomicU64,
    late_since_us: AtomicU64,
    backlog_full_until_us: AtomicU64,
    /// A tick later than this is late.
    max_delay_us: u64,
    /// Late for this long, the runtime is saturated.
    window_us: u64,
}

impl Default for Pressure {
    fn default() -> Self {
        Self::new(Duration::from_millis(20), Duration::from_millis(250))
    }
}

impl Pressure {
    pub fn new(max_delay: Duration, window: Duration) -> Self {
        Self {
            refused: AtomicU64::new(0),
            delay_us: AtomicU64::new(0),
            late_since_us: AtomicU64::new(0),
            backlog_full_until_us: AtomicU64::new(0),
            max_delay_us: u64::try_from(max_delay.as_micros()).unwrap_or(u64::MAX),
            window_us: u64::try_from(window.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// Counts a request refused for capacity, load or the backlog.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests refused so far.
    pub fn refusals(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The runtime's delay, smoothed over a few ticks.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// Whether every tick of the last window was late: new work is then refused.
    pub fn saturated(&self) -> bool {
        self.saturated_at(now_us())
    }

    fn saturated_at(&self, now_us: u64) -> bool {
        let since = self.late_since_us.load(Ordering::Relaxed);
        since != 0 && now_us.saturating_sub(since) >= self.window_us
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

    /// Takes one sample, of a tick due `late` before `now_us`: the smoothed delay follows it (the
    /// new delay weighs a quarter), and a late tick starts or continues the streak of late ones
    /// (from when it was due), an on-time one ends it.
    fn sample_at(&self, late: Duration, now_us: u64) {
        let late = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        let previous = self.delay_us.load(Ordering::Relaxed);
        self.delay_us.store(previous - previous / 4 + late / 4, Ordering::Relaxed);
        if late > self.max_delay_us {
            let due = now_us.saturating_sub(late).max(1);
            let _ = self.late_since_us.compare_exchange(0, due, Ordering::Relaxed, Ordering::Relaxed);
        } else {
            self.late_since_us.store(0, Ordering::Relaxed);
        }
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
        pressure.sample_at(due.elapsed(), now_us());
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
        for tick in 0..20 {
            pressure.sample_at(Duration::from_millis(20), 1_000_000 + tick * 22_000);
        }
        assert!(pressure.delay() > Duration::from_millis(19), "{:?}", pressure.delay());
        for tick in 0..40 {
            pressure.sample_at(Duration::ZERO, 2_000_000 + tick * 2_000);
        }
        assert!(pressure.delay() < Duration::from_millis(1), "{:?}", pressure.delay());
    }

    #[test]
    fn only_a_whole_window_of_late_ticks_is_saturation() {
        let pressure = Pressure::new(Duration::from_millis(20), Duration::from_millis(250));
        // One stall of 100 ms on an idle gateway: late, then on time again. Nothing refused.
        pressure.sample_at(Duration::from_millis(100), 1_000_000);
        assert!(!pressure.saturated_at(1_000_000));
        pressure.sample_at(Duration::from_micros(300), 1_002_000);
        assert!(!pressure.saturated_at(1_400_000));
        // Every tick 30 ms late: saturated once the streak covers the window, from the first
        // late tick's due time.
        let mut now = 2_000_000;
        for _ in 0..6 {
            now += 32_000;
            pressure.sample_at(Duration::from_millis(30), now);
        }
        assert!(!pressure.saturated_at(now), "190 ms of lateness");
        for _ in 0..3 {
            now += 32_000;
            pressure.sample_at(Duration::from_millis(30), now);
        }
        assert!(pressure.saturated_at(now), "286 ms of lateness");
        pressure.sample_at(Duration::from_millis(1), now + 2_000);
        assert!(!pressure.saturated_at(now + 2_000), "a tick on time ends it");
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
