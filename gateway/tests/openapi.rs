//! The committed OpenAPI document is the one the code generates, and it is self-consistent.

use grid_gateway::openapi::spec_json;
use serde_json::Value;

#[test]
fn the_committed_document_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json"))
        .expect("openapi/openapi.json is committed");
    assert!(committed == spec_json(), "openapi/openapi.json is stale: run `just openapi` and commit it");
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "$ref" {
                    refs.extend(inner.as_str().map(str::to_owned));
                }
                collect_refs(inner, refs);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, refs)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves_and_every_response_is_described() {
    let spec: Value = serde_json::from_str(&spec_json()).unwrap();
    let mut refs = Vec::new();
    collect_refs(&spec, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let pointer = reference.strip_prefix('#').expect("local references only");
        assert!(spec.pointer(pointer).is_some(), "{reference} does not resolve");
    }
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let described = response["description"].as_str().is_some_and(|text| !text.is_empty());
                assert!(described, "{method} {path} {status} has no description");
            }
        }
    }
}

#[test]
fn the_contract_routes_are_documented() {
    let spec: Value = serde_json::from_str(&spec_json()).unwrap();
    let paths = spec["paths"].as_object().unwrap();
    for route in [
        "/v1/organizations",
        "/v1/nodes",
        "/v1/nodes/{node_id}/heartbeat",
        "/v1/nodes/{node_id}/tasks",
        "/v1/nodes/{node_id}/reports",
        "/v1/tasks",
        "/v1/tasks/{task_id}",
        "/v1/commands/{command_id}",
        "/v1/stats",
        "/v1/proofs/verify",
        "/grid/register",
        "/grid/heartbeat",
        "/grid/task",
        "/grid/report",
        "/grid/stats",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(route), "{route} is missing from the document");
    }
}
