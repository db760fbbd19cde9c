-- v2 of the green-proof chain (DESIGN §10): credits are leaves, sealed in blocks under an
-- RFC 6962 Merkle root; each block chains onto the one before, the first onto the last kgp1
-- link of `green_proof` (kept as it is: the chain's first links). See shared/src/blocks.rs and
-- the README for the canonical lines.

-- One row per sealed block. The proof of work is paid once per block.
create table proof_block (
    height       bigint primary key check (height >= 1),
    prev_hash    text not null check (prev_hash ~ '^[0-9a-f]{64}$'),
    merkle_root  text not null check (merkle_root ~ '^[0-9a-f]{64}$'),
    leaf_count   integer not null check (leaf_count >= 1),
    sealed_at    timestamptz not null,
    difficulty   smallint not null,
    nonce        bigint not null,
    hash         text not null unique
);

-- One row per credited result, written in the transaction that credits it, with the block it
-- will be sealed in and its place there: a leaf whose block row does not exist yet is pending.
-- No foreign key to its block for that reason. The leaf's hash is kept beside it, so that an
-- edited leaf is named by the verifier.
create table proof_leaf (
    block_height      bigint not null check (block_height >= 1),
    leaf_index        integer not null check (leaf_index >= 0),
    task_id           uuid not null,
    node_id           uuid not null,
    attempt           integer not null,
    energy_uwh        bigint not null,
    solar_uwh         bigint not null,
    carbon_ng         bigint not null,
    node_peur         bigint not null,
    cooperative_peur  bigint not null,
    credited_at       timestamptz not null,
    leaf_hash         text not null check (leaf_hash ~ '^[0-9a-f]{64}$'),
    primary key (block_height, leaf_index),
    -- A result is credited once; the index also finds a task's proofs.
    unique (task_id, node_id)
);
