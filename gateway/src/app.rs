//! The router and the server: `app(state)` for tests (`oneshot`), `run(listener, state,
//! shutdown)` for the binary, which drains connections on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::GatewayConfig;
use crate::error::ApiError;
use crate::routes::{commands, consent, events, grid_compat, health, ledger, nodes, organizations, tasks};
use crate::state::AppState;

pub fn app(state: AppState) -> Router {
    let bounded = Router::new()
        .merge(organizations::router())
        .merge(nodes::router())
        .merge(tasks::router())
        .merge(commands::router())
        .merge(consent::router())
        .merge(ledger::router())
        .merge(grid_compat::router())
        .merge(health::router())
        .route_layer(middleware::from_fn_with_state(state.clone(), request_deadline));
    Router::new()
        .merge(bounded)
        .merge(nodes::streaming_router())
        .merge(events::streaming_router())
        .merge(SwaggerUi::new("/swagger-ui").url("/api-docs/openapi.json", crate::openapi::spec()))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Answers a problem instead of hanging when a request outlives `GATEWAY_REQUEST_TIMEOUT_MS`.
async fn request_deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = Duration::from_millis(state.config.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Connects to PostgreSQL and Redis (lazily: the gateway starts even if they are down, and
/// `/readyz` says so).
pub fn build_state(config: GatewayConfig) -> anyhow::Result<AppState> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(config.db_pool_size)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&config.database_url)?;
    build_state_with_pool(config, pool)
}

pub fn build_state_with_pool(config: GatewayConfig, pool: sqlx::PgPool) -> anyhow::Result<AppState> {
    let redis_config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_connection_timeout(Some(Duration::from_secs(5)));
    let manager = deadpool_redis::Manager::new_with_config(config.redis_url.as_str(), redis_config)?;
    let redis = deadpool_redis::Pool::builder(manager).max_size(16).build()?;
    Ok(AppState { pool, redis, config: Arc::new(config), auth: Arc::default() })
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, namespace = state.keys().namespace(), "gateway listening");
    axum::serve(listener, app(state).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
