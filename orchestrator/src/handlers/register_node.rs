//! `CMD:REGISTER_NODE`: a node of the issuing organisation, with its token as a hash.

use grid_shared::events::{Event, NodeRegistered};
use grid_shared::messages::RegisterNode;
use sqlx::PgConnection;

use super::{Context, Decision, PendingEvent, organization_exists};

pub async fn register(
    conn: &mut PgConnection,
    context: &Context<'_>,
    command: RegisterNode,
) -> Result<Decision, sqlx::Error> {
    let organization_id = context.envelope.organization_id;
    if !organization_exists(conn, organization_id).await? {
        return Ok(Decision::rejected("the issuing organisation does not exist"));
    }
    let Some(organization_id) = organization_id else { unreachable!("checked by organization_exists") };
    let spec = &command.spec;
    let inserted = sqlx::query(
        "insert into node (node_id, organization_id, name, cpu_cores, has_solar, location, token_hash)
         values ($1, $2, $3, $4, $5, $6, $7) on conflict do nothing",
    )
    .bind(command.node_id.as_uuid())
    .bind(organization_id.as_uuid())
    .bind(spec.name())
    .bind(i32::from(spec.cpu_cores()))
    .bind(spec.has_solar())
    .bind(spec.location())
    .bind(command.token_hash.as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(Decision::rejected("a node with this id or token already exists"));
    }
    let event = Event::NodeRegistered(NodeRegistered {
        node_id: command.node_id,
        organization_id,
        name: spec.name().to_owned(),
        cpu_cores: spec.cpu_cores(),
        has_solar: spec.has_solar(),
        location: spec.location().to_owned(),
    });
    Ok(Decision::applied(vec![PendingEvent::new(event, Some(organization_id))]))
}
