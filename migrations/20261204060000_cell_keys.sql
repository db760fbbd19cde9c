-- Every table a writer writes carries its cell (DESIGN §11), and its primary and unique keys
-- include it, so that once the tables are distributed by `cell_id` (Citus, co-located with
-- `writer`) a cell's batch is one single-shard transaction. The cell comes last in each key: a
-- row is still found by its own id alone (a task by `task_id`), and the key's leading column
-- keeps a fixed width, which PostgreSQL compares and reads at a cached offset (measured on the
-- reduced system bench: about a tenth less PostgreSQL CPU per task than with the cell first).
-- Rows written before cells are the cell `main`'s (the one cell of a grid that names none), as
-- its `writer` row already is.
--
-- The default `'main'` keeps a writer of the version before (which names no cell) writing into
-- the cell it served while the upgrade rolls out; this version always names the cell.
--
-- A cell's name is an identifier (`[a-z0-9-]`, checked where a cell is made: its `writer` row
-- and a node's registration): compared bytewise (`collate "C"`), not by the database's locale.
-- The tables written per task have no pattern check of their own: a regular expression on
-- every row of every batch is measurable, and their rows name a cell through their foreign keys
-- or are written by the cell's fenced writer, which holds a parsed cell name.
--
-- Organisation-level tables (organization, api_key, consent, consent_history) carry no cell:
-- they are read by every cell and would be Citus reference tables.

-- Nodes: a node is in one cell; its foreign keys from the cell's tasks, results and credits
-- include the cell, so a task can only ever be placed on a node of its own cell.
update node set cell_id = 'main' where cell_id is null;
alter table node alter column cell_id type text collate "C", alter column cell_id set default 'main',
    alter column cell_id set not null;
alter table writer alter column cell_id type text collate "C";

alter table task add column cell_id text collate "C" not null default 'main';
alter table task_result add column cell_id text collate "C" not null default 'main';
alter table credit_entry add column cell_id text collate "C" not null default 'main';
alter table event add column cell_id text collate "C" not null default 'main';
alter table processed_message add column cell_id text collate "C" not null default 'main';
alter table proof_block add column cell_id text collate "C" not null default 'main';
alter table proof_leaf add column cell_id text collate "C" not null default 'main';
alter table green_proof add column cell_id text collate "C" not null default 'main';
alter table relay_cursor add column cell_id text collate "C" not null default 'main';

-- The foreign keys go first: they depend on the keys being replaced.
alter table task drop constraint task_node_id_fkey;
alter table task_result drop constraint task_result_task_id_fkey, drop constraint task_result_node_id_fkey;
alter table credit_entry drop constraint credit_entry_task_id_fkey, drop constraint credit_entry_node_id_fkey;

alter table node drop constraint node_pkey, add primary key (node_id, cell_id);
alter table node drop constraint node_token_hash_key, add constraint node_token_hash_key unique (token_hash, cell_id);

alter table task drop constraint task_pkey, add primary key (task_id, cell_id);
alter table task add constraint task_node_id_fkey foreign key (node_id, cell_id) references node (node_id, cell_id);

alter table task_result drop constraint task_result_pkey, add primary key (task_id, attempt, cell_id);
alter table task_result add constraint task_result_task_id_fkey foreign key (task_id, cell_id) references task (task_id, cell_id),
    add constraint task_result_node_id_fkey foreign key (node_id, cell_id) references node (node_id, cell_id);

alter table credit_entry drop constraint credit_entry_pkey, add primary key (credit_entry_id, cell_id);
alter table credit_entry drop constraint credit_entry_once, add constraint credit_entry_once unique (task_id, node_id, account, cell_id);
alter table credit_entry add constraint credit_entry_task_id_fkey foreign key (task_id, cell_id) references task (task_id, cell_id),
    add constraint credit_entry_node_id_fkey foreign key (node_id, cell_id) references node (node_id, cell_id);

-- Each cell has its own event sequence: `seq` is the cell's, `(seq, cell_id)` the event's key.
alter table event drop constraint event_pkey, add primary key (seq, cell_id);

alter table processed_message drop constraint processed_message_pkey, add primary key (message_id, cell_id);

-- Each cell has its own proof chain: heights count from 1 in every cell.
alter table proof_block drop constraint proof_block_pkey, add primary key (height, cell_id);
alter table proof_block drop constraint proof_block_hash_key, add constraint proof_block_hash_key unique (hash, cell_id);
alter table proof_leaf drop constraint proof_leaf_pkey, add primary key (block_height, leaf_index, cell_id);
alter table proof_leaf drop constraint proof_leaf_task_id_node_id_key,
    add constraint proof_leaf_task_id_node_id_key unique (task_id, node_id, cell_id);

-- The v1 links were all the one writer's: the cell `main`'s.
alter table green_proof drop constraint green_proof_pkey, add primary key (seq, cell_id);
alter table green_proof drop constraint green_proof_hash_key, add constraint green_proof_hash_key unique (hash, cell_id);
alter table green_proof drop constraint green_proof_once, add constraint green_proof_once unique (task_id, node_id, cell_id);

-- How far each cell's events were published (a cell's row is made by its first writer).
alter table relay_cursor drop column id;
alter table relay_cursor add primary key (cell_id);
