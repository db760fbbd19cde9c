//! The documentation routes and the problem answers that need no backing service: Swagger UI
//! is served from the binary (vendored), the spec is the generated one, unknown routes and bad
//! credentials are problem documents.

use grid_gateway::app::{build_state, run};
use grid_gateway::config::GatewayConfig;

async fn start() -> String {
    let config = GatewayConfig::from_lookup(|name| match name {
        "DATABASE_URL" => Some("postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
        "GRID_OPERATOR_KEY" => Some("docs-test-operator-key-0123456789abcdef".to_owned()),
        _ => None,
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = build_state(config).unwrap();
    tokio::spawn(run(listener, state, std::future::pending()));
    base
}

#[tokio::test]
async fn swagger_ui_and_the_spec_are_served_offline() {
    let base = start().await;
    let page = reqwest::get(format!("{base}/swagger-ui/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().to_lowercase().contains("swagger"));
    let spec: serde_json::Value =
        reqwest::get(format!("{base}/api-docs/openapi.json")).await.unwrap().json().await.unwrap();
    let generated: serde_json::Value = serde_json::from_str(&grid_gateway::openapi::spec_json()).unwrap();
    assert_eq!(spec, generated);
}

#[tokio::test]
async fn unknown_routes_and_missing_credentials_are_problems() {
    let base = start().await;
    let missing = reqwest::get(format!("{base}/v1/nothing-here")).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    let anonymous = reqwest::get(format!("{base}/v1/tasks")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let problem: serde_json::Value = anonymous.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/unauthorized"));
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}
