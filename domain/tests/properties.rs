//! Property tests: random command sequences, from random actors at random instants, keep
//! every invariant of the three aggregates.
//!
//! For each sequence, every command is decided against the current state; accepted events
//! are applied and logged. After every step the invariants hold, and at the end replaying
//! the log from scratch rebuilds exactly the same state (and so does a JSON round trip of
//! each event and of the state).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Debug;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::DomainEvent;
use openrun_domain::order::{
    self, LineItem, Order, OrderCommand, OrderEvent, OrderStatus, Payment, RefundCause,
    SealedAddress,
};
use openrun_domain::product::{self, Product, ProductCommand, ProductStatus, ScheduleState};
use openrun_domain::stock::{self, Stock, StockCommand};
use openrun_domain::{
    Actor, CategoryId, Issuer, MemberId, Money, OrderId, OrderPolicy, ProductId, Role, ScheduleId,
};
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

fn origin() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap()
}

fn member(n: u128) -> MemberId {
    MemberId::from_uuid(Uuid::from_u128(n))
}

const ROLES: [Role; 4] = [Role::Unverified, Role::Basic, Role::Seller, Role::Admin];

/// A member drawn from a small pool, so that owners and buyers come up often.
fn actor() -> impl Strategy<Value = Actor> {
    (1..4_u128, 0..4_usize).prop_map(|(id, role)| Actor::new(member(id), ROLES[role]))
}

fn issuer() -> impl Strategy<Value = Issuer> {
    prop_oneof![4 => Just(Issuer::System), 1 => actor().prop_map(Issuer::Member)]
}

fn round_trips<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let json = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, value);
}

fn event_round_trips<E: DomainEvent>(event: &E) {
    round_trips(event);
    let json = serde_json::to_value(event).unwrap();
    assert_eq!(json["type"], serde_json::Value::String(event.event_type()));
}

// ---------------------------------------------------------------- order

#[derive(Debug, Clone)]
enum OrderOp {
    Place {
        actor: Actor,
        lines: Vec<(u8, u32, i64)>,
        pay_extra: i64,
        policy_hours: [i64; 6],
    },
    Ship(Issuer),
    Deliver(Issuer),
    Cancel(Actor),
    RequestReturn(Actor),
    PickUp(Issuer),
    Complete(Issuer),
}

fn order_op() -> impl Strategy<Value = OrderOp> {
    let place = (
        actor(),
        prop::collection::vec((0..6_u8, 0..5_u32, -10..10_000_i64), 0..5),
        prop_oneof![9 => Just(0_i64), 1 => -5..5_i64],
        prop::array::uniform6(0..48_i64),
    )
        .prop_map(|(actor, lines, pay_extra, policy_hours)| OrderOp::Place {
            actor,
            lines,
            pay_extra,
            policy_hours,
        });
    prop_oneof![
        1 => place,
        3 => issuer().prop_map(OrderOp::Ship),
        3 => issuer().prop_map(OrderOp::Deliver),
        2 => actor().prop_map(OrderOp::Cancel),
        2 => actor().prop_map(OrderOp::RequestReturn),
        3 => issuer().prop_map(OrderOp::PickUp),
        3 => issuer().prop_map(OrderOp::Complete),
    ]
}

fn order_command(op: OrderOp) -> OrderCommand {
    match op {
        OrderOp::Place {
            actor,
            lines,
            pay_extra,
            policy_hours: h,
        } => {
            let lines: Vec<LineItem> = lines
                .into_iter()
                .map(|(product, quantity, price)| LineItem {
                    product_id: ProductId::from_uuid(Uuid::from_u128(u128::from(product))),
                    variant_id: openrun_domain::product::implicit_variant_id(ProductId::from_uuid(
                        Uuid::from_u128(u128::from(product)),
                    )),
                    quantity,
                    unit_price: Money::from_minor(price),
                })
                .collect();
            let total: i64 = lines
                .iter()
                .map(|l| l.unit_price.minor() * i64::from(l.quantity))
                .sum();
            OrderCommand::Place {
                actor,
                order_id: OrderId::from_uuid(Uuid::from_u128(0x0d)),
                lines,
                shipping_address: SealedAddress("sealed".to_owned()),
                payment: Payment {
                    method: "sandbox".to_owned(),
                    reference: "pay".to_owned(),
                    amount: Money::from_minor(total + pay_extra),
                },
                policy: OrderPolicy {
                    cancel_window: Duration::hours(h[0]),
                    ship_after: Duration::hours(h[1]),
                    deliver_after: Duration::hours(h[2]),
                    return_window: Duration::hours(h[3]),
                    return_pickup_after: Duration::hours(h[4]),
                    return_complete_after: Duration::hours(h[5]),
                },
                fingerprint: String::new(),
            }
        }
        OrderOp::Ship(issuer) => OrderCommand::MarkInDelivery { issuer },
        OrderOp::Deliver(issuer) => OrderCommand::MarkDelivered { issuer },
        OrderOp::Cancel(actor) => OrderCommand::Cancel { actor },
        OrderOp::RequestReturn(actor) => OrderCommand::RequestReturn {
            actor,
            reason: None,
        },
        OrderOp::PickUp(issuer) => OrderCommand::MarkInReturn { issuer },
        OrderOp::Complete(issuer) => OrderCommand::CompleteReturn { issuer },
    }
}

/// A placing (usually valid: a basic member, one or two lines, exact payment) followed by
/// random commands, each after a random wait of up to 40 hours.
fn order_script() -> impl Strategy<Value = Vec<(i64, OrderOp)>> {
    let first = prop::array::uniform6(0..48_i64).prop_map(|policy_hours| OrderOp::Place {
        actor: Actor::new(member(1), Role::Basic),
        lines: vec![(1, 2, 500), (2, 1, 1200)],
        pay_extra: 0,
        policy_hours,
    });
    (
        first,
        prop::collection::vec((0..40 * 60_i64, order_op()), 0..40),
    )
        .prop_map(|(first, rest)| {
            let mut script = vec![(0, first)];
            script.extend(rest);
            script
        })
}

fn check_order_invariants(order: &Order, refunds_by_cause: &BTreeMap<RefundCause, u32>) {
    let Some(state) = &order.state else {
        assert!(refunds_by_cause.is_empty());
        return;
    };
    let refunded = state.refunded();
    assert!(refunded <= state.payment.amount, "refunded more than paid");
    assert!(state.refunds.len() <= 1, "refunded more than once");
    assert!(refunds_by_cause.values().all(|n| *n <= 1));
    let final_with_refund = matches!(
        state.status,
        OrderStatus::Cancelled | OrderStatus::ReturnCompleted
    );
    assert_eq!(final_with_refund, state.refunds.len() == 1);
    if let Some(refund) = state.refunds.first() {
        assert_eq!(refund.amount, state.payment.amount, "refund = amount paid");
        let expected = match state.status {
            OrderStatus::Cancelled => RefundCause::Cancellation,
            _ => RefundCause::Return,
        };
        assert_eq!(refund.cause, expected);
    }
    let total = state
        .lines
        .iter()
        .fold(Money::ZERO, |sum, l| sum.checked_add(l.line_total).unwrap());
    assert_eq!(total, state.total);
    assert_eq!(state.total, state.payment.amount);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn order_sequences_keep_every_invariant(script in order_script()) {
        let mut now = origin();
        let mut order = Order::default();
        let mut log = Vec::new();
        let mut refunds_by_cause = BTreeMap::new();
        for (wait_minutes, op) in script {
            now += Duration::minutes(wait_minutes);
            let before = order.state.as_ref().map(|s| s.status);
            let Ok(events) = order::decide(&order, order_command(op), now) else {
                continue;
            };
            for event in &events {
                event_round_trips(event);
                if let OrderEvent::OrderRefunded { cause, .. } = event {
                    *refunds_by_cause.entry(*cause).or_insert(0_u32) += 1;
                }
                order::apply(&mut order, event);
            }
            let after = order.state.as_ref().map(|s| s.status);
            match (before, after) {
                (None, Some(status)) => prop_assert_eq!(status, OrderStatus::Prepared),
                (Some(from), Some(to)) if from != to => {
                    prop_assert!(from.can_move_to(to), "{} -> {} is not an edge", from, to);
                }
                (None, None) => prop_assert!(events.is_empty()),
                _ => {}
            }
            check_order_invariants(&order, &refunds_by_cause);
            log.extend(events);
        }
        let mut replayed = Order::default();
        for event in &log {
            order::apply(&mut replayed, event);
        }
        prop_assert_eq!(&replayed, &order);
        round_trips(&order);
    }
}

// ---------------------------------------------------------------- product

const SCHEDULES: u128 = 4;

#[derive(Debug, Clone)]
enum ProductOp {
    Register(Actor, i64),
    ChangeStatus(Actor, usize),
    Schedule(Actor, u128, usize, i64),
    Cancel(Actor, u128),
    Fire(Issuer, u128),
    ChangePrice(Actor, i64),
    Images(Actor, usize),
    Delete(Actor),
}

fn product_op() -> impl Strategy<Value = ProductOp> {
    prop_oneof![
        1 => (actor(), -5..100_i64).prop_map(|(a, p)| ProductOp::Register(a, p)),
        6 => (actor(), 0..5_usize).prop_map(|(a, s)| ProductOp::ChangeStatus(a, s)),
        4 => (actor(), 0..SCHEDULES, 0..5_usize, -60..600_i64)
            .prop_map(|(a, id, s, m)| ProductOp::Schedule(a, id, s, m)),
        2 => (actor(), 0..SCHEDULES).prop_map(|(a, id)| ProductOp::Cancel(a, id)),
        5 => (issuer(), 0..SCHEDULES).prop_map(|(i, id)| ProductOp::Fire(i, id)),
        2 => (actor(), -5..100_i64).prop_map(|(a, p)| ProductOp::ChangePrice(a, p)),
        1 => (actor(), 0..7_usize).prop_map(|(a, n)| ProductOp::Images(a, n)),
        1 => actor().prop_map(ProductOp::Delete),
    ]
}

fn product_command(op: ProductOp, now: DateTime<Utc>) -> ProductCommand {
    let schedule_id = |n: u128| ScheduleId::from_uuid(Uuid::from_u128(0x5c0 + n));
    match op {
        ProductOp::Register(actor, price) => ProductCommand::Register {
            actor,
            product_id: ProductId::from_uuid(Uuid::from_u128(0x100)),
            category_id: CategoryId::from_uuid(Uuid::from_u128(0xc1)),
            name: "sneaker".to_owned(),
            description: String::new(),
            price: Money::from_minor(price),
            variants: vec![openrun_domain_variant()],
            purchase_limit: None,
        },
        ProductOp::ChangeStatus(actor, to) => ProductCommand::ChangeStatus {
            actor,
            to: ProductStatus::ALL[to],
            reason: None,
        },
        ProductOp::Schedule(actor, id, to, minutes) => ProductCommand::ScheduleStatusChange {
            actor,
            schedule_id: schedule_id(id),
            to: ProductStatus::ALL[to],
            due_at: now + Duration::minutes(minutes),
        },
        ProductOp::Cancel(actor, id) => ProductCommand::CancelScheduledStatusChange {
            actor,
            schedule_id: schedule_id(id),
        },
        ProductOp::Fire(issuer, id) => ProductCommand::FireScheduledStatusChange {
            issuer,
            schedule_id: schedule_id(id),
        },
        ProductOp::ChangePrice(actor, price) => ProductCommand::ChangeDetails {
            actor,
            category_id: None,
            name: None,
            description: None,
            price: Some(Money::from_minor(price)),
            purchase_limit: None,
        },
        ProductOp::Images(actor, n) => ProductCommand::PublishImages {
            actor,
            thumbnails: (0..n).map(|i| format!("t{i}")).collect(),
            details: vec![],
        },
        ProductOp::Delete(actor) => ProductCommand::Delete { actor },
    }
}

fn product_script() -> impl Strategy<Value = Vec<(i64, ProductOp)>> {
    prop::collection::vec((0..300_i64, product_op()), 0..60).prop_map(|rest| {
        let mut script = vec![(
            0,
            ProductOp::Register(Actor::new(member(1), Role::Seller), 50),
        )];
        script.extend(rest);
        script
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn product_sequences_keep_every_invariant(script in product_script()) {
        let mut now = origin();
        let mut product = Product::default();
        let mut log = Vec::new();
        for (wait_minutes, op) in script {
            now += Duration::minutes(wait_minutes);
            let before = product.state.clone();
            let Ok(events) = product::decide(&product, product_command(op, now), now) else {
                continue;
            };
            for event in &events {
                event_round_trips(event);
                product::apply(&mut product, event);
            }
            let after = product.state.as_ref().unwrap();
            if let Some(before) = before {
                if before.deleted {
                    prop_assert!(events.is_empty(), "a deleted product changed: {:?}", events);
                }
                if before.status != after.status {
                    let resumed = before.status == ProductStatus::Suspended
                        && before.suspension.map(|s| s.resume_to) == Some(after.status);
                    prop_assert!(
                        before.status.has_edge_to(after.status) || resumed,
                        "{} -> {} is not allowed",
                        before.status,
                        after.status
                    );
                }
                // A closed schedule never reopens.
                for (id, old) in &before.schedules {
                    if old.state != ScheduleState::Pending {
                        prop_assert_eq!(after.schedules[id].state, old.state);
                    }
                }
            }
            prop_assert_eq!(
                after.suspension.is_some(),
                after.status == ProductStatus::Suspended
            );
            prop_assert!(after.price.is_positive());
            prop_assert!(after.pending_schedules().count() <= product::MAX_PENDING_SCHEDULES);
            if after.deleted {
                prop_assert_eq!(after.pending_schedules().count(), 0);
            }
            log.extend(events);
        }
        let mut replayed = Product::default();
        for event in &log {
            product::apply(&mut replayed, event);
        }
        prop_assert_eq!(&replayed, &product);
        round_trips(&product);
    }
}

// ---------------------------------------------------------------- stock

#[derive(Debug, Clone)]
enum StockOp {
    Add(Actor, i64),
    Adjust(Actor, i64, bool),
}

fn stock_op() -> impl Strategy<Value = StockOp> {
    prop_oneof![
        (actor(), -5..100_i64).prop_map(|(a, n)| StockOp::Add(a, n)),
        (actor(), -150..150_i64, any::<bool>()).prop_map(|(a, d, r)| StockOp::Adjust(a, d, r)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn stock_supply_is_never_negative(ops in prop::collection::vec(stock_op(), 0..60)) {
        let owner = member(1);
        let mut stock = Stock::default();
        let mut log = Vec::new();
        let mut expected_supply = 0_i64;
        for op in ops {
            let command = match op {
                StockOp::Add(actor, quantity) => StockCommand::Add { actor, owner, quantity, request_id: None, },
                StockOp::Adjust(actor, delta, with_reason) => StockCommand::Adjust {
                    actor,
                    owner,
                    delta,
                    reason: if with_reason { "recount".to_owned() } else { String::new() },
                    request_id: None,
                },
            };
            let Ok(events) = stock::decide(&stock, command, origin()) else {
                continue;
            };
            for event in &events {
                event_round_trips(event);
                expected_supply += match event {
                    stock::StockEvent::StockAdded { quantity, .. } => *quantity,
                    stock::StockEvent::StockAdjusted { delta, .. } => *delta,
                };
                stock::apply(&mut stock, event);
            }
            prop_assert!(stock.supply >= 0);
            prop_assert_eq!(stock.supply, expected_supply);
            log.extend(events);
        }
        let mut replayed = Stock::default();
        for event in &log {
            stock::apply(&mut replayed, event);
        }
        prop_assert_eq!(&replayed, &stock);
    }
}

// ---------------------------------------------------------------- generator coverage

/// The generators are only worth something if random scripts reach every status: this
/// samples scripts the way the properties do and checks that they do.
#[test]
fn the_generators_reach_every_status() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeSet;

    let mut runner = TestRunner::deterministic();
    let mut order_statuses = BTreeSet::new();
    let mut product_statuses = BTreeSet::new();
    let mut schedule_states = BTreeSet::new();
    for _ in 0..256 {
        let script = order_script().new_tree(&mut runner).unwrap().current();
        let (mut now, mut order) = (origin(), Order::default());
        for (wait_minutes, op) in script {
            now += Duration::minutes(wait_minutes);
            for event in order::decide(&order, order_command(op), now).unwrap_or_default() {
                order::apply(&mut order, &event);
            }
            if let Some(state) = &order.state {
                order_statuses.insert(state.status);
            }
        }
        let script = product_script().new_tree(&mut runner).unwrap().current();
        let (mut now, mut product) = (origin(), Product::default());
        for (wait_minutes, op) in script {
            now += Duration::minutes(wait_minutes);
            let command = product_command(op, now);
            for event in product::decide(&product, command, now).unwrap_or_default() {
                product::apply(&mut product, &event);
            }
            if let Some(state) = &product.state {
                product_statuses.insert(state.status);
                schedule_states.extend(state.schedules.values().map(|s| s.state));
            }
        }
    }
    assert_eq!(order_statuses.len(), 7, "reached only {order_statuses:?}");
    assert_eq!(
        product_statuses.len(),
        5,
        "reached only {product_statuses:?}"
    );
    assert_eq!(schedule_states.len(), 5, "reached only {schedule_states:?}");
}

fn openrun_domain_variant() -> openrun_domain::product::NewVariant {
    openrun_domain::product::NewVariant {
        variant_id: openrun_domain::VariantId::from_uuid(uuid::Uuid::from_u128(
            0x0197_5a00_0000_7000_8000_0000_0000_0270,
        )),
        label: "270".to_owned(),
    }
}
