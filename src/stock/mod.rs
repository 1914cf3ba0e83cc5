//! The hot stock store: units left to sell per variant, units each member bought per product,
//! the holds of orders in flight and their idempotency records, in Redis (production) or in
//! this process (the embedded default), behind one trait and one conformance suite.
//!
//! # What it does, and what it does not decide
//! - [`StockStore::hold`] is the order path's one step: in a single atomic call it checks the
//!   order's idempotency record (in flight, finished, another body), the sale window of every
//!   product and the buyer's purchase limit against the store's own clock (Redis's `TIME`, so
//!   every service process opens a drop at the same instant), and holds every line or none.
//! - The counters are a projection of the log with one owner, the counter projector
//!   ([`projector`]): it applies the log in batches through [`StockStore::apply`], which skips
//!   nothing and applies nothing twice (the batch names the watermark it follows). An
//!   `OrderPlaced` releases its order's hold (which gives back what it took, when it is of
//!   the current epoch) and takes the units it sold, so each order counts once whatever its
//!   hold held. A closed order (declined or voided) gives its hold back.
//! - When the store lost its data (the meta key, the sentinel, is gone: a flush, a restart
//!   without persistence, a failover to an empty primary), one process under a lease starts a
//!   new epoch, folds the log up to its head and installs every counter at once
//!   ([`StockStore::begin_rebuild`], [`StockStore::finish_rebuild`]); meanwhile holds are
//!   refused as [`HoldOutcome::Rebuilding`] (503), never as sold out. Holds of an older epoch
//!   count for nothing, so each order is counted exactly once.
//! - The store is the fast filter, not the truth: the log's guarded counters refuse an
//!   oversell even when the store lost acknowledged writes.
//!
//! # Layout
//! - [`memory`]: the in-process store.
//! - [`redis`]: the Redis store (Lua scripts, one hash tag).
//! - [`projector`]: the counter projector and the rebuild.

pub mod memory;
pub mod projector;
pub mod redis;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use openrun_domain::{MemberId, OrderId, ProductId, VariantId};

/// How long a finished order's answer is kept for retries with the same key.
pub const RECORD_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// One line to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLine {
    /// The product.
    pub product_id: ProductId,
    /// The variant whose units are held.
    pub variant_id: VariantId,
    /// How many.
    pub quantity: u32,
}

/// What the order path knows of a product from the live catalog, for the store to check
/// against its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleTerms {
    /// The product.
    pub product_id: ProductId,
    /// On sale from this instant (a pending opening); `None` when on sale already.
    pub opens_at: Option<DateTime<Utc>>,
    /// On sale until this instant (a pending end); `None` when no end is planned.
    pub ends_at: Option<DateTime<Utc>>,
    /// Units one member may buy, across the product's variants and orders.
    pub limit: Option<u32>,
}

/// An order's request to hold its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    /// The order (UUIDv5 of the buyer and the key).
    pub order_id: OrderId,
    /// The buyer.
    pub buyer: MemberId,
    /// The fingerprint of the request body.
    pub fingerprint: String,
    /// The lines, each variant once.
    pub lines: Vec<HoldLine>,
    /// The terms of every product of the lines.
    pub terms: Vec<SaleTerms>,
    /// For an order from the cart in a store that reads carts
    /// ([`crate::cart::CartStore::read_by_hold`]): the lines' quantities are taken from the
    /// buyer's cart as it stands at this instant of the service's clock, in the same atomic
    /// step (the lines' own quantities are ignored). `None`: the lines' quantities.
    pub from_cart: Option<DateTime<Utc>>,
}

/// What a hold did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Every line is held, at the store's instant.
    Held {
        /// The store's clock.
        at: DateTime<Utc>,
        /// The epoch of the counters that held it.
        epoch: String,
        /// The lines held, with their quantities.
        lines: Vec<HoldLine>,
    },
    /// A retry of an order whose payment outcome was unknown: its hold is still there.
    Resumed {
        /// The store's clock.
        at: DateTime<Utc>,
        /// The epoch of the counters that held it.
        epoch: String,
        /// The lines its hold holds.
        lines: Vec<HoldLine>,
    },
    /// An order from the cart named a variant the buyer's cart does not hold (or the cart
    /// expired): nothing was held.
    NotInCart {
        /// The variant.
        variant_id: VariantId,
    },
    /// The same order is being placed by another request.
    InFlight,
    /// The record says in flight but the order's hold is gone: the order was placed or
    /// closed and its answer never recorded. Read the log.
    CheckLog,
    /// The order was answered before: the stored answer.
    Finished(String),
    /// The key was used for another body.
    KeyReused,
    /// A product is not on sale at the store's instant.
    NotOnSale {
        /// The product.
        product_id: ProductId,
    },
    /// The buyer would pass a product's purchase limit.
    LimitReached {
        /// The product.
        product_id: ProductId,
        /// The limit.
        limit: u32,
        /// Units the buyer holds or bought already.
        bought: u32,
    },
    /// Some lines have fewer units left than asked: every variant short, with what is left.
    SoldOut {
        /// `(variant, units left)` of each short line.
        short: Vec<(VariantId, i64)>,
    },
    /// The store is rebuilding its counters from the log: try again shortly.
    Rebuilding,
}

/// An order's idempotency record, as a request that never reached the hold reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The fingerprint of the body it was made for.
    pub fingerprint: String,
    /// The recorded answer; `None` while the order is being placed.
    pub answer: Option<String>,
}

/// What holding a downward adjustment's units did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitsHeld {
    /// Held.
    Held,
    /// A hold under this id is there already (the same request, still at work).
    AlreadyHeld,
    /// Fewer units are left to sell: this many.
    Short {
        /// Units left.
        available: i64,
    },
    /// The store is rebuilding its counters from the log: try again shortly.
    Rebuilding,
}

/// The counters at one instant, with the units every hold of their epoch takes: what the
/// audit compares with the log up to the watermark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The last log position the counters include.
    pub watermark: u64,
    /// Units left per variant.
    pub available: Vec<(VariantId, i64)>,
    /// Units held per variant, by orders and adjustments in flight of the current epoch.
    pub held: Vec<(VariantId, i64)>,
}

/// A change the counter projector applies, decoded from one event of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterChange {
    /// Units added to (or taken from) a variant's supply.
    Supply {
        /// The variant.
        variant_id: VariantId,
        /// The change.
        delta: i64,
        /// The hold the change took its units under (a downward adjustment's): released as
        /// the change is applied, so the units count once.
        hold: Option<uuid::Uuid>,
    },
    /// An order was placed.
    Placed {
        /// The order.
        order_id: OrderId,
        /// The buyer.
        buyer: MemberId,
        /// Its lines.
        lines: Vec<HoldLine>,
    },
    /// An order stream was closed without an order (declined or voided): its hold goes back.
    Closed {
        /// The order.
        order_id: OrderId,
    },
    /// Units of a placed order came back (a cancel, a completed return).
    GivenBack {
        /// The buyer.
        buyer: MemberId,
        /// The lines.
        lines: Vec<HoldLine>,
    },
}

/// A page of the log, as counter changes, to apply after `after` up to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterBatch {
    /// The epoch the projector follows.
    pub epoch: String,
    /// The watermark the batch follows: the store must be exactly there.
    pub after: u64,
    /// The position the batch ends at (the new watermark).
    pub to: u64,
    /// The changes, in log order.
    pub changes: Vec<CounterChange>,
}

/// What the store says of its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreState {
    /// No counters: the data was lost, or never built. Orders wait for a rebuild.
    Missing,
    /// A rebuild under `epoch` is running.
    Rebuilding {
        /// The new epoch.
        epoch: String,
    },
    /// Counters of `epoch`, applied up to `watermark`.
    Ready {
        /// The epoch.
        epoch: String,
        /// The last log position applied.
        watermark: u64,
    },
}

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The batch is applied; the watermark is its `to`.
    Done,
    /// The store is not where the batch follows (another applier moved it, or a rebuild
    /// began): read the state and continue from there.
    Stale,
}

/// Counters of a rebuild, folded from the log up to a position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Levels {
    /// Units left per variant.
    pub available: Vec<(VariantId, i64)>,
    /// Units bought per product and member.
    pub bought: Vec<(ProductId, MemberId, i64)>,
}

/// A hold older than the sweep's grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleHold {
    /// Its order.
    pub order_id: OrderId,
    /// When it was taken (the store's clock).
    pub at: DateTime<Utc>,
}

/// Why a store call failed (the store could not be reached or answered nonsense).
#[derive(Debug, thiserror::Error)]
#[error("stock store: {0}")]
pub struct StockStoreError(#[from] pub anyhow::Error);

/// The hot stock store.
#[async_trait]
pub trait StockStore: Send + Sync + 'static {
    /// Checks the idempotency record, the sale windows and the purchase limits, and holds
    /// every line or none, in one atomic step.
    async fn hold(&self, request: &HoldRequest) -> Result<HoldOutcome, StockStoreError>;

    /// The order's idempotency record, if there is one (read only; a request that fails
    /// before its hold asks whether it is a retry of an order answered before).
    async fn record(&self, order_id: OrderId) -> Result<Option<Recorded>, StockStoreError>;

    /// Records the order's answer for retries with the same key (kept [`RECORD_TTL`]).
    async fn finish(&self, order_id: OrderId, answer: &str) -> Result<(), StockStoreError>;

    /// Lets a retry with the same key go on with the hold it left (its payment outcome was
    /// unknown).
    async fn allow_retry(&self, order_id: OrderId) -> Result<(), StockStoreError>;

    /// Forgets an order's idempotency record whose hold was refused or given back, so that
    /// a retry is decided afresh.
    async fn forget(&self, order_id: OrderId) -> Result<(), StockStoreError>;

    /// Applies a batch of the log (the counter projector only).
    async fn apply(&self, batch: &CounterBatch) -> Result<Applied, StockStoreError>;

    /// Takes or keeps the counter projector's lease for `owner` for `lease` from now: true
    /// while `owner` is the one projector that applies the log (the others wait, and take
    /// over once it lapses). Applying stays safe without it (a batch names the watermark it
    /// follows); the lease keeps every process from reading the log for nothing.
    async fn lead(&self, owner: &str, lease: std::time::Duration) -> Result<bool, StockStoreError>;

    /// The state of the counters.
    async fn state(&self) -> Result<StoreState, StockStoreError>;

    /// Starts a rebuild under a lease of `lease`: a new epoch, orders refused meanwhile.
    /// `None` when another process holds the lease.
    async fn begin_rebuild(
        &self,
        lease: std::time::Duration,
    ) -> Result<Option<String>, StockStoreError>;

    /// Extends the lease of the rebuild of `epoch` by `lease` from now; false when the rebuild
    /// lost it (another process rebuilds now).
    async fn extend_rebuild(
        &self,
        epoch: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StockStoreError>;

    /// Installs the counters of `epoch`, folded from the log up to `watermark`, and opens the
    /// store again. False when the epoch is not the current one any more (the lease was lost).
    async fn finish_rebuild(
        &self,
        epoch: &str,
        watermark: u64,
        levels: &Levels,
    ) -> Result<bool, StockStoreError>;

    /// Holds taken before `before` (the store's clock), oldest first, at most `limit`.
    async fn stale_holds(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<StaleHold>, StockStoreError>;

    /// Releases the hold of an order whose `OrderPlaced` at `position` the projector has
    /// applied already (a leftover, for example of a retry after a flush): its units go back
    /// if it is of the current epoch. False, changing nothing, while the watermark is below
    /// `position` (the projector will count the hold when it gets there).
    async fn release_leftover(
        &self,
        order_id: OrderId,
        position: u64,
    ) -> Result<bool, StockStoreError>;

    /// The log refused what the counters of `epoch` let through: they lost writes (a
    /// failover to a replica that had not seen them). Drops the sentinel, so that one process
    /// rebuilds them from the log. Nothing when the counters are of another epoch already, or
    /// while holds of an older epoch remain: those orders are still landing, uncounted by
    /// the counters a rebuild installed, and the log refusing some of them is expected
    /// (another rebuild would only start it again).
    async fn distrust(&self, epoch: &str) -> Result<(), StockStoreError>;

    /// Holds `units` of `variant` for a downward supply adjustment under `hold_id`, as an
    /// order holds its lines: refused when fewer are left. The adjustment's append names the
    /// hold ([`crate::eventstore::Metadata::hold_id`]), and the counter projector releases
    /// it as it applies the change.
    async fn hold_units(
        &self,
        hold_id: uuid::Uuid,
        variant: VariantId,
        units: i64,
    ) -> Result<UnitsHeld, StockStoreError>;

    /// Releases an adjustment's hold (its append did not happen, or is past the grace
    /// period). Always safe for the counters: an adjustment applied later takes its units
    /// itself, whether its hold is still there or not.
    async fn release_units(&self, hold_id: uuid::Uuid) -> Result<(), StockStoreError>;

    /// Adjustment holds taken before `before` (the store's clock), at most `limit`.
    async fn stale_unit_holds(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<uuid::Uuid>, StockStoreError>;

    /// The counters and what the holds of their epoch take, read in one atomic step; `None`
    /// while there are no counters (lost, or being rebuilt).
    async fn snapshot(&self) -> Result<Option<Snapshot>, StockStoreError>;

    /// Units left per variant (absent: none known).
    async fn available(&self, variants: &[VariantId]) -> Result<Vec<i64>, StockStoreError>;

    /// The store's clock.
    async fn now(&self) -> Result<DateTime<Utc>, StockStoreError>;
}

/// Units per product of `lines`, in first-seen order.
pub(crate) fn per_product(lines: &[HoldLine]) -> Vec<(ProductId, i64)> {
    let mut sums: Vec<(ProductId, i64)> = Vec::new();
    for line in lines {
        match sums.iter_mut().find(|(p, _)| *p == line.product_id) {
            Some((_, n)) => *n += i64::from(line.quantity),
            None => sums.push((line.product_id, i64::from(line.quantity))),
        }
    }
    sums
}

/// A fresh random epoch name.
pub(crate) fn new_epoch() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
