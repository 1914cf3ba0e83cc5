//! Orders: placing one on the hot path, and reading them back.
//!
//! # Placing an order ([`Orders::place`])
//! 1. The identity comes from the token; each product's state, price, purchase limit and sale
//!    window from the live catalog (no SQL read for them); the shipping address is sealed
//!    from the member's own addresses.
//! 2. The order id is UUIDv5 of the buyer and the `Idempotency-Key`, so a retry lands on the
//!    same stream whatever cache was lost. One atomic step of the stock store checks the
//!    idempotency record (in flight, finished, another body), the sale windows and limits on
//!    the store's clock, and holds every line or none ([`crate::stock`]).
//! 3. The gateway charges once per order id: charged, declined (recorded in the stream as
//!    `OrderDeclined`, answered 402) or unknown (the hold stays; a retry with the same key or
//!    the sweep settles it).
//! 4. `OrderPlaced` is appended at version 0 with a guarded counter per variant that keeps
//!    the log's units sold within the supply; only then `201`.
//!
//! # What keeps each interruption safe
//! - A conflict on the append is never a failure: the stream is read and answered from
//!   ([`Orders::answer_from_stream`]); nothing is compensated.
//! - A lost commit is fenced, never guessed: `OrderVoided` at version 0 either commits (the
//!   order was not placed: its charge is refunded, its hold goes back through the counter
//!   projector) or conflicts (the stream says what happened).
//! - The log refusing an oversell (its guarded counter; the hot store had lost writes) is
//!   fenced the same way and answered sold out.
//! - Whatever is left (a hold with no order, a charge with no order) is closed by the sweeps
//!   ([`sweep`]) past a grace period, and only whoever commits the closing event refunds.
//!
//! # Layout
//! - [`sweep`]: the reservation and charge sweeps.
//! - [`lifecycle`]: after the order: views, timeline, cancel, return, the seller's orders.
//! - [`outbox`]: the worker that pays refunds back and sends confirmations.
//! - [`settings`]: the lifecycle's timings.

pub mod lifecycle;
pub mod outbox;
pub mod settings;
pub mod sweep;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use openrun_domain::order::{
    Closure, LineItem, Order, OrderCommand, OrderError, OrderState, Payment, SealedAddress,
    VoidReason,
};
use openrun_domain::product::{ProductStatus, ScheduleState};
use openrun_domain::{Actor, Issuer, MemberId, Money, OrderId, OrderPolicy, ProductId, VariantId};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::catalog::live::{LiveCatalog, LiveProduct, Viewer};
use crate::clock::SharedClock;
use crate::commands::{CommandError, Commands};
use crate::eventstore::Metadata;
use crate::members::{MemberError, Members};
use crate::payment::{ChargeOutcome, PaymentGateway, SANDBOX, void_refund_id};
use crate::stock::{HoldLine, HoldOutcome, HoldRequest, SaleTerms, StockStore};

/// Records how long one step of placing an order took (`openrun_order_step_seconds`).
fn timed(step: &'static str, since: std::time::Instant) {
    metrics::histogram!("openrun_order_step_seconds", "step" => step).record(since.elapsed());
}

/// The namespace of order ids (UUIDv5 of the buyer and the idempotency key).
const ORDER_NAMESPACE: Uuid = Uuid::from_u128(0x6f70_656e_7275_6e00_8000_6f72_6465_7273);
/// A node whose clock is behind the store's still asks the store about an opening this close.
const OPENING_SKEW: chrono::Duration = chrono::Duration::seconds(5);
/// The currency of every price (KRW has no minor unit).
pub const CURRENCY: &str = "KRW";

/// One line as the buyer asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewLine {
    /// The product.
    pub product_id: ProductId,
    /// One of its variants.
    pub variant_id: VariantId,
    /// How many units.
    pub quantity: u32,
}

/// An order as the buyer asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// The lines.
    pub lines: Vec<NewLine>,
    /// One of the buyer's addresses.
    pub address_id: Uuid,
    /// The payment method (only `sandbox`).
    pub method: String,
    /// The card token.
    pub token: String,
    /// The lines are the buyer's cart's: each names a variant of the cart, and its quantity
    /// (and product) come from the cart.
    pub from_cart: bool,
}

/// An answer to a placing request: what a retry with the same key gets again.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body: an order view, or a problem.
    pub body: Value,
    /// Whether it replays an earlier request's answer.
    #[serde(skip)]
    pub replayed: bool,
}

/// Why an order was not placed (and nothing of it is recorded for a retry).
#[derive(Debug, thiserror::Error)]
pub enum OrderFailure {
    /// Bad input.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A product is not on sale now.
    #[error("product {product_id} is not on sale")]
    NotOnSale {
        /// The product.
        product_id: ProductId,
    },
    /// The buyer would pass a product's purchase limit.
    #[error("at most {limit} units of product {product_id} per member")]
    LimitReached {
        /// The product.
        product_id: ProductId,
        /// The limit.
        limit: u32,
        /// Units bought or held already.
        bought: u32,
    },
    /// Some lines have fewer units left than asked.
    #[error("sold out")]
    SoldOut {
        /// Each short line: product, variant, units left.
        short: Vec<(ProductId, VariantId, i64)>,
    },
    /// Another request with the same key is placing this order now.
    #[error("the order is being placed by another request")]
    InFlight,
    /// The key was used for another body.
    #[error("the idempotency key was used for another order")]
    KeyReused,
    /// The gateway did not answer: the order keeps its hold; retry with the same key.
    #[error("the payment gateway failed: {0}")]
    GatewayFailed(String),
    /// The order's stream was closed without an order (abandoned, fenced): use a new key.
    #[error("the order was closed without being placed")]
    Closed,
    /// The store, the log or the catalog cannot be used now; nothing was placed.
    #[error("unavailable: {0}")]
    Unavailable(anyhow::Error),
    /// The order may or may not be placed: read it before doing anything else.
    #[error("the outcome is unknown")]
    OutcomeUnknown,
}

impl OrderFailure {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A line of an order view.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LineView {
    /// The product.
    pub product_id: Uuid,
    /// The variant.
    pub variant_id: Uuid,
    /// Units.
    pub quantity: u32,
    /// The unit price paid, in KRW.
    pub unit_price: i64,
    /// `unit_price * quantity`.
    pub line_total: i64,
}

/// An order as its buyer sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    /// The order.
    pub id: Uuid,
    /// `prepared`, `in_delivery`, `delivered`, `cancelled`, `return_requested`, `in_return`
    /// or `return_completed`.
    pub status: String,
    /// The lines.
    pub lines: Vec<LineView>,
    /// The total, in KRW.
    pub total: i64,
    /// Always `KRW`.
    pub currency: &'static str,
    /// The payment method.
    pub payment_method: String,
    /// The capture's reference.
    pub payment_reference: String,
    /// Refunded so far, in KRW.
    pub refunded: i64,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
}

impl OrderView {
    /// The view of a placed order.
    pub fn of(state: &OrderState) -> Self {
        Self {
            id: state.order_id.as_uuid(),
            status: state.status.to_string(),
            lines: state
                .lines
                .iter()
                .map(|l| LineView {
                    product_id: l.product_id.as_uuid(),
                    variant_id: l.variant_id.as_uuid(),
                    quantity: l.quantity,
                    unit_price: l.unit_price.minor(),
                    line_total: l.line_total.minor(),
                })
                .collect(),
            total: state.total.minor(),
            currency: CURRENCY,
            payment_method: state.payment.method.clone(),
            payment_reference: state.payment.reference.clone(),
            refunded: state.refunded().minor(),
            placed_at: state.placed_at,
        }
    }
}
/// A row of the order summaries: id, status, total, lines, placed at.
type SummaryRow = (String, String, i64, i64, String);

/// An order in a member's list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderSummary {
    /// The order.
    pub id: Uuid,
    /// Its status.
    pub status: String,
    /// The total, in KRW.
    pub total: i64,
    /// Always `KRW`.
    pub currency: &'static str,
    /// Lines.
    pub line_count: u32,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
}

/// The order service.
pub struct Orders {
    db: crate::db::Database,
    commands: Commands,
    catalog: Arc<LiveCatalog>,
    stock: Arc<dyn StockStore>,
    gateway: Arc<dyn PaymentGateway>,
    members: Arc<Members>,
    cart: Arc<dyn crate::cart::CartStore>,
    clock: SharedClock,
    policy: OrderPolicy,
}

/// What the checked request resolved to.
struct Checked {
    items: Vec<LineItem>,
    terms: Vec<SaleTerms>,
    total: Money,
}

impl Checked {
    /// The quantities the hold took from the cart, and the total they come to.
    fn take_quantities(&mut self, held: &[HoldLine]) -> Result<(), OrderFailure> {
        let mut total = Money::ZERO;
        for item in &mut self.items {
            let line = held
                .iter()
                .find(|l| l.variant_id == item.variant_id)
                .ok_or_else(|| {
                    OrderFailure::Unavailable(anyhow::anyhow!(
                        "the hold did not hold variant {}",
                        item.variant_id
                    ))
                })?;
            item.quantity = line.quantity;
            total = item
                .unit_price
                .checked_mul(line.quantity)
                .and_then(|t| total.checked_add(t))
                .ok_or_else(|| OrderFailure::invalid("lines", "the total is too large"))?;
        }
        self.total = total;
        Ok(())
    }
}

impl Orders {
    /// The order service.
    #[allow(
        clippy::too_many_arguments,
        reason = "each is a service the order path calls; built once at start-up"
    )]
    pub fn new(
        db: crate::db::Database,
        commands: Commands,
        catalog: Arc<LiveCatalog>,
        stock: Arc<dyn StockStore>,
        gateway: Arc<dyn PaymentGateway>,
        members: Arc<Members>,
        cart: Arc<dyn crate::cart::CartStore>,
        clock: SharedClock,
        policy: OrderPolicy,
    ) -> Self {
        Self {
            db,
            commands,
            catalog,
            stock,
            gateway,
            members,
            cart,
            clock,
            policy,
        }
    }

    /// The order id of `buyer`'s request with `key`.
    pub fn order_id(buyer: MemberId, key: &str) -> OrderId {
        OrderId::from_uuid(Uuid::new_v5(
            &ORDER_NAMESPACE,
            format!("{buyer}:{key}").as_bytes(),
        ))
    }

    /// Places an order (see the module's documentation for every step).
    pub async fn place(
        &self,
        actor: Actor,
        key: &str,
        order: NewOrder,
    ) -> Result<Answer, OrderFailure> {
        let started = std::time::Instant::now();
        // Cart lines the order took out of the cart go back, before the answer, unless it
        // was charged or its hold is kept for a retry.
        let mut claim = None;
        let result = self.place_inner(actor, key, order, &mut claim).await;
        if let Some(claim) = claim.take() {
            claim.settle().await;
        }
        metrics::histogram!("openrun_order_seconds").record(started.elapsed());
        let outcome = match &result {
            Ok(answer) if answer.status == 201 => "placed",
            Ok(_) => "answered",
            Err(OrderFailure::SoldOut { .. }) => "sold_out",
            Err(_) => "refused",
        };
        metrics::counter!("openrun_orders_total", "outcome" => outcome).increment(1);
        result
    }

    async fn place_inner(
        &self,
        actor: Actor,
        key: &str,
        order: NewOrder,
        claim: &mut Option<CartClaim>,
    ) -> Result<Answer, OrderFailure> {
        if !actor.role.can_buy() {
            return Err(OrderFailure::invalid(
                "role",
                "verify the e-mail address first",
            ));
        }
        let fingerprint = fingerprint(&order);
        let order_id = Self::order_id(actor.member_id, key);
        let mut order = order;
        if order.from_cart {
            match self
                .resolve_cart_lines(&actor, &mut order, order_id, &fingerprint)
                .await
            {
                Ok(claimed) => *claim = claimed,
                Err(failure) => {
                    return self
                        .retry_or(order_id, &fingerprint, &actor, &order, failure)
                        .await;
                }
            }
        }
        // Held with the cart's quantities, which the hold reads itself.
        let cart_in_hold = order.from_cart && self.cart.read_by_hold();
        let mut checked = match self.check(&actor, &order) {
            Ok(checked) => checked,
            Err(failure) => {
                return self
                    .retry_or(order_id, &fingerprint, &actor, &order, failure)
                    .await;
            }
        };
        let step = std::time::Instant::now();
        let sealed = self
            .members
            .sealed_address(&actor.member_id.to_string(), &order.address_id.to_string())
            .await;
        timed("address", step);
        let sealed = match sealed {
            Ok(sealed) => sealed,
            Err(MemberError::NotFound | MemberError::Forbidden) => {
                let failure = OrderFailure::invalid("address_id", "not one of your addresses");
                return self
                    .retry_or(order_id, &fingerprint, &actor, &order, failure)
                    .await;
            }
            Err(e) => return Err(OrderFailure::Unavailable(anyhow::anyhow!("{e}"))),
        };
        let request = HoldRequest {
            order_id,
            buyer: actor.member_id,
            fingerprint: fingerprint.clone(),
            lines: checked
                .items
                .iter()
                .map(|i| HoldLine {
                    product_id: i.product_id,
                    variant_id: i.variant_id,
                    quantity: i.quantity,
                })
                .collect(),
            terms: checked.terms.clone(),
            from_cart: cart_in_hold.then(|| self.clock.now()),
        };
        let step = std::time::Instant::now();
        let held = self.stock.hold(&request).await;
        timed("hold", step);
        let held = match held {
            Ok(held) => held,
            Err(e) => {
                // The script may have run (a timeout after it was sent): let the retry with
                // the same key resume whatever it held instead of waiting out the sweep.
                keep(claim);
                self.keep_hold_for_retry(order_id).await;
                return Err(OrderFailure::Unavailable(e.into()));
            }
        };
        let epoch = match held {
            HoldOutcome::Held { epoch, lines, .. } | HoldOutcome::Resumed { epoch, lines, .. } => {
                // From the cart, the order is what the hold holds: the cart's quantities as
                // the hold read them, or, for a retry, as the first request's hold took them.
                if order.from_cart
                    && let Err(failure) = checked.take_quantities(&lines)
                {
                    keep(claim);
                    self.keep_hold_for_retry(order_id).await;
                    return Err(failure);
                }
                // Held from a cart the hold reads: the hold took the lines out of the cart.
                if cart_in_hold {
                    *claim = Some(CartClaim::new(
                        Arc::clone(&self.cart),
                        actor.member_id,
                        cart_lines(&lines),
                        self.clock.now(),
                    ));
                }
                epoch
            }
            HoldOutcome::Finished(answer) => return replayed(&answer),
            HoldOutcome::InFlight => return Err(OrderFailure::InFlight),
            // Its record says in flight but its hold is gone: the request that held it
            // placed or closed the order (the projector counted it) without recording the
            // answer. The log has it.
            HoldOutcome::CheckLog => {
                return match self.answer_in_log(order_id, &fingerprint).await? {
                    Some(answer) => Ok(answer),
                    None => Err(OrderFailure::InFlight),
                };
            }
            HoldOutcome::KeyReused => return Err(OrderFailure::KeyReused),
            HoldOutcome::Rebuilding => {
                return Err(OrderFailure::Unavailable(anyhow::anyhow!(
                    "the stock counters are being rebuilt"
                )));
            }
            refused => {
                // No record (it expired, or the store lost it): a retry of an order placed
                // before must land on that order, not on today's stock.
                if let Some(answer) = self
                    .placed_before(actor.member_id, order_id, &fingerprint, &order)
                    .await?
                {
                    return Ok(answer);
                }
                return Err(refusal(refused, &request.lines));
            }
        };
        let id = order_id.to_string();
        let meta = Metadata {
            actor: Some(actor.member_id.to_string()),
            idempotency_key: Some(key.to_owned()),
            ..Metadata::default()
        };
        let step = std::time::Instant::now();
        let charged = self
            .gateway
            .charge(order_id, checked.total, &order.token)
            .await;
        timed("charge", step);
        let reference = match charged {
            ChargeOutcome::Charged { reference } => reference,
            ChargeOutcome::Declined { reason } => {
                let decline = OrderCommand::Decline {
                    actor,
                    order_id,
                    fingerprint: fingerprint.clone(),
                    total: checked.total,
                    reason,
                };
                return match self.commands.create::<Order>(&id, decline, meta).await {
                    Ok(_) => self.finish(order_id, declined_answer()).await,
                    Err(CommandError::Conflict { .. }) => {
                        self.answer_from_stream(order_id, &fingerprint).await
                    }
                    Err(e) => {
                        keep(claim);
                        self.keep_hold_for_retry(order_id).await;
                        Err(if e.maybe_written() {
                            OrderFailure::OutcomeUnknown
                        } else {
                            OrderFailure::Unavailable(anyhow::anyhow!("{e}"))
                        })
                    }
                };
            }
            ChargeOutcome::Mismatch => return Err(OrderFailure::KeyReused),
            ChargeOutcome::Unknown(why) => {
                keep(claim);
                self.keep_hold_for_retry(order_id).await;
                return Err(OrderFailure::GatewayFailed(why));
            }
        };
        // Charged: the lines stay out of the cart whatever the append comes to.
        keep(claim);
        let place = OrderCommand::Place {
            actor,
            order_id,
            lines: checked.items,
            shipping_address: SealedAddress(sealed),
            payment: Payment {
                method: order.method.clone(),
                reference,
                amount: checked.total,
            },
            policy: self.policy,
            fingerprint: fingerprint.clone(),
        };
        let step = std::time::Instant::now();
        let appended = self.commands.create::<Order>(&id, place, meta).await;
        timed("append", step);
        match appended {
            Ok(committed) => {
                let mut state = Order::default();
                for event in &committed.events {
                    openrun_domain::order::apply(&mut state, event);
                }
                let view = state.state.as_ref().map(OrderView::of);
                self.finish(
                    order_id,
                    Answer {
                        status: 201,
                        body: serde_json::to_value(view)
                            .map_err(|e| OrderFailure::Unavailable(e.into()))?,
                        replayed: false,
                    },
                )
                .await
            }
            Err(CommandError::Conflict { .. }) => {
                let answer = self.answer_from_stream(order_id, &fingerprint).await;
                if matches!(answer, Err(OrderFailure::Closed)) {
                    // A sweep closed the stream while this request was charging: the charge
                    // goes back now (once, by its refund id), not a grace period later.
                    self.refund_after_close(order_id).await;
                }
                answer
            }
            Err(CommandError::GuardRefused { counter, value }) => {
                tracing::warn!(order = %order_id, counter, value,
                    "the log refused an oversell the stock store let through; its counters are rebuilt");
                if let Err(e) = self.stock.distrust(&epoch).await {
                    tracing::warn!(error = %e, "the stock counters could not be dropped for a rebuild");
                }
                match self
                    .fence(order_id, &fingerprint, VoidReason::SoldOut)
                    .await?
                {
                    // The stream answers (it holds an order after all).
                    Some(answer) => Ok(answer),
                    None => Err(OrderFailure::SoldOut {
                        short: sold_out_in_log(&request.lines, &counter, value),
                    }),
                }
            }
            Err(CommandError::OutcomeUnknown(e)) => {
                tracing::error!(order = %order_id, error = %e, "an order's commit was lost; fencing it");
                match self
                    .fence(order_id, &fingerprint, VoidReason::CommitLost)
                    .await
                {
                    // Not placed: closed, the charge refunded.
                    Ok(None) => Err(OrderFailure::Closed),
                    // Placed after all (or declined before): the stream's answer.
                    Ok(Some(answer)) => Ok(answer),
                    Err(OrderFailure::Closed) => Err(OrderFailure::Closed),
                    // Still unknown: never "not placed". A retry with the same key re-runs
                    // the version-0 fence and learns which.
                    Err(_) => {
                        self.keep_hold_for_retry(order_id).await;
                        Err(OrderFailure::OutcomeUnknown)
                    }
                }
            }
            Err(CommandError::Rejected(e)) => {
                // Checked above; a refusal here is a bug, and the charge goes back.
                tracing::error!(order = %order_id, error = %e, "the domain refused a checked order");
                match self
                    .fence(order_id, &fingerprint, VoidReason::CommitLost)
                    .await?
                {
                    Some(answer) => Ok(answer),
                    None => Err(OrderFailure::invalid("lines", e.to_string())),
                }
            }
            Err(CommandError::Store(e)) => {
                // Not written: the hold and the charge stay for a retry with the same key
                // (which charges nothing more) or for the sweeps.
                self.keep_hold_for_retry(order_id).await;
                Err(OrderFailure::Unavailable(e.into()))
            }
        }
    }

    /// Resolves the lines of an order from the cart: each variant's product from the live
    /// catalog and, unless the hold reads the cart itself, each quantity from the cart, taking
    /// the lines out of the cart (all or none) so that no other order can take them too. A
    /// retry of an order whose lines its first request took goes on without them: its hold
    /// answers (resumed, in flight or finished).
    async fn resolve_cart_lines(
        &self,
        actor: &Actor,
        order: &mut NewOrder,
        order_id: OrderId,
        fingerprint: &str,
    ) -> Result<Option<CartClaim>, OrderFailure> {
        for (i, line) in order.lines.iter_mut().enumerate() {
            let product = self
                .catalog
                .product_of_variant(line.variant_id)
                .ok_or_else(|| {
                    OrderFailure::invalid(format!("cart_variant_ids[{i}]"), "not in your cart")
                })?;
            line.product_id = product.state.product_id;
        }
        if self.cart.read_by_hold() {
            return Ok(None);
        }
        let now = self.clock.now();
        let cart = self
            .cart
            .lines(actor.member_id, now)
            .await
            .map_err(OrderFailure::Unavailable)?;
        let mut missing = None;
        for (i, line) in order.lines.iter_mut().enumerate() {
            match cart
                .iter()
                .find(|l| l.variant_id == line.variant_id && l.product_id == line.product_id)
            {
                Some(in_cart) => line.quantity = in_cart.quantity,
                None => missing = missing.or(Some(i)),
            }
        }
        let lines: Vec<crate::cart::CartLine> = order
            .lines
            .iter()
            .map(|l| crate::cart::CartLine {
                product_id: l.product_id,
                variant_id: l.variant_id,
                quantity: l.quantity,
            })
            .collect();
        if missing.is_none()
            && self
                .cart
                .claim(actor.member_id, &lines, now)
                .await
                .map_err(OrderFailure::Unavailable)?
        {
            return Ok(Some(CartClaim::new(
                Arc::clone(&self.cart),
                actor.member_id,
                lines,
                now,
            )));
        }
        let recorded = self
            .stock
            .record(order_id)
            .await
            .map_err(|e| OrderFailure::Unavailable(e.into()))?;
        if recorded.is_some_and(|r| r.fingerprint == fingerprint) {
            // The first request's hold has the lines; the hold tells this retry the rest.
            for line in &mut order.lines {
                line.quantity = 0;
            }
            return Ok(None);
        }
        Err(OrderFailure::invalid(
            format!("cart_variant_ids[{}]", missing.unwrap_or(0)),
            "not in your cart (or another order took it)",
        ))
    }

    /// Checks the lines against the live catalog: each product visible to the buyer, on sale
    /// or about to open, each variant its own and sold; the total.
    fn check(&self, actor: &Actor, order: &NewOrder) -> Result<Checked, OrderFailure> {
        if order.method != SANDBOX {
            return Err(OrderFailure::invalid(
                "payment.method",
                "unknown payment method",
            ));
        }
        if !crate::payment::sandbox::TOKENS.contains(&order.token.as_str()) {
            return Err(OrderFailure::invalid("payment.token", "unknown card token"));
        }
        if order.lines.is_empty() || order.lines.len() > openrun_domain::order::MAX_LINES {
            return Err(OrderFailure::invalid(
                "lines",
                format!("1 to {} lines", openrun_domain::order::MAX_LINES),
            ));
        }
        if !self.catalog.is_fresh() {
            return Err(OrderFailure::Unavailable(anyhow::anyhow!(
                "the live catalog is behind the log"
            )));
        }
        let now = self.clock.now();
        let viewer = Viewer::Public(Some(actor.member_id));
        let mut items = Vec::with_capacity(order.lines.len());
        let mut terms: Vec<SaleTerms> = Vec::new();
        let mut total = Money::ZERO;
        for (i, line) in order.lines.iter().enumerate() {
            let field = |name: &str| {
                if order.from_cart {
                    format!("cart_variant_ids[{i}]")
                } else {
                    format!("lines[{i}].{name}")
                }
            };
            // A cart line the hold reads has its quantity from the cart (checked when put).
            let from_hold = order.from_cart && line.quantity == 0;
            if !from_hold
                && (line.quantity == 0
                    || line.quantity > openrun_domain::order::MAX_QUANTITY_PER_LINE)
            {
                return Err(OrderFailure::invalid(
                    field("quantity"),
                    format!("1 to {}", openrun_domain::order::MAX_QUANTITY_PER_LINE),
                ));
            }
            if order.lines[..i]
                .iter()
                .any(|l| l.variant_id == line.variant_id)
            {
                return Err(OrderFailure::invalid(
                    field("variant_id"),
                    "a variant on two lines",
                ));
            }
            let product = self
                .catalog
                .product(line.product_id)
                .filter(|p| p.visible_to(&viewer, now))
                .ok_or_else(|| OrderFailure::invalid(field("product_id"), "no such product"))?;
            if product
                .state
                .variant(line.variant_id)
                .is_none_or(|v| v.retired)
            {
                return Err(OrderFailure::invalid(
                    field("variant_id"),
                    "not a variant of the product on sale",
                ));
            }
            if !terms.iter().any(|t| t.product_id == line.product_id) {
                terms.push(sale_terms(&product, now)?);
            }
            let unit_price = product.state.price;
            total = unit_price
                .checked_mul(line.quantity)
                .and_then(|t| total.checked_add(t))
                .ok_or_else(|| OrderFailure::invalid("lines", "the total is too large"))?;
            items.push(LineItem {
                product_id: line.product_id,
                variant_id: line.variant_id,
                quantity: line.quantity,
                unit_price,
            });
        }
        Ok(Checked {
            items,
            terms,
            total,
        })
    }

    /// Records `answer` for retries with the same key, and returns it.
    async fn finish(&self, order_id: OrderId, answer: Answer) -> Result<Answer, OrderFailure> {
        let text =
            serde_json::to_string(&answer).map_err(|e| OrderFailure::Unavailable(e.into()))?;
        let step = std::time::Instant::now();
        let finished = self.stock.finish(order_id, &text).await;
        timed("finish", step);
        if let Err(e) = finished {
            // The order stands; a retry finds it in the log instead.
            tracing::warn!(order = %order_id, error = %e, "an order's answer was not recorded");
        }
        Ok(answer)
    }

    async fn keep_hold_for_retry(&self, order_id: OrderId) {
        if let Err(e) = self.stock.allow_retry(order_id).await {
            tracing::warn!(order = %order_id, error = %e, "a retry of the order will be told it is in flight until the sweep");
        }
    }

    /// Closes a stream that must not hold an order. `None` when this call closed it (the
    /// charge is refunded, and the counter projector gives the hold back when it applies the
    /// close); otherwise the answer the stream records (an order placed after all, a
    /// decline), or [`OrderFailure::Closed`] when something else closed it.
    async fn fence(
        &self,
        order_id: OrderId,
        fingerprint: &str,
        reason: VoidReason,
    ) -> Result<Option<Answer>, OrderFailure> {
        if self.void(order_id, reason).await? {
            return Ok(None);
        }
        let answer = self.answer_from_stream(order_id, fingerprint).await;
        if matches!(answer, Err(OrderFailure::Closed)) {
            self.refund_after_close(order_id).await;
        }
        answer.map(Some)
    }

    /// Refunds the charge of an order whose stream is closed, or leaves it to the charge
    /// sweep when the gateway cannot be reached.
    async fn refund_after_close(&self, order_id: OrderId) {
        if let Err(e) = self.refund_void(order_id).await {
            tracing::warn!(order = %order_id, error = %e, "a closed order's charge is left to the charge sweep");
        }
    }

    /// Appends `OrderVoided` at version 0 and, when it commits, refunds the order's charge.
    /// True when this call closed the stream.
    pub(crate) async fn void(
        &self,
        order_id: OrderId,
        reason: VoidReason,
    ) -> Result<bool, OrderFailure> {
        let command = OrderCommand::Void {
            issuer: Issuer::System,
            reason,
        };
        let meta = Metadata {
            actor: Some("system:orders".into()),
            ..Metadata::default()
        };
        match self
            .commands
            .create::<Order>(&order_id.to_string(), command, meta)
            .await
        {
            Ok(_) => {
                // A retry with the same key is told so at once, whatever the refund does.
                self.finish(order_id, closed_answer(reason)).await?;
                self.refund_after_close(order_id).await;
                Ok(true)
            }
            Err(CommandError::Conflict { .. }) => Ok(false),
            Err(e) if e.maybe_written() => Err(OrderFailure::OutcomeUnknown),
            Err(e) => Err(OrderFailure::Unavailable(anyhow::anyhow!("{e}"))),
        }
    }

    /// Refunds the charge of an order that can never be placed (its stream is closed).
    pub(crate) async fn refund_void(&self, order_id: OrderId) -> Result<(), OrderFailure> {
        self.gateway
            .refund(void_refund_id(order_id), order_id)
            .await
            .map(drop)
            .map_err(|e| OrderFailure::Unavailable(e.into()))
    }

    /// A request refused before its hold (a product no longer on sale or visible, an address
    /// deleted since) may be the retry of an order answered before: the answer recorded for
    /// its key, else the one its stream holds; otherwise `failure`.
    async fn retry_or(
        &self,
        order_id: OrderId,
        fingerprint: &str,
        actor: &Actor,
        order: &NewOrder,
        failure: OrderFailure,
    ) -> Result<Answer, OrderFailure> {
        // Only what may have changed since a first request passed: the product (hidden,
        // ended, a size retired) or the address. The shape of the body is the same for the
        // same body, and was refused the first time too.
        let changeable = match &failure {
            OrderFailure::NotOnSale { .. } => true,
            OrderFailure::Invalid { field, .. } => {
                field == "address_id"
                    || field.starts_with("cart_variant_ids[")
                    || (field.starts_with("lines[")
                        && (field.ends_with(".product_id") || field.ends_with(".variant_id")))
            }
            _ => false,
        };
        if !changeable {
            return Err(failure);
        }
        let recorded = self
            .stock
            .record(order_id)
            .await
            .map_err(|e| OrderFailure::Unavailable(e.into()))?;
        match recorded {
            Some(r) if r.fingerprint != fingerprint => Err(OrderFailure::KeyReused),
            Some(r) => match r.answer {
                Some(answer) => replayed(&answer),
                // Being placed, or placed without its answer recorded (the log has it).
                None => match self.answer_in_log(order_id, fingerprint).await? {
                    Some(answer) => Ok(answer),
                    None => Err(OrderFailure::InFlight),
                },
            },
            None => match self
                .placed_before(actor.member_id, order_id, fingerprint, order)
                .await?
            {
                Some(answer) => Ok(answer),
                None => Err(failure),
            },
        }
    }

    /// The answer of an order placed (or closed) before with this key, when the buyer could
    /// have placed one: the live catalog knows every product each member bought, so a first
    /// request of a buyer who never bought these products reads no database (in a sold-out
    /// drop, that is nearly every refused request). An order placed within the catalog's lag
    /// whose record the store lost in the same moment is one case this misses: its retry is
    /// refused like a new request while it stands in the buyer's list. A declined or closed
    /// order whose record is gone is the other: its retry is answered as a new request
    /// (sold out, not on sale) rather than 402 or closed; nothing was charged either way.
    async fn placed_before(
        &self,
        buyer: MemberId,
        order_id: OrderId,
        fingerprint: &str,
        order: &NewOrder,
    ) -> Result<Option<Answer>, OrderFailure> {
        if !self
            .catalog
            .has_bought(buyer, order.lines.iter().map(|l| l.product_id))
        {
            return Ok(None);
        }
        self.answer_in_log(order_id, fingerprint).await
    }

    /// The answer of an order placed (or closed) before with this key, if its stream exists.
    async fn answer_in_log(
        &self,
        order_id: OrderId,
        fingerprint: &str,
    ) -> Result<Option<Answer>, OrderFailure> {
        let stream = crate::eventstore::StreamRef::new("order", order_id.to_string());
        let exists = !self
            .commands
            .events()
            .read_stream(&stream, 1, 1)
            .await
            .map_err(|e| OrderFailure::Unavailable(e.into()))?
            .is_empty();
        if !exists {
            return Ok(None);
        }
        match self.answer_from_stream(order_id, fingerprint).await {
            Ok(answer) => Ok(Some(answer)),
            Err(e) => Err(e),
        }
    }

    /// The answer the order's stream records for a request with `fingerprint`.
    pub async fn answer_from_stream(
        &self,
        order_id: OrderId,
        fingerprint: &str,
    ) -> Result<Answer, OrderFailure> {
        let loaded = self
            .commands
            .load::<Order>(&order_id.to_string())
            .await
            .map_err(|e: CommandError<OrderError>| {
                OrderFailure::Unavailable(anyhow::anyhow!("{e}"))
            })?;
        let answer = match (&loaded.state.state, &loaded.state.closed) {
            (_, Some(Closure::Voided { .. })) => return Err(OrderFailure::Closed),
            (_, Some(Closure::Declined { fingerprint: f, .. })) if f == fingerprint => {
                declined_answer()
            }
            (Some(state), None) if state.fingerprint == fingerprint => Answer {
                status: 201,
                body: serde_json::to_value(OrderView::of(state))
                    .map_err(|e| OrderFailure::Unavailable(e.into()))?,
                replayed: false,
            },
            (None, None) => {
                return Err(OrderFailure::Unavailable(anyhow::anyhow!(
                    "the order's stream is empty after a conflict"
                )));
            }
            _ => return Err(OrderFailure::KeyReused),
        };
        let answer = self.finish(order_id, answer).await?;
        Ok(Answer {
            replayed: true,
            ..answer
        })
    }

    /// A page of `buyer`'s orders, newest first, from the order summaries (which follow the
    /// log: an order placed a moment ago may be missing for that moment), and how many there
    /// are.
    pub async fn list(
        &self,
        buyer: MemberId,
        page: u32,
        size: u32,
    ) -> Result<(Vec<OrderSummary>, u64), OrderFailure> {
        use crate::db::with_pool;
        let table = openrun_projections::orders::TABLE;
        let buyer = buyer.to_string();
        let offset = i64::from(page.saturating_sub(1)) * i64::from(size);
        let sql = format!(
            "SELECT order_id, status, total, line_count, placed_at FROM {table} \
             WHERE buyer_id = ? ORDER BY position DESC LIMIT ? OFFSET ?"
        );
        let count = format!("SELECT COUNT(*) FROM {table} WHERE buyer_id = ?");
        let unavailable = |e: sqlx::Error| OrderFailure::Unavailable(e.into());
        // The page and the count from one snapshot: a row committed between the two reads
        // must not show as a total with no item.
        let (rows, total): (Vec<SummaryRow>, i64) = with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await.map_err(unavailable)?;
            let rows = sqlx::query_as(&sql)
                .bind(&buyer)
                .bind(i64::from(size))
                .bind(offset)
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?;
            let total = sqlx::query_scalar(&count)
                .bind(&buyer)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.rollback().await.map_err(unavailable)?;
            (rows, total)
        });
        let items = rows
            .into_iter()
            .filter_map(|(id, status, total, lines, at)| {
                Some(OrderSummary {
                    id: id.parse().ok()?,
                    status,
                    total,
                    currency: CURRENCY,
                    line_count: u32::try_from(lines).unwrap_or(u32::MAX),
                    placed_at: at.parse().ok()?,
                })
            })
            .collect();
        Ok((items, u64::try_from(total).unwrap_or(0)))
    }
}

/// The answer recorded for an order closed without being placed.
fn closed_answer(reason: VoidReason) -> Answer {
    let body = if reason == VoidReason::SoldOut {
        json!({
            "type": "/problems/sold-out",
            "title": "Sold out",
            "status": 409,
            "detail": "fewer units were left than the order asked for; nothing stays charged",
        })
    } else {
        json!({
            "type": "/problems/order-closed",
            "title": "Order closed without being placed",
            "status": 409,
            "detail": "this order was closed without being placed and nothing stays charged; \
                       send it again with a new Idempotency-Key",
        })
    };
    Answer {
        status: 409,
        body,
        replayed: false,
    }
}

/// The answer of a declined payment, recorded like a placed order's.
fn declined_answer() -> Answer {
    Answer {
        status: 402,
        body: json!({
            "type": "/problems/payment-declined",
            "title": "Payment declined",
            "status": 402,
            "detail": "the card was declined; nothing was charged",
        }),
        replayed: false,
    }
}

fn replayed(text: &str) -> Result<Answer, OrderFailure> {
    let answer: Answer = serde_json::from_str(text)
        .map_err(|e| OrderFailure::Unavailable(anyhow::anyhow!("a recorded answer: {e}")))?;
    Ok(Answer {
        replayed: true,
        ..answer
    })
}

/// The sale window of a product at `now` as the store is to judge it: on sale from an
/// opening (none when on sale already) until the next change that ends the sale.
fn sale_terms(product: &LiveProduct, now: DateTime<Utc>) -> Result<SaleTerms, OrderFailure> {
    let state = &product.state;
    let not_on_sale = || OrderFailure::NotOnSale {
        product_id: state.product_id,
    };
    if state.deleted {
        return Err(not_on_sale());
    }
    let steps: Vec<(DateTime<Utc>, ProductStatus)> = state
        .planned()
        .filter_map(|(due, _, to)| to.map(|to| (due, to)))
        .collect();
    let (opens_at, rest) = if state.status == ProductStatus::OnSale {
        // Opened by a schedule: its instant still decides, on the store's clock. The
        // scheduler fires on the database's clock, and a node whose catalog saw the change
        // before the store's clock reached the instant must not open early.
        let opened = state
            .schedules
            .values()
            .filter(|s| s.state == ScheduleState::Fired && s.to == ProductStatus::OnSale)
            .map(|s| s.due_at)
            .max();
        (opened, &steps[..])
    } else {
        // Only the next step may open it, and only soon (or past: not fired yet).
        match steps.first() {
            Some((due, ProductStatus::OnSale)) if *due <= now + OPENING_SKEW => {
                (Some(*due), &steps[1..])
            }
            _ => return Err(not_on_sale()),
        }
    };
    let ends_at = rest
        .iter()
        .find(|(_, to)| *to != ProductStatus::OnSale)
        .map(|(due, _)| *due);
    Ok(SaleTerms {
        product_id: state.product_id,
        opens_at,
        ends_at,
        limit: state.purchase_limit,
    })
}

/// The failure of a hold the store refused.
fn refusal(outcome: HoldOutcome, lines: &[HoldLine]) -> OrderFailure {
    match outcome {
        HoldOutcome::NotOnSale { product_id } => OrderFailure::NotOnSale { product_id },
        HoldOutcome::LimitReached {
            product_id,
            limit,
            bought,
        } => OrderFailure::LimitReached {
            product_id,
            limit,
            bought,
        },
        HoldOutcome::SoldOut { short } => OrderFailure::SoldOut {
            short: short_lines(lines, &short),
        },
        HoldOutcome::Rebuilding => {
            OrderFailure::Unavailable(anyhow::anyhow!("the stock counters are being rebuilt"))
        }
        HoldOutcome::NotInCart { variant_id } => not_in_cart(lines, variant_id),
        other => OrderFailure::Unavailable(anyhow::anyhow!("unexpected hold outcome {other:?}")),
    }
}

/// Cart lines an order took out of its buyer's cart: put back when settled while still
/// armed (the order was refused or declined), kept out once [`keep`] disarmed it (charged,
/// or its hold kept for a retry).
struct CartClaim {
    cart: Arc<dyn crate::cart::CartStore>,
    member: MemberId,
    lines: Vec<crate::cart::CartLine>,
    at: DateTime<Utc>,
    armed: bool,
}

impl CartClaim {
    fn new(
        cart: Arc<dyn crate::cart::CartStore>,
        member: MemberId,
        lines: Vec<crate::cart::CartLine>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            cart,
            member,
            lines,
            at,
            armed: true,
        }
    }
}

impl CartClaim {
    /// Puts the lines back when still armed.
    async fn settle(self) {
        if !self.armed {
            return;
        }
        for line in self.lines {
            if let Err(e) = self.cart.put(self.member, line, self.at).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "a refused order's cart line was not put back"
                );
            }
        }
    }
}

/// The claimed cart lines stay out of the cart.
fn keep(claim: &mut Option<CartClaim>) {
    if let Some(claim) = claim.as_mut() {
        claim.armed = false;
    }
}

fn cart_lines(lines: &[HoldLine]) -> Vec<crate::cart::CartLine> {
    lines
        .iter()
        .map(|l| crate::cart::CartLine {
            product_id: l.product_id,
            variant_id: l.variant_id,
            quantity: l.quantity,
        })
        .collect()
}

/// The failure of a cart order naming a variant the cart does not hold.
fn not_in_cart(lines: &[HoldLine], variant: VariantId) -> OrderFailure {
    let i = lines
        .iter()
        .position(|l| l.variant_id == variant)
        .unwrap_or(0);
    OrderFailure::invalid(format!("cart_variant_ids[{i}]"), "not in your cart")
}

fn short_lines(lines: &[HoldLine], short: &[(VariantId, i64)]) -> Vec<(ProductId, VariantId, i64)> {
    short
        .iter()
        .filter_map(|(variant, left)| {
            lines
                .iter()
                .find(|l| l.variant_id == *variant)
                .map(|l| (l.product_id, *variant, (*left).max(0)))
        })
        .collect()
}

fn sold_out_in_log(
    lines: &[HoldLine],
    counter: &str,
    value: i64,
) -> Vec<(ProductId, VariantId, i64)> {
    lines
        .iter()
        .filter(|l| crate::commands::units_counter(l.variant_id) == counter)
        .map(|l| (l.product_id, l.variant_id, value.max(0)))
        .collect()
}

/// The fingerprint of an order request: its lines, address and payment, in the order sent.
pub fn fingerprint(order: &NewOrder) -> String {
    let mut hash = Sha256::new();
    for line in &order.lines {
        hash.update(line.product_id.as_uuid().as_bytes());
        hash.update(line.variant_id.as_uuid().as_bytes());
        hash.update(line.quantity.to_be_bytes());
    }
    hash.update(order.address_id.as_bytes());
    if order.from_cart {
        hash.update(b"cart");
    }
    hash.update(order.method.as_bytes());
    hash.update([0]);
    hash.update(order.token.as_bytes());
    hex(&hash.finalize()[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{DateTime, Duration, TimeZone, Utc};
    use openrun_domain::product::{
        NewVariant, Product, ProductCommand, ProductStatus, apply, decide,
    };
    use openrun_domain::{
        Actor, CategoryId, Issuer, MemberId, Money, ProductId, Role, ScheduleId, VariantId,
    };
    use uuid::Uuid;

    use super::sale_terms;
    use crate::catalog::live::LiveProduct;

    fn run(product: &mut Product, command: ProductCommand, now: DateTime<Utc>) {
        for event in decide(product, command, now).unwrap() {
            apply(product, &event);
        }
    }

    fn waiting(seller: Actor, id: u128, now: DateTime<Utc>) -> Product {
        let mut product = Product::default();
        let register = ProductCommand::Register {
            actor: seller,
            product_id: ProductId::from_uuid(Uuid::from_u128(id)),
            category_id: CategoryId::from_uuid(Uuid::from_u128(4)),
            name: "Dunk".into(),
            description: String::new(),
            price: Money::from_minor(1000),
            variants: vec![NewVariant {
                variant_id: VariantId::from_uuid(Uuid::from_u128(id + 100)),
                label: "270".into(),
            }],
            purchase_limit: None,
        };
        run(&mut product, register, now);
        run(&mut product, status(seller, ProductStatus::Waiting), now);
        product
    }

    fn status(actor: Actor, to: ProductStatus) -> ProductCommand {
        ProductCommand::ChangeStatus {
            actor,
            to,
            reason: None,
        }
    }

    fn live(product: &Product, now: DateTime<Utc>) -> LiveProduct {
        LiveProduct::from_stream(product.state.clone().unwrap(), 1, now)
    }

    #[test]
    fn a_drop_opened_by_its_schedule_still_opens_at_its_instant_on_the_store_s_clock() {
        let seller = Actor::new(MemberId::from_uuid(Uuid::from_u128(1)), Role::Seller);
        let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        let opens = t0 + Duration::minutes(5);
        let schedule_id = ScheduleId::from_uuid(Uuid::from_u128(3));
        let mut product = waiting(seller, 2, t0);
        let schedule = ProductCommand::ScheduleStatusChange {
            actor: seller,
            schedule_id,
            to: ProductStatus::OnSale,
            due_at: opens,
        };
        run(&mut product, schedule, t0);
        assert_eq!(
            sale_terms(&live(&product, opens), opens).unwrap().opens_at,
            Some(opens)
        );
        // Fired (on the database's clock): on sale in the catalog, from the same instant.
        let fire = ProductCommand::FireScheduledStatusChange {
            issuer: Issuer::System,
            schedule_id,
        };
        run(&mut product, fire, opens);
        assert_eq!(
            product.state.as_ref().unwrap().status,
            ProductStatus::OnSale
        );
        assert_eq!(
            sale_terms(&live(&product, opens), opens).unwrap().opens_at,
            Some(opens)
        );
        // Put on sale by hand: no instant to wait for.
        let mut by_hand = waiting(seller, 6, t0);
        run(&mut by_hand, status(seller, ProductStatus::OnSale), t0);
        assert_eq!(sale_terms(&live(&by_hand, t0), t0).unwrap().opens_at, None);
    }
}
