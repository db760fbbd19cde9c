//! The writer's lease: a PostgreSQL session advisory lock held on a connection of its own, and
//! the `writer` row's epoch, incremented by each new holder.
//!
//! The lock makes one process the active writer; it is released when that process's session
//! ends, by exit, crash or `kill -9` (PostgreSQL sees the connection close), and a standby
//! blocked on it takes it at once. The epoch fences: every write transaction first reads the
//! `writer` row `for share` and checks the epoch it holds, so a writer that lost its lock
//! without noticing (its lock connection cut) cannot commit after the next one took over, and
//! the next one's epoch update waits for any such transaction still in flight.

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio_util::sync::CancellationToken;

use crate::store::postgres::PARTITION;

/// The advisory lock key of partition 0's writer ("KG" and 0x10).
pub const WRITER_LOCK: i64 = 0x4B47_0010;

/// The `application_name` of a lease's session: this prefix, then the process's name.
pub const APPLICATION_PREFIX: &str = "grid-orchestrator:";

pub struct Lease {
    connection: PgConnection,
    pub epoch: i64,
}

impl Lease {
    /// Waits until this process holds the lease (or `shutdown`); returns it with its new epoch.
    pub async fn acquire(
        pool: &PgPool,
        holder: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, sqlx::Error> {
        let connection: PoolConnection<Postgres> = pool.acquire().await?;
        // The lock lives as long as this session: the connection leaves the pool for good.
        let mut connection = connection.detach();
        // Named, so that an operator (and `GET /v1/operations`) sees who holds the lock and who
        // waits on it: `pg_stat_activity.application_name` beside `pg_locks`.
        sqlx::query("select set_config('application_name', $1, false)")
            .bind(format!("{APPLICATION_PREFIX}{holder}"))
            .execute(&mut connection)
            .await?;
        let locked = tokio::select! {
            locked = sqlx::query("select pg_advisory_lock($1)").bind(WRITER_LOCK + i64::from(PARTITION)).execute(&mut connection) => locked,
            () = shutdown.cancelled() => return Ok(None),
        };
        locked?;
        let epoch: i64 = sqlx::query_scalar(
            "update writer set epoch = epoch + 1, holder = $2, since = now() where partition = $1 returning epoch",
        )
        .bind(PARTITION)
        .bind(holder)
        .fetch_one(&mut connection)
        .await?;
        Ok(Some(Self { connection, epoch }))
    }

    /// Whether the lock's session is still alive (if it is not, another process may hold the
    /// lock by now).
    pub async fn alive(&mut self) -> bool {
        sqlx::query("select 1").execute(&mut self.connection).await.is_ok()
    }

    /// Gives the lease up at once (a standby takes it), instead of when the process exits.
    pub async fn release(mut self) {
        let _ = sqlx::query("select pg_advisory_unlock($1)")
            .bind(WRITER_LOCK + i64::from(PARTITION))
            .execute(&mut self.connection)
            .await;
    }
}
