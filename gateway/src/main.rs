//! `gateway` serves the API; `gateway openapi` prints the OpenAPI document.

use grid_gateway::app::{build_state, run};
use grid_gateway::config::GatewayConfig;

/// One line on failure (the cause chain), not a backtrace: `RUST_BACKTRACE` is for panics.
fn main() {
    if let Err(error) = start() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn start() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("openapi") {
        print!("{}", grid_gateway::openapi::spec_json());
        return Ok(());
    }
    grid_shared::logging::init().map_err(anyhow::Error::msg)?;
    let config = GatewayConfig::from_env().map_err(|error| anyhow::anyhow!("configuration: {error}"))?;
    let runtime = match config.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        threads => tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?,
    };
    runtime.block_on(serve(config))
}

async fn serve(config: GatewayConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let state = build_state(config)?;
    run(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
