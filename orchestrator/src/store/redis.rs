//! Redis: connections, the live state of nodes, and the atomic capacity claims.

use std::collections::HashMap;

use deadpool_redis::{Manager, Pool};
use grid_shared::ids::{NodeId, TaskId};
use grid_shared::keys::Keys;
use redis::AsyncConnectionConfig;

use crate::scheduler::LiveNode;

/// A pool whose connections never time a reply out: the redis crate's default of 500 ms would
/// fail every blocking read, and a slow reply is better than a lost acknowledgement.
pub fn pool(redis_url: &str, max_size: usize) -> Result<Pool, String> {
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    let manager = Manager::new_with_config(redis_url, config).map_err(|error| format!("REDIS_URL: {error}"))?;
    Pool::builder(manager).max_size(max_size).build().map_err(|error| error.to_string())
}

/// A connection of its own for `XREADGROUP ... BLOCK`, which would stall other commands
/// multiplexed on a shared one.
pub async fn blocking_connection(redis_url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(redis_url)?;
    client.get_multiplexed_async_connection_with_config(&AsyncConnectionConfig::new().set_response_timeout(None)).await
}

/// Reads a node's live state from its hash; `None` when a field is missing or not a number.
fn parse_live_node(
    node_id: NodeId,
    expires_at_ms: i64,
    fields: &HashMap<String, String>,
    claimed: u32,
) -> Option<LiveNode> {
    let number = |name: &str| fields.get(name).and_then(|value| value.parse::<f64>().ok()).filter(|v| v.is_finite());
    Some(LiveNode {
        node_id,
        expires_at: chrono::DateTime::from_timestamp_millis(expires_at_ms)?,
        cpu_cores: fields.get("cpu_cores")?.parse().ok()?,
        claimed,
        solar_watts: number("solar_watts")?,
        cpu_usage: number("cpu_usage")?,
        eco_score: number("eco_score")?,
    })
}

/// Nodes whose state has not expired, read without scanning keys: the `nodes:alive` index holds
/// each node's expiry time.
pub async fn live_nodes(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &Keys,
    now_ms: i64,
) -> redis::RedisResult<Vec<LiveNode>> {
    let scored: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(keys.nodes_alive())
        .arg(now_ms)
        .arg("+inf")
        .arg("BYSCORE")
        .arg("WITHSCORES")
        .query_async(conn)
        .await?;
    let (node_ids, expiries): (Vec<NodeId>, Vec<i64>) =
        scored.iter().filter_map(|(id, score)| Some((id.parse::<NodeId>().ok()?, *score as i64))).unzip();
    if node_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for node_id in &node_ids {
        pipe.cmd("HGETALL").arg(keys.node_state(*node_id));
        pipe.cmd("SCARD").arg(keys.node_claims(*node_id));
    }
    let replies: Vec<redis::Value> = pipe.query_async(conn).await?;
    let mut nodes = Vec::with_capacity(node_ids.len());
    for ((node_id, expires_at_ms), pair) in node_ids.into_iter().zip(expiries).zip(replies.chunks(2)) {
        let fields: HashMap<String, String> = redis::from_redis_value(pair[0].clone()).unwrap_or_default();
        let claimed: u32 = redis::from_redis_value(pair[1].clone()).unwrap_or(0);
        // An empty hash is a node that expired since the index was read.
        if let Some(node) = parse_live_node(node_id, expires_at_ms, &fields, claimed) {
            nodes.push(node);
        }
    }
    Ok(nodes)
}

/// Claims one core of a live node for a task, atomically: no two orchestrators can overfill a
/// node. Claiming again for the same task succeeds without taking a second core.
const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 1 end
local cores = tonumber(redis.call('HGET', KEYS[1], 'cpu_cores') or '0')
if redis.call('SCARD', KEYS[2]) >= cores then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Taken,
    NodeFull,
    NodeOffline,
}

/// Claims a core for each (node, task) pair in one round trip; each claim is one atomic
/// script run, and they run in the order given.
pub async fn claim_cores(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &Keys,
    wanted: &[(NodeId, TaskId)],
) -> redis::RedisResult<Vec<Claim>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let script = redis::Script::new(CLAIM);
    redis::cmd("SCRIPT").arg("LOAD").arg(CLAIM).query_async::<String>(&mut *conn).await?;
    let mut pipe = redis::pipe();
    for (node_id, task_id) in wanted {
        pipe.cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(2)
            .arg(keys.node_state(*node_id))
            .arg(keys.node_claims(*node_id))
            .arg(task_id.to_string());
    }
    let answers: Vec<i64> = pipe.query_async(conn).await?;
    Ok(answers
        .into_iter()
        .map(|answer| match answer {
            1 => Claim::Taken,
            0 => Claim::NodeFull,
            _ => Claim::NodeOffline,
        })
        .collect())
}

/// Gives a task's core back. Idempotent: releasing twice frees one core once.
pub async fn release_core(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &Keys,
    node_id: NodeId,
    task_id: TaskId,
) -> redis::RedisResult<()> {
    redis::cmd("SREM").arg(keys.node_claims(node_id)).arg(task_id.to_string()).query_async::<()>(conn).await
}

/// Nodes whose state expired (by the index), for the requeue of their tasks.
pub async fn expired_nodes(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &Keys,
    now_ms: i64,
) -> redis::RedisResult<Vec<NodeId>> {
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys.nodes_alive())
        .arg("-inf")
        .arg(format!("({now_ms}"))
        .arg("BYSCORE")
        .query_async(conn)
        .await?;
    Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
}

/// Drops a node from the index, unless a heartbeat renewed it meanwhile.
const FORGET_IF_EXPIRED: &str = r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) < tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) return 1 end
return 0
";

pub async fn forget_expired_node(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &Keys,
    node_id: NodeId,
    now_ms: i64,
) -> redis::RedisResult<bool> {
    let removed: i64 = redis::Script::new(FORGET_IF_EXPIRED)
        .key(keys.nodes_alive())
        .arg(node_id.to_string())
        .arg(now_ms)
        .invoke_async(conn)
        .await?;
    Ok(removed == 1)
}

/// Records a task that failed for good on the dead-letter stream, with the reason.
pub async fn dead_letter_task(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &Keys,
    task_id: TaskId,
    attempts: i32,
    reason: &str,
) -> redis::RedisResult<()> {
    redis::cmd("XADD")
        .arg(keys.dead_letters())
        .arg("*")
        .arg("stream")
        .arg("tasks")
        .arg("entry_id")
        .arg(task_id.to_string())
        .arg("type")
        .arg("TASK:FAILED")
        .arg("reason")
        .arg(reason)
        .arg("deliveries")
        .arg(attempts)
        .query_async::<()>(conn)
        .await
}
