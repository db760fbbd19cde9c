//! Where a task that names no cell goes (DESIGN §11): each cell's writer publishes its summary
//! (free cores, sun, queue, intensity) every [`CellSummary::EVERY_MS`]; one task per gateway
//! reads them all as often ([`follow`]), and each submission chooses from what it read
//! ([`grid_shared::cells::choose`]), and `GET /v1/cells` shows them. Between two reads, each
//! task sent to a cell counts as queued there, so that a burst spreads over the cells instead of
//! filling the one that looked best.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use grid_shared::cells::{CellChoice, CellName, Cells};
use grid_shared::settings::GridSettings;
use grid_shared::wire::connection::Redis;
use grid_shared::wire::summary::CellSummary;
use tokio_util::sync::CancellationToken;

/// The cells' summaries as last read, the tasks sent to each cell since, and the draws of the
/// choices made from them.
#[derive(Default)]
pub struct Summaries {
    read: RwLock<Read>,
    draws: AtomicU64,
}

#[derive(Default)]
struct Read {
    summaries: Vec<(CellName, CellSummary)>,
    sent: HashMap<CellName, u64>,
}

impl Summaries {
    /// The cell of a task that names none, with what the choice saw (each cell's summary, its
    /// queue counting the tasks this gateway sent it since); counted as sent there.
    pub fn choose(&self, cells: &Cells) -> CellChoice {
        let draw = splitmix(self.draws.fetch_add(1, Ordering::Relaxed));
        let now_ms = chrono::Utc::now().timestamp_millis();
        if cells.len() == 1 {
            return grid_shared::cells::choose(cells, &[], now_ms, draw);
        }
        let mut read = self.read.write().expect("not poisoned");
        let seen: Vec<(CellName, CellSummary)> = read
            .summaries
            .iter()
            .map(|(cell, summary)| {
                let mut summary = summary.clone();
                summary.queued_tasks += read.sent.get(cell).copied().unwrap_or(0);
                (cell.clone(), summary)
            })
            .collect();
        let choice = grid_shared::cells::choose(cells, &seen, now_ms, draw);
        *read.sent.entry(choice.cell.clone()).or_default() += 1;
        choice
    }

    /// The summaries as last read (what `GET /v1/cells` shows, and the choice starts from).
    pub fn snapshot(&self) -> Vec<(CellName, CellSummary)> {
        self.read.read().expect("not poisoned").summaries.clone()
    }

    fn replace(&self, summaries: Vec<(CellName, CellSummary)>) {
        *self.read.write().expect("not poisoned") = Read { summaries, sent: HashMap::new() };
    }
}

/// A well-mixed draw from a counter (SplitMix64's finaliser).
fn splitmix(counter: u64) -> u64 {
    let mut z = counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Reads every cell's summary every [`CellSummary::EVERY_MS`] until `stop`. A failed read keeps
/// the last summaries, which age out of the choice (and show as stale in `GET /v1/cells`).
pub async fn follow(summaries: std::sync::Arc<Summaries>, redis: Redis, grid: GridSettings, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_millis(CellSummary::EVERY_MS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while tokio::select! { () = stop.cancelled() => false, _ = ticks.tick() => true } {
        match read_all(&redis, &grid).await {
            Ok(read) => summaries.replace(read),
            Err(error) => tracing::warn!(%error, "could not read the cells' summaries"),
        }
    }
}

async fn read_all(redis: &Redis, grid: &GridSettings) -> redis::RedisResult<Vec<(CellName, CellSummary)>> {
    let mut conn = redis.get().await?;
    let mut read = Vec::with_capacity(grid.cells.len());
    for cell in grid.cells.iter() {
        let hash: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(grid.keys.cell_keys(&cell.name).summary()).query_async(&mut conn).await?;
        if let Some(summary) = CellSummary::parse(&hash) {
            read.push((cell.name.clone(), summary));
        }
    }
    Ok(read)
}
