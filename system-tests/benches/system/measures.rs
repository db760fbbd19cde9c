//! What a run reads off the grid besides its own timings: PostgreSQL's counters, Redis's
//! footprint of the grid's namespace, the machine.

use super::*;

/// What PostgreSQL wrote so far: WAL bytes and WAL flushes (fsyncs, the cluster's), and per
/// table of the scratch database the row versions written (inserted, updated, deleted), the
/// updates among them that were HOT, and the index entries they wrote (each insert and each
/// update that was not HOT writes one entry in every index of its table).
#[derive(Debug, Clone)]
pub(crate) struct PostgresCounters {
    pub(crate) wal_bytes: f64,
    pub(crate) wal_flushes: f64,
    pub(crate) wal_records: f64,
    /// Full-page images: the first change to a page after a checkpoint writes the whole page.
    pub(crate) wal_full_pages: f64,
    pub(crate) tables: HashMap<String, TableWrites>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub(crate) struct TableWrites {
    pub(crate) inserts: f64,
    pub(crate) updates: f64,
    pub(crate) hot_updates: f64,
    pub(crate) deletes: f64,
    pub(crate) index_entries: f64,
}

impl TableWrites {
    pub(crate) fn rows(&self) -> f64 {
        self.inserts + self.updates + self.deletes
    }
}

impl std::ops::Sub for PostgresCounters {
    type Output = Self;

    fn sub(self, before: Self) -> Self {
        let tables = self
            .tables
            .into_iter()
            .map(|(table, after)| {
                let was = before.tables.get(&table).copied().unwrap_or_default();
                let writes = TableWrites {
                    inserts: after.inserts - was.inserts,
                    updates: after.updates - was.updates,
                    hot_updates: after.hot_updates - was.hot_updates,
                    deletes: after.deletes - was.deletes,
                    index_entries: after.index_entries - was.index_entries,
                };
                (table, writes)
            })
            .filter(|(_, writes)| *writes != TableWrites::default())
            .collect();
        Self {
            wal_bytes: self.wal_bytes - before.wal_bytes,
            wal_flushes: self.wal_flushes - before.wal_flushes,
            wal_records: self.wal_records - before.wal_records,
            wal_full_pages: self.wal_full_pages - before.wal_full_pages,
            tables,
        }
    }
}

impl PostgresCounters {
    pub(crate) fn table(&self, name: &str) -> TableWrites {
        self.tables.get(name).copied().unwrap_or_default()
    }
}

pub(crate) async fn postgres_counters(pool: &sqlx::PgPool) -> anyhow::Result<PostgresCounters> {
    let (wal_bytes, wal_flushes, wal_records, wal_full_pages): (f64, i64, i64, i64) =
        sqlx::query_as("select wal_bytes::float8, wal_sync, wal_records, wal_fpi from pg_stat_wal")
            .fetch_one(pool)
            .await?;
    let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "select t.relname::text, t.n_tup_ins, t.n_tup_upd, t.n_tup_hot_upd, t.n_tup_del,
                (select count(*) from pg_index i where i.indrelid = t.relid)
           from pg_stat_user_tables t",
    )
    .fetch_all(pool)
    .await?;
    let tables = rows
        .into_iter()
        .map(|(table, inserts, updates, hot, deletes, indexes)| {
            let writes = TableWrites {
                inserts: inserts as f64,
                updates: updates as f64,
                hot_updates: hot as f64,
                deletes: deletes as f64,
                index_entries: ((inserts + updates - hot) * indexes) as f64,
            };
            (table, writes)
        })
        .collect();
    Ok(PostgresCounters {
        wal_bytes,
        wal_flushes: wal_flushes as f64,
        wal_records: wal_records as f64,
        wal_full_pages: wal_full_pages as f64,
        tables,
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
