//! What a decision takes from the world: the time, fresh ids, random draws and the carbon
//! signals (the intensity of each zone by hour), all from one [`Context`] handed to the decide
//! path. Nothing under it reads the clock, makes a UUID or
//! asks the operating system for randomness, so a seeded simulation replays any history
//! exactly (`crate::simulation`).
//!
//! The writer seeds its context once from the operating system when it takes over and sets its
//! time at each step; the simulator seeds it from the seed it explores.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use grid_shared::ids::MessageId;
use grid_shared::signals::SignalBook;

/// A small, fast, seedable generator (xoshiro256**, seeded through splitmix64). Not for
/// secrets: it draws spot checks and makes ids unique, nothing an attacker could exploit by
/// predicting them (ids are not credentials, and a node cannot see the writer's draws).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        let mut mix = seed;
        let mut next = || {
            mix = mix.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = mix;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self { state: [next(), next(), next(), next()] }
    }

    pub fn next_u64(&mut self) -> u64 {
        let [a, b, c, d] = &mut self.state;
        let result = b.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = *b << 17;
        *c ^= *a;
        *d ^= *b;
        *b ^= *c;
        *a ^= *d;
        *c ^= t;
        *d = d.rotate_left(45);
        result
    }

    /// A uniform draw in `0 .. bound` (`bound` > 0; 0 gives 0), without modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let value = self.next_u64();
            if value < zone {
                return value % bound;
            }
        }
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }

    /// A UUID with the version 4 layout, from 122 drawn bits.
    pub fn uuid(&mut self) -> uuid::Uuid {
        let bytes = (u128::from(self.next_u64()) << 64 | u128::from(self.next_u64())).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// The clock, id source, random draws and carbon signals of the decide path.
#[derive(Debug, Clone)]
pub struct Context {
    now: DateTime<Utc>,
    rng: Rng,
    /// Fetched off the decide path (the writer's signal fetcher) and swapped in between steps.
    signals: Arc<SignalBook>,
}

impl Context {
    /// A context drawing from `seed` (simulations and tests).
    pub fn seeded(seed: u64, now: DateTime<Utc>) -> Self {
        let signals =
            Arc::new(SignalBook::fixed(grid_shared::carbon::CarbonPolicy::default().grid_intensity_mg_per_kwh));
        Self { now: now.trunc_subsecs(6), rng: Rng::seeded(seed), signals }
    }

    /// A context seeded once from the operating system (a writer taking over).
    pub fn from_entropy(now: DateTime<Utc>) -> Self {
        let seed = getrandom::u64().unwrap_or_else(|_| now.timestamp_nanos_opt().unwrap_or_default() as u64);
        Self::seeded(seed, now)
    }

    /// The time decisions are made at.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// Moves the decisions' time (the writer at each step, the simulator as its clock goes), to
    /// the whole microsecond: PostgreSQL keeps no finer time, and an archived event's time is
    /// its row's column.
    pub fn set_now(&mut self, now: DateTime<Utc>) {
        self.now = now.trunc_subsecs(6);
    }

    /// The carbon signals decisions credit with.
    pub fn signals(&self) -> &Arc<SignalBook> {
        &self.signals
    }

    /// Hands the decisions a newer book of signals (the writer, when its fetcher has news).
    pub fn set_signals(&mut self, signals: Arc<SignalBook>) {
        self.signals = signals;
    }

    /// A fresh message id (an event's envelope).
    pub fn message_id(&mut self) -> MessageId {
        MessageId(self.rng.uuid())
    }

    /// A fresh UUID (a correlation id of the writer's own work).
    pub fn uuid(&mut self) -> uuid::Uuid {
        self.rng.uuid()
    }

    /// A uniform draw in 0 .. 1,000,000 (the spot check of a trusted node's result).
    pub fn draw_ppm(&mut self) -> u32 {
        u32::try_from(self.rng.below(1_000_000)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_one_sequence_and_two_seeds_two() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let (mut first, mut again, mut other) =
            (Context::seeded(7, now), Context::seeded(7, now), Context::seeded(8, now));
        let draws = |context: &mut Context| (context.message_id(), context.uuid(), context.draw_ppm());
        let a = draws(&mut first);
        assert_eq!(a, draws(&mut again));
        assert_ne!(a, draws(&mut other));
        assert_eq!(a.0.as_uuid().get_version_num(), 4);
    }

    #[test]
    fn draws_stay_in_their_bounds_and_cover_them() {
        let mut rng = Rng::seeded(1);
        let mut seen = [false; 10];
        for _ in 0..1_000 {
            let value = rng.below(10);
            seen[value as usize] = true;
        }
        assert!(seen.iter().all(|seen| *seen));
        assert_eq!(rng.below(0), 0);
        let mut context = Context::seeded(3, DateTime::<Utc>::UNIX_EPOCH);
        assert!((0..1_000).all(|_| context.draw_ppm() < 1_000_000));
    }
}
