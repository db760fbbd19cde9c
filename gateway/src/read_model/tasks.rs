//! Tasks as their organisation sees them, with the credits they earned.

use chrono::{DateTime, Utc};
use grid_shared::carbon::Nanograms;
use grid_shared::domain::TaskStatus;
use grid_shared::ids::{OrganizationId, TaskId};
use grid_shared::reasons::TaskReason;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::eur;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    pub task_id: uuid::Uuid,
    /// The cell the task runs in (`GET /v1/cells`): only that cell's nodes run it.
    pub cell: String,
    /// `queued`, `assigned`, `running`, `completed`, `failed`, `cancelled`, `rejected` or
    /// `quarantined` (a writer found its stored row contradicting itself and took it out of
    /// scheduling; `reason.problem` says what was wrong, an operator decides).
    pub status: String,
    pub priority: i16,
    pub deadline: DateTime<Utc>,
    pub node_id: Option<uuid::Uuid>,
    pub attempts: i32,
    pub result_json: Option<serde_json::Value>,
    pub result_hash: Option<String>,
    pub carbon_saved_kg: Option<f64>,
    pub node_share_eur: Option<f64>,
    pub cooperative_share_eur: Option<f64>,
    /// Exact figures: ng of CO₂ and pico-euros.
    pub carbon_saved_ng: Option<i64>,
    pub node_share_peur: Option<i64>,
    pub cooperative_share_peur: Option<i64>,
    pub kind: String,
    /// What the task computes: a thermal simulation's inputs; for a group optimisation, its
    /// building, months and the number of participants (never their ids or readings).
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    /// The name of its node (the last it was assigned to), when it has one.
    pub node_name: Option<String>,
    /// When its current (or last) assignment was made, started and when it ended.
    pub assigned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// A queued task taken back waits until then before it may be placed again.
    pub not_before: Option<DateTime<Utc>>,
    /// Why the task is where it is: an object with a stable `code` and that code's fields.
    /// `taken_back` (`cause`: `node_offline`, `start_lease_expired` or `node_reported_failure`
    /// with `error`; the task waits out a backoff), `attempts_exhausted` (`attempts`, `last`),
    /// `no_quorum` (`results`, `distinct_hashes`, `quorum`), `deadline_exceeded`,
    /// `cancelled_by_request`, `consent_revoked`, `not_credited` (`detail`), `quarantined`
    /// (`problem`), a rejection's code (`k_anonymity_violated`, `consent_not_granted`,
    /// `deadline_passed`, `not_enough_node_owners`, ...), or `legacy` (`text`, written before
    /// the codes).
    #[schema(value_type = Option<Object>)]
    pub reason: Option<serde_json::Value>,
    /// The same, in a sentence.
    pub reason_text: Option<String>,
    pub energy_used_wh: Option<f64>,
    pub solar_contribution_wh: Option<f64>,
    pub submitted_at: DateTime<Utc>,
    /// Results asked for (1 to 3) and agreeing results needed to complete (raised to 2 when a
    /// result is checked by a second node).
    pub replicas: i16,
    pub quorum: i16,
    /// Every result reported for the task's assignments, in order.
    pub results: Vec<ResultView>,
    /// Each credited result, with the carbon signal it was credited at: its node's zone, the
    /// hour, the intensity and where it came from. The task's `carbon_saved_ng` and shares are
    /// their sums.
    pub credits: Vec<CreditView>,
    /// The task's Software Carbon Intensity once completed (absent before, and for tasks
    /// completed before it was measured).
    pub sci: Option<SciView>,
    /// Why the task went where it went: the payload of its latest `TaskAssigned` event
    /// (`node_id`, `attempt`, and the `chosen` node and `runner_up` with their score inputs:
    /// solar watts, CPU usage, eco score, cores, running). Absent before its first assignment.
    pub assignment: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResultView {
    pub node_id: uuid::Uuid,
    pub attempt: i32,
    pub result_hash: String,
    /// `pending` (awaiting the quorum), `agreed`, `disagreed`, `inconclusive` (no quorum) or
    /// `unchecked` (a single result accepted without a replica).
    pub verdict: String,
    /// Why the reported energy earns no credit, when it does not.
    pub refusal: Option<String>,
    pub reported_at: DateTime<Utc>,
}

/// A task's Software Carbon Intensity (ISO/IEC 21031: SCI = (E × I + M) per R, R = one task),
/// in ng CO₂e. `operational_ng`: each result's grid energy (energy − solar) × the intensity of
/// its node's zone in the hour the task completed, plus its solar energy × the panels' own
/// factor (`GRID_SOLAR_INTENSITY_KG_PER_KWH`); results whose energy was refused as implausible
/// count none. `embodied_ng`: the completing node's embodied emissions × the time its assignment
/// held one core ÷ its lifetime (`GRID_EMBODIED_LIFETIME_YEARS`) ÷ its cores.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SciView {
    pub operational_ng: i64,
    pub embodied_ng: i64,
    pub total_ng: i64,
}

/// One credited result: what it earned and the intensity it was computed from. Anyone can
/// recompute it: `carbon_saved_ng = solar_uwh × intensity_mg_per_kwh ÷ 1000`, the total in
/// pico-euros `= carbon_saved_ng × price_peur_per_kg ÷ 10^12`, `node_share_peur = total ×
/// node_share_percent ÷ 100`, the cooperative's share the rest (each division rounds down).
/// The signal fields are absent for credits made before carbon signals (at the then fixed
/// intensity, 180,000 mg/kWh by default).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreditView {
    pub node_id: uuid::Uuid,
    pub attempt: i32,
    pub solar_uwh: i64,
    /// The node's carbon zone (Electricity Maps zone id).
    pub zone: Option<String>,
    /// The UTC hour whose intensity was used (the hour the result was credited in).
    pub hour: Option<DateTime<Utc>>,
    /// mg CO₂ per kWh (integer).
    pub intensity_mg_per_kwh: Option<i64>,
    /// `average` or `marginal`.
    pub intensity_kind: Option<String>,
    /// Where the intensity came from: `file:<name>:<basis>` (with `+typical-<year>` when a
    /// bundled typical year answered another year's hour), `electricitymaps:<basis>`,
    /// `watttime:co2_moer`, or `fixed` (the configured factor, when no source knew the hour).
    pub intensity_source: Option<String>,
    pub price_peur_per_kg: Option<i64>,
    pub node_share_percent: Option<i16>,
    pub carbon_saved_ng: i64,
    pub node_share_peur: i64,
    pub cooperative_share_peur: i64,
    pub credited_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskPage {
    pub tasks: Vec<TaskView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// A task's row as [`tasks`] selects it.
struct TaskRow {
    task_id: uuid::Uuid,
    cell_id: String,
    status: String,
    priority: i16,
    deadline: DateTime<Utc>,
    node_id: Option<uuid::Uuid>,
    attempts: i32,
    result_json: Option<serde_json::Value>,
    result_hash: Option<String>,
    kind_type: String,
    reason: Option<String>,
    submitted_at: DateTime<Utc>,
    energy_uwh: Option<i64>,
    solar_uwh: Option<i64>,
    replicas: i16,
    quorum: i16,
    assigned_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    not_before: Option<DateTime<Utc>>,
    sci_operational_ng: Option<i64>,
    sci_embodied_ng: Option<i64>,
    node_name: Option<String>,
    input: serde_json::Value,
    carbon_ng: Option<i64>,
    node_peur: Option<i64>,
    cooperative_peur: Option<i64>,
    results: serde_json::Value,
    credits: serde_json::Value,
    assignment: Option<serde_json::Value>,
}

impl TryFrom<TaskRow> for TaskView {
    type Error = ApiError;

    fn try_from(row: TaskRow) -> Result<Self, ApiError> {
        let reason: Option<TaskReason> = row.reason.as_deref().map(TaskReason::from_stored);
        let (carbon, node_share, cooperative_share) = (row.carbon_ng, row.node_peur, row.cooperative_peur);
        Ok(TaskView {
            task_id: row.task_id,
            cell: row.cell_id,
            status: row.status,
            priority: row.priority,
            deadline: row.deadline,
            node_id: row.node_id,
            attempts: row.attempts,
            result_json: row.result_json,
            result_hash: row.result_hash,
            carbon_saved_kg: carbon.map(|ng| Nanograms(ng).as_kg()),
            node_share_eur: node_share.map(eur),
            cooperative_share_eur: cooperative_share.map(eur),
            carbon_saved_ng: carbon,
            node_share_peur: node_share,
            cooperative_share_peur: cooperative_share,
            kind: row.kind_type,
            input: row.input,
            node_name: row.node_name,
            assigned_at: row.assigned_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            not_before: row.not_before,
            reason: reason.as_ref().and_then(|reason| serde_json::to_value(reason).ok()),
            reason_text: reason.as_ref().map(TaskReason::to_string),
            energy_used_wh: row.energy_uwh.map(|uwh| uwh as f64 / 1e6),
            solar_contribution_wh: row.solar_uwh.map(|uwh| uwh as f64 / 1e6),
            submitted_at: row.submitted_at,
            replicas: row.replicas,
            quorum: row.quorum,
            results: serde_json::from_value(row.results)
                .map_err(|error| ApiError::Internal(format!("task results: {error}")))?,
            sci: match (row.sci_operational_ng, row.sci_embodied_ng) {
                (Some(operational_ng), Some(embodied_ng)) => {
                    Some(SciView { operational_ng, embodied_ng, total_ng: operational_ng.saturating_add(embodied_ng) })
                }
                _ => None,
            },
            credits: serde_json::from_value(row.credits)
                .map_err(|error| ApiError::Internal(format!("task credits: {error}")))?,
            assignment: row.assignment,
        })
    }
}

/// Up to `limit` tasks of `search` (and of `scope`, if given), newest first, after the cursor
/// `after`; or only the task `only`. One statement for a page and for one task, each planned
/// with its values (the gateway's pool plans every statement with them: `app::build_state`).
async fn tasks(
    state: &AppState,
    scope: Option<OrganizationId>,
    search: &TaskSearch,
    after: Option<(DateTime<Utc>, uuid::Uuid)>,
    only: Option<TaskId>,
    limit: i64,
) -> Result<Vec<TaskView>, ApiError> {
    let rows = sqlx::query_as!(
        TaskRow,
        r#"select t.task_id, t.cell_id, t.status, t.priority, t.deadline, t.node_id, t.attempts,
            coalesce(t.result_json::json, (select r.result_json from task_result r
                where r.cell_id = t.cell_id and r.task_id = t.task_id and r.result_hash = t.result_hash
                order by r.attempt limit 1)) as result_json,
            t.result_hash, t.kind_type, t.reason, t.submitted_at, t.energy_uwh, t.solar_uwh, t.replicas, t.quorum,
            t.assigned_at, t.started_at, t.finished_at, t.not_before, t.sci_operational_ng, t.sci_embodied_ng,
            (select n.name from node n where n.cell_id = t.cell_id and n.node_id = t.node_id) as node_name,
            case when t.kind_type = 'energy_group_optimisation' then jsonb_build_object('type', t.kind_type,
                     'building_id', t.kind -> 'building_id', 'simulation_months', t.kind -> 'simulation_months',
                     'participants', jsonb_array_length(t.kind -> 'participants'))
                 else t.kind end as "input!",
            c.carbon_ng as "carbon_ng?", c.node_peur as "node_peur?", c.cooperative_peur as "cooperative_peur?",
            (select coalesce(jsonb_agg(jsonb_build_object('node_id', r.node_id, 'attempt', r.attempt,
                        'result_hash', r.result_hash, 'verdict', r.verdict, 'refusal', r.refusal,
                        'reported_at', r.reported_at) order by r.attempt), '[]'::jsonb)
             from task_result r where r.cell_id = t.cell_id and r.task_id = t.task_id) as "results!",
            (select coalesce(jsonb_agg(jsonb_build_object('node_id', l.node_id, 'attempt', l.attempt,
                        'solar_uwh', l.solar_uwh, 'zone', l.zone, 'hour', l.intensity_hour,
                        'intensity_mg_per_kwh', l.intensity_mg_per_kwh, 'intensity_kind', l.intensity_kind,
                        'intensity_source', l.intensity_source, 'price_peur_per_kg', l.price_peur_per_kg,
                        'node_share_percent', l.node_share_percent, 'carbon_saved_ng', l.carbon_ng,
                        'node_share_peur', l.node_peur, 'cooperative_share_peur', l.cooperative_peur,
                        'credited_at', l.credited_at) order by l.block_height, l.leaf_index), '[]'::jsonb)
             from proof_leaf l where l.cell_id = t.cell_id and l.task_id = t.task_id) as "credits!",
            (select e.envelope -> 'payload' from event e where e.cell_id = t.cell_id and e.seq = t.assignment_seq)
                as assignment
        from task t
        left join lateral (
            select sum(carbon_ng) filter (where account = 'node')::bigint as carbon_ng,
                   sum(amount_peur) filter (where account = 'node')::bigint as node_peur,
                   sum(amount_peur) filter (where account = 'cooperative')::bigint as cooperative_peur
            from credit_entry e where e.cell_id = t.cell_id and e.task_id = t.task_id) c on true
        where ($1::uuid is null or t.organization_id = $1) and ($2::text is null or t.status = $2)
          and ($3::text is null or t.kind_type = $3) and ($4::uuid is null or t.node_id = $4)
          and ($5::timestamptz is null or t.submitted_at >= $5)
          and ($6::timestamptz is null or t.submitted_at < $6)
          and ($7::text is null or t.task_id::text like $7 || '%')
          and ($8::timestamptz is null or (t.submitted_at, t.task_id) < ($8, $9))
          and ($11::uuid is null or t.task_id = $11)
        order by t.submitted_at desc, t.task_id desc limit $10"#,
        scope.map(|id| id.as_uuid()),
        search.status.map(TaskStatus::as_str),
        search.kind.as_deref(),
        search.node_id,
        search.since,
        search.until,
        search.id_prefix.as_deref(),
        after.map(|(at, _)| at),
        after.map(|(_, id)| id),
        limit,
        only.map(|id| id.as_uuid())
    )
    .fetch_all(&state.pool)
    .await?;
    rows.into_iter().map(TaskView::try_from).collect()
}

pub async fn find_task(
    state: &AppState,
    scope: Option<OrganizationId>,
    task_id: TaskId,
) -> Result<Option<TaskView>, ApiError> {
    Ok(tasks(state, scope, &TaskSearch::default(), None, Some(task_id), 1).await?.pop())
}

/// Where a page ends: the last task's submission time (µs) and id.
pub fn encode_cursor(task: &TaskView) -> String {
    format!("{}.{}", task.submitted_at.timestamp_micros(), task.task_id)
}

pub fn decode_cursor(text: &str) -> Result<(DateTime<Utc>, uuid::Uuid), ApiError> {
    let invalid = || ApiError::field("cursor", "is not a cursor this API gave");
    let (micros, id) = text.split_once('.').ok_or_else(invalid)?;
    let at = micros.parse().ok().and_then(DateTime::<Utc>::from_timestamp_micros).ok_or_else(invalid)?;
    Ok((at, uuid::Uuid::parse_str(id).map_err(|_| invalid())?))
}

/// Which tasks a list or a count is about (each filter optional).
#[derive(Debug, Clone, Default)]
pub struct TaskSearch {
    pub status: Option<TaskStatus>,
    /// A kind's `type` (`building_thermal_simulation`, `energy_group_optimisation`).
    pub kind: Option<String>,
    pub node_id: Option<uuid::Uuid>,
    /// Submitted at or after, and before.
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The first hexadecimal digits of the task id (with its dashes), lowercase.
    pub id_prefix: Option<String>,
}

/// How many tasks are in each status, among those of `search` (its status aside).
pub async fn count_tasks(
    state: &AppState,
    scope: Option<OrganizationId>,
    search: &TaskSearch,
) -> Result<std::collections::BTreeMap<String, i64>, ApiError> {
    let rows = sqlx::query!(
        r#"select t.status, count(*) as "count!" from task t
         where ($1::uuid is null or t.organization_id = $1)
           and ($2::text is null or t.kind_type = $2) and ($3::uuid is null or t.node_id = $3)
           and ($4::timestamptz is null or t.submitted_at >= $4)
           and ($5::timestamptz is null or t.submitted_at < $5)
           and ($6::text is null or t.task_id::text like $6 || '%')
         group by t.status"#,
        scope.map(|id| id.as_uuid()),
        search.kind.as_deref(),
        search.node_id,
        search.since,
        search.until,
        search.id_prefix.as_deref()
    )
    .fetch_all(&state.pool)
    .await?;
    let mut counts: std::collections::BTreeMap<String, i64> =
        TaskStatus::ALL.iter().map(|status| (status.as_str().to_owned(), 0)).collect();
    counts.extend(rows.into_iter().map(|row| (row.status, row.count)));
    Ok(counts)
}

pub async fn list_tasks(
    state: &AppState,
    scope: Option<OrganizationId>,
    search: &TaskSearch,
    after: Option<(DateTime<Utc>, uuid::Uuid)>,
    limit: i64,
) -> Result<TaskPage, ApiError> {
    let mut tasks = tasks(state, scope, search, after, None, limit + 1).await?;
    let next_cursor = if tasks.len() as i64 > limit {
        tasks.truncate(limit as usize);
        tasks.last().map(encode_cursor)
    } else {
        None
    };
    Ok(TaskPage { tasks, next_cursor })
}
