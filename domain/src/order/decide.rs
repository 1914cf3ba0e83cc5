//! The order decisions and the fold of order events into state.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};

use super::command::{LineItem, OrderCommand, Payment, SealedAddress};
use super::error::OrderError;
use super::event::{OrderEvent, OrderLine, RefundCause, StockLine};
use super::state::{Closure, Order, OrderState, Refund};
use super::status::{AutoStep, OrderStatus};
use super::{MAX_LINES, MAX_QUANTITY_PER_LINE, MAX_REASON_CHARS};
use crate::actor::{Actor, Issuer};
use crate::ids::OrderId;
use crate::money::Money;
use crate::policy::OrderPolicy;

/// Decides what a command does to an order at instant `now`: the events to append, or why
/// it is refused. Pure: no I/O, no clock.
///
/// # Errors
/// An [`OrderError`] naming the broken rule.
pub fn decide(
    order: &Order,
    command: OrderCommand,
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    if order.closed.is_some() {
        return Err(OrderError::Closed);
    }
    match command {
        OrderCommand::Place {
            actor,
            order_id,
            lines,
            shipping_address,
            payment,
            policy,
            fingerprint,
        } => {
            if order.state.is_some() {
                return Err(OrderError::AlreadyPlaced);
            }
            let placed = Placed {
                actor,
                order_id,
                shipping_address,
                payment,
                policy,
                fingerprint,
            };
            place(placed, &lines, now)
        }
        OrderCommand::Decline {
            actor,
            order_id,
            fingerprint,
            total,
            reason,
        } => {
            if order.state.is_some() {
                return Err(OrderError::AlreadyPlaced);
            }
            if !actor.role.can_buy() {
                return Err(OrderError::RoleNotAllowed { role: actor.role });
            }
            Ok(vec![OrderEvent::OrderDeclined {
                order_id,
                buyer_id: actor.member_id,
                fingerprint,
                total,
                reason,
                at: now,
            }])
        }
        OrderCommand::Void { issuer, reason } => {
            if order.state.is_some() {
                return Err(OrderError::AlreadyPlaced);
            }
            issuer.system_or_admin()?;
            Ok(vec![OrderEvent::OrderVoided { reason, at: now }])
        }
        command => {
            let state = order.state.as_ref().ok_or(OrderError::NotPlaced)?;
            decide_placed(state, command, now)
        }
    }
}

/// What a `Place` command carries beside its lines.
struct Placed {
    actor: Actor,
    order_id: OrderId,
    shipping_address: SealedAddress,
    payment: Payment,
    policy: OrderPolicy,
    fingerprint: String,
}

fn place(
    placed: Placed,
    items: &[LineItem],
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    let Placed {
        actor,
        order_id,
        shipping_address,
        payment,
        policy,
        fingerprint,
    } = placed;
    if !actor.role.can_buy() {
        return Err(OrderError::RoleNotAllowed { role: actor.role });
    }
    policy
        .validate()
        .map_err(|field| OrderError::InvalidPolicy { field })?;
    if items.is_empty() {
        return Err(OrderError::NoLines);
    }
    if items.len() > MAX_LINES {
        return Err(OrderError::TooManyLines { max: MAX_LINES });
    }
    let mut seen = HashSet::with_capacity(items.len());
    let mut lines = Vec::with_capacity(items.len());
    let mut total = Money::ZERO;
    let mut total_quantity = 0_u64;
    for item in items {
        if item.quantity == 0 || item.quantity > MAX_QUANTITY_PER_LINE {
            return Err(OrderError::InvalidQuantity {
                product_id: item.product_id,
                quantity: item.quantity,
                max: MAX_QUANTITY_PER_LINE,
            });
        }
        if !item.unit_price.is_positive() {
            return Err(OrderError::NonPositiveUnitPrice {
                product_id: item.product_id,
            });
        }
        if !seen.insert(item.variant_id) {
            return Err(OrderError::DuplicateVariant {
                variant_id: item.variant_id,
            });
        }
        let line_total = item
            .unit_price
            .checked_mul(item.quantity)
            .ok_or(OrderError::AmountOverflow)?;
        total = total
            .checked_add(line_total)
            .ok_or(OrderError::AmountOverflow)?;
        total_quantity += u64::from(item.quantity);
        lines.push(OrderLine {
            product_id: item.product_id,
            variant_id: item.variant_id,
            quantity: item.quantity,
            unit_price: item.unit_price,
            line_total,
        });
    }
    if shipping_address.0.trim().is_empty() {
        return Err(OrderError::MissingShippingAddress);
    }
    if payment.method.trim().is_empty() || payment.reference.trim().is_empty() {
        return Err(OrderError::MissingPayment);
    }
    if payment.amount != total {
        return Err(OrderError::PaymentAmountMismatch {
            total,
            paid: payment.amount,
        });
    }
    Ok(vec![OrderEvent::OrderPlaced {
        order_id,
        buyer_id: actor.member_id,
        lines,
        total_quantity,
        total,
        shipping_address,
        payment,
        policy,
        fingerprint,
        at: now,
    }])
}

fn decide_placed(
    state: &OrderState,
    command: OrderCommand,
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    match command {
        OrderCommand::Place { .. } | OrderCommand::Decline { .. } | OrderCommand::Void { .. } => {
            Err(OrderError::AlreadyPlaced)
        }
        OrderCommand::MarkInDelivery { issuer } => {
            auto_step(state, issuer, AutoStep::Ship, now)?;
            Ok(vec![OrderEvent::OrderShipped { at: now }])
        }
        OrderCommand::MarkDelivered { issuer } => {
            auto_step(state, issuer, AutoStep::Deliver, now)?;
            Ok(vec![OrderEvent::OrderDelivered { at: now }])
        }
        OrderCommand::MarkInReturn { issuer } => {
            auto_step(state, issuer, AutoStep::PickUpReturn, now)?;
            Ok(vec![OrderEvent::ReturnPickedUp { at: now }])
        }
        OrderCommand::CompleteReturn { issuer } => {
            auto_step(state, issuer, AutoStep::CompleteReturn, now)?;
            Ok(vec![
                OrderEvent::ReturnCompleted {
                    restocked: stock_lines(state),
                    at: now,
                },
                refund(state, RefundCause::Return, now),
            ])
        }
        OrderCommand::Cancel { actor } => {
            if !actor.is_admin() && actor.member_id != state.buyer_id {
                return Err(OrderError::NotBuyer);
            }
            if state.status != OrderStatus::Prepared {
                return Err(OrderError::CannotCancel {
                    status: state.status,
                });
            }
            let closed_at = after(state.placed_at, state.policy.cancel_window);
            if now >= closed_at {
                return Err(OrderError::CancelWindowClosed { closed_at });
            }
            Ok(vec![
                OrderEvent::OrderCancelled {
                    by: actor,
                    released: stock_lines(state),
                    at: now,
                },
                refund(state, RefundCause::Cancellation, now),
            ])
        }
        OrderCommand::SettleRefund {
            issuer,
            refund_id,
            amount,
        } => {
            issuer.system_or_admin()?;
            let refund = state
                .refunds
                .iter()
                .find(|r| r.refund_id == refund_id)
                .ok_or(OrderError::UnknownRefund { refund_id })?;
            if refund.settled_at.is_some() {
                return Ok(Vec::new());
            }
            if amount != refund.amount {
                return Err(OrderError::RefundAmountMismatch {
                    owed: refund.amount,
                    paid: amount,
                });
            }
            Ok(vec![OrderEvent::RefundSettled {
                refund_id,
                amount,
                at: now,
            }])
        }
        OrderCommand::RequestReturn { actor, reason } => {
            if actor.member_id != state.buyer_id {
                return Err(OrderError::NotBuyer);
            }
            let delivered_at = match (state.status, state.delivered_at) {
                (OrderStatus::Delivered, Some(at)) => at,
                (status, _) => return Err(OrderError::CannotRequestReturn { status }),
            };
            let closed_at = after(delivered_at, state.policy.return_window);
            if now >= closed_at {
                return Err(OrderError::ReturnWindowClosed { closed_at });
            }
            let reason = reason
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty());
            if reason
                .as_ref()
                .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
            {
                return Err(OrderError::ReasonTooLong {
                    max: MAX_REASON_CHARS,
                });
            }
            Ok(vec![OrderEvent::ReturnRequested { reason, at: now }])
        }
    }
}

/// Checks an automatic step: sent by the system or an admin, applicable to the current
/// status, and due.
fn auto_step(
    state: &OrderState,
    issuer: Issuer,
    step: AutoStep,
    now: DateTime<Utc>,
) -> Result<(), OrderError> {
    issuer.system_or_admin()?;
    let (from, _) = step.edge();
    if state.status != from {
        return Err(OrderError::StepNotApplicable {
            step,
            status: state.status,
        });
    }
    let policy = &state.policy;
    let wait = match step {
        AutoStep::Ship => policy.ship_after,
        AutoStep::Deliver => policy.deliver_after,
        AutoStep::PickUpReturn => policy.return_pickup_after,
        AutoStep::CompleteReturn => policy.return_complete_after,
    };
    let due_at = after(state.status_changed_at, wait);
    if now < due_at {
        return Err(OrderError::NotDue { step, due_at });
    }
    Ok(())
}

/// `at + duration`, saturating at the end of time (policies are bounded, so only absurd
/// instants get there).
fn after(at: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    at.checked_add_signed(duration)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn stock_lines(state: &OrderState) -> Vec<StockLine> {
    state
        .lines
        .iter()
        .map(|line| StockLine {
            product_id: line.product_id,
            variant_id: line.variant_id,
            quantity: line.quantity,
        })
        .collect()
}

fn refund(state: &OrderState, cause: RefundCause, now: DateTime<Utc>) -> OrderEvent {
    OrderEvent::OrderRefunded {
        refund_id: super::event::refund_id(state.order_id, cause),
        cause,
        amount: state.payment.amount,
        payment_reference: state.payment.reference.clone(),
        at: now,
    }
}

/// Folds one event into the order. Never fails: an event that does not fit the state
/// (which a correct stream never holds) is ignored.
pub fn apply(order: &mut Order, event: &OrderEvent) {
    match event {
        OrderEvent::OrderDeclined {
            fingerprint,
            reason,
            ..
        } if order.state.is_none() => {
            order.closed = Some(Closure::Declined {
                fingerprint: fingerprint.clone(),
                reason: reason.clone(),
            });
            return;
        }
        OrderEvent::OrderVoided { reason, .. } if order.state.is_none() => {
            order.closed = Some(Closure::Voided { reason: *reason });
            return;
        }
        _ => {}
    }
    if let OrderEvent::OrderPlaced {
        order_id,
        buyer_id,
        lines,
        total,
        payment,
        policy,
        fingerprint,
        at,
        ..
    } = event
    {
        order.state = Some(OrderState {
            order_id: *order_id,
            buyer_id: *buyer_id,
            lines: lines.clone(),
            total: *total,
            payment: payment.clone(),
            policy: *policy,
            fingerprint: fingerprint.clone(),
            status: OrderStatus::Prepared,
            placed_at: *at,
            status_changed_at: *at,
            delivered_at: None,
            refunds: Vec::new(),
        });
        return;
    }
    let Some(state) = order.state.as_mut() else {
        return;
    };
    let (status, at) = match event {
        OrderEvent::OrderPlaced { .. }
        | OrderEvent::OrderDeclined { .. }
        | OrderEvent::OrderVoided { .. } => return,
        OrderEvent::OrderRefunded {
            refund_id,
            cause,
            amount,
            at,
            ..
        } => {
            let refund_id =
                super::event::named_or_derived_refund_id(*refund_id, state.order_id, *cause);
            state.refunds.push(Refund {
                refund_id,
                cause: *cause,
                amount: *amount,
                at: *at,
                settled_at: None,
            });
            return;
        }
        OrderEvent::RefundSettled { refund_id, at, .. } => {
            if let Some(refund) = state.refunds.iter_mut().find(|r| r.refund_id == *refund_id) {
                refund.settled_at.get_or_insert(*at);
            }
            return;
        }
        OrderEvent::OrderShipped { at } => (OrderStatus::InDelivery, at),
        OrderEvent::OrderDelivered { at } => {
            state.delivered_at = Some(*at);
            (OrderStatus::Delivered, at)
        }
        OrderEvent::OrderCancelled { at, .. } => (OrderStatus::Cancelled, at),
        OrderEvent::ReturnRequested { at, .. } => (OrderStatus::ReturnRequested, at),
        OrderEvent::ReturnPickedUp { at } => (OrderStatus::InReturn, at),
        OrderEvent::ReturnCompleted { at, .. } => (OrderStatus::ReturnCompleted, at),
    };
    state.status = status;
    state.status_changed_at = *at;
}
