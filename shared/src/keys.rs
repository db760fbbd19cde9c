//! Every Redis key and stream name, under one namespace prefix, so that many deployments and
//! parallel tests share one Redis without touching each other.

use crate::ids::{NodeId, OrganizationId};

/// A validated namespace: 1..=48 characters of `[a-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    namespace: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Result<Self, String> {
        let valid = !namespace.is_empty()
            && namespace.len() <= 48
            && namespace.bytes().all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        if !valid {
            return Err(format!("namespace {namespace:?} must be 1 to 48 characters of a-z, 0-9, _ and -"));
        }
        Ok(Self { namespace: namespace.to_owned() })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `{ns}:commands`: gateway → orchestrator.
    pub fn commands(&self) -> String {
        format!("{}:commands", self.namespace)
    }

    /// `{ns}:reports`: node reports, through the gateway → orchestrator.
    pub fn reports(&self) -> String {
        format!("{}:reports", self.namespace)
    }

    /// `{ns}:events`: the outbox relay's copy of the event archive, in commit order.
    pub fn events(&self) -> String {
        format!("{}:events", self.namespace)
    }

    /// `{ns}:dlq`: entries that could not be applied, with the reason.
    pub fn dead_letters(&self) -> String {
        format!("{}:dlq", self.namespace)
    }

    /// `{ns}:node:<id>`: a node's live state, a hash that expires when heartbeats stop.
    pub fn node_state(&self, node_id: NodeId) -> String {
        format!("{}:node:{node_id}", self.namespace)
    }

    /// `{ns}:node:<id>:tasks`: the node's task channel.
    pub fn node_tasks(&self, node_id: NodeId) -> String {
        format!("{}:node:{node_id}:tasks", self.namespace)
    }

    /// `{ns}:heartbeats`: the change feed of live state. The gateway appends each heartbeat
    /// (capped), the writer reads it to keep its fleet mirror current without reading every
    /// node's hash.
    pub fn heartbeats(&self) -> String {
        format!("{}:heartbeats", self.namespace)
    }

    /// `{ns}:nodes:claimed`: a hash of node id → cores held by tasks in flight on it, as the
    /// active writer counts them (written after each commit; rebuilt at takeover).
    pub fn nodes_claimed(&self) -> String {
        format!("{}:nodes:claimed", self.namespace)
    }

    /// `{ns}:nodes:feed`: one light entry `{n: node id, i: entry id}` per entry appended to a
    /// node's channel, in the same MULTI (capped): each gateway follows it with one connection
    /// and reads the entries of the nodes connected to it.
    pub fn nodes_feed(&self) -> String {
        format!("{}:nodes:feed", self.namespace)
    }

    /// `{ns}:writer`: the epoch of the active writer, set when it takes over. Its absence tells
    /// the writer that Redis lost its data (restarted empty or flushed).
    pub fn writer_marker(&self) -> String {
        format!("{}:writer", self.namespace)
    }

    /// `{ns}:node:<id>:cursor`: how far `/grid/task` polling has read the task channel.
    pub fn node_poll_cursor(&self, node_id: NodeId) -> String {
        format!("{}:node:{node_id}:cursor", self.namespace)
    }

    /// `{ns}:nodes:alive`: sorted set of node ids scored by the time (ms) their state expires,
    /// so the scheduler finds candidates without scanning keys.
    pub fn nodes_alive(&self) -> String {
        format!("{}:nodes:alive", self.namespace)
    }

    /// `{ns}:issuers`: who issued each command and report still on its stream (field: the
    /// message id), for `GET /v1/commands/{id}` while it is pending. The gateway sets a field
    /// with the entry, the writer deletes it when it acknowledges the entry.
    pub fn issuers(&self) -> String {
        format!("{}:issuers", self.namespace)
    }

    /// `{ns}:revoked:<sha256>`: an API key revoked, written by the writer before it commits the
    /// revocation and kept a day; every gateway refuses a credential marked so, cached or not.
    pub fn revoked_credential(&self, credential_sha256: &str) -> String {
        format!("{}:revoked:{credential_sha256}", self.namespace)
    }

    /// `{ns}:idempotency:<org>:<key>`: the answer given to a keyed `POST /v1/tasks`.
    pub fn idempotency(&self, organization_id: OrganizationId, key: &str) -> String {
        format!("{}:idempotency:{organization_id}:{key}", self.namespace)
    }

    /// `{ns}:rate:<caller>:<second>`: requests of one credential in one second.
    pub fn rate_window(&self, caller: &str, second: i64) -> String {
        format!("{}:rate:{caller}:{second}", self.namespace)
    }

    /// The pattern that matches every key of this namespace (for cleaning up after tests).
    pub fn all_keys_pattern(&self) -> String {
        format!("{}:*", self.namespace)
    }
}

/// The consumer group every orchestrator replica joins.
pub const ORCHESTRATOR_GROUP: &str = "orchestrator";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_carries_the_namespace() {
        let keys = Keys::new("test-1").unwrap();
        let node = NodeId::new();
        assert_eq!(keys.commands(), "test-1:commands");
        assert_eq!(keys.dead_letters(), "test-1:dlq");
        assert_eq!(keys.node_tasks(node), format!("test-1:node:{node}:tasks"));
        assert!(keys.node_state(node).starts_with("test-1:"));
    }

    #[test]
    fn namespaces_are_checked() {
        assert!(Keys::new("grid").is_ok());
        assert!(Keys::new("").is_err());
        assert!(Keys::new("a:b").is_err());
        assert!(Keys::new("Grid").is_err());
    }
}
