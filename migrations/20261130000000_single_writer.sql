-- v2 (DESIGN §9): one fenced writer per partition decides in memory and commits in batches.
-- This upgrades a v1 database in place, with its data.

-- The writer's lease. A process holds partition 0's session advisory lock and increments the
-- epoch when it takes over; every write transaction reads this row `for share` and checks its
-- epoch first, so a writer that lost the lock cannot commit after the next one took over.
create table writer (
    partition  smallint primary key check (partition >= 0),
    epoch      bigint not null check (epoch >= 0),
    holder     text not null,
    since      timestamptz not null
);
insert into writer (partition, epoch, holder, since) values (0, 0, 'none', now());

-- The writer keeps the queue, the tasks in flight and the timers in memory, so the indexes
-- that served its per-message queries go: each was written on every status change.
drop index task_queue;
drop index task_in_flight_by_node;
drop index task_assigned_since;
drop index task_in_flight_deadline;

-- A final task has a finish time (v1 left it empty for rejected tasks).
update task set finished_at = coalesce(updated_at, submitted_at)
    where finished_at is null and status in ('completed', 'failed', 'cancelled', 'rejected');

-- Open tasks, read by a writer that takes over and, by node, by a node that reconnects. Its
-- predicate changes once in a task's life (when it ends), so the other updates of a task
-- touch no indexed column and can be HOT.
create index task_open_by_node on task (node_id) where finished_at is null;

-- The stream id (`<seq>-0`) of the task's current assignment on its node's channel: a node
-- that reconnects without Last-Event-ID resumes there, and a writer re-issues it when Redis
-- lost it.
alter table task add column assignment_seq bigint;
update task t set assignment_seq = (
        select max(e.seq) from event e
        where e.event_type = 'TaskAssigned' and e.node_id = t.node_id
          and (e.envelope -> 'payload' ->> 'task_id')::uuid = t.task_id
          and (e.envelope -> 'payload' ->> 'attempt')::int = t.attempts)
    where t.status in ('assigned', 'running');

-- Room on each page for a task's later row versions, so that its updates stay on the page
-- (HOT). Applies to pages written from now on.
alter table task set (fillfactor = 50);
alter table task_result set (fillfactor = 80);

-- Events are numbered by the writer (seq is still commit order: one writer, one transaction
-- at a time). Nothing looks events up by id, so its unique index goes.
alter table event drop constraint event_event_id_key;
