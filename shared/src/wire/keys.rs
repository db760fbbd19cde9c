//! Every Redis key and stream name of a cell, under one namespace, so that many deployments and
//! parallel tests share one Redis without touching each other.
//!
//! Every key starts with the cell's hash tag `{<ns>:<cell>}`: Redis Cluster places all the keys
//! of a cell in one slot, so that a MULTI or a script of the cell never crosses slots
//! (DESIGN §11). Keys that belong to a credential (revocation marker, rate window) and the
//! idempotency answers are written under each cell's tag too, where that cell's scripts read
//! them. `{ns}` in the docs below stands for the tag.

use crate::cells::CellName;
use crate::ids::{NodeId, OrganizationId};

/// The keys of one cell of a namespace (1..=48 characters of `[a-z0-9_-]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    namespace: String,
    cell: CellName,
    /// `{<ns>:<cell>}`.
    tag: String,
}

impl Keys {
    /// The keys of the default cell (`main`) of `namespace`.
    pub fn new(namespace: &str) -> Result<Self, String> {
        Self::of_cell(namespace, &CellName::default())
    }

    pub fn of_cell(namespace: &str, cell: &CellName) -> Result<Self, String> {
        let valid = !namespace.is_empty()
            && namespace.len() <= 48
            && namespace.bytes().all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        if !valid {
            return Err(format!("namespace {namespace:?} must be 1 to 48 characters of a-z, 0-9, _ and -"));
        }
        Ok(Self { namespace: namespace.to_owned(), cell: cell.clone(), tag: format!("{{{namespace}:{cell}}}") })
    }

    /// The keys of another cell of the same namespace.
    pub fn cell_keys(&self, cell: &CellName) -> Self {
        Self { namespace: self.namespace.clone(), cell: cell.clone(), tag: format!("{{{}:{cell}}}", self.namespace) }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn cell(&self) -> &CellName {
        &self.cell
    }

    /// The hash tag every key of the cell starts with: `{<ns>:<cell>}`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The prefix of the keys this namespace used before cells (`<ns>:`), which a writer renames
    /// into its cell's tag when it takes over (see the orchestrator's `store::upgrade`).
    pub fn legacy_prefix(&self) -> String {
        format!("{}:", self.namespace)
    }

    /// `{ns}:commands`: gateway → orchestrator.
    pub fn commands(&self) -> String {
        format!("{}:commands", self.tag)
    }

    /// `{ns}:reports`: node reports, through the gateway → orchestrator.
    pub fn reports(&self) -> String {
        format!("{}:reports", self.tag)
    }

    /// `{ns}:events`: the outbox relay's copy of the event archive, in commit order.
    pub fn events(&self) -> String {
        format!("{}:events", self.tag)
    }

    /// `{ns}:dlq`: entries that could not be applied, with the reason.
    pub fn dead_letters(&self) -> String {
        format!("{}:dlq", self.tag)
    }

    /// `{ns}:node:<id>`: a node's live state, a hash that expires when heartbeats stop.
    pub fn node_state(&self, node_id: NodeId) -> String {
        format!("{}:node:{node_id}", self.tag)
    }

    /// `{ns}:node:<id>:tasks`: the node's task channel.
    pub fn node_tasks(&self, node_id: NodeId) -> String {
        format!("{}:node:{node_id}:tasks", self.tag)
    }

    /// `{ns}:heartbeats`: the change feed of live state. The gateway appends each heartbeat
    /// (capped), the writer reads it to keep its fleet mirror current without reading every
    /// node's hash.
    pub fn heartbeats(&self) -> String {
        format!("{}:heartbeats", self.tag)
    }

    /// `{ns}:nodes:claimed`: a hash of node id → cores held by tasks in flight on it, as the
    /// active writer counts them (written after each commit; rebuilt at takeover).
    pub fn nodes_claimed(&self) -> String {
        format!("{}:nodes:claimed", self.tag)
    }

    /// `{ns}:nodes:feed`: one light entry `{n: node id, i: entry id}` per entry appended to a
    /// node's channel, in the same MULTI (capped): each gateway follows it with one connection
    /// and reads the entries of the nodes connected to it.
    pub fn nodes_feed(&self) -> String {
        format!("{}:nodes:feed", self.tag)
    }

    /// `{ns}:writer`: the epoch of the active writer, set when it takes over. Its absence tells
    /// the writer that Redis lost its data (restarted empty or flushed).
    pub fn writer_marker(&self) -> String {
        format!("{}:writer", self.tag)
    }

    /// `{ns}:summary`: the cell's summary, a hash its writer rewrites several times a second
    /// (see [`super::summary::CellSummary`]).
    pub fn summary(&self) -> String {
        format!("{}:summary", self.tag)
    }

    /// `{ns}:node:<id>:cursor`: how far `/grid/task` polling has read the task channel.
    pub fn node_poll_cursor(&self, node_id: NodeId) -> String {
        format!("{}:node:{node_id}:cursor", self.tag)
    }

    /// `{ns}:nodes:alive`: sorted set of node ids scored by the time (ms) their state expires,
    /// so the scheduler finds candidates without scanning keys.
    pub fn nodes_alive(&self) -> String {
        format!("{}:nodes:alive", self.tag)
    }

    /// `{ns}:issuers`: who issued each command and report still on its stream (field: the
    /// message id), for `GET /v1/commands/{id}` while it is pending. The gateway sets a field
    /// with the entry, the writer deletes it when it acknowledges the entry.
    pub fn issuers(&self) -> String {
        format!("{}:issuers", self.tag)
    }

    /// `{ns}:revoked:<sha256>`: an API key revoked, written by the writer before it commits the
    /// revocation and kept a day; every gateway refuses a credential marked so, cached or not.
    pub fn revoked_credential(&self, credential_sha256: &str) -> String {
        format!("{}:revoked:{credential_sha256}", self.tag)
    }

    /// `{ns}:revocations`: the revocation markers of the cell, a sorted set of SHA-256 scored by
    /// when each marker expires (seconds), so that the writer finds them without a scan.
    pub fn revocations(&self) -> String {
        format!("{}:revocations", self.tag)
    }

    /// `{ns}:idempotency:<org>:<key>`: the answer given to a keyed `POST /v1/tasks`.
    pub fn idempotency(&self, organization_id: OrganizationId, key: &str) -> String {
        format!("{}:idempotency:{organization_id}:{key}", self.tag)
    }

    /// `{ns}:idempotency-cell:<org>:<key>`: the cell a keyed `POST /v1/tasks` that named none
    /// went to (under the default cell's tag), so that its repeats go there too and find its
    /// answer in that cell's slot.
    pub fn idempotency_cell(&self, organization_id: OrganizationId, key: &str) -> String {
        format!("{}:idempotency-cell:{organization_id}:{key}", self.tag)
    }

    /// `{ns}:rate:<caller>:<second>`: requests of one credential in one second.
    pub fn rate_window(&self, caller: &str, second: i64) -> String {
        format!("{}:rate:{caller}:{second}", self.tag)
    }

    /// The pattern that matches every key of every cell of this namespace (for cleaning up
    /// after tests).
    pub fn all_keys_pattern(&self) -> String {
        format!("{{{}:*", self.namespace)
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
        assert_eq!(keys.commands(), "{test-1:main}:commands");
        assert_eq!(keys.dead_letters(), "{test-1:main}:dlq");
        assert_eq!(keys.node_tasks(node), format!("{{test-1:main}}:node:{node}:tasks"));
        assert!(keys.node_state(node).starts_with("{test-1:main}:"));
        let fr = keys.cell_keys(&CellName::parse("fr").unwrap());
        assert_eq!(fr.commands(), "{test-1:fr}:commands");
        assert_eq!(fr.revoked_credential("ab"), "{test-1:fr}:revoked:ab");
        assert_eq!(keys.all_keys_pattern(), "{test-1:*");
        assert_eq!(keys.legacy_prefix(), "test-1:");
    }

    #[test]
    fn namespaces_are_checked() {
        assert!(Keys::new("grid").is_ok());
        assert!(Keys::new("").is_err());
        assert!(Keys::new("a:b").is_err());
        assert!(Keys::new("Grid").is_err());
    }
}
