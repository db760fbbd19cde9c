-- Consent, as GDPR Art. 7 and 30 want it kept: every grant and revocation, with the clause
-- version and the address of the grant, in order. The `consent` row is the current state.
create table consent_history (
    consent_history_id bigserial primary key,
    owner_id           uuid not null,
    organization_id    uuid not null references organization,
    action             text not null check (action in ('granted', 'revoked')),
    at                 timestamptz not null,
    consent_ip         text,
    consent_version    text
);
create index consent_history_by_owner on consent_history (organization_id, owner_id, consent_history_id);

-- The commands-stream entry that carried a submission: on revocation its readings are deleted
-- from Redis too (XDEL), not only from the task row.
alter table task add column submitted_entry_id text;

-- Revocation looks for the tasks that use an owner's readings.
create index task_participants on task using gin ((kind -> 'participants') jsonb_path_ops)
    where kind_type = 'energy_group_optimisation';
