//! `CMD:GRANT_CONSENT` and `CMD:REVOKE_CONSENT`: an owner's consent within the issuing
//! organisation (GDPR Art. 6.1.a, 7, 7.3, 30). Every change is kept in `consent_history`.
//!
//! Revocation takes effect at once, in the transaction that records it:
//! - every task of the organisation that uses the owner's readings and is not final is cancelled,
//!   and a node running one is told (`TASK:CANCELLED`); a late result is refused as stale;
//! - the owner's readings are removed from every stored task payload, and the Redis entries that
//!   carried them (the submission on `{ns}:commands`, the assignment on the node's channel) are
//!   deleted after commit;
//! - `ConsentRevoked` and `ParticipantDataPurged` are recorded (events never carry readings).

use grid_shared::domain::TaskStatus;
use grid_shared::events::{ConsentGranted, ConsentRevoked, Event, ParticipantDataPurged, TaskCancelled};
use grid_shared::ids::{NodeId, TaskId};
use grid_shared::messages::{GrantConsent, RevokeConsent};
use sqlx::{PgConnection, Row};

use super::{AfterCommit, Context, Decision, PendingEvent, organization_exists};
use crate::store::tasks::set_status;

pub async fn grant(
    conn: &mut PgConnection,
    context: &Context<'_>,
    command: GrantConsent,
) -> Result<Decision, sqlx::Error> {
    let organization_id = context.envelope.organization_id;
    if !organization_exists(conn, organization_id).await? {
        return Ok(Decision::rejected("the issuing organisation does not exist"));
    }
    let Some(organization_id) = organization_id else { unreachable!("checked by organization_exists") };
    sqlx::query(
        "insert into consent (owner_id, organization_id, granted, granted_at, revoked_at, consent_ip, consent_version)
         values ($1, $2, true, $3, null, $4, $5)
         on conflict (owner_id, organization_id) do update set granted = true, granted_at = $3, revoked_at = null,
             consent_ip = $4, consent_version = $5",
    )
    .bind(command.owner_id.as_uuid())
    .bind(organization_id.as_uuid())
    .bind(context.now)
    .bind(command.consent_ip.as_deref())
    .bind(&command.consent_version)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "insert into consent_history (owner_id, organization_id, action, at, consent_ip, consent_version)
         values ($1, $2, 'granted', $3, $4, $5)",
    )
    .bind(command.owner_id.as_uuid())
    .bind(organization_id.as_uuid())
    .bind(context.now)
    .bind(command.consent_ip.as_deref())
    .bind(&command.consent_version)
    .execute(&mut *conn)
    .await?;
    let event =
        Event::ConsentGranted(ConsentGranted { owner_id: command.owner_id, consent_version: command.consent_version });
    Ok(Decision::applied(vec![PendingEvent::new(event, Some(organization_id))]))
}

pub async fn revoke(
    conn: &mut PgConnection,
    context: &Context<'_>,
    command: RevokeConsent,
) -> Result<Decision, sqlx::Error> {
    let Some(organization_id) = context.envelope.organization_id else {
        return Ok(Decision::rejected("the command names no organisation"));
    };
    let owner = command.owner_id;
    let updated = sqlx::query(
        "update consent set granted = false, revoked_at = $3 where owner_id = $1 and organization_id = $2 and granted",
    )
    .bind(owner.as_uuid())
    .bind(organization_id.as_uuid())
    .bind(context.now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(Decision::rejected("no granted consent to revoke for this owner"));
    }
    sqlx::query("insert into consent_history (owner_id, organization_id, action, at) values ($1, $2, 'revoked', $3)")
        .bind(owner.as_uuid())
        .bind(organization_id.as_uuid())
        .bind(context.now)
        .execute(&mut *conn)
        .await?;
    let organization = Some(organization_id);
    let mut decision = Decision::applied(vec![PendingEvent::new(
        Event::ConsentRevoked(ConsentRevoked { owner_id: owner }),
        organization,
    )]);

    // Every task of the organisation holding the owner's readings, final or not.
    let rows = sqlx::query(
        "select task_id, status, node_id, attempts, submitted_entry_id from task
         where organization_id = $1 and kind_type = 'energy_group_optimisation'
           and kind -> 'participants' @> jsonb_build_array(jsonb_build_object('owner_id', $2::text))
         for update",
    )
    .bind(organization_id.as_uuid())
    .bind(owner.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let mut purged = Vec::with_capacity(rows.len());
    let mut submissions = Vec::new();
    for row in &rows {
        let task_id = TaskId(row.try_get("task_id")?);
        let status: String = row.try_get("status")?;
        let status = TaskStatus::parse(&status).unwrap_or(TaskStatus::Rejected);
        let node_id: Option<NodeId> = row.try_get::<Option<uuid::Uuid>, _>("node_id")?.map(NodeId);
        purged.push(task_id);
        submissions.extend(row.try_get::<Option<String>, _>("submitted_entry_id")?);
        if status.is_final() {
            continue;
        }
        set_status(conn, task_id, TaskStatus::Cancelled, Some("consent_revoked")).await?;
        let cancelled = Event::TaskCancelled(TaskCancelled {
            task_id,
            node_id,
            attempt: row.try_get("attempts")?,
            reason: "consent_revoked".to_owned(),
        });
        let on_node = matches!(status, TaskStatus::Assigned | TaskStatus::Running);
        match node_id {
            Some(node_id) if on_node => {
                decision.events.push(PendingEvent::new(cancelled, organization).to_node(node_id));
                decision = decision.then(AfterCommit::ReleaseCore { node_id, task_id });
            }
            _ => decision.events.push(PendingEvent::new(cancelled, organization)),
        }
    }
    if purged.is_empty() {
        return Ok(decision);
    }
    let task_ids: Vec<uuid::Uuid> = purged.iter().map(|task_id| task_id.as_uuid()).collect();
    sqlx::query(
        "update task set kind = jsonb_set(kind, '{participants}', coalesce(
             (select jsonb_agg(participant) from jsonb_array_elements(kind -> 'participants') participant
              where participant ->> 'owner_id' <> $2), '[]'::jsonb)),
             updated_at = now()
         where task_id = any($1)",
    )
    .bind(&task_ids)
    .bind(owner.to_string())
    .execute(&mut *conn)
    .await?;
    // The assignments that carried the readings to nodes, by their channel entry id (`<seq>-0`).
    let assignments: Vec<(i64, uuid::Uuid)> = sqlx::query_as(
        "select seq, node_id from event where event_type = 'TaskAssigned' and node_id is not null
           and (envelope -> 'payload' ->> 'task_id')::uuid = any($1)",
    )
    .bind(&task_ids)
    .fetch_all(&mut *conn)
    .await?;
    let keys = &context.config.grid.keys;
    if !submissions.is_empty() {
        decision = decision.then(AfterCommit::DeleteEntries { stream: keys.commands(), entry_ids: submissions });
    }
    for (seq, node_id) in assignments {
        decision = decision.then(AfterCommit::DeleteEntries {
            stream: keys.node_tasks(NodeId(node_id)),
            entry_ids: vec![format!("{seq}-0")],
        });
    }
    decision.events.push(PendingEvent::new(
        Event::ParticipantDataPurged(ParticipantDataPurged { owner_id: owner, task_ids: purged }),
        organization,
    ));
    Ok(decision)
}
