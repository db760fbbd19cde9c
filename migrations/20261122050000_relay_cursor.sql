-- The relay's progress is one cursor, not a flag on every event: seq order is commit order (the
-- outbox lock), so "relayed up to seq N" says it all, and each event row is written once instead
-- of being updated again when relayed (an update that touched every index of the archive).
create table relay_cursor (
    id        smallint primary key default 1 check (id = 1),
    last_seq  bigint not null check (last_seq >= 0)
);
insert into relay_cursor (last_seq)
    select coalesce((select min(seq) - 1 from event where relayed_at is null), (select max(seq) from event), 0);
drop index event_unrelayed;
comment on column event.relayed_at is 'unused since the relay_cursor migration: see relay_cursor';
