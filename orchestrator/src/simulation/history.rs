//! A history: the operations a simulated grid goes through, drawn from a seed. Each names its
//! targets by a number taken modulo what exists when it runs (the 3rd node, the 17th task), so
//! that a history with operations removed still means something: shrinking removes operations
//! and replays what is left.

use crate::model::context::Rng;

/// Where in a writer's step it crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Decided, not committed: the batch is lost, its entries are read again by the standby.
    BeforeCommit,
    /// Committed, neither published nor acknowledged: the standby publishes the events and
    /// acknowledges the entries as redeliveries.
    AfterCommit,
}

/// What a node does with one of its assignments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Start,
    /// Completes with the result every honest node computes.
    Complete,
    /// Completes with another hash (a faulty or dishonest node).
    CompleteWrongly,
    /// Completes claiming more energy (and sun) than its cores can draw.
    CompleteImplausibly,
    Fail,
    /// Sends its last report again (an HTTP retry).
    Repeat,
    /// Reports an earlier attempt of the task (a node that was too slow).
    ReportStaleAttempt,
    /// Another node reports this assignment as its own.
    ReportAsAnotherNode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The writer runs one step (read, decide, commit, publish, acknowledge), crashing at the
    /// point given; a standby then takes over from what was committed.
    Step {
        crash: Option<CrashPoint>,
    },
    /// The clock moves on.
    Tick {
        millis: u32,
    },
    /// The clock jumps (a paused VM, a long GC, a slow disk).
    Jump {
        seconds: u32,
    },
    /// Every node that is up sends a heartbeat (its sun and load as they are now).
    HeartbeatAll,
    Heartbeat {
        node: u32,
    },
    /// A node reads its channel and does something with one of its assignments.
    Work {
        node: u32,
        assignment: u32,
        work: Work,
    },
    Submit {
        organization: u32,
        group: bool,
        owners: u8,
        priority: u8,
        slack_seconds: u32,
        replicas: u8,
    },
    /// A cancellation, by the task's organisation or (to be refused) by another.
    Cancel {
        task: u32,
        by_owner: bool,
    },
    Grant {
        organization: u32,
        owner: u32,
    },
    Revoke {
        organization: u32,
        owner: u32,
    },
    Register {
        organization: u32,
        cores: u8,
        solar: bool,
    },
    /// A node dies (kill -9, power cut): no more heartbeats or reports; it forgets its work.
    Kill {
        node: u32,
    },
    /// Nodes die together, this share of them in percent (a neighbourhood loses power).
    KillMany {
        percent: u8,
    },
    Revive {
        node: u32,
    },
    ReviveAll,
    /// Redis restarts empty: every entry not acknowledged, every live state and channel is lost.
    LoseRedis,
    /// A row of an open task is corrupted in PostgreSQL (by hand, a bad restore), then the
    /// writer crashes: the standby must quarantine it and go on.
    CorruptThenCrash {
        task: u32,
    },
}

impl Op {
    /// One operation drawn with the weights of a busy grid.
    pub fn draw(rng: &mut Rng) -> Self {
        let pick = |rng: &mut Rng| u32::try_from(rng.below(1 << 20)).unwrap_or(0);
        let roll = rng.below(1_000);
        match roll {
            0..=279 => {
                let crash = match rng.below(100) {
                    0 => Some(CrashPoint::BeforeCommit),
                    1 => Some(CrashPoint::AfterCommit),
                    _ => None,
                };
                Self::Step { crash }
            }
            280..=449 => Self::Tick { millis: u32::try_from(rng.below(1_000)).unwrap_or(0) + 1 },
            450..=459 => Self::Jump { seconds: u32::try_from(rng.below(300)).unwrap_or(0) + 10 },
            460..=549 => Self::HeartbeatAll,
            550..=569 => Self::Heartbeat { node: pick(rng) },
            570..=819 => {
                let work = match rng.below(100) {
                    0..=24 => Work::Start,
                    25..=69 => Work::Complete,
                    70..=74 => Work::CompleteWrongly,
                    75..=79 => Work::CompleteImplausibly,
                    80..=86 => Work::Fail,
                    87..=92 => Work::Repeat,
                    93..=96 => Work::ReportStaleAttempt,
                    _ => Work::ReportAsAnotherNode,
                };
                Self::Work { node: pick(rng), assignment: pick(rng), work }
            }
            820..=909 => Self::Submit {
                organization: pick(rng),
                group: rng.chance(1, 4),
                owners: u8::try_from(rng.below(5)).unwrap_or(0) + 3,
                priority: u8::try_from(rng.below(11)).unwrap_or(5),
                slack_seconds: match rng.below(4) {
                    0 => u32::try_from(rng.below(60)).unwrap_or(0) + 1,
                    1 => u32::try_from(rng.below(600)).unwrap_or(0) + 60,
                    _ => u32::try_from(rng.below(7_200)).unwrap_or(0) + 600,
                },
                replicas: if rng.chance(1, 6) { u8::try_from(rng.below(3)).unwrap_or(0) + 1 } else { 1 },
            },
            910..=929 => Self::Cancel { task: pick(rng), by_owner: !rng.chance(1, 5) },
            930..=939 => Self::Grant { organization: pick(rng), owner: pick(rng) },
            940..=949 => Self::Revoke { organization: pick(rng), owner: pick(rng) },
            950..=954 => Self::Register {
                organization: pick(rng),
                cores: u8::try_from(rng.below(4)).unwrap_or(0) + 1,
                solar: rng.chance(2, 3),
            },
            955..=969 => Self::Kill { node: pick(rng) },
            970..=972 => Self::KillMany { percent: u8::try_from(rng.below(80)).unwrap_or(0) + 20 },
            973..=989 => Self::Revive { node: pick(rng) },
            990..=994 => Self::ReviveAll,
            995..=997 => Self::LoseRedis,
            _ => Self::CorruptThenCrash { task: pick(rng) },
        }
    }
}

/// The history of a seed: `steps` operations.
pub fn of_seed(seed: u64, steps: usize) -> Vec<Op> {
    let mut rng = Rng::seeded(seed ^ 0x005e_ed0f_4157_0f1e);
    (0..steps).map(|_| Op::draw(&mut rng)).collect()
}
