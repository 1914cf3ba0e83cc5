//! Given/when/then tests of every order command: each acceptance and each rejection.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

use super::{
    AutoStep, Closure, LineItem, Order, OrderCommand, OrderError, OrderEvent, OrderLine,
    OrderStatus, Payment, RefundCause, SealedAddress, StockLine, VoidReason, apply, decide,
};
use crate::actor::{Actor, Issuer, Role};
use crate::ids::{MemberId, OrderId, ProductId, VariantId};
use crate::money::Money;
use crate::policy::OrderPolicy;
use crate::product::implicit_variant_id;

const BUYER: MemberId = MemberId::from_uuid(Uuid::from_u128(0xb1));
const OTHER: MemberId = MemberId::from_uuid(Uuid::from_u128(0xb2));
const ADMIN: MemberId = MemberId::from_uuid(Uuid::from_u128(0xad));
const ORDER: OrderId = OrderId::from_uuid(Uuid::from_u128(0x0d));
const SHOE: ProductId = ProductId::from_uuid(Uuid::from_u128(0x100));
const CAP: ProductId = ProductId::from_uuid(Uuid::from_u128(0x101));

/// `h` hours after a fixed origin.
fn t(h: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap() + Duration::hours(h)
}

fn buyer() -> Actor {
    Actor::new(BUYER, Role::Basic)
}

fn admin() -> Actor {
    Actor::new(ADMIN, Role::Admin)
}

/// A line of the product's implicit (only) variant.
fn line(product_id: ProductId, quantity: u32, unit_price: i64) -> LineItem {
    LineItem {
        product_id,
        variant_id: implicit_variant_id(product_id),
        quantity,
        unit_price: Money::from_minor(unit_price),
    }
}

fn payment(amount: i64) -> Payment {
    Payment {
        method: "sandbox".to_owned(),
        reference: "pay_123".to_owned(),
        amount: Money::from_minor(amount),
    }
}

fn place_with(actor: Actor, lines: Vec<LineItem>, paid: i64) -> OrderCommand {
    OrderCommand::Place {
        actor,
        order_id: ORDER,
        lines,
        shipping_address: SealedAddress("k1:c2VhbGVk".to_owned()),
        payment: payment(paid),
        policy: OrderPolicy::default(),
        fingerprint: "fp-1".to_owned(),
    }
}

/// Two shoes at 129,000 and one cap at 30,000: 288,000.
fn place(actor: Actor) -> OrderCommand {
    place_with(
        actor,
        vec![line(SHOE, 2, 129_000), line(CAP, 1, 30_000)],
        288_000,
    )
}

fn placed() -> OrderEvent {
    decide(&Order::default(), place(buyer()), t(0))
        .unwrap()
        .remove(0)
}

fn stock_lines() -> Vec<StockLine> {
    vec![
        StockLine {
            product_id: SHOE,
            variant_id: implicit_variant_id(SHOE),
            quantity: 2,
        },
        StockLine {
            product_id: CAP,
            variant_id: implicit_variant_id(CAP),
            quantity: 1,
        },
    ]
}

fn refunded(cause: RefundCause, at: i64) -> OrderEvent {
    OrderEvent::OrderRefunded {
        refund_id: super::refund_id(ORDER, cause),
        cause,
        amount: Money::from_minor(288_000),
        payment_reference: "pay_123".to_owned(),
        at: t(at),
    }
}

fn given(events: &[OrderEvent]) -> Order {
    let mut order = Order::default();
    for event in events {
        apply(&mut order, event);
    }
    order
}

/// The history of an order that reached `status` along the default 24-hour steps.
fn history(status: OrderStatus) -> Vec<OrderEvent> {
    let mut events = vec![placed()];
    let steps: &[OrderEvent] = &[
        OrderEvent::OrderShipped { at: t(24) },
        OrderEvent::OrderDelivered { at: t(48) },
        OrderEvent::ReturnRequested {
            reason: None,
            at: t(50),
        },
        OrderEvent::ReturnPickedUp { at: t(74) },
    ];
    let n = match status {
        OrderStatus::Prepared => 0,
        OrderStatus::InDelivery => 1,
        OrderStatus::Delivered => 2,
        OrderStatus::ReturnRequested => 3,
        OrderStatus::InReturn => 4,
        OrderStatus::Cancelled => {
            events.push(OrderEvent::OrderCancelled {
                by: buyer(),
                released: stock_lines(),
                at: t(1),
            });
            events.push(refunded(RefundCause::Cancellation, 1));
            return events;
        }
        OrderStatus::ReturnCompleted => {
            events.extend_from_slice(steps);
            events.push(OrderEvent::ReturnCompleted {
                restocked: stock_lines(),
                at: t(98),
            });
            events.push(refunded(RefundCause::Return, 98));
            return events;
        }
    };
    events.extend_from_slice(&steps[..n]);
    events
}

fn at(status: OrderStatus) -> Order {
    let order = given(&history(status));
    assert_eq!(order.state.as_ref().unwrap().status, status);
    order
}

fn auto(step: AutoStep, issuer: Issuer) -> OrderCommand {
    match step {
        AutoStep::Ship => OrderCommand::MarkInDelivery { issuer },
        AutoStep::Deliver => OrderCommand::MarkDelivered { issuer },
        AutoStep::PickUpReturn => OrderCommand::MarkInReturn { issuer },
        AutoStep::CompleteReturn => OrderCommand::CompleteReturn { issuer },
    }
}

fn cancel(actor: Actor) -> OrderCommand {
    OrderCommand::Cancel { actor }
}

fn request_return(actor: Actor, reason: Option<&str>) -> OrderCommand {
    OrderCommand::RequestReturn {
        actor,
        reason: reason.map(str::to_owned),
    }
}

const ALL_STATUSES: [OrderStatus; 7] = [
    OrderStatus::Prepared,
    OrderStatus::InDelivery,
    OrderStatus::Delivered,
    OrderStatus::Cancelled,
    OrderStatus::ReturnRequested,
    OrderStatus::InReturn,
    OrderStatus::ReturnCompleted,
];

// ---- place ----

#[test]
fn a_member_places_an_order_and_the_domain_computes_totals() {
    let events = decide(&Order::default(), place(buyer()), t(0)).unwrap();
    assert_eq!(
        events,
        vec![OrderEvent::OrderPlaced {
            order_id: ORDER,
            buyer_id: BUYER,
            lines: vec![
                OrderLine {
                    product_id: SHOE,
                    variant_id: implicit_variant_id(SHOE),
                    quantity: 2,
                    unit_price: Money::from_minor(129_000),
                    line_total: Money::from_minor(258_000),
                },
                OrderLine {
                    product_id: CAP,
                    variant_id: implicit_variant_id(CAP),
                    quantity: 1,
                    unit_price: Money::from_minor(30_000),
                    line_total: Money::from_minor(30_000),
                },
            ],
            total_quantity: 3,
            total: Money::from_minor(288_000),
            shipping_address: SealedAddress("k1:c2VhbGVk".to_owned()),
            payment: payment(288_000),
            policy: OrderPolicy::default(),
            fingerprint: "fp-1".to_owned(),
            at: t(0),
        }]
    );
    let state = given(&events).state.unwrap();
    assert_eq!(state.status, OrderStatus::Prepared);
    assert_eq!(state.total, Money::from_minor(288_000));
    assert_eq!(state.refunds, vec![]);
}

#[test]
fn sellers_and_admins_may_buy_unverified_members_may_not() {
    for role in [Role::Seller, Role::Admin] {
        assert!(decide(&Order::default(), place(Actor::new(BUYER, role)), t(0)).is_ok());
    }
    assert_eq!(
        decide(
            &Order::default(),
            place(Actor::new(BUYER, Role::Unverified)),
            t(0)
        ),
        Err(OrderError::RoleNotAllowed {
            role: Role::Unverified
        })
    );
}

#[test]
fn placing_twice_is_refused() {
    assert_eq!(
        decide(&at(OrderStatus::Prepared), place(buyer()), t(1)),
        Err(OrderError::AlreadyPlaced)
    );
}

#[test]
fn place_validates_lines() {
    let empty = Order::default();
    let too_many: Vec<_> = (0..21_u128)
        .map(|i| line(ProductId::from_uuid(Uuid::from_u128(i)), 1, 1))
        .collect();
    let cases = [
        (place_with(buyer(), vec![], 0), OrderError::NoLines),
        (
            place_with(buyer(), too_many, 21),
            OrderError::TooManyLines { max: 20 },
        ),
        (
            place_with(buyer(), vec![line(SHOE, 0, 100)], 0),
            OrderError::InvalidQuantity {
                product_id: SHOE,
                quantity: 0,
                max: 99,
            },
        ),
        (
            place_with(buyer(), vec![line(SHOE, 100, 1)], 100),
            OrderError::InvalidQuantity {
                product_id: SHOE,
                quantity: 100,
                max: 99,
            },
        ),
        (
            place_with(buyer(), vec![line(CAP, 1, 0)], 0),
            OrderError::NonPositiveUnitPrice { product_id: CAP },
        ),
        (
            place_with(buyer(), vec![line(CAP, 1, -100)], -100),
            OrderError::NonPositiveUnitPrice { product_id: CAP },
        ),
        (
            place_with(buyer(), vec![line(SHOE, 1, 100), line(SHOE, 2, 100)], 300),
            OrderError::DuplicateVariant {
                variant_id: implicit_variant_id(SHOE),
            },
        ),
        (
            place_with(buyer(), vec![line(SHOE, 3, i64::MAX / 2)], 0),
            OrderError::AmountOverflow,
        ),
        (
            place_with(buyer(), vec![line(SHOE, 1, i64::MAX), line(CAP, 1, 1)], 0),
            OrderError::AmountOverflow,
        ),
    ];
    for (command, error) in cases {
        assert_eq!(decide(&empty, command, t(0)), Err(error));
    }
}

#[test]
fn place_needs_address_payment_matching_the_total_and_a_sane_policy() {
    let with = |address: &str, payment: Payment, policy: OrderPolicy| OrderCommand::Place {
        actor: buyer(),
        order_id: ORDER,
        lines: vec![line(SHOE, 2, 129_000), line(CAP, 1, 30_000)],
        shipping_address: SealedAddress(address.to_owned()),
        payment,
        policy,
        fingerprint: String::new(),
    };
    let empty = Order::default();
    let ok_policy = OrderPolicy::default();
    assert_eq!(
        decide(&empty, with(" ", payment(288_000), ok_policy), t(0)),
        Err(OrderError::MissingShippingAddress)
    );
    let no_reference = Payment {
        reference: String::new(),
        ..payment(288_000)
    };
    assert_eq!(
        decide(&empty, with("sealed", no_reference, ok_policy), t(0)),
        Err(OrderError::MissingPayment)
    );
    let no_method = Payment {
        method: String::new(),
        ..payment(288_000)
    };
    assert_eq!(
        decide(&empty, with("sealed", no_method, ok_policy), t(0)),
        Err(OrderError::MissingPayment)
    );
    assert_eq!(
        decide(&empty, with("sealed", payment(287_999), ok_policy), t(0)),
        Err(OrderError::PaymentAmountMismatch {
            total: Money::from_minor(288_000),
            paid: Money::from_minor(287_999),
        })
    );
    let bad_policy = OrderPolicy {
        cancel_window: Duration::seconds(-1),
        ..ok_policy
    };
    assert_eq!(
        decide(&empty, with("sealed", payment(288_000), bad_policy), t(0)),
        Err(OrderError::InvalidPolicy {
            field: "cancel_window_secs"
        })
    );
}

#[test]
fn commands_on_an_unplaced_order_are_refused() {
    let commands = [
        cancel(buyer()),
        request_return(buyer(), None),
        auto(AutoStep::Ship, Issuer::System),
        auto(AutoStep::Deliver, Issuer::System),
        auto(AutoStep::PickUpReturn, Issuer::System),
        auto(AutoStep::CompleteReturn, Issuer::System),
    ];
    for command in commands {
        assert_eq!(
            decide(&Order::default(), command, t(0)),
            Err(OrderError::NotPlaced)
        );
    }
}

// ---- automatic steps ----

#[test]
fn each_automatic_step_fires_when_due_and_not_before() {
    let cases = [
        (
            AutoStep::Ship,
            OrderStatus::Prepared,
            t(24),
            vec![OrderEvent::OrderShipped { at: t(24) }],
        ),
        (
            AutoStep::Deliver,
            OrderStatus::InDelivery,
            t(48),
            vec![OrderEvent::OrderDelivered { at: t(48) }],
        ),
        (
            AutoStep::PickUpReturn,
            OrderStatus::ReturnRequested,
            t(74),
            vec![OrderEvent::ReturnPickedUp { at: t(74) }],
        ),
        (
            AutoStep::CompleteReturn,
            OrderStatus::InReturn,
            t(98),
            vec![
                OrderEvent::ReturnCompleted {
                    restocked: stock_lines(),
                    at: t(98),
                },
                refunded(RefundCause::Return, 98),
            ],
        ),
    ];
    for (step, status, due_at, events) in cases {
        let order = at(status);
        let early = due_at - Duration::seconds(1);
        assert_eq!(
            decide(&order, auto(step, Issuer::System), early),
            Err(OrderError::NotDue { step, due_at }),
            "{step}"
        );
        assert_eq!(
            decide(&order, auto(step, Issuer::System), due_at),
            Ok(events.clone()),
            "{step}"
        );
        assert_eq!(
            decide(&order, auto(step, Issuer::Member(admin())), due_at),
            Ok(events),
            "{step}"
        );
        let (_, next) = step.edge();
        let mut order = order;
        for event in decide(&order.clone(), auto(step, Issuer::System), due_at).unwrap() {
            apply(&mut order, &event);
        }
        assert_eq!(order.state.unwrap().status, next);
    }
}

#[test]
fn an_automatic_step_in_another_status_is_refused() {
    for step in [
        AutoStep::Ship,
        AutoStep::Deliver,
        AutoStep::PickUpReturn,
        AutoStep::CompleteReturn,
    ] {
        let (from, _) = step.edge();
        for status in ALL_STATUSES.into_iter().filter(|s| *s != from) {
            assert_eq!(
                decide(&at(status), auto(step, Issuer::System), t(1000)),
                Err(OrderError::StepNotApplicable { step, status }),
                "{step} on {status}"
            );
        }
    }
}

#[test]
fn members_cannot_send_automatic_steps() {
    let order = at(OrderStatus::Prepared);
    for actor in [buyer(), Actor::new(OTHER, Role::Seller)] {
        assert_eq!(
            decide(&order, auto(AutoStep::Ship, Issuer::Member(actor)), t(24)),
            Err(OrderError::RoleNotAllowed { role: actor.role })
        );
    }
}

#[test]
fn steps_follow_the_orders_own_policy() {
    let fast = OrderPolicy {
        ship_after: Duration::minutes(30),
        cancel_window: Duration::minutes(10),
        ..OrderPolicy::default()
    };
    let command = OrderCommand::Place {
        actor: buyer(),
        order_id: ORDER,
        lines: vec![line(SHOE, 1, 100)],
        shipping_address: SealedAddress("sealed".to_owned()),
        payment: payment(100),
        policy: fast,
        fingerprint: String::new(),
    };
    let order = given(&decide(&Order::default(), command, t(0)).unwrap());
    assert_eq!(
        decide(&order, cancel(buyer()), t(0) + Duration::minutes(10)),
        Err(OrderError::CancelWindowClosed {
            closed_at: t(0) + Duration::minutes(10)
        })
    );
    assert_eq!(
        decide(
            &order,
            auto(AutoStep::Ship, Issuer::System),
            t(0) + Duration::minutes(30)
        ),
        Ok(vec![OrderEvent::OrderShipped {
            at: t(0) + Duration::minutes(30)
        }])
    );
}

// ---- cancel ----

#[test]
fn the_buyer_cancels_inside_the_window_and_is_refunded_once() {
    let events = decide(&at(OrderStatus::Prepared), cancel(buyer()), t(23)).unwrap();
    assert_eq!(
        events,
        vec![
            OrderEvent::OrderCancelled {
                by: buyer(),
                released: stock_lines(),
                at: t(23),
            },
            refunded(RefundCause::Cancellation, 23),
        ]
    );
    let order = given(&[vec![placed()], events].concat());
    let state = order.state.as_ref().unwrap();
    assert_eq!(state.status, OrderStatus::Cancelled);
    assert_eq!(state.refunded(), Money::from_minor(288_000));
    assert_eq!(
        decide(&order, cancel(buyer()), t(23)),
        Err(OrderError::CannotCancel {
            status: OrderStatus::Cancelled
        })
    );
}

#[test]
fn an_admin_cancels_for_the_buyer() {
    let events = decide(&at(OrderStatus::Prepared), cancel(admin()), t(1)).unwrap();
    assert_eq!(
        events[0],
        OrderEvent::OrderCancelled {
            by: admin(),
            released: stock_lines(),
            at: t(1),
        }
    );
    assert_eq!(events[1], refunded(RefundCause::Cancellation, 1));
}

#[test]
fn another_member_cannot_cancel() {
    for role in [Role::Basic, Role::Seller] {
        assert_eq!(
            decide(
                &at(OrderStatus::Prepared),
                cancel(Actor::new(OTHER, role)),
                t(1)
            ),
            Err(OrderError::NotBuyer)
        );
    }
}

#[test]
fn cancel_is_refused_once_the_window_closed() {
    assert_eq!(
        decide(&at(OrderStatus::Prepared), cancel(buyer()), t(24)),
        Err(OrderError::CancelWindowClosed { closed_at: t(24) })
    );
}

#[test]
fn cancel_is_refused_after_shipping() {
    for status in ALL_STATUSES
        .into_iter()
        .filter(|s| *s != OrderStatus::Prepared)
    {
        assert_eq!(
            decide(&at(status), cancel(buyer()), t(1)),
            Err(OrderError::CannotCancel { status })
        );
    }
}

// ---- request return ----

#[test]
fn the_buyer_requests_a_return_inside_the_window() {
    assert_eq!(
        decide(
            &at(OrderStatus::Delivered),
            request_return(buyer(), Some("  too small ")),
            t(71)
        ),
        Ok(vec![OrderEvent::ReturnRequested {
            reason: Some("too small".to_owned()),
            at: t(71),
        }])
    );
    assert_eq!(
        decide(
            &at(OrderStatus::Delivered),
            request_return(buyer(), Some(" ")),
            t(49)
        ),
        Ok(vec![OrderEvent::ReturnRequested {
            reason: None,
            at: t(49),
        }])
    );
}

#[test]
fn only_the_buyer_requests_a_return() {
    for actor in [admin(), Actor::new(OTHER, Role::Basic)] {
        assert_eq!(
            decide(
                &at(OrderStatus::Delivered),
                request_return(actor, None),
                t(49)
            ),
            Err(OrderError::NotBuyer)
        );
    }
}

#[test]
fn a_return_is_refused_once_the_window_closed() {
    // Delivered at t(48), window 24 h.
    assert_eq!(
        decide(
            &at(OrderStatus::Delivered),
            request_return(buyer(), None),
            t(72)
        ),
        Err(OrderError::ReturnWindowClosed { closed_at: t(72) })
    );
}

#[test]
fn a_return_is_refused_unless_delivered() {
    for status in ALL_STATUSES
        .into_iter()
        .filter(|s| *s != OrderStatus::Delivered)
    {
        assert_eq!(
            decide(&at(status), request_return(buyer(), None), t(49)),
            Err(OrderError::CannotRequestReturn { status })
        );
    }
}

#[test]
fn a_return_reason_is_bounded() {
    let reason = "r".repeat(1_001);
    assert_eq!(
        decide(
            &at(OrderStatus::Delivered),
            request_return(buyer(), Some(&reason)),
            t(49)
        ),
        Err(OrderError::ReasonTooLong { max: 1_000 })
    );
}

// ---- complete return, refunds ----

#[test]
fn a_completed_return_is_refunded_exactly_once() {
    let order = at(OrderStatus::ReturnCompleted);
    let state = order.state.as_ref().unwrap();
    assert_eq!(state.refunds.len(), 1);
    assert_eq!(state.refunded(), state.payment.amount);
    assert_eq!(
        decide(
            &order,
            auto(AutoStep::CompleteReturn, Issuer::System),
            t(200)
        ),
        Err(OrderError::StepNotApplicable {
            step: AutoStep::CompleteReturn,
            status: OrderStatus::ReturnCompleted
        })
    );
}

#[test]
fn a_refund_is_settled_once_by_the_system_for_what_it_owes() {
    let order = at(OrderStatus::ReturnCompleted);
    let refund_id = super::refund_id(ORDER, RefundCause::Return);
    let owed = Money::from_minor(288_000);
    let settle = |issuer, refund_id, amount| OrderCommand::SettleRefund {
        issuer,
        refund_id,
        amount,
    };
    assert_eq!(
        decide(
            &order,
            settle(Issuer::Member(buyer()), refund_id, owed),
            t(201)
        ),
        Err(OrderError::RoleNotAllowed { role: Role::Basic })
    );
    let other = super::refund_id(ORDER, RefundCause::Cancellation);
    assert_eq!(
        decide(&order, settle(Issuer::System, other, owed), t(201)),
        Err(OrderError::UnknownRefund { refund_id: other })
    );
    assert_eq!(
        decide(
            &order,
            settle(Issuer::System, refund_id, Money::from_minor(1)),
            t(201)
        ),
        Err(OrderError::RefundAmountMismatch {
            owed,
            paid: Money::from_minor(1)
        })
    );
    let events = decide(&order, settle(Issuer::System, refund_id, owed), t(201)).unwrap();
    assert_eq!(
        events,
        vec![OrderEvent::RefundSettled {
            refund_id,
            amount: owed,
            at: t(201)
        }]
    );
    let mut settled = order.clone();
    apply(&mut settled, &events[0]);
    let refund = settled.state.as_ref().unwrap().refunds[0];
    assert_eq!(refund.settled_at, Some(t(201)));
    // Settling again changes nothing: the processor may pay twice after a crash.
    assert_eq!(
        decide(&settled, settle(Issuer::System, refund_id, owed), t(300)),
        Ok(vec![])
    );
}

#[test]
fn a_refund_recorded_before_refund_ids_gets_its_derived_id() {
    let mut order = at(OrderStatus::Prepared);
    apply(
        &mut order,
        &OrderEvent::OrderRefunded {
            refund_id: Uuid::nil(),
            cause: RefundCause::Cancellation,
            amount: Money::from_minor(288_000),
            payment_reference: "pay_123".to_owned(),
            at: t(3),
        },
    );
    assert_eq!(
        order.state.unwrap().refunds[0].refund_id,
        super::refund_id(ORDER, RefundCause::Cancellation)
    );
}

// ---- the cqrs-es shim ----

#[test]
fn the_aggregate_shim_matches_decide() {
    use cqrs_es::test::TestFramework;

    use crate::Stamped;

    TestFramework::<Order>::with(())
        .given(vec![placed()])
        .when(Stamped::new(cancel(buyer()), t(2)))
        .then_expect_events(vec![
            OrderEvent::OrderCancelled {
                by: buyer(),
                released: stock_lines(),
                at: t(2),
            },
            refunded(RefundCause::Cancellation, 2),
        ]);
    TestFramework::<Order>::with(())
        .given(vec![placed()])
        .when(Stamped::new(auto(AutoStep::Ship, Issuer::System), t(2)))
        .then_expect_error(OrderError::NotDue {
            step: AutoStep::Ship,
            due_at: t(24),
        });
}

#[test]
fn two_sizes_of_one_product_are_two_lines() {
    let size = |n: u128| LineItem {
        variant_id: VariantId::from_uuid(Uuid::from_u128(0x5000 + n)),
        ..line(SHOE, 1, 100)
    };
    let events = decide(
        &Order::default(),
        place_with(buyer(), vec![size(1), size(2)], 200),
        t(0),
    )
    .unwrap();
    let OrderEvent::OrderPlaced { lines, .. } = &events[0] else {
        panic!("{events:?}");
    };
    assert_eq!(lines.len(), 2);
}

// ---- decline and void ----

fn declined() -> OrderEvent {
    OrderEvent::OrderDeclined {
        order_id: ORDER,
        buyer_id: BUYER,
        fingerprint: "fp-1".to_owned(),
        total: Money::from_minor(288_000),
        reason: "card declined".to_owned(),
        at: t(0),
    }
}

fn decline(actor: Actor) -> OrderCommand {
    OrderCommand::Decline {
        actor,
        order_id: ORDER,
        fingerprint: "fp-1".to_owned(),
        total: Money::from_minor(288_000),
        reason: "card declined".to_owned(),
    }
}

fn void(issuer: Issuer) -> OrderCommand {
    OrderCommand::Void {
        issuer,
        reason: VoidReason::Abandoned,
    }
}

#[test]
fn a_decline_closes_a_new_stream_and_records_the_request() {
    let events = decide(&Order::default(), decline(buyer()), t(0)).unwrap();
    assert_eq!(events, vec![declined()]);
    let order = given(&events);
    assert_eq!(
        order.closed,
        Some(Closure::Declined {
            fingerprint: "fp-1".to_owned(),
            reason: "card declined".to_owned()
        })
    );
    assert_eq!(
        decide(
            &Order::default(),
            decline(Actor::new(BUYER, Role::Unverified)),
            t(0)
        ),
        Err(OrderError::RoleNotAllowed {
            role: Role::Unverified
        })
    );
}

#[test]
fn only_the_system_or_an_admin_voids_and_only_a_new_stream() {
    let events = decide(&Order::default(), void(Issuer::System), t(0)).unwrap();
    assert_eq!(
        events,
        vec![OrderEvent::OrderVoided {
            reason: VoidReason::Abandoned,
            at: t(0)
        }]
    );
    assert!(decide(&Order::default(), void(Issuer::Member(admin())), t(0)).is_ok());
    assert!(matches!(
        decide(&Order::default(), void(Issuer::Member(buyer())), t(0)),
        Err(OrderError::RoleNotAllowed { .. })
    ));
    let placed = given(&[placed()]);
    assert_eq!(
        decide(&placed, void(Issuer::System), t(1)),
        Err(OrderError::AlreadyPlaced)
    );
    assert_eq!(
        decide(&placed, decline(buyer()), t(1)),
        Err(OrderError::AlreadyPlaced)
    );
}

#[test]
fn a_closed_stream_refuses_every_command_and_ignores_a_late_order() {
    let voided = OrderEvent::OrderVoided {
        reason: VoidReason::CommitLost,
        at: t(0),
    };
    for closing in [declined(), voided] {
        let order = given(std::slice::from_ref(&closing));
        for command in [
            place(buyer()),
            decline(buyer()),
            void(Issuer::System),
            OrderCommand::Cancel { actor: buyer() },
        ] {
            assert_eq!(decide(&order, command, t(1)), Err(OrderError::Closed));
        }
        // A stream never holds both, but a fold that met one would keep the closure.
        let order = given(&[closing, placed()]);
        assert!(order.closed.is_some());
    }
}
