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
use crate::scheduler::{dispatch, housekeeping};

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
        let mut round: u64 = 0;
        while !house_stop.is_cancelled() {
            round += 1;
            let (pool, redis, config) = (&house_pool, &house_redis, &*house_config);
            // Every tick: a dead node's tasks are back in the queue within TTL + one tick.
            let steps = [
                ("offline nodes", housekeeping::requeue_from_offline_nodes(pool, redis, config).await),
                ("start leases", housekeeping::expire_start_leases(pool, redis, config).await),
                ("deadlines", housekeeping::fail_overdue(pool, redis, config).await),
                (
                    "leaked claims",
                    if round.is_multiple_of(10) {
                        housekeeping::reconcile_claims(pool, redis, config, &mut suspects).await
                    } else {
                        Ok(0)
                    },
                ),
            ];
            let mut moved = 0;
            for (step, outcome) in steps {
                match outcome {
                    Ok(count) if count > 0 => {
                        info!(step, count, "housekeeping moved tasks or freed cores");
                        moved += count;
                    }
                    Ok(_) => {}
                    Err(error) => warn!(step, %error, "housekeeping step failed; retrying"),
                }
            }
            if moved > 0 {
                house_wakeups.relay.notify_one();
                house_wakeups.scheduler.notify_one();
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
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
