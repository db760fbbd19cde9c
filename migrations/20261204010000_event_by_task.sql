-- A task's history is read from the archive by task (GET /v1/tasks/{id}/events, the dashboard's
-- task timeline): each event about one task carries its id (`Event::task_id`), under an index.
-- Events archived before this column are filed from their payload.
alter table event add column task_id uuid;
update event set task_id = (envelope -> 'payload' ->> 'task_id')::uuid
    where event_type in ('TaskAccepted', 'TaskRejected', 'TaskAssigned', 'TaskStarted', 'TaskRequeued',
                         'TaskCompleted', 'TaskResultRecorded', 'NodeTrustChanged', 'TaskFailed',
                         'TaskCancelled', 'TaskQuarantined', 'CreditsDistributed', 'GreenProofAppended')
      and envelope -> 'payload' ->> 'task_id'
          ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
create index event_by_task on event (task_id, seq) where task_id is not null;
