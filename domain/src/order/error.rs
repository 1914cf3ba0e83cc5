//! Why an order command is refused.

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::status::{AutoStep, OrderStatus};
use crate::actor::{Denied, Role};
use crate::ids::{ProductId, VariantId};
use crate::money::Money;

/// A refused order command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OrderError {
    /// The order stream has no `OrderPlaced` event.
    #[error("order not found")]
    NotPlaced,
    /// `Place` on a stream that already holds an order.
    #[error("order already placed")]
    AlreadyPlaced,
    /// The stream was closed without an order (declined or voided): nothing more happens.
    #[error("the order was closed without being placed")]
    Closed,
    /// The actor's role may not do this (an unverified member placing an order, a
    /// non-admin sending an automatic step).
    #[error("role {role} may not do this")]
    RoleNotAllowed {
        /// The actor's role.
        role: Role,
    },
    /// A member acting on someone else's order.
    #[error("not the buyer of this order")]
    NotBuyer,
    /// The order policy has a duration out of range.
    #[error("order policy field {field} is out of range")]
    InvalidPolicy {
        /// The JSON name of the field.
        field: &'static str,
    },
    /// An order needs at least one line.
    #[error("an order needs at least one line")]
    NoLines,
    /// Too many lines.
    #[error("at most {max} lines per order")]
    TooManyLines {
        /// The limit, [`super::MAX_LINES`].
        max: usize,
    },
    /// A line's quantity is zero or above the limit.
    #[error("quantity {quantity} of product {product_id} is not in 1..={max}")]
    InvalidQuantity {
        /// The line's product.
        product_id: ProductId,
        /// The refused quantity.
        quantity: u32,
        /// The limit, [`super::MAX_QUANTITY_PER_LINE`].
        max: u32,
    },
    /// A line's unit price is zero or negative.
    #[error("unit price of product {product_id} must be above zero")]
    NonPositiveUnitPrice {
        /// The line's product.
        product_id: ProductId,
    },
    /// The same variant on two lines.
    #[error("variant {variant_id} appears on more than one line")]
    DuplicateVariant {
        /// The repeated variant.
        variant_id: VariantId,
    },
    /// A line total or the order total does not fit in an `i64`.
    #[error("order total overflows")]
    AmountOverflow,
    /// No shipping-address snapshot.
    #[error("a shipping address is required")]
    MissingShippingAddress,
    /// No payment method or reference.
    #[error("a payment method and reference are required")]
    MissingPayment,
    /// The amount captured is not the order total.
    #[error("paid {paid} but the total is {total}")]
    PaymentAmountMismatch {
        /// The computed total.
        total: Money,
        /// The amount captured.
        paid: Money,
    },
    /// An automatic step that does not apply to the order's status (any more).
    #[error("step {step} does not apply to an order that is {status}")]
    StepNotApplicable {
        /// The step.
        step: AutoStep,
        /// The order's status.
        status: OrderStatus,
    },
    /// An automatic step sent before it is due.
    #[error("step {step} is not due before {due_at}")]
    NotDue {
        /// The step.
        step: AutoStep,
        /// When it becomes due.
        due_at: DateTime<Utc>,
    },
    /// Cancelling an order that is not `prepared` any more.
    #[error("an order that is {status} cannot be cancelled")]
    CannotCancel {
        /// The order's status.
        status: OrderStatus,
    },
    /// Cancelling after the cancel window closed.
    #[error("the cancel window closed at {closed_at}")]
    CancelWindowClosed {
        /// When it closed.
        closed_at: DateTime<Utc>,
    },
    /// Asking to return an order that is not `delivered`.
    #[error("an order that is {status} cannot be returned")]
    CannotRequestReturn {
        /// The order's status.
        status: OrderStatus,
    },
    /// Asking to return after the return window closed.
    #[error("the return window closed at {closed_at}")]
    ReturnWindowClosed {
        /// When it closed.
        closed_at: DateTime<Utc>,
    },
    /// The order owes no refund with this id.
    #[error("refund {refund_id} is not recorded on this order")]
    UnknownRefund {
        /// The refund named.
        refund_id: uuid::Uuid,
    },
    /// The gateway refunded another amount than the order owes.
    #[error("the refund owes {owed} but {paid} was paid back")]
    RefundAmountMismatch {
        /// What the order owes.
        owed: Money,
        /// What the gateway says it paid.
        paid: Money,
    },
    /// The return reason is longer than the limit.
    #[error("reason longer than {max} characters")]
    ReasonTooLong {
        /// The limit, [`super::MAX_REASON_CHARS`].
        max: usize,
    },
}

impl From<Denied> for OrderError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::RoleNotAllowed { role } => Self::RoleNotAllowed { role },
            Denied::NotOwner => Self::NotBuyer,
        }
    }
}
