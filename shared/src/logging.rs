//! The services' logs: `RUST_LOG` filters them (default `info`), `GRID_LOG_FORMAT` chooses
//! `text` (the default) or `json`: one JSON object per line, with the fields of the spans it
//! happened in, so that a task's `correlation_id` can be followed through the gateway, the
//! streams, the orchestrator and the worker.

/// Installs the process's log subscriber; an unknown format is a configuration error.
pub fn init() -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match std::env::var("GRID_LOG_FORMAT").unwrap_or_default().as_str() {
        "" | "text" => tracing_subscriber::fmt().with_env_filter(filter).init(),
        "json" => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_env_filter(filter)
            .init(),
        other => return Err(format!("GRID_LOG_FORMAT: {other:?} is neither text nor json")),
    }
    Ok(())
}
