//! `GET /metrics` of the gateway and of the orchestrator: the Prometheus text format as
//! `promtool check metrics` (Debian's `prometheus` package) accepts it, and counters that move
//! when tasks flow.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{eventually, spawn_system, thermal_task};
use sqlx::PgPool;

/// `promtool check metrics` on an exposition: its exit status and what it printed.
fn promtool(exposition: &str) -> (bool, String) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian's prometheus package; .ci/run installs it)");
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), printed)
}

/// The value of the sample whose line starts with `series` (name and labels as rendered).
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    response.text().await.unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn both_services_expose_valid_metrics_whose_counters_move_with_the_tasks(pool: PgPool) {
    let system = spawn_system(pool, &[("GRID_BLOCK_MAX_LEAVES", "2")]).await;
    let (_, api_key) = system.organization("Observed").await;
    let admin =
        eventually(Duration::from_secs(10), "the admin endpoint", || async { system.status.snapshot().admin_address })
            .await;
    let orchestrator_metrics = format!("http://{admin}/metrics");
    let gateway_metrics = system.url("/metrics");
    let before = scrape(&system.http, &orchestrator_metrics).await;
    let completed_before = sample(&before, "grid_events_total{type=\"TaskCompleted\"}").unwrap_or(0.0);

    let (stop, fleet) = system.fleet(&api_key, 2, 2, 1.0, Duration::ZERO).await;
    for _ in 0..6 {
        assert_eq!(system.post("/v1/tasks", &api_key, thermal_task()).await.status(), 202);
    }
    let after = eventually(Duration::from_secs(30), "six completions counted", || async {
        let text = scrape(&system.http, &orchestrator_metrics).await;
        let completed = sample(&text, "grid_events_total{type=\"TaskCompleted\"}").unwrap_or(0.0);
        (completed >= completed_before + 6.0).then_some(text)
    })
    .await;
    stop.send(true).unwrap();
    fleet.join().await;

    // The orchestrator: the writer's role and epoch, batches, credits, the chain, the streams.
    let (valid, printed) = promtool(&after);
    assert!(valid, "promtool refused the orchestrator's metrics: {printed}\n{after}");
    assert_eq!(sample(&after, "grid_writer_role{cell=\"main\",role=\"writer\"}"), Some(1.0), "{after}");
    assert_eq!(sample(&after, "grid_writer_role{cell=\"main\",role=\"standby\"}"), Some(0.0));
    assert!(sample(&after, "grid_writer_epoch{cell=\"main\"}").unwrap() >= 1.0);
    assert!(sample(&after, "grid_batches_total").unwrap() > sample(&before, "grid_batches_total").unwrap_or(0.0));
    assert!(sample(&after, "grid_credits_peur_total{account=\"node\"}").unwrap() > 0.0, "{after}");
    assert!(sample(&after, "grid_carbon_saved_ng_total").unwrap() > 0.0);
    assert!(sample(&after, "grid_batch_commit_seconds_count").unwrap() > 0.0);
    assert!(sample(&after, "grid_batch_messages_bucket{le=\"+Inf\"}").unwrap() > 0.0);
    assert!(sample(&after, "grid_stream_length{cell=\"main\",stream=\"events\"}").unwrap() > 0.0);
    assert!(sample(&after, "grid_stream_pending{cell=\"main\",stream=\"commands\"}").is_some(), "{after}");
    assert!(sample(&after, "grid_stream_lag{cell=\"main\",stream=\"reports\"}").is_some());
    assert_eq!(sample(&after, "grid_redis_up"), Some(1.0));
    assert!(sample(&after, "grid_tasks{cell=\"main\",status=\"queued\"}").is_some());
    assert!(sample(&after, "grid_nodes_alive{cell=\"main\"}").is_some());
    assert!(
        sample(&after, "grid_chain_height{cell=\"main\"}").unwrap() >= 1.0,
        "blocks of 2 leaves were sealed: {after}"
    );

    // The gateway: requests by route template, method and status, with their latency.
    let text = scrape(&system.http, &gateway_metrics).await;
    let (valid, printed) = promtool(&text);
    assert!(valid, "promtool refused the gateway's metrics: {printed}\n{text}");
    let submitted = "grid_http_requests_total{route=\"/v1/tasks\",method=\"POST\",status=\"202\"}";
    assert!(sample(&text, submitted).unwrap() >= 6.0, "{text}");
    // The fleet's nodes report over their one connection: frames by type and status.
    let reported = "grid_node_frames_total{type=\"report\",status=\"202\"}";
    assert!(sample(&text, reported).unwrap() >= 6.0, "{text}");
    assert!(sample(&text, "grid_node_frames_total{type=\"heartbeat\",status=\"200\"}").unwrap() >= 1.0, "{text}");
    assert!(sample(&text, "grid_node_frame_duration_seconds_count{type=\"report\"}").unwrap() >= 6.0, "{text}");
    assert!(sample(&text, "grid_http_request_duration_seconds_count{route=\"/v1/tasks\",method=\"POST\"}").is_some());
    assert!(sample(&text, "grid_gateway_auth_cache_entries").unwrap() >= 1.0);
    // A path that matches no route is one series, whatever the path.
    system.get("/v1/nothing/here", &api_key).await;
    system.get("/v1/nothing/else", &api_key).await;
    let text = scrape(&system.http, &gateway_metrics).await;
    assert_eq!(sample(&text, "grid_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}"), Some(2.0));
    assert!(!text.contains("/v1/nothing"));

    // The committed Grafana dashboard asks only for series the services expose.
    let dashboard =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/koprogo-grid.json")).unwrap();
    let exposed = format!("{after}{text}");
    let mut names: Vec<&str> = dashboard
        .match_indices("grid_")
        .map(|(at, _)| {
            let rest = &dashboard[at..];
            &rest[..rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len())]
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(exposed.contains(&format!("\n{name}")), "the dashboard asks for {name}, which no service exposes");
    }
    system.stop().await;
}
