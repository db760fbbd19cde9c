-- Cells (DESIGN §11): a node belongs to one cell, chosen at registration. Nodes registered
-- before cells are in the grid's default cell (null here; `main` for a grid that names none).
-- The other tables gain `cell_id` with the writer per cell.
alter table node add column cell_id text check (cell_id ~ '^[a-z0-9][a-z0-9-]{0,31}$');

-- A writer lease per cell (DESIGN §11): the `writer` row is keyed by its cell; the one writer
-- before cells becomes the lease of the cell `main` (a cell's row is made by its first writer).
-- `partition` stays, nullable, for a writer of the version before still running during the
-- upgrade: it updates the same row, so the epochs still fence one against the other.
alter table writer add column cell_id text check (cell_id ~ '^[a-z0-9][a-z0-9-]{0,31}$');
update writer set cell_id = 'main' where partition = 0;
delete from writer where cell_id is null;
alter table writer drop constraint writer_pkey;
alter table writer alter column cell_id set not null;
alter table writer add primary key (cell_id);
alter table writer alter column partition drop not null;
