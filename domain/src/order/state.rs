//! The order aggregate's state, rebuilt from its events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::command::Payment;
use super::event::{OrderLine, RefundCause, VoidReason};
use super::status::OrderStatus;
use crate::ids::{MemberId, OrderId};
use crate::money::Money;
use crate::policy::OrderPolicy;

/// The order aggregate: nothing until `OrderPlaced`, then its state; or closed without an
/// order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// `None` until the order is placed.
    pub state: Option<OrderState>,
    /// Set when the stream was closed without an order.
    pub closed: Option<Closure>,
}

/// How a stream was closed without an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Closure {
    /// The payment was declined.
    Declined {
        /// The fingerprint of the request.
        fingerprint: String,
        /// The gateway's reason.
        reason: String,
    },
    /// Closed by a sweep or a fence.
    Voided {
        /// Why.
        reason: VoidReason,
    },
}

/// A placed order. The sealed shipping address is not kept here: no decision needs it, and
/// it stays out of snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    /// The order.
    pub order_id: OrderId,
    /// The buyer.
    pub buyer_id: MemberId,
    /// The lines.
    pub lines: Vec<OrderLine>,
    /// The total.
    pub total: Money,
    /// The captured payment.
    pub payment: Payment,
    /// The timing policy the order was sold under.
    pub policy: OrderPolicy,
    /// The fingerprint of the request that placed it.
    pub fingerprint: String,
    /// The status.
    pub status: OrderStatus,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// When the status last changed (the clock of the next automatic step).
    pub status_changed_at: DateTime<Utc>,
    /// When it was delivered (the clock of the return window).
    pub delivered_at: Option<DateTime<Utc>>,
    /// The refunds so far: at most one, for cancellation or return.
    pub refunds: Vec<Refund>,
}

/// A refund recorded on the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// The refund's id ([`super::refund_id`] of the order and the cause).
    pub refund_id: uuid::Uuid,
    /// Why.
    pub cause: RefundCause,
    /// How much.
    pub amount: Money,
    /// When it was recorded (owed).
    pub at: DateTime<Utc>,
    /// When the gateway paid it back; `None` while it is owed.
    pub settled_at: Option<DateTime<Utc>>,
}

impl OrderState {
    /// The total refunded so far.
    pub fn refunded(&self) -> Money {
        Money::from_minor(
            self.refunds
                .iter()
                .map(|r| r.amount.minor())
                .fold(0, i64::saturating_add),
        )
    }
}
