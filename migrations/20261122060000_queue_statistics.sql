-- The task table is a queue: thousands of rows can arrive and leave within a minute. With the
-- default thresholds its statistics lag behind, PostgreSQL believes the queue holds a handful
-- of rows, and the scheduler's query sorts the whole queue instead of walking its index up to
-- the limit. Analyse and vacuum it after 1 % of its rows (at least 500) changed.
alter table task set (
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_analyze_threshold = 500,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000
);
