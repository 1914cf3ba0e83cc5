//! Runs projections: catch up from the checkpoint, then follow the log.
//!
//! One task per projection. Each round it makes sure it holds the projection's lease (so that
//! normally one process in the cluster feeds a projection; another takes over within
//! [`RunnerConfig::lease_ttl`] of its death), reads the next batch after the checkpoint,
//! applies it in one transaction with the checkpoint's compare-and-set move, and commits.
//! With nothing to read it sleeps until this process appends (the event source's watch) or
//! [`RunnerConfig::poll_interval`] passes (appends of other processes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Projection;
use crate::log::{Batch, EventSource};
use crate::store::{self, Pool, Tables};

/// Tuning of the runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Most events (and bytes of them) applied in one transaction.
    pub batch: Batch,
    /// How often to look for events appended by other processes.
    pub poll_interval: Duration,
    /// After a batch that caught up with the log, how long to let new appends gather before
    /// the next round: during a drop, a follower applies a few large batches instead of one
    /// small transaction per group commit, and leaves the cores to the orders.
    pub gather: Duration,
    /// How long a lease lasts unless renewed; a dead process's projections move within it.
    pub lease_ttl: Duration,
    /// Who this process is, in leases.
    pub owner: String,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch: Batch {
                events: 500,
                bytes: 4 << 20,
            },
            poll_interval: Duration::from_millis(500),
            gather: Duration::from_millis(200),
            lease_ttl: Duration::from_secs(5),
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple()),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Applied events up to this position.
    Applied(u64),
    /// Nothing new after the checkpoint, which is at this position.
    Idle(u64),
    /// Another process holds the lease.
    NotLeader,
}

/// Prepares a projection's tables and checkpoint.
pub async fn install(pool: &Pool, projection: &dyn Projection) -> anyhow::Result<()> {
    projection.create_tables(pool, &Tables::LIVE).await?;
    store::create_checkpoint(pool, projection.name(), &Tables::LIVE).await
}

/// Applies the next batch after the checkpoint of `projection` to `tables`. The caller holds
/// the projection's lease (the checkpoint's compare-and-set keeps even a mistaken second
/// runner from applying anything twice).
pub async fn step(
    pool: &Pool,
    source: &dyn EventSource,
    projection: &dyn Projection,
    tables: &Tables,
    batch: Batch,
) -> anyhow::Result<Step> {
    let name = projection.name();
    let from = store::checkpoint(pool, name, tables).await?;
    let events = source
        .read_all(from, batch)
        .await
        .map_err(|e| anyhow::anyhow!("reading the event log: {e}"))?;
    let Some(last) = events.last().map(|e| e.global_position) else {
        return Ok(Step::Idle(from));
    };
    let mut tx = pool.begin().await?;
    projection
        .apply_batch(&mut tx, tables, &events)
        .await
        .with_context(|| format!("{name}: applying events {}..={last}", from + 1))?;
    if !store::advance(&mut tx, name, tables, from, last).await? {
        // Another runner moved the checkpoint: drop this batch (the transaction rolls back).
        tracing::warn!(
            projection = name,
            "checkpoint moved under this runner; batch dropped"
        );
        return Ok(Step::NotLeader);
    }
    tx.commit().await?;
    Ok(Step::Applied(last))
}

/// Starts one follower task per projection; they stop when `shutdown` turns true.
pub fn spawn(
    pool: Pool,
    source: Arc<dyn EventSource>,
    projections: Vec<Arc<dyn Projection>>,
    config: RunnerConfig,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    projections
        .into_iter()
        .map(|projection| {
            let follower = Follower {
                pool: pool.clone(),
                source: Arc::clone(&source),
                projection,
                config: config.clone(),
            };
            tokio::spawn(follower.run(shutdown.clone()))
        })
        .collect()
}

struct Follower {
    pool: Pool,
    source: Arc<dyn EventSource>,
    projection: Arc<dyn Projection>,
    config: RunnerConfig,
}

impl Follower {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let name = self.projection.name();
        let mut appended = self.source.subscribe();
        let mut leader = false;
        let mut lease_renewed = Instant::now() - self.config.lease_ttl;
        let mut failures = 0u32;
        // A dropped sender is a stop too (the application went away).
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            let wait = match self.round(&mut leader, &mut lease_renewed).await {
                Ok((Step::Applied(_), behind)) => {
                    failures = 0;
                    // A backlog of a batch or more goes on at once; less is left to grow.
                    if behind >= self.config.batch.events as u64 {
                        continue;
                    }
                    tokio::select! {
                        _ = shutdown.changed() => {}
                        () = tokio::time::sleep(self.config.gather) => {}
                    }
                    continue;
                }
                Ok((Step::Idle(_), _)) => self.config.poll_interval,
                Ok((Step::NotLeader, _)) => self.config.lease_ttl / 5,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::error!(
                        projection = name,
                        error = format!("{e:#}"),
                        "projection round failed"
                    );
                    // Back off: 0.2 s, 0.4 s, ... up to 10 s.
                    Duration::from_millis(200u64.saturating_mul(1 << failures.min(6)))
                        .min(Duration::from_secs(10))
                }
            };
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = appended.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        if leader {
            // Ignored error: the lease expires on its own.
            let _ = store::release_lease(&self.pool, name, &self.config.owner).await;
        }
    }

    /// One round: its step, and how many events the log holds past it.
    async fn round(&self, leader: &mut bool, renewed: &mut Instant) -> anyhow::Result<(Step, u64)> {
        let name = self.projection.name();
        // Renew well before expiry: a third of the lease.
        if !*leader || renewed.elapsed() >= self.config.lease_ttl / 3 {
            *leader =
                store::acquire_lease(&self.pool, name, &self.config.owner, self.config.lease_ttl)
                    .await?;
            *renewed = Instant::now();
            if !*leader {
                return Ok((Step::NotLeader, 0));
            }
        }
        let step = step(
            &self.pool,
            self.source.as_ref(),
            self.projection.as_ref(),
            &Tables::LIVE,
            self.config.batch,
        )
        .await?;
        let mut behind = 0;
        if let (Step::Applied(at) | Step::Idle(at), Ok(head)) =
            (step, self.source.head_position().await)
        {
            behind = head.saturating_sub(at);
            metrics::gauge!("openrun_projection_lag_events", "projection" => name)
                .set(behind as f64);
        }
        Ok((step, behind))
    }
}
