//! The projections this service runs, and their lifecycle: installed and started with the
//! application, stopped with it. The machinery lives in the `openrun-projections` crate.

use std::sync::Arc;

use openrun_projections::Projection;
use openrun_projections::orders::Orders;
use openrun_projections::outbox::Outbox;
use openrun_projections::runner::{self, RunnerConfig};
use openrun_projections::schedule::Schedule;
use openrun_projections::seller_orders::SellerOrders;
use openrun_projections::store::{self, Tables};
use openrun_projections::streams::Streams;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::db::Database;
use crate::eventstore::{EventStore, LogSource};

/// Every projection, by name.
pub fn registry() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(Streams),
        Arc::new(Schedule),
        Arc::new(Orders),
        Arc::new(SellerOrders),
        Arc::new(Outbox),
    ]
}

/// The projection called `name`.
pub fn find(name: &str) -> Option<Arc<dyn Projection>> {
    registry().into_iter().find(|p| p.name() == name)
}

/// The running followers of this process.
pub struct Projectors {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Projectors {
    /// Installs every projection's tables and starts following the log.
    pub async fn start(db: &Database, events: Arc<dyn EventStore>) -> anyhow::Result<Self> {
        let projections = registry();
        for projection in &projections {
            runner::install(db, projection.as_ref()).await?;
        }
        let (shutdown, stop) = watch::channel(false);
        let source = Arc::new(LogSource(events));
        let tasks = runner::spawn(
            db.clone(),
            source,
            projections,
            RunnerConfig::default(),
            stop,
        );
        Ok(Self { shutdown, tasks })
    }

    /// Stops the followers after their current batch.
    pub async fn stop(self) {
        // Ignored error: every follower already stopped.
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a projection follower failed");
            }
        }
    }
}

/// A projection's position against the head of the log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// The projection.
    pub name: &'static str,
    /// The position it has applied up to.
    pub checkpoint: u64,
    /// Events it has still to apply.
    pub lag: u64,
}

/// The status of every projection.
pub async fn status(db: &Database, events: &dyn EventStore) -> anyhow::Result<Vec<Status>> {
    let head = events.head_position().await?;
    let mut all = Vec::new();
    for projection in registry() {
        runner::install(db, projection.as_ref()).await?;
        let checkpoint = store::checkpoint(db, projection.name(), &Tables::LIVE).await?;
        all.push(Status {
            name: projection.name(),
            checkpoint,
            lag: head.saturating_sub(checkpoint),
        });
    }
    Ok(all)
}
