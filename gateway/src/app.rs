//! The router and the server: `app(state)` for tests (`oneshot`), `run(listener, state,
//! shutdown)` for the binary, which drains connections on shutdown.

use std::future::Future;
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
use crate::routes::{
    cells, commands, consent, dashboard, events, grid_compat, health, ledger, nodes, operations, organizations,
    reports, tasks,
};
use crate::state::AppState;

/// The OpenAPI document at `/api-docs/openapi.json`, serialised once (the committed copy's
/// text), and Swagger UI reading it. Swagger UI's own `url(…, OpenApi)` would keep the document's
/// tree alive for the process's life (about 2 MB of maps, against 240 KB of text) and serialise it
/// on each request.
fn documentation() -> Router<AppState> {
    const PATH: &str = "/api-docs/openapi.json";
    let document = axum::body::Bytes::from(crate::openapi::spec_json());
    let serve = move || {
        let document = document.clone();
        async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], document) }
    };
    Router::new()
        .route(PATH, axum::routing::get(serve))
        .merge(SwaggerUi::new("/swagger-ui").config(utoipa_swagger_ui::Config::new([PATH])))
}

pub fn app(state: AppState) -> Router {
    let bounded = Router::new()
        .merge(organizations::router())
        .merge(nodes::router())
        .merge(tasks::router())
        .merge(commands::router())
        .merge(consent::router())
        .merge(ledger::router())
        .merge(reports::router())
        .merge(operations::router())
        .merge(cells::router())
        .merge(grid_compat::router())
        .route_layer(middleware::from_fn_with_state(state.clone(), admit));
    // Health is answered even at capacity (a liveness probe must not fail under load).
    let health = health::router()
        .route("/metrics", axum::routing::get(crate::metrics::scrape))
        .route_layer(middleware::from_fn_with_state(state.clone(), request_deadline));
    Router::new()
        .merge(bounded)
        .merge(health)
        .merge(dashboard::router())
        .merge(nodes::streaming_router())
        .merge(events::streaming_router())
        .merge(documentation())
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), crate::metrics::observe))
        // Failures are logged where they happen (dependency lost, internal error), once; not
        // every refusal of an overloaded gateway.
        .layer(TraceLayer::new_for_http().on_failure(()))
        .with_state(state)
}

/// Admission control: past `GATEWAY_MAX_IN_FLIGHT` requests being served, or while the runtime
/// is saturated (every tick of `GATEWAY_MAX_DELAY_WINDOW_MS` later than `GATEWAY_MAX_DELAY_MS`,
/// see [`crate::pressure`]), or (for commands) while the grid's backlog is known
/// to be full (except for node traffic that finishes accepted work), a request is answered 503
/// with `Retry-After` at once: no queue grows, and memory stays bounded. An admitted request
/// has its deadline ([`request_deadline`]).
async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !crate::pressure::finishes_work(request.uri().path()) {
        if state.pressure.saturated() {
            state.pressure.refused();
            return ApiError::Overloaded.into_response();
        }
        // A command (every write but a node's report or heartbeat) while the grid's backlog is
        // known to be full: refused before its body is read.
        if request.method() != axum::http::Method::GET && state.pressure.backlog_is_full() {
            state.pressure.refused();
            return ApiError::Backlogged.into_response();
        }
    }
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        state.pressure.refused();
        return ApiError::Overloaded.into_response();
    };
    request_deadline(State(state), request, next).await
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
/// `/readyz` says so). Each connection plans every statement with its values
/// (`plan_cache_mode = force_custom_plan`): the read model's statements take optional filters
/// (`$1::uuid is null or ...`), which a generic plan cannot use an index for.
pub fn build_state(config: GatewayConfig) -> anyhow::Result<AppState> {
    let options: sqlx::postgres::PgConnectOptions = config.database_url.parse()?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(config.db_pool_size)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options.options([("plan_cache_mode", "force_custom_plan")]));
    build_state_with_pool(config, pool)
}

pub fn build_state_with_pool(config: GatewayConfig, pool: sqlx::PgPool) -> anyhow::Result<AppState> {
    // A slow Redis is a 503, not a request left hanging.
    let redis = grid_shared::wire::connection::Redis::open(&config.redis, 16, Some(Duration::from_secs(5)))?;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(config.max_in_flight));
    let streams = Arc::new(tokio::sync::Semaphore::new(config.max_streams));
    let pressure = Arc::new(crate::pressure::Pressure::new(
        Duration::from_millis(config.max_delay_ms),
        Duration::from_millis(config.max_delay_window_ms),
    ));
    let grid = &config.grid;
    let keys_by_cell = grid.cells.iter().map(|cell| grid.keys.cell_keys(&cell.name)).collect();
    Ok(AppState::new(crate::state::Shared {
        pool,
        redis,
        keys_by_cell,
        config: Arc::new(config),
        auth: Arc::default(),
        channels: Arc::default(),
        in_flight,
        streams,
        pressure,
        summaries: Arc::default(),
        metrics: Arc::new(crate::metrics::registry()),
    }))
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, namespace = state.keys().namespace(), "gateway listening");
    let reader_stop = tokio_util::sync::CancellationToken::new();
    // One reader of the task channels' feed per cell (each cell's writer notifies its own).
    let mut readers = tokio::task::JoinSet::new();
    for cell in state.config.grid.cells.iter() {
        readers.spawn(crate::channels::run_reader(
            state.channels.clone(),
            state.redis.clone(),
            state.cell_keys(&cell.name).clone(),
            reader_stop.clone(),
        ));
    }
    tokio::spawn(crate::summaries::follow(
        state.summaries.clone(),
        state.redis.clone(),
        state.config.grid.clone(),
        reader_stop.clone(),
    ));
    tokio::spawn(crate::pressure::measure(state.pressure.clone(), reader_stop.clone()));
    let (metrics, upkeep_stop) = (state.metrics.clone(), reader_stop.clone());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(grid_shared::metrics::UPKEEP_EVERY);
        while tokio::select! { () = upkeep_stop.cancelled() => false, _ = ticks.tick() => true } {
            metrics.upkeep();
        }
    });
    let stop_reader = reader_stop.clone();
    let served = serve(listener, app(state.clone()), &state.config, async move {
        shutdown.await;
        // The task channels end with the reader, so that open streams do not hold the
        // shutdown back.
        stop_reader.cancel();
    })
    .await;
    reader_stop.cancel();
    readers.join_all().await;
    served
}

/// Accepts connections until `shutdown`, then lets the open ones finish. Each connection is
/// HTTP/1.1 with keep-alive; one that sends no request head for `GATEWAY_IDLE_TIMEOUT_MS` (idle
/// between requests, or slow to send its head) is closed, and past `GATEWAY_MAX_CONNECTIONS` a
/// new connection is closed at once: connections cannot hold the gateway's memory unbounded.
async fn serve(
    listener: TcpListener,
    router: Router,
    config: &GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_millis(config.idle_timeout_ms));
    let stopping = tokio_util::sync::CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, or a connection reset before it was accepted: the
                // listener goes on after a pause.
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "GATEWAY_MAX_CONNECTIONS reached: connection closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            let mut router = router.clone();
            async move { tower_service::Service::call(&mut router, request).await }
        });
        // Closed lingering: a refused request's client still sending its body gets the answer.
        let io = hyper_util::rt::TokioIo::new(crate::linger::Lingering::new(stream));
        // With upgrades: a node's connection (`GET /v1/nodes/{id}/connection`) becomes a
        // WebSocket, served on its own once upgraded (hyper's part of it then ends).
        let connection = http1.serve_connection(io, service).with_upgrades();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopping.cancelled() => {
                    // Answers the request in flight, if any, then closes.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%peer, %error, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    stopping.cancel();
    // Every connection returns its permit when it ends.
    let _ = connections.acquire_many(u32::try_from(config.max_connections).unwrap_or(u32::MAX)).await;
    Ok(())
}
