//! What a run reads off the grid besides its own timings: PostgreSQL's counters, Redis's
//! footprint of the grid's namespace, the machine.

use super::*;

/// What PostgreSQL wrote so far: WAL bytes and WAL flushes (fsyncs, the cluster's), and
/// task-row versions (the scratch database's).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PostgresCounters {
    pub(crate) wal_bytes: f64,
    pub(crate) wal_flushes: f64,
    pub(crate) task_inserts: f64,
    pub(crate) task_updates: f64,
    pub(crate) task_hot_updates: f64,
}

impl std::ops::Sub for PostgresCounters {
    type Output = Self;

    fn sub(self, before: Self) -> Self {
        Self {
            wal_bytes: self.wal_bytes - before.wal_bytes,
            wal_flushes: self.wal_flushes - before.wal_flushes,
            task_inserts: self.task_inserts - before.task_inserts,
            task_updates: self.task_updates - before.task_updates,
            task_hot_updates: self.task_hot_updates - before.task_hot_updates,
        }
    }
}

pub(crate) async fn postgres_counters(pool: &sqlx::PgPool) -> anyhow::Result<PostgresCounters> {
    let (wal_bytes, wal_flushes): (f64, i64) =
        sqlx::query_as("select wal_bytes::float8, wal_sync from pg_stat_wal").fetch_one(pool).await?;
    let (inserted, updated, hot): (i64, i64, i64) =
        sqlx::query_as("select n_tup_ins, n_tup_upd, n_tup_hot_upd from pg_stat_user_tables where relname = 'task'")
            .fetch_one(pool)
            .await?;
    Ok(PostgresCounters {
        wal_bytes,
        wal_flushes: wal_flushes as f64,
        task_inserts: inserted as f64,
        task_updates: updated as f64,
        task_hot_updates: hot as f64,
    })
}

/// What the namespace holds in Redis (its keys' `MEMORY USAGE`, every element counted), the
/// length of each of its streams, and the whole server's memory (shared with whatever else
/// the server holds).
pub(crate) async fn redis_footprint(redis_url: &str, namespace: &str) -> anyhow::Result<RedisFootprint> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    let server = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{namespace}:*"))
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut conn)
            .await?;
        keys.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut bytes: u64 = 0;
    for chunk in keys.chunks(1_000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("MEMORY").arg("USAGE").arg(key).arg("SAMPLES").arg(0);
        }
        let usages: Vec<Option<u64>> = pipe.query_async(&mut conn).await?;
        bytes += usages.into_iter().flatten().sum::<u64>();
    }
    let mut streams = StreamLengths::default();
    for (stream, length) in [
        ("commands", &mut streams.commands),
        ("reports", &mut streams.reports),
        ("events", &mut streams.events),
        ("heartbeats", &mut streams.heartbeats),
        ("dlq", &mut streams.dlq),
    ] {
        *length = redis::cmd("XLEN")
            .arg(format!("{}:{stream}", grid_shared::wire::Keys::new(namespace).map_err(anyhow::Error::msg)?.tag()))
            .query_async(&mut conn)
            .await?;
    }
    Ok(RedisFootprint {
        namespace_mib: bytes as f64 / 1024.0 / 1024.0,
        namespace_keys: keys.len(),
        server_used_memory_mib: server / 1024.0 / 1024.0,
        stream_lengths: streams,
    })
}

pub(crate) async fn machine(database_url: &str) -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:").map(|rest| rest.trim().to_owned()))
        .unwrap_or_default();
    let postgres: String = match sqlx::PgPool::connect(database_url).await {
        Ok(pool) => sqlx::query_scalar("show server_version").fetch_one(&pool).await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let synchronous_commit = match sqlx::PgPool::connect(database_url).await {
        Ok(pool) => {
            sqlx::query_scalar::<_, String>("show synchronous_commit").fetch_one(&pool).await.unwrap_or_default()
        }
        Err(_) => String::new(),
    };
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        memory,
        kernel: command_output("uname", &["-r"]),
        postgresql: postgres,
        postgresql_synchronous_commit: synchronous_commit,
        redis: command_output("redis-server", &["--version"]),
        commit: command_output("git", &["rev-parse", "--short", "HEAD"]),
        uncommitted_changes: !command_output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty(),
    }
}
