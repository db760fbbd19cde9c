//! Domain events (`{ns}:events`), recorded by the orchestrator in its outbox. Each records the
//! decision and its inputs, so that a replay needs no live state. None carries a secret or a
//! reading.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::carbon::{CarbonPolicy, CreditSplit, MicroWattHours};
use crate::domain::{Priority, RejectionReason};
use crate::ids::{CoproprieteId, NodeId, OrganizationId, OwnerId, TaskId};
use crate::reasons::{TaskReason, task_reason_or_text};
use crate::signals::{Signal, Zone};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationCreated {
    pub organization_id: OrganizationId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRegistered {
    pub node_id: NodeId,
    pub organization_id: OrganizationId,
    pub name: String,
    pub cpu_cores: u16,
    pub has_solar: bool,
    pub location: String,
    /// Its carbon zone (absent in events written before zones: the grid's default, BE then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<Zone>,
    /// Its declared embodied emissions, g CO₂e (absent: the grid's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embodied_g_co2e: Option<i64>,
    /// Its cell (absent in events written before cells: the grid's default cell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<crate::cells::CellName>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeWentOffline {
    pub node_id: NodeId,
    pub requeued_tasks: Vec<TaskId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAccepted {
    pub task_id: TaskId,
    pub copropriete_id: CoproprieteId,
    pub kind: String,
    pub priority: Priority,
    pub deadline: DateTime<Utc>,
    pub participant_count: usize,
    /// The cell it runs in, why, and what the choice saw (absent before cells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<crate::cells::CellChoice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRejected {
    pub task_id: TaskId,
    pub reason: RejectionReason,
}

/// The live state a placement decision read for one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreInputs {
    pub node_id: NodeId,
    pub solar_watts: f64,
    pub cpu_usage: f64,
    pub running: u32,
    pub cpu_cores: u16,
    pub eco_score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAssigned {
    pub task_id: TaskId,
    pub node_id: NodeId,
    pub attempt: i32,
    pub deadline: DateTime<Utc>,
    pub chosen: ScoreInputs,
    pub runner_up: Option<ScoreInputs>,
    /// The orchestrator replica that decided.
    pub assigned_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStarted {
    pub task_id: TaskId,
    pub node_id: NodeId,
    pub attempt: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRequeued {
    pub task_id: TaskId,
    pub node_id: NodeId,
    /// The attempt that was taken back.
    pub attempt: i32,
    /// Why (prose in events written before reasons had codes).
    #[serde(deserialize_with = "task_reason_or_text")]
    pub reason: TaskReason,
    /// The backoff before the task may be placed again.
    pub retry_after_ms: i64,
}

/// The plausibility bounds a completion report was checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnergyCheck {
    /// What the orchestrator measured between assignment and report.
    pub runtime_ms: i64,
    pub cpu_cores: u16,
    pub max_milliwatts_per_core: i64,
    /// `cpu_cores × max_milliwatts_per_core × runtime_ms / 3600`.
    pub energy_bound: MicroWattHours,
    /// Why the report earns no credit, when it does not.
    pub refusal: Option<String>,
}

/// How a task's result was validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Validation {
    /// One result, accepted without a replica: the node was trusted (`trust ≥ threshold`) and the
    /// spot-check draw missed (`draw_ppm ≥ rate_ppm`), or a check could not be run (`check_skipped`).
    Unchecked { trust: u32, threshold: u32, draw_ppm: u32, rate_ppm: u32, check_skipped: Option<String> },
    /// `quorum` results agreed on `result_hash`; only the agreeing nodes are credited.
    Quorum { quorum: u8, result_hash: String, agreeing: Vec<NodeId>, disagreeing: Vec<NodeId> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCompleted {
    pub task_id: TaskId,
    pub node_id: NodeId,
    pub attempt: i32,
    pub result_hash: String,
    pub energy_used: MicroWattHours,
    pub solar_contribution: MicroWattHours,
    pub check: EnergyCheck,
    /// Absent in events written before result validation existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    /// The task's Software Carbon Intensity (absent in events written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sci: Option<crate::carbon::Sci>,
    /// What the completion credited, each credit with its leaf. Absent when nothing was
    /// credited, and in events written before credits were folded into the completion: a
    /// `CreditsDistributed` event followed each of those ([`TaskCompleted::credits_distributed`]
    /// reads both alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<Credits>,
}

impl TaskCompleted {
    /// Each credit of the completion, in the form a `CreditsDistributed` event gave it.
    pub fn credits_distributed(&self) -> impl Iterator<Item = CreditsDistributed> + '_ {
        self.credits.iter().flat_map(move |credits| {
            credits.nodes.iter().map(move |credit| CreditsDistributed {
                task_id: self.task_id,
                node_id: credit.node_id,
                solar_contribution: credit.solar_contribution,
                policy: credits.policy,
                signal: Some(credit.signal.clone()),
                split: credit.split,
                leaf: Some(credit.leaf.clone()),
            })
        })
    }
}

/// The credits of a completed task: the policy that priced them, and one credit per agreeing
/// result whose energy was not refused (the completing node's; with a quorum, each agreeing
/// node's), in the order their leaves were appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credits {
    pub policy: CarbonPolicy,
    pub nodes: Vec<NodeCredit>,
}

/// One node's credit for a result: its sun, the intensity it was credited at (its zone's and
/// hour's, from the source named), the 70/30 split, and its leaf in the proof chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeCredit {
    pub node_id: NodeId,
    pub solar_contribution: MicroWattHours,
    pub signal: Signal,
    pub split: CreditSplit,
    pub leaf: LeafPosition,
}

/// Why a task needs one more result before it can complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ReplicaNeeded {
    /// The submitter asked for more replicas than there are results.
    Requested { replicas: u8 },
    /// The node's results are checked until its trust reaches the threshold.
    UntrustedNode { trust: u32, threshold: u32 },
    /// A trusted node's result was drawn for a check (`draw_ppm < rate_ppm`).
    SpotCheck { draw_ppm: u32, rate_ppm: u32 },
    /// The results so far do not reach the quorum on any hash.
    Disagreement { distinct_hashes: u32 },
}

/// A result was recorded but the task needs another one: it is queued again, for a node of an
/// owner that has not run it yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResultRecorded {
    pub task_id: TaskId,
    pub node_id: NodeId,
    pub attempt: i32,
    pub result_hash: String,
    pub energy_used: MicroWattHours,
    pub solar_contribution: MicroWattHours,
    pub check: EnergyCheck,
    /// Agreeing results needed, results so far (this one included), and the most it may collect.
    pub quorum: u8,
    pub results: u8,
    pub result_limit: u8,
    pub needed: ReplicaNeeded,
}

/// A node's trust after a quorum decided on one of its results: one more when it agreed, zero
/// when it did not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeTrustChanged {
    pub node_id: NodeId,
    pub task_id: TaskId,
    pub agreed: bool,
    pub trust: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailed {
    pub task_id: TaskId,
    pub node_id: Option<NodeId>,
    pub attempt: i32,
    #[serde(deserialize_with = "task_reason_or_text")]
    pub reason: TaskReason,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCancelled {
    pub task_id: TaskId,
    pub node_id: Option<NodeId>,
    pub attempt: i32,
    #[serde(deserialize_with = "task_reason_or_text")]
    pub reason: TaskReason,
}

/// A writer taking over found the task's stored row contradicting itself: the task leaves
/// scheduling (status `quarantined`) instead of stopping the writer. `problem` says what was
/// wrong; `status` is the status the row claimed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskQuarantined {
    pub task_id: TaskId,
    pub status: String,
    pub problem: String,
}

/// A credit, as an event of its own: what writers recorded before credits were folded into
/// `TaskCompleted` (`credits`). The archive keeps these; writers no longer emit them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditsDistributed {
    pub task_id: TaskId,
    pub node_id: NodeId,
    pub solar_contribution: MicroWattHours,
    pub policy: CarbonPolicy,
    /// The intensity the credit used (its zone's and hour's, from the source named); absent
    /// in events written before signals, whose credits used `policy`'s fixed intensity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    pub split: CreditSplit,
    /// The credit's leaf in the proof chain (absent for credits chained as `kgp1` links, which
    /// had a `GreenProofAppended` each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<LeafPosition>,
}

impl CreditsDistributed {
    /// The credit its inputs give: the solar energy at the recorded signal's intensity (or, for
    /// a credit from before signals, the policy's fixed one), priced by the policy. Replay
    /// compares it with `split`.
    pub fn recomputed(&self) -> CreditSplit {
        let intensity =
            self.signal.as_ref().map_or(self.policy.grid_intensity_mg_per_kwh, |signal| signal.intensity_mg_per_kwh);
        self.policy.credit_at(self.solar_contribution, intensity)
    }
}

/// Where a credit's leaf sits, and what else its leaf line holds: with the event's other
/// fields, the whole `kgp2-leaf` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafPosition {
    pub block_height: i64,
    pub leaf_index: i64,
    pub attempt: i32,
    pub energy_used: MicroWattHours,
    pub credited_at: DateTime<Utc>,
    pub leaf_hash: String,
}

/// A block of the proof chain was sealed: its line's fields and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSealed {
    pub height: i64,
    pub prev_hash: String,
    pub merkle_root: String,
    pub leaf_count: i64,
    pub sealed_at: DateTime<Utc>,
    pub difficulty: u8,
    pub nonce: i64,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GreenProofAppended {
    pub seq: i64,
    pub task_id: TaskId,
    pub prev_hash: String,
    pub hash: String,
}

/// An organisation's API key was rotated (the keys themselves are never in events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRotated {
    pub organization_id: OrganizationId,
    pub previous_keys_revoked: u64,
}

/// An organisation declared the electricity contract of its nodes (market-based reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyContractDeclared {
    pub organization_id: OrganizationId,
    pub factor_mg_per_kwh: i64,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentGranted {
    pub owner_id: OwnerId,
    pub consent_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentRevoked {
    pub owner_id: OwnerId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantDataPurged {
    pub owner_id: OwnerId,
    pub task_ids: Vec<TaskId>,
}

crate::message_family!(
    /// Everything that happened, in commit order (`{ns}:events`).
    Event {
        OrganizationCreated(OrganizationCreated) = "OrganizationCreated",
        NodeRegistered(NodeRegistered) = "NodeRegistered",
        NodeWentOffline(NodeWentOffline) = "NodeWentOffline",
        TaskAccepted(TaskAccepted) = "TaskAccepted",
        TaskRejected(TaskRejected) = "TaskRejected",
        TaskAssigned(TaskAssigned) = "TaskAssigned",
        TaskStarted(TaskStarted) = "TaskStarted",
        TaskRequeued(TaskRequeued) = "TaskRequeued",
        TaskCompleted(TaskCompleted) = "TaskCompleted",
        TaskResultRecorded(TaskResultRecorded) = "TaskResultRecorded",
        NodeTrustChanged(NodeTrustChanged) = "NodeTrustChanged",
        TaskFailed(TaskFailed) = "TaskFailed",
        TaskCancelled(TaskCancelled) = "TaskCancelled",
        TaskQuarantined(TaskQuarantined) = "TaskQuarantined",
        CreditsDistributed(CreditsDistributed) = "CreditsDistributed",
        GreenProofAppended(GreenProofAppended) = "GreenProofAppended",
        BlockSealed(BlockSealed) = "BlockSealed",
        ConsentGranted(ConsentGranted) = "ConsentGranted",
        ConsentRevoked(ConsentRevoked) = "ConsentRevoked",
        ParticipantDataPurged(ParticipantDataPurged) = "ParticipantDataPurged",
        ApiKeyRotated(ApiKeyRotated) = "ApiKeyRotated",
        EnergyContractDeclared(EnergyContractDeclared) = "EnergyContractDeclared",
    }
);

impl Event {
    /// The one task this event is about, if any: the archive files the event under it (the
    /// `task_id` column), so that a task's history reads without scanning the archive.
    pub fn task_id(&self) -> Option<TaskId> {
        match self {
            Self::TaskAccepted(event) => Some(event.task_id),
            Self::TaskRejected(event) => Some(event.task_id),
            Self::TaskAssigned(event) => Some(event.task_id),
            Self::TaskStarted(event) => Some(event.task_id),
            Self::TaskRequeued(event) => Some(event.task_id),
            Self::TaskCompleted(event) => Some(event.task_id),
            Self::TaskResultRecorded(event) => Some(event.task_id),
            Self::NodeTrustChanged(event) => Some(event.task_id),
            Self::TaskFailed(event) => Some(event.task_id),
            Self::TaskCancelled(event) => Some(event.task_id),
            Self::TaskQuarantined(event) => Some(event.task_id),
            Self::CreditsDistributed(event) => Some(event.task_id),
            Self::GreenProofAppended(event) => Some(event.task_id),
            Self::OrganizationCreated(_)
            | Self::NodeRegistered(_)
            | Self::NodeWentOffline(_)
            | Self::BlockSealed(_)
            | Self::ConsentGranted(_)
            | Self::ConsentRevoked(_)
            | Self::ParticipantDataPurged(_)
            | Self::ApiKeyRotated(_)
            | Self::EnergyContractDeclared(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Actor, DecodeError, Envelope, Message, Origin};
    use crate::ids::MessageId;

    fn inputs() -> ScoreInputs {
        ScoreInputs {
            node_id: NodeId::new(),
            solar_watts: 420.0,
            cpu_usage: 12.5,
            running: 1,
            cpu_cores: 4,
            eco_score: 0.8,
        }
    }

    fn node_credit(node_id: NodeId) -> NodeCredit {
        NodeCredit {
            node_id,
            solar_contribution: MicroWattHours(60),
            signal: crate::signals::SignalBook::fixed(150_000).lookup(&Zone::parse("FR").unwrap(), Utc::now()),
            split: CarbonPolicy::default().credit_at(MicroWattHours(60), 150_000),
            leaf: LeafPosition {
                block_height: 3,
                leaf_index: 17,
                attempt: 1,
                energy_used: MicroWattHours(100),
                credited_at: Utc::now(),
                leaf_hash: "2".repeat(64),
            },
        }
    }

    /// The credit as its own event, as writers recorded it before the fold.
    fn credit_event(task_id: TaskId, credit: NodeCredit) -> CreditsDistributed {
        CreditsDistributed {
            task_id,
            node_id: credit.node_id,
            solar_contribution: credit.solar_contribution,
            policy: CarbonPolicy::default(),
            signal: Some(credit.signal),
            split: credit.split,
            leaf: Some(credit.leaf),
        }
    }

    fn every_event() -> Vec<Event> {
        let (task_id, node_id, owner_id) = (TaskId::new(), NodeId::new(), OwnerId::new());
        vec![
            Event::OrganizationCreated(OrganizationCreated {
                organization_id: OrganizationId::new(),
                name: "A".into(),
            }),
            Event::NodeRegistered(NodeRegistered {
                node_id,
                organization_id: OrganizationId::new(),
                name: "pi".into(),
                cpu_cores: 4,
                has_solar: true,
                location: "Namur".into(),
                zone: Some(Zone::parse("BE").unwrap()),
                embodied_g_co2e: Some(8_000),
                cell: None,
            }),
            Event::NodeWentOffline(NodeWentOffline { node_id, requeued_tasks: vec![task_id] }),
            Event::TaskAccepted(TaskAccepted {
                task_id,
                copropriete_id: CoproprieteId::new(),
                kind: "building_thermal_simulation".into(),
                priority: Priority::DEFAULT,
                deadline: Utc::now(),
                participant_count: 0,
                cell: None,
            }),
            Event::TaskRejected(TaskRejected {
                task_id,
                reason: RejectionReason::KAnonymityViolated { min: 5, got: 2 },
            }),
            Event::TaskAssigned(TaskAssigned {
                task_id,
                node_id,
                attempt: 1,
                deadline: Utc::now(),
                chosen: inputs(),
                runner_up: Some(inputs()),
                assigned_by: "orchestrator-1".into(),
            }),
            Event::TaskStarted(TaskStarted { task_id, node_id, attempt: 1 }),
            Event::TaskRequeued(TaskRequeued {
                task_id,
                node_id,
                attempt: 1,
                reason: TaskReason::taken_back(crate::reasons::TakeBack::NodeOffline),
                retry_after_ms: 500,
            }),
            Event::TaskCompleted(TaskCompleted {
                task_id,
                node_id,
                attempt: 1,
                result_hash: "00".repeat(32),
                energy_used: MicroWattHours(100),
                solar_contribution: MicroWattHours(60),
                check: EnergyCheck {
                    runtime_ms: 40,
                    cpu_cores: 4,
                    max_milliwatts_per_core: 2_000,
                    energy_bound: MicroWattHours(88),
                    refusal: None,
                },
                validation: Some(Validation::Quorum {
                    quorum: 2,
                    result_hash: "00".repeat(32),
                    agreeing: vec![node_id, NodeId::new()],
                    disagreeing: vec![NodeId::new()],
                }),
                sci: Some(crate::carbon::Sci { operational_ng: 7, embodied_ng: 2 }),
                credits: Some(Credits { policy: CarbonPolicy::default(), nodes: vec![node_credit(node_id)] }),
            }),
            Event::TaskResultRecorded(TaskResultRecorded {
                task_id,
                node_id,
                attempt: 1,
                result_hash: "11".repeat(32),
                energy_used: MicroWattHours(100),
                solar_contribution: MicroWattHours(60),
                check: EnergyCheck {
                    runtime_ms: 40,
                    cpu_cores: 4,
                    max_milliwatts_per_core: 2_000,
                    energy_bound: MicroWattHours(88),
                    refusal: Some("energy 100 µWh exceeds what 4 cores can draw in 40 ms (88 µWh)".into()),
                },
                quorum: 2,
                results: 1,
                result_limit: 4,
                needed: ReplicaNeeded::SpotCheck { draw_ppm: 120, rate_ppm: 50_000 },
            }),
            Event::NodeTrustChanged(NodeTrustChanged { node_id, task_id, agreed: false, trust: 0 }),
            Event::TaskFailed(TaskFailed { task_id, node_id: None, attempt: 0, reason: TaskReason::DeadlineExceeded }),
            Event::TaskCancelled(TaskCancelled {
                task_id,
                node_id: Some(node_id),
                attempt: 1,
                reason: TaskReason::CancelledByRequest,
            }),
            Event::TaskQuarantined(TaskQuarantined {
                task_id,
                status: "assigned".into(),
                problem: "an assigned task with no attempt".into(),
            }),
            Event::CreditsDistributed(credit_event(task_id, node_credit(node_id))),
            Event::BlockSealed(BlockSealed {
                height: 3,
                prev_hash: "1".repeat(64),
                merkle_root: "3".repeat(64),
                leaf_count: 18,
                sealed_at: Utc::now(),
                difficulty: 8,
                nonce: 99,
                hash: "00".repeat(32),
            }),
            Event::GreenProofAppended(GreenProofAppended {
                seq: 1,
                task_id,
                prev_hash: "0".repeat(64),
                hash: "1".repeat(64),
            }),
            Event::ConsentGranted(ConsentGranted { owner_id, consent_version: "2026-01".into() }),
            Event::ConsentRevoked(ConsentRevoked { owner_id }),
            Event::ParticipantDataPurged(ParticipantDataPurged { owner_id, task_ids: vec![task_id] }),
            Event::ApiKeyRotated(ApiKeyRotated { organization_id: OrganizationId::new(), previous_keys_revoked: 1 }),
            Event::EnergyContractDeclared(EnergyContractDeclared {
                organization_id: OrganizationId::new(),
                factor_mg_per_kwh: 0,
                label: "100 % wind, GoO-backed".into(),
            }),
        ]
    }

    #[test]
    fn a_completion_written_before_validation_still_reads() {
        let text = r#"{"task_id":"6f9619ff-8b86-d011-b42d-00cf4fc964ff","node_id":"6f9619ff-8b86-d011-b42d-00cf4fc964fe",
            "attempt":1,"result_hash":"ab","energy_used":1,"solar_contribution":0,"check":{"runtime_ms":1,
            "cpu_cores":1,"max_milliwatts_per_core":2000,"energy_bound":1,"refusal":null}}"#;
        let completed: TaskCompleted = serde_json::from_str(text).unwrap();
        assert_eq!(completed.validation, None);
    }

    #[test]
    fn a_completion_reads_its_credits_as_the_events_that_once_followed_it() {
        let (task_id, node_id, peer) = (TaskId::new(), NodeId::new(), NodeId::new());
        let mut second = node_credit(peer);
        second.leaf.leaf_index += 1;
        let nodes = vec![node_credit(node_id), second];
        let Some(Event::TaskCompleted(mut completed)) =
            every_event().into_iter().find(|event| matches!(event, Event::TaskCompleted(_)))
        else {
            unreachable!()
        };
        completed.task_id = task_id;
        completed.credits = Some(Credits { policy: CarbonPolicy::default(), nodes: nodes.clone() });
        let expected: Vec<_> = nodes.into_iter().map(|credit| credit_event(task_id, credit)).collect();
        assert_eq!(completed.credits_distributed().collect::<Vec<_>>(), expected);
        // Each reads the credit its recorded inputs give, as replay recomputes it.
        assert!(expected.iter().all(|credit| credit.recomputed() == credit.split));
        completed.credits = None;
        assert_eq!(completed.credits_distributed().count(), 0, "nothing credited");
    }

    #[test]
    fn a_reason_written_as_prose_before_the_codes_still_reads() {
        let text = r#"{"task_id":"6f9619ff-8b86-d011-b42d-00cf4fc964ff","node_id":"6f9619ff-8b86-d011-b42d-00cf4fc964fe",
            "attempt":2,"reason":"start_lease_expired","retry_after_ms":500}"#;
        let requeued: TaskRequeued = serde_json::from_str(text).unwrap();
        assert_eq!(requeued.reason, TaskReason::taken_back(crate::reasons::TakeBack::StartLeaseExpired));
    }

    #[test]
    fn every_event_round_trips_through_its_envelope() {
        let events = every_event();
        assert_eq!(events.len(), Event::TYPES.len());
        for event in events {
            let origin = Origin {
                correlation_id: uuid::Uuid::new_v4(),
                causation_id: None,
                organization_id: None,
                actor: Actor::Orchestrator,
            };
            let envelope = Envelope::wrap(&event, origin);
            let back = Envelope::from_json(&envelope.to_json()).unwrap();
            assert_eq!(back.decode::<Event>().unwrap(), event);
            // The writer's text, written from the event, is the same envelope.
            let header = Envelope::header_at(envelope.id, envelope.occurred_at, &event, origin);
            assert_eq!(Envelope::from_json(&header.text_with(&event)).unwrap(), envelope);
        }
    }

    #[test]
    fn an_archived_envelope_leaves_out_its_rows_fields_and_is_whole_again_from_its_row() {
        let organization_id = Some(OrganizationId::new());
        let origin = Origin {
            correlation_id: uuid::Uuid::new_v4(),
            causation_id: Some(uuid::Uuid::new_v4()),
            organization_id,
            actor: Actor::Orchestrator,
        };
        // The writer's clock is in whole microseconds, the precision of the row's column.
        let at = DateTime::parse_from_rfc3339("2026-12-05T10:11:12.345678Z").unwrap().to_utc();
        for event in every_event() {
            let id = MessageId::new();
            let header = Envelope::header_at(id, at, &event, origin);
            let (archived, published) = header.archived_and_published(&event);
            let whole = Envelope::wrap_at(id, at, &event, origin);
            assert_eq!(Envelope::from_json(&published).unwrap(), whole, "{published}");
            let kept: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&archived).unwrap();
            let keys: Vec<&str> = kept.keys().map(String::as_str).collect();
            assert_eq!(keys, ["actor", "causation_id", "correlation_id", "payload", "version"], "{archived}");
            let event_type = Message::message_type(&event);
            let again = Envelope::from_archive(id, event_type, at, organization_id, &archived).unwrap();
            assert_eq!(again, published, "the row gives back the text that was published");
            // An envelope archived whole, before: as it is.
            assert_eq!(Envelope::from_archive(id, event_type, at, organization_id, &published).unwrap(), published);
        }
        let unreadable = Envelope::from_archive(MessageId::new(), "TaskAssigned", at, None, r#"{"payload": {}}"#);
        assert!(matches!(unreadable, Err(DecodeError::Envelope(_))), "{unreadable:?}");
    }

    #[test]
    fn every_event_with_a_task_id_is_filed_under_it() {
        for event in every_event() {
            let payload = Envelope::wrap(
                &event,
                Origin {
                    correlation_id: uuid::Uuid::new_v4(),
                    causation_id: None,
                    organization_id: None,
                    actor: Actor::Orchestrator,
                },
            )
            .payload;
            let named = payload["task_id"].as_str().map(|id| id.parse::<uuid::Uuid>().unwrap());
            assert_eq!(event.task_id().map(|id| id.as_uuid()), named, "{payload}");
        }
    }
}
