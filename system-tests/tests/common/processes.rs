//! Real processes for the tests that kill them: orchestrator binaries (`kill -9`, injected
//! aborts, `SIGSTOP`), a fleet of simulated nodes in a `worker` process of its own, and a Redis
//! server of the test's own (flushed or stopped without touching the shared one).

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

fn log_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-logs").join(format!("{name}.log"))
}

fn log_file(name: &str) -> std::fs::File {
    let path = log_path(name);
    std::fs::create_dir_all(path.parent().expect("a directory")).expect("the log directory");
    std::fs::File::create(path).expect("a log file")
}

/// What a process wrote to its log so far.
pub fn log_of(name: &str) -> String {
    std::fs::read_to_string(log_path(name)).unwrap_or_default()
}

/// Sends a signal to a process (`kill -<signal> <pid>`).
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A binary of the workspace (`orchestrator` of `grid-orchestrator`, `worker` of
/// `grid-worker`), built if it is not up to date (once per test binary): they belong to other
/// packages, so cargo does not hand their paths to these tests. It sits in the profile
/// directory this test binary runs from (`target/debug/deps/..`).
fn binary(package: &str, name: &str) -> std::path::PathBuf {
    let profile_directory = std::env::current_exe()
        .expect("the test's own path")
        .parent()
        .and_then(std::path::Path::parent)
        .expect("tests run from <target>/<profile>/deps")
        .to_owned();
    let profile = match profile_directory.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--profile", &profile, "-p", package, "--bin", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the {name} binary builds");
    profile_directory.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// The `orchestrator` binary (see [`binary`]).
pub fn orchestrator_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| binary("grid-orchestrator", "orchestrator")).clone()
}

/// The `worker` binary (see [`binary`]).
pub fn worker_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| binary("grid-worker", "worker")).clone()
}

/// A fleet of simulated nodes in a `worker simulate` process of its own, killed (SIGKILL) when
/// dropped: `kill -9` is a neighbourhood losing power.
pub struct WorkerFleet {
    child: Child,
}

impl WorkerFleet {
    /// `nodes` nodes of `cores` cores, in sun, each task lasting at least `min_task_ms`.
    pub fn start(name: &str, gateway: &str, api_key: &str, nodes: usize, cores: u16, min_task_ms: u64) -> Self {
        let log = log_file(name);
        let child = Command::new(worker_binary())
            .args(["--gateway", gateway, "simulate", "--api-key", api_key])
            .args(["--nodes", &nodes.to_string(), "--cores", &cores.to_string(), "--solar-fraction", "1"])
            .args(["--constant-solar-watts", "300", "--heartbeat-ms", "200", "--min-task-ms", &min_task_ms.to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the worker binary starts");
        Self { child }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.child.kill().expect("the fleet can be killed");
        let _ = self.child.wait();
    }
}

impl Drop for WorkerFleet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A core kept busy (a spinning thread) until dropped: the machine under load, as the crash
/// was first met.
pub struct BusyCore {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BusyCore {
    pub fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinning = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut x = 0_u64;
            while !spinning.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        });
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for BusyCore {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
        let mut command = Command::new(orchestrator_binary());
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

    /// `kill -STOP`: the process is frozen (its connections stay open, its lease held) until
    /// [`Orchestrator::resume`], as a VM paused or a process swapped out.
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }

    /// Whether it is still running (it did not exit, by a panic or otherwise).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("the child can be waited for").is_none()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        log_of(&self.name)
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

    /// `FLUSHALL` and `SCRIPT FLUSH`: Redis loses everything, its loaded scripts included, as
    /// after a restart without persistence.
    pub async fn flush_all(&self) {
        let client = redis::Client::open(self.url.as_str()).expect("a redis url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("the private redis answers");
        redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.expect("flushed");
        redis::cmd("SCRIPT").arg("FLUSH").query_async::<()>(&mut conn).await.expect("scripts flushed");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
