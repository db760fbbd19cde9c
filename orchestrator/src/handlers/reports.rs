//! `RPT:TASK_STARTED`, `RPT:TASK_COMPLETED`, `RPT:TASK_FAILED`: what a node says of its task.
//! A report counts only for the task's current assignment (same node, same attempt): the
//! attempt number fences off late reports from a node the task was taken from.

use grid_shared::carbon::MicroWattHours;
use grid_shared::domain::TaskStatus;
use grid_shared::events::{CreditsDistributed, EnergyCheck, Event, GreenProofAppended, TaskCompleted, TaskStarted};
use grid_shared::ids::{NodeId, TaskId};
use grid_shared::messages::{Sha256Hex, TaskCompletedReport, TaskFailedReport, TaskStartedReport};
use sqlx::PgConnection;

use super::{AfterCommit, Context, Decision, PendingEvent};
use crate::ledger;
use crate::scheduler::housekeeping::{InFlight, take_back};
use crate::store::tasks::{TaskRow, lock_task, set_status};

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
    let cpu_cores: i32 = sqlx::query_scalar("select cpu_cores from node where node_id = $1")
        .bind(report.node_id.as_uuid())
        .fetch_one(&mut *conn)
        .await?;
    let assigned_at = task.assigned_at.unwrap_or(context.now);
    let runtime_ms = (context.now - assigned_at).num_milliseconds();
    let check = check_energy(
        report.energy_used,
        report.solar_contribution,
        runtime_ms,
        u16::try_from(cpu_cores).unwrap_or(u16::MAX),
        context.config.grid.max_milliwatts_per_core,
    );
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
    let organization = Some(task.organization_id);
    let credited = check.refusal.is_none();
    let mut events = vec![PendingEvent::new(
        Event::TaskCompleted(TaskCompleted {
            task_id: task.task_id,
            node_id: report.node_id,
            attempt: report.attempt,
            result_hash: report.result_hash.clone(),
            energy_used: report.energy_used,
            solar_contribution: report.solar_contribution,
            check,
        }),
        organization,
    )];
    if credited {
        let grid = &context.config.grid;
        let entry = ledger::CreditInput {
            task_id: task.task_id,
            node_id: report.node_id,
            energy: report.energy_used,
            solar: report.solar_contribution,
        };
        let (split, link) = ledger::credit_task(conn, &entry, grid.carbon, grid.proof_difficulty, context.now).await?;
        events.push(PendingEvent::new(
            Event::CreditsDistributed(CreditsDistributed {
                task_id: task.task_id,
                node_id: report.node_id,
                solar_contribution: report.solar_contribution,
                policy: grid.carbon,
                split,
            }),
            organization,
        ));
        events.push(PendingEvent::new(
            Event::GreenProofAppended(GreenProofAppended {
                seq: link.draft.seq,
                task_id: task.task_id,
                prev_hash: link.draft.prev_hash.clone(),
                hash: link.hash.clone(),
            }),
            organization,
        ));
    }
    Ok(Decision::applied(events).then(AfterCommit::ReleaseCore { node_id: report.node_id, task_id: task.task_id }))
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
