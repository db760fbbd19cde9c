//! Given a task in some state, when a transition happens, then these events and rows.

use chrono::{DateTime, Duration, Utc};
use grid_shared::carbon::{CarbonPolicy, MicroWattHours};
use grid_shared::domain::{RejectionReason, TaskStatus};
use grid_shared::events::{Event, ReplicaNeeded, ScoreInputs, Validation};
use grid_shared::ids::{NodeId, OrganizationId, OwnerId, TaskId};
use grid_shared::messages::{TaskCompletedReport, TaskFailedReport, TaskStartedReport};
use grid_shared::proof::GENESIS_HASH;
use grid_shared::reasons::{Refusal, TakeBack, TaskReason};
use grid_shared::signals::{Basis, SignalBook, Zone, bundled_layer};

use super::*;
use crate::config::Validation as ValidationSettings;
use crate::model::{Map, Node, ProofChain, Rules, Set, Task};
use crate::scheduler::{Placement, Policy};
use crate::validation::Requirement;

pub(crate) fn rules() -> Rules {
    Rules {
        max_attempts: 3,
        requeue_backoff_ms: 500,
        start_lease_ms: 30_000,
        k_anonymity_min: 5,
        validation: ValidationSettings { trust_threshold: 0, spot_check_ppm: 0, extra_replicas: 2 },
        policy: Policy { watts_per_core: 2.0, expected_runtime: Duration::seconds(60) },
        max_milliwatts_per_core: 2_000,
        carbon: CarbonPolicy::default(),
        zones: ["BE", "DE", "FR"].map(|zone| Zone::parse(zone).unwrap()).to_vec(),
        default_zone: Zone::parse("BE").unwrap(),
        deferral: crate::config::Deferral::Solar,
        sci: crate::config::SciSettings {
            solar_intensity_mg_per_kwh: 41_000,
            default_embodied_g: 10_000,
            lifetime_ms: 5 * grid_shared::carbon::MS_PER_YEAR,
        },
        proof_difficulty: 4,
        block_max_leaves: 2_000,
        seal_interval: Duration::milliseconds(250),
        writer_name: "writer-test".to_owned(),
        cell: grid_shared::cells::CellName::default(),
        default_cell: grid_shared::cells::CellName::default(),
    }
}

pub(crate) fn queued_task(now: DateTime<Utc>) -> Task {
    Task {
        task_id: TaskId::new(),
        organization_id: OrganizationId::new(),
        status: TaskStatus::Queued,
        priority: 5,
        deadline: now + Duration::hours(1),
        submitted_at: now,
        attempts: 0,
        node_id: None,
        assigned_at: None,
        started_at: None,
        not_before: None,
        reason: None,
        requirement: Requirement { replicas: 1, quorum: 1, result_limit: 3 },
        correlation_id: uuid::Uuid::new_v4(),
        participants: Vec::new(),
        input: None,
        assignment_seq: None,
        submitted_entry_id: None,
        results: Vec::new(),
    }
}

fn node(cores: u16, trust: u32) -> Node {
    Node {
        node_id: NodeId::new(),
        owner_id: OrganizationId::new(),
        cpu_cores: cores,
        zone: None,
        embodied_g: None,
        trust,
        in_flight: Set::default(),
    }
}

fn inputs(node_id: NodeId) -> ScoreInputs {
    ScoreInputs { node_id, solar_watts: 300.0, cpu_usage: 5.0, running: 0, cpu_cores: 4, eco_score: 0.9 }
}

fn placed_on(task: &mut Task, node: &Node, at: DateTime<Utc>) -> Effects {
    let placement =
        Placement { task_id: task.task_id, node_id: node.node_id, chosen: inputs(node.node_id), runner_up: None };
    place(task, placement, at, &rules()).expect("a queued task can be placed")
}

fn completion(task: &Task, node: &Node, hash: &str, energy: i64, solar: i64) -> TaskCompletedReport {
    TaskCompletedReport {
        node_id: node.node_id,
        task_id: task.task_id,
        attempt: task.attempts,
        result_json: Some(serde_json::json!({"answer": 42})),
        result_hash: hash.to_owned(),
        energy_used: MicroWattHours(energy),
        solar_contribution: MicroWattHours(solar),
    }
}

fn kinds(effects: &Effects) -> Vec<&'static str> {
    use grid_shared::envelope::Message;
    effects.events.iter().map(|recorded| recorded.event.message_type()).collect()
}

struct World {
    nodes: Map<NodeId, Node>,
    chain: ProofChain,
    signals: SignalBook,
}

impl World {
    fn with(nodes: &[&Node]) -> Self {
        Self {
            nodes: nodes.iter().map(|node| (node.node_id, (*node).clone())).collect(),
            chain: ProofChain::new(0, GENESIS_HASH),
            signals: SignalBook::fixed(CarbonPolicy::default().grid_intensity_mg_per_kwh)
                .then(bundled_layer(Basis::Lifecycle)),
        }
    }

    fn complete_with(
        &mut self,
        task: &mut Task,
        report: impl FnOnce(&Task) -> TaskCompletedReport,
        rules: &Rules,
        now: DateTime<Utc>,
        draw_ppm: u32,
    ) -> Result<Effects, Refusal> {
        let report = report(task);
        self.complete(task, report, rules, now, draw_ppm)
    }

    fn complete(
        &mut self,
        task: &mut Task,
        report: TaskCompletedReport,
        rules: &Rules,
        now: DateTime<Utc>,
        draw_ppm: u32,
    ) -> Result<Effects, Refusal> {
        let context = CompletionContext {
            now,
            rules,
            signals: &self.signals,
            draw_ppm,
            another_owner_has_live_nodes: self.nodes.len() > 1,
        };
        complete(task, report, &mut self.nodes, &mut self.chain, &context)
    }
}

#[test]
fn placing_a_task_opens_a_new_attempt_and_tells_the_node() {
    let now = Utc::now();
    let mut task = queued_task(now);
    let pi = node(4, 0);
    let effects = placed_on(&mut task, &pi, now);
    assert_eq!(
        (task.status, task.attempts, task.node_id, task.assigned_at),
        (TaskStatus::Assigned, 1, Some(pi.node_id), Some(now))
    );
    assert_eq!(kinds(&effects), ["TaskAssigned"]);
    assert_eq!(effects.events[0].notify_node, Some(pi.node_id));
    let Event::TaskAssigned(assigned) = &effects.events[0].event else { unreachable!() };
    assert_eq!((assigned.attempt, assigned.assigned_by.as_str()), (1, "writer-test"));
}

#[test]
fn a_start_report_for_another_attempt_is_refused_and_changes_nothing() {
    let now = Utc::now();
    let mut task = queued_task(now);
    let pi = node(4, 0);
    placed_on(&mut task, &pi, now);
    let before = task.clone();
    let stale = TaskStartedReport { node_id: pi.node_id, task_id: task.task_id, attempt: 2 };
    assert_eq!(
        start(&mut task, &stale, now).unwrap_err(),
        Refusal::StaleReport { attempt: 2, node_id: pi.node_id, current_attempt: 1 }
    );
    let elsewhere = TaskStartedReport { node_id: NodeId::new(), task_id: task.task_id, attempt: 1 };
    assert!(start(&mut task, &elsewhere, now).is_err());
    assert_eq!(task, before);
}

#[test]
fn a_start_runs_the_task_once() {
    let now = Utc::now();
    let mut task = queued_task(now);
    let pi = node(4, 0);
    placed_on(&mut task, &pi, now);
    let report = TaskStartedReport { node_id: pi.node_id, task_id: task.task_id, attempt: 1 };
    let effects = start(&mut task, &report, now).unwrap();
    assert_eq!((task.status, kinds(&effects)), (TaskStatus::Running, vec!["TaskStarted"]));
    assert_eq!(
        start(&mut task, &report, now).unwrap_err(),
        Refusal::IllegalTransition { from: TaskStatus::Running, to: TaskStatus::Running }
    );
}

#[test]
fn a_plausible_single_result_completes_is_credited_and_chained() {
    let now = Utc::now();
    let mut task = queued_task(now);
    let pi = node(4, 5);
    let mut world = World::with(&[&pi]);
    placed_on(&mut task, &pi, now);
    // 4 cores × 2 W for 60 s may draw 133,333 µWh; 100,000 claimed, 60,000 of it solar.
    let report = completion(&task, &pi, "ab", 100_000, 60_000);
    let effects = world.complete(&mut task, report, &rules(), now + Duration::seconds(60), 999_999).unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(kinds(&effects), ["TaskCompleted"], "the completion records its credit");
    assert_eq!(effects.new_results.len(), 1);
    assert_eq!(effects.new_results[0].1, Verdict::Unchecked);
    let credit = &effects.credits[0];
    assert_eq!(credit.split.node_share.0 + credit.split.cooperative_share.0, credit.split.total.0);
    // The leaf takes the first place of the first block; nothing is sealed on the round trip.
    assert_eq!((credit.block_height, credit.leaf_index), (1, 0));
    assert_eq!(credit.leaf_hash, credit.leaf.hash());
    assert_eq!((credit.leaf.solar.0, credit.leaf.energy.0, credit.leaf.attempt), (60_000, 100_000, 1));
    assert_eq!((world.chain.height, world.chain.open.leaves.clone()), (0, vec![credit.leaf_hash]));
    let Event::TaskCompleted(completed) = &effects.events[0].event else { unreachable!() };
    let credits = completed.credits.as_ref().expect("a credited completion records its credits");
    assert_eq!((credits.nodes.len(), credits.nodes[0].node_id, credits.nodes[0].split), (1, pi.node_id, credit.split));
    let position = &credits.nodes[0].leaf;
    assert_eq!((position.block_height, position.leaf_index), (1, 0));
    assert_eq!(position.leaf_hash, hex::encode(credit.leaf_hash));
    assert_eq!(effects.result.as_ref().map(|result| result.result_hash.as_str()), Some("ab"));
}

#[test]
fn each_result_is_credited_at_its_own_zone_and_hour_and_says_so() {
    let rules = rules();
    let now: DateTime<Utc> = "2026-06-21T12:20:00Z".parse().unwrap();
    let mut task = queued_task(now);
    task.requirement = Requirement { replicas: 2, quorum: 2, result_limit: 3 };
    let german = Node { zone: Some(Zone::parse("DE").unwrap()), ..node(4, 5) };
    let french = Node { zone: Some(Zone::parse("FR").unwrap()), ..node(4, 5) };
    let mut world = World::with(&[&german, &french]);
    placed_on(&mut task, &german, now);
    let minute = now + Duration::seconds(60);
    let report = |task: &Task| completion(task, &german, "ab", 100_000, 60_000);
    world.complete_with(&mut task, report, &rules, minute, 0).unwrap();
    placed_on(&mut task, &french, minute);
    let later = minute + Duration::seconds(60);
    let report = completion(&task, &french, "ab", 100_000, 60_000);
    let effects = world.complete(&mut task, report, &rules, later, 0).unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    let hour: DateTime<Utc> = "2026-06-21T12:00:00Z".parse().unwrap();
    let mut seen = Vec::new();
    for (credit, zone) in effects.credits.iter().zip(["DE", "FR"]) {
        let basis = credit.leaf.basis.as_ref().expect("a credit records its basis");
        let expected = world.signals.lookup(&Zone::parse(zone).unwrap(), later);
        assert_eq!((basis.zone.as_str(), basis.hour), (zone, hour));
        assert_eq!(basis.intensity_mg_per_kwh, expected.intensity_mg_per_kwh);
        assert_eq!(basis.intensity_source.as_str(), "file:carbon-intensity-synthetic-2026.csv:lifecycle");
        assert_eq!(credit.split, basis.split(MicroWattHours(60_000)));
        assert_eq!(credit.leaf.misreckoned(), None);
        assert!(credit.leaf.line().starts_with("kgp3-leaf|"));
        seen.push(credit.split.carbon_saved.0);
    }
    assert!(seen[0] > 3 * seen[1], "DE's grid at noon emits more than FR's: {seen:?}");
    // The task's SCI: both results' grid energy (40 mWh each) at their zone's intensity, their
    // sun (60 mWh each) at 41 g/kWh, and the French node's embodied share for its minute.
    let intensity = |zone: &str| world.signals.lookup(&Zone::parse(zone).unwrap(), later).intensity_mg_per_kwh;
    let operational = (40_000 * intensity("DE") / 1_000 + 60_000 * 41_000 / 1_000)
        + (40_000 * intensity("FR") / 1_000 + 60_000 * 41_000 / 1_000);
    let embodied = grid_shared::carbon::Sci::embodied(10_000, 60_000, 5 * grid_shared::carbon::MS_PER_YEAR, 4);
    let sci = effects.result.as_ref().and_then(|result| result.sci).expect("a completed task has its SCI");
    assert_eq!((sci.operational_ng, sci.embodied_ng), (operational, embodied));
    let signals: Vec<_> = effects
        .events
        .iter()
        .filter_map(|recorded| match &recorded.event {
            Event::TaskCompleted(completed) => Some(completed.credits_distributed()),
            _ => None,
        })
        .flatten()
        .map(|credited| {
            assert_eq!(credited.recomputed(), credited.split, "replay recomputes the same credit");
            credited.signal.as_ref().map(|signal| signal.zone.to_string())
        })
        .collect();
    assert_eq!(signals, [Some("DE".to_owned()), Some("FR".to_owned())]);
}

#[test]
fn energy_the_cores_could_not_draw_completes_the_task_but_earns_nothing() {
    let now = Utc::now();
    let mut task = queued_task(now);
    let pi = node(4, 5);
    let mut world = World::with(&[&pi]);
    placed_on(&mut task, &pi, now);
    let report = completion(&task, &pi, "ab", 10_000_000, 0);
    let effects = world.complete(&mut task, report, &rules(), now + Duration::seconds(1), 999_999).unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    let Some(TaskReason::NotCredited { detail }) = &task.reason else { panic!("{:?}", task.reason) };
    assert!(detail.contains("exceeds what 4 cores can draw"), "{detail}");
    assert!(effects.credits.is_empty());
    assert_eq!(kinds(&effects), ["TaskCompleted"]);
    assert_eq!(world.chain, ProofChain::new(0, GENESIS_HASH));
}

#[test]
fn an_untrusted_nodes_result_waits_for_a_second_opinion_on_another_owner() {
    let now = Utc::now();
    let mut rules = rules();
    rules.validation.trust_threshold = 3;
    let mut task = queued_task(now);
    let (pi, other) = (node(4, 0), node(4, 9));
    let mut world = World::with(&[&pi, &other]);
    placed_on(&mut task, &pi, now);
    let later = now + Duration::seconds(1);
    let effects =
        world.complete_with(&mut task, |task| completion(task, &pi, "ab", 1, 0), &rules, later, 999_999).unwrap();
    assert_eq!((task.status, task.node_id, task.results.len()), (TaskStatus::Queued, None, 1));
    assert_eq!(task.requirement.quorum, 2);
    assert_eq!(task.excluded_owners().collect::<Vec<_>>(), [pi.owner_id]);
    assert_eq!(effects.new_results[0].1, Verdict::Pending);
    let Event::TaskResultRecorded(recorded) = &effects.events[0].event else { panic!("{effects:?}") };
    assert_eq!(recorded.needed, ReplicaNeeded::UntrustedNode { trust: 0, threshold: 3 });

    // The second opinion agrees: both nodes gain trust and both are credited.
    placed_on(&mut task, &other, now);
    let effects = world
        .complete_with(&mut task, |task| completion(task, &other, "ab", 1, 1), &rules, now + Duration::seconds(1), 0)
        .unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(effects.verdicts, vec![(1, Verdict::Agreed)]);
    assert_eq!(effects.new_results[0].1, Verdict::Agreed);
    assert_eq!(effects.trust, vec![(pi.node_id, 1), (other.node_id, 10)]);
    let credited: Vec<NodeId> = effects.credits.iter().map(|credit| credit.leaf.node_id).collect();
    assert_eq!(credited, [pi.node_id, other.node_id], "every agreeing, plausible result");
    assert_eq!((effects.credits[0].leaf_index, effects.credits[1].leaf_index), (0, 1));
    assert!(task.results.is_empty());
}

#[test]
fn without_another_owner_the_check_is_skipped_and_recorded() {
    let now = Utc::now();
    let mut rules = rules();
    rules.validation.trust_threshold = 3;
    let mut task = queued_task(now);
    let pi = node(4, 0);
    let mut world = World::with(&[&pi]);
    placed_on(&mut task, &pi, now);
    let effects = world.complete_with(&mut task, |task| completion(task, &pi, "ab", 1, 0), &rules, now, 0).unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    let Event::TaskCompleted(completed) = &effects.events[0].event else { unreachable!() };
    let Some(Validation::Unchecked { check_skipped, .. }) = &completed.validation else { panic!() };
    assert_eq!(check_skipped.as_deref(), Some("no node of another owner is online"));
}

#[test]
fn disagreeing_results_up_to_the_limit_fail_the_task_with_no_quorum() {
    let now = Utc::now();
    let mut task = queued_task(now);
    task.requirement = Requirement { replicas: 2, quorum: 2, result_limit: 2 };
    let (a, b) = (node(4, 1), node(4, 1));
    let mut world = World::with(&[&a, &b]);
    placed_on(&mut task, &a, now);
    world.complete_with(&mut task, |task| completion(task, &a, "aa", 1, 1), &rules(), now, 0).unwrap();
    placed_on(&mut task, &b, now);
    let effects = world.complete_with(&mut task, |task| completion(task, &b, "bb", 1, 1), &rules(), now, 0).unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.reason, Some(TaskReason::NoQuorum { results: 2, distinct_hashes: 2, quorum: 2 }));
    assert_eq!(effects.verdicts, vec![(1, Verdict::Inconclusive)]);
    assert_eq!(effects.new_results[0].1, Verdict::Inconclusive);
    assert!(effects.credits.is_empty() && effects.trust.is_empty());
    assert!(effects.dead_letter.is_some());
    assert_eq!(world.nodes[&a.node_id].trust, 1, "no quorum changes no one's trust");
}

#[test]
fn a_node_failure_requeues_with_a_growing_backoff_until_the_attempt_limit() {
    let now = Utc::now();
    let rules = rules();
    let mut task = queued_task(now);
    let pi = node(2, 0);
    for attempt in 1..=2 {
        placed_on(&mut task, &pi, now);
        let report = TaskFailedReport { node_id: pi.node_id, task_id: task.task_id, attempt, error: "oom".into() };
        let effects = fail_report(&mut task, &report, now, &rules).unwrap();
        assert_eq!((task.status, task.node_id), (TaskStatus::Queued, None));
        let expected_backoff = 500 * (1 << (attempt - 1));
        assert_eq!(task.not_before, Some(now + Duration::milliseconds(expected_backoff)));
        let Event::TaskRequeued(requeued) = &effects.events[0].event else { unreachable!() };
        assert_eq!((requeued.retry_after_ms, effects.events[0].notify_node), (expected_backoff, None));
        task.not_before = None;
    }
    placed_on(&mut task, &pi, now);
    let effects = take_back(&mut task, TakeBack::StartLeaseExpired, now, &rules, true).unwrap();
    let exhausted = TaskReason::AttemptsExhausted { attempts: 3, last: TakeBack::StartLeaseExpired };
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.reason.as_ref(), Some(&exhausted));
    assert_eq!(effects.events[0].notify_node, Some(pi.node_id));
    assert_eq!(effects.dead_letter, Some(exhausted));
}

#[test]
fn a_recorded_replica_is_not_a_failed_attempt() {
    let now = Utc::now();
    let mut task = queued_task(now);
    let pi = node(2, 0);
    placed_on(&mut task, &pi, now);
    task.results.push(TaskResult {
        attempt: 1,
        node_id: pi.node_id,
        owner_id: pi.owner_id,
        result_hash: "ab".into(),
        energy: MicroWattHours(1),
        solar: MicroWattHours(0),
        refusal: None,
    });
    task.attempts = 3;
    take_back(&mut task, TakeBack::NodeOffline, now, &rules(), false).unwrap();
    assert_eq!(task.status, TaskStatus::Queued, "two failures of three attempts");
}

#[test]
fn taking_back_a_task_that_is_not_on_a_node_is_refused_and_changes_nothing() {
    let now = Utc::now();
    let mut task = queued_task(now);
    let pi = node(2, 0);
    placed_on(&mut task, &pi, now);
    take_back(&mut task, TakeBack::NodeOffline, now, &rules(), false).unwrap();
    let before = task.clone();
    // The node's expiry took it back; its start lease, due in the same round, comes after.
    let refusal = take_back(&mut task, TakeBack::StartLeaseExpired, now, &rules(), true).unwrap_err();
    assert!(refusal.is_invariant(), "{refusal:?}");
    assert_eq!(task, before);
    let placement =
        Placement { task_id: task.task_id, node_id: pi.node_id, chosen: inputs(pi.node_id), runner_up: None };
    task.status = TaskStatus::Running;
    assert!(place(&mut task, placement, now, &rules()).unwrap_err().is_invariant());
}

#[test]
fn cancelling_tells_the_node_that_holds_the_task_and_not_a_final_one() {
    let now = Utc::now();
    let mut queued = queued_task(now);
    let effects = cancel(&mut queued, TaskReason::CancelledByRequest).unwrap();
    assert_eq!((queued.status, effects.events[0].notify_node), (TaskStatus::Cancelled, None));
    assert!(matches!(
        cancel(&mut queued, TaskReason::CancelledByRequest).unwrap_err(),
        Refusal::IllegalTransition { from: TaskStatus::Cancelled, .. }
    ));

    let mut running = queued_task(now);
    let pi = node(2, 0);
    placed_on(&mut running, &pi, now);
    running.results.push(TaskResult {
        attempt: 0,
        node_id: NodeId::new(),
        owner_id: OrganizationId::new(),
        result_hash: "aa".into(),
        energy: MicroWattHours(1),
        solar: MicroWattHours(1),
        refusal: None,
    });
    let effects = cancel(&mut running, TaskReason::ConsentRevoked).unwrap();
    assert_eq!(effects.events[0].notify_node, Some(pi.node_id));
    assert_eq!(effects.verdicts, vec![(0, Verdict::Inconclusive)]);
    assert_eq!(running.reason, Some(TaskReason::ConsentRevoked));
}

#[test]
fn a_passed_deadline_fails_the_task_and_tells_its_node() {
    let now = Utc::now();
    let mut task = queued_task(now);
    let pi = node(2, 0);
    placed_on(&mut task, &pi, now);
    let effects = deadline_passed(&mut task);
    assert_eq!((task.status, task.reason), (TaskStatus::Failed, Some(TaskReason::DeadlineExceeded)));
    assert_eq!(effects.events[0].notify_node, Some(pi.node_id));
}

#[test]
fn admission_checks_organisation_deadline_owners_anonymity_then_consent() {
    let now = Utc::now();
    let rules = rules();
    let owner = OwnerId::new();
    let admission = |organization_exists, node_owners, without_consent| Admission {
        now,
        organization_exists,
        node_owners,
        without_consent,
        rules: &rules,
    };
    let later = now + Duration::hours(1);
    assert_eq!(
        admission_problem(&admission(false, 3, None), later, 1, 0, false),
        Some(RejectionReason::UnknownOrganization)
    );
    assert_eq!(admission_problem(&admission(true, 3, None), now, 1, 0, false), Some(RejectionReason::DeadlinePassed));
    assert_eq!(
        admission_problem(&admission(true, 1, None), later, 2, 0, false),
        Some(RejectionReason::NotEnoughNodeOwners { replicas: 2, owners: 1 })
    );
    assert_eq!(
        admission_problem(&admission(true, 1, Some(owner)), later, 1, 4, true),
        Some(RejectionReason::KAnonymityViolated { min: 5, got: 4 })
    );
    assert_eq!(
        admission_problem(&admission(true, 1, Some(owner)), later, 1, 5, true),
        Some(RejectionReason::ConsentNotGranted { owner_id: owner })
    );
    assert_eq!(admission_problem(&admission(true, 1, None), later, 1, 5, true), None);
}

#[test]
fn energy_within_the_bound_is_credited() {
    // 4 cores at 2 W for 1.8 s may draw at most 4 × 2000 × 1800 / 3600 = 4000 µWh.
    let check = check_energy(MicroWattHours(4_000), MicroWattHours(1_000), 1_800, 4, 2_000);
    assert_eq!(check.energy_bound, MicroWattHours(4_000));
    assert_eq!(check.refusal, None);
}

#[test]
fn more_solar_than_energy_is_refused() {
    let check = check_energy(MicroWattHours(10), MicroWattHours(11), 1_000, 4, 2_000);
    assert!(check.refusal.unwrap().contains("solar contribution"));
}
