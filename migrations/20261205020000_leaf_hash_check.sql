-- A proof leaf's hash is checked without a bounded repetition (issue 21). `~ '^[0-9a-f]{64}$'`
-- runs PostgreSQL's regular-expression engine over 64 states for each character: 4.6 % of
-- PostgreSQL's CPU in the end-to-end bench, one leaf per task. The same rule, written as a length
-- and a search for any character that is not a lower-case hex digit: 0.35 µs per hash against
-- 5.0 (200,000 hashes checked in psql, same session).
-- Adding it checks the existing rows again.
alter table proof_leaf drop constraint proof_leaf_leaf_hash_check;
alter table proof_leaf add constraint proof_leaf_leaf_hash_check
    check (octet_length(leaf_hash) = 64 and leaf_hash !~ '[^0-9a-f]');
