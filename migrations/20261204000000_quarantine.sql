-- A writer taking over that finds a task's row contradicting itself (an assigned task with no
-- attempt, a node holding more tasks than it has cores, a quorum that can never be reached)
-- does not trust it and does not stop: the task becomes `quarantined`, out of scheduling, with
-- the problem in `reason` ({"code": "quarantined", "problem": ...}) and a TaskQuarantined
-- event. The rest of the row stays as it was, as evidence for the operator who decides.
alter table task drop constraint task_status_check;
alter table task add constraint task_status_check check (status in
    ('queued', 'assigned', 'running', 'completed', 'failed', 'cancelled', 'rejected', 'quarantined'));
alter table task drop constraint task_check;
alter table task add constraint task_check check (
    (status in ('assigned', 'running')) = (node_id is not null and assigned_at is not null)
    or status in ('completed', 'failed', 'cancelled', 'quarantined'));

-- Reasons and refusals are JSON objects with a stable `code` from now on (shared/src/reasons.rs);
-- rows written before hold prose, which the readers still understand.
