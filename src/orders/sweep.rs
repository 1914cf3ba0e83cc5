//! The sweeps: what a crash, a lost answer or an abandoned request leaves behind is closed
//! past a grace period (several times the order handler's deadline, so no handler still at
//! work is overtaken).
//!
//! - Reservation sweep: a hold with no `OrderPlaced` gets `OrderVoided` at version 0. If the
//!   close commits, the charge (if any) is refunded and the counter projector gives the hold
//!   back. If it conflicts, the stream's first event decides: a hold whose `OrderPlaced` or
//!   close the projector has passed already is a leftover (for example of a retry after a
//!   flush) and is released.
//! - Charge sweep: a charge the gateway holds for an order with no `OrderPlaced` is closed
//!   the same way and refunded (refund id UUIDv5(order, "void")); one whose order was placed
//!   is marked settled.
//!
//! - An adjustment's hold (a downward supply change holds what it takes) past the grace
//!   period is released: the change is in the log, where the counter projector takes its
//!   units itself, or it never will be.
//!
//! Only whoever commits a closing event refunds, and a refund is keyed by its id, so a sweep
//! racing a handler, another sweep or itself after a crash pays back at most once.

use std::sync::Arc;
use std::time::Duration;

use openrun_domain::OrderId;
use openrun_domain::order::VoidReason;
use tokio::sync::watch;

use super::Orders;
use crate::clock::SharedClock;
use crate::eventstore::{EventStore, StreamRef};
use crate::payment::PaymentGateway;
use crate::stock::StockStore;

/// Holds or charges looked at per round.
const ROUND: usize = 200;
/// How often the sweeps run.
const EVERY: Duration = Duration::from_secs(1);

/// The sweeps of this process.
pub struct Sweeper {
    orders: Arc<Orders>,
    stock: Arc<dyn StockStore>,
    gateway: Arc<dyn PaymentGateway>,
    events: Arc<dyn EventStore>,
    clock: SharedClock,
    grace: chrono::Duration,
}

impl Sweeper {
    /// Sweeps past `grace`.
    pub fn new(
        orders: Arc<Orders>,
        stock: Arc<dyn StockStore>,
        gateway: Arc<dyn PaymentGateway>,
        events: Arc<dyn EventStore>,
        clock: SharedClock,
        grace: Duration,
    ) -> Self {
        Self {
            orders,
            stock,
            gateway,
            events,
            clock,
            grace: chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::minutes(2)),
        }
    }

    /// Sweeps every [`EVERY`] until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // A dropped sender is a stop too (the application went away).
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            if let Err(e) = self.sweep().await {
                tracing::error!(error = format!("{e:#}"), "the order sweep failed");
            }
            tokio::select! {
                changed = shutdown.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(EVERY) => {}
            }
        }
    }

    /// One round of both sweeps; returns how many holds and charges it settled.
    pub async fn sweep(&self) -> anyhow::Result<usize> {
        let mut settled = 0;
        // One item that fails (its refund, its stream) is logged and tried again next round;
        // it never stops the items after it.
        let before = self.stock.now().await? - self.grace;
        for hold in self.stock.stale_holds(before, ROUND).await? {
            match self.settle_hold(hold.order_id).await {
                Ok(true) => settled += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(order = %hold.order_id, error = format!("{e:#}"), "a stale hold could not be settled")
                }
            }
        }
        // An adjustment's hold past the grace, once the projector has applied the log up to
        // its head (a change in the log released its hold then): its change never came, or
        // comes later still, when the projector takes its units whatever became of the hold.
        let mut stale = self.stock.stale_unit_holds(before, ROUND).await?;
        if !stale.is_empty() {
            let head = self.events.head_position().await?;
            let caught_up = matches!(
                self.stock.state().await?,
                crate::stock::StoreState::Ready { watermark, .. } if watermark >= head
            );
            if !caught_up {
                stale.clear();
            }
        }
        for hold in stale {
            match self.stock.release_units(hold).await {
                Ok(()) => settled += 1,
                Err(e) => {
                    tracing::warn!(hold = %hold, error = format!("{e:#}"), "an adjustment's hold could not be released")
                }
            }
        }
        let before = self.clock.now() - self.grace;
        for charge in self.gateway.unsettled(before, ROUND).await? {
            match self.settle_charge(charge.order_id).await {
                Ok(true) => settled += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(order = %charge.order_id, error = format!("{e:#}"), "a charge could not be settled")
                }
            }
        }
        if settled > 0 {
            metrics::counter!("openrun_order_sweeps_total").increment(settled as u64);
        }
        Ok(settled)
    }

    /// The first event of the order's stream: its type and position.
    async fn first(&self, order_id: OrderId) -> anyhow::Result<Option<(String, u64)>> {
        let stream = StreamRef::new("order", order_id.to_string());
        Ok(self
            .events
            .read_stream(&stream, 1, 1)
            .await?
            .into_iter()
            .next()
            .map(|e| (e.event_type, e.global_position)))
    }

    async fn settle_hold(&self, order_id: OrderId) -> anyhow::Result<bool> {
        // The log first: a placed or closed order needs no append (a conflicting close on
        // every placed order would cost every process an append per order).
        let first = match self.first(order_id).await? {
            Some(first) => Some(first),
            None if self.void(order_id, VoidReason::Abandoned).await? => {
                tracing::info!(order = %order_id, "an abandoned hold was closed");
                return Ok(true);
            }
            None => self.first(order_id).await?,
        };
        // The stream has an order or a close: the hold is a leftover once the projector
        // passed it (until then the projector settles it itself).
        match first {
            Some((_, position)) => Ok(self.stock.release_leftover(order_id, position).await?),
            None => Ok(false),
        }
    }

    async fn settle_charge(&self, order_id: OrderId) -> anyhow::Result<bool> {
        let first = match self.first(order_id).await? {
            Some(first) => Some(first),
            None if self.void(order_id, VoidReason::OrphanedCharge).await? => {
                tracing::info!(order = %order_id, "a charge with no order was refunded");
                return Ok(true);
            }
            None => self.first(order_id).await?,
        };
        match first {
            Some((event_type, _)) if event_type == "OrderPlaced" => {
                self.gateway.settle(order_id).await?;
                Ok(true)
            }
            // Closed without an order: refunded by its id, once whoever asks.
            Some(_) => {
                self.orders
                    .refund_void(order_id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn void(&self, order_id: OrderId, reason: VoidReason) -> anyhow::Result<bool> {
        self.orders
            .void(order_id, reason)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}
