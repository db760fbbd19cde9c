//! Commands (gateway → orchestrator), reports (node → orchestrator, through the gateway) and node
//! messages (orchestrator → one node). See `events` for what the orchestrator records.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::carbon::MicroWattHours;
use crate::domain::{NodeSpec, OrganizationName, Priority, Replicas, TaskInput, TaskKind};
use crate::ids::{CoproprieteId, NodeId, OrganizationId, OwnerId, TaskId};

/// A SHA-256 digest as 64 lowercase hex digits: how keys and tokens travel (never in clear).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() == 64 && text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(text.to_owned()))
        } else {
            Err("must be 64 lowercase hex digits".to_owned())
        }
    }

    /// The digest of a secret, as stored and published in its place.
    pub fn of_secret(secret: &str) -> Self {
        use sha2::Digest;
        Self(hex::encode(sha2::Sha256::digest(secret.as_bytes())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sha256Hex {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Sha256Hex> for String {
    fn from(value: Sha256Hex) -> Self {
        value.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateOrganization {
    pub organization_id: OrganizationId,
    pub name: OrganizationName,
    pub api_key_hash: Sha256Hex,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterNode {
    pub node_id: NodeId,
    pub spec: NodeSpec,
    pub token_hash: Sha256Hex,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitTask {
    pub task_id: TaskId,
    pub copropriete_id: CoproprieteId,
    pub priority: Priority,
    pub deadline: DateTime<Utc>,
    pub kind: TaskKind,
    /// Absent in version-1 submissions written before replicas existed: one.
    #[serde(default)]
    pub replicas: Replicas,
    /// The cell it goes to and why (absent in submissions written before cells: the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<crate::cells::CellChoice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelTask {
    pub task_id: TaskId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantConsent {
    pub owner_id: OwnerId,
    pub consent_version: String,
    /// The client address at the moment of consent (GDPR Art. 30); stored, never put in events.
    pub consent_ip: Option<String>,
}

/// A new API key for an organisation; by default the keys it had stop working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotateApiKey {
    pub organization_id: OrganizationId,
    pub api_key_hash: Sha256Hex,
    pub revoke_previous: bool,
}

/// The electricity contract an organisation declares for its nodes' grid energy (a green tariff
/// with guarantees of origin, a supplier's mix): the factor of market-based (Scope 2) reports,
/// reported beside the location-based figure, never netted into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeclareEnergyContract {
    pub organization_id: OrganizationId,
    pub factor_mg_per_kwh: i64,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokeConsent {
    pub owner_id: OwnerId,
}

crate::message_family!(
    /// What the gateway asks the orchestrator to do (`{ns}:commands`).
    Command {
        CreateOrganization(CreateOrganization) = "CMD:CREATE_ORGANIZATION",
        RegisterNode(RegisterNode) = "CMD:REGISTER_NODE",
        SubmitTask(SubmitTask) = "CMD:SUBMIT_TASK",
        CancelTask(CancelTask) = "CMD:CANCEL_TASK",
        GrantConsent(GrantConsent) = "CMD:GRANT_CONSENT",
        RevokeConsent(RevokeConsent) = "CMD:REVOKE_CONSENT",
        RotateApiKey(RotateApiKey) = "CMD:ROTATE_API_KEY",
        DeclareEnergyContract(DeclareEnergyContract) = "CMD:DECLARE_ENERGY_CONTRACT",
    }
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStartedReport {
    pub node_id: NodeId,
    pub task_id: TaskId,
    pub attempt: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCompletedReport {
    pub node_id: NodeId,
    pub task_id: TaskId,
    pub attempt: i32,
    pub result_json: Option<serde_json::Value>,
    pub result_hash: String,
    pub energy_used: MicroWattHours,
    pub solar_contribution: MicroWattHours,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailedReport {
    pub node_id: NodeId,
    pub task_id: TaskId,
    pub attempt: i32,
    pub error: String,
}

crate::message_family!(
    /// What nodes say about their tasks (`{ns}:reports`).
    Report {
        TaskStarted(TaskStartedReport) = "RPT:TASK_STARTED",
        TaskCompleted(TaskCompletedReport) = "RPT:TASK_COMPLETED",
        TaskFailed(TaskFailedReport) = "RPT:TASK_FAILED",
    }
);

impl Report {
    /// The task the report is about.
    pub fn task_id(&self) -> TaskId {
        match self {
            Self::TaskStarted(report) => report.task_id,
            Self::TaskCompleted(report) => report.task_id,
            Self::TaskFailed(report) => report.task_id,
        }
    }

    /// The node that sends it.
    pub fn node_id(&self) -> NodeId {
        match self {
            Self::TaskStarted(report) => report.node_id,
            Self::TaskCompleted(report) => report.node_id,
            Self::TaskFailed(report) => report.node_id,
        }
    }
}

/// `TASK:ASSIGNED` as a node receives it (the SSE `data:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAssignment {
    pub task_id: TaskId,
    pub attempt: i32,
    pub deadline: DateTime<Utc>,
    pub kind: TaskInput,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCancellation {
    pub task_id: TaskId,
    pub attempt: i32,
    pub reason: String,
}

crate::message_family!(
    /// What the orchestrator tells one node (`{ns}:node:<id>:tasks`).
    NodeMessage {
        TaskAssigned(TaskAssignment) = "TASK:ASSIGNED",
        TaskCancelled(TaskCancellation) = "TASK:CANCELLED",
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Participant;
    use crate::envelope::{Actor, DecodeError, Envelope, Message, Origin};
    use crate::ids::BuildingId;

    fn origin() -> Origin {
        Origin {
            correlation_id: uuid::Uuid::new_v4(),
            causation_id: None,
            organization_id: Some(OrganizationId::new()),
            actor: Actor::Organization(OrganizationId::new()),
        }
    }

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(message: M) {
        let envelope = Envelope::wrap(&message, origin());
        let text = envelope.to_json();
        let back = Envelope::from_json(&text).unwrap();
        assert_eq!(back, envelope);
        assert_eq!(back.decode::<M>().unwrap(), message);
        // Decoded from the payload's text, without a `Value` of it: the same header and message.
        let (header, decoded) = Envelope::decode_text::<M>(&text).unwrap();
        assert_eq!(header, Envelope { payload: serde_json::Value::Null, ..envelope.clone() });
        assert_eq!(decoded, message);
        let (_, payload) = Envelope::split(&text).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(payload.get()).unwrap(), envelope.payload);
    }

    fn every_command() -> Vec<Command> {
        let hash = Sha256Hex::of_secret("secret");
        vec![
            Command::CreateOrganization(CreateOrganization {
                organization_id: OrganizationId::new(),
                name: OrganizationName::parse("Copro Sud").unwrap(),
                api_key_hash: hash.clone(),
            }),
            Command::RegisterNode(RegisterNode {
                node_id: NodeId::new(),
                spec: NodeSpec::parse("pi", 4, true, "Liège").unwrap(),
                token_hash: hash,
            }),
            Command::SubmitTask(SubmitTask {
                task_id: TaskId::new(),
                copropriete_id: CoproprieteId::new(),
                priority: Priority::parse(7).unwrap(),
                deadline: Utc::now(),
                kind: TaskKind::EnergyGroupOptimisation {
                    building_id: BuildingId::new(),
                    simulation_months: 12,
                    participants: vec![Participant { owner_id: OwnerId::new(), readings_kwh: vec![1.5, 2.0] }],
                },
                replicas: Replicas::parse(2).unwrap(),
                cell: None,
            }),
            Command::CancelTask(CancelTask { task_id: TaskId::new() }),
            Command::GrantConsent(GrantConsent {
                owner_id: OwnerId::new(),
                consent_version: "v1".into(),
                consent_ip: Some("192.0.2.1".into()),
            }),
            Command::RevokeConsent(RevokeConsent { owner_id: OwnerId::new() }),
            Command::RotateApiKey(RotateApiKey {
                organization_id: OrganizationId::new(),
                api_key_hash: Sha256Hex::of_secret("gk_new"),
                revoke_previous: true,
            }),
            Command::DeclareEnergyContract(DeclareEnergyContract {
                organization_id: OrganizationId::new(),
                factor_mg_per_kwh: 12_000,
                label: "green tariff".into(),
            }),
        ]
    }

    #[test]
    fn every_command_round_trips_through_its_envelope() {
        let commands = every_command();
        assert_eq!(commands.len(), Command::TYPES.len());
        for command in commands {
            round_trip(command);
        }
    }

    #[test]
    fn every_report_and_node_message_round_trips() {
        let (node_id, task_id) = (NodeId::new(), TaskId::new());
        round_trip(Report::TaskStarted(TaskStartedReport { node_id, task_id, attempt: 1 }));
        round_trip(Report::TaskCompleted(TaskCompletedReport {
            node_id,
            task_id,
            attempt: 2,
            result_json: Some(serde_json::json!({"kwh": 3})),
            result_hash: "ab".repeat(32),
            energy_used: MicroWattHours(10),
            solar_contribution: MicroWattHours(5),
        }));
        round_trip(Report::TaskFailed(TaskFailedReport { node_id, task_id, attempt: 1, error: "oom".into() }));
        round_trip(NodeMessage::TaskAssigned(TaskAssignment {
            task_id,
            attempt: 1,
            deadline: Utc::now(),
            kind: TaskInput::BuildingThermalSimulation {
                building_id: BuildingId::new(),
                insulation_score: 0.4,
                surface_m2: 90.0,
                heating_degree_days: 2400.0,
            },
        }));
        round_trip(NodeMessage::TaskCancelled(TaskCancellation { task_id, attempt: 1, reason: "revoked".into() }));
    }

    #[test]
    fn unknown_types_versions_and_payloads_are_decode_errors() {
        let mut envelope = Envelope::wrap(&Command::CancelTask(CancelTask { task_id: TaskId::new() }), origin());
        envelope.version = 9;
        assert!(matches!(envelope.decode::<Command>(), Err(DecodeError::UnsupportedVersion { version: 9, .. })));
        envelope.version = 1;
        envelope.message_type = "CMD:LAUNCH_ROCKET".into();
        assert_eq!(envelope.decode::<Command>(), Err(DecodeError::UnknownType("CMD:LAUNCH_ROCKET".into())));
        envelope.message_type = "CMD:CANCEL_TASK".into();
        envelope.payload = serde_json::json!({"task_id": "not-a-uuid"});
        assert!(matches!(envelope.decode::<Command>(), Err(DecodeError::Payload { .. })));
        assert!(matches!(Envelope::from_json("{"), Err(DecodeError::Envelope(_))));
        // The same refusals, decoded from the text.
        let text = envelope.to_json();
        assert!(matches!(Envelope::decode_text::<Command>(&text), Err(DecodeError::Payload { .. })));
        let unknown = text.replace("CMD:CANCEL_TASK", "CMD:LAUNCH_ROCKET");
        assert_eq!(
            Envelope::decode_text::<Command>(&unknown).unwrap_err(),
            DecodeError::UnknownType("CMD:LAUNCH_ROCKET".into())
        );
        let later = text.replace("\"version\":1", "\"version\":9");
        assert!(matches!(
            Envelope::decode_text::<Command>(&later),
            Err(DecodeError::UnsupportedVersion { version: 9, .. })
        ));
        assert!(matches!(Envelope::decode_text::<Command>("{"), Err(DecodeError::Envelope(_))));
        let without_payload = text.replace("\"payload\"", "\"elsewhere\"");
        assert!(matches!(Envelope::decode_text::<Command>(&without_payload), Err(DecodeError::Envelope(_))));
    }

    #[test]
    fn a_submitted_kind_is_revalidated_when_read() {
        let mut envelope = Envelope::wrap(&every_command().remove(2), origin());
        envelope.payload["kind"]["simulation_months"] = serde_json::json!(500);
        let error = envelope.decode::<Command>().unwrap_err().to_string();
        assert!(error.contains("kind.simulation_months"), "{error}");
        let error = Envelope::decode_text::<Command>(&envelope.to_json()).unwrap_err().to_string();
        assert!(error.contains("kind.simulation_months"), "{error}");
    }

    #[test]
    fn hashes_of_secrets_are_lowercase_hex() {
        let hash = Sha256Hex::of_secret("abc");
        assert_eq!(hash.as_str(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(Sha256Hex::parse("ABC").is_err());
    }
}
