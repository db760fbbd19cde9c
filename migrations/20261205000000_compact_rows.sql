-- Fewer bytes per task (issue 21): what the writer stored twice, it stores once. Measured with
-- `pg_walinspect` over `just demo 0 6 3000`, before this migration: 12.2 KB of WAL per task,
-- of which the event rows 4.6 KB, the task rows 2.3 KB, the participants index 0.6 KB and the
-- ledger's two entries with their three indexes 0.9 KB.

-- The event archive keeps each envelope as the writer serialised and published it (`json`:
-- the text, validated), not re-encoded (`jsonb`: its binary form is a sixth larger for these
-- envelopes, and costs PostgreSQL a parse on insert and a print on every read, the relay's,
-- replay's and the read model's). `->`, `->>` and `::text` read it as before; `jsonb` operators
-- (`@>`, `?`, `=`) need `::jsonb`. Existing envelopes keep their content (in jsonb's order).
alter table event alter column envelope type json using envelope::json;

-- GDPR revocation finds the tasks that used an owner's readings by the owners alone: the index
-- held every path of every participant (each reading, twelve a year), now only the owner ids.
drop index task_participants;
create index task_participants on task
    using gin (jsonb_path_query_array(kind, '$.participants[*].owner_id') jsonb_path_ops)
    where kind_type = 'energy_group_optimisation';

-- A task's accepted result is in `task_result` (with its attempt and verdict): the task row
-- keeps its hash, energy and solar, and no longer a second copy of its JSON. Rows completed
-- before keep theirs (the read model takes the row's copy when there is one).
comment on column task.result_json is
    'written before 20261205000000_compact_rows only: the accepted result is the task_result row of result_hash';

-- The ledger is the proof leaves: each credited result's leaf holds the node's share, the
-- cooperative fund's and the carbon, the amounts its hash commits to. The two entries per
-- credited result that repeated them (three indexes, two rows) are no longer written:
-- `credit_entry` is a view with the same columns and the same two entries per leaf, over the
-- leaves and the entries written before leaves (v1 credits, proven by `green_proof` links).
-- Entries a leaf repeats are checked equal to it, then removed.
alter table credit_entry rename to credit_entry_before_leaves;
alter index credit_entry_once rename to credit_entry_before_leaves_once;

do $$
declare
    differing bigint;
begin
    select count(*) into differing
    from credit_entry_before_leaves e
    join proof_leaf l on l.cell_id = e.cell_id and l.task_id = e.task_id and l.node_id = e.node_id
    where (e.account = 'node' and (e.carbon_ng, e.amount_peur) <> (l.carbon_ng, l.node_peur))
       or (e.account = 'cooperative' and (e.carbon_ng, e.amount_peur) <> (0, l.cooperative_peur));
    if differing > 0 then
        raise exception '% ledger entries differ from the proof leaf of their result: not migrated', differing;
    end if;
end
$$;

delete from credit_entry_before_leaves e
using proof_leaf l
where l.cell_id = e.cell_id and l.task_id = e.task_id and l.node_id = e.node_id;

create view credit_entry as
    select e.credit_entry_id, e.task_id, e.account, e.node_id, e.carbon_ng, e.amount_peur, e.created_at, e.cell_id
    from credit_entry_before_leaves e
    union all
    select null::bigint, l.task_id, entry.account, l.node_id, entry.carbon_ng, entry.amount_peur, l.credited_at,
        l.cell_id
    from proof_leaf l
    cross join lateral (values ('node', l.carbon_ng, l.node_peur), ('cooperative', 0::bigint, l.cooperative_peur))
        as entry (account, carbon_ng, amount_peur);
comment on view credit_entry is
    'the ledger: two entries per credited result (node, cooperative), from its proof leaf; v1 entries as written';
