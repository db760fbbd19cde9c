//! The processes a run starts and measures: services (gateway, orchestrators, workers) from
//! `target/release`, killed when dropped, with their CPU and memory read from `/proc`.

use super::*;

/// The simulated fleet (`worker simulate --instant-results`, every node in the sun): one
/// process, or with `cells` one per cell (`--cell`), the nodes split evenly between them. Each
/// node has one connection (a WebSocket), or with `BENCH_TRANSPORT=http` an event stream and a
/// request per heartbeat and per report.
pub(crate) fn start_fleets(
    gateway_arg: &str,
    api_key: &str,
    nodes: u64,
    cells: &[String],
) -> anyhow::Result<Vec<Service>> {
    const NAMES: [&str; 4] = ["fleet", "fleet-2", "fleet-3", "fleet-4"];
    anyhow::ensure!(cells.len() <= NAMES.len(), "BENCH_CELLS names at most {} cells", NAMES.len());
    let groups: Vec<Option<&str>> =
        if cells.is_empty() { vec![None] } else { cells.iter().map(|cell| Some(cell.as_str())).collect() };
    let transport = std::env::var("BENCH_TRANSPORT").unwrap_or_else(|_| "connection".to_owned());
    let mut fleets = Vec::with_capacity(groups.len());
    for (index, cell) in groups.iter().enumerate() {
        let share = nodes / groups.len() as u64 + u64::from((index as u64) < nodes % groups.len() as u64);
        let share = share.to_string();
        let mut args = vec![
            gateway_arg,
            "simulate",
            "--api-key",
            api_key,
            "--nodes",
            &share,
            "--cores",
            "4",
            "--solar-fraction",
            "1",
            "--constant-solar-watts",
            "400",
            // A real worker's default interval (`worker run --interval 5`).
            "--heartbeat-ms",
            "5000",
            "--instant-results",
            "--transport",
            &transport,
        ];
        if let Some(cell) = cell {
            args.extend(["--cell", cell]);
        }
        fleets.push(Service::start(NAMES[index], "worker", &args, &[("RUST_LOG", "warn".to_owned())])?);
    }
    Ok(fleets)
}

/// The settings of a grid over `scratch` whose gateway listens on `listen` (no rate limit to
/// speak of, warnings logged).
pub(crate) fn grid_env(scratch: &Scratch, listen: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", scratch.database_url.clone()),
        ("REDIS_URL", scratch.redis_url.clone()),
        ("GRID_NAMESPACE", scratch.namespace.clone()),
        ("GRID_OPERATOR_KEY", OPERATOR_KEY.to_owned()),
        ("GATEWAY_LISTEN", listen.to_owned()),
        ("GATEWAY_RATE_LIMIT_PER_SECOND", "1000000".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
}

/// `orchestrator migrate` on the grid of `env`.
pub(crate) fn migrate(env: &[(&str, String)]) -> anyhow::Result<()> {
    let migrated = Command::new(workspace().join("target/release/orchestrator"))
        .arg("migrate")
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .status()?;
    anyhow::ensure!(migrated.success(), "orchestrator migrate failed");
    Ok(())
}

/// The grid's gateway, started and answering at `base`, with an organisation named
/// `organisation` made on it (once the grid knows its key): the gateway and the key.
pub(crate) async fn gateway_with_organisation(
    name: &'static str,
    env: &[(&str, String)],
    http: &reqwest::Client,
    base: &str,
    organisation: &str,
) -> anyhow::Result<(Service, String)> {
    let gateway = Service::start(name, "gateway", &[], env)?;
    support::poll("the gateway", || async {
        let answered = http.get(format!("{base}/healthz")).send().await.ok()?;
        answered.status().is_success().then_some(())
    })
    .await;
    let created: Value = http
        .post(format!("{base}/v1/organizations"))
        .bearer_auth(OPERATOR_KEY)
        .json(&json!({ "name": organisation }))
        .send()
        .await?
        .json()
        .await?;
    let api_key = created["api_key"].as_str().unwrap_or_default().to_owned();
    support::poll("the organisation", || async {
        let answered = http.get(format!("{base}/v1/tasks?limit=1")).bearer_auth(&api_key).send().await.ok()?;
        (answered.status() == 200).then_some(())
    })
    .await;
    Ok((gateway, api_key))
}

/// A child process, killed when dropped.
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
}

impl Service {
    pub(crate) fn start(
        name: &'static str,
        binary: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let logs = workspace().join("target/bench/logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        // `BENCH_GATEWAY_BINARY`: another build of the gateway, to compare it on the same grid.
        let path = match std::env::var("BENCH_GATEWAY_BINARY") {
            Ok(path) if binary == "gateway" => PathBuf::from(path),
            _ => workspace().join("target/release").join(binary),
        };
        let mut command = Command::new(path);
        command.args(args).stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log));
        for (key, value) in env {
            command.env(key, value);
        }
        Ok(Self { name, child: command.spawn()? })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory (VmHWM), in MiB.
    pub(crate) fn peak_rss_mib(&self) -> f64 {
        memory_mib_of(self.pid(), "VmHWM:")
    }

    /// Resident memory now (VmRSS), in MiB.
    pub(crate) fn rss_mib(&self) -> f64 {
        memory_mib_of(self.pid(), "VmRSS:")
    }

    /// User + system CPU time so far, in seconds.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
        let ticks: f64 = [11, 12].iter().filter_map(|index| fields.get(*index)?.parse::<f64>().ok()).sum();
        ticks / clock_ticks_per_second()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds so far of every process whose name is `comm` (PostgreSQL's backends, Redis):
/// the machine's servers, busy with this bench while it runs.
pub(crate) fn cpu_seconds_of(comm: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    let mut ticks = 0.0;
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        if head.split_once('(').map(|(_, name)| name) != Some(comm) {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += [11, 12].iter().filter_map(|index| fields.get(*index)?.parse::<f64>().ok()).sum::<f64>();
    }
    ticks / clock_ticks_per_second()
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// What an orchestrator's `GET /readyz` tells of it (the fields a run reads).
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Readiness {
    pub(crate) status: String,
    pub(crate) role: String,
    pub(crate) queued_tasks: u64,
    pub(crate) batches: u64,
    pub(crate) statements: u64,
    pub(crate) blocks_sealed: u64,
    /// Each cell the process serves, with its role there.
    #[serde(default)]
    pub(crate) cells: Vec<CellReadiness>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct CellReadiness {
    pub(crate) cell: String,
    pub(crate) role: Option<String>,
}

/// An orchestrator process with its admin endpoint.
pub(crate) struct Orchestrator {
    pub(crate) service: Service,
    pub(crate) admin: String,
}

impl Orchestrator {
    pub(crate) fn start(name: &'static str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let admin = format!("127.0.0.1:{}", free_port()?);
        let mut env: Vec<(&str, String)> = env.to_vec();
        env.push(("GRID_CONSUMER_NAME", name.to_owned()));
        env.push(("RUST_LOG", "info".to_owned()));
        env.push(("GRID_ADMIN_LISTEN", admin.clone()));
        Ok(Self { service: Service::start(name, "orchestrator", &["run"], &env)?, admin })
    }

    pub(crate) async fn readiness(&self, http: &reqwest::Client) -> Option<Readiness> {
        http.get(format!("http://{}/readyz", self.admin)).send().await.ok()?.json().await.ok()
    }

    pub(crate) async fn wait_for_role(&self, http: &reqwest::Client, role: &str) -> Readiness {
        support::poll(role, || async {
            let readiness = self.readiness(http).await?;
            (readiness.role == role && readiness.status == "ready").then_some(readiness)
        })
        .await
    }

    /// Waits until the process is ready and holds `role` in `cell`.
    pub(crate) async fn wait_for_cell_role(&self, http: &reqwest::Client, cell: &str, role: &str) {
        support::poll(&format!("{role} of cell {cell}"), || async {
            let readiness = self.readiness(http).await?;
            let held = readiness.cells.iter().any(|each| each.cell == cell && each.role.as_deref() == Some(role));
            (held && readiness.status == "ready").then_some(())
        })
        .await
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A memory figure of a process (`VmRSS:` now, `VmHWM:` its peak) from `/proc`, in MiB.
pub(crate) fn memory_mib_of(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

pub(crate) fn file_size_mib(path: &Path) -> Option<f64> {
    std::fs::metadata(path).ok().map(|meta| meta.len() as f64 / 1024.0 / 1024.0)
}

pub(crate) fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// BullMQ's jobs/s and CPU per job on this machine and `redis_url` (`bench/bullmq/run.mjs`,
/// `jobs` jobs each way): the end-to-end ratio's baseline, measured in the same run. `None`,
/// said on stderr, when BullMQ is not installed there or its run fails.
pub(crate) fn bullmq_baseline(redis_url: &str, jobs: u64) -> Option<BullmqBench> {
    let directory = workspace().join("bench/bullmq");
    if !directory.join("node_modules/bullmq").is_dir() {
        eprintln!("BullMQ baseline skipped: not installed (`npm ci --prefix bench/bullmq`)");
        return None;
    }
    let output = Command::new("node")
        .arg(directory.join("run.mjs"))
        .arg(jobs.to_string())
        .env("REDIS_URL", redis_url)
        .stderr(Stdio::inherit())
        .output();
    let output = match output {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            eprintln!("BullMQ baseline skipped: its run exited with {}", output.status);
            return None;
        }
        Err(error) => {
            eprintln!("BullMQ baseline skipped: node did not start ({error})");
            return None;
        }
    };
    match serde_json::from_slice(&output.stdout) {
        Ok(figures) => Some(figures),
        Err(error) => {
            eprintln!("BullMQ baseline skipped: its output is not the expected figures ({error})");
            None
        }
    }
}
