//! `/healthz`, `/readyz` and `/metrics` of an orchestrator process: liveness, readiness with the
//! role (writer or standby) and the epoch in each cell it serves, so that an operator sees which
//! process writes which cell, and the Prometheus figures.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::status::{Role, Snapshot};

#[derive(Clone)]
struct Admin {
    /// Each cell this process writes, with its status there (the first cell's name and admin
    /// address are the process's).
    cells: Vec<crate::app::CellStatus>,
    pool: PgPool,
    redis: grid_shared::wire::connection::Redis,
}

pub fn router(cells: Vec<crate::app::CellStatus>, pool: PgPool, redis: grid_shared::wire::connection::Redis) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Admin { cells, pool, redis })
}

fn role_name(role: Role) -> String {
    serde_json::to_value(role).ok().and_then(|value| value.as_str().map(str::to_owned)).unwrap_or_default()
}

/// 200 when PostgreSQL and Redis answer and, in every cell it serves, the process is the writer
/// or a standby ready to take over; 503 otherwise. The body says which, per cell (`cells`); its
/// top-level `role` and `epoch` are those of the first cell.
async fn readyz(State(admin): State<Admin>) -> (StatusCode, Json<Value>) {
    let postgres = sqlx::query("select 1").execute(&admin.pool).await.is_ok();
    let redis = match admin.redis.get().await {
        Ok(mut conn) => redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok(),
        Err(_) => false,
    };
    let snapshots: Vec<(&str, Snapshot)> =
        admin.cells.iter().map(|(keys, status)| (keys.cell().as_str(), status.snapshot())).collect();
    let serving =
        |snapshot: &Snapshot| matches!(snapshot.role, Role::Writer | Role::Standby) && snapshot.problem.is_none();
    let ready = postgres && redis && snapshots.iter().all(|(_, snapshot)| serving(snapshot));
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let cells: Vec<Value> = snapshots
        .iter()
        .map(|(cell, snapshot)| {
            json!({
                "cell": cell,
                "role": snapshot.role,
                "epoch": snapshot.epoch,
                "open_tasks": snapshot.open_tasks,
                "queued_tasks": snapshot.queued_tasks,
                "live_nodes": snapshot.live_nodes,
                "chain_height": snapshot.chain_height,
                "problem": snapshot.problem,
            })
        })
        .collect();
    let first = snapshots.first().map(|(_, snapshot)| snapshot.clone());
    // Summed over the cells (counts of things in memory, and counters).
    let sum = |figure: fn(&Snapshot) -> u64| snapshots.iter().map(|(_, snapshot)| figure(snapshot)).sum::<u64>();
    (
        code,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "role": first.as_ref().map(|snapshot| snapshot.role),
            "name": first.as_ref().map(|snapshot| snapshot.name.clone()),
            "epoch": first.as_ref().and_then(|snapshot| snapshot.epoch),
            "cells": cells,
            "postgres": postgres,
            "redis": redis,
            "open_tasks": sum(|snapshot| snapshot.open_tasks as u64),
            "queued_tasks": sum(|snapshot| snapshot.queued_tasks as u64),
            "live_nodes": sum(|snapshot| snapshot.live_nodes as u64),
            "batches": sum(|snapshot| snapshot.batches),
            "messages": sum(|snapshot| snapshot.messages),
            "statements": sum(|snapshot| snapshot.statements),
            "chain_height": first.as_ref().map_or(0, |snapshot| snapshot.chain_height),
            "pending_leaves": sum(|snapshot| snapshot.pending_leaves as u64),
            "blocks_sealed": sum(|snapshot| snapshot.blocks_sealed),
            "problem": snapshots.iter().find_map(|(_, snapshot)| snapshot.problem.clone()),
        })),
    )
}

/// The Prometheus exposition: what the writers recorded, each cell's state as of its last batch
/// (labelled by `cell`), and each cell's streams as Redis has them now.
async fn metrics(State(admin): State<Admin>) -> impl axum::response::IntoResponse {
    let Some((_, first)) = admin.cells.first() else {
        return ([(axum::http::header::CONTENT_TYPE, grid_shared::metrics::CONTENT_TYPE)], String::new());
    };
    let registry = &first.metrics;
    let (mut batches, mut messages, mut statements, mut blocks_sealed) = (0, 0, 0, 0);
    let mut redis_up = true;
    for (keys, status) in &admin.cells {
        let cell = keys.cell().as_str();
        let snapshot = status.snapshot();
        for role in [Role::Starting, Role::Standby, Role::TakingOver, Role::Writer, Role::Stopping] {
            registry
                .gauge("grid_writer_role", &[("cell", cell), ("role", &role_name(role))])
                .set(f64::from(u8::from(role == snapshot.role)));
        }
        registry.gauge("grid_writer_epoch", &[("cell", cell)]).set(snapshot.epoch.unwrap_or(0) as f64);
        if snapshot.role == Role::Writer {
            let on_nodes = snapshot.open_tasks.saturating_sub(snapshot.queued_tasks);
            registry.gauge("grid_tasks", &[("cell", cell), ("status", "queued")]).set(snapshot.queued_tasks as f64);
            registry.gauge("grid_tasks", &[("cell", cell), ("status", "on_nodes")]).set(on_nodes as f64);
            registry.gauge("grid_nodes_alive", &[("cell", cell)]).set(snapshot.live_nodes as f64);
            registry.gauge("grid_chain_height", &[("cell", cell)]).set(snapshot.chain_height as f64);
            registry.gauge("grid_chain_pending_leaves", &[("cell", cell)]).set(snapshot.pending_leaves as f64);
        }
        batches += snapshot.batches;
        messages += snapshot.messages;
        statements += snapshot.statements;
        blocks_sealed += snapshot.blocks_sealed;
        let streams = match admin.redis.get().await {
            Ok(mut conn) => crate::store::streams::stream_figures(&mut conn, keys).await.ok(),
            Err(_) => None,
        };
        redis_up &= streams.is_some();
        for figures in streams.unwrap_or_default() {
            let labels = [("cell", cell), ("stream", figures.stream)];
            registry.gauge("grid_stream_length", &labels).set(figures.length as f64);
            if let Some((pending, lag)) = figures.group {
                registry.gauge("grid_stream_pending", &labels).set(pending as f64);
                registry.gauge("grid_stream_lag", &labels).set(lag as f64);
            }
        }
    }
    registry.counter("grid_batches_total", &[]).absolute(batches);
    registry.counter("grid_messages_total", &[]).absolute(messages);
    registry.counter("grid_sql_statements_total", &[]).absolute(statements);
    registry.counter("grid_blocks_sealed_total", &[]).absolute(blocks_sealed);
    registry.gauge("grid_redis_up", &[]).set(if redis_up { 1.0 } else { 0.0 });
    ([(axum::http::header::CONTENT_TYPE, grid_shared::metrics::CONTENT_TYPE)], registry.render())
}
