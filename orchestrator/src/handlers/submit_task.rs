//! `CMD:SUBMIT_TASK`: admission. A task is queued, or recorded as rejected with its reason
//! (k-anonymity, consent, a deadline already past, more replicas than node owners), so that the
//! submitter can see why.

use grid_shared::domain::{RejectionReason, TaskKind};
use grid_shared::events::{Event, TaskAccepted, TaskRejected};
use grid_shared::ids::{OrganizationId, OwnerId};
use grid_shared::messages::SubmitTask;
use sqlx::PgConnection;

use super::{Context, Decision, PendingEvent, organization_exists};

pub async fn submit(
    conn: &mut PgConnection,
    context: &Context<'_>,
    command: SubmitTask,
) -> Result<Decision, sqlx::Error> {
    let organization_id = context.envelope.organization_id;
    if !organization_exists(conn, organization_id).await? {
        return Ok(Decision::rejected(RejectionReason::UnknownOrganization.to_string()));
    }
    let Some(organization_id) = organization_id else { unreachable!("checked by organization_exists") };
    let rejection = admission_problem(conn, context, organization_id, &command).await?;
    let status = if rejection.is_some() { "rejected" } else { "queued" };
    let inserted = sqlx::query(
        "insert into task (task_id, organization_id, copropriete_id, kind_type, kind, priority, deadline, status, reason,
             correlation_id, submitted_entry_id, replicas, quorum, result_limit)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) on conflict do nothing",
    )
    .bind(command.task_id.as_uuid())
    .bind(organization_id.as_uuid())
    .bind(command.copropriete_id.as_uuid())
    .bind(command.kind.type_name())
    .bind(serde_json::to_value(&command.kind).expect("a task kind always serialises"))
    .bind(i16::from(command.priority.value()))
    .bind(command.deadline)
    .bind(status)
    .bind(rejection.as_ref().map(|reason| serde_json::to_string(reason).expect("reasons serialise")))
    .bind(context.envelope.correlation_id)
    .bind(context.entry_id)
    .bind(i16::from(command.replicas.value()))
    .bind(i16::from(command.replicas.quorum()))
    .bind(i16::from(command.replicas.value() + context.config.validation.extra_replicas))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(Decision::rejected(RejectionReason::DuplicateTask.to_string()));
    }
    match rejection {
        Some(reason) => {
            let text = reason.to_string();
            let event = Event::TaskRejected(TaskRejected { task_id: command.task_id, reason });
            Ok(Decision {
                rejection: Some(text),
                ..Decision::applied(vec![PendingEvent::new(event, Some(organization_id))])
            })
        }
        None => {
            let event = Event::TaskAccepted(TaskAccepted {
                task_id: command.task_id,
                copropriete_id: command.copropriete_id,
                kind: command.kind.type_name().to_owned(),
                priority: command.priority,
                deadline: command.deadline,
                participant_count: command.kind.distinct_participants(),
            });
            Ok(Decision::applied(vec![PendingEvent::new(event, Some(organization_id))]))
        }
    }
}

async fn admission_problem(
    conn: &mut PgConnection,
    context: &Context<'_>,
    organization_id: OrganizationId,
    command: &SubmitTask,
) -> Result<Option<RejectionReason>, sqlx::Error> {
    if command.deadline <= context.now {
        return Ok(Some(RejectionReason::DeadlinePassed));
    }
    let replicas = command.replicas.value();
    if replicas > 1 {
        let owners: i64 =
            sqlx::query_scalar("select count(distinct organization_id) from node").fetch_one(&mut *conn).await?;
        if owners < i64::from(replicas) {
            return Ok(Some(RejectionReason::NotEnoughNodeOwners { replicas, owners: owners as u64 }));
        }
    }
    let TaskKind::EnergyGroupOptimisation { participants, .. } = &command.kind else {
        return Ok(None);
    };
    let distinct = command.kind.distinct_participants();
    if distinct < context.config.k_anonymity_min {
        return Ok(Some(RejectionReason::KAnonymityViolated { min: context.config.k_anonymity_min, got: distinct }));
    }
    let owners: Vec<uuid::Uuid> = participants.iter().map(|participant| participant.owner_id.as_uuid()).collect();
    let without_consent: Option<uuid::Uuid> = sqlx::query_scalar(
        "select owner_id from unnest($1::uuid[]) as wanted(owner_id)
         where not exists (select 1 from consent c where c.owner_id = wanted.owner_id
                           and c.organization_id = $2 and c.granted)
         limit 1",
    )
    .bind(&owners)
    .bind(organization_id.as_uuid())
    .fetch_optional(conn)
    .await?;
    Ok(without_consent.map(|owner_id| RejectionReason::ConsentNotGranted { owner_id: OwnerId(owner_id) }))
}
