-- A node that reconnects without Last-Event-ID resumes at its oldest assignment still in flight:
-- found among the events addressed to it.
create index event_by_node on event (node_id, seq) where node_id is not null;
