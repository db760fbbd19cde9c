//! The dashboard in a real browser (Debian's `chromium` and `chromium-driver`, driven over
//! WebDriver by `tests/browser/dashboard.py` with selenium), as a member uses it: an address
//! opened before signing in, a task completing live, filters and pages, a refused task's
//! reason, a waiting task cancelled, a consent granted and revoked, Back and Forward, a reload,
//! 400 px, and axe-core (from npm) on every view, the operator's Health view included.
//! Screenshots of each view go to `target/`.

mod common;

use std::time::Duration;

use common::{OPERATOR_KEY, spawn_system};
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn a_member_uses_the_dashboard_with_the_keyboard_and_every_view_passes_axe(pool: PgPool) {
    let system = spawn_system(pool, &[("GRID_BLOCK_MAX_LEAVES", "1")]).await;
    let (_, api_key) = system.organization("Dashboard").await;
    // No panels: a task with an hour of slack waits for the sun, one due soon runs at once.
    let (stop, fleet) = system.fleet(&api_key, 2, 2, 0.0, Duration::ZERO).await;
    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/../target");
    for view in ["task", "flow", "tasks", "consent", "fleet", "node", "credits", "proofs", "health", "tasks-400px"] {
        let _ = std::fs::remove_file(format!("{shots}/dashboard-{view}.png"));
    }
    let axe = concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboard/node_modules/axe-core/axe.min.js");
    assert!(std::path::Path::new(axe).exists(), "axe-core is installed (`cd dashboard && npm ci`; just test does it)");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/dashboard.py");
    let run = tokio::process::Command::new("python3")
        .args([script, &system.base, &api_key, shots, axe, OPERATOR_KEY])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser test ends")
        .expect("python3 with selenium runs (.ci/run installs it)");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}\n{}", String::from_utf8_lossy(&output.stderr));
    let seen: serde_json::Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(seen["completed_live"], true);
    assert_eq!(seen["cancelled"], true);
    assert_eq!(seen["back_and_forward"], true);
    assert!(seen["deep_link_after_sign_in"].as_str().unwrap().starts_with("/tasks/"), "{seen}");
    assert!(seen["refused_reason"].as_str().unwrap().contains("k-anonymity"), "{seen}");
    assert!(seen["chain"].as_str().unwrap().starts_with("Chain verified"), "{seen}");
    assert!(seen["health"].as_str().unwrap().contains("Writer"), "{seen}");
    assert!(seen["timeline"].as_str().unwrap().contains("Credited"), "{seen}");
    assert!(seen["not_yet"].as_str().unwrap().contains("appears once the grid applies it"), "{seen}");
    for view in ["task", "flow", "tasks", "consent", "fleet", "node", "credits", "proofs", "health"] {
        let file = format!("{shots}/dashboard-{view}.png");
        assert!(std::fs::metadata(&file).map(|meta| meta.len()).unwrap_or(0) > 10_000, "a screenshot at {file}");
    }
    stop.send(true).unwrap();
    fleet.join().await;
    system.stop().await;
}
