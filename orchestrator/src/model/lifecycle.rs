//! A task's life, as pure transitions: `Queued → Assigned → Running → Completed | Failed`,
//! `Cancelled` from any open state, `Rejected` at admission, and back to `Queued` when a node
//! fails it, dies, or leaves it unstarted past its lease (with a backoff, until the attempt
//! limit), or when a replica is needed.
//!
//! Each transition changes the task in place and returns its [`Effects`]: the events it
//! records (with the node to tell, if any) and the rows it changes besides the task's own (task
//! results, verdicts, credits, trust). The writer writes the task's row from the task as it is
//! afterwards. A refusal (a stale report, an illegal transition, a state the transition does
//! not expect) is an `Err(Refusal)`, and changes nothing: no transition panics.

use chrono::{DateTime, Duration, Utc};
use grid_shared::blocks::{CreditBasis, Leaf};
use grid_shared::carbon::{CreditSplit, MicroWattHours, Sci};
use grid_shared::domain::{RejectionReason, TaskStatus};
use grid_shared::events::{
    Credits, EnergyCheck, Event, LeafPosition, NodeCredit, NodeTrustChanged, TaskAssigned, TaskCancelled,
    TaskCompleted, TaskFailed, TaskRequeued, TaskResultRecorded, TaskStarted, Validation,
};
use grid_shared::ids::{NodeId, OwnerId, TaskId};
use grid_shared::messages::{TaskCompletedReport, TaskFailedReport, TaskStartedReport};
use grid_shared::proof::storable_time;
use grid_shared::reasons::{Refusal, TakeBack, TaskReason};
use grid_shared::signals::{Signal, SignalBook};

use super::{Node, ProofChain, Rules, Task, TaskResult};
use crate::scheduler::{DEFERRAL_SAFETY_RUNTIMES, Placement};
use crate::validation::{self, Outcome, Reported, SingleCheck};

const MAX_BACKOFF_MS: i64 = 60_000;

/// An event and the node that must hear of it on its task channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub event: Event,
    pub notify_node: Option<NodeId>,
}

impl Recorded {
    fn new(event: Event) -> Self {
        Self { event, notify_node: None }
    }

    fn to_node(event: Event, node_id: Option<NodeId>) -> Self {
        Self { event, notify_node: node_id }
    }
}

/// A result's verdict, as stored in `task_result.verdict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pending,
    Agreed,
    Disagreed,
    Inconclusive,
    Unchecked,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Agreed => "agreed",
            Self::Disagreed => "disagreed",
            Self::Inconclusive => "inconclusive",
            Self::Unchecked => "unchecked",
        }
    }
}

/// A credited result: the ledger's two entries and its leaf, with the leaf's place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    pub split: CreditSplit,
    pub leaf: Leaf,
    pub block_height: i64,
    pub leaf_index: i64,
    pub leaf_hash: grid_shared::merkle::Hash,
}

/// What the task's row records of its final result.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalResult {
    pub result_hash: String,
    pub energy: MicroWattHours,
    pub solar: MicroWattHours,
    pub sci: Option<Sci>,
}

/// What a transition changes besides the task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    pub events: Vec<Recorded>,
    /// New `task_result` rows, with the verdict they are stored with and the result's JSON.
    pub new_results: Vec<(TaskResult, Verdict, Option<serde_json::Value>)>,
    /// Verdicts decided for results stored earlier, by attempt.
    pub verdicts: Vec<(i32, Verdict)>,
    pub credits: Vec<Credit>,
    /// Nodes whose trust changed, with the new value.
    pub trust: Vec<(NodeId, u32)>,
    /// Set when the task failed for good: the reason, for the dead-letter stream.
    pub dead_letter: Option<TaskReason>,
    /// Set when the task completed.
    pub result: Option<FinalResult>,
}

impl Effects {
    fn with(event: Recorded) -> Self {
        Self { events: vec![event], ..Self::default() }
    }
}

// ---------------------------------------------------------------------------------------------
// Admission
// ---------------------------------------------------------------------------------------------

/// What admission knows of the grid.
pub struct Admission<'a> {
    pub now: DateTime<Utc>,
    pub organization_exists: bool,
    /// Distinct owners with nodes (replicas need as many).
    pub node_owners: usize,
    /// The first participant without consent in the submitting organisation, if any.
    pub without_consent: Option<OwnerId>,
    pub rules: &'a Rules,
}

/// Why a submission is not queued, if it is not: checked in this order.
pub fn admission_problem(
    admission: &Admission<'_>,
    deadline: DateTime<Utc>,
    replicas: u8,
    distinct_participants: usize,
    is_group: bool,
) -> Option<RejectionReason> {
    if !admission.organization_exists {
        return Some(RejectionReason::UnknownOrganization);
    }
    if deadline <= admission.now {
        return Some(RejectionReason::DeadlinePassed);
    }
    if replicas > 1 && admission.node_owners < usize::from(replicas) {
        return Some(RejectionReason::NotEnoughNodeOwners { replicas, owners: admission.node_owners as u64 });
    }
    if !is_group {
        return None;
    }
    let min = admission.rules.k_anonymity_min;
    if distinct_participants < min {
        return Some(RejectionReason::KAnonymityViolated { min, got: distinct_participants });
    }
    admission.without_consent.map(|owner_id| RejectionReason::ConsentNotGranted { owner_id })
}

// ---------------------------------------------------------------------------------------------
// Placement and start
// ---------------------------------------------------------------------------------------------

/// A refusal for a transition that met a state it does not expect.
fn unexpected(task: &Task, what: &str) -> Refusal {
    Refusal::Invariant {
        detail: format!(
            "{what}: task {} is {} on node {:?} at attempt {}",
            task.task_id, task.status, task.node_id, task.attempts
        ),
    }
}

/// `Queued → Assigned` on the node the scheduler chose: a new attempt, which fences off the
/// reports of earlier ones.
pub fn place(task: &mut Task, placement: Placement, now: DateTime<Utc>, rules: &Rules) -> Result<Effects, Refusal> {
    if task.status != TaskStatus::Queued || task.node_id.is_some() {
        return Err(unexpected(task, "placing a task that is not queued"));
    }
    task.status = TaskStatus::Assigned;
    task.attempts += 1;
    task.node_id = Some(placement.node_id);
    task.assigned_at = Some(now);
    task.started_at = None;
    task.reason = None;
    task.not_before = None;
    let event = Event::TaskAssigned(TaskAssigned {
        task_id: task.task_id,
        node_id: placement.node_id,
        attempt: task.attempts,
        deadline: task.deadline,
        chosen: placement.chosen,
        runner_up: placement.runner_up,
        assigned_by: rules.writer_name.clone(),
    });
    Ok(Effects::with(Recorded::to_node(event, Some(placement.node_id))))
}

/// Refuses a report that is not about the task's current assignment (same node, same attempt).
fn check_assignment(task: &Task, node_id: NodeId, attempt: i32) -> Result<(), Refusal> {
    if task.node_id != Some(node_id) || task.attempts != attempt {
        return Err(Refusal::StaleReport { attempt, node_id, current_attempt: task.attempts });
    }
    Ok(())
}

/// `Assigned → Running`.
pub fn start(task: &mut Task, report: &TaskStartedReport, now: DateTime<Utc>) -> Result<Effects, Refusal> {
    check_assignment(task, report.node_id, report.attempt)?;
    task.status
        .transition(TaskStatus::Running)
        .map_err(|illegal| Refusal::IllegalTransition { from: illegal.from, to: illegal.to })?;
    task.status = TaskStatus::Running;
    task.started_at = Some(now);
    let event =
        Event::TaskStarted(TaskStarted { task_id: task.task_id, node_id: report.node_id, attempt: report.attempt });
    Ok(Effects::with(Recorded::new(event)))
}

// ---------------------------------------------------------------------------------------------
// Completion
// ---------------------------------------------------------------------------------------------

/// `solar ≤ energy ≤ cpu_cores × max_mW_per_core × runtime_ms / 3600`, with the runtime measured
/// by the orchestrator (from assignment to report), not claimed by the node.
pub fn check_energy(
    energy: MicroWattHours,
    solar: MicroWattHours,
    runtime_ms: i64,
    cpu_cores: u16,
    max_milliwatts_per_core: i64,
) -> EnergyCheck {
    let bound = i128::from(cpu_cores) * i128::from(max_milliwatts_per_core) * i128::from(runtime_ms.max(0)) / 3600;
    let energy_bound = MicroWattHours(i64::try_from(bound).unwrap_or(i64::MAX));
    let refusal = if solar > energy {
        Some(format!("solar contribution {} µWh exceeds the energy used {} µWh", solar.0, energy.0))
    } else if energy > energy_bound {
        Some(format!(
            "energy {} µWh exceeds what {cpu_cores} cores can draw in {runtime_ms} ms ({} µWh)",
            energy.0, energy_bound.0
        ))
    } else {
        None
    };
    EnergyCheck { runtime_ms, cpu_cores, max_milliwatts_per_core, energy_bound, refusal }
}

/// What a completion needs to know besides the task.
pub struct CompletionContext<'a> {
    pub now: DateTime<Utc>,
    pub rules: &'a Rules,
    /// The intensity of each zone by hour, that credits use.
    pub signals: &'a SignalBook,
    /// A uniform draw in 0 .. 1,000,000 for the spot check.
    pub draw_ppm: u32,
    /// Whether a node of an owner other than the reporter's is live.
    pub another_owner_has_live_nodes: bool,
}

/// A completion report for the current assignment: the result is recorded and validated (see
/// [`crate::validation`]). The task completes (agreeing, plausible results are credited and
/// chained), waits for another replica, or fails with `no_quorum`.
pub fn complete(
    task: &mut Task,
    report: TaskCompletedReport,
    nodes: &mut super::Map<NodeId, Node>,
    chain: &mut ProofChain,
    context: &CompletionContext<'_>,
) -> Result<Effects, Refusal> {
    check_assignment(task, report.node_id, report.attempt)?;
    if !matches!(task.status, TaskStatus::Assigned | TaskStatus::Running) {
        return Err(unexpected(task, "a completion for a task that is not on its node"));
    }
    let Some(reporter) = nodes.get(&report.node_id) else {
        return Err(Refusal::UnknownNode { node_id: report.node_id });
    };
    let rules = context.rules;
    let assigned_at = task.assigned_at.unwrap_or(context.now);
    let runtime_ms = (context.now - assigned_at).num_milliseconds();
    let check = check_energy(
        report.energy_used,
        report.solar_contribution,
        runtime_ms,
        reporter.cpu_cores,
        rules.max_milliwatts_per_core,
    );
    let this = TaskResult {
        attempt: report.attempt,
        node_id: report.node_id,
        owner_id: reporter.owner_id,
        result_hash: report.result_hash.clone(),
        energy: report.energy_used,
        solar: report.solar_contribution,
        refusal: check.refusal.clone(),
    };
    let mut results = task.results.clone();
    results.push(this.clone());
    let single = (task.requirement.replicas == 1 && results.len() == 1).then(|| SingleCheck {
        trust: reporter.trust,
        draw_ppm: context.draw_ppm,
        impossible: second_opinion_impossible(task, reporter, context),
    });
    let reported: Vec<Reported<'_>> =
        results.iter().map(|result| Reported { node_id: result.node_id, result_hash: &result.result_hash }).collect();
    let outcome = validation::decide(task.requirement, &reported, single.as_ref(), &rules.validation);
    let mut effects = Effects::default();
    match outcome {
        Outcome::AnotherReplica { needed, requirement } => {
            effects.new_results.push((this.clone(), Verdict::Pending, report.result_json));
            task.results.push(this);
            task.requirement = requirement;
            back_to_queue(task, None, None);
            let event = Event::TaskResultRecorded(TaskResultRecorded {
                task_id: task.task_id,
                node_id: report.node_id,
                attempt: report.attempt,
                result_hash: report.result_hash,
                energy_used: report.energy_used,
                solar_contribution: report.solar_contribution,
                check,
                quorum: requirement.quorum,
                results: u8::try_from(results.len()).unwrap_or(u8::MAX),
                result_limit: requirement.result_limit,
                needed,
            });
            effects.events.push(Recorded::new(event));
        }
        Outcome::NoQuorum { results: count, distinct_hashes, quorum } => {
            let reason =
                TaskReason::NoQuorum { results: count as u64, distinct_hashes: distinct_hashes as u64, quorum };
            effects.new_results.push((this, Verdict::Inconclusive, report.result_json));
            effects.verdicts = task.results.iter().map(|result| (result.attempt, Verdict::Inconclusive)).collect();
            task.results.clear();
            finish(task, TaskStatus::Failed, Some(reason.clone()));
            let event = Event::TaskFailed(TaskFailed {
                task_id: task.task_id,
                node_id: Some(report.node_id),
                attempt: report.attempt,
                reason: reason.clone(),
            });
            effects.events.push(Recorded::new(event));
            effects.dead_letter = Some(reason);
        }
        Outcome::Complete { result_hash: winner, validation } => {
            let validated = matches!(validation, Validation::Quorum { .. });
            let verdict_of = |result: &TaskResult| match (validated, result.result_hash == winner) {
                (false, _) => Verdict::Unchecked,
                (true, true) => Verdict::Agreed,
                (true, false) => Verdict::Disagreed,
            };
            effects.verdicts = task.results.iter().map(|result| (result.attempt, verdict_of(result))).collect();
            effects.new_results.push((this.clone(), verdict_of(&this), report.result_json));
            let sci = task_sci(&results, reporter, runtime_ms, nodes, context);
            effects.result = Some(FinalResult {
                result_hash: report.result_hash.clone(),
                energy: report.energy_used,
                solar: report.solar_contribution,
                sci: Some(sci),
            });
            // The row keeps why the energy earns nothing, or no reason at all.
            task.reason = check.refusal.clone().map(|detail| TaskReason::NotCredited { detail });
            task.status = TaskStatus::Completed;
            // The agreeing results are credited first, so that the completion records its
            // credits (and their leaves, in the order appended) in one event.
            let mut credited = Vec::new();
            for result in results.iter().filter(|result| result.result_hash == winner && result.refusal.is_none()) {
                let zone =
                    nodes.get(&result.node_id).and_then(|node| node.zone.as_ref()).unwrap_or(&rules.default_zone);
                let signal = context.signals.lookup(zone, context.now);
                let credit = credit(task.task_id, result, signal.clone(), chain, context.now, rules);
                credited.push(NodeCredit {
                    node_id: result.node_id,
                    solar_contribution: result.solar,
                    signal,
                    split: credit.split,
                    leaf: LeafPosition {
                        block_height: credit.block_height,
                        leaf_index: credit.leaf_index,
                        attempt: result.attempt,
                        energy_used: result.energy,
                        credited_at: credit.leaf.credited_at,
                        leaf_hash: hex::encode(credit.leaf_hash),
                    },
                });
                effects.credits.push(credit);
            }
            effects.events.push(Recorded::new(Event::TaskCompleted(TaskCompleted {
                task_id: task.task_id,
                node_id: report.node_id,
                attempt: report.attempt,
                result_hash: report.result_hash,
                energy_used: report.energy_used,
                solar_contribution: report.solar_contribution,
                check,
                validation: Some(validation),
                sci: Some(sci),
                credits: (!credited.is_empty()).then_some(Credits { policy: rules.carbon, nodes: credited }),
            })));
            if validated {
                for result in &results {
                    let agreed = result.result_hash == winner;
                    let Some(node) = nodes.get_mut(&result.node_id) else { continue };
                    node.trust = if agreed { node.trust.saturating_add(1) } else { 0 };
                    effects.trust.push((node.node_id, node.trust));
                    effects.events.push(Recorded::new(Event::NodeTrustChanged(NodeTrustChanged {
                        node_id: node.node_id,
                        task_id: task.task_id,
                        agreed,
                        trust: node.trust,
                    })));
                }
            }
            task.results.clear();
        }
    }
    Ok(effects)
}

/// A completed task's Software Carbon Intensity: the operational emissions of every result it
/// took (grid energy at the intensity of each node's zone in this hour, the sun's at the
/// panels' factor; a result whose energy was refused as implausible counts none), and the
/// embodied share of the completing node for the time its assignment held a core.
fn task_sci(
    results: &[TaskResult],
    reporter: &Node,
    runtime_ms: i64,
    nodes: &super::Map<NodeId, Node>,
    context: &CompletionContext<'_>,
) -> Sci {
    let rules = context.rules;
    let operational_ng = results
        .iter()
        .filter(|result| result.refusal.is_none())
        .map(|result| {
            let zone = nodes.get(&result.node_id).and_then(|node| node.zone.as_ref()).unwrap_or(&rules.default_zone);
            let intensity = context.signals.lookup(zone, context.now).intensity_mg_per_kwh;
            Sci::operational(result.energy, result.solar, intensity, rules.sci.solar_intensity_mg_per_kwh)
        })
        .fold(0_i64, i64::saturating_add);
    let embodied_g = reporter.embodied_g.unwrap_or(rules.sci.default_embodied_g);
    let embodied_ng = Sci::embodied(embodied_g, runtime_ms, rules.sci.lifetime_ms, reporter.cpu_cores);
    Sci { operational_ng, embodied_ng }
}

/// Why a second opinion cannot be had for a single-replica result, when one is due.
fn second_opinion_impossible(task: &Task, reporter: &Node, context: &CompletionContext<'_>) -> Option<String> {
    let settings = &context.rules.validation;
    if reporter.trust >= settings.trust_threshold && context.draw_ppm >= settings.spot_check_ppm {
        // No check is due: whether one could run does not matter.
        return None;
    }
    if !context.another_owner_has_live_nodes {
        return Some("no node of another owner is online".to_owned());
    }
    if context.now + context.rules.policy.expected_runtime * DEFERRAL_SAFETY_RUNTIMES >= task.deadline {
        return Some("the deadline leaves no time for a second opinion".to_owned());
    }
    None
}

/// Credits one accepted result at the carbon signal of its node's zone and hour: its split,
/// and its leaf (which records the signal and the rates, so the split can be recomputed from
/// it), which takes the next place of the chain's open block (sealed later, off the round trip).
pub fn credit(
    task_id: TaskId,
    result: &TaskResult,
    signal: Signal,
    chain: &mut ProofChain,
    now: DateTime<Utc>,
    rules: &Rules,
) -> Credit {
    let basis = CreditBasis::new(&signal, &rules.carbon);
    let split = basis.split(result.solar);
    let leaf = Leaf {
        task_id,
        node_id: result.node_id,
        attempt: result.attempt,
        energy: result.energy,
        solar: result.solar,
        carbon: split.carbon_saved,
        node_share: split.node_share,
        cooperative_share: split.cooperative_share,
        credited_at: storable_time(now),
        basis: Some(basis),
    };
    let leaf_hash = leaf.hash();
    let (block_height, leaf_index) = chain.add_leaf(leaf_hash, now);
    Credit { split, leaf, block_height, leaf_index, leaf_hash }
}

// ---------------------------------------------------------------------------------------------
// Failure, taking back, cancellation, deadline
// ---------------------------------------------------------------------------------------------

/// The backoff before a task taken back for the `failures`-th time may be placed again.
pub fn backoff_ms(base_ms: i64, failures: i32) -> i64 {
    let exponent = u32::try_from(failures.saturating_sub(1)).unwrap_or(0).min(20);
    base_ms.saturating_mul(1_i64 << exponent).min(MAX_BACKOFF_MS)
}

fn back_to_queue(task: &mut Task, reason: Option<TaskReason>, not_before: Option<DateTime<Utc>>) {
    task.status = TaskStatus::Queued;
    task.node_id = None;
    task.assigned_at = None;
    task.started_at = None;
    task.reason = reason;
    task.not_before = not_before;
}

fn finish(task: &mut Task, status: TaskStatus, reason: Option<TaskReason>) {
    task.status = status;
    if reason.is_some() {
        task.reason = reason;
    }
}

/// Pending results become inconclusive when the task ends without a quorum.
fn inconclusive(task: &mut Task, effects: &mut Effects) {
    effects.verdicts.extend(task.results.drain(..).map(|result| (result.attempt, Verdict::Inconclusive)));
}

/// Takes a task off its node: requeued after a backoff, or failed when its attempts are spent
/// (assignments that ended in a recorded result are not failed attempts). With `tell_node`,
/// the node hears of it (it may still start the task late). A task that is not on a node is
/// refused: taking it back twice (a node's expiry and a lease due together) must not act twice.
pub fn take_back(
    task: &mut Task,
    cause: TakeBack,
    now: DateTime<Utc>,
    rules: &Rules,
    tell_node: bool,
) -> Result<Effects, Refusal> {
    let (TaskStatus::Assigned | TaskStatus::Running, Some(node_id)) = (task.status, task.node_id) else {
        return Err(unexpected(task, "taking back a task that is not on a node"));
    };
    let attempt = task.attempts;
    let failures = task.attempts - i32::try_from(task.results.len()).unwrap_or(0);
    let notify = tell_node.then_some(node_id);
    if failures < rules.max_attempts {
        let retry_after_ms = backoff_ms(rules.requeue_backoff_ms, failures);
        let reason = TaskReason::taken_back(cause);
        back_to_queue(task, Some(reason.clone()), Some(now + Duration::milliseconds(retry_after_ms)));
        let event =
            Event::TaskRequeued(TaskRequeued { task_id: task.task_id, node_id, attempt, reason, retry_after_ms });
        return Ok(Effects::with(Recorded::to_node(event, notify)));
    }
    let final_reason = TaskReason::AttemptsExhausted { attempts: task.attempts, last: cause };
    let mut effects = Effects::default();
    inconclusive(task, &mut effects);
    finish(task, TaskStatus::Failed, Some(final_reason.clone()));
    let event = Event::TaskFailed(TaskFailed {
        task_id: task.task_id,
        node_id: Some(node_id),
        attempt,
        reason: final_reason.clone(),
    });
    effects.events.push(Recorded::to_node(event, notify));
    effects.dead_letter = Some(final_reason);
    Ok(effects)
}

/// The node reported that it could not run the task: taken back.
pub fn fail_report(
    task: &mut Task,
    report: &TaskFailedReport,
    now: DateTime<Utc>,
    rules: &Rules,
) -> Result<Effects, Refusal> {
    check_assignment(task, report.node_id, report.attempt)?;
    take_back(task, TakeBack::NodeReportedFailure { error: report.error.clone() }, now, rules, false)
}

/// Cancelled (by request, or because consent was revoked); a node holding it is told.
pub fn cancel(task: &mut Task, reason: TaskReason) -> Result<Effects, Refusal> {
    task.status
        .transition(TaskStatus::Cancelled)
        .map_err(|illegal| Refusal::IllegalTransition { from: illegal.from, to: illegal.to })?;
    let on_node = matches!(task.status, TaskStatus::Assigned | TaskStatus::Running);
    let mut effects = Effects::default();
    inconclusive(task, &mut effects);
    let event = Event::TaskCancelled(TaskCancelled {
        task_id: task.task_id,
        node_id: task.node_id,
        attempt: task.attempts,
        reason: reason.clone(),
    });
    effects.events.push(Recorded::to_node(event, if on_node { task.node_id } else { None }));
    finish(task, TaskStatus::Cancelled, Some(reason));
    Ok(effects)
}

/// The deadline passed with the task still open: it fails, and a node holding it is told.
pub fn deadline_passed(task: &mut Task) -> Effects {
    let on_node = matches!(task.status, TaskStatus::Assigned | TaskStatus::Running);
    let mut effects = Effects::default();
    inconclusive(task, &mut effects);
    let event = Event::TaskFailed(TaskFailed {
        task_id: task.task_id,
        node_id: task.node_id,
        attempt: task.attempts,
        reason: TaskReason::DeadlineExceeded,
    });
    effects.events.push(Recorded::to_node(event, if on_node { task.node_id } else { None }));
    finish(task, TaskStatus::Failed, Some(TaskReason::DeadlineExceeded));
    effects
}

#[cfg(test)]
pub(crate) mod tests;
