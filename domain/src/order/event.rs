//! Order events.
//!
//! Stored as adjacently tagged JSON, `{"type": "OrderPlaced", "data": {...}}`, where `type`
//! equals [`DomainEvent::event_type`]. The shapes are pinned by the golden files in
//! `domain/tests/golden/order/`.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::command::{Payment, SealedAddress};
use crate::actor::Actor;
use crate::ids::{MemberId, OrderId, ProductId};
use crate::money::Money;
use crate::policy::OrderPolicy;

/// The version of every order event.
pub const ORDER_EVENT_VERSION: &str = "1.0";

/// An accepted order line, with its total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product.
    pub product_id: ProductId,
    /// How many units.
    pub quantity: u32,
    /// The unit price paid.
    pub unit_price: Money,
    /// `unit_price * quantity`.
    pub line_total: Money,
}

/// Units going back to a product's available stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    /// The product.
    pub product_id: ProductId,
    /// How many units.
    pub quantity: u32,
}

/// Why money went back to the buyer. Each cause happens at most once per order, and the two
/// exclude each other (a cancelled order is never delivered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundCause {
    /// The order was cancelled.
    Cancellation,
    /// The order was returned.
    Return,
}

/// Something that happened to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
#[allow(
    clippy::large_enum_variant,
    reason = "events are moved rarely; boxing would only complicate matching"
)]
pub enum OrderEvent {
    /// A paid order was placed: the units of every line are sold (taken from available
    /// stock).
    OrderPlaced {
        /// The order (also the stream id).
        order_id: OrderId,
        /// The buyer.
        buyer_id: MemberId,
        /// The lines, in the buyer's order.
        lines: Vec<OrderLine>,
        /// The sum of the lines' quantities.
        total_quantity: u64,
        /// The sum of the lines' totals; equals the payment's amount.
        total: Money,
        /// The sealed shipping-address snapshot.
        shipping_address: SealedAddress,
        /// The captured payment.
        payment: Payment,
        /// The timing policy the order was sold under.
        policy: OrderPolicy,
        /// When.
        at: DateTime<Utc>,
    },
    /// The order shipped: `in_delivery`.
    OrderShipped {
        /// When.
        at: DateTime<Utc>,
    },
    /// The order was delivered; the return window opens.
    OrderDelivered {
        /// When.
        at: DateTime<Utc>,
    },
    /// The order was cancelled; `released` units go back to available stock. Followed in
    /// the same append by its `OrderRefunded`.
    OrderCancelled {
        /// Who cancelled it (the buyer or an admin).
        by: Actor,
        /// The units released, one entry per line.
        released: Vec<StockLine>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The buyer asked to return the order.
    ReturnRequested {
        /// The buyer's reason.
        reason: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The returned goods were picked up: `in_return`.
    ReturnPickedUp {
        /// When.
        at: DateTime<Utc>,
    },
    /// The returned goods arrived; `restocked` units go back to available stock. Followed in
    /// the same append by its `OrderRefunded`.
    ReturnCompleted {
        /// The units restocked, one entry per line.
        restocked: Vec<StockLine>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Money is owed back to the buyer; the payment adapter reverses the capture.
    OrderRefunded {
        /// Why.
        cause: RefundCause,
        /// How much: always the amount paid.
        amount: Money,
        /// The capture to reverse.
        payment_reference: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrderPlaced { .. } => "OrderPlaced",
            Self::OrderShipped { .. } => "OrderShipped",
            Self::OrderDelivered { .. } => "OrderDelivered",
            Self::OrderCancelled { .. } => "OrderCancelled",
            Self::ReturnRequested { .. } => "ReturnRequested",
            Self::ReturnPickedUp { .. } => "ReturnPickedUp",
            Self::ReturnCompleted { .. } => "ReturnCompleted",
            Self::OrderRefunded { .. } => "OrderRefunded",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        ORDER_EVENT_VERSION.to_owned()
    }
}
