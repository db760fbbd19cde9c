//! Schemathesis (from PyPI) against the real API: no 5xx, every response documented and matching
//! its schema. `just test` installs it when missing.
//!
//! Left out, on purpose:
//! - `positive_data_acceptance`, which expects every schema-valid request to succeed: rules the
//!   schema cannot say (a deadline in the coming year, k-anonymity, consent, text without control
//!   characters, an existing task) refuse such requests with a 422 problem by design;
//! - `ensure_resource_availability` and `use_after_free`, which expect a created resource to be
//!   readable at once and a deleted one to be gone: commands are accepted (202) and applied
//!   asynchronously (`GET /v1/commands/{id}` tells when), a DELETE of a task cancels it and a
//!   DELETE of a consent revokes it, and both stay readable with their new state.

mod common;

use common::spawn_system;
use sqlx::PgPool;

/// Runs schemathesis against the system with these arguments; its report, and how many
/// operations it tested.
async fn schemathesis(
    system: &common::System,
    api_key: &str,
    report_name: &str,
    arguments: &[&str],
) -> (String, usize) {
    let program = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned());
    let output = tokio::process::Command::new(&program)
        .args(["run", &system.url("/api-docs/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {api_key}")])
        // The event log answers a stream to `Accept: text/event-stream`: ask for pages.
        .args(["--header", "Accept: application/json"])
        .args(arguments)
        .args(["--generation-deterministic", "--request-timeout", "20"])
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap_or_else(|error| {
            panic!("{program} could not run ({error}): install it with `pip install schemathesis`")
        });
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    // Kept for whoever reads a failure later.
    let path = format!("{}/../target/{report_name}.txt", env!("CARGO_MANIFEST_DIR"));
    let _ = std::fs::write(path, report.as_bytes());
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tested: usize = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Tested: "))
        .and_then(|count| count.split('/').next())
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0);
    (report, tested)
}

#[sqlx::test(migrations = "../migrations")]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer(pool: PgPool) {
    let system = spawn_system(pool, &[]).await;
    let (_, api_key) = system.organization("Fuzzed").await;
    let arguments = [
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance,ensure_resource_availability,use_after_free",
        "--max-examples",
        "30",
    ];
    let (report, tested) = schemathesis(&system, &api_key, "schemathesis-report", &arguments).await;
    assert!(tested >= 20, "schemathesis tested {tested} operations:\n{report}");
    system.stop().await;
}

/// The case an early fuzzing run recorded against task submission (schemathesis's
/// negative-data check on `POST /v1/tasks`: participants that are not objects, a huge array of
/// readings), explored harder: every body the schema forbids is refused with a 4xx problem.
#[sqlx::test(migrations = "../migrations")]
async fn every_task_submission_the_schema_forbids_is_refused(pool: PgPool) {
    let system = spawn_system(pool, &[]).await;
    let (_, api_key) = system.organization("Fuzzed harder").await;
    let arguments = [
        "--include-name",
        "POST /v1/tasks",
        "--mode",
        "negative",
        "--checks",
        "negative_data_rejection,not_a_server_error,status_code_conformance,response_schema_conformance",
        "--max-examples",
        "150",
    ];
    let (report, tested) = schemathesis(&system, &api_key, "schemathesis-task-submission", &arguments).await;
    assert_eq!(tested, 1, "only POST /v1/tasks:\n{report}");
    system.stop().await;
}
