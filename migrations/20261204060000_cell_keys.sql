-- Every table a writer writes carries its cell (DESIGN §11), and its primary and unique keys
-- begin with it, so that once the tables are distributed by `cell_id` (Citus, co-located with
-- `writer`) a cell's batch is one single-shard transaction. Rows written before cells are the
-- cell `main`'s (the one cell of a grid that names none), as its `writer` row already is.
--
-- The default `'main'` keeps a writer of the version before (which names no cell) writing into
-- the cell it served while the upgrade rolls out; this version always names the cell.
--
-- Organisation-level tables (organization, api_key, consent, consent_history) carry no cell:
-- they are read by every cell and would be Citus reference tables.

-- Nodes: a node is in one cell; its foreign keys from the cell's tasks, results and credits
-- include the cell, so a task can only ever be placed on a node of its own cell.
update node set cell_id = 'main' where cell_id is null;
alter table node alter column cell_id set default 'main', alter column cell_id set not null;

alter table task add column cell_id text not null default 'main' check (cell_id ~ '^[a-z0-9][a-z0-9-]{0,31}$');
alter table task_result add column cell_id text not null default 'main' check (cell_id ~ '^[a-z0-9][a-z0-9-]{0,31}$');
alter table credit_entry add column cell_id text not null default 'main' check (cell_id ~ '^[a-z0-9][a-z0-9-]{0,31}$');
alter table event add column cell_id text not null default 'main' check (cell_id ~ '^[a-z0-9][a-z0-9-]{0,31}$');
alter table processed_message add column cell_id text not null default 'main' check (cell_id ~ '^[a-z0-9][a-z0-9-]{0,31}$');
alter table proof_block add column cell_id text not null default 'main' check (cell_id ~ '^[a-z0-9][a-z0-9-]{0,31}$');
alter table proof_leaf add column cell_id text not null default 'main' check (cell_id ~ '^[a-z0-9][a-z0-9-]{0,31}$');
alter table green_proof add column cell_id text not null default 'main' check (cell_id ~ '^[a-z0-9][a-z0-9-]{0,31}$');
alter table relay_cursor add column cell_id text not null default 'main' check (cell_id ~ '^[a-z0-9][a-z0-9-]{0,31}$');

-- The foreign keys go first: they depend on the keys being replaced.
alter table task drop constraint task_node_id_fkey;
alter table task_result drop constraint task_result_task_id_fkey, drop constraint task_result_node_id_fkey;
alter table credit_entry drop constraint credit_entry_task_id_fkey, drop constraint credit_entry_node_id_fkey;

alter table node drop constraint node_pkey, add primary key (cell_id, node_id);
alter table node drop constraint node_token_hash_key, add constraint node_token_hash_key unique (cell_id, token_hash);
-- Nodes are looked up by id alone (a node's page, its credentials); they are written rarely.
create index node_by_id on node (node_id);
create index node_by_token on node (token_hash);

alter table task drop constraint task_pkey, add primary key (cell_id, task_id);
alter table task add constraint task_node_id_fkey foreign key (cell_id, node_id) references node (cell_id, node_id);

alter table task_result drop constraint task_result_pkey, add primary key (cell_id, task_id, attempt);
alter table task_result add constraint task_result_task_id_fkey foreign key (cell_id, task_id) references task (cell_id, task_id),
    add constraint task_result_node_id_fkey foreign key (cell_id, node_id) references node (cell_id, node_id);

alter table credit_entry drop constraint credit_entry_pkey, add primary key (cell_id, credit_entry_id);
alter table credit_entry drop constraint credit_entry_once, add constraint credit_entry_once unique (cell_id, task_id, node_id, account);
alter table credit_entry add constraint credit_entry_task_id_fkey foreign key (cell_id, task_id) references task (cell_id, task_id),
    add constraint credit_entry_node_id_fkey foreign key (cell_id, node_id) references node (cell_id, node_id);

-- Each cell has its own event sequence: `seq` is the cell's, `(cell_id, seq)` the event's key.
alter table event drop constraint event_pkey, add primary key (cell_id, seq);
drop index event_by_organization;
create index event_by_organization on event (cell_id, organization_id, seq);

alter table processed_message drop constraint processed_message_pkey, add primary key (cell_id, message_id);

-- Each cell has its own proof chain: heights count from 1 in every cell.
alter table proof_block drop constraint proof_block_pkey, add primary key (cell_id, height);
alter table proof_block drop constraint proof_block_hash_key, add constraint proof_block_hash_key unique (cell_id, hash);
alter table proof_leaf drop constraint proof_leaf_pkey, add primary key (cell_id, block_height, leaf_index);
alter table proof_leaf drop constraint proof_leaf_task_id_node_id_key,
    add constraint proof_leaf_task_id_node_id_key unique (cell_id, task_id, node_id);

-- The v1 links were all the one writer's: the cell `main`'s.
alter table green_proof drop constraint green_proof_pkey, add primary key (cell_id, seq);
alter table green_proof drop constraint green_proof_hash_key, add constraint green_proof_hash_key unique (cell_id, hash);
alter table green_proof drop constraint green_proof_once, add constraint green_proof_once unique (cell_id, task_id, node_id);

-- How far each cell's events were published (a cell's row is made by its first writer).
alter table relay_cursor drop column id;
alter table relay_cursor add primary key (cell_id);
