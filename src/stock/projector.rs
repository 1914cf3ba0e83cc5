//! The counter projector: the one writer of the stock store's counters, leased to one process
//! at a time (the others take over when its lease lapses). It follows the log from the
//! store's watermark and applies each page in one atomic step that names the
//! watermark it follows ([`StockStore::apply`]), so a page is never applied twice or skipped,
//! whichever process gets there first. When the store lost its data it rebuilds the counters
//! from the log under a new epoch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openrun_domain::order::{Order, OrderEvent};
use openrun_domain::stock::{Stock, StockEvent};
use openrun_domain::{MemberId, OrderId, ProductId, VariantId};
use tokio::sync::watch;

use super::{
    Applied, CounterBatch, CounterChange, HoldLine, Levels, StockStore, StoreState, per_product,
};
use crate::commands::Commands;
use crate::eventstore::{EventStore, RecordedEvent, StreamRef};

/// Events per page of the log.
const PAGE: usize = 500;
/// Bytes per page of the log.
const PAGE_BYTES: usize = 4 * 1024 * 1024;
/// How often the log is polled for appends of other processes.
const POLL: Duration = Duration::from_millis(50);
/// How long a rebuild may run before another process may take over.
const REBUILD_LEASE: Duration = Duration::from_secs(60);
/// How long the leading projector's lease lasts unrenewed (renewed at every step).
const LEAD_LEASE: Duration = Duration::from_secs(5);

/// The counter projector of this process.
pub struct CounterProjector {
    store: Arc<dyn StockStore>,
    events: Arc<dyn EventStore>,
    commands: Commands,
    /// Buyers of orders seen, for give-backs (their events do not name the buyer).
    buyers: moka::sync::Cache<OrderId, MemberId>,
    /// This projector's name in the lease.
    owner: String,
}

impl CounterProjector {
    /// A projector of `events` into `store`.
    pub fn new(
        store: Arc<dyn StockStore>,
        events: Arc<dyn EventStore>,
        commands: Commands,
    ) -> Self {
        Self {
            store,
            events,
            commands,
            buyers: moka::sync::Cache::new(100_000),
            owner: uuid::Uuid::now_v7().to_string(),
        }
    }

    /// Follows the log until `shutdown` turns true.
    pub async fn follow(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut appended = self.events.subscribe();
        let mut failures = 0u32;
        let mut notified = true;
        // A dropped sender is a stop too (the application went away).
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            let wait = match self.step().await {
                Ok(true) => Duration::ZERO,
                Ok(false) => {
                    failures = 0;
                    POLL
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::error!(error = format!("{e:#}"), "the counter projector failed");
                    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)))
                        .min(Duration::from_secs(5))
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                changed = shutdown.changed() => if changed.is_err() { break },
                changed = appended.changed(), if notified => notified = changed.is_ok(),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One step: rebuild when the counters are missing, else apply the next page. True when
    /// there may be more to do at once.
    pub async fn step(&self) -> anyhow::Result<bool> {
        match self.store.state().await? {
            StoreState::Missing => {
                self.rebuild().await?;
                Ok(true)
            }
            // Another process rebuilds; once its lease lapses, a rebuild may start here.
            StoreState::Rebuilding { .. } => {
                let rebuilt = self.rebuild().await?;
                Ok(rebuilt)
            }
            // One projector applies the log; the others wait to take over.
            StoreState::Ready { .. } if !self.store.lead(&self.owner, LEAD_LEASE).await? => {
                Ok(false)
            }
            StoreState::Ready { epoch, watermark } => self.apply_page(epoch, watermark).await,
        }
    }

    /// Applies every page up to the log's head as it is now.
    pub async fn catch_up(&self) -> anyhow::Result<()> {
        while self.step().await? {}
        Ok(())
    }

    async fn apply_page(&self, epoch: String, watermark: u64) -> anyhow::Result<bool> {
        let page = self
            .events
            .read_all_bounded(watermark, PAGE, PAGE_BYTES)
            .await?;
        let Some(last) = page.last().map(|e| e.global_position) else {
            return Ok(false);
        };
        let mut changes = Vec::new();
        for recorded in page {
            if let Some(change) = self.change(recorded).await? {
                changes.push(change);
            }
        }
        let batch = CounterBatch {
            epoch,
            after: watermark,
            to: last,
            changes,
        };
        match self.store.apply(&batch).await? {
            Applied::Done => {
                metrics::gauge!("openrun_stock_watermark").set(last as f64);
                Ok(true)
            }
            Applied::Stale => Ok(true),
        }
    }

    /// The counter change one event makes, if any.
    async fn change(&self, recorded: RecordedEvent) -> anyhow::Result<Option<CounterChange>> {
        Ok(match recorded.stream_type.as_str() {
            "stock" => {
                let variant_id = VariantId::from_uuid(recorded.stream_id.parse()?);
                let hold = recorded.metadata.hold_id;
                let delta = match self.commands.decode::<Stock>(recorded)? {
                    StockEvent::StockAdded { quantity, .. } => quantity,
                    StockEvent::StockAdjusted { delta, .. } => delta,
                };
                Some(CounterChange::Supply {
                    variant_id,
                    delta,
                    hold,
                })
            }
            "order" => {
                let order_id = OrderId::from_uuid(recorded.stream_id.parse()?);
                match self.commands.decode::<Order>(recorded)? {
                    OrderEvent::OrderPlaced {
                        buyer_id, lines, ..
                    } => {
                        self.buyers.insert(order_id, buyer_id);
                        Some(CounterChange::Placed {
                            order_id,
                            buyer: buyer_id,
                            lines: lines
                                .iter()
                                .map(|l| HoldLine {
                                    product_id: l.product_id,
                                    variant_id: l.variant_id,
                                    quantity: l.quantity,
                                })
                                .collect(),
                        })
                    }
                    OrderEvent::OrderDeclined { .. } | OrderEvent::OrderVoided { .. } => {
                        Some(CounterChange::Closed { order_id })
                    }
                    OrderEvent::OrderCancelled {
                        released: lines, ..
                    }
                    | OrderEvent::ReturnCompleted {
                        restocked: lines, ..
                    } => Some(CounterChange::GivenBack {
                        buyer: self.buyer_of(order_id).await?,
                        lines: lines
                            .iter()
                            .map(|l| HoldLine {
                                product_id: l.product_id,
                                variant_id: l.variant_id,
                                quantity: l.quantity,
                            })
                            .collect(),
                    }),
                    _ => None,
                }
            }
            _ => None,
        })
    }

    async fn buyer_of(&self, order_id: OrderId) -> anyhow::Result<MemberId> {
        if let Some(buyer) = self.buyers.get(&order_id) {
            return Ok(buyer);
        }
        let stream = StreamRef::new("order", order_id.to_string());
        let first = self.events.read_stream(&stream, 1, 1).await?;
        match first.into_iter().next() {
            Some(recorded) => match self.commands.decode::<Order>(recorded)? {
                OrderEvent::OrderPlaced { buyer_id, .. } => Ok(buyer_id),
                other => anyhow::bail!("order {order_id} begins with {other:?}"),
            },
            None => anyhow::bail!("order {order_id} has no events"),
        }
    }

    /// Rebuilds the counters from the log, when this process gets the lease. True when it
    /// rebuilt them.
    pub async fn rebuild(&self) -> anyhow::Result<bool> {
        let Some(epoch) = self.store.begin_rebuild(REBUILD_LEASE).await? else {
            return Ok(false);
        };
        let head = self.events.head_position().await?;
        tracing::warn!(
            epoch,
            head,
            "the stock counters are missing; rebuilding them from the log"
        );
        let mut available: HashMap<VariantId, i64> = HashMap::new();
        let mut bought: HashMap<(ProductId, MemberId), i64> = HashMap::new();
        let mut after = 0;
        while after < head {
            let page = self
                .events
                .read_all_bounded(after, PAGE, PAGE_BYTES)
                .await?;
            let Some(last) = page.last().map(|e| e.global_position) else {
                break;
            };
            for recorded in page.into_iter().take_while(|e| e.global_position <= head) {
                let (buyer, lines, sign) = match self.change(recorded).await? {
                    Some(CounterChange::Supply {
                        variant_id, delta, ..
                    }) => {
                        *available.entry(variant_id).or_default() += delta;
                        continue;
                    }
                    Some(CounterChange::Placed { buyer, lines, .. }) => (buyer, lines, 1),
                    Some(CounterChange::GivenBack { buyer, lines }) => (buyer, lines, -1),
                    Some(CounterChange::Closed { .. }) | None => continue,
                };
                for line in &lines {
                    *available.entry(line.variant_id).or_default() -=
                        sign * i64::from(line.quantity);
                }
                for (product, units) in per_product(&lines) {
                    *bought.entry((product, buyer)).or_default() += sign * units;
                }
            }
            after = last;
            // A long log takes long: the lease follows the work, page by page.
            if !self.store.extend_rebuild(&epoch, REBUILD_LEASE).await? {
                tracing::warn!(epoch, "another process took over the rebuild");
                return Ok(false);
            }
        }
        let levels = Levels {
            available: available.into_iter().collect(),
            bought: bought
                .into_iter()
                .filter(|(_, n)| *n != 0)
                .map(|((p, m), n)| (p, m, n))
                .collect(),
        };
        let done = self.store.finish_rebuild(&epoch, head, &levels).await?;
        if done {
            tracing::info!(
                epoch,
                head,
                variants = levels.available.len(),
                "stock counters rebuilt"
            );
        }
        Ok(done)
    }
}
