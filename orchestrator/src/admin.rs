//! `/healthz`, `/readyz` and `/metrics` of an orchestrator process: liveness, readiness with the
//! role (writer or standby) and the epoch, so that an operator sees which process writes, and
//! the Prometheus figures.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::status::{Role, Status};

#[derive(Clone)]
struct Admin {
    status: Arc<Status>,
    pool: PgPool,
    redis: grid_shared::wire::connection::Redis,
    keys: grid_shared::wire::Keys,
}

pub fn router(
    status: Arc<Status>,
    pool: PgPool,
    redis: grid_shared::wire::connection::Redis,
    keys: grid_shared::wire::Keys,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Admin { status, pool, redis, keys })
}

/// 200 when PostgreSQL and Redis answer and the process is the writer or a standby ready to
/// take over; 503 otherwise. The body says which.
async fn readyz(State(admin): State<Admin>) -> (StatusCode, Json<Value>) {
    let postgres = sqlx::query("select 1").execute(&admin.pool).await.is_ok();
    let redis = match admin.redis.get().await {
        Ok(mut conn) => redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok(),
        Err(_) => false,
    };
    let snapshot = admin.status.snapshot();
    let ready =
        postgres && redis && matches!(snapshot.role, Role::Writer | Role::Standby) && snapshot.problem.is_none();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        code,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "role": snapshot.role,
            "name": snapshot.name,
            "epoch": snapshot.epoch,
            // Per cell (this build serves one): the role and epoch this process has in it.
            "cells": [{"cell": admin.keys.cell().as_str(), "role": snapshot.role, "epoch": snapshot.epoch}],
            "postgres": postgres,
            "redis": redis,
            "open_tasks": snapshot.open_tasks,
            "queued_tasks": snapshot.queued_tasks,
            "live_nodes": snapshot.live_nodes,
            "batches": snapshot.batches,
            "messages": snapshot.messages,
            "statements": snapshot.statements,
            "chain_height": snapshot.chain_height,
            "pending_leaves": snapshot.pending_leaves,
            "blocks_sealed": snapshot.blocks_sealed,
            "problem": snapshot.problem,
        })),
    )
}

/// The Prometheus exposition: what the writer recorded, its state as of its last batch, and the
/// grid's streams as Redis has them now.
async fn metrics(State(admin): State<Admin>) -> impl axum::response::IntoResponse {
    let snapshot = admin.status.snapshot();
    let registry = &admin.status.metrics;
    for role in [Role::Starting, Role::Standby, Role::TakingOver, Role::Writer, Role::Stopping] {
        let name =
            serde_json::to_value(role).ok().and_then(|value| value.as_str().map(str::to_owned)).unwrap_or_default();
        registry
            .gauge("grid_writer_role", &[("cell", admin.keys.cell().as_str()), ("role", &name)])
            .set(f64::from(u8::from(role == snapshot.role)));
    }
    registry
        .gauge("grid_writer_epoch", &[("cell", admin.keys.cell().as_str())])
        .set(snapshot.epoch.unwrap_or(0) as f64);
    if snapshot.role == Role::Writer {
        let on_nodes = snapshot.open_tasks.saturating_sub(snapshot.queued_tasks);
        registry.gauge("grid_tasks", &[("status", "queued")]).set(snapshot.queued_tasks as f64);
        registry.gauge("grid_tasks", &[("status", "on_nodes")]).set(on_nodes as f64);
        registry.gauge("grid_nodes_alive", &[]).set(snapshot.live_nodes as f64);
        registry.gauge("grid_chain_height", &[]).set(snapshot.chain_height as f64);
        registry.gauge("grid_chain_pending_leaves", &[]).set(snapshot.pending_leaves as f64);
    }
    registry.counter("grid_batches_total", &[]).absolute(snapshot.batches);
    registry.counter("grid_messages_total", &[]).absolute(snapshot.messages);
    registry.counter("grid_sql_statements_total", &[]).absolute(snapshot.statements);
    registry.counter("grid_blocks_sealed_total", &[]).absolute(snapshot.blocks_sealed);
    let streams = match admin.redis.get().await {
        Ok(mut conn) => crate::store::streams::stream_figures(&mut conn, &admin.keys).await.ok(),
        Err(_) => None,
    };
    registry.gauge("grid_redis_up", &[]).set(if streams.is_some() { 1.0 } else { 0.0 });
    for figures in streams.unwrap_or_default() {
        registry.gauge("grid_stream_length", &[("stream", figures.stream)]).set(figures.length as f64);
        if let Some((pending, lag)) = figures.group {
            registry.gauge("grid_stream_pending", &[("stream", figures.stream)]).set(pending as f64);
            registry.gauge("grid_stream_lag", &[("stream", figures.stream)]).set(lag as f64);
        }
    }
    ([(axum::http::header::CONTENT_TYPE, grid_shared::metrics::CONTENT_TYPE)], registry.render())
}
