//! Wiring: migrations, the admin endpoint, then the roles. The process waits as a standby for
//! the writer's lease ([`crate::lease`]), serves as the writer while it holds it
//! ([`crate::writer::serve`]), and waits again if it loses it. Shutdown is an argument: the
//! writer finishes the batch in hand, publishes it, and gives the lease up at once.

use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::OrchestratorConfig;
use crate::lease::Lease;
use crate::status::{Role, Status};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Runs the orchestrator until `shutdown` is cancelled.
pub async fn run(config: OrchestratorConfig, pool: PgPool, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_status(config, pool, shutdown, Arc::new(Status::new("orchestrator"))).await
}

/// Cells cannot be renamed or removed (DESIGN §11): a cell whose writer wrote to PostgreSQL and
/// that `GRID_CELLS` does not name is an operator's mistake to say at start (its tasks and nodes
/// wait for a writer of that cell), unless another process of the grid serves it.
async fn warn_of_unnamed_cells(pool: &PgPool, config: &OrchestratorConfig) {
    let written: Vec<String> = match sqlx::query_scalar!("select cell_id from writer where epoch > 0 order by cell_id")
        .fetch_all(pool)
        .await
    {
        Ok(cells) => cells,
        Err(error) => return warn!(%error, "could not read the cells PostgreSQL has writers for"),
    };
    let named: Vec<&str> = config.grid.cells.iter().map(|cell| cell.name.as_str()).collect();
    for cell in written.iter().filter(|cell| !named.contains(&cell.as_str())) {
        warn!(
            %cell,
            grid_cells = named.join(","),
            "PostgreSQL holds a cell GRID_CELLS does not name: its nodes and open tasks wait for a writer of \
             that cell (cells are never renamed or removed; rows written before cells are the cell main's)"
        );
    }
}

/// Like [`run`], reporting its role in `status` (tests read it).
pub async fn run_with_status(
    config: OrchestratorConfig,
    pool: PgPool,
    shutdown: CancellationToken,
    status: Arc<Status>,
) -> anyhow::Result<()> {
    MIGRATOR.run(&pool).await?;
    warn_of_unnamed_cells(&pool, &config).await;
    let config = Arc::new(config);
    status.update(|snapshot| snapshot.name = config.consumer_name.clone());
    let redis = crate::store::streams::redis(&config.redis, 4)?;
    let listener = match config.admin_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|error| anyhow::anyhow!("GRID_ADMIN_LISTEN {address}: {error}"))?,
        ),
        None => None,
    };
    if let Some(listener) = &listener {
        let bound = listener.local_addr()?;
        status.update(|snapshot| snapshot.admin_address = Some(bound));
    }
    // One status per cell this process writes (the first is `status`), sharing its metrics.
    let cells: Vec<CellStatus> = config
        .writer_cells
        .iter()
        .enumerate()
        .map(|(index, cell)| {
            let keys = config.grid.keys.cell_keys(cell);
            (keys, if index == 0 { status.clone() } else { Arc::new(status.for_another_cell()) })
        })
        .collect();
    if let Some(listener) = listener {
        let bound = listener.local_addr()?;
        info!(address = %bound, "admin endpoint (/healthz, /readyz, /metrics) listening");
        let router = crate::admin::router(cells.clone(), pool.clone(), redis.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let served =
                axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await;
            if let Err(error) = served {
                warn!(%error, "the admin endpoint stopped");
            }
        });
    }
    let (upkeep_status, upkeep_stop) = (status.clone(), shutdown.clone());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(grid_shared::metrics::UPKEEP_EVERY);
        while tokio::select! { () = upkeep_stop.cancelled() => false, _ = ticks.tick() => true } {
            upkeep_status.metrics.upkeep();
        }
    });
    let signals = config.signals.has_live_source().then(|| {
        let (sender, feed) = tokio::sync::watch::channel(config.signals.initial.clone());
        let fetcher = crate::signals::run_fetcher(
            config.signals.clone(),
            config.grid.zones.clone(),
            sender,
            status.clone(),
            shutdown.clone(),
        );
        tokio::spawn(fetcher);
        feed
    });
    let names: Vec<&str> = config.writer_cells.iter().map(|cell| cell.as_str()).collect();
    info!(
        name = config.consumer_name,
        namespace = config.grid.keys.namespace(),
        cells = names.join(","),
        signals = ?config.signals,
        "orchestrator started"
    );
    // Each cell's lease is waited for, held and lost on its own: a takeover of one cell moves
    // nothing else.
    let mut writers = tokio::task::JoinSet::new();
    for (keys, cell_status) in &cells {
        let cell_config = Arc::new(config.for_cell(keys.cell()));
        writers.spawn(serve_cell(
            cell_config,
            pool.clone(),
            redis.clone(),
            cell_status.clone(),
            signals.clone(),
            shutdown.clone(),
        ));
    }
    while writers.join_next().await.is_some() {}
    info!("orchestrator stopped");
    Ok(())
}

/// A cell's keys and this process's status in it.
pub type CellStatus = (grid_shared::wire::Keys, Arc<Status>);

/// One cell: wait for its lease, write it while the lease holds, wait again when it is lost.
async fn serve_cell(
    config: Arc<OrchestratorConfig>,
    pool: PgPool,
    redis: grid_shared::wire::connection::Redis,
    status: Arc<Status>,
    signals: Option<crate::signals::Feed>,
    shutdown: CancellationToken,
) {
    let cell = config.grid.cell().name.clone();
    while !shutdown.is_cancelled() {
        status.set_role(Role::Standby);
        info!(name = config.consumer_name, %cell, "standby: waiting for the cell's writer lease");
        let lease = match Lease::acquire(&pool, &config.consumer_name, &cell, &shutdown).await {
            Ok(Some(lease)) => lease,
            Ok(None) => break,
            Err(error) => {
                warn!(%error, %cell, "could not wait for the writer's lease; retrying");
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        info!(name = config.consumer_name, %cell, epoch = lease.epoch, "this process is now the cell's writer");
        let feed = signals.clone();
        crate::writer::serve(config.clone(), pool.clone(), redis.clone(), lease, status.clone(), feed, &shutdown).await;
    }
    status.set_role(Role::Stopping);
}
