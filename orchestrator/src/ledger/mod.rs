//! The green-proof chain as stored: read back page by page and verified from the first link.
//! (Credits and their leaves are decided in [`crate::model::lifecycle::credit`], blocks are
//! sealed by the writer, and both are written with a batch by [`crate::store::postgres`].)

mod proofs;

pub use proofs::{load_block_page, load_chain_page, verify_stored_chain};

use grid_shared::proof::ProofLink;
use sqlx::PgConnection;

/// Stores a mined link as it is, without ledger entries (for tools that build a chain, such as
/// the audit bench).
pub async fn insert_link(conn: &mut PgConnection, link: &ProofLink) -> Result<(), sqlx::Error> {
    let draft = &link.draft;
    sqlx::query!(
        "insert into green_proof (seq, task_id, node_id, energy_uwh, solar_uwh, carbon_ng, value_peur,
             created_at, difficulty, prev_hash, nonce, hash)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        draft.seq,
        draft.task_id.as_uuid(),
        draft.node_id.as_uuid(),
        draft.energy.0,
        draft.solar.0,
        draft.carbon.0,
        draft.value.0,
        draft.created_at,
        i16::from(draft.difficulty),
        &draft.prev_hash,
        link.nonce,
        &link.hash
    )
    .execute(conn)
    .await?;
    Ok(())
}
