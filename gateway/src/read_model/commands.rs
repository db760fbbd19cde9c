//! The fate of a command: applied or rejected (from PostgreSQL), else pending while its entry
//! is on its stream (its issuer is in `{ns}:issuers` until the writer acknowledges it).

use grid_shared::ids::MessageId;
use grid_shared::reasons::Refusal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommandView {
    pub command_id: uuid::Uuid,
    /// `pending`, `applied` or `rejected`.
    pub status: String,
    /// Why it was rejected, in a sentence.
    pub reason: Option<String>,
    /// Why it was rejected, as an object with a stable `code` (`stale_report`, `not_in_flight`,
    /// `task_not_open`, `k_anonymity_violated`, `consent_not_granted`, `deadline_passed`,
    /// `duplicate_task`, `invariant`, ...) and the fields of that code.
    #[schema(value_type = Option<Object>)]
    pub refusal: Option<serde_json::Value>,
}

pub async fn find_command(
    state: &AppState,
    caller: &Caller,
    command_id: MessageId,
) -> Result<Option<CommandView>, ApiError> {
    let organization = match caller {
        Caller::Operator => None,
        Caller::Organization(organization_id) => Some(organization_id.as_uuid()),
        Caller::Node(node) => Some(node.organization_id.as_uuid()),
    };
    // The issuer first: the writer forgets it only after it committed the outcome, so a command
    // is never missed between the two reads.
    // (Each cell's writer keeps the issuers of its own stream's commands.)
    let mut conn = state.redis.get().await?;
    let mut issuer: Option<String> = None;
    for cell in state.config.grid.cells.iter() {
        let issuers = state.cell_keys(&cell.name).issuers();
        issuer = redis::cmd("HGET").arg(issuers).arg(command_id.to_string()).query_async(&mut conn).await?;
        if issuer.is_some() {
            break;
        }
    }
    drop(conn);
    let row: Option<(String, Option<String>)> = sqlx::query!(
        "select outcome, reason from processed_message
         where message_id = $1 and ($2::uuid is null or organization_id = $2)",
        command_id.as_uuid(),
        organization
    )
    .map(|row| (row.outcome, row.reason))
    .fetch_optional(&state.pool)
    .await?;
    if let Some((outcome, reason)) = row {
        let refusal = reason.as_deref().map(Refusal::from_stored);
        return Ok(Some(CommandView {
            command_id: command_id.as_uuid(),
            status: outcome,
            reason: refusal.as_ref().map(Refusal::to_string),
            refusal: refusal.and_then(|refusal| serde_json::to_value(refusal).ok()),
        }));
    }
    let visible = match issuer {
        Some(issuer) => matches!(caller, Caller::Operator) || issuer == caller.issuer_tag(),
        None => false,
    };
    Ok(visible.then(|| CommandView {
        command_id: command_id.as_uuid(),
        status: "pending".to_owned(),
        reason: None,
        refusal: None,
    }))
}
