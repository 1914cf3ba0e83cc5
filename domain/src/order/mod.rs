//! The order aggregate. One `order` stream per order.
//!
//! # Status graph
//!
//! ```text
//! prepared ──ship──> in_delivery ──deliver──> delivered ──request return──> return_requested
//!    │                                                                            │
//!  cancel                                                                   pick up return
//!    v                                                                            v
//! cancelled                                   return_completed <──complete return── in_return
//! ```
//!
//! `prepared` means placed and paid. `ship`, `deliver`, `pick up return` and `complete
//! return` are automatic steps: commands sent by the scheduler ([`crate::Issuer::System`],
//! or an admin by hand), each due a policy duration after the previous status change
//! ([`crate::OrderPolicy`]: `ship_after`, `deliver_after`, `return_pickup_after`,
//! `return_complete_after`). Sent early they are refused with [`OrderError::NotDue`]; sent
//! to an order in another status (cancelled, already shipped...) with
//! [`OrderError::StepNotApplicable`].
//!
//! # Rules
//!
//! - Place: any verified member (not `unverified`) as the buyer; 1 to [`MAX_LINES`] lines,
//!   each with a quantity in `1..=`[`MAX_QUANTITY_PER_LINE`] and a unit price above zero.
//!   **A variant appearing on two lines is refused** ([`OrderError::DuplicateVariant`])
//!   rather than merged: the service builds lines from a cart or a request that should name
//!   each variant once, so a duplicate is a client bug worth surfacing. Two sizes of one
//!   product are two lines. Totals are computed here with checked
//!   arithmetic; the captured payment must equal the total. The order records the sealed
//!   shipping address, the payment reference and the timing policy it was sold under.
//! - Cancel: the buyer or an admin, only while `prepared` and strictly before `placed_at +
//!   cancel_window`.
//! - Request a return: the buyer only, only while `delivered` and strictly before
//!   `delivered_at + return_window`.
//! - Another member acting on the order gets [`OrderError::NotBuyer`].
//!
//! - Decline: a new stream only; records a declined payment (`OrderDeclined`). Void: a new
//!   stream only, by the system or an admin (`OrderVoided`), closing a stream that never got
//!   an order so that no later `OrderPlaced` can land there. A declined or voided stream is
//!   closed for good: every command on it is refused with [`OrderError::Closed`].
//!
//! # Refunds and stock facts
//!
//! Cancelling emits `OrderCancelled` (its `released` lines give the units back to available
//! stock) then one `OrderRefunded { cause: cancellation }`; completing a return emits
//! `ReturnCompleted` (its `restocked` lines) then one `OrderRefunded { cause: return }`.
//! The refund is always the amount paid. An order can be cancelled at most once and
//! returned at most once, and never both (a cancelled order never ships), so an order is
//! refunded at most once and never more than it paid. The stock projection needs only
//! `OrderPlaced` (sold), `OrderCancelled` (released) and `ReturnCompleted` (restocked).

mod command;
mod decide;
mod error;
mod event;
mod state;
mod status;
#[cfg(test)]
mod tests;

pub use command::{LineItem, OrderCommand, Payment, SealedAddress};
pub use decide::{apply, decide};
pub use error::OrderError;
pub use event::{
    ORDER_EVENT_VERSION, ORDER_LINES_VERSION, ORDER_REFUND_VERSION, OrderEvent, OrderLine,
    RefundCause, StockLine, VoidReason, named_or_derived_refund_id, refund_id,
    upcast_order_lines_v1, upcast_refund_v1, upcasters,
};
pub use state::{Closure, Order, OrderState, Refund};
pub use status::{AutoStep, OrderStatus};

/// The most lines one order may have.
pub const MAX_LINES: usize = 20;
/// The most units of one variant in one order.
pub const MAX_QUANTITY_PER_LINE: u32 = 99;
/// The longest return reason, in characters.
pub const MAX_REASON_CHARS: usize = 1_000;

aggregate_shim!(Order, "order", OrderCommand, OrderEvent, OrderError);
