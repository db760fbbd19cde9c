//! `/healthz` and `/readyz` of an orchestrator process: liveness, and readiness with the role
//! (writer or standby) and the epoch, so that an operator sees which process writes.

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
    redis: deadpool_redis::Pool,
}

pub fn router(status: Arc<Status>, pool: PgPool, redis: deadpool_redis::Pool) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .with_state(Admin { status, pool, redis })
}

/// 200 when PostgreSQL and Redis answer and the process is the writer or a standby ready to
/// take over; 503 otherwise. The body says which.
async fn readyz(State(admin): State<Admin>) -> (StatusCode, Json<Value>) {
    let postgres = sqlx::query("select 1").execute(&admin.pool).await.is_ok();
    let redis = match admin.redis.get().await {
        Ok(mut conn) => redis::cmd("PING").query_async::<String>(&mut *conn).await.is_ok(),
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
