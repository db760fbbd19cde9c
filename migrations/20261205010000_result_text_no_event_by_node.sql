-- Fewer bytes per task (issue 21), continued: a result is kept as the text it was reported in.
-- A node reports `result_json` in its canonical form (no whitespace, keys sorted: the form its
-- `result_hash` is the SHA-256 of); `jsonb` re-encoded it a quarter larger (its binary form,
-- printed back with spaces and keys reordered) and cost a parse on insert. As `json`, a result
-- written from now on keeps the canonical text, so `encode(sha256(convert_to(result_json::text,
-- 'UTF8')), 'hex') = result_hash` holds for it. Results written before keep their content.
alter table task_result alter column result_json type json using result_json::json;

-- No statement reads events by node any more: a node that reconnects without Last-Event-ID
-- resumes at its oldest assignment in flight from the task rows (`task.assignment_seq`), and
-- its channel is a Redis stream. The index cost an entry per assignment and cancellation.
drop index event_by_node;
