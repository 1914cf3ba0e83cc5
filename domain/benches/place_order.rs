//! decide + apply of a PlaceOrder with 1 and with 10 lines: the domain's share of the order
//! hot path. Building the command is outside the measurement.
//!
//! `cargo bench -p openrun-domain --bench place_order`

#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use openrun_domain::order::{self, LineItem, Order, OrderCommand, Payment, SealedAddress};
use openrun_domain::{Actor, MemberId, Money, OrderId, OrderPolicy, ProductId, Role};
use uuid::Uuid;

fn place(lines: u128) -> OrderCommand {
    let lines: Vec<LineItem> = (0..lines)
        .map(|i| LineItem {
            product_id: ProductId::from_uuid(Uuid::from_u128(0x100 + i)),
            variant_id: openrun_domain::VariantId::from_uuid(Uuid::from_u128(0x200 + i)),
            quantity: 2,
            unit_price: Money::from_minor(129_000),
        })
        .collect();
    let total = Money::from_minor(258_000 * i64::try_from(lines.len()).unwrap());
    OrderCommand::Place {
        actor: Actor::new(MemberId::from_uuid(Uuid::from_u128(0xb1)), Role::Basic),
        order_id: OrderId::from_uuid(Uuid::from_u128(0x0d)),
        lines,
        shipping_address: SealedAddress("k1.bm9uY2U.Y2lwaGVydGV4dA".repeat(4)),
        payment: Payment {
            method: "sandbox".to_owned(),
            reference: "pay_0001".to_owned(),
            amount: total,
        },
        policy: OrderPolicy::default(),
        fingerprint: "b3f1c2d4e5f60718293a4b5c6d7e8f90".to_owned(),
    }
}

fn place_order(c: &mut Criterion) {
    let now = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap();
    let mut group = c.benchmark_group("place_order");
    for lines in [1_u128, 10] {
        group.bench_with_input(
            BenchmarkId::new("decide_apply", lines),
            &lines,
            |b, &lines| {
                b.iter_batched(
                    || place(lines),
                    |command| {
                        let mut order = Order::default();
                        for event in order::decide(&order, command, black_box(now)).unwrap() {
                            order::apply(&mut order, &event);
                        }
                        order
                    },
                    BatchSize::SmallInput,
                );
            },
        );
    }
    group.finish();
}

criterion_group!(benches, place_order);
criterion_main!(benches);
