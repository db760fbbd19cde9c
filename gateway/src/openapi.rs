//! The OpenAPI document, generated from the handlers' annotations. `openapi/openapi.json` is a
//! committed copy; a test fails when it drifts (regenerate with `just openapi`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{commands, consent, grid_compat, health, ledger, nodes, organizations, tasks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "KoproGo Grid",
        description = "Control plane of the KoproGo cooperative's green computing grid. Commands answer 202 with a command id \
                       (poll `GET /v1/commands/{id}`); errors are application/problem+json.",
        license(name = "AGPL-3.0-or-later"),
    ),
    paths(
        organizations::create_organization,
        nodes::register_node, nodes::get_nodes, nodes::get_node, nodes::heartbeat, nodes::task_channel, nodes::report,
        tasks::submit_task, tasks::get_tasks, tasks::get_task, tasks::cancel_task,
        commands::get_command,
        consent::grant, consent::read, consent::revoke,
        ledger::stats, ledger::verify_proofs,
        grid_compat::grid_register, grid_compat::grid_heartbeat, grid_compat::grid_task, grid_compat::grid_report,
        grid_compat::grid_stats_route,
        health::healthz, health::readyz,
    ),
    modifiers(&BearerAuth),
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

pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as committed in `openapi/openapi.json`.
pub fn spec_json() -> String {
    let mut text = spec().to_pretty_json().expect("the OpenAPI document serialises");
    text.push('\n');
    text
}
