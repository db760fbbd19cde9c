//! One term as the writer: take over, step until shutdown, a lost lease or a fence, recover
//! from failures, and give the lease up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use grid_shared::wire::connection::Redis;
use sqlx::PgPool;
use tracing::{error, info, warn};

use super::{Writer, WriterError};
use crate::config::OrchestratorConfig;
use crate::status::{Role, Status};

/// Runs one term as the writer, until shutdown, a lost lease or a fence; then gives the lease up.
pub async fn serve(
    config: Arc<OrchestratorConfig>,
    pool: PgPool,
    redis: Redis,
    mut lease: crate::lease::Lease,
    status: Arc<Status>,
    signals: Option<crate::signals::Feed>,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    let epoch = lease.epoch;
    status.update(|snapshot| {
        snapshot.role = Role::TakingOver;
        snapshot.epoch = Some(epoch);
    });
    let mut writer = loop {
        match Writer::take_over(config.clone(), pool.clone(), redis.clone(), epoch, status.clone()).await {
            Ok(mut writer) => {
                if let Some(feed) = &signals {
                    writer.follow_signals(feed.clone());
                }
                break writer;
            }
            Err(error) => {
                error!(%error, "taking over failed; retrying");
                status.update(|snapshot| snapshot.problem = Some(error.to_string()));
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shutdown.cancelled() => { lease.release().await; return; }
                }
            }
        }
    };
    let mut last_lease_check = Instant::now();
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        if last_lease_check.elapsed() >= Duration::from_millis(500) {
            last_lease_check = Instant::now();
            if !lease.alive().await {
                error!(epoch, "the lease's connection is gone: stepping down");
                break;
            }
        }
        match writer.step().await {
            Ok(_) => backoff = Duration::from_millis(100),
            Err(WriterError::Fenced { held, current }) => {
                error!(held, current, "another writer took over: stepping down");
                break;
            }
            Err(error) => {
                error!(%error, "batch failed; its entries stay pending");
                status.update(|snapshot| snapshot.problem = Some(error.to_string()));
                let postgres = matches!(error, WriterError::Postgres(_));
                if !postgres {
                    // Redis failed, restarted or lost its data: checked and made whole first.
                    writer.redis_suspect = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                if postgres {
                    while let Err(error) = writer.rebuild().await {
                        if matches!(error, WriterError::Fenced { .. }) || shutdown.is_cancelled() {
                            break;
                        }
                        warn!(%error, "rebuilding the state failed; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = shutdown.cancelled() => break,
                        }
                    }
                }
            }
        }
    }
    status.set_role(Role::Stopping);
    if let Err(error) = writer.record_published().await {
        warn!(%error, "could not record how far the events were published; the next writer publishes them again");
    }
    lease.release().await;
    info!(epoch = writer.epoch(), "writer stepped down");
}
