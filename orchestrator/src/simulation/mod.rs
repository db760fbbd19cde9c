//! A deterministic simulator of the grid's core, in the manner of FoundationDB's simulation and
//! TigerBeetle's VOPR: the real decide path (model, scheduler, deciders, timers, restore from a
//! snapshot) runs in memory through seeded random histories, with everything around it
//! modelled, and its invariants are checked after every step.
//!
//! - [`history`]: the operations (submissions, consent, nodes heartbeating, working, lying,
//!   dying by the hundred and coming back, clock jumps, writer crashes, Redis lost, a corrupted
//!   row), drawn from a seed.
//! - [`world`]: the grid around the decide path (Redis, the fleet, the clock) and one writer
//!   step as `Writer::step` runs it; [`store`]: PostgreSQL as batches commit it.
//! - [`checks`]: the invariants (no panic, no refusal on unexpected state, every task in one
//!   consistent state with exactly its timers, no node over its cores, each (task, attempt)
//!   assigned once, credits exact and once with their leaves, the state a standby restores
//!   equal to the one in memory, the rows what the events replay to, nothing left open).
//!
//! A failing seed is shrunk (operations removed while it still fails) and printed with the
//! command that replays it: `just sim-seed <seed> <steps>`.

pub mod checks;
pub mod history;
pub mod store;
pub mod world;

use std::panic::AssertUnwindSafe;
use std::time::Instant;

pub use history::Op;
pub use world::{PlantedBug, Settings, Stats, World};

/// Where and why a history failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The index of the operation that failed (the history's length: at the final drain).
    pub step: usize,
    pub op: Option<Op>,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.op {
            Some(op) => write!(f, "at step {} ({op:?}): {}", self.step, self.what),
            None => write!(f, "at the end (every node back, every deadline passed): {}", self.what),
        }
    }
}

/// What one history did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub stats: Stats,
    pub failure: Option<Failure>,
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
        .unwrap_or_else(|| "a panic".to_owned())
}

/// Runs `history` on the world of `seed`, then drains it; a panic is a failure like any other.
pub fn run(seed: u64, history: &[Op], settings: &Settings) -> Outcome {
    let mut world = World::new(seed, settings.clone());
    for (step, op) in history.iter().enumerate() {
        let applied = std::panic::catch_unwind(AssertUnwindSafe(|| world.apply(*op)));
        let what = match applied {
            Ok(Ok(())) => continue,
            Ok(Err(what)) => what,
            Err(panic) => format!("panicked: {}", panic_text(panic.as_ref())),
        };
        return Outcome { seed, stats: world.stats, failure: Some(Failure { step, op: Some(*op), what }) };
    }
    let drained = std::panic::catch_unwind(AssertUnwindSafe(|| world.drain()));
    let failure = match drained {
        Ok(Ok(())) => None,
        Ok(Err(what)) => Some(Failure { step: history.len(), op: None, what }),
        Err(panic) => {
            Some(Failure { step: history.len(), op: None, what: format!("panicked: {}", panic_text(panic.as_ref())) })
        }
    };
    Outcome { seed, stats: world.stats, failure }
}

/// Runs the history of `seed` of `steps` operations.
pub fn run_seed(seed: u64, steps: usize, settings: &Settings) -> Outcome {
    run(seed, &history::of_seed(seed, steps), settings)
}

/// The shortest history found that still fails on the world of `seed`: the failing prefix,
/// then chunks of operations removed (halves, quarters, ... single ones) while it still
/// fails. Returns it with its failure.
pub fn shrink(seed: u64, history: &[Op], failure: &Failure, settings: &Settings) -> (Vec<Op>, Failure) {
    let mut current: Vec<Op> = history[..(failure.step + 1).min(history.len())].to_vec();
    let mut failure = failure.clone();
    let mut chunk = current.len().div_ceil(2).max(1);
    // Each attempt replays from the start; a budget keeps a long history's shrinking bounded.
    let mut attempts = 0;
    while chunk >= 1 && attempts < 2_000 {
        let mut removed_any = false;
        let mut start = 0;
        while start < current.len() && attempts < 2_000 {
            let end = (start + chunk).min(current.len());
            let candidate: Vec<Op> = current[..start].iter().chain(&current[end..]).copied().collect();
            attempts += 1;
            if let Some(found) = run(seed, &candidate, settings).failure {
                current = candidate[..(found.step + 1).min(candidate.len())].to_vec();
                failure = found;
                removed_any = true;
            } else {
                start = end;
            }
        }
        if !removed_any {
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
    }
    (current, failure)
}

/// What an exploration of many seeds found.
#[derive(Debug, Clone)]
pub struct Exploration {
    pub seeds: u64,
    pub steps_per_seed: usize,
    pub stats: Stats,
    pub seconds: f64,
    pub failures: Vec<Outcome>,
}

impl Exploration {
    /// Operations explored per second of this thread.
    pub fn steps_per_second(&self) -> f64 {
        self.stats.operations as f64 / self.seconds.max(1e-9)
    }
}

/// Runs seeds `first .. first + seeds`, each for `steps` operations.
pub fn explore(first: u64, seeds: u64, steps: usize, settings: &Settings) -> Exploration {
    let clock = Instant::now();
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    for seed in first..first.saturating_add(seeds) {
        let outcome = run_seed(seed, steps, settings);
        stats += outcome.stats;
        if outcome.failure.is_some() {
            failures.push(outcome);
        }
    }
    Exploration { seeds, steps_per_seed: steps, stats, seconds: clock.elapsed().as_secs_f64(), failures }
}

/// A failing seed, told so that someone can replay it: the failure, the command, the shortest
/// history that still fails.
pub fn describe_failure(seed: u64, steps: usize, failure: &Failure, settings: &Settings) -> String {
    let history = history::of_seed(seed, steps);
    let (shortest, shrunk_failure) = shrink(seed, &history, failure, settings);
    let mut text = format!(
        "seed {seed} failed {failure}\nreplay it: just sim-seed {seed} {steps}\n\
         the shortest history found that still fails ({} of {} operations, failing {shrunk_failure}):\n",
        shortest.len(),
        failure.step + 1
    );
    for (index, op) in shortest.iter().enumerate() {
        text.push_str(&format!("  {index:>5}  {op:?}\n"));
    }
    text
}

#[cfg(test)]
mod tests;
