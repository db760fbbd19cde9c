//! The dashboard in a real browser (Debian's `chromium` and `chromium-driver`, driven over
//! WebDriver by `tests/browser/dashboard.py` with selenium): the real services and a small
//! simulated fleet, a task seen completing live, its proof verified in the browser, a reload.

mod common;

use std::time::Duration;

use common::spawn_system;
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn the_dashboard_shows_a_task_completing_live_and_verifies_its_proof_in_the_browser(pool: PgPool) {
    let system = spawn_system(pool, &[("GRID_BLOCK_MAX_LEAVES", "1")]).await;
    let (_, api_key) = system.organization("Dashboard").await;
    let (stop, fleet) = system.fleet(&api_key, 2, 2, 1.0, Duration::ZERO).await;
    let screenshot = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/dashboard.png");
    let _ = std::fs::remove_file(screenshot);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/dashboard.py");
    let run = tokio::process::Command::new("python3").args([script, &system.base, &api_key, screenshot]).output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser test ends")
        .expect("python3 with selenium runs (.ci/run installs it)");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}\n{}", String::from_utf8_lossy(&output.stderr));
    let seen: serde_json::Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(seen["completed_live"], true);
    assert!(seen["proof"].as_str().unwrap().contains("verified in the browser"), "{seen}");
    assert!(seen["chain"].as_str().unwrap().starts_with("Chain verified"), "{seen}");
    assert!(std::fs::metadata(screenshot).unwrap().len() > 10_000, "a screenshot under target/");
    stop.send(true).unwrap();
    fleet.join().await;
    system.stop().await;
}
