//! `RPT:TASK_STARTED`, `RPT:TASK_COMPLETED`, `RPT:TASK_FAILED`: what a node says of its task.
//! A report counts only for the task's current assignment (same node, same attempt): the
//! attempt number fences off late reports from a node the task was taken from. A completion is
//! recorded as a result and validated (see [`crate::validation`]): the task completes, waits for
//! another replica, or fails with `no_quorum`.

use grid_shared::carbon::MicroWattHours;
use grid_shared::domain::TaskStatus;
use grid_shared::events::{
    CreditsDistributed, EnergyCheck, Event, GreenProofAppended, NodeTrustChanged, TaskCompleted, TaskFailed,
    TaskResultRecorded, TaskStarted, Validation,
};
use grid_shared::ids::{NodeId, TaskId};
use grid_shared::messages::{Sha256Hex, TaskCompletedReport, TaskFailedReport, TaskStartedReport};
use sqlx::PgConnection;

use super::{AfterCommit, Context, Decision, PendingEvent};
use crate::ledger;
use crate::scheduler::DEFERRAL_SAFETY_RUNTIMES;
use crate::scheduler::housekeeping::{InFlight, take_back};
use crate::store::tasks::{TaskRow, lock_task, set_status};
use crate::validation::{self, Outcome, Reported, Requirement, SingleCheck};

/// The task, when the report is about its current assignment; else why the report is refused.
async fn current_assignment(
    conn: &mut PgConnection,
    task_id: TaskId,
    node_id: NodeId,
    attempt: i32,
) -> Result<Result<TaskRow, String>, sqlx::Error> {
    let Some(task) = lock_task(conn, task_id).await? else {
        return Ok(Err("unknown task".to_owned()));
    };
    if task.status.is_final() {
        return Ok(Err(format!("stale report: the task is already {}", task.status.as_str())));
    }
    if task.node_id != Some(node_id) || task.attempts != attempt {
        return Ok(Err(format!(
            "stale report: attempt {attempt} on node {node_id} is not the task's current assignment (attempt {})",
            task.attempts
        )));
    }
    Ok(Ok(task))
}

pub async fn started(
    conn: &mut PgConnection,
    _context: &Context<'_>,
    report: TaskStartedReport,
) -> Result<Decision, sqlx::Error> {
    let task = match current_assignment(conn, report.task_id, report.node_id, report.attempt).await? {
        Ok(task) => task,
        Err(reason) => return Ok(Decision::rejected(reason)),
    };
    if let Err(illegal) = task.status.transition(TaskStatus::Running) {
        return Ok(Decision::rejected(illegal.to_string()));
    }
    set_status(conn, task.task_id, TaskStatus::Running, None).await?;
    let event =
        Event::TaskStarted(TaskStarted { task_id: task.task_id, node_id: report.node_id, attempt: report.attempt });
    Ok(Decision::applied(vec![PendingEvent::new(event, Some(task.organization_id))]))
}

/// `solar ≤ energy ≤ cpu_cores × max_mW_per_core × runtime_ms / 3600`, with the runtime measured
/// here (from assignment to report), not claimed by the node.
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

/// The reporting node, as validation needs it.
struct Reporter {
    cpu_cores: u16,
    owner_id: uuid::Uuid,
    trust: u32,
}

async fn reporter(conn: &mut PgConnection, node_id: NodeId) -> Result<Reporter, sqlx::Error> {
    let (cpu_cores, owner_id, trust): (i32, uuid::Uuid, i32) =
        sqlx::query_as("select cpu_cores, organization_id, trust from node where node_id = $1")
            .bind(node_id.as_uuid())
            .fetch_one(&mut *conn)
            .await?;
    Ok(Reporter {
        cpu_cores: u16::try_from(cpu_cores).unwrap_or(u16::MAX),
        owner_id,
        trust: u32::try_from(trust).unwrap_or(0),
    })
}

async fn insert_result(
    conn: &mut PgConnection,
    task: &TaskRow,
    report: &TaskCompletedReport,
    reporter: &Reporter,
    result: &StoredResult,
    verdict: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into task_result (task_id, attempt, node_id, owner_id, result_hash, result_json, energy_uwh, solar_uwh,
             refusal, verdict)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(task.task_id.as_uuid())
    .bind(report.attempt)
    .bind(result.node_id.as_uuid())
    .bind(reporter.owner_id)
    .bind(&result.result_hash)
    .bind(&report.result_json)
    .bind(result.energy.0)
    .bind(result.solar.0)
    .bind(result.refusal.as_deref())
    .bind(verdict)
    .execute(conn)
    .await?;
    Ok(())
}

/// A result as stored in `task_result`.
struct StoredResult {
    node_id: NodeId,
    result_hash: String,
    energy: MicroWattHours,
    solar: MicroWattHours,
    refusal: Option<String>,
}

async fn task_results(conn: &mut PgConnection, task_id: TaskId) -> Result<Vec<StoredResult>, sqlx::Error> {
    let rows: Vec<(uuid::Uuid, String, i64, i64, Option<String>)> = sqlx::query_as(
        "select node_id, result_hash, energy_uwh, solar_uwh, refusal from task_result
         where task_id = $1 order by attempt",
    )
    .bind(task_id.as_uuid())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(node_id, result_hash, energy, solar, refusal)| StoredResult {
            node_id: NodeId(node_id),
            result_hash,
            energy: MicroWattHours(energy),
            solar: MicroWattHours(solar),
            refusal,
        })
        .collect())
}

/// The adaptive check's inputs for a single-replica task's first result: a second opinion needs
/// a node of another owner and time before the deadline.
async fn single_check(
    conn: &mut PgConnection,
    context: &Context<'_>,
    task: &TaskRow,
    reporter: &Reporter,
) -> Result<SingleCheck, sqlx::Error> {
    let settings = &context.config.validation;
    let draw_ppm = validation::draw_ppm();
    if reporter.trust >= settings.trust_threshold && draw_ppm >= settings.spot_check_ppm {
        // No check is due: whether one could run does not matter.
        return Ok(SingleCheck { trust: reporter.trust, draw_ppm, impossible: None });
    }
    let other_owner: bool = sqlx::query_scalar(
        // Two index probes (node_by_organization) rather than a scan of every node.
        "select exists (select 1 from node where organization_id > $1) or exists (select 1 from node where organization_id < $1)",
    )
        .bind(reporter.owner_id)
        .fetch_one(&mut *conn)
        .await?;
    let policy = context.config.scheduling_policy();
    let impossible = if !other_owner {
        Some("no node of another owner is registered".to_owned())
    } else if context.now + policy.expected_runtime * DEFERRAL_SAFETY_RUNTIMES >= task.deadline {
        Some("the deadline leaves no time for a second opinion".to_owned())
    } else {
        None
    };
    Ok(SingleCheck { trust: reporter.trust, draw_ppm, impossible })
}

pub async fn completed(
    conn: &mut PgConnection,
    context: &Context<'_>,
    report: TaskCompletedReport,
) -> Result<Decision, sqlx::Error> {
    let task = match current_assignment(conn, report.task_id, report.node_id, report.attempt).await? {
        Ok(task) => task,
        Err(reason) => return Ok(Decision::rejected(reason)),
    };
    if let Err(illegal) = task.status.transition(TaskStatus::Completed) {
        return Ok(Decision::rejected(illegal.to_string()));
    }
    if let Some(result) = &report.result_json
        && Sha256Hex::of_secret(&result.to_string()).as_str() != report.result_hash
    {
        return Ok(Decision::rejected("result_hash is not the SHA-256 of result_json"));
    }
    let reporter = reporter(conn, report.node_id).await?;
    let assigned_at = task.assigned_at.unwrap_or(context.now);
    let runtime_ms = (context.now - assigned_at).num_milliseconds();
    let check = check_energy(
        report.energy_used,
        report.solar_contribution,
        runtime_ms,
        reporter.cpu_cores,
        context.config.grid.max_milliwatts_per_core,
    );
    // A task that asked for one result and was never checked has no earlier result: it is
    // decided from this one before it is stored, saving two statements on the common path.
    let first_of_one = task.replicas == 1 && task.quorum == 1;
    let this = StoredResult {
        node_id: report.node_id,
        result_hash: report.result_hash.clone(),
        energy: report.energy_used,
        solar: report.solar_contribution,
        refusal: check.refusal.clone(),
    };
    let results = if first_of_one {
        vec![this]
    } else {
        insert_result(conn, &task, &report, &reporter, &this, "pending").await?;
        task_results(conn, task.task_id).await?
    };
    let single = if task.replicas == 1 && results.len() == 1 {
        Some(single_check(conn, context, &task, &reporter).await?)
    } else {
        None
    };
    let reported: Vec<Reported<'_>> =
        results.iter().map(|result| Reported { node_id: result.node_id, result_hash: &result.result_hash }).collect();
    let requirement = Requirement { replicas: task.replicas, quorum: task.quorum, result_limit: task.result_limit };
    let outcome = validation::decide(requirement, &reported, single.as_ref(), &context.config.validation);
    if first_of_one {
        let verdict = if matches!(outcome, Outcome::Complete { .. }) { "unchecked" } else { "pending" };
        insert_result(conn, &task, &report, &reporter, &results[0], verdict).await?;
    }
    let organization = Some(task.organization_id);
    let release = AfterCommit::ReleaseCore { node_id: report.node_id, task_id: task.task_id };
    match outcome {
        Outcome::AnotherReplica { needed, requirement } => {
            sqlx::query(
                "update task set status = 'queued', node_id = null, assigned_at = null, started_at = null, reason = null,
                     not_before = null, quorum = $2, result_limit = $3, updated_at = now()
                 where task_id = $1",
            )
            .bind(task.task_id.as_uuid())
            .bind(i16::from(requirement.quorum))
            .bind(i16::from(requirement.result_limit))
            .execute(&mut *conn)
            .await?;
            let event = Event::TaskResultRecorded(TaskResultRecorded {
                task_id: task.task_id,
                node_id: report.node_id,
                attempt: report.attempt,
                result_hash: report.result_hash,
                energy_used: report.energy_used,
                solar_contribution: report.solar_contribution,
                check,
                quorum: requirement.quorum,
                results: results.len() as u8,
                result_limit: requirement.result_limit,
                needed,
            });
            Ok(Decision::applied(vec![PendingEvent::new(event, organization)]).then(release))
        }
        Outcome::NoQuorum { results: count, distinct_hashes, quorum } => {
            let reason =
                format!("no_quorum: {count} results with {distinct_hashes} distinct hashes, none reached {quorum}");
            sqlx::query("update task_result set verdict = 'inconclusive' where task_id = $1")
                .bind(task.task_id.as_uuid())
                .execute(&mut *conn)
                .await?;
            set_status(conn, task.task_id, TaskStatus::Failed, Some(&reason)).await?;
            let event = Event::TaskFailed(TaskFailed {
                task_id: task.task_id,
                node_id: Some(report.node_id),
                attempt: report.attempt,
                reason: reason.clone(),
            });
            Ok(Decision::applied(vec![PendingEvent::new(event, organization)])
                .then(release)
                .then(AfterCommit::DeadLetterTask { task_id: task.task_id, attempts: task.attempts, reason }))
        }
        Outcome::Complete { result_hash, validation } => {
            sqlx::query(
                "update task set status = 'completed', finished_at = now(), updated_at = now(), result_json = $2,
                     result_hash = $3, energy_uwh = $4, solar_uwh = $5, reason = $6
                 where task_id = $1",
            )
            .bind(task.task_id.as_uuid())
            .bind(&report.result_json)
            .bind(&report.result_hash)
            .bind(report.energy_used.0)
            .bind(report.solar_contribution.0)
            .bind(check.refusal.as_deref())
            .execute(&mut *conn)
            .await?;
            let validated = matches!(validation, Validation::Quorum { .. });
            if !first_of_one {
                sqlx::query(
                    "update task_result set verdict = case when not $3 then 'unchecked'
                     when result_hash = $2 then 'agreed' else 'disagreed' end
                 where task_id = $1",
                )
                .bind(task.task_id.as_uuid())
                .bind(&result_hash)
                .bind(validated)
                .execute(&mut *conn)
                .await?;
            }
            let mut events = vec![Event::TaskCompleted(TaskCompleted {
                task_id: task.task_id,
                node_id: report.node_id,
                attempt: report.attempt,
                result_hash: report.result_hash.clone(),
                energy_used: report.energy_used,
                solar_contribution: report.solar_contribution,
                check,
                validation: Some(validation),
            })];
            if validated {
                events.extend(update_trust(conn, task.task_id, &results, &result_hash).await?);
            }
            for result in results.iter().filter(|result| result.result_hash == result_hash && result.refusal.is_none())
            {
                events.extend(credit(conn, context, task.task_id, result).await?);
            }
            let events = events.into_iter().map(|event| PendingEvent::new(event, organization)).collect();
            Ok(Decision::applied(events).then(release))
        }
    }
}

/// One more for each agreeing node, zero for each disagreeing one.
async fn update_trust(
    conn: &mut PgConnection,
    task_id: TaskId,
    results: &[StoredResult],
    winner: &str,
) -> Result<Vec<Event>, sqlx::Error> {
    let mut events = Vec::with_capacity(results.len());
    for result in results {
        let agreed = result.result_hash == winner;
        let trust: i32 = sqlx::query_scalar(
            "update node set trust = case when $2 then trust + 1 else 0 end where node_id = $1 returning trust",
        )
        .bind(result.node_id.as_uuid())
        .bind(agreed)
        .fetch_one(&mut *conn)
        .await?;
        events.push(Event::NodeTrustChanged(NodeTrustChanged {
            node_id: result.node_id,
            task_id,
            agreed,
            trust: u32::try_from(trust).unwrap_or(0),
        }));
    }
    Ok(events)
}

/// Credits one accepted result: its node's share, the fund's, and a proof link.
async fn credit(
    conn: &mut PgConnection,
    context: &Context<'_>,
    task_id: TaskId,
    result: &StoredResult,
) -> Result<[Event; 2], sqlx::Error> {
    let grid = &context.config.grid;
    let entry = ledger::CreditInput { task_id, node_id: result.node_id, energy: result.energy, solar: result.solar };
    let (split, link) = ledger::credit_task(conn, &entry, grid.carbon, grid.proof_difficulty, context.now).await?;
    Ok([
        Event::CreditsDistributed(CreditsDistributed {
            task_id,
            node_id: result.node_id,
            solar_contribution: result.solar,
            policy: grid.carbon,
            split,
        }),
        Event::GreenProofAppended(GreenProofAppended {
            seq: link.draft.seq,
            task_id,
            prev_hash: link.draft.prev_hash.clone(),
            hash: link.hash.clone(),
        }),
    ])
}

pub async fn failed(
    conn: &mut PgConnection,
    context: &Context<'_>,
    report: TaskFailedReport,
) -> Result<Decision, sqlx::Error> {
    let task = match current_assignment(conn, report.task_id, report.node_id, report.attempt).await? {
        Ok(task) => task,
        Err(reason) => return Ok(Decision::rejected(reason)),
    };
    let reason = format!("node reported failure: {}", report.error);
    let in_flight = InFlight {
        task_id: task.task_id,
        organization_id: task.organization_id,
        node_id: report.node_id,
        attempt: task.attempts,
        correlation_id: context.envelope.correlation_id,
    };
    let taken = take_back(conn, &in_flight, &reason, context.config).await?;
    let mut decision = Decision::applied(vec![PendingEvent::new(taken.event, Some(task.organization_id))])
        .then(AfterCommit::ReleaseCore { node_id: report.node_id, task_id: task.task_id });
    if let Some(reason) = taken.dead_letter {
        decision =
            decision.then(AfterCommit::DeadLetterTask { task_id: task.task_id, attempts: task.attempts, reason });
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_within_the_bound_is_credited() {
        // 4 cores at 2 W for 1.8 s may draw at most 4 × 2000 × 1800 / 3600 = 4000 µWh.
        let check = check_energy(MicroWattHours(4_000), MicroWattHours(1_000), 1_800, 4, 2_000);
        assert_eq!(check.energy_bound, MicroWattHours(4_000));
        assert_eq!(check.refusal, None);
    }

    #[test]
    fn ten_times_the_possible_energy_is_refused() {
        let check = check_energy(MicroWattHours(40_000), MicroWattHours(0), 1_800, 4, 2_000);
        assert!(check.refusal.unwrap().contains("exceeds what 4 cores can draw"));
    }

    #[test]
    fn more_solar_than_energy_is_refused() {
        let check = check_energy(MicroWattHours(10), MicroWattHours(11), 1_000, 4, 2_000);
        assert!(check.refusal.unwrap().contains("solar contribution"));
    }
}
