-- KoproGo Grid: the truth. Only the orchestrator writes these tables; the gateway reads them.
-- Money and carbon are exact integers: energy in µWh, carbon in ng of CO₂, money in pico-euros.

create table organization (
    organization_id uuid primary key,
    name            text not null,
    created_at      timestamptz not null default now()
);

-- API keys are stored as their SHA-256 only: the key is shown once to the caller and never kept.
create table api_key (
    key_hash        text primary key check (key_hash ~ '^[0-9a-f]{64}$'),
    organization_id uuid not null references organization,
    created_at      timestamptz not null default now(),
    revoked_at      timestamptz
);
create index api_key_by_organization on api_key (organization_id);

create table node (
    node_id         uuid primary key,
    organization_id uuid not null references organization,
    name            text not null,
    cpu_cores       integer not null check (cpu_cores between 1 and 256),
    has_solar       boolean not null,
    location        text not null,
    -- Like API keys, the node token is kept as its SHA-256 only.
    token_hash      text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),
    registered_at   timestamptz not null default now()
);
create index node_by_organization on node (organization_id);

create table task (
    task_id         uuid primary key,
    organization_id uuid not null references organization,
    copropriete_id  uuid not null,
    kind_type       text not null check (kind_type in ('building_thermal_simulation', 'energy_group_optimisation')),
    -- The computation as submitted. Owners' readings are purged from it when they revoke consent.
    kind            jsonb not null,
    priority        smallint not null check (priority between 0 and 10),
    deadline        timestamptz not null,
    status          text not null check (status in
                        ('queued', 'assigned', 'running', 'completed', 'failed', 'cancelled', 'rejected')),
    -- The attempt number doubles as a fencing token: a report for an older attempt is refused.
    attempts        integer not null default 0 check (attempts >= 0),
    node_id         uuid references node,
    assigned_at     timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    result_json     jsonb,
    result_hash     text,
    energy_uwh      bigint check (energy_uwh >= 0),
    -- Stored as claimed, even when implausible: the refusal reason is in the TaskCompleted event.
    solar_uwh       bigint check (solar_uwh >= 0),
    reason          text,
    -- The id of the HTTP request that submitted the task: it follows the task to the node.
    correlation_id  uuid not null,
    submitted_at    timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    check ((status in ('assigned', 'running')) = (node_id is not null and assigned_at is not null)
           or status in ('completed', 'failed', 'cancelled'))
);
-- The scheduler's queue: by priority, then deadline, then age.
create index task_queue on task (priority desc, deadline, submitted_at) where status = 'queued';
create index task_by_organization on task (organization_id, submitted_at desc, task_id desc);
create index task_in_flight_by_node on task (node_id) where status in ('assigned', 'running');

-- GDPR Art. 6.1.a / 7 / 30: who consented, to which clause version, from which address, and when.
create table consent (
    owner_id        uuid not null,
    organization_id uuid not null references organization,
    granted         boolean not null,
    granted_at      timestamptz,
    revoked_at      timestamptz,
    consent_ip      text,
    consent_version text not null,
    primary key (owner_id, organization_id)
);

-- Every applied stream message, so that a redelivered one changes nothing, and the answer to
-- GET /v1/commands/{id}.
create table processed_message (
    message_id      uuid primary key,
    message_type    text not null,
    organization_id uuid,
    outcome         text not null check (outcome in ('applied', 'rejected')),
    reason          text,
    processed_at    timestamptz not null default now()
);

-- The outbox and the complete event archive. `seq` is taken under a transaction advisory lock
-- held to commit, so seq order is commit order and the relay can publish in it.
create table event (
    seq             bigserial primary key,
    event_id        uuid not null unique,
    event_type      text not null,
    organization_id uuid,
    -- Set when the event must also reach a node's task channel (TaskAssigned, TaskCancelled).
    node_id         uuid,
    occurred_at     timestamptz not null,
    envelope        jsonb not null,
    relayed_at      timestamptz
);
create index event_unrelayed on event (seq) where relayed_at is null;
create index event_by_organization on event (organization_id, seq);

-- The green-proof chain: see shared/src/proof.rs and the README for the canonical encoding.
create table green_proof (
    seq             bigint primary key check (seq >= 1),
    task_id         uuid not null unique,
    node_id         uuid not null,
    energy_uwh      bigint not null,
    solar_uwh       bigint not null,
    carbon_ng       bigint not null,
    value_peur      bigint not null,
    created_at      timestamptz not null,
    difficulty      smallint not null,
    prev_hash       text not null,
    nonce           bigint not null,
    hash            text not null unique
);

-- The credit ledger: two entries per credited task, one for the node's owner and one for the
-- cooperative fund. A balance is a sum; (task, account) is unique, so a task is credited once.
create table credit_entry (
    credit_entry_id bigserial primary key,
    task_id         uuid not null references task,
    account         text not null check (account in ('node', 'cooperative')),
    node_id         uuid references node,
    carbon_ng       bigint not null check (carbon_ng >= 0),
    amount_peur     bigint not null check (amount_peur >= 0),
    created_at      timestamptz not null default now(),
    unique (task_id, account),
    check ((account = 'node') = (node_id is not null))
);
create index credit_entry_by_node on credit_entry (node_id) where node_id is not null;
