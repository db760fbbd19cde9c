//! One handler per message. Each reads and writes inside the transaction it is given and
//! returns a [`Decision`]: whether the message was applied or rejected (with the reason the
//! issuer will see), the events it caused, and what must happen in Redis once it is committed.
//! A `sqlx::Error` means "not applied, try again": the message stays pending.

mod cancel_task;
mod consent;
mod organization;
mod register_node;
mod reports;
mod submit_task;

use chrono::{DateTime, Utc};
use grid_shared::envelope::Envelope;
use grid_shared::events::Event;
use grid_shared::ids::{NodeId, OrganizationId, TaskId};
use grid_shared::messages::{Command, Report};
use sqlx::PgConnection;

use crate::config::OrchestratorConfig;

/// What a handler may read besides the database.
pub struct Context<'a> {
    pub config: &'a OrchestratorConfig,
    pub envelope: &'a Envelope,
    /// The stream entry that carried the message.
    pub entry_id: &'a str,
    pub now: DateTime<Utc>,
}

/// An event to append to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    pub event: Event,
    pub organization_id: Option<OrganizationId>,
    /// Set when the relay must also tell this node (`TASK:ASSIGNED`, `TASK:CANCELLED`).
    pub notify_node: Option<NodeId>,
}

impl PendingEvent {
    pub fn new(event: Event, organization_id: Option<OrganizationId>) -> Self {
        Self { event, organization_id, notify_node: None }
    }

    pub fn to_node(mut self, node_id: NodeId) -> Self {
        self.notify_node = Some(node_id);
        self
    }
}

/// Redis work that may only happen after the transaction committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterCommit {
    ReleaseCore {
        node_id: NodeId,
        task_id: TaskId,
    },
    /// A task failed for good: the dead-letter stream gets the reason.
    DeadLetterTask {
        task_id: TaskId,
        attempts: i32,
        reason: String,
    },
    /// Entries holding personal data that must leave Redis (XDEL).
    DeleteEntries {
        stream: String,
        entry_ids: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// `None` when applied; the reason shown to the issuer when rejected.
    pub rejection: Option<String>,
    pub events: Vec<PendingEvent>,
    pub after_commit: Vec<AfterCommit>,
}

impl Decision {
    pub fn applied(events: Vec<PendingEvent>) -> Self {
        Self { rejection: None, events, after_commit: Vec::new() }
    }

    pub fn rejected(reason: impl Into<String>) -> Self {
        Self { rejection: Some(reason.into()), events: Vec::new(), after_commit: Vec::new() }
    }

    pub fn then(mut self, after: AfterCommit) -> Self {
        self.after_commit.push(after);
        self
    }
}

pub async fn apply_command(
    conn: &mut PgConnection,
    context: &Context<'_>,
    command: Command,
) -> Result<Decision, sqlx::Error> {
    match command {
        Command::CreateOrganization(payload) => organization::create(conn, context, payload).await,
        Command::RegisterNode(payload) => register_node::register(conn, context, payload).await,
        Command::SubmitTask(payload) => submit_task::submit(conn, context, payload).await,
        Command::CancelTask(payload) => cancel_task::cancel(conn, context, payload).await,
        Command::GrantConsent(payload) => consent::grant(conn, context, payload).await,
        Command::RevokeConsent(payload) => consent::revoke(conn, context, payload).await,
        Command::RotateApiKey(payload) => organization::rotate_key(conn, context, payload).await,
    }
}

pub async fn apply_report(
    conn: &mut PgConnection,
    context: &Context<'_>,
    report: Report,
) -> Result<Decision, sqlx::Error> {
    match report {
        Report::TaskStarted(payload) => reports::started(conn, context, payload).await,
        Report::TaskCompleted(payload) => reports::completed(conn, context, payload).await,
        Report::TaskFailed(payload) => reports::failed(conn, context, payload).await,
    }
}

/// Whether the organisation named by a command exists (commands without one are refused).
async fn organization_exists(
    conn: &mut PgConnection,
    organization_id: Option<OrganizationId>,
) -> Result<bool, sqlx::Error> {
    let Some(organization_id) = organization_id else {
        return Ok(false);
    };
    sqlx::query_scalar::<_, bool>("select exists (select 1 from organization where organization_id = $1)")
        .bind(organization_id.as_uuid())
        .fetch_one(conn)
        .await
}
