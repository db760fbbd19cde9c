//! What the writer reads from PostgreSQL: the whole state at takeover, and the few things a
//! batch must look up before it is decided.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use grid_shared::carbon::MicroWattHours;
use grid_shared::domain::TaskKind;
use grid_shared::envelope::Envelope;
use grid_shared::ids::{MessageId, NodeId, OrganizationId, OwnerId, TaskId};
use grid_shared::signals::Zone;
use grid_shared::wire::StreamEntryId;
use sqlx::PgPool;

use crate::model::batch::PurgeTargets;
use crate::model::restore::{Quarantined, Restore, StoredNode, StoredTask};
use crate::model::{Rules, State, TaskResult};
use crate::store::postgres::keyed_read;

/// Rebuilds the writer's state ([`Restore`]): organisations and keys, nodes, consent, every
/// open task with its pending results, the chain head and the next event seq; with the tasks
/// whose rows contradict themselves, quarantined. Live state comes from Redis.
pub async fn load_state(
    pool: &PgPool,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<(State, Vec<Quarantined>), sqlx::Error> {
    let cell = rules.cell.as_str();
    let mut restore = Restore::new(rules, now);
    let organizations: Vec<uuid::Uuid> =
        sqlx::query_scalar!("select organization_id from organization").fetch_all(pool).await?;
    for organization_id in organizations {
        restore.organization(OrganizationId(organization_id));
    }
    let keys = sqlx::query!(r#"select key_hash, organization_id, revoked_at is null as "active!" from api_key"#)
        .fetch_all(pool)
        .await?;
    for key in keys {
        restore.api_key(key.key_hash, OrganizationId(key.organization_id), key.active);
    }
    let nodes = sqlx::query!(
        "select node_id, organization_id, cpu_cores, trust, token_hash, zone, embodied_g_co2e from node
         where cell_id = $1",
        cell
    )
    .fetch_all(pool)
    .await?;
    for node in nodes {
        restore.node(StoredNode {
            node_id: NodeId(node.node_id),
            owner_id: OrganizationId(node.organization_id),
            cpu_cores: node.cpu_cores,
            trust: node.trust,
            token_hash: node.token_hash,
            // The column's check admits only zone ids; anything else would be the default zone.
            zone: node.zone.and_then(|zone| Zone::parse(&zone).ok()),
            embodied_g: node.embodied_g_co2e,
        });
    }
    let consent = sqlx::query!("select organization_id, owner_id from consent where granted").fetch_all(pool).await?;
    for row in consent {
        restore.consent(OrganizationId(row.organization_id), OwnerId(row.owner_id));
    }
    load_open_tasks(pool, cell, |task| restore.task(task)).await?;
    let (height, head_hash, leaves) = load_chain(pool, cell).await?;
    restore.chain(height, &head_hash, leaves);
    let last_seq = sqlx::query_scalar!(r#"select coalesce(max(seq), 0) as "seq!" from event where cell_id = $1"#, cell)
        .fetch_one(pool)
        .await?;
    restore.last_seq(last_seq);
    Ok(restore.finish())
}

/// The cell's proof chain head (its last block, else its last `kgp1` link, else the genesis
/// hash) and the leaves credited but not sealed yet.
async fn load_chain(
    pool: &PgPool,
    cell: &str,
) -> Result<(i64, String, Vec<(i64, grid_shared::merkle::Hash)>), sqlx::Error> {
    let block =
        sqlx::query!("select height, hash from proof_block where cell_id = $1 order by height desc limit 1", cell)
            .fetch_optional(pool)
            .await?;
    let (height, head_hash) = match block {
        Some(block) => (block.height, block.hash),
        None => {
            let link: Option<String> =
                sqlx::query_scalar!("select hash from green_proof where cell_id = $1 order by seq desc limit 1", cell)
                    .fetch_optional(pool)
                    .await?;
            (0, link.unwrap_or_else(|| grid_shared::proof::GENESIS_HASH.to_owned()))
        }
    };
    let pending = sqlx::query!(
        "select block_height, leaf_hash from proof_leaf where cell_id = $1 and block_height > $2
         order by block_height, leaf_index",
        cell,
        height
    )
    .fetch_all(pool)
    .await?;
    let leaves = pending.into_iter().map(|leaf| {
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(&leaf.leaf_hash, &mut bytes).map(|()| (leaf.block_height, bytes))
    });
    let leaves = leaves.collect::<Result<Vec<_>, _>>().map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
    Ok((height, head_hash, leaves))
}

/// Every task not final, with its pending results, handed to `take` one by one (rows are
/// streamed, not gathered: 100,000 queued tasks must not cost their rows and their state at
/// once). Thermal inputs are small and kept; group inputs are read back when placed.
async fn load_open_tasks(pool: &PgPool, cell: &str, mut take: impl FnMut(StoredTask)) -> Result<(), sqlx::Error> {
    use futures_util::TryStreamExt;
    let results = sqlx::query!(
        "select r.task_id, r.attempt, r.node_id, r.owner_id, r.result_hash, r.energy_uwh, r.solar_uwh, r.refusal
         from task_result r join task t using (cell_id, task_id)
         where r.cell_id = $1 and t.finished_at is null and r.verdict = 'pending' order by r.task_id, r.attempt",
        cell
    )
    .fetch_all(pool)
    .await?;
    let mut pending: HashMap<TaskId, Vec<TaskResult>> = HashMap::new();
    for row in results {
        pending.entry(TaskId(row.task_id)).or_default().push(TaskResult {
            attempt: row.attempt,
            node_id: NodeId(row.node_id),
            owner_id: OrganizationId(row.owner_id),
            result_hash: row.result_hash,
            energy: MicroWattHours(row.energy_uwh),
            solar: MicroWattHours(row.solar_uwh),
            refusal: row.refusal,
        });
    }
    let mut rows = sqlx::query!(
        r#"select task_id, organization_id, status, priority, deadline, submitted_at, attempts, node_id, assigned_at,
             started_at, not_before, reason, replicas, quorum, result_limit, correlation_id, assignment_seq,
             submitted_entry_id,
             case when kind_type = 'building_thermal_simulation' then kind end as small_kind,
             case when kind_type = 'energy_group_optimisation' then
                 array(select distinct (participant ->> 'owner_id')::uuid
                       from jsonb_array_elements(kind -> 'participants') participant)
             else '{}'::uuid[] end as "participants!"
         from task where cell_id = $1 and finished_at is null and status in ('queued', 'assigned', 'running')"#,
        cell
    )
    .fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let task_id = TaskId(row.task_id);
        let input = row
            .small_kind
            .and_then(|kind| serde_json::from_value::<TaskKind>(kind).ok())
            .map(|kind| Arc::new(kind.anonymised()));
        let mut participants: Vec<OwnerId> = row.participants.into_iter().map(OwnerId).collect();
        participants.sort();
        take(StoredTask {
            task_id,
            organization_id: OrganizationId(row.organization_id),
            status: row.status,
            priority: row.priority,
            deadline: row.deadline,
            submitted_at: row.submitted_at,
            attempts: row.attempts,
            node_id: row.node_id.map(NodeId),
            assigned_at: row.assigned_at,
            started_at: row.started_at,
            not_before: row.not_before,
            reason: row.reason,
            replicas: row.replicas,
            quorum: row.quorum,
            result_limit: row.result_limit,
            correlation_id: row.correlation_id,
            participants,
            input,
            assignment_seq: row.assignment_seq,
            submitted_entry_id: row.submitted_entry_id,
            results: pending.remove(&task_id).unwrap_or_default(),
        });
    }
    Ok(())
}

/// Which of these message ids the cell applied already, and which of these task ids have a row
/// in it (one round trip for both).
pub async fn already_known(
    pool: &PgPool,
    cell: &str,
    message_ids: &[MessageId],
    task_ids: &[TaskId],
) -> Result<(HashSet<MessageId>, HashSet<TaskId>), sqlx::Error> {
    let messages: Vec<uuid::Uuid> = message_ids.iter().map(MessageId::as_uuid).collect();
    let tasks: Vec<uuid::Uuid> = task_ids.iter().map(TaskId::as_uuid).collect();
    let mut transaction = keyed_read(pool).await?;
    let rows = sqlx::query!(
        r#"select true as "is_message!", message_id as "id!" from processed_message
            where cell_id = $3 and message_id = any($1)
         union all
         select false, task_id from task where cell_id = $3 and task_id = any($2)"#,
        &messages,
        &tasks,
        cell
    )
    .fetch_all(&mut *transaction)
    .await?;
    transaction.commit().await?;
    let mut applied = HashSet::new();
    let mut existing = HashSet::new();
    for row in rows {
        if row.is_message {
            applied.insert(MessageId(row.id));
        } else {
            existing.insert(TaskId(row.id));
        }
    }
    Ok((applied, existing))
}

/// Of `organizations` and `consents`, those PostgreSQL holds: the organisations that exist and
/// the consents granted (what the default cell's writer committed; see
/// [`crate::writer::decide::organisation_level_needs`]).
pub async fn organisation_level(
    pool: &PgPool,
    organizations: &[OrganizationId],
    consents: &[(OrganizationId, OwnerId)],
) -> Result<(Vec<OrganizationId>, Vec<(OrganizationId, OwnerId)>), sqlx::Error> {
    let wanted: Vec<uuid::Uuid> = organizations.iter().map(OrganizationId::as_uuid).collect();
    let known: Vec<uuid::Uuid> =
        sqlx::query_scalar!("select organization_id from organization where organization_id = any($1)", &wanted)
            .fetch_all(pool)
            .await?;
    let (consent_organizations, owners): (Vec<uuid::Uuid>, Vec<uuid::Uuid>) =
        consents.iter().map(|(organization_id, owner_id)| (organization_id.as_uuid(), owner_id.as_uuid())).unzip();
    let granted = sqlx::query!(
        "select c.organization_id, c.owner_id from consent c
           join unnest($1::uuid[], $2::uuid[]) as wanted(organization_id, owner_id)
             on c.organization_id = wanted.organization_id and c.owner_id = wanted.owner_id
          where c.granted",
        &consent_organizations,
        &owners
    )
    .fetch_all(pool)
    .await?;
    Ok((
        known.into_iter().map(OrganizationId).collect(),
        granted
            .into_iter()
            .map(|consent| (OrganizationId(consent.organization_id), OwnerId(consent.owner_id)))
            .collect(),
    ))
}

/// What PostgreSQL holds of an owner's data in an organisation (see [`PurgeTargets`]).
pub async fn purge_targets(
    pool: &PgPool,
    cell: &str,
    organization_id: OrganizationId,
    owner_id: OwnerId,
) -> Result<PurgeTargets, sqlx::Error> {
    let rows = sqlx::query!(
        "select task_id, submitted_entry_id from task
         where cell_id = $3 and organization_id = $1 and kind_type = 'energy_group_optimisation'
           and jsonb_path_query_array(kind, '$.participants[*].owner_id') @> jsonb_build_array($2::text)",
        organization_id.as_uuid(),
        owner_id.to_string(),
        cell
    )
    .fetch_all(pool)
    .await?;
    let task_ids: Vec<uuid::Uuid> = rows.iter().map(|row| row.task_id).collect();
    let assignments = if task_ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query!(
            r#"select seq, node_id as "node_id!" from event where cell_id = $2 and task_id = any($1)
               and event_type = 'TaskAssigned' and node_id is not null"#,
            &task_ids,
            cell
        )
        .fetch_all(pool)
        .await?
    };
    Ok(PurgeTargets {
        task_ids: task_ids.into_iter().map(TaskId).collect(),
        submissions: rows.into_iter().filter_map(|row| row.submitted_entry_id).collect(),
        assignments: assignments
            .into_iter()
            .map(|event| (NodeId(event.node_id), StreamEntryId::of_event(event.seq).to_string()))
            .collect(),
    })
}

/// Group tasks whose participants' consent PostgreSQL no longer holds (a consent changed
/// behind the writer's back: a restore, a manual fix). Checked before they are placed.
pub async fn consent_withdrawn(
    pool: &PgPool,
    tasks: &[(TaskId, OrganizationId, Vec<OwnerId>)],
) -> Result<HashSet<TaskId>, sqlx::Error> {
    let mut task_ids = Vec::new();
    let mut organizations = Vec::new();
    let mut owners = Vec::new();
    for (task_id, organization_id, participants) in tasks {
        for owner in participants {
            task_ids.push(task_id.as_uuid());
            organizations.push(organization_id.as_uuid());
            owners.push(owner.as_uuid());
        }
    }
    if task_ids.is_empty() {
        return Ok(HashSet::new());
    }
    let blocked = sqlx::query_scalar!(
        r#"select distinct wanted.task_id as "task_id!"
           from unnest($1::uuid[], $2::uuid[], $3::uuid[]) as wanted(task_id, organization_id, owner_id)
          where not exists (select 1 from consent c where c.owner_id = wanted.owner_id
                            and c.organization_id = wanted.organization_id and c.granted)"#,
        &task_ids,
        &organizations,
        &owners
    )
    .fetch_all(pool)
    .await?;
    Ok(blocked.into_iter().map(TaskId).collect())
}

/// An event as stored, for republishing: its seq, type, node to tell, envelope and (for an
/// assignment) the task's kind.
pub struct StoredEvent {
    pub seq: i64,
    pub event_type: String,
    pub node_id: Option<NodeId>,
    pub envelope: String,
    pub kind: Option<serde_json::Value>,
}

/// Up to `limit` of the cell's events after `after_seq`, in order.
pub async fn events_after(
    pool: &PgPool,
    cell: &str,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut transaction = keyed_read(pool).await?;
    let rows = sqlx::query_as!(
        StoredEventRow,
        r#"select e.seq, e.event_type, e.node_id, e.event_id, e.occurred_at, e.organization_id,
             e.envelope::text as "envelope!", t.kind as "kind?"
         from event e
         left join task t on e.node_id is not null and e.event_type = 'TaskAssigned'
             and t.cell_id = e.cell_id and t.task_id = e.task_id
         where e.cell_id = $3 and e.seq > $1 order by e.seq limit $2"#,
        after_seq,
        limit,
        cell
    )
    .fetch_all(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

/// The cell's assignment events of the given seqs (for re-issuing work in flight after Redis
/// lost it).
pub async fn events_at(pool: &PgPool, cell: &str, seqs: &[i64]) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut transaction = keyed_read(pool).await?;
    let rows = sqlx::query_as!(
        StoredEventRow,
        r#"select e.seq, e.event_type, e.node_id, e.event_id, e.occurred_at, e.organization_id,
             e.envelope::text as "envelope!", t.kind as "kind?"
         from event e
         left join task t on t.cell_id = e.cell_id and t.task_id = e.task_id
         where e.cell_id = $2 and e.seq = any($1) order by e.seq"#,
        seqs,
        cell
    )
    .fetch_all(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

/// A row of [`events_after`] and [`events_at`].
struct StoredEventRow {
    seq: i64,
    event_type: String,
    node_id: Option<uuid::Uuid>,
    event_id: uuid::Uuid,
    occurred_at: DateTime<Utc>,
    organization_id: Option<uuid::Uuid>,
    envelope: String,
    kind: Option<serde_json::Value>,
}

impl From<StoredEventRow> for StoredEvent {
    /// The whole envelope again, from the archived text and the row's columns (an archived text
    /// that does not read is republished as it is: its readers dead-letter it with the reason).
    fn from(row: StoredEventRow) -> Self {
        let envelope = Envelope::from_archive(
            MessageId(row.event_id),
            &row.event_type,
            row.occurred_at,
            row.organization_id.map(OrganizationId),
            &row.envelope,
        )
        .unwrap_or_else(|error| {
            tracing::error!(seq = row.seq, %error, "an archived envelope does not read; republished as archived");
            row.envelope
        });
        StoredEvent {
            seq: row.seq,
            event_type: row.event_type,
            node_id: row.node_id.map(NodeId),
            envelope,
            kind: row.kind,
        }
    }
}

/// The SHA-256 of API keys revoked within the last `seconds`.
pub async fn recently_revoked_keys(pool: &PgPool, seconds: u64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "select key_hash from api_key where revoked_at > now() - make_interval(secs => $1::double precision)",
        seconds as f64
    )
    .fetch_all(pool)
    .await
}

/// How far the cell's events were published to Redis, as its last writer recorded it (0 for a
/// cell that has none yet).
pub async fn relay_cursor(pool: &PgPool, cell: &str) -> Result<i64, sqlx::Error> {
    let cursor =
        sqlx::query_scalar!("select last_seq from relay_cursor where cell_id = $1", cell).fetch_optional(pool).await?;
    Ok(cursor.unwrap_or(0))
}
