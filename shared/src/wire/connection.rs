//! One Redis server (`REDIS_URL`) or a Redis Cluster (`REDIS_CLUSTER_NODES`), behind one type.
//!
//! Every command, pipeline, MULTI and script of the grid touches the keys of one cell, under
//! one hash tag ([`super::Keys`]): on a cluster each goes, whole, to the master of that slot (the
//! `redis` crate's cluster client routes a pipeline by its keys and refuses one that would cross
//! slots). The shared connections time replies out only when asked ([`Redis::open`]'s
//! `response_timeout`: the gateway answers 503 rather than wait, the writer waits, since a slow
//! reply is better than a lost acknowledgement); dedicated ones never do, so that a blocking
//! read waits as long as it asked.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server, by its URL.
    Server(String),
    /// A cluster, by the addresses (`host:port`) of some of its nodes; the client finds the rest.
    Cluster(Vec<String>),
}

impl Target {
    /// `REDIS_CLUSTER_NODES` (`host:port,host:port,...`) when set and not empty, else `REDIS_URL`.
    pub fn from_settings(redis_url: &str, cluster_nodes: Option<&str>) -> Result<Self, String> {
        let Some(nodes) = cluster_nodes.map(str::trim).filter(|nodes| !nodes.is_empty()) else {
            return Ok(Self::Server(redis_url.to_owned()));
        };
        let mut addresses = Vec::new();
        for node in nodes.split(',').map(str::trim).filter(|node| !node.is_empty()) {
            let (host, port) =
                node.rsplit_once(':').ok_or_else(|| format!("{node:?} must be host:port, such as 10.0.0.5:7000"))?;
            if host.is_empty() || port.parse::<u16>().map_or(true, |port| port == 0) {
                return Err(format!("{node:?} must be host:port, such as 10.0.0.5:7000"));
            }
            addresses.push(format!("redis://{node}"));
        }
        Ok(Self::Cluster(addresses))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

/// A handle on Redis that hands out connections: from a pool of multiplexed connections to one
/// server, or clones of one multiplexed cluster connection.
#[derive(Clone)]
pub struct Redis {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Server { pool: deadpool_redis::Pool, client: redis::Client },
    Cluster(std::sync::Arc<Cluster>),
}

struct Cluster {
    /// For the shared connection (with the response timeout asked for), and for dedicated ones
    /// (without).
    client: ClusterClient,
    blocking: ClusterClient,
    shared: tokio::sync::OnceCell<ClusterConnection>,
}

impl Redis {
    /// A handle on `target`, whose shared connections time a reply (and a connection attempt)
    /// out after `response_timeout` (`None`: never); no connection is made until one is asked for.
    pub fn open(target: &Target, pool_size: usize, response_timeout: Option<Duration>) -> RedisResult<Self> {
        let inner = match target {
            Target::Server(url) => {
                let config = AsyncConnectionConfig::new()
                    .set_response_timeout(response_timeout)
                    .set_connection_timeout(response_timeout);
                let manager = deadpool_redis::Manager::new_with_config(url.as_str(), config)?;
                let pool = deadpool_redis::Pool::builder(manager)
                    .max_size(pool_size)
                    .build()
                    .map_err(|error| std::io::Error::other(error.to_string()))?;
                Inner::Server { pool, client: redis::Client::open(url.as_str())? }
            }
            Target::Cluster(nodes) => {
                let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str));
                if let Some(timeout) = response_timeout {
                    builder = builder.response_timeout(timeout).connection_timeout(timeout);
                }
                // The builder's default: no response timeout.
                let blocking = ClusterClientBuilder::new(nodes.iter().map(String::as_str)).build()?;
                Inner::Cluster(std::sync::Arc::new(Cluster {
                    client: builder.build()?,
                    blocking,
                    shared: tokio::sync::OnceCell::new(),
                }))
            }
        };
        Ok(Self { inner })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(_))
    }

    /// A connection for commands that do not block.
    pub async fn get(&self) -> RedisResult<Conn> {
        match &self.inner {
            Inner::Server { pool, .. } => {
                pool.get().await.map(Conn::Pooled).map_err(|error| std::io::Error::other(error.to_string()).into())
            }
            // Made once (a failed attempt is tried again by the next request); clones share it.
            Inner::Cluster(cluster) => {
                let shared = cluster.shared.get_or_try_init(|| cluster.client.get_async_connection()).await?;
                Ok(Conn::Cluster(shared.clone()))
            }
        }
    }

    /// A connection of its own, for `XREAD ... BLOCK` and `XREADGROUP ... BLOCK`, which would
    /// stall the other commands multiplexed on a shared one.
    pub async fn dedicated(&self) -> RedisResult<Conn> {
        match &self.inner {
            Inner::Server { client, .. } => {
                let config = AsyncConnectionConfig::new().set_response_timeout(None);
                Ok(Conn::Single(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            Inner::Cluster(cluster) => Ok(Conn::Cluster(cluster.blocking.get_async_connection().await?)),
        }
    }
}

/// A connection to the server or the cluster.
pub enum Conn {
    Pooled(deadpool_redis::Connection),
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, command: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Pooled(connection) => connection.req_packed_command(command),
            Self::Single(connection) => connection.req_packed_command(command),
            Self::Cluster(connection) => connection.req_packed_command(command),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Pooled(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Pooled(connection) => connection.get_db(),
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_are_host_and_port_pairs() {
        assert_eq!(Target::from_settings("redis://x:6379", None).unwrap(), Target::Server("redis://x:6379".into()));
        assert_eq!(
            Target::from_settings("redis://x:6379", Some(" ")).unwrap(),
            Target::Server("redis://x:6379".into())
        );
        assert_eq!(
            Target::from_settings("redis://x:6379", Some("10.0.0.5:7000, 10.0.0.6:7001")).unwrap(),
            Target::Cluster(vec!["redis://10.0.0.5:7000".into(), "redis://10.0.0.6:7001".into()])
        );
        for bad in ["10.0.0.5", ":7000", "h:0", "h:port", "h:70000"] {
            assert!(Target::from_settings("redis://x", Some(bad)).is_err(), "{bad}");
        }
    }
}
