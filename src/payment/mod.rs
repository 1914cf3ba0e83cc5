//! Payments: the gateway the order path charges through, behind a small trait, and the
//! built-in sandbox gateway.
//!
//! A charge is keyed by its order id and a refund by its refund id, so that a retry, a sweep
//! and a crash in between never charge or refund twice. A gateway answers a charge with one
//! of three outcomes: charged, declined (definitely not charged) or unknown (it may have
//! charged: the order keeps its hold, and a retry with the same order id or the charge sweep
//! settles it).
//!
//! # Layout
//! - [`sandbox`]: the sandbox gateway, whose ledger lives in the shop's database.

pub mod sandbox;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use openrun_domain::{Money, OrderId};
use uuid::Uuid;

/// The payment method every token of the sandbox belongs to.
pub const SANDBOX: &str = "sandbox";

/// What a charge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Charged: the gateway's reference of the capture.
    Charged {
        /// The capture's reference; refunds quote it.
        reference: String,
    },
    /// Declined: nothing was charged.
    Declined {
        /// The gateway's reason, for the buyer.
        reason: String,
    },
    /// The order id was charged before with another amount or token: nothing more happens.
    Mismatch,
    /// The gateway did not answer: it may have charged.
    Unknown(String),
}

/// What a refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// Refunded now, or by an earlier call with the same refund id.
    Refunded {
        /// The amount refunded.
        amount: Money,
    },
    /// The order has no charge to refund (nothing recorded, or it was declined).
    NothingCharged,
}

/// A charge as the gateway's ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The order it pays for.
    pub order_id: OrderId,
    /// The amount.
    pub amount: Money,
    /// The capture's reference.
    pub reference: String,
    /// Refunded so far.
    pub refunded: Money,
    /// When it was taken.
    pub at: DateTime<Utc>,
}

/// Why a gateway call failed (it could not be reached; nothing is known).
#[derive(Debug, thiserror::Error)]
#[error("payment gateway: {0}")]
pub struct GatewayError(#[from] pub anyhow::Error);

/// A payment gateway.
#[async_trait]
pub trait PaymentGateway: Send + Sync + 'static {
    /// Charges `amount` for `order_id` with the card `token`, once per order id: a second
    /// call with the same amount and token answers what the first did.
    async fn charge(&self, order_id: OrderId, amount: Money, token: &str) -> ChargeOutcome;

    /// Refunds the whole charge of `order_id`, once per `refund_id`.
    async fn refund(
        &self,
        refund_id: Uuid,
        order_id: OrderId,
    ) -> Result<RefundOutcome, GatewayError>;

    /// The charge of `order_id`, if any.
    async fn charge_of(&self, order_id: OrderId) -> Result<Option<Charge>, GatewayError>;

    /// Charges taken before `before` that are neither settled nor refunded, oldest first.
    async fn unsettled(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Charge>, GatewayError>;

    /// Marks the charge of `order_id` settled: its order is placed.
    async fn settle(&self, order_id: OrderId) -> Result<(), GatewayError>;
}

/// The refund id of an order that was never placed: one per order, whoever refunds it.
pub fn void_refund_id(order_id: OrderId) -> Uuid {
    Uuid::new_v5(&order_id.as_uuid(), b"void")
}
