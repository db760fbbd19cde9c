//! The OpenAPI document, generated from the handlers' annotations. `openapi/openapi.json` is a
//! committed copy; a test fails when it drifts (regenerate with `just openapi`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    cells, commands, consent, events, grid_compat, health, ledger, node_connection, nodes, operations, organizations,
    reports, tasks,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "KoproGo Grid",
        description = "Control plane of the KoproGo cooperative's green computing grid. Commands answer 202 with a command id \
                       (poll `GET /v1/commands/{id}`); errors are application/problem+json. Every 503 carries `Retry-After`: \
                       past its capacity (`GATEWAY_MAX_IN_FLIGHT` requests at once, `GATEWAY_MAX_STREAMS` streams) the gateway \
                       refuses at once rather than queue, and a command that finds `GATEWAY_MAX_BACKLOG` commands not yet \
                       applied is refused (503 `overloaded`; nodes' reports never are). A node's `result_hash` is the SHA-256 of the canonical form of its \
                       `result_json` (see `ReportRequest.result_hash` and the README's Node protocol).",
        license(name = "AGPL-3.0-or-later"),
    ),
    paths(
        organizations::create_organization, organizations::rotate_key, organizations::declare_energy_contract,
        nodes::register_node, nodes::get_nodes, nodes::get_node, nodes::heartbeat, nodes::task_channel, nodes::report, node_connection::node_connection,
        tasks::submit_task, tasks::submit_task_batch, tasks::get_tasks, tasks::get_task_counts, tasks::get_task, tasks::get_task_events, tasks::cancel_task,
        commands::get_command,
        consent::list, consent::grant, consent::read, consent::revoke,
        ledger::stats, ledger::credits, ledger::verify_proofs, ledger::blocks, ledger::proofs, ledger::proofs_of_task,
        reports::emissions,
        events::events,
        grid_compat::grid_register, grid_compat::grid_heartbeat, grid_compat::grid_task, grid_compat::grid_report,
        grid_compat::grid_stats_route,
        health::healthz, health::readyz, crate::metrics::scrape, operations::operations,
        cells::cells,
    ),
    modifiers(&BearerAuth, &CommonProblems),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The operator key, an organisation API key (gk_…) or a node token (gn_…)"))
                    .build(),
            ),
        );
    }
}

/// The refusals any operation may give, documented once for all: each a problem document.
struct CommonProblems;

const COMMON_PROBLEMS: [(&str, &str); 9] = [
    ("400", "Malformed request (not JSON, or not the JSON shape)"),
    ("401", "Missing or invalid credentials"),
    ("403", "These credentials may not use this route"),
    ("404", "No such resource for this caller"),
    ("413", "Body larger than the server accepts"),
    ("415", "Body is not application/json"),
    ("422", "Invalid input: each field and why"),
    ("429", "Too many requests with this credential; see Retry-After"),
    ("503", "Over capacity, a backing service unavailable, or the request timed out; see Retry-After (seconds)"),
];

impl Modify for CommonProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                for (status, description) in COMMON_PROBLEMS {
                    let problem = ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/problem+json",
                            ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
                        )
                        .build();
                    operation.responses.responses.entry(status.to_owned()).or_insert(RefOr::T(problem));
                }
            }
        }
    }
}

pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as committed in `openapi/openapi.json`.
pub fn spec_json() -> String {
    let mut text = spec().to_pretty_json().expect("the OpenAPI document serialises");
    text.push('\n');
    text
}
