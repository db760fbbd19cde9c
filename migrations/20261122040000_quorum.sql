-- Result validation by quorum (as in BOINC): a task may ask for up to three replicas. They run one
-- after another, each on a node of an owner (organisation) that has not run the task yet, until
-- `quorum` results agree on their hash or `result_limit` results are in (then: failed, no_quorum).
alter table task
    add column replicas     smallint not null default 1 check (replicas between 1 and 3),
    add column quorum       smallint not null default 1 check (quorum between 1 and 3),
    add column result_limit smallint not null default 1 check (result_limit between 1 and 8);

-- Every result a node reported for its current assignment, kept as reported. The verdict is set
-- once the task's quorum is decided: `agreed` results are credited (when plausible), `disagreed`
-- ones never are; `unchecked` is a single result accepted without a replica.
create table task_result (
    task_id      uuid not null references task,
    attempt      integer not null,
    node_id      uuid not null references node,
    -- The node's owner, so that a replica never runs on the same owner's nodes twice.
    owner_id     uuid not null references organization,
    result_hash  text not null,
    result_json  jsonb,
    energy_uwh   bigint not null check (energy_uwh >= 0),
    solar_uwh    bigint not null check (solar_uwh >= 0),
    refusal      text,
    verdict      text not null default 'pending'
                     check (verdict in ('pending', 'agreed', 'disagreed', 'inconclusive', 'unchecked')),
    reported_at  timestamptz not null default now(),
    primary key (task_id, attempt)
);

-- Completions recorded before this migration are single results, accepted unchecked.
insert into task_result (task_id, attempt, node_id, owner_id, result_hash, result_json, energy_uwh, solar_uwh,
                         refusal, verdict, reported_at)
    select t.task_id, t.attempts, t.node_id, n.organization_id, t.result_hash, t.result_json,
           coalesce(t.energy_uwh, 0), coalesce(t.solar_uwh, 0), t.reason, 'unchecked', coalesce(t.finished_at, now())
    from task t join node n using (node_id)
    where t.status = 'completed' and t.result_hash is not null;

-- Consecutive results of the node confirmed by a quorum; a disagreeing result resets it to 0.
alter table node add column trust integer not null default 0 check (trust >= 0);

-- With replicas, one task may credit several nodes: each credited result has its own pair of
-- entries and its own proof link. The cooperative's entry now names the node whose work earned it.
update credit_entry c set node_id = n.node_id
    from credit_entry n
    where c.account = 'cooperative' and c.node_id is null and n.task_id = c.task_id and n.account = 'node';
alter table credit_entry drop constraint credit_entry_check;
alter table credit_entry alter column node_id set not null;
alter table credit_entry drop constraint credit_entry_task_id_account_key;
alter table credit_entry add constraint credit_entry_once unique (task_id, node_id, account);
alter table green_proof drop constraint green_proof_task_id_key;
alter table green_proof add constraint green_proof_once unique (task_id, node_id);
