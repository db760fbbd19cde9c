//! Why: the reasons the writer gives, each an enum serialised here and nowhere else.
//!
//! - [`TaskReason`]: why a task is where it is (taken back, failed, cancelled, rejected at
//!   admission, not credited, quarantined), in the task's `reason` column, in its events and in
//!   `GET /v1/tasks/{id}`.
//! - [`Refusal`]: why a command or report was not applied, in `processed_message.reason` and in
//!   `GET /v1/commands/{id}`.
//!
//! Both serialise as a JSON object with a stable `code` (snake case) and the fields of the
//! variant; `Display` is the sentence shown to people. Rows and events written before these
//! enums hold prose (`"node_offline"`, `"attempts_exhausted: node_offline"`, `"stale report:
//! ..."`): [`TaskReason::from_stored`] and [`Refusal::from_stored`] read both forms.

use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::{RejectionReason, TaskStatus};
use crate::ids::NodeId;

/// Why a task was taken off its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum TakeBack {
    /// The node's heartbeats stopped for longer than the node TTL.
    #[error("its node went offline")]
    NodeOffline,
    /// The node neither started nor finished the assignment within the start lease.
    #[error("its node did not start it within the start lease")]
    StartLeaseExpired,
    /// The node reported that it could not run it.
    #[error("its node reported a failure: {error}")]
    NodeReportedFailure { error: String },
}

/// Why a task is in its state: taken back (and waiting out a backoff), failed, cancelled,
/// rejected at admission, completed without credit, or quarantined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum TaskReason {
    /// Taken back from its node and queued again (after a backoff).
    #[error("taken back: {cause}")]
    TakenBack { cause: TakeBack },
    /// Failed: its attempts were spent, the last one ending as `last`.
    #[error("failed after {attempts} attempts; the last one ended because {last}")]
    AttemptsExhausted { attempts: i32, last: TakeBack },
    /// Failed: the replicas' results never reached a quorum.
    #[error("no quorum: {results} results with {distinct_hashes} distinct hashes, none reached {quorum}")]
    NoQuorum { results: u64, distinct_hashes: u64, quorum: u8 },
    /// Failed: the deadline passed while the task was still open.
    #[error("the deadline passed before the task completed")]
    DeadlineExceeded,
    /// Cancelled by its organisation.
    #[error("cancelled at the organisation's request")]
    CancelledByRequest,
    /// Cancelled because a participant revoked their consent.
    #[error("cancelled: a participant revoked their consent")]
    ConsentRevoked,
    /// Completed, but the reported energy earns no credit.
    #[error("completed without credit: {detail}")]
    NotCredited { detail: String },
    /// Taken out of scheduling by a writer that found its row contradicting itself; an operator
    /// decides what becomes of it.
    #[error("quarantined: {problem}")]
    Quarantined { problem: String },
    /// A reason written before these codes existed, as it was written.
    #[error("{text}")]
    Legacy { text: String },
    /// Rejected at admission (the rejection's own `code`).
    #[serde(untagged)]
    #[error("rejected: {0}")]
    Rejected(RejectionReason),
}

impl TakeBack {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NodeOffline => "node_offline",
            Self::StartLeaseExpired => "start_lease_expired",
            Self::NodeReportedFailure { .. } => "node_reported_failure",
        }
    }
}

impl TaskReason {
    pub fn taken_back(cause: TakeBack) -> Self {
        Self::TakenBack { cause }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TakenBack { .. } => "taken_back",
            Self::AttemptsExhausted { .. } => "attempts_exhausted",
            Self::NoQuorum { .. } => "no_quorum",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::CancelledByRequest => "cancelled_by_request",
            Self::ConsentRevoked => "consent_revoked",
            Self::NotCredited { .. } => "not_credited",
            Self::Quarantined { .. } => "quarantined",
            Self::Legacy { .. } => "legacy",
            Self::Rejected(rejection) => rejection.code(),
        }
    }

    /// The text stored in a `reason` column.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"code\":\"{}\"}}", self.code()))
    }

    /// The `reason` a node is told in `TASK:CANCELLED` (the node protocol's plain string): the
    /// cause of a take-back (`node_offline`, `start_lease_expired`, `node_reported_failure`),
    /// else the reason's own code.
    pub fn for_node(&self) -> &'static str {
        match self {
            Self::TakenBack { cause } => cause.code(),
            other => other.code(),
        }
    }

    /// Reads a `reason` column or an event's `reason`: a JSON object, or prose written before
    /// the codes existed.
    pub fn from_stored(text: &str) -> Self {
        if text.trim_start().starts_with('{')
            && let Ok(reason) = serde_json::from_str::<TaskReason>(text)
        {
            return reason;
        }
        Self::from_legacy(text)
    }

    fn from_legacy(text: &str) -> Self {
        let take_back = |text: &str| match text {
            "node_offline" => Some(TakeBack::NodeOffline),
            "start_lease_expired" => Some(TakeBack::StartLeaseExpired),
            _ => text
                .strip_prefix("node reported failure: ")
                .map(|error| TakeBack::NodeReportedFailure { error: error.to_owned() }),
        };
        if let Some(cause) = take_back(text) {
            return Self::taken_back(cause);
        }
        if let Some(last) = text.strip_prefix("attempts_exhausted: ").and_then(take_back) {
            return Self::AttemptsExhausted { attempts: 0, last };
        }
        match text {
            "deadline_exceeded" => Self::DeadlineExceeded,
            "cancelled_by_request" => Self::CancelledByRequest,
            "consent_revoked" => Self::ConsentRevoked,
            _ => Self::Legacy { text: text.to_owned() },
        }
    }

    /// The status a task with this reason is in, when the reason decides it.
    pub fn final_status(&self) -> Option<TaskStatus> {
        match self {
            Self::AttemptsExhausted { .. } | Self::NoQuorum { .. } | Self::DeadlineExceeded => Some(TaskStatus::Failed),
            Self::CancelledByRequest | Self::ConsentRevoked => Some(TaskStatus::Cancelled),
            Self::Rejected(_) => Some(TaskStatus::Rejected),
            Self::Quarantined { .. } => Some(TaskStatus::Quarantined),
            Self::TakenBack { .. } | Self::NotCredited { .. } | Self::Legacy { .. } => None,
        }
    }
}

/// Deserialises a reason that may be prose (events written before the codes): for
/// `#[serde(deserialize_with)]`.
pub fn task_reason_or_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TaskReason, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Reason(TaskReason),
        Text(String),
    }
    Ok(match Stored::deserialize(deserializer)? {
        Stored::Reason(reason) => reason,
        Stored::Text(text) => TaskReason::from_legacy(&text),
    })
}

impl RejectionReason {
    /// The stable code (as serialised).
    pub fn code(&self) -> &'static str {
        match self {
            Self::KAnonymityViolated { .. } => "k_anonymity_violated",
            Self::ConsentNotGranted { .. } => "consent_not_granted",
            Self::DeadlinePassed => "deadline_passed",
            Self::UnknownOrganization => "unknown_organization",
            Self::DuplicateTask => "duplicate_task",
            Self::NotEnoughNodeOwners { .. } => "not_enough_node_owners",
        }
    }
}

/// Why a command or report was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Refusal {
    /// A report about an assignment that is not the task's current one (another node, or an
    /// earlier attempt): recorded, never credited.
    #[error(
        "stale report: attempt {attempt} on node {node_id} is not the task's current assignment (attempt {current_attempt})"
    )]
    StaleReport { attempt: i32, node_id: NodeId, current_attempt: i32 },
    /// A report about a task that is not in flight (final, or never known).
    #[error("stale report: the task is not in flight (already final, or unknown)")]
    NotInFlight,
    /// A report from a node the grid does not know.
    #[error("unknown node {node_id}")]
    UnknownNode { node_id: NodeId },
    /// The report asks for a transition the state machine does not allow.
    #[error("a {from} task cannot become {to}")]
    IllegalTransition { from: TaskStatus, to: TaskStatus },
    #[error("this API key is already in use")]
    ApiKeyInUse,
    #[error("an organisation with this id already exists")]
    OrganizationExists,
    #[error("organisation not found")]
    OrganizationNotFound,
    /// The command's organisation is not known to the grid.
    #[error("the issuing organisation does not exist")]
    UnknownIssuer,
    #[error("a node with this id or token already exists")]
    NodeExists,
    /// A registration in a carbon zone the grid does not know (`GRID_ZONES`).
    #[error("the grid knows no carbon zone {zone}")]
    UnknownZone { zone: String },
    /// A node or a task of another cell than the writer's (DESIGN §11).
    #[error("this writer serves cell {served}, not cell {cell}")]
    OtherCell { cell: String, served: String },
    /// An organisation-level command (organisation, key, consent, contract) sent to a cell
    /// other than the default one, whose writer alone applies them (DESIGN §11).
    #[error("organisation-level commands are applied by the default cell {default}, not by cell {served}")]
    NotDefaultCell { default: String, served: String },
    /// A cancellation of a task that is not open (or not the organisation's).
    #[error("the task is not open (already final, or not found)")]
    TaskNotOpen,
    #[error("no granted consent to revoke for this owner")]
    NoConsentToRevoke,
    #[error("the command names no organisation")]
    NoOrganization,
    /// The writer met state it did not expect; the message changed nothing (an operator should
    /// look: `grid_invariant_violations_total` counts these).
    #[error("refused on unexpected state: {detail}")]
    Invariant { detail: String },
    /// Written before these codes existed, as it was written.
    #[error("{text}")]
    Legacy { text: String },
    /// A submission rejected at admission (the rejection's own `code`).
    #[serde(untagged)]
    #[error("{0}")]
    Rejected(RejectionReason),
}

impl Refusal {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::StaleReport { .. } => "stale_report",
            Self::NotInFlight => "not_in_flight",
            Self::UnknownNode { .. } => "unknown_node",
            Self::IllegalTransition { .. } => "illegal_transition",
            Self::ApiKeyInUse => "api_key_in_use",
            Self::OrganizationExists => "organization_exists",
            Self::OrganizationNotFound => "organization_not_found",
            Self::UnknownIssuer => "unknown_issuer",
            Self::NodeExists => "node_exists",
            Self::UnknownZone { .. } => "unknown_zone",
            Self::OtherCell { .. } => "other_cell",
            Self::NotDefaultCell { .. } => "not_default_cell",
            Self::TaskNotOpen => "task_not_open",
            Self::NoConsentToRevoke => "no_consent_to_revoke",
            Self::NoOrganization => "no_organization",
            Self::Invariant { .. } => "invariant",
            Self::Legacy { .. } => "legacy",
            Self::Rejected(rejection) => rejection.code(),
        }
    }

    /// The text stored in `processed_message.reason`.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"code\":\"{}\"}}", self.code()))
    }

    /// Reads `processed_message.reason`: a JSON object, or prose written before the codes.
    pub fn from_stored(text: &str) -> Self {
        if text.trim_start().starts_with('{')
            && let Ok(refusal) = serde_json::from_str::<Refusal>(text)
        {
            return refusal;
        }
        Self::Legacy { text: text.to_owned() }
    }

    /// Whether the refusal means the writer met state it did not expect.
    pub fn is_invariant(&self) -> bool {
        matches!(self, Self::Invariant { .. })
    }
}

impl From<RejectionReason> for Refusal {
    fn from(rejection: RejectionReason) -> Self {
        Self::Rejected(rejection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OwnerId;

    #[test]
    fn a_task_reason_is_an_object_with_a_code_and_reads_back() {
        let reasons = [
            TaskReason::taken_back(TakeBack::NodeOffline),
            TaskReason::taken_back(TakeBack::NodeReportedFailure { error: "out of memory".into() }),
            TaskReason::AttemptsExhausted { attempts: 3, last: TakeBack::StartLeaseExpired },
            TaskReason::NoQuorum { results: 4, distinct_hashes: 3, quorum: 2 },
            TaskReason::DeadlineExceeded,
            TaskReason::ConsentRevoked,
            TaskReason::Quarantined { problem: "assigned without an attempt".into() },
            TaskReason::Rejected(RejectionReason::KAnonymityViolated { min: 5, got: 3 }),
            TaskReason::Rejected(RejectionReason::ConsentNotGranted { owner_id: OwnerId::new() }),
        ];
        for reason in reasons {
            let stored = reason.to_stored();
            let json: serde_json::Value = serde_json::from_str(&stored).unwrap();
            assert_eq!(json["code"], reason.code(), "{stored}");
            assert_eq!(TaskReason::from_stored(&stored), reason, "{stored}");
        }
        let stored = TaskReason::taken_back(TakeBack::StartLeaseExpired).to_stored();
        assert_eq!(stored, r#"{"code":"taken_back","cause":{"code":"start_lease_expired"}}"#);
    }

    #[test]
    fn prose_written_before_the_codes_reads_as_the_reason_it_meant() {
        assert_eq!(TaskReason::from_stored("node_offline"), TaskReason::taken_back(TakeBack::NodeOffline));
        assert_eq!(
            TaskReason::from_stored("attempts_exhausted: start_lease_expired"),
            TaskReason::AttemptsExhausted { attempts: 0, last: TakeBack::StartLeaseExpired }
        );
        assert_eq!(
            TaskReason::from_stored("node reported failure: boom"),
            TaskReason::taken_back(TakeBack::NodeReportedFailure { error: "boom".into() })
        );
        assert_eq!(TaskReason::from_stored("deadline_exceeded"), TaskReason::DeadlineExceeded);
        assert_eq!(
            TaskReason::from_stored(r#"{"code":"k_anonymity_violated","min":5,"got":3}"#),
            TaskReason::Rejected(RejectionReason::KAnonymityViolated { min: 5, got: 3 })
        );
        assert_eq!(
            TaskReason::from_stored("no_quorum: 4 results"),
            TaskReason::Legacy { text: "no_quorum: 4 results".into() }
        );
        assert_eq!(Refusal::from_stored("stale report: x"), Refusal::Legacy { text: "stale report: x".into() });
    }

    #[test]
    fn a_refusal_is_an_object_with_a_code_and_says_why_in_a_sentence() {
        let refusal = Refusal::StaleReport { attempt: 1, node_id: NodeId::new(), current_attempt: 2 };
        let stored = refusal.to_stored();
        assert_eq!(Refusal::from_stored(&stored), refusal);
        assert!(refusal.to_string().starts_with("stale report: attempt 1"));
        let rejected = Refusal::from(RejectionReason::DeadlinePassed);
        assert_eq!(rejected.to_stored(), r#"{"code":"deadline_passed"}"#);
        assert_eq!(Refusal::from_stored(&rejected.to_stored()), rejected);
        assert_eq!(rejected.code(), "deadline_passed");
    }

    #[test]
    fn an_event_reason_may_be_prose_or_an_object() {
        #[derive(Deserialize)]
        struct Payload {
            #[serde(deserialize_with = "task_reason_or_text")]
            reason: TaskReason,
        }
        let old: Payload = serde_json::from_str(r#"{"reason": "node_offline"}"#).unwrap();
        assert_eq!(old.reason, TaskReason::taken_back(TakeBack::NodeOffline));
        let new: Payload = serde_json::from_str(r#"{"reason": {"code": "deadline_exceeded"}}"#).unwrap();
        assert_eq!(new.reason, TaskReason::DeadlineExceeded);
    }
}
