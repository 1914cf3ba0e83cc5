//! The live catalog: every product as the log says it is, in memory on every process.
//!
//! It follows the whole log from position 0 and folds each product's events with the
//! domain's own [`apply`](openrun_domain::product::apply), each variant's stock events and
//! the order events that sell or give back units, so a look-up (the order path's status,
//! price, seller, purchase limit, variants and sale window; a product view; a search) reads
//! no database. Listing order is the order of registration in the log (newest first), which
//! every process agrees on and no status change moves, so a page cursor stays stable while a
//! drop flips statuses.
//!
//! Freshness: a process is ready (`/readyz`) once it has applied the log up to the head it
//! read at start-up. Afterwards its lag is the time since it last knew itself at the head;
//! a gap held open by a stuck transaction keeps the head out of reach and so counts as lag.
//! Past [`CatalogSettings::max_lag`] the order path refuses to sell from it. The lag is the
//! metric `openrun_live_catalog_lag_seconds`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use openrun_domain::order::{Order, OrderEvent};
use openrun_domain::product::{Product, ProductEvent, ProductState, ProductStatus};
use openrun_domain::stock::{Stock, StockEvent};
use openrun_domain::{CategoryId, MemberId, ProductId, VariantId};
use tokio::sync::watch;

use super::search::{self, Query};
use crate::clock::SharedClock;
use crate::commands::Commands;
use crate::eventstore::{EventStore, RecordedEvent};

/// Events read per round trip.
const PAGE: usize = 2000;
/// Bytes of stored events read per round trip, give or take the last event.
const PAGE_BYTES: usize = 8 * 1024 * 1024;
/// How often the log is polled for appends of other processes.
const POLL: Duration = Duration::from_millis(100);
/// A total counted beyond this is reported as "at least".
pub const TOTAL_CAP: usize = 10_000;

/// The live catalog's settings (`LIVE_CATALOG_MAX_LAG_MS`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct RawSettings {
    pub(crate) live_catalog_max_lag_ms: u64,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            live_catalog_max_lag_ms: 2000,
        }
    }
}

/// The live catalog's settings.
#[derive(Debug, Clone, Copy)]
pub struct CatalogSettings {
    /// How far the live catalog may fall behind the log before the order path refuses to
    /// sell from it. At most the freeze window before a drop, so that no process opens or
    /// prices a drop from data older than the last change allowed before it.
    pub max_lag: Duration,
}

impl RawSettings {
    pub(crate) fn validate(self) -> Result<CatalogSettings, crate::config::ConfigError> {
        let max_lag = Duration::from_millis(self.live_catalog_max_lag_ms);
        let freeze = openrun_domain::product::FREEZE_WINDOW
            .to_std()
            .unwrap_or_default();
        if max_lag.is_zero() || max_lag > freeze {
            return Err(crate::config::ConfigError::new(
                "LIVE_CATALOG_MAX_LAG_MS",
                format!(
                    "must be between 1 and {} (the freeze window before a drop)",
                    freeze.as_millis()
                ),
            ));
        }
        Ok(CatalogSettings { max_lag })
    }
}

/// One variant's stock as the log says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Level {
    /// Units supplied (added and adjusted).
    pub supply: i64,
    /// Units sold, net of units given back.
    pub sold: i64,
    /// The variant's stock stream version (what `If-Match` names).
    pub version: u64,
}

impl Level {
    /// Units left to sell.
    pub const fn available(&self) -> i64 {
        self.supply - self.sold
    }
}

/// A product in the live catalog.
#[derive(Debug, Clone)]
pub struct LiveProduct {
    /// Its state, folded with the domain's `apply` (shared: a stock or order event copies
    /// the product without copying its description).
    pub state: Arc<ProductState>,
    /// Its stream's version.
    pub version: u64,
    /// The log position of its registration: its place in listings.
    pub position: u64,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When its stream last changed.
    pub updated_at: DateTime<Utc>,
    /// Stock per variant (variants without stock events have none).
    pub stock: BTreeMap<VariantId, Level>,
    document: u32,
    text: Arc<str>,
}

/// Who is looking: what they may see depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    /// A visitor, or a member who is neither the seller nor an admin.
    Public(Option<MemberId>),
    /// A seller (sees all of their own products).
    Seller(MemberId),
    /// An admin (sees everything).
    Admin,
}

impl Viewer {
    /// What `actor` is to the catalog.
    pub fn of(actor: &openrun_domain::Actor) -> Self {
        match actor.role {
            openrun_domain::Role::Admin => Self::Admin,
            openrun_domain::Role::Seller => Self::Seller(actor.member_id),
            _ => Self::Public(Some(actor.member_id)),
        }
    }

    /// The class a view's ETag names: what the viewer is to `product`.
    pub fn class(&self, product: &LiveProduct) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Seller(id) if *id == product.state.seller_id => "owner",
            _ => "public",
        }
    }
}

impl LiveProduct {
    /// A product as its stream says, for an answer the catalog has not caught up with yet:
    /// no stock known, registered "now" for the answer's sake.
    pub fn from_stream(state: ProductState, version: u64, now: DateTime<Utc>) -> Self {
        let text: Arc<str> = text_of(&state).into();
        Self {
            state: Arc::new(state),
            version,
            position: 0,
            created_at: now,
            updated_at: now,
            stock: BTreeMap::new(),
            document: u32::MAX,
            text,
        }
    }

    /// The status in effect at `now`: the recorded one, or that of a pending schedule whose
    /// instant has passed and which the scheduler is about to fire, so that every process
    /// opens a drop at its instant.
    pub fn status_at(&self, now: DateTime<Utc>) -> ProductStatus {
        if self.state.pending_schedules().next().is_none() {
            return self.state.status;
        }
        self.state.status_at(now)
    }

    /// Whether `viewer` may see the product at `now`: admins always, its seller always,
    /// others while it is waiting, on sale or ended and not deleted (a deleted product is
    /// still shown to its buyers: [`LiveCatalog::visible`]).
    pub fn visible_to(&self, viewer: &Viewer, now: DateTime<Utc>) -> bool {
        self.visible_in(viewer, || self.status_at(now))
    }

    fn visible_in(&self, viewer: &Viewer, status: impl FnOnce() -> ProductStatus) -> bool {
        match viewer {
            Viewer::Admin => true,
            Viewer::Seller(id) if *id == self.state.seller_id => true,
            _ if self.state.deleted => false,
            _ => status().is_visible(),
        }
    }

    /// Whether every variant still sold is sold out, one flag per variant: what a view shows
    /// of the stock, and so what its ETag follows.
    pub fn sold_out_flags(&self) -> String {
        self.state
            .variants
            .iter()
            .map(|v| {
                if v.retired {
                    'r'
                } else if self.level(v.variant_id).available() <= 0 {
                    '1'
                } else {
                    '0'
                }
            })
            .collect()
    }

    /// The stock of `variant` (zero when it has none yet).
    pub fn level(&self, variant: VariantId) -> Level {
        self.stock.get(&variant).copied().unwrap_or_default()
    }
}

/// A listing's filters.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only products in this status (in effect now).
    pub status: Option<ProductStatus>,
    /// Only products of this category.
    pub category_id: Option<CategoryId>,
    /// Only products of this seller.
    pub seller_id: Option<MemberId>,
    /// Only products whose name or description contains this.
    pub q: Option<Query>,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    /// The products, newest first.
    pub items: Vec<Arc<LiveProduct>>,
    /// The position to continue after, when there is more.
    pub next: Option<u64>,
    /// How many products match, at most [`TOTAL_CAP`].
    pub total: usize,
    /// False when more than [`TOTAL_CAP`] match.
    pub total_exact: bool,
}

#[derive(Default)]
struct Snapshot {
    /// In registration order (ascending position).
    products: Vec<Arc<LiveProduct>>,
    by_id: HashMap<ProductId, usize>,
    by_variant: HashMap<VariantId, usize>,
    search: search::Index,
    /// Document number -> product slot.
    documents: Vec<usize>,
    /// Who ordered what: they still see a deleted product.
    buyers: HashSet<(ProductId, MemberId)>,
}

/// An event decoded, before it is applied: decoding runs outside the catalog's lock.
enum Change {
    Product {
        stream: Option<ProductId>,
        version: u64,
        position: u64,
        at: DateTime<Utc>,
        event: ProductEvent,
    },
    Stock {
        variant: VariantId,
        version: u64,
        supply: i64,
    },
    Order {
        lines: Vec<(ProductId, VariantId, u32)>,
        buyer: Option<MemberId>,
        sign: i64,
    },
    Nothing,
}

/// The live catalog of this process.
pub struct LiveCatalog {
    commands: Commands,
    events: Arc<dyn EventStore>,
    clock: SharedClock,
    settings: CatalogSettings,
    inner: RwLock<Snapshot>,
    applied: watch::Sender<u64>,
    ready: watch::Sender<bool>,
    /// `clock.elapsed()` in milliseconds when the catalog last knew itself at the head.
    caught_up_at: AtomicU64,
}

impl LiveCatalog {
    /// An empty catalog over `events`; [`LiveCatalog::follow`] fills it.
    pub fn new(
        commands: Commands,
        events: Arc<dyn EventStore>,
        clock: SharedClock,
        settings: CatalogSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            commands,
            events,
            clock,
            settings,
            inner: RwLock::new(Snapshot::default()),
            applied: watch::channel(0).0,
            ready: watch::channel(false).0,
            caught_up_at: AtomicU64::new(0),
        })
    }

    /// Follows the log until `shutdown` turns true: woken by this process's appends, polling
    /// for those of others.
    pub async fn follow(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut appended = self.events.subscribe();
        let mut failures = 0u32;
        let mut notified = true;
        // A dropped sender is a stop too (the application went away).
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            let wait = match self.catch_up().await {
                Ok(()) => {
                    failures = 0;
                    POLL
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::error!(
                        error = format!("{e:#}"),
                        "the live catalog cannot follow the log"
                    );
                    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)))
                        .min(Duration::from_secs(5))
                }
            };
            metrics::gauge!("openrun_live_catalog_lag_seconds").set(self.lag().as_secs_f64());
            // A closed channel answers at once: stop on a dropped shutdown, and stop waiting on
            // a notifier that went away (the timed poll still runs), so nothing spins.
            tokio::select! {
                changed = shutdown.changed() => if changed.is_err() { break },
                changed = appended.changed(), if notified => notified = changed.is_ok(),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Applies the log up to the head read when the round starts.
    pub async fn catch_up(&self) -> anyhow::Result<()> {
        let started = self.clock.elapsed();
        let head = self.events.head_position().await?;
        loop {
            let after = *self.applied.borrow();
            if after >= head {
                break;
            }
            let page = self
                .events
                .read_all_bounded(after, PAGE, PAGE_BYTES)
                .await?;
            if page.is_empty() {
                break;
            }
            self.apply_page(page)?;
        }
        if *self.applied.borrow() >= head {
            let millis = u64::try_from(started.as_millis()).unwrap_or(u64::MAX);
            self.caught_up_at.fetch_max(millis, Ordering::Relaxed);
            if !self.ready.send_replace(true) {
                tracing::info!(
                    position = head,
                    "the live catalog has caught up with the log"
                );
            }
        }
        Ok(())
    }

    /// Whether the catalog has applied the log up to the head it read at start-up.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the catalog is ready, at most `timeout`; true when it is.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut ready = self.ready.subscribe();
        tokio::time::timeout(timeout, ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Time since the catalog last knew itself at the head of the log.
    pub fn lag(&self) -> Duration {
        let at = Duration::from_millis(self.caught_up_at.load(Ordering::Relaxed));
        self.clock.elapsed().saturating_sub(at)
    }

    /// Whether the order path may sell from it: ready and within the lag bound.
    pub fn is_fresh(&self) -> bool {
        self.is_ready() && self.lag() <= self.settings.max_lag
    }

    /// The last log position applied.
    pub fn position(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the catalog has applied `position` (a write's own), at most `timeout`;
    /// true when it has.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(timeout, applied.wait_for(|at| *at >= position))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until the catalog has applied everything committed so far, by any process, at
    /// most `timeout`; true when it has.
    pub async fn catch_up_to_head(&self, timeout: Duration) -> anyhow::Result<bool> {
        let head = self.events.head_position().await?;
        Ok(self.wait_for(head, timeout).await)
    }

    /// Documents in the search index, stale ones included (bounded by the catalog's size).
    pub fn search_documents(&self) -> usize {
        self.read().documents.len()
    }

    /// The product `id`, whoever may see it.
    pub fn product(&self, id: ProductId) -> Option<Arc<LiveProduct>> {
        let inner = self.read();
        inner
            .by_id
            .get(&id)
            .map(|slot| Arc::clone(&inner.products[*slot]))
    }

    /// The product whose variant `variant` is, whoever may see it.
    pub fn product_of_variant(&self, variant: VariantId) -> Option<Arc<LiveProduct>> {
        let inner = self.read();
        inner
            .by_variant
            .get(&variant)
            .map(|slot| Arc::clone(&inner.products[*slot]))
    }

    /// Whether `viewer` may see `product` at `now`: as [`LiveProduct::visible_to`], and a
    /// deleted product also to the members who ordered it.
    pub fn visible(&self, product: &LiveProduct, viewer: &Viewer, now: DateTime<Utc>) -> bool {
        if product.visible_to(viewer, now) {
            return true;
        }
        match viewer {
            Viewer::Public(Some(id)) | Viewer::Seller(id) if product.state.deleted => self
                .read()
                .buyers
                .contains(&(product.state.product_id, *id)),
            _ => false,
        }
    }

    /// Whether `buyer` ever placed an order with a line of one of `products` (as far as this
    /// catalog has followed the log).
    pub fn has_bought(
        &self,
        buyer: MemberId,
        products: impl IntoIterator<Item = ProductId>,
    ) -> bool {
        let inner = self.read();
        products
            .into_iter()
            .any(|p| inner.buyers.contains(&(p, buyer)))
    }

    /// Every product of `seller`, deleted ones included.
    pub fn products_of(&self, seller: MemberId) -> Vec<Arc<LiveProduct>> {
        self.read()
            .products
            .iter()
            .filter(|p| p.state.seller_id == seller)
            .cloned()
            .collect()
    }

    /// Whether any product of `category` is not deleted.
    pub fn has_products_in(&self, category: CategoryId) -> bool {
        self.read()
            .products
            .iter()
            .any(|p| p.state.category_id == category && !p.state.deleted)
    }

    /// The products `viewer` may see that match `filter`, newest first, after the position
    /// `after` (a cursor), at most `size`. Deleted products are listed to admins only.
    pub fn list(
        &self,
        viewer: &Viewer,
        filter: &Filter,
        after: Option<u64>,
        size: usize,
        now: DateTime<Utc>,
    ) -> Page {
        self.list_counting_up_to(viewer, filter, after, size, now, TOTAL_CAP)
    }

    /// [`LiveCatalog::list`] with the total counted up to `cap` (tests use a small one).
    pub fn list_counting_up_to(
        &self,
        viewer: &Viewer,
        filter: &Filter,
        after: Option<u64>,
        size: usize,
        now: DateTime<Utc>,
        cap: usize,
    ) -> Page {
        let inner = self.read();
        let keep = |p: &LiveProduct| {
            if (p.state.deleted && *viewer != Viewer::Admin)
                || filter.category_id.is_some_and(|c| p.state.category_id != c)
                || filter.seller_id.is_some_and(|s| p.state.seller_id != s)
            {
                return false;
            }
            let status = p.status_at(now);
            p.visible_in(viewer, || status)
                && filter.status.is_none_or(|s| status == s)
                && filter.q.as_ref().is_none_or(|q| q.matches(&p.text))
        };
        let slots: Box<dyn Iterator<Item = usize>> = match &filter.q {
            None => Box::new((0..inner.products.len()).rev()),
            Some(q) => {
                let mut slots: Vec<usize> = inner
                    .search
                    .candidates(q)
                    .into_iter()
                    .filter_map(|doc| {
                        let slot = *inner.documents.get(doc as usize)?;
                        (inner.products[slot].document == doc).then_some(slot)
                    })
                    .collect();
                slots.sort_unstable_by(|a, b| b.cmp(a));
                Box::new(slots.into_iter())
            }
        };
        let mut page = Page {
            items: Vec::new(),
            next: None,
            total: 0,
            total_exact: true,
        };
        // One more item than the page (to know there is a next page), and one more match
        // than the cap (to know the total is not exact).
        for slot in slots {
            let page_full = page.items.len() > size;
            if page_full && page.total > cap {
                break;
            }
            let product = &inner.products[slot];
            if !keep(product) {
                continue;
            }
            page.total += 1;
            if !page_full && after.is_none_or(|a| product.position < a) {
                page.items.push(Arc::clone(product));
            }
        }
        if page.total > cap {
            page.total = cap;
            page.total_exact = false;
        }
        if page.items.len() > size {
            page.items.truncate(size);
            page.next = page.items.last().map(|p| p.position);
        }
        page
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decodes the page outside the lock, then applies what decoded under it and publishes
    /// the position of the last event applied. An event that does not decode stops the page
    /// there: the events before it are applied once and the follower tries again from it,
    /// so nothing is skipped and nothing applied twice (the lag grows meanwhile, and the
    /// order path stops selling from this process).
    fn apply_page(&self, page: Vec<RecordedEvent>) -> anyhow::Result<()> {
        let mut changes = Vec::with_capacity(page.len());
        let mut failure = None;
        for recorded in page {
            let position = recorded.global_position;
            match self.decode(recorded) {
                Ok(change) => changes.push((position, change)),
                Err(e) => {
                    failure = Some(e.context(format!("decoding event {position}")));
                    break;
                }
            }
        }
        if let Some(&(last, _)) = changes.last() {
            let mut inner = self
                .inner
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (_, change) in changes {
                apply(&mut inner, change);
            }
            drop(inner);
            self.applied.send_replace(last);
        }
        failure.map_or(Ok(()), Err)
    }

    fn decode(&self, recorded: RecordedEvent) -> anyhow::Result<Change> {
        Ok(match recorded.stream_type.as_str() {
            "product" => Change::Product {
                stream: recorded
                    .stream_id
                    .parse::<uuid::Uuid>()
                    .ok()
                    .map(ProductId::from_uuid),
                version: recorded.version,
                position: recorded.global_position,
                at: recorded.recorded_at,
                event: self.commands.decode::<Product>(recorded)?,
            },
            "stock" => {
                let (version, stream) = (recorded.version, recorded.stream_id.clone());
                let supply = match self.commands.decode::<Stock>(recorded)? {
                    StockEvent::StockAdded { supply, .. }
                    | StockEvent::StockAdjusted { supply, .. } => supply,
                };
                match stream.parse::<uuid::Uuid>() {
                    Ok(id) => Change::Stock {
                        variant: VariantId::from_uuid(id),
                        version,
                        supply,
                    },
                    Err(_) => Change::Nothing,
                }
            }
            "order"
                if matches!(
                    recorded.event_type.as_str(),
                    "OrderPlaced" | "OrderCancelled" | "ReturnCompleted"
                ) =>
            {
                let units = |lines: &[openrun_domain::order::StockLine]| {
                    lines
                        .iter()
                        .map(|l| (l.product_id, l.variant_id, l.quantity))
                        .collect()
                };
                match self.commands.decode::<Order>(recorded)? {
                    OrderEvent::OrderPlaced {
                        lines, buyer_id, ..
                    } => Change::Order {
                        lines: lines
                            .iter()
                            .map(|l| (l.product_id, l.variant_id, l.quantity))
                            .collect(),
                        buyer: Some(buyer_id),
                        sign: 1,
                    },
                    OrderEvent::OrderCancelled { released, .. } => Change::Order {
                        lines: units(&released),
                        buyer: None,
                        sign: -1,
                    },
                    OrderEvent::ReturnCompleted { restocked, .. } => Change::Order {
                        lines: units(&restocked),
                        buyer: None,
                        sign: -1,
                    },
                    _ => Change::Nothing,
                }
            }
            _ => Change::Nothing,
        })
    }
}

fn apply(inner: &mut Snapshot, change: Change) {
    match change {
        Change::Product {
            stream,
            version,
            position,
            at,
            event,
        } => apply_product(inner, stream, version, position, at, &event),
        Change::Stock {
            variant,
            version,
            supply,
        } => {
            let Some(slot) = inner.by_variant.get(&variant).copied() else {
                tracing::warn!(variant = %variant, "stock of a variant no product names");
                return;
            };
            let live = Arc::make_mut(&mut inner.products[slot]);
            let level = live.stock.entry(variant).or_default();
            level.supply = supply;
            level.version = version;
        }
        Change::Order { lines, buyer, sign } => {
            for (product_id, variant, quantity) in lines {
                let Some(slot) = inner.by_id.get(&product_id).copied() else {
                    continue;
                };
                if let Some(buyer) = buyer {
                    inner.buyers.insert((product_id, buyer));
                }
                let live = Arc::make_mut(&mut inner.products[slot]);
                if live.state.variant(variant).is_some() {
                    live.stock.entry(variant).or_default().sold += sign * i64::from(quantity);
                } else {
                    tracing::warn!(product = %product_id, "an order line names no variant of its product");
                }
            }
        }
        Change::Nothing => {}
    }
}

fn apply_product(
    inner: &mut Snapshot,
    stream: Option<ProductId>,
    version: u64,
    position: u64,
    at: DateTime<Utc>,
    event: &ProductEvent,
) {
    if let ProductEvent::ProductRegistered { product_id, .. } = event {
        if inner.by_id.contains_key(product_id) {
            return;
        }
        let mut aggregate = Product::default();
        openrun_domain::product::apply(&mut aggregate, event);
        let Some(state) = aggregate.state else {
            return;
        };
        let slot = inner.products.len();
        let text = text_of(&state);
        let document = inner.search.add(&text);
        inner.documents.push(slot);
        for variant in &state.variants {
            inner.by_variant.insert(variant.variant_id, slot);
        }
        inner.by_id.insert(*product_id, slot);
        inner.products.push(Arc::new(LiveProduct {
            state: Arc::new(state),
            version,
            position,
            created_at: at,
            updated_at: at,
            stock: BTreeMap::new(),
            document,
            text: text.into(),
        }));
        return;
    }
    let Some(slot) = stream.and_then(|id| inner.by_id.get(&id).copied()) else {
        return;
    };
    let live = Arc::make_mut(&mut inner.products[slot]);
    let mut aggregate = Product {
        state: Some((*live.state).clone()),
    };
    openrun_domain::product::apply(&mut aggregate, event);
    if let Some(state) = aggregate.state {
        live.state = Arc::new(state);
    }
    live.version = version;
    live.updated_at = at;
    match event {
        ProductEvent::VariantAdded { variant, .. } => {
            inner.by_variant.insert(variant.variant_id, slot);
        }
        ProductEvent::ProductDetailsChanged { .. } => {
            let text = text_of(&live.state);
            if *text != *live.text {
                live.document = inner.search.add(&text);
                live.text = text.into();
                inner.documents.push(slot);
                if inner.documents.len() > 2 * inner.products.len() + STALE_DOCUMENTS_SLACK {
                    reindex(inner);
                }
            }
        }
        _ => {}
    }
}

/// Stale search documents tolerated beyond one per product before the index is rebuilt.
const STALE_DOCUMENTS_SLACK: usize = 1024;

/// Rebuilds the search index from the products' current texts, dropping the documents that
/// edits left stale: the index then grows with the catalog, not with its edit history. Its
/// cost is that of indexing every product once, paid after at least as many edits.
fn reindex(inner: &mut Snapshot) {
    let mut search = search::Index::default();
    let mut documents = Vec::with_capacity(inner.products.len());
    for (slot, product) in inner.products.iter_mut().enumerate() {
        let document = search.add(&product.text);
        Arc::make_mut(product).document = document;
        documents.push(slot);
    }
    inner.search = search;
    inner.documents = documents;
}

/// What search looks in: the name and the description, normalised, apart (a match never
/// spans the two).
fn text_of(state: &ProductState) -> String {
    format!(
        "{}\u{1f}{}",
        search::normalise(&state.name),
        search::normalise(&state.description)
    )
}
