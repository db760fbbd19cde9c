//! A Redis Cluster of three masters of the test's own (`redis-server --cluster-enabled yes` on
//! free ports, joined by `redis-cli --cluster create`), killed when dropped. The shared Redis is
//! never touched.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::eventually;

pub struct LocalCluster {
    pub ports: Vec<u16>,
    servers: Vec<Child>,
    dir: std::path::PathBuf,
}

/// A port that is free, and whose cluster bus port (+10000) is free too.
fn free_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl LocalCluster {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("grid-cluster-{}", uuid::Uuid::new_v4().simple()));
        let mut ports = Vec::new();
        let mut servers = Vec::new();
        while ports.len() < 3 {
            let port = free_port();
            if ports.contains(&port) {
                continue;
            }
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("a directory for the node");
            let server = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts (Debian's redis-server)");
            servers.push(server);
            ports.push(port);
        }
        let cluster = Self { ports, servers, dir };
        for port in &cluster.ports {
            let url = format!("redis://127.0.0.1:{port}");
            eventually(Duration::from_secs(10), "a cluster node to answer", || async {
                let client = redis::Client::open(url.as_str()).ok()?;
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
            })
            .await;
        }
        let addresses: Vec<String> = cluster.ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .arg("--cluster-yes")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(created.success(), "redis-cli --cluster create failed");
        for port in &cluster.ports {
            let url = format!("redis://127.0.0.1:{port}");
            eventually(Duration::from_secs(20), "the cluster to be ok on every node", || async {
                let client = redis::Client::open(url.as_str()).ok()?;
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await.ok()?;
                info.contains("cluster_state:ok").then_some(())
            })
            .await;
        }
        cluster
    }

    /// `REDIS_CLUSTER_NODES`.
    pub fn nodes(&self) -> String {
        self.ports.iter().map(|port| format!("127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
    }

    /// A plain connection to one master.
    pub async fn master(&self, port: u16) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("an address");
        client.get_multiplexed_async_connection().await.expect("the master answers")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
