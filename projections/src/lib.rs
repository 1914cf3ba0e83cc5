//! Read models that follow the event log, and the machinery that runs them.
//!
//! A [`Projection`] has a name, owns a few tables, and turns each recorded event into writes
//! to them. The [`runner`] feeds it: it catches up from the projection's checkpoint, then
//! follows new events, woken by appends made in this process and polling for those made by
//! other processes. The read-model writes of a batch and the move of the checkpoint commit
//! in one transaction, and the checkpoint moves only from the position the batch started at
//! (compare-and-set), so every event takes effect exactly once per projection, across crashes
//! and even if two processes ever ran the same projection at once. A lease in the database
//! makes sure that normally only one process does.
//!
//! # Layout
//! - [`log`]: recorded events and the [`log::EventSource`] they are read from.
//! - [`store`]: the database handle, transactions on either backend, checkpoints and leases.
//! - [`runner`]: catch-up and follow, one task per projection.
//! - [`rebuild`]: replay from zero into fresh tables and swap them in.
//! - [`streams`]: the stream index read model (one row per stream).
//! - [`schedule`]: the durable schedule of timed transitions, filled from events.
//! - [`orders`], [`seller_orders`]: order summaries per buyer, and per seller's product.
//! - [`outbox`]: work for the world outside (confirmation e-mails, refunds to pay back).
#![warn(missing_docs)]

pub mod log;
pub mod orders;
pub mod outbox;
pub mod rebuild;
pub mod runner;
pub mod schedule;
pub mod seller_orders;
pub mod store;
pub mod streams;

use async_trait::async_trait;

use log::RecordedEvent;
use store::{Pool, Tables, Tx};

/// A read model fed by the event log.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: used for the checkpoint, the lease and the CLI.
    fn name(&self) -> &'static str;

    /// Creates the projection's tables, named through `tables`, if they do not exist. Use
    /// only PRIMARY KEY and UNIQUE constraints for indexes: SQLite index names are global, and
    /// a rebuild creates a second set of tables beside the live one.
    async fn create_tables(&self, pool: &Pool, tables: &Tables) -> anyhow::Result<()>;

    /// The tables [`Projection::create_tables`] creates, by base name (a rebuild swaps them),
    /// in the order the live follower writes them: a swap locks them in this order, then the
    /// checkpoint, so that it never waits on the follower in the opposite order.
    fn tables(&self) -> &'static [&'static str];

    /// Whether the projection's tables hold state besides what the log derives (for example
    /// what a consumer of the tables writes into them, as the scheduler does in the
    /// schedule). A rebuild of such a projection swaps in one transaction with
    /// [`Projection::carry_over`], so that no reader ever sees that state missing; one of any
    /// other projection swaps by renaming its tables. Default: no such state.
    fn holds_state_outside_the_log(&self) -> bool {
        false
    }

    /// Carries what the projection's tables hold besides what the log derives from the
    /// `from` tables into the `into` tables, inside `tx`: the rebuild's swap, which also
    /// holds every row of the `from` tables locked, so that nothing changes them until the
    /// rebuilt tables have taken their place. Called only when
    /// [`Projection::holds_state_outside_the_log`] is true.
    async fn carry_over(&self, _tx: &mut Tx, _from: &Tables, _into: &Tables) -> anyhow::Result<()> {
        Ok(())
    }

    /// The last step of a swap in one transaction, after the live tables hold the rebuilt
    /// rows and before the commit: an error rolls the whole swap back. Default: nothing to
    /// check.
    async fn check_swap(&self, _tx: &mut Tx, _live: &Tables) -> anyhow::Result<()> {
        Ok(())
    }

    /// Applies one event inside the batch's transaction.
    async fn apply(
        &self,
        tx: &mut Tx,
        tables: &Tables,
        event: &RecordedEvent,
    ) -> anyhow::Result<()>;

    /// Applies a batch of consecutive events inside one transaction. The default applies
    /// them one by one; a projection may fold the batch into fewer statements, as long as
    /// the result equals applying each event in order.
    async fn apply_batch(
        &self,
        tx: &mut Tx,
        tables: &Tables,
        events: &[RecordedEvent],
    ) -> anyhow::Result<()> {
        for event in events {
            self.apply(tx, tables, event)
                .await
                .map_err(|e| e.context(format!("applying event {}", event.global_position)))?;
        }
        Ok(())
    }
}

/// A projection that writes through a [`store::Writer`], so that a batch's runs of inserts
/// go out as multi-row statements.
#[async_trait::async_trait]
pub(crate) trait Written: Sync {
    /// Writes what one event changes.
    async fn write(
        &self,
        w: &mut store::Writer<'_>,
        tables: &Tables,
        event: &RecordedEvent,
    ) -> anyhow::Result<()>;
}

/// [`Projection::apply_batch`] of a [`Written`] projection.
pub(crate) async fn write_all(
    projection: &impl Written,
    tx: &mut Tx,
    tables: &Tables,
    events: &[RecordedEvent],
) -> anyhow::Result<()> {
    let mut w = store::Writer::new(tx);
    for event in events {
        projection
            .write(&mut w, tables, event)
            .await
            .map_err(|e| e.context(format!("applying event {}", event.global_position)))?;
    }
    w.flush().await?;
    Ok(())
}
