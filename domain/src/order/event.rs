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
use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster};
use serde_json::Value;

use crate::ids::{MemberId, OrderId, ProductId, VariantId};
use crate::money::Money;
use crate::policy::OrderPolicy;
use crate::product::implicit_variant_id;

/// The version of the order events whose shape never changed.
pub const ORDER_EVENT_VERSION: &str = "1.0";
/// The version of the events whose lines name a variant (`OrderPlaced` also records the
/// request's fingerprint): 1.0 lines named only a product (see [`upcasters`]).
pub const ORDER_LINES_VERSION: &str = "2.0";
/// The version of `OrderRefunded` that names its refund: 1.0 had no `refund_id` (see
/// [`upcast_refund_v1`]).
pub const ORDER_REFUND_VERSION: &str = "2.0";

/// The namespace of refund ids.
const REFUND_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6f70_656e_7275_6e00_8000_7265_6675_6e64);

/// The id a recorded refund goes by: the one it names, or (a 1.0 `OrderRefunded`, which
/// names the nil id) [`refund_id`] of its order and cause.
pub fn named_or_derived_refund_id(
    named: uuid::Uuid,
    order_id: OrderId,
    cause: RefundCause,
) -> uuid::Uuid {
    if named.is_nil() {
        refund_id(order_id, cause)
    } else {
        named
    }
}

/// The id of the refund of `order_id` for `cause`: UUIDv5 of both, so that whoever records or
/// pays it, however often, names the same refund.
pub fn refund_id(order_id: OrderId, cause: RefundCause) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &REFUND_NAMESPACE,
        format!("{}:{}", order_id.as_uuid(), cause.as_str()).as_bytes(),
    )
}

/// An accepted order line, with its total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product.
    pub product_id: ProductId,
    /// The variant sold.
    pub variant_id: VariantId,
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
    /// The variant.
    pub variant_id: VariantId,
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

impl RefundCause {
    /// Its name, as events store it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cancellation => "cancellation",
            Self::Return => "return",
        }
    }
}

/// Why a stream was closed without an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoidReason {
    /// Its units were held but it was never placed within the grace period.
    Abandoned,
    /// The commit of its `OrderPlaced` was lost, and the close won the fence.
    CommitLost,
    /// The gateway holds a charge for it and it was never placed.
    OrphanedCharge,
    /// The log refused its units (its guarded counter): the hot store had sold what was not
    /// there any more.
    SoldOut,
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
        /// The fingerprint of the request that placed it.
        fingerprint: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The payment of a new order was declined: nothing was charged, and the stream is
    /// closed (a retry with the same key gets the decline again).
    OrderDeclined {
        /// The order (also the stream id).
        order_id: OrderId,
        /// The buyer.
        buyer_id: MemberId,
        /// The fingerprint of the request.
        fingerprint: String,
        /// The amount declined.
        total: Money,
        /// The gateway's reason.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The stream was closed without an order: whoever appended this releases the units held
    /// for it and refunds any charge taken for it.
    OrderVoided {
        /// Why.
        reason: VoidReason,
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
    /// Money is owed back to the buyer: recorded before any money moves. The refund
    /// processor pays it through the gateway (once per `refund_id`) and records
    /// `RefundSettled`.
    OrderRefunded {
        /// The refund: [`refund_id`] of the order and the cause (nil in a 1.0 event; the fold
        /// derives it then).
        refund_id: uuid::Uuid,
        /// Why.
        cause: RefundCause,
        /// How much: always the amount paid.
        amount: Money,
        /// The capture to reverse.
        payment_reference: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The gateway paid a refund back: the money moved.
    RefundSettled {
        /// The refund.
        refund_id: uuid::Uuid,
        /// The amount the gateway refunded.
        amount: Money,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrderPlaced { .. } => "OrderPlaced",
            Self::OrderDeclined { .. } => "OrderDeclined",
            Self::OrderVoided { .. } => "OrderVoided",
            Self::OrderShipped { .. } => "OrderShipped",
            Self::OrderDelivered { .. } => "OrderDelivered",
            Self::OrderCancelled { .. } => "OrderCancelled",
            Self::ReturnRequested { .. } => "ReturnRequested",
            Self::ReturnPickedUp { .. } => "ReturnPickedUp",
            Self::ReturnCompleted { .. } => "ReturnCompleted",
            Self::OrderRefunded { .. } => "OrderRefunded",
            Self::RefundSettled { .. } => "RefundSettled",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            Self::OrderPlaced { .. }
            | Self::OrderCancelled { .. }
            | Self::ReturnCompleted { .. } => ORDER_LINES_VERSION,
            Self::OrderRefunded { .. } => ORDER_REFUND_VERSION,
            _ => ORDER_EVENT_VERSION,
        }
        .to_owned()
    }
}

/// Upgrades a 1.0 payload whose lines (`lines`, `released` or `restocked`) named only a
/// product: each line gets the product's implicit variant, the only one a product had then.
/// `OrderPlaced` also gets an empty fingerprint (no retry can match it). Payloads already in
/// the new shape are left alone.
pub fn upcast_order_lines_v1(mut payload: Value) -> Value {
    let Some(data) = payload.get_mut("data").and_then(Value::as_object_mut) else {
        return payload;
    };
    for field in ["lines", "released", "restocked"] {
        let Some(lines) = data.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        for line in lines.iter_mut().filter_map(Value::as_object_mut) {
            let product = line
                .get("product_id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<uuid::Uuid>().ok())
                .map(ProductId::from_uuid);
            if let (Some(product), false) = (product, line.contains_key("variant_id")) {
                line.insert(
                    "variant_id".to_owned(),
                    serde_json::json!(implicit_variant_id(product)),
                );
            }
        }
    }
    if data.contains_key("lines") {
        data.entry("fingerprint")
            .or_insert_with(|| Value::String(String::new()));
    }
    payload
}

/// Upgrades a 1.0 `OrderRefunded`, which named no refund: it gets the nil id, which the
/// fold replaces with [`refund_id`] of its order and cause (the payload does not name the
/// order).
pub fn upcast_refund_v1(mut payload: Value) -> Value {
    if let Some(data) = payload.get_mut("data").and_then(Value::as_object_mut) {
        data.entry("refund_id")
            .or_insert_with(|| serde_json::json!(uuid::Uuid::nil()));
    }
    payload
}

/// The upcasters for order events, ready for cqrs-es's `PersistedEventStore::with_upcasters`.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    let mut upcasters: Vec<Box<dyn EventUpcaster>> =
        ["OrderPlaced", "OrderCancelled", "ReturnCompleted"]
            .into_iter()
            .map(|event_type| {
                Box::new(SemanticVersionEventUpcaster::new(
                    event_type,
                    ORDER_LINES_VERSION,
                    Box::new(upcast_order_lines_v1),
                )) as Box<dyn EventUpcaster>
            })
            .collect();
    upcasters.push(Box::new(SemanticVersionEventUpcaster::new(
        "OrderRefunded",
        ORDER_REFUND_VERSION,
        Box::new(upcast_refund_v1),
    )));
    upcasters
}
