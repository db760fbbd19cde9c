//! The credit ledger and the green-proof chain, written in the transaction that completes a
//! task. Two entries per credited task (node, cooperative) so that a balance is a sum, and one
//! proof link; both are unique per task in the schema, so a task is never credited twice.

mod proofs;

pub use proofs::{load_chain_page, verify_stored_chain};

use chrono::{DateTime, Utc};
use grid_shared::carbon::{CarbonPolicy, CreditSplit, MicroWattHours};
use grid_shared::ids::{NodeId, TaskId};
use grid_shared::proof::{GENESIS_HASH, ProofDraft, ProofLink, mine, storable_time};
use sqlx::PgConnection;

/// Serialises appends to the chain across orchestrator replicas (taken before the outbox lock).
pub const PROOF_CHAIN_LOCK: i64 = 0x4B47_0002;

pub struct CreditInput {
    pub task_id: TaskId,
    pub node_id: NodeId,
    pub energy: MicroWattHours,
    pub solar: MicroWattHours,
}

pub async fn credit_task(
    conn: &mut PgConnection,
    input: &CreditInput,
    policy: CarbonPolicy,
    difficulty: u8,
    now: DateTime<Utc>,
) -> Result<(CreditSplit, ProofLink), sqlx::Error> {
    let split = policy.credit(input.solar);
    sqlx::query("select pg_advisory_xact_lock($1)").bind(PROOF_CHAIN_LOCK).execute(&mut *conn).await?;
    let head: Option<(i64, String)> = sqlx::query_as("select seq, hash from green_proof order by seq desc limit 1")
        .fetch_optional(&mut *conn)
        .await?;
    let (head_seq, prev_hash) = head.unwrap_or((0, GENESIS_HASH.to_owned()));
    let link = mine(ProofDraft {
        seq: head_seq + 1,
        task_id: input.task_id,
        node_id: input.node_id,
        energy: input.energy,
        solar: input.solar,
        carbon: split.carbon_saved,
        value: split.total,
        created_at: storable_time(now),
        difficulty,
        prev_hash,
    });
    store_link(conn, &link, Some(split)).await?;
    Ok((split, link))
}

/// Stores a mined link as it is.
pub async fn insert_link(conn: &mut PgConnection, link: &ProofLink) -> Result<(), sqlx::Error> {
    store_link(conn, link, None).await
}

/// Stores a link and, with `credits`, the two ledger entries of its task in the same statement.
/// The carbon is the node's contribution; the fund's entry carries money only.
async fn store_link(
    conn: &mut PgConnection,
    link: &ProofLink,
    credits: Option<CreditSplit>,
) -> Result<(), sqlx::Error> {
    const LINK: &str = "insert into green_proof (seq, task_id, node_id, energy_uwh, solar_uwh, carbon_ng, value_peur,
             created_at, difficulty, prev_hash, nonce, hash)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
    const WITH_ENTRIES: &str = "with entries as (
             insert into credit_entry (task_id, account, node_id, carbon_ng, amount_peur)
             values ($2, 'node', $3, $6, $13), ($2, 'cooperative', $3, 0, $14))
         insert into green_proof (seq, task_id, node_id, energy_uwh, solar_uwh, carbon_ng, value_peur,
             created_at, difficulty, prev_hash, nonce, hash)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
    let draft = &link.draft;
    let query = sqlx::query(if credits.is_some() { WITH_ENTRIES } else { LINK })
        .bind(draft.seq)
        .bind(draft.task_id.as_uuid())
        .bind(draft.node_id.as_uuid())
        .bind(draft.energy.0)
        .bind(draft.solar.0)
        .bind(draft.carbon.0)
        .bind(draft.value.0)
        .bind(draft.created_at)
        .bind(i16::from(draft.difficulty))
        .bind(&draft.prev_hash)
        .bind(link.nonce)
        .bind(&link.hash);
    let query = match credits {
        Some(split) => query.bind(split.node_share.0).bind(split.cooperative_share.0),
        None => query,
    };
    query.execute(conn).await?;
    Ok(())
}
