//! The simulated grid: the real decide path ([`crate::writer::decide`], the model, the
//! scheduler) driven in memory by a model of everything around it: Redis's streams, live
//! hashes and node channels; PostgreSQL ([`super::store`]); a fleet of nodes that heartbeat,
//! work, lie, die and come back; organisations that submit, cancel and change consent; and a
//! clock that moves when the history says so. One [`World::apply`] per operation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use grid_shared::blocks::BlockDraft;
use grid_shared::carbon::MicroWattHours;
use grid_shared::domain::{NodeSpec, OrganizationName, Participant, Priority, Replicas, TaskKind, TaskStatus};
use grid_shared::envelope::{Actor, Envelope, Message};
use grid_shared::events::Event;
use grid_shared::ids::{BuildingId, CoproprieteId, MessageId, NodeId, OrganizationId, OwnerId, TaskId};
use grid_shared::live::HeartbeatEntry;
use grid_shared::messages::{
    CancelTask, Command, CreateOrganization, GrantConsent, RegisterNode, Report, RevokeConsent, Sha256Hex, SubmitTask,
    TaskCompletedReport, TaskFailedReport, TaskStartedReport,
};
use grid_shared::signals::{Basis, SignalBook, Zone, bundled_layer};
use grid_shared::wire::StreamEntryId;

use super::checks;
use super::history::{CrashPoint, Op, Work};
use super::store::Store;
use crate::model::batch::Batch;
use crate::model::context::{Context, Rng};
use crate::model::message::{Decoded, Ready, Source};
use crate::model::restore::Quarantined;
use crate::model::{Rules, State};
use crate::replay::Projection;
use crate::writer::decide::{self, BatchLookups};
use crate::writer::rounds;

const COMMANDS: &str = "commands";
const REPORTS: &str = "reports";
/// How many owners each organisation has data of.
const OWNERS_PER_ORGANIZATION: usize = 10;

/// The settings of the writer around the decide path.
#[derive(Debug, Clone)]
pub struct Settings {
    pub batch_size: usize,
    pub node_ttl_ms: i64,
    /// A placement round runs at least this often.
    pub tick_ms: i64,
    /// A bug planted in the store, to show that the checks find one (tests of the simulator).
    pub planted_bug: Option<PlantedBug>,
}

/// Bugs the simulator's own tests plant, to see them found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// The store forgets when a task started (a column left out of the update).
    StoreForgetsStartedAt,
}

impl Default for Settings {
    fn default() -> Self {
        Self { batch_size: 64, node_ttl_ms: 15_000, tick_ms: 200, planted_bug: None }
    }
}

/// The cell a misrouted node or task names (a cell of the grid the simulated writer does not
/// serve).
fn other_cell() -> grid_shared::cells::CellName {
    grid_shared::cells::CellName::parse("south").unwrap_or_default()
}

/// The cell the simulated writer serves in an away history: not the grid's default (`main`).
fn away_cell() -> grid_shared::cells::CellName {
    grid_shared::cells::CellName::parse("north").unwrap_or_default()
}

/// The rules the simulated writer decides by: the defaults, with small proof blocks (to seal
/// often) and no proof of work (mining is not what is explored).
pub fn rules() -> Rules {
    Rules {
        max_attempts: 3,
        requeue_backoff_ms: 500,
        start_lease_ms: 30_000,
        k_anonymity_min: 5,
        validation: crate::config::Validation { trust_threshold: 2, spot_check_ppm: 50_000, extra_replicas: 2 },
        policy: crate::scheduler::Policy { watts_per_core: 2.0, expected_runtime: Duration::seconds(60) },
        max_milliwatts_per_core: 2_000,
        carbon: grid_shared::carbon::CarbonPolicy::default(),
        zones: SIMULATED_ZONES.iter().map(|zone| zone_of(zone)).collect(),
        default_zone: zone_of("BE"),
        // The forecast rule is explored (it includes the solar-first one): never late.
        deferral: crate::config::Deferral::Carbon { min_saving_percent: 5 },
        sci: crate::config::SciSettings {
            solar_intensity_mg_per_kwh: 41_000,
            default_embodied_g: 10_000,
            lifetime_ms: 5 * grid_shared::carbon::MS_PER_YEAR,
        },
        proof_difficulty: 0,
        block_max_leaves: 8,
        seal_interval: Duration::seconds(1),
        writer_name: "simulated-writer".to_owned(),
        cell: grid_shared::cells::CellName::default(),
        default_cell: grid_shared::cells::CellName::default(),
    }
}

/// The zones simulated nodes register in (the bundled file's); a node may also name none (the
/// default zone) or one the grid does not know (refused).
const SIMULATED_ZONES: [&str; 3] = ["BE", "DE", "FR"];

fn zone_of(name: &str) -> Zone {
    Zone::parse(name).unwrap_or_else(|_| unreachable!("the simulated zones are zone ids"))
}

/// The signals every simulated writer credits with: the bundled year, then the fixed factor.
fn signals() -> Arc<SignalBook> {
    static SIGNALS: std::sync::LazyLock<Arc<SignalBook>> = std::sync::LazyLock::new(|| {
        let fixed = grid_shared::carbon::CarbonPolicy::default().grid_intensity_mg_per_kwh;
        Arc::new(SignalBook::fixed(fixed).then(bundled_layer(Basis::Lifecycle)))
    });
    SIGNALS.clone()
}

/// What a node reads on its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Note {
    Assigned { task_id: TaskId, attempt: i32 },
    Cancelled { task_id: TaskId, attempt: i32 },
}

/// Redis: what is lost when it restarts empty.
#[derive(Debug, Default)]
struct Redis {
    next_entry: u64,
    /// Commands and reports not yet acknowledged, by entry id.
    entries: BTreeMap<u64, Ready>,
    /// The heartbeat change feed, not yet read.
    heartbeats: Vec<HeartbeatEntry>,
    /// The live hash of each node (it expires at `expires_at_ms`).
    live: HashMap<NodeId, HeartbeatEntry>,
    /// Each node's channel, by entry id (`<seq>-<n>`): an entry added twice is there once.
    channels: HashMap<NodeId, BTreeMap<(i64, u32), Note>>,
    /// The writer's marker: gone when Redis lost its data.
    marker: bool,
}

/// A node's assignment, as the node holds it.
#[derive(Debug, Clone)]
struct Held {
    attempt: i32,
    /// Its last report, sent again by [`Work::Repeat`].
    last: Option<Ready>,
}

#[derive(Debug)]
struct SimNode {
    node_id: NodeId,
    organization: usize,
    cores: u16,
    solar: bool,
    up: bool,
    /// The last channel entry read.
    cursor: (i64, u32),
    held: BTreeMap<TaskId, Held>,
}

#[derive(Debug)]
struct Organization {
    organization_id: OrganizationId,
    owners: Vec<OwnerId>,
}

/// The writer process: its state in memory and what it does besides deciding.
struct Core {
    state: State,
    context: Context,
    quarantined: Vec<Quarantined>,
    mining: Option<BlockDraft>,
    published_seq: i64,
    last_round: DateTime<Utc>,
}

/// What a run did, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub operations: u64,
    pub writer_steps: u64,
    pub commits: u64,
    pub messages: u64,
    pub events: u64,
    pub takeovers: u64,
    pub crashes: u64,
    pub redis_losses: u64,
    pub quarantined: u64,
    pub node_deaths: u64,
    pub submitted: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub rejected: u64,
    pub credited: u64,
    /// Open tasks summed over commits (their mean is how big the state checked was).
    pub open_at_commits: u64,
    /// Histories whose writer served a cell other than the default (odd seeds).
    pub away_histories: u64,
    /// Away: organisation-level commands sent to this writer anyway (it must refuse them), and
    /// revocations the default cell forwarded to it.
    pub misrouted_organisation_commands: u64,
    pub forwarded_revocations: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Self) {
        self.operations += other.operations;
        self.writer_steps += other.writer_steps;
        self.commits += other.commits;
        self.messages += other.messages;
        self.events += other.events;
        self.takeovers += other.takeovers;
        self.crashes += other.crashes;
        self.redis_losses += other.redis_losses;
        self.quarantined += other.quarantined;
        self.node_deaths += other.node_deaths;
        self.submitted += other.submitted;
        self.completed += other.completed;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.rejected += other.rejected;
        self.credited += other.credited;
        self.open_at_commits += other.open_at_commits;
        self.away_histories += other.away_histories;
        self.misrouted_organisation_commands += other.misrouted_organisation_commands;
        self.forwarded_revocations += other.forwarded_revocations;
    }
}

pub struct World {
    rules: Rules,
    settings: Settings,
    clock: DateTime<Utc>,
    rng: Rng,
    core: Option<Core>,
    pub(super) store: Store,
    redis: Redis,
    organizations: Vec<Organization>,
    nodes: Vec<SimNode>,
    tasks: Vec<(TaskId, usize)>,
    /// Every (task, attempt) a committed `TaskAssigned` named.
    assigned: HashSet<(TaskId, i32)>,
    /// The committed events, replayed as they are committed.
    projection: Projection,
    /// Tasks the store holds quarantined (their rows no longer match their events).
    quarantined: HashSet<TaskId>,
    /// Nodes and tasks sent to this cell's writer naming another cell (a misrouted message):
    /// the writer must refuse them (`other_cell`), so none is ever stored, placed or run.
    other_cell_nodes: HashSet<NodeId>,
    other_cell_tasks: HashSet<TaskId>,
    /// The simulated writer serves a cell other than the default (every odd seed): the
    /// organisation-level commands (organisations, consent) are the default cell's writer's,
    /// modelled as what it commits (the store's organisation rows) and the revocations it
    /// forwards to this writer; this writer learns of the rest by its lookups, and refuses an
    /// organisation-level command sent to it.
    away: bool,
    /// Away: the revocations forwarded to this writer (message, organisation, owner).
    forwarded: Vec<(MessageId, OrganizationId, OwnerId)>,
    pub stats: Stats,
}

impl World {
    /// A grid of three organisations with six nodes, most owners' consent granted, all of it
    /// still in Redis: the first steps commit it.
    pub fn new(seed: u64, settings: Settings) -> Self {
        let planted_bug = settings.planted_bug;
        let away = seed % 2 == 1;
        let mut rules = rules();
        if away {
            rules.cell = away_cell();
        }
        let mut world = Self {
            rules,
            settings,
            clock: DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap_or_default(),
            rng: Rng::seeded(seed),
            core: None,
            store: Store::with_bug(planted_bug),
            redis: Redis { marker: false, ..Redis::default() },
            organizations: Vec::new(),
            nodes: Vec::new(),
            tasks: Vec::new(),
            assigned: HashSet::new(),
            projection: Projection::default(),
            quarantined: HashSet::new(),
            other_cell_nodes: HashSet::new(),
            other_cell_tasks: HashSet::new(),
            away,
            forwarded: Vec::new(),
            stats: Stats { away_histories: u64::from(away), ..Stats::default() },
        };
        for index in 0..3 {
            let organization_id = OrganizationId(world.rng.uuid());
            let owners = (0..OWNERS_PER_ORGANIZATION).map(|_| OwnerId(world.rng.uuid())).collect();
            world.organizations.push(Organization { organization_id, owners });
            let command = Command::CreateOrganization(CreateOrganization {
                organization_id,
                name: OrganizationName::parse(&format!("cooperative member {index}"))
                    .unwrap_or_else(|_| unreachable!()),
                api_key_hash: world.hash(),
            });
            world.organisation_level(Actor::Operator, None, command);
        }
        for index in 0..6 {
            world.register(index % 3, 1 + (index % 3) as u8, index % 2 == 0);
        }
        for organization in 0..3 {
            for owner in 0..7 {
                world.grant(organization, owner);
            }
        }
        world
    }

    pub fn clock(&self) -> DateTime<Utc> {
        self.clock
    }

    fn hash(&mut self) -> Sha256Hex {
        let bytes = self.rng.uuid().as_u128().to_be_bytes();
        let more = self.rng.uuid().as_u128().to_be_bytes();
        Sha256Hex::parse(&format!("{}{}", hex::encode(bytes), hex::encode(more))).unwrap_or_else(|_| unreachable!())
    }

    fn add_entry(&mut self, source: Source, envelope: Envelope, decoded: Decoded) -> Ready {
        self.redis.next_entry += 1;
        let entry = self.redis.next_entry;
        let stream = if source == Source::Commands { COMMANDS } else { REPORTS };
        let ready =
            Ready { stream: stream.to_owned(), entry_id: StreamEntryId::new(entry, 0).to_string(), envelope, decoded };
        self.redis.entries.insert(entry, ready.clone());
        ready
    }

    /// An envelope as the gateway makes it (the payload is not read by the writer: the decoded
    /// message travels beside it).
    fn envelope(&mut self, message_type: &str, actor: Actor, organization_id: Option<OrganizationId>) -> Envelope {
        Envelope {
            id: MessageId(self.rng.uuid()),
            message_type: message_type.to_owned(),
            version: 1,
            occurred_at: self.clock,
            correlation_id: self.rng.uuid(),
            causation_id: None,
            organization_id,
            actor,
            payload: serde_json::Value::Null,
        }
    }

    fn command(&mut self, actor: Actor, organization_id: Option<OrganizationId>, command: Command) {
        let envelope = self.envelope(command.message_type(), actor, organization_id);
        self.add_entry(Source::Commands, envelope, Decoded::Command(command));
    }

    fn as_organization(&mut self, organization: usize, command: Command) {
        let organization_id = self.organizations[organization].organization_id;
        let actor = Actor::Organization(organization_id);
        match command {
            Command::CreateOrganization(_) | Command::GrantConsent(_) | Command::RevokeConsent(_) => {
                self.organisation_level(actor, Some(organization_id), command);
            }
            command => self.command(actor, Some(organization_id), command),
        }
    }

    /// An organisation-level command: to this writer when it serves the default cell. Away,
    /// the default cell's writer applies it (its commit: the store's organisation rows) and
    /// forwards a revocation it applied to this writer, sometimes twice (a recovery forwards
    /// again); now and then the command also reaches this writer, misrouted, which must refuse it.
    fn organisation_level(&mut self, actor: Actor, organization_id: Option<OrganizationId>, command: Command) {
        if !self.away {
            self.command(actor, organization_id, command);
            return;
        }
        if self.rng.below(10) == 0 {
            self.stats.misrouted_organisation_commands += 1;
            self.command(actor, organization_id, command.clone());
        }
        match (&command, organization_id) {
            (Command::CreateOrganization(create), _) => {
                self.store.organizations.insert(create.organization_id);
                self.store.api_keys.push((create.api_key_hash.as_str().to_owned(), create.organization_id, true));
            }
            (Command::GrantConsent(grant), Some(organization_id)) => {
                self.store.consent.insert((organization_id, grant.owner_id));
            }
            (Command::RevokeConsent(revoke), Some(organization_id))
                if self.store.consent.remove(&(organization_id, revoke.owner_id)) =>
            {
                self.stats.forwarded_revocations += 1;
                let forwarded = self.envelope(command.message_type(), Actor::Orchestrator, Some(organization_id));
                self.forwarded.push((forwarded.id, organization_id, revoke.owner_id));
                let times = if self.rng.below(4) == 0 { 2 } else { 1 };
                for _ in 0..times {
                    self.add_entry(Source::Commands, forwarded.clone(), Decoded::Command(command.clone()));
                }
            }
            _ => {}
        }
    }

    fn register(&mut self, organization: usize, cores: u8, solar: bool) {
        let node_id = NodeId(self.rng.uuid());
        let spec = NodeSpec::parse(&format!("sim-pi-{}", self.nodes.len()), i64::from(cores), solar, "Liège")
            .unwrap_or_else(|_| unreachable!());
        // Mostly a known zone; sometimes none (the default); rarely one the grid refuses.
        let spec = match self.rng.below(20) {
            0 => spec,
            1 => spec.in_zone(zone_of("NL")),
            draw => spec.in_zone(zone_of(SIMULATED_ZONES[draw as usize % SIMULATED_ZONES.len()])),
        };
        // Rarely, one naming another cell than the writer's.
        let spec = if self.rng.below(25) == 0 {
            self.other_cell_nodes.insert(node_id);
            spec.in_cell(other_cell())
        } else {
            spec
        };
        let command = Command::RegisterNode(RegisterNode { node_id, spec, token_hash: self.hash() });
        self.as_organization(organization, command);
        self.nodes.push(SimNode {
            node_id,
            organization,
            cores: u16::from(cores),
            solar,
            up: true,
            cursor: (0, 0),
            held: BTreeMap::new(),
        });
    }

    fn grant(&mut self, organization: usize, owner: usize) {
        let owner_id = self.organizations[organization].owners[owner];
        let command = Command::GrantConsent(GrantConsent {
            owner_id,
            consent_version: "2026-01".to_owned(),
            consent_ip: Some("192.0.2.7".to_owned()),
        });
        self.as_organization(organization, command);
    }

    /// Applies one operation; `Err` says which invariant broke.
    pub fn apply(&mut self, op: Op) -> Result<(), String> {
        self.stats.operations += 1;
        match op {
            Op::Step { crash } => return self.step(crash),
            Op::Tick { millis } => self.clock += Duration::milliseconds(i64::from(millis)),
            Op::Jump { seconds } => self.clock += Duration::seconds(i64::from(seconds)),
            Op::HeartbeatAll => {
                for index in 0..self.nodes.len() {
                    self.heartbeat(index);
                }
            }
            Op::Heartbeat { node } => {
                if !self.nodes.is_empty() {
                    self.heartbeat(node as usize % self.nodes.len());
                }
            }
            Op::Work { node, assignment, work } => self.work(node, assignment, work),
            Op::Submit { organization, group, owners, priority, slack_seconds, replicas } => {
                self.submit(
                    organization as usize % self.organizations.len(),
                    group,
                    owners,
                    priority,
                    slack_seconds,
                    replicas,
                );
            }
            Op::Cancel { task, by_owner } => {
                if !self.tasks.is_empty() {
                    let (task_id, organization) = self.tasks[task as usize % self.tasks.len()];
                    let by = if by_owner { organization } else { (organization + 1) % self.organizations.len() };
                    self.as_organization(by, Command::CancelTask(CancelTask { task_id }));
                }
            }
            Op::Grant { organization, owner } => {
                self.grant(organization as usize % self.organizations.len(), owner as usize % OWNERS_PER_ORGANIZATION);
            }
            Op::Revoke { organization, owner } => {
                let organization = organization as usize % self.organizations.len();
                let owner_id = self.organizations[organization].owners[owner as usize % OWNERS_PER_ORGANIZATION];
                self.as_organization(organization, Command::RevokeConsent(RevokeConsent { owner_id }));
            }
            Op::Register { organization, cores, solar } => {
                if self.nodes.len() < 40 {
                    self.register(organization as usize % self.organizations.len(), cores, solar);
                }
            }
            Op::Kill { node } => {
                if !self.nodes.is_empty() {
                    let index = node as usize % self.nodes.len();
                    self.kill(index);
                }
            }
            Op::KillMany { percent } => {
                for index in 0..self.nodes.len() {
                    if self.rng.chance(u64::from(percent), 100) {
                        self.kill(index);
                    }
                }
            }
            Op::Revive { node } => {
                if !self.nodes.is_empty() {
                    let index = node as usize % self.nodes.len();
                    self.revive(index);
                }
            }
            Op::ReviveAll => {
                for index in 0..self.nodes.len() {
                    self.revive(index);
                }
            }
            Op::LoseRedis => {
                self.stats.redis_losses += 1;
                self.redis.entries.clear();
                self.redis.heartbeats.clear();
                self.redis.live.clear();
                self.redis.channels.clear();
                self.redis.marker = false;
            }
            Op::CorruptThenCrash { task } => self.corrupt_then_crash(task),
        }
        Ok(())
    }

    fn heartbeat(&mut self, index: usize) {
        let node = &self.nodes[index];
        if !node.up || !self.store.nodes.contains_key(&node.node_id) {
            // A node's token works once its registration is applied.
            return;
        }
        let hour = f64::from(chrono::Timelike::hour(&self.clock));
        let daylight = ((hour - 6.0) / 12.0 * std::f64::consts::PI).sin().max(0.0);
        let solar_watts = if node.solar { (daylight * 12.0 * f64::from(node.cores)).round() } else { 0.0 };
        let running = node.held.len() as f64;
        let cpu_usage = (running / f64::from(node.cores) * 100.0).min(100.0);
        let entry = HeartbeatEntry {
            node_id: node.node_id,
            cpu_usage,
            solar_watts,
            eco_score: grid_shared::live::eco_score(solar_watts, cpu_usage, node.cores, 2_000),
            expires_at_ms: (self.clock + Duration::milliseconds(self.settings.node_ttl_ms)).timestamp_millis(),
        };
        self.redis.live.insert(node.node_id, entry);
        self.redis.heartbeats.push(entry);
    }

    fn kill(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if node.up {
            self.stats.node_deaths += 1;
        }
        node.up = false;
        node.held.clear();
    }

    fn revive(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if !node.up {
            // A restarted agent has no Last-Event-ID: it reads its channel from the start (its
            // assignments still in flight among them; the rest it reports to no effect).
            node.up = true;
            node.cursor = (0, 0);
        }
    }

    fn submit(&mut self, organization: usize, group: bool, owners: u8, priority: u8, slack_seconds: u32, replicas: u8) {
        self.stats.submitted += 1;
        let task_id = TaskId(self.rng.uuid());
        let building_id = BuildingId(self.rng.uuid());
        let kind = if group {
            let start = self.rng.below(OWNERS_PER_ORGANIZATION as u64) as usize;
            let participants = (0..usize::from(owners))
                .map(|offset| Participant {
                    owner_id: self.organizations[organization].owners[(start + offset) % OWNERS_PER_ORGANIZATION],
                    readings_kwh: vec![120.0, 95.5, 101.0],
                })
                .collect();
            TaskKind::EnergyGroupOptimisation { building_id, simulation_months: 12, participants }
        } else {
            TaskKind::BuildingThermalSimulation {
                building_id,
                insulation_score: 0.5,
                surface_m2: 80.0,
                heating_degree_days: 2_500.0,
            }
        };
        let command = Command::SubmitTask(SubmitTask {
            task_id,
            copropriete_id: CoproprieteId(self.rng.uuid()),
            priority: Priority::parse(i64::from(priority)).unwrap_or_default(),
            deadline: self.clock + Duration::seconds(i64::from(slack_seconds)),
            kind,
            replicas: Replicas::parse(i64::from(replicas)).unwrap_or_default(),
            // Rarely, one naming another cell than the writer's.
            cell: (self.rng.below(25) == 0).then(|| {
                self.other_cell_tasks.insert(task_id);
                grid_shared::cells::CellChoice::named(other_cell())
            }),
        });
        self.as_organization(organization, command);
        self.tasks.push((task_id, organization));
    }

    fn report(&mut self, node_id: NodeId, organization: usize, report: Report) -> Ready {
        let organization_id = self.organizations[organization].organization_id;
        let envelope = self.envelope(report.message_type(), Actor::Node(node_id), Some(organization_id));
        self.add_entry(Source::Reports, envelope, Decoded::Report(report))
    }

    /// A node reads what is new on its channel, then works one of its assignments.
    fn work(&mut self, node: u32, assignment: u32, work: Work) {
        let up: Vec<usize> = (0..self.nodes.len()).filter(|index| self.nodes[*index].up).collect();
        if up.is_empty() {
            return;
        }
        let index = up[node as usize % up.len()];
        self.read_channel(index);
        let node = &self.nodes[index];
        if node.held.is_empty() {
            return;
        }
        let (task_id, held) = {
            let (task_id, held) =
                node.held.iter().nth(assignment as usize % node.held.len()).unwrap_or_else(|| unreachable!());
            (*task_id, held.clone())
        };
        let (node_id, organization) = (node.node_id, node.organization);
        let completed = |node_id: NodeId, attempt: i32, hash: String, energy: i64, solar: i64| {
            Report::TaskCompleted(TaskCompletedReport {
                node_id,
                task_id,
                attempt,
                result_json: Some(serde_json::json!({"ok": true})),
                result_hash: hash,
                energy_used: MicroWattHours(energy),
                solar_contribution: MicroWattHours(solar),
            })
        };
        let honest = format!("{:064x}", task_id.as_uuid().as_u128());
        let solar = i64::try_from(self.rng.below(40)).unwrap_or(0);
        let report = match work {
            Work::Start => Some(Report::TaskStarted(TaskStartedReport { node_id, task_id, attempt: held.attempt })),
            Work::Complete => Some(completed(node_id, held.attempt, honest, 40, solar)),
            Work::CompleteWrongly => {
                Some(completed(node_id, held.attempt, format!("{:064x}", self.rng.next_u64()), 40, solar))
            }
            Work::CompleteImplausibly => {
                Some(completed(node_id, held.attempt, honest, 1_000_000_000_000, 1_000_000_000_000))
            }
            Work::Fail => Some(Report::TaskFailed(TaskFailedReport {
                node_id,
                task_id,
                attempt: held.attempt,
                error: "out of memory".to_owned(),
            })),
            Work::Repeat => {
                if let Some(last) = held.last {
                    let entry = self.add_entry(Source::Reports, last.envelope, last.decoded);
                    drop(entry);
                }
                None
            }
            Work::ReportStaleAttempt => Some(completed(node_id, held.attempt - 1, honest, 40, solar)),
            Work::ReportAsAnotherNode => {
                let other = &self.nodes[(index + 1) % self.nodes.len()];
                let (other_id, other_organization) = (other.node_id, other.organization);
                let report = completed(other_id, held.attempt, honest, 40, solar);
                self.report(other_id, other_organization, report);
                None
            }
        };
        let Some(report) = report else { return };
        let finished = matches!(report, Report::TaskCompleted(_) | Report::TaskFailed(_));
        let sent = self.report(node_id, organization, report);
        let node = &mut self.nodes[index];
        if let Some(held) = node.held.get_mut(&task_id) {
            held.last = Some(sent);
            if finished && matches!(work, Work::Complete | Work::Fail) {
                // Done: the node keeps only its last report (sent again if reassigned the same).
                node.held.remove(&task_id);
            }
        }
    }

    fn read_channel(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let Some(channel) = self.redis.channels.get(&node.node_id) else { return };
        let from = node.cursor;
        for (id, note) in channel.range((std::ops::Bound::Excluded(from), std::ops::Bound::Unbounded)) {
            node.cursor = *id;
            match *note {
                Note::Assigned { task_id, attempt } => {
                    let held = node.held.entry(task_id).or_insert(Held { attempt, last: None });
                    if held.attempt != attempt {
                        *held = Held { attempt, last: None };
                    }
                }
                Note::Cancelled { task_id, attempt } => {
                    if node.held.get(&task_id).is_some_and(|held| held.attempt == attempt) {
                        node.held.remove(&task_id);
                    }
                }
            }
        }
    }

    fn corrupt_then_crash(&mut self, task: u32) {
        let in_flight = self.store.in_flight();
        if in_flight.is_empty() {
            return;
        }
        let (task_id, _, _) = in_flight[task as usize % in_flight.len()];
        if let Some(row) = self.store.tasks.get_mut(&task_id) {
            // An assigned task whose attempt was lost: a standby cannot fence its reports.
            row.stored.attempts = 0;
        }
        self.crash();
    }

    fn crash(&mut self) {
        if self.core.take().is_some() {
            self.stats.crashes += 1;
        }
    }

    /// A standby takes over: the state from what was committed, the fleet from the live hashes
    /// (nodes holding work that Redis does not show alive get one TTL), Redis made whole.
    fn take_over(&mut self) -> Result<(), String> {
        self.stats.takeovers += 1;
        let (mut state, quarantined) = self.store.snapshot().restore(&self.rules, self.clock);
        let mut live: Vec<&HeartbeatEntry> =
            self.redis.live.values().filter(|entry| entry.expires_at_ms > self.clock.timestamp_millis()).collect();
        live.sort_by_key(|entry| entry.node_id);
        for entry in live {
            state.heartbeat(entry);
        }
        let grace = self.clock + Duration::milliseconds(self.settings.node_ttl_ms);
        let mut silent: Vec<NodeId> = state
            .nodes
            .values()
            .filter(|node| !node.in_flight.is_empty() && !state.live.contains_key(&node.node_id))
            .map(|node| node.node_id)
            .collect();
        silent.sort();
        for node_id in silent {
            state.timers.node_expires(grace, node_id);
        }
        self.redis.heartbeats.clear();
        let mut context = Context::seeded(self.rng.next_u64(), self.clock);
        context.set_signals(signals());
        self.core = Some(Core {
            state,
            context,
            quarantined,
            mining: None,
            published_seq: self.store.relay_cursor,
            last_round: self.clock,
        });
        self.recover_redis();
        Ok(())
    }

    /// Publishes the committed events not yet published and, when Redis lost its data,
    /// re-issues the work in flight after every id a node may have read.
    fn recover_redis(&mut self) {
        let Some(core) = &mut self.core else { return };
        let reissue = !self.redis.marker;
        let events: Vec<(i64, Event, Option<NodeId>)> =
            self.store.events.iter().filter(|(seq, _, _)| *seq > core.published_seq).cloned().collect();
        for (seq, event, node) in events {
            if let Some(node_id) = node {
                deliver(&mut self.redis, node_id, (seq, 0), &event);
            }
            core.published_seq = seq;
        }
        if reissue {
            let head = core.published_seq;
            for (number, (task_id, node_id, attempt)) in self.store.in_flight().into_iter().enumerate() {
                let note = Note::Assigned { task_id, attempt };
                let id = (head, u32::try_from(number).unwrap_or(u32::MAX) + 1);
                self.redis.channels.entry(node_id).or_default().insert(id, note);
            }
            self.redis.marker = true;
        }
    }

    /// One writer step, as `Writer::step` runs it, crashing where told.
    fn step(&mut self, crash: Option<CrashPoint>) -> Result<(), String> {
        if self.core.is_none() {
            self.take_over()?;
        }
        if !self.redis.marker {
            self.recover_redis();
        }
        self.stats.writer_steps += 1;
        let Some(core) = &mut self.core else { return Ok(()) };
        let mut placement_due = false;
        for entry in self.redis.heartbeats.drain(..) {
            placement_due |= core.state.heartbeat(&entry);
        }
        let mut ready: Vec<Ready> = self.redis.entries.values().take(self.settings.batch_size).cloned().collect();
        core.context.set_now(self.clock);
        // What is carried stays unacknowledged here: the next step reads it again.
        let _carried = decide::split_for_own_batch(&mut ready);
        let mut batch = Batch::default();
        let lookups = {
            let message_ids: Vec<MessageId> = ready.iter().map(|message| message.envelope.id).collect();
            let (applied, existing) = self.store.known(&message_ids, &decide::submitted_tasks(&ready));
            let mut lookups = BatchLookups { applied, ..BatchLookups::default() };
            lookups.decide.existing_tasks = existing;
            if !self.rules.in_default_cell() {
                // `load::organisation_level`: what the default cell committed.
                let (organizations, consents) = decide::organisation_level_needs(&core.state, &ready);
                lookups.decide.organizations =
                    organizations.into_iter().filter(|id| self.store.organizations.contains(id)).collect();
                lookups.decide.consents =
                    consents.into_iter().filter(|pair| self.store.consent.contains(pair)).collect();
            }
            if let Some(first) = ready.first()
                && let Decoded::Command(Command::RevokeConsent(revoke)) = &first.decoded
                && let Some(organization_id) = first.envelope.organization_id
            {
                lookups.decide.purge = Some(self.store.purge_targets(organization_id, revoke.owner_id));
            }
            lookups
        };
        if !core.quarantined.is_empty() {
            let quarantined = std::mem::take(&mut core.quarantined);
            self.stats.quarantined += quarantined.len() as u64;
            self.quarantined.extend(quarantined.iter().map(|task| task.task_id));
            decide::quarantine(&mut core.state, &mut core.context, &mut batch, &quarantined);
        }
        let fired =
            decide::messages(&mut core.state, &self.rules, &mut core.context, &mut batch, ready, &lookups, false);
        placement_due |= fired > 0 || batch.writes();
        if placement_due || self.clock - core.last_round >= Duration::milliseconds(self.settings.tick_ms) {
            core.last_round = self.clock;
            if let Some((candidates, groups)) = decide::placement_candidates(&core.state) {
                let blocked = self.store.consent_withdrawn(&groups);
                batch.placed = rounds::place_round(
                    &mut core.state,
                    &self.rules,
                    &mut core.context,
                    &mut batch,
                    &candidates,
                    &blocked,
                );
            }
        }
        if let Some(draft) = core.mining.take() {
            decide::sealed_block(&mut core.state, &mut core.context, &mut batch, draft.mine());
        }
        core.mining = decide::next_to_mine(&mut core.state, &self.rules, &core.context, core.mining.is_some());
        if let Some(violation) = batch.violations.first() {
            return Err(format!(
                "the writer refused on state it did not expect ({} on task {:?}): {}",
                violation.refused, violation.task_id, violation.detail
            ));
        }
        if crash == Some(CrashPoint::BeforeCommit) {
            self.crash();
            return Ok(());
        }
        if batch.writes() {
            // Before the commit, the store holds what the decision could know.
            checks::rejections_as_known(&batch, &self.store, |task_id| {
                let (_, organization) = self.tasks.iter().find(|(id, _)| *id == task_id)?;
                Some(self.organizations[*organization].organization_id)
            })?;
            self.store
                .commit(&batch, core.published_seq)
                .map_err(|error| format!("PostgreSQL refused a batch: {error}"))?;
            self.stats.commits += 1;
            self.stats.open_at_commits += core.state.tasks.len() as u64;
            self.stats.messages += batch.messages as u64;
            self.stats.events += batch.events.len() as u64;
            for event in &batch.events {
                match &event.event {
                    Event::TaskAssigned(assigned) if !self.assigned.insert((assigned.task_id, assigned.attempt)) => {
                        return Err(format!(
                            "task {} assigned twice for attempt {}",
                            assigned.task_id, assigned.attempt
                        ));
                    }
                    Event::TaskCompleted(completed) => {
                        self.stats.completed += 1;
                        self.stats.credited +=
                            completed.credits.as_ref().map_or(0, |credits| credits.nodes.len() as u64);
                    }
                    Event::TaskFailed(_) => self.stats.failed += 1,
                    Event::TaskCancelled(_) => self.stats.cancelled += 1,
                    Event::TaskRejected(_) => self.stats.rejected += 1,
                    _ => {}
                }
                self.projection.apply(event.seq, &event.event);
            }
        }
        if crash == Some(CrashPoint::AfterCommit) {
            self.crash();
            return self.check_committed(&batch);
        }
        for event in &batch.events {
            if let Some(node_id) = event.notify_node {
                deliver(&mut self.redis, node_id, (event.seq, 0), &event.event);
            }
        }
        if let Some(last) = batch.last_seq() {
            core.published_seq = last;
        }
        for acknowledged in &batch.acks {
            if let Some(entry) = acknowledged.id.split_once('-').and_then(|(id, _)| id.parse::<u64>().ok()) {
                self.redis.entries.remove(&entry);
            }
        }
        self.check_committed(&batch)
    }

    /// After a step: the state in memory is consistent, equal to what a standby would restore
    /// from the store, and the store agrees with its events.
    fn check_committed(&self, batch: &Batch) -> Result<(), String> {
        if let Some(core) = &self.core {
            checks::state(&core.state, &self.rules)?;
            if core.quarantined.is_empty() {
                let (restored, quarantined) = self.store.snapshot().restore(&self.rules, self.clock);
                if !quarantined.is_empty() {
                    return Err(format!("the committed rows of tasks contradict themselves: {quarantined:?}"));
                }
                // Away, the organisation-level part of the state is what this writer learnt
                // so far of what the default cell committed: not compared.
                checks::same_durable_state(&core.state, &restored, !self.away)?;
            }
        }
        if self.away {
            checks::no_organisation_rows(batch)?;
            self.check_forwarded_revocations()?;
        }
        checks::credits(&self.store, batch, &self.rules, &signals())?;
        self.check_other_cells()?;
        checks::store_follows_events(&self.store, &self.projection, Some(&batch.task_order), &self.quarantined)
    }

    /// Away: a revocation the default cell forwarded is applied (never refused), and once the
    /// latest one of an owner is, no open task of this cell holds the owner's data (unless the
    /// owner consented again since).
    fn check_forwarded_revocations(&self) -> Result<(), String> {
        let Some(core) = &self.core else { return Ok(()) };
        let mut latest = HashSet::new();
        for (message_id, organization_id, owner_id) in self.forwarded.iter().rev() {
            let processed = self.store.processed.get(message_id);
            if let Some(Some(refusal)) = processed {
                return Err(format!("a forwarded revocation was refused: {refusal}"));
            }
            if !latest.insert((*organization_id, *owner_id))
                || processed.is_none()
                || self.store.consent.contains(&(*organization_id, *owner_id))
            {
                continue;
            }
            let holding = core
                .state
                .tasks
                .values()
                .find(|task| task.organization_id == *organization_id && task.participants.contains(owner_id));
            if let Some(task) = holding {
                return Err(format!(
                    "task {} is still open with the data of owner {owner_id}, whose revocation this cell applied",
                    task.task_id
                ));
            }
        }
        Ok(())
    }

    /// Nothing addressed to another cell is stored as this cell's node, nor runs as its task.
    fn check_other_cells(&self) -> Result<(), String> {
        if let Some(node_id) = self.other_cell_nodes.iter().find(|node_id| self.store.nodes.contains_key(node_id)) {
            return Err(format!("node {node_id} of another cell was registered in this one"));
        }
        for task_id in &self.other_cell_tasks {
            if let Some(row) = self.store.tasks.get(task_id)
                && row.stored.status != grid_shared::domain::TaskStatus::Rejected.as_str()
            {
                return Err(format!("task {task_id} of another cell is {} in this one", row.stored.status));
            }
            if self.assigned.iter().any(|(assigned, _)| assigned == task_id) {
                return Err(format!("task {task_id} of another cell was assigned in this one"));
            }
        }
        Ok(())
    }

    /// The end of a history: every node comes back and works honestly, then the clock passes
    /// every deadline. Nothing may stay open.
    pub fn drain(&mut self) -> Result<(), String> {
        self.apply(Op::ReviveAll)?;
        for round in 0..60_u32 {
            self.apply(Op::HeartbeatAll)?;
            for node in 0..self.nodes.len() {
                for assignment in 0..self.nodes[node].cores {
                    let work = if round % 2 == 0 { Work::Start } else { Work::Complete };
                    self.work_on(node, u32::from(assignment), work);
                }
            }
            self.apply(Op::Step { crash: None })?;
            self.apply(Op::Tick { millis: 1_000 })?;
        }
        let latest = self.store.tasks.values().map(|row| row.stored.deadline).max().unwrap_or(self.clock);
        if latest > self.clock {
            self.clock = latest + Duration::seconds(1);
        }
        for _ in 0..3 {
            self.apply(Op::Step { crash: None })?;
        }
        let open: Vec<(TaskId, String)> = self
            .store
            .tasks
            .values()
            .filter(|row| TaskStatus::parse(&row.stored.status).is_some_and(TaskStatus::is_open))
            .map(|row| (row.stored.task_id, row.stored.status.clone()))
            .collect();
        if !open.is_empty() {
            return Err(format!("{} tasks still open after every deadline passed: {open:?}", open.len()));
        }
        checks::store_follows_events(&self.store, &self.projection, None, &self.quarantined)?;
        checks::whole_ledger_follows_events(&self.store, &self.projection)
    }

    /// A node by its index (not only those up) works one assignment.
    fn work_on(&mut self, node: usize, assignment: u32, work: Work) {
        let up_before: Vec<usize> = (0..self.nodes.len()).filter(|index| self.nodes[*index].up).collect();
        if let Some(position) = up_before.iter().position(|index| *index == node) {
            self.work(u32::try_from(position).unwrap_or(0), assignment, work);
        }
    }
}

/// A node message for an event, as `streams::node_message` makes one.
fn deliver(redis: &mut Redis, node_id: NodeId, id: (i64, u32), event: &Event) {
    let note = match event {
        Event::TaskAssigned(assigned) => Note::Assigned { task_id: assigned.task_id, attempt: assigned.attempt },
        Event::TaskCancelled(cancelled) => Note::Cancelled { task_id: cancelled.task_id, attempt: cancelled.attempt },
        Event::TaskRequeued(requeued) => Note::Cancelled { task_id: requeued.task_id, attempt: requeued.attempt },
        Event::TaskFailed(failed) => Note::Cancelled { task_id: failed.task_id, attempt: failed.attempt },
        _ => return,
    };
    redis.channels.entry(node_id).or_default().entry(id).or_insert(note);
}
