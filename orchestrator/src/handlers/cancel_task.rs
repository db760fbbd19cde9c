//! `CMD:CANCEL_TASK`: a queued task is cancelled; an assigned or running one too, and its node
//! is told on its task channel.

use grid_shared::domain::TaskStatus;
use grid_shared::events::{Event, TaskCancelled};
use grid_shared::messages::CancelTask;
use sqlx::PgConnection;

use super::{AfterCommit, Context, Decision, PendingEvent};
use crate::store::tasks::{lock_task, set_status};

pub async fn cancel(
    conn: &mut PgConnection,
    context: &Context<'_>,
    command: CancelTask,
) -> Result<Decision, sqlx::Error> {
    let task = match lock_task(conn, command.task_id).await? {
        Some(task) if Some(task.organization_id) == context.envelope.organization_id => task,
        // Another organisation's task is "not found": existence does not leak.
        _ => return Ok(Decision::rejected("task not found")),
    };
    if let Err(illegal) = task.status.transition(TaskStatus::Cancelled) {
        return Ok(Decision::rejected(format!("cannot cancel: {illegal}")));
    }
    set_status(conn, task.task_id, TaskStatus::Cancelled, Some("cancelled_by_request")).await?;
    let event = PendingEvent::new(
        Event::TaskCancelled(TaskCancelled {
            task_id: task.task_id,
            node_id: task.node_id,
            attempt: task.attempts,
            reason: "cancelled_by_request".to_owned(),
        }),
        Some(task.organization_id),
    );
    Ok(match task.node_id {
        Some(node_id) => Decision::applied(vec![event.to_node(node_id)])
            .then(AfterCommit::ReleaseCore { node_id, task_id: task.task_id }),
        None => Decision::applied(vec![event]),
    })
}
