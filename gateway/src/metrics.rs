//! The gateway's Prometheus figures, at `GET /metrics`: every HTTP request by route, method and
//! status with its latency, and at scrape time its connected nodes, load and caches.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use grid_shared::metrics::{CONTENT_TYPE, Described, Registry};

use crate::state::AppState;

pub fn registry() -> Registry {
    Registry::new(&[
        Described::Counter("grid_http_requests_total", "HTTP requests answered, by route template, method and status."),
        Described::Histogram(
            "grid_http_request_duration_seconds",
            "Time to the response's head, by route template and method.",
        ),
        Described::Counter(
            "grid_node_frames_total",
            "Frames nodes sent over their connection (WebSocket), by type and the status they were answered.",
        ),
        Described::Histogram("grid_node_frame_duration_seconds", "Time to answer a node's frame, by type."),
        Described::Gauge(
            "grid_gateway_connected_nodes",
            "Task-channel clients connected to this gateway (event streams and node connections).",
        ),
        Described::Gauge("grid_gateway_requests_in_flight", "Requests being served (streams aside)."),
        Described::Gauge("grid_gateway_streams_open", "Server-sent event streams open."),
        Described::Gauge("grid_gateway_runtime_delay_seconds", "How late the gateway's runtime runs (load shedding)."),
        Described::Gauge("grid_gateway_auth_cache_entries", "API keys and node tokens cached."),
    ])
}

/// Counts and times every request; the route is the matched template (a path that matched no
/// route is `unmatched`, so that a client cannot mint series), the method one of those served.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let metrics = &state.metrics;
    metrics
        .counter("grid_http_requests_total", &[("route", &route), ("method", method), ("status", &status)])
        .increment(1);
    metrics
        .histogram("grid_http_request_duration_seconds", &[("route", &route), ("method", method)])
        .record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`, in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition (version 0.0.4) of this gateway's figures",
        content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)))]
pub async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    let metrics = &state.metrics;
    let config = &state.config;
    metrics.gauge("grid_gateway_connected_nodes", &[]).set(state.channels.clients() as f64);
    let in_flight = config.max_in_flight.saturating_sub(state.in_flight.available_permits());
    metrics.gauge("grid_gateway_requests_in_flight", &[]).set(in_flight as f64);
    let streams = config.max_streams.saturating_sub(state.streams.available_permits());
    metrics.gauge("grid_gateway_streams_open", &[]).set(streams as f64);
    metrics.gauge("grid_gateway_runtime_delay_seconds", &[]).set(state.pressure.delay().as_secs_f64());
    metrics.gauge("grid_gateway_auth_cache_entries", &[]).set(state.auth.len() as f64);
    ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render())
}
