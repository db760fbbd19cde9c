//! `CMD:GRANT_CONSENT` and `CMD:REVOKE_CONSENT`: the consent record of one owner within the
//! issuing organisation. Revocation stops admission of new tasks using the owner's data at once;
//! the cascade over tasks already admitted is the consent issue's work (see the README).

use grid_shared::events::{ConsentGranted, ConsentRevoked, Event};
use grid_shared::messages::{GrantConsent, RevokeConsent};
use sqlx::PgConnection;

use super::{Context, Decision, PendingEvent, organization_exists};

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
    let updated = sqlx::query(
        "update consent set granted = false, revoked_at = $3 where owner_id = $1 and organization_id = $2 and granted",
    )
    .bind(command.owner_id.as_uuid())
    .bind(organization_id.as_uuid())
    .bind(context.now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(Decision::rejected("no granted consent to revoke for this owner"));
    }
    let event = Event::ConsentRevoked(ConsentRevoked { owner_id: command.owner_id });
    Ok(Decision::applied(vec![PendingEvent::new(event, Some(organization_id))]))
}
