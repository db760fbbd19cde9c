//! The simulator's own tests: seeds that must pass, the seed that found the stale-timer crash,
//! and planted faults that must be found and shrunk.

use super::history::CrashPoint;
use super::*;

fn explore_or_explain(first: u64, seeds: u64, steps: usize) -> Exploration {
    let settings = Settings::default();
    let exploration = explore(first, seeds, steps, &settings);
    if let Some(outcome) = exploration.failures.first() {
        let failure = outcome.failure.as_ref().expect("a failed outcome has its failure");
        panic!("{}", describe_failure(outcome.seed, steps, failure, &settings));
    }
    exploration
}

#[test]
fn twenty_seeds_keep_every_invariant_through_crashes_deaths_and_lost_redis() {
    // `just test` explores 300 seeds of 3,000 steps with the release build; this keeps the
    // debug build honest.
    let exploration = explore_or_explain(1, 20, 1_000);
    let stats = exploration.stats;
    assert!(stats.commits > 1_000 && stats.completed > 50 && stats.credited > 50, "{stats:?}");
    assert!(stats.takeovers > 20 && stats.redis_losses > 0 && stats.node_deaths > 50, "{stats:?}");
}

/// The history the simulator shrank the stale-timer crash to (seed 1, found at step 139 of
/// 5,000 on the code before the fix): a task is placed, its node never heartbeats again, and
/// the clock jumps past both the node's expiry and the task's start lease. The expiry takes the
/// task back; the lease, handed out in the same round, then took back a task that was no longer
/// on a node: `expect("an assigned or running task has a node")`, the writer and every standby
/// after it down.
fn stale_timer_history() -> Vec<Op> {
    vec![
        Op::Step { crash: None },
        Op::Heartbeat { node: 225_386 },
        Op::Submit { organization: 832_718, group: false, owners: 4, priority: 5, slack_seconds: 4_588, replicas: 1 },
        Op::Step { crash: None },
        Op::Jump { seconds: 87 },
        Op::Step { crash: None },
    ]
}

#[test]
fn the_seed_that_found_the_stale_timer_crash_passes() {
    let settings = Settings::default();
    let outcome = run(1, &stale_timer_history(), &settings);
    assert_eq!(outcome.failure, None);
    assert_eq!((outcome.stats.takeovers, outcome.stats.crashes), (1, 0));
    let outcome = run_seed(1, 500, &settings);
    assert_eq!(outcome.failure, None, "seed 1 failed at step 139 before the fix");
}

#[test]
fn a_dead_nodes_task_whose_lease_falls_due_with_its_expiry_is_taken_back_once() {
    let mut world = World::new(1, Settings::default());
    for op in stale_timer_history() {
        world.apply(op).unwrap();
    }
    let requeued: Vec<_> = world
        .store
        .events
        .iter()
        .filter_map(|(_, event, _)| match event {
            grid_shared::events::Event::TaskRequeued(requeued) => Some(requeued.reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        requeued,
        vec![grid_shared::reasons::TaskReason::taken_back(grid_shared::reasons::TakeBack::NodeOffline)]
    );
}

#[test]
fn one_seed_replays_exactly() {
    let settings = Settings::default();
    let (first, again) = (run_seed(42, 1_500, &settings), run_seed(42, 1_500, &settings));
    assert_eq!(first.stats, again.stats);
    assert_ne!(first.stats, run_seed(43, 1_500, &settings).stats);
}

#[test]
fn a_corrupted_row_is_quarantined_and_the_grid_goes_on() {
    let settings = Settings::default();
    let mut history = history::of_seed(7, 300);
    // Work in flight, then its row corrupted and the writer crashed, then more of the seed.
    let at = history.iter().position(|op| matches!(op, Op::Step { .. })).unwrap_or(0) + 60;
    history.insert(at, Op::CorruptThenCrash { task: 0 });
    history.insert(at + 1, Op::Step { crash: None });
    let mut world = World::new(7, settings.clone());
    let mut in_flight_before = 0;
    for (index, op) in history.iter().enumerate() {
        if index == at {
            in_flight_before = world.store.in_flight().len();
        }
        world.apply(*op).unwrap_or_else(|failure| panic!("step {index} ({op:?}): {failure}"));
    }
    assert!(in_flight_before > 0, "the seed has work in flight at step {at}");
    assert!(world.stats.quarantined >= 1, "{:?}", world.stats);
    let quarantined: Vec<_> = world.store.tasks.values().filter(|row| row.stored.status == "quarantined").collect();
    assert!(!quarantined.is_empty());
    let reason = grid_shared::reasons::TaskReason::from_stored(quarantined[0].stored.reason.as_deref().unwrap());
    assert!(
        matches!(&reason, grid_shared::reasons::TaskReason::Quarantined { problem } if problem.contains("attempt")),
        "{reason:?}"
    );
    world.drain().unwrap();
}

#[test]
fn a_planted_bug_is_found_and_its_history_shrunk_to_what_it_needs() {
    let settings = Settings { planted_bug: Some(PlantedBug::StoreForgetsStartedAt), ..Settings::default() };
    let history = history::of_seed(3, 2_000);
    let failure = run(3, &history, &settings).failure.expect("a store that forgets a column is found");
    assert!(failure.what.contains("not what a standby restores"), "{failure}");
    let (shortest, shrunk) = shrink(3, &history, &failure, &settings);
    // A submission and a step or two are enough: the final drain starts and completes it.
    assert!(shortest.len() <= 4 && shortest.len() < failure.step, "{} operations: {shortest:?}", shortest.len());
    assert!(shrunk.what.contains("started_at: None"), "{shrunk}");
    assert!(run(3, &shortest, &settings).failure.is_some(), "the shrunk history fails on its own");
    assert!(run(3, &shortest, &Settings::default()).failure.is_none(), "and only because of the bug");
}

#[test]
fn crashes_at_either_side_of_a_commit_lose_nothing() {
    let settings = Settings::default();
    let mut history = history::of_seed(11, 1_000);
    for (index, op) in history.iter_mut().enumerate() {
        if let Op::Step { crash } = op {
            *crash = match index % 7 {
                0 => Some(CrashPoint::BeforeCommit),
                3 => Some(CrashPoint::AfterCommit),
                _ => None,
            };
        }
    }
    let outcome = run(11, &history, &settings);
    assert_eq!(outcome.failure, None);
    assert!(outcome.stats.crashes > 50 && outcome.stats.completed > 10, "{:?}", outcome.stats);
}
