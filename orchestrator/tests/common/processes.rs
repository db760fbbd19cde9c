//! Real processes for the tests that kill them: orchestrator binaries (`kill -9`, injected
//! aborts) and a Redis server of the test's own (flushed or stopped without touching the
//! shared one).

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;

use super::eventually;

/// The test database's URL: the server of `DATABASE_URL`, the database of `pool`.
pub fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for sqlx::test");
    let database = pool.connect_options().get_database().expect("sqlx::test names its database").to_owned();
    match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{database}"),
        None => format!("{base}/{database}"),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("bound").port()
}

fn log_file(name: &str) -> std::fs::File {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-logs");
    std::fs::create_dir_all(&directory).expect("the log directory");
    std::fs::File::create(directory.join(format!("{name}.log"))).expect("a log file")
}

/// An orchestrator binary, killed (SIGKILL) when dropped.
pub struct Orchestrator {
    pub name: String,
    pub admin: String,
    child: Child,
    http: reqwest::Client,
}

impl Orchestrator {
    /// Starts `target/…/orchestrator run` with the test's settings (and `extra` ones).
    pub fn start(name: &str, settings: &std::collections::HashMap<String, String>, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let admin = format!("127.0.0.1:{port}");
        let log = log_file(name);
        let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        command.arg("run").stdout(Stdio::from(log.try_clone().expect("log"))).stderr(Stdio::from(log));
        command.envs(settings.iter());
        command.env("GRID_CONSUMER_NAME", name).env("GRID_ADMIN_LISTEN", &admin).env("RUST_LOG", "info");
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command.spawn().expect("the orchestrator binary starts");
        Self { name: name.to_owned(), admin, child, http: reqwest::Client::new() }
    }

    /// What `/readyz` answers, when it answers.
    pub async fn readiness(&self) -> Option<Value> {
        let response = self.http.get(format!("http://{}/readyz", self.admin)).send().await.ok()?;
        response.json().await.ok()
    }

    /// Waits until `/readyz` reports this role (`writer` or `standby`).
    pub async fn wait_for_role(&self, role: &str, limit: Duration) -> Value {
        eventually(limit, &format!("{} to be {role}", self.name), || async {
            let readiness = self.readiness().await?;
            (readiness["role"] == role && readiness["status"] == "ready").then_some(readiness)
        })
        .await
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.child.kill().expect("the orchestrator can be killed");
        let _ = self.child.wait();
    }

    /// Waits until the process exits by itself; its exit status.
    pub async fn exited(&mut self, limit: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "{} did not exit in {limit:?}", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` of the test's own, on a free port, keeping nothing on disk.
pub struct PrivateRedis {
    pub url: String,
    child: Child,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// Stops it (as a crash would), then starts an empty one on the same port.
    pub async fn restart_empty(&mut self) {
        self.stop();
        let port: u16 = self.url.rsplit(':').next().and_then(|port| port.parse().ok()).expect("a port");
        *self = Self::start_on(port).await;
    }

    /// Stops it: clients get connection errors until it is back.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn start_on(port: u16) -> Self {
        let directory = std::env::temp_dir().join(format!("grid-redis-{port}"));
        std::fs::create_dir_all(&directory).expect("a directory for redis");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&directory)
            .stdout(Stdio::from(log_file(&format!("redis-{port}"))))
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (the tests that lose Redis start their own)");
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).expect("a redis url");
        eventually(Duration::from_secs(10), "the private redis to answer", || async {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
        })
        .await;
        Self { url, child }
    }

    /// `FLUSHALL`: Redis loses everything, as after a restart without persistence.
    pub async fn flush_all(&self) {
        let client = redis::Client::open(self.url.as_str()).expect("a redis url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("the private redis answers");
        redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.expect("flushed");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
