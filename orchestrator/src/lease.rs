//! A cell's writer lease (DESIGN §11): a PostgreSQL session advisory lock keyed by the cell, held
//! on a connection of its own, and the epoch in the cell's `writer` row, incremented by each new
//! holder.
//!
//! The lock makes one process the active writer; it is released when that process's session
//! ends, by exit, crash or `kill -9` (PostgreSQL sees the connection close), and a standby
//! blocked on it takes it at once. The epoch fences: every write transaction first reads the
//! `writer` row `for share` and checks the epoch it holds, so a writer that lost its lock
//! without noticing (its lock connection cut) cannot commit after the next one took over, and
//! the next one's epoch update waits for any such transaction still in flight.

use grid_shared::cells::CellName;
use sha2::{Digest, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio_util::sync::CancellationToken;

/// The advisory lock key of the `main` cell's writer ("KG" and 0x10): the key of the one
/// writer before cells, so that a process of either version excludes the other.
pub const WRITER_LOCK: i64 = 0x4B47_0010;

/// The advisory lock key of a cell's writer: [`WRITER_LOCK`] for `main`, else 63 bits of the
/// SHA-256 of `grid-writer:<cell>` (the same in every process).
pub fn lock_key(cell: &CellName) -> i64 {
    if cell.as_str() == CellName::DEFAULT {
        return WRITER_LOCK;
    }
    let digest = Sha256::digest(format!("grid-writer:{cell}").as_bytes());
    let mut bytes = [0_u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes) & i64::MAX
}

/// The `application_name` of a lease's session: this prefix, then the process's name.
pub const APPLICATION_PREFIX: &str = "grid-orchestrator:";

pub struct Lease {
    connection: PgConnection,
    lock: i64,
    pub epoch: i64,
}

impl Lease {
    /// Waits until this process holds the lease of `cell` (or `shutdown`); returns it with its
    /// new epoch (a cell's `writer` row is made, at epoch 0, and its `relay_cursor` row, at 0,
    /// the first time a writer asks for it).
    pub async fn acquire(
        pool: &PgPool,
        holder: &str,
        cell: &CellName,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, sqlx::Error> {
        let connection: PoolConnection<Postgres> = pool.acquire().await?;
        // The lock lives as long as this session: the connection leaves the pool for good.
        let mut connection = connection.detach();
        // Named, so that an operator (and `GET /v1/operations`) sees who holds the lock and who
        // waits on it: `pg_stat_activity.application_name` beside `pg_locks`.
        // The session statements here read no table and return `void`: they are not macros.
        sqlx::query("select set_config('application_name', $1, false)")
            .bind(format!("{APPLICATION_PREFIX}{holder}"))
            .execute(&mut connection)
            .await?;
        let lock = lock_key(cell);
        let locked = tokio::select! {
            locked = sqlx::query("select pg_advisory_lock($1)").bind(lock).execute(&mut connection) => locked,
            () = shutdown.cancelled() => return Ok(None),
        };
        locked?;
        sqlx::query!(
            "insert into writer (cell_id, epoch, holder, since) values ($1, 0, 'none', now()) on conflict do nothing",
            cell.as_str()
        )
        .execute(&mut connection)
        .await?;
        sqlx::query!(
            "insert into relay_cursor (cell_id, last_seq) values ($1, 0) on conflict do nothing",
            cell.as_str()
        )
        .execute(&mut connection)
        .await?;
        let epoch: i64 = sqlx::query_scalar!(
            "update writer set epoch = epoch + 1, holder = $2, since = now() where cell_id = $1 returning epoch",
            cell.as_str(),
            holder
        )
        .fetch_one(&mut connection)
        .await?;
        Ok(Some(Self { connection, lock, epoch }))
    }

    /// Whether the lock's session is still alive (if it is not, another process may hold the
    /// lock by now).
    pub async fn alive(&mut self) -> bool {
        sqlx::query("select 1").execute(&mut self.connection).await.is_ok()
    }

    /// Gives the lease up at once (a standby takes it), instead of when the process exits.
    pub async fn release(mut self) {
        let _ = sqlx::query("select pg_advisory_unlock($1)").bind(self.lock).execute(&mut self.connection).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cell_has_its_own_lock_and_main_keeps_the_one_before_cells() {
        let main = CellName::default();
        assert_eq!(lock_key(&main), WRITER_LOCK);
        let north = lock_key(&CellName::parse("be-north").unwrap());
        let south = lock_key(&CellName::parse("be-south").unwrap());
        assert!(north >= 0 && south >= 0);
        assert_ne!(north, south);
        assert_eq!(north, lock_key(&CellName::parse("be-north").unwrap()), "the same in every process");
    }
}
