//! Wiring: migrations, then the consumer loop, the outbox relay, the scheduler and housekeeping,
//! each its own task, all stopped by one cancellation token. On shutdown the consumer finishes
//! the step in hand, and the relay flushes what was committed.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::OrchestratorConfig;
use crate::consumer::{Consumer, Wakeups};
use crate::outbox;
use crate::scheduler::dispatch;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

const RELAY_BATCH: i64 = 500;
const SCHEDULE_BATCH: i64 = 256;
const BLOCK_MS: u64 = 500;
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Runs the orchestrator until `shutdown` is cancelled.
pub async fn run(config: OrchestratorConfig, pool: PgPool, shutdown: CancellationToken) -> anyhow::Result<()> {
    MIGRATOR.run(&pool).await?;
    let config = Arc::new(config);
    let redis = crate::store::redis::pool(&config.redis_url, 8).map_err(anyhow::Error::msg)?;
    let wakeups = Arc::new(Wakeups::default());
    let mut consumer = Consumer::new(pool.clone(), redis.clone(), config.clone(), wakeups.clone()).await?;
    info!(consumer = config.consumer_name, namespace = config.grid.keys.namespace(), "orchestrator started");

    let mut tasks = JoinSet::new();
    let tick = Duration::from_millis(config.tick_ms);

    let (relay_pool, relay_redis, relay_config, relay_wakeups, relay_stop) =
        (pool.clone(), redis.clone(), config.clone(), wakeups.clone(), shutdown.clone());
    tasks.spawn(async move {
        loop {
            let stopping = relay_stop.is_cancelled();
            match outbox::relay_once(&relay_pool, &relay_redis, &relay_config.grid.keys, RELAY_BATCH).await {
                Ok(relayed) if relayed as i64 == RELAY_BATCH => continue,
                Ok(_) if stopping => break,
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, "outbox relay failed; retrying");
                    if stopping {
                        break;
                    }
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
            tokio::select! {
                _ = relay_wakeups.relay.notified() => {}
                _ = tokio::time::sleep(tick) => {}
                _ = relay_stop.cancelled() => {}
            }
        }
    });

    let (sched_pool, sched_redis, sched_config, sched_wakeups, sched_stop) =
        (pool.clone(), redis.clone(), config.clone(), wakeups.clone(), shutdown.clone());
    tasks.spawn(async move {
        while !sched_stop.is_cancelled() {
            match dispatch::assign_queued(&sched_pool, &sched_redis, &sched_config, SCHEDULE_BATCH).await {
                Ok(assigned) if assigned > 0 => {
                    sched_wakeups.relay.notify_one();
                    if assigned as i64 == SCHEDULE_BATCH {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(error) => warn!(%error, "scheduling failed; retrying"),
            }
            tokio::select! {
                _ = sched_wakeups.scheduler.notified() => {}
                _ = tokio::time::sleep(tick) => {}
                _ = sched_stop.cancelled() => {}
            }
        }
    });

    let (house_pool, house_redis, house_config, house_wakeups, house_stop) =
        (pool.clone(), redis.clone(), config.clone(), wakeups.clone(), shutdown.clone());
    tasks.spawn(async move {
        let mut suspects = std::collections::HashSet::new();
        while !house_stop.is_cancelled() {
            let requeued = dispatch::requeue_from_offline_nodes(&house_pool, &house_redis, &house_config).await;
            let failed = dispatch::fail_overdue(&house_pool).await;
            let freed = dispatch::reconcile_claims(&house_pool, &house_redis, &house_config, &mut suspects).await;
            match (requeued, failed, freed) {
                (Ok(requeued), Ok(failed), Ok(freed)) if requeued + failed + freed > 0 => {
                    info!(requeued, failed, freed, "housekeeping moved tasks or freed cores");
                    house_wakeups.relay.notify_one();
                    house_wakeups.scheduler.notify_one();
                }
                (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
                    warn!(%error, "housekeeping failed; retrying")
                }
                _ => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(tick * 5) => {}
                _ = house_stop.cancelled() => {}
            }
        }
    });

    let claim_every = Duration::from_millis((config.claim_idle_ms / 2).max(100));
    let mut last_claim = tokio::time::Instant::now();
    while !shutdown.is_cancelled() {
        if last_claim.elapsed() >= claim_every {
            last_claim = tokio::time::Instant::now();
            if let Err(error) = consumer.claim_abandoned().await {
                warn!(%error, "claiming abandoned entries failed");
            }
        }
        match consumer.step(BLOCK_MS).await {
            Ok(outcome) if outcome.entries() > 0 => {
                tracing::debug!(
                    applied = outcome.applied,
                    duplicates = outcome.duplicates,
                    dead_lettered = outcome.dead_lettered,
                    "step"
                );
            }
            Ok(_) => {}
            Err(error) => {
                error!(%error, "consumer step failed; its entries stay pending");
                tokio::select! {
                    _ = tokio::time::sleep(ERROR_BACKOFF) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
    }
    info!("orchestrator stopping: draining the outbox");
    wakeups.relay.notify_one();
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined {
            error!(%error, "a background task panicked");
        }
    }
    info!("orchestrator stopped");
    Ok(())
}
