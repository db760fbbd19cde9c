-- Scheduling: a requeued task waits out an exponential backoff before it is placed again.
alter table task add column not_before timestamptz;

-- The housekeeping looks for assignments whose start lease passed, and for overdue work.
create index task_assigned_since on task (assigned_at) where status = 'assigned';
create index task_in_flight_deadline on task (deadline) where status in ('queued', 'assigned', 'running');
