//! Domain events (`{ns}:events`), recorded by the orchestrator in its outbox. Each records the
//! decision and its inputs, so that a replay needs no live state. None carries a secret or a
//! reading.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::carbon::{CarbonPolicy, CreditSplit, MicroWattHours};
use crate::domain::{Priority, RejectionReason};
use crate::ids::{CoproprieteId, NodeId, OrganizationId, OwnerId, TaskId};

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
    pub reason: String,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCompleted {
    pub task_id: TaskId,
    pub node_id: NodeId,
    pub attempt: i32,
    pub result_hash: String,
    pub energy_used: MicroWattHours,
    pub solar_contribution: MicroWattHours,
    pub check: EnergyCheck,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailed {
    pub task_id: TaskId,
    pub node_id: Option<NodeId>,
    pub attempt: i32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCancelled {
    pub task_id: TaskId,
    pub node_id: Option<NodeId>,
    pub attempt: i32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditsDistributed {
    pub task_id: TaskId,
    pub node_id: NodeId,
    pub solar_contribution: MicroWattHours,
    pub policy: CarbonPolicy,
    pub split: CreditSplit,
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
        TaskFailed(TaskFailed) = "TaskFailed",
        TaskCancelled(TaskCancelled) = "TaskCancelled",
        CreditsDistributed(CreditsDistributed) = "CreditsDistributed",
        GreenProofAppended(GreenProofAppended) = "GreenProofAppended",
        ConsentGranted(ConsentGranted) = "ConsentGranted",
        ConsentRevoked(ConsentRevoked) = "ConsentRevoked",
        ParticipantDataPurged(ParticipantDataPurged) = "ParticipantDataPurged",
        ApiKeyRotated(ApiKeyRotated) = "ApiKeyRotated",
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Actor, Envelope, Origin};

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
            }),
            Event::NodeWentOffline(NodeWentOffline { node_id, requeued_tasks: vec![task_id] }),
            Event::TaskAccepted(TaskAccepted {
                task_id,
                copropriete_id: CoproprieteId::new(),
                kind: "building_thermal_simulation".into(),
                priority: Priority::DEFAULT,
                deadline: Utc::now(),
                participant_count: 0,
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
                reason: "node offline".into(),
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
            }),
            Event::TaskFailed(TaskFailed { task_id, node_id: None, attempt: 0, reason: "deadline_exceeded".into() }),
            Event::TaskCancelled(TaskCancelled {
                task_id,
                node_id: Some(node_id),
                attempt: 1,
                reason: "by request".into(),
            }),
            Event::CreditsDistributed(CreditsDistributed {
                task_id,
                node_id,
                solar_contribution: MicroWattHours(60),
                policy: CarbonPolicy::default(),
                split: CarbonPolicy::default().credit(MicroWattHours(60)),
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
        ]
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
        }
    }
}
