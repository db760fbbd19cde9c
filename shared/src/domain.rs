//! Domain values. Each has one validating constructor (`parse` or `TryFrom`), so an invalid value
//! cannot exist past the edge that received it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{BuildingId, OwnerId};

/// Why a value from outside was refused: the field (a JSON path) and the reason, both meant for
/// the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

fn bounded_text(field: &str, raw: &str, max_chars: usize) -> Result<String, FieldError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if trimmed.chars().count() > max_chars {
        return Err(FieldError::new(field, format!("must be at most {max_chars} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

fn finite_in(field: &str, value: f64, min: f64, max: f64) -> Result<f64, FieldError> {
    if !value.is_finite() || value < min || value > max {
        return Err(FieldError::new(field, format!("must be a number between {min} and {max}")));
    }
    Ok(value)
}

/// An organisation's display name: 1..=200 characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrganizationName(String);

impl OrganizationName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        bounded_text("name", raw, 200).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OrganizationName {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<OrganizationName> for String {
    fn from(value: OrganizationName) -> Self {
        value.0
    }
}

/// What a node declares when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    name: String,
    cpu_cores: u16,
    has_solar: bool,
    location: String,
    /// Its carbon zone; absent in registrations written before zones (the grid's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zone: Option<crate::signals::Zone>,
    /// What making it emitted, in g CO₂e (its share goes into each task's SCI); absent: the
    /// grid's default for a Raspberry Pi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    embodied_g_co2e: Option<i64>,
    /// The cell it belongs to (DESIGN §11); absent in registrations written before cells (the
    /// grid's default cell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cell: Option<crate::cells::CellName>,
}

impl NodeSpec {
    pub const MAX_CORES: u16 = 256;

    pub fn parse(name: &str, cpu_cores: i64, has_solar: bool, location: &str) -> Result<Self, FieldError> {
        let name = bounded_text("name", name, 100)?;
        if !(1..=i64::from(Self::MAX_CORES)).contains(&cpu_cores) {
            return Err(FieldError::new("cpu_cores", format!("must be between 1 and {}", Self::MAX_CORES)));
        }
        let location = bounded_text("location", location, 100)?;
        Ok(Self {
            name,
            cpu_cores: cpu_cores as u16,
            has_solar,
            location,
            zone: None,
            embodied_g_co2e: None,
            cell: None,
        })
    }

    /// The most a node's embodied emissions may be declared at: 10 t CO₂e.
    pub const MAX_EMBODIED_G: i64 = 10_000_000;

    /// The same node, whose making emitted `grams` g CO₂e (1 g to 10 t).
    pub fn with_embodied(self, grams: i64) -> Result<Self, FieldError> {
        if !(1..=Self::MAX_EMBODIED_G).contains(&grams) {
            return Err(FieldError::new("embodied_g_co2e", format!("must be between 1 and {}", Self::MAX_EMBODIED_G)));
        }
        Ok(Self { embodied_g_co2e: Some(grams), ..self })
    }

    pub fn embodied_g_co2e(&self) -> Option<i64> {
        self.embodied_g_co2e
    }

    /// The same node in the carbon zone `zone`.
    pub fn in_zone(self, zone: crate::signals::Zone) -> Self {
        Self { zone: Some(zone), ..self }
    }

    pub fn zone(&self) -> Option<&crate::signals::Zone> {
        self.zone.as_ref()
    }

    /// The same node in the cell `cell`.
    pub fn in_cell(self, cell: crate::cells::CellName) -> Self {
        Self { cell: Some(cell), ..self }
    }

    pub fn cell(&self) -> Option<&crate::cells::CellName> {
        self.cell.as_ref()
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn cpu_cores(&self) -> u16 {
        self.cpu_cores
    }
    pub fn has_solar(&self) -> bool {
        self.has_solar
    }
    pub fn location(&self) -> &str {
        &self.location
    }
}

/// Task priority, 0 (lowest) ..= 10 (highest); 5 when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Priority(u8);

impl Priority {
    pub const DEFAULT: Priority = Priority(5);
    pub const MAX: u8 = 10;

    pub fn parse(raw: i64) -> Result<Self, FieldError> {
        if !(0..=i64::from(Self::MAX)).contains(&raw) {
            return Err(FieldError::new("priority", "must be an integer between 0 and 10"));
        }
        Ok(Self(raw as u8))
    }
    pub fn value(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<i64> for Priority {
    type Error = FieldError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Priority> for i64 {
    fn from(value: Priority) -> Self {
        i64::from(value.0)
    }
}

/// How many results a task asks for, 1 ..= 3, each from a node of a different owner; 1 when not
/// given. A task is completed when [`Replicas::quorum`] of them agree on the result hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Replicas(u8);

impl Replicas {
    pub const ONE: Replicas = Replicas(1);
    pub const MAX: u8 = 3;

    pub fn parse(raw: i64) -> Result<Self, FieldError> {
        if !(1..=i64::from(Self::MAX)).contains(&raw) {
            return Err(FieldError::new("replicas", "must be an integer between 1 and 3"));
        }
        Ok(Self(raw as u8))
    }

    pub fn value(self) -> u8 {
        self.0
    }

    /// A strict majority of the replicas: 1 of 1, 2 of 2, 2 of 3.
    pub fn quorum(self) -> u8 {
        self.0 / 2 + 1
    }
}

impl Default for Replicas {
    fn default() -> Self {
        Self::ONE
    }
}

impl TryFrom<i64> for Replicas {
    type Error = FieldError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Replicas> for i64 {
    fn from(value: Replicas) -> Self {
        i64::from(value.0)
    }
}

/// A task's deadline: in the future when submitted, and at most a year ahead.
pub fn parse_deadline(deadline: DateTime<Utc>, now: DateTime<Utc>) -> Result<DateTime<Utc>, FieldError> {
    if deadline <= now {
        return Err(FieldError::new("deadline", "must be in the future"));
    }
    if deadline > now + chrono::Duration::days(366) {
        return Err(FieldError::new("deadline", "must be at most one year ahead"));
    }
    Ok(deadline)
}

/// Where a task is in its life. `Queued → Assigned → Running → Completed | Failed`, `Cancelled`
/// from any non-final state, `Rejected` at admission. `Assigned → Queued` is the requeue of a
/// task whose node died or whose lease passed. `Quarantined` is where a writer puts a task whose
/// stored row contradicts itself: out of scheduling, for an operator to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Assigned,
    Running,
    Completed,
    Failed,
    Cancelled,
    Rejected,
    Quarantined,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 8] = [
        Self::Queued,
        Self::Assigned,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Rejected,
        Self::Quarantined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Assigned => "assigned",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
            Self::Quarantined => "quarantined",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == raw)
    }

    /// Completed, failed, cancelled or rejected: nothing more happens to the task.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled | Self::Rejected)
    }

    /// Queued, assigned or running: the writer holds it in memory.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Queued | Self::Assigned | Self::Running)
    }

    /// Whether the state machine allows `self → next`.
    pub fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        match (self, next) {
            (Queued, Assigned) => true,
            (Assigned, Running) | (Assigned, Queued) | (Running, Queued) => true,
            // A completion may arrive before its start report: a fast task is still a task.
            (Assigned | Running, Completed | Failed) => true,
            (Queued, Failed) => true,
            (from, Cancelled) => from.is_open(),
            // A writer that finds the row contradicting itself takes it out of scheduling.
            (from, Quarantined) => from.is_open(),
            _ => false,
        }
    }

    /// `Ok(next)` when the transition is legal, else an error naming both ends.
    pub fn transition(self, next: TaskStatus) -> Result<TaskStatus, IllegalTransition> {
        if self.can_become(next) { Ok(next) } else { Err(IllegalTransition { from: self, to: next }) }
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from:?} task cannot become {to:?}")]
pub struct IllegalTransition {
    pub from: TaskStatus,
    pub to: TaskStatus,
}

/// One data owner's contribution to a group optimisation: monthly consumption in kWh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    pub owner_id: OwnerId,
    pub readings_kwh: Vec<f64>,
}

/// A computation, as submitted (with owner ids, so that consent can be enforced and revoked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "TaskKindInput")]
pub enum TaskKind {
    BuildingThermalSimulation {
        building_id: BuildingId,
        insulation_score: f64,
        surface_m2: f64,
        heating_degree_days: f64,
    },
    EnergyGroupOptimisation {
        building_id: BuildingId,
        simulation_months: u32,
        participants: Vec<Participant>,
    },
}

/// The unvalidated shape of [`TaskKind`], as it arrives in JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskKindInput {
    BuildingThermalSimulation {
        building_id: BuildingId,
        insulation_score: f64,
        surface_m2: f64,
        heating_degree_days: f64,
    },
    EnergyGroupOptimisation {
        building_id: BuildingId,
        simulation_months: i64,
        participants: Vec<Participant>,
    },
}

impl TaskKind {
    pub const MAX_PARTICIPANTS: usize = 1_000;
    pub const MAX_READINGS: usize = 120;

    pub fn type_name(&self) -> &'static str {
        match self {
            Self::BuildingThermalSimulation { .. } => "building_thermal_simulation",
            Self::EnergyGroupOptimisation { .. } => "energy_group_optimisation",
        }
    }

    /// The number of distinct data owners whose readings the task uses.
    pub fn distinct_participants(&self) -> usize {
        match self {
            Self::BuildingThermalSimulation { .. } => 0,
            Self::EnergyGroupOptimisation { participants, .. } => {
                let mut owners: Vec<OwnerId> = participants.iter().map(|p| p.owner_id).collect();
                owners.sort();
                owners.dedup();
                owners.len()
            }
        }
    }

    /// What a node receives: the same computation with the owners removed.
    pub fn anonymised(&self) -> TaskInput {
        match self {
            Self::BuildingThermalSimulation { building_id, insulation_score, surface_m2, heating_degree_days } => {
                TaskInput::BuildingThermalSimulation {
                    building_id: *building_id,
                    insulation_score: *insulation_score,
                    surface_m2: *surface_m2,
                    heating_degree_days: *heating_degree_days,
                }
            }
            Self::EnergyGroupOptimisation { building_id, simulation_months, participants } => {
                TaskInput::EnergyGroupOptimisation {
                    building_id: *building_id,
                    simulation_months: *simulation_months,
                    anonymised_readings: participants.iter().map(|p| p.readings_kwh.clone()).collect(),
                }
            }
        }
    }
}

impl TryFrom<TaskKindInput> for TaskKind {
    type Error = FieldError;

    fn try_from(input: TaskKindInput) -> Result<Self, Self::Error> {
        match input {
            TaskKindInput::BuildingThermalSimulation {
                building_id,
                insulation_score,
                surface_m2,
                heating_degree_days,
            } => Ok(Self::BuildingThermalSimulation {
                building_id,
                insulation_score: finite_in("kind.insulation_score", insulation_score, 0.0, 1.0)?,
                surface_m2: positive_up_to("kind.surface_m2", surface_m2, 1_000_000.0)?,
                heating_degree_days: finite_in("kind.heating_degree_days", heating_degree_days, 0.0, 10_000.0)?,
            }),
            TaskKindInput::EnergyGroupOptimisation { building_id, simulation_months, participants } => {
                if !(1..=120).contains(&simulation_months) {
                    return Err(FieldError::new("kind.simulation_months", "must be an integer between 1 and 120"));
                }
                if participants.is_empty() || participants.len() > Self::MAX_PARTICIPANTS {
                    return Err(FieldError::new(
                        "kind.participants",
                        format!("must hold between 1 and {} participants", Self::MAX_PARTICIPANTS),
                    ));
                }
                for (index, participant) in participants.iter().enumerate() {
                    let field = format!("kind.participants[{index}].readings_kwh");
                    if participant.readings_kwh.is_empty() || participant.readings_kwh.len() > Self::MAX_READINGS {
                        return Err(FieldError::new(
                            field,
                            format!("must hold between 1 and {} readings", Self::MAX_READINGS),
                        ));
                    }
                    for reading in &participant.readings_kwh {
                        finite_in(&field, *reading, 0.0, 1_000_000.0)?;
                    }
                }
                Ok(Self::EnergyGroupOptimisation {
                    building_id,
                    simulation_months: simulation_months as u32,
                    participants,
                })
            }
        }
    }
}

fn positive_up_to(field: &str, value: f64, max: f64) -> Result<f64, FieldError> {
    if !value.is_finite() || value <= 0.0 || value > max {
        return Err(FieldError::new(field, format!("must be a number above 0 and at most {max}")));
    }
    Ok(value)
}

/// A computation as a node receives it: no owner ids, only the numbers to compute on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskInput {
    BuildingThermalSimulation {
        building_id: BuildingId,
        insulation_score: f64,
        surface_m2: f64,
        heating_degree_days: f64,
    },
    EnergyGroupOptimisation {
        building_id: BuildingId,
        simulation_months: u32,
        anonymised_readings: Vec<Vec<f64>>,
    },
}

impl TaskInput {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::BuildingThermalSimulation { .. } => "building_thermal_simulation",
            Self::EnergyGroupOptimisation { .. } => "energy_group_optimisation",
        }
    }
}

/// Why a submitted task was not admitted. Serialised with a stable `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum RejectionReason {
    #[error("k-anonymity violated: at least {min} distinct participants are required, got {got}")]
    KAnonymityViolated { min: usize, got: usize },
    #[error("consent not granted for owner {owner_id}")]
    ConsentNotGranted { owner_id: OwnerId },
    #[error("the deadline has already passed")]
    DeadlinePassed,
    #[error("the organisation does not exist")]
    UnknownOrganization,
    #[error("a task with this id already exists")]
    DuplicateTask,
    #[error("{replicas} replicas need nodes of {replicas} different owners; {owners} owners have nodes")]
    NotEnoughNodeOwners { replicas: u8, owners: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_accepts_zero_to_ten_only() {
        assert_eq!(Priority::parse(0).unwrap().value(), 0);
        assert_eq!(Priority::parse(10).unwrap().value(), 10);
        assert_eq!(Priority::parse(11).unwrap_err().field, "priority");
        assert!(Priority::parse(-1).is_err());
        assert_eq!(Priority::default().value(), 5);
    }

    #[test]
    fn replicas_are_one_to_three_with_a_majority_quorum() {
        assert_eq!(Replicas::default().value(), 1);
        assert!(Replicas::parse(0).is_err());
        assert!(Replicas::parse(4).is_err());
        let quorums: Vec<u8> = (1..=3).map(|n| Replicas::parse(n).unwrap().quorum()).collect();
        assert_eq!(quorums, vec![1, 2, 2]);
    }

    #[test]
    fn node_spec_names_the_bad_field() {
        assert!(NodeSpec::parse("pi-1", 4, true, "Brussels").is_ok());
        assert_eq!(NodeSpec::parse("  ", 4, true, "Brussels").unwrap_err().field, "name");
        assert_eq!(NodeSpec::parse("pi", 0, true, "Brussels").unwrap_err().field, "cpu_cores");
        assert_eq!(NodeSpec::parse("pi", 4, true, "").unwrap_err().field, "location");
        assert_eq!(NodeSpec::parse("pi\u{7}", 4, true, "x").unwrap_err().field, "name");
    }

    #[test]
    fn status_machine_allows_the_documented_paths_only() {
        use TaskStatus::*;
        assert!(Queued.can_become(Assigned));
        assert!(Assigned.can_become(Running));
        assert!(Running.can_become(Completed));
        assert!(Assigned.can_become(Completed));
        assert!(Running.can_become(Failed));
        assert!(Assigned.can_become(Queued));
        for from in [Queued, Assigned, Running] {
            assert!(from.can_become(Cancelled));
        }
        for final_status in [Completed, Failed, Cancelled, Rejected, Quarantined] {
            for next in TaskStatus::ALL {
                assert!(!final_status.can_become(next), "{final_status:?} -> {next:?}");
            }
        }
        assert!(!Queued.can_become(Running));
        assert!(!Queued.can_become(Completed));
        assert_eq!(Completed.transition(Running).unwrap_err(), IllegalTransition { from: Completed, to: Running });
    }

    #[test]
    fn status_names_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert_eq!(TaskStatus::parse("done"), None);
    }

    #[test]
    fn thermal_kind_is_validated_on_deserialisation() {
        let ok = serde_json::json!({"type": "building_thermal_simulation", "building_id": uuid::Uuid::nil(),
            "insulation_score": 0.5, "surface_m2": 120.0, "heating_degree_days": 2500.0});
        assert!(serde_json::from_value::<TaskKind>(ok).is_ok());
        let bad = serde_json::json!({"type": "building_thermal_simulation", "building_id": uuid::Uuid::nil(),
            "insulation_score": 1.5, "surface_m2": 120.0, "heating_degree_days": 2500.0});
        let error = serde_json::from_value::<TaskKind>(bad).unwrap_err().to_string();
        assert!(error.contains("kind.insulation_score"), "{error}");
    }

    #[test]
    fn group_kind_checks_months_and_readings() {
        let participant = |n: f64| Participant { owner_id: OwnerId::new(), readings_kwh: vec![n; 12] };
        let input = |months: i64, participants: Vec<Participant>| TaskKindInput::EnergyGroupOptimisation {
            building_id: BuildingId::new(),
            simulation_months: months,
            participants,
        };
        assert!(TaskKind::try_from(input(12, vec![participant(100.0)])).is_ok());
        assert_eq!(TaskKind::try_from(input(0, vec![participant(1.0)])).unwrap_err().field, "kind.simulation_months");
        assert_eq!(TaskKind::try_from(input(12, vec![])).unwrap_err().field, "kind.participants");
        assert_eq!(
            TaskKind::try_from(input(12, vec![participant(1.0), participant(-3.0)])).unwrap_err().field,
            "kind.participants[1].readings_kwh"
        );
    }

    #[test]
    fn anonymised_input_drops_owner_ids_and_counts_distinct_owners() {
        let owner = OwnerId::new();
        let kind = TaskKind::EnergyGroupOptimisation {
            building_id: BuildingId::new(),
            simulation_months: 12,
            participants: vec![
                Participant { owner_id: owner, readings_kwh: vec![1.0] },
                Participant { owner_id: owner, readings_kwh: vec![2.0] },
                Participant { owner_id: OwnerId::new(), readings_kwh: vec![3.0] },
            ],
        };
        assert_eq!(kind.distinct_participants(), 2);
        let text = serde_json::to_string(&kind.anonymised()).unwrap();
        assert!(!text.contains(&owner.to_string()));
        assert!(text.contains("anonymised_readings"));
    }

    #[test]
    fn deadline_must_be_future_and_within_a_year() {
        let now = Utc::now();
        assert!(parse_deadline(now + chrono::Duration::hours(1), now).is_ok());
        assert!(parse_deadline(now, now).is_err());
        assert!(parse_deadline(now + chrono::Duration::days(400), now).is_err());
    }
}
