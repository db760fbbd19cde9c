//! `gateway` serves the API; `gateway openapi` prints the OpenAPI document.

use grid_gateway::app::{build_state, run};
use grid_gateway::config::GatewayConfig;

/// mimalloc, not glibc's allocator. glibc gives freed memory back only from the top of its heap,
/// so after a burst of requests the gateway kept its high-water mark: 8 MB in use of a 34 MB
/// arena after the bench's load phases (`malloc_stats`). mimalloc returns free pages and spends
/// less per allocation (a node's frame is about 70). The reduced bench (`just bench`'s
/// end-to-end phase, 1,000 nodes), same day: RSS with the fleet connected after the load 34–37
/// MiB against 42–43, gateway CPU per task 81–83 µs against 94–100.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
