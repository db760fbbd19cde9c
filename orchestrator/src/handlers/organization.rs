//! `CMD:CREATE_ORGANIZATION`: the organisation and its first API key (as a hash);
//! `CMD:ROTATE_API_KEY`: a new key, and by default the end of the previous ones.

use grid_shared::envelope::Actor;
use grid_shared::events::{ApiKeyRotated, Event, OrganizationCreated};
use grid_shared::messages::{CreateOrganization, RotateApiKey};
use sqlx::PgConnection;

use super::{Context, Decision, PendingEvent};

pub async fn create(
    conn: &mut PgConnection,
    _context: &Context<'_>,
    command: CreateOrganization,
) -> Result<Decision, sqlx::Error> {
    // Checked first: a rejection must leave nothing behind.
    let key_taken = sqlx::query_scalar::<_, bool>("select exists (select 1 from api_key where key_hash = $1)")
        .bind(command.api_key_hash.as_str())
        .fetch_one(&mut *conn)
        .await?;
    if key_taken {
        return Ok(Decision::rejected("this API key is already in use"));
    }
    let inserted =
        sqlx::query("insert into organization (organization_id, name) values ($1, $2) on conflict do nothing")
            .bind(command.organization_id.as_uuid())
            .bind(command.name.as_str())
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if inserted == 0 {
        return Ok(Decision::rejected("an organisation with this id already exists"));
    }
    sqlx::query("insert into api_key (key_hash, organization_id) values ($1, $2)")
        .bind(command.api_key_hash.as_str())
        .bind(command.organization_id.as_uuid())
        .execute(&mut *conn)
        .await?;
    let event = Event::OrganizationCreated(OrganizationCreated {
        organization_id: command.organization_id,
        name: command.name.as_str().to_owned(),
    });
    Ok(Decision::applied(vec![PendingEvent::new(event, Some(command.organization_id))]))
}

pub async fn rotate_key(
    conn: &mut PgConnection,
    context: &Context<'_>,
    command: RotateApiKey,
) -> Result<Decision, sqlx::Error> {
    // The operator may rotate any organisation's key; an organisation only its own.
    let allowed = match context.envelope.actor {
        Actor::Operator => true,
        Actor::Organization(caller) => caller == command.organization_id,
        _ => false,
    };
    if !allowed {
        return Ok(Decision::rejected("organisation not found"));
    }
    let exists: bool = sqlx::query_scalar("select exists (select 1 from organization where organization_id = $1)")
        .bind(command.organization_id.as_uuid())
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(Decision::rejected("organisation not found"));
    }
    let inserted =
        sqlx::query("insert into api_key (key_hash, organization_id) values ($1, $2) on conflict do nothing")
            .bind(command.api_key_hash.as_str())
            .bind(command.organization_id.as_uuid())
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if inserted == 0 {
        return Ok(Decision::rejected("this API key is already in use"));
    }
    let revoked = if command.revoke_previous {
        sqlx::query(
            "update api_key set revoked_at = now() where organization_id = $1 and key_hash <> $2 and revoked_at is null",
        )
        .bind(command.organization_id.as_uuid())
        .bind(command.api_key_hash.as_str())
        .execute(&mut *conn)
        .await?
        .rows_affected()
    } else {
        0
    };
    let event = Event::ApiKeyRotated(ApiKeyRotated {
        organization_id: command.organization_id,
        previous_keys_revoked: revoked,
    });
    Ok(Decision::applied(vec![PendingEvent::new(event, Some(command.organization_id))]))
}
