//! Golden files pin the stored JSON of every event type and version.
//!
//! `tests/golden/<stream type>/<event type>-<event version>.json` holds one sample of each
//! event as the current code writes it. A change to a stored event's shape fails here: if
//! it was intended, give the event a new version and an upcaster from the old one, keep the
//! old file (it must still load through the upcasters), and record the new shape with
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p openrun-domain --test golden
//! ```

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::persist::{SemanticVersion, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use openrun_domain::order::{
    Order, OrderEvent, OrderLine, Payment, RefundCause, SealedAddress, StockLine, VoidReason,
};
use openrun_domain::product::{Product, ProductEvent, ProductStatus, SkipReason};
use openrun_domain::stock::{Stock, StockEvent};
use openrun_domain::{
    Actor, CategoryId, MemberId, Money, OrderId, OrderPolicy, ProductId, Role, ScheduleId,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

const SELLER: MemberId =
    MemberId::from_uuid(Uuid::from_u128(0x0197_5a00_0000_7000_8000_0000_0000_0051));
const BUYER: MemberId =
    MemberId::from_uuid(Uuid::from_u128(0x0197_5a00_0000_7000_8000_0000_0000_00b1));
const PRODUCT: ProductId =
    ProductId::from_uuid(Uuid::from_u128(0x0197_5a00_0000_7000_8000_0000_0000_0100));
const CATEGORY: CategoryId =
    CategoryId::from_uuid(Uuid::from_u128(0x0197_5a00_0000_7000_8000_0000_0000_00c1));
const SCHEDULE: ScheduleId =
    ScheduleId::from_uuid(Uuid::from_u128(0x0197_5a00_0000_7000_8000_0000_0000_05c1));
const ORDER: OrderId =
    OrderId::from_uuid(Uuid::from_u128(0x0197_5a00_0000_7000_8000_0000_0000_000d));

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap()
}

fn seller() -> Actor {
    Actor::new(SELLER, Role::Seller)
}

fn product_samples() -> Vec<ProductEvent> {
    let samples = vec![
        ProductEvent::ProductRegistered {
            product_id: PRODUCT,
            seller_id: SELLER,
            category_id: CATEGORY,
            name: "Limited sneaker".to_owned(),
            description: "Only 100 pairs".to_owned(),
            price: Money::from_minor(129_000),
            at: at(),
            variants: vec![openrun_domain_variant()],
            purchase_limit: None,
        },
        ProductEvent::ProductDetailsChanged {
            category_id: None,
            name: Some("Limited sneaker, second run".to_owned()),
            description: None,
        },
        ProductEvent::ProductPriceChanged {
            from: Money::from_minor(129_000),
            to: Money::from_minor(99_000),
        },
        ProductEvent::ProductStatusChanged {
            from: ProductStatus::Waiting,
            to: ProductStatus::OnSale,
            by: seller(),
            schedule_id: Some(SCHEDULE),
            at: at(),
            reason: None,
        },
        ProductEvent::StatusChangeScheduled {
            schedule_id: SCHEDULE,
            to: ProductStatus::OnSale,
            due_at: at() + Duration::hours(24),
            by: seller(),
        },
        ProductEvent::ScheduledStatusChangeCancelled {
            schedule_id: SCHEDULE,
            by: seller(),
        },
        ProductEvent::ScheduledStatusChangeSkipped {
            schedule_id: SCHEDULE,
            reason: SkipReason::TransitionNotAllowed {
                from: ProductStatus::NotPublished,
            },
            at: at(),
        },
        ProductEvent::ProductImagesPublished {
            image_version: 2,
            thumbnails: vec!["products/0100/v2/t1".to_owned()],
            details: vec![
                "products/0100/v2/d1".to_owned(),
                "products/0100/v2/d2".to_owned(),
            ],
        },
        ProductEvent::ProductDeleted {
            by: seller(),
            at: at(),
        },
        ProductEvent::ProductPurchaseLimitChanged {
            from: None,
            to: Some(2),
        },
        ProductEvent::VariantAdded {
            variant: openrun_domain::product::NewVariant {
                variant_id: openrun_domain::VariantId::from_uuid(Uuid::from_u128(
                    0x0197_5a00_0000_7000_8000_0000_0000_0280,
                )),
                label: "280".to_owned(),
            },
        },
        ProductEvent::VariantRetired {
            variant_id: openrun_domain_variant().variant_id,
        },
    ];
    // Adding an event variant breaks this match: add a sample above, then regenerate.
    let covered: BTreeSet<usize> = samples
        .iter()
        .map(|e| match e {
            ProductEvent::ProductRegistered { .. } => 0,
            ProductEvent::ProductDetailsChanged { .. } => 1,
            ProductEvent::ProductPriceChanged { .. } => 2,
            ProductEvent::ProductStatusChanged { .. } => 3,
            ProductEvent::StatusChangeScheduled { .. } => 4,
            ProductEvent::ScheduledStatusChangeCancelled { .. } => 5,
            ProductEvent::ScheduledStatusChangeSkipped { .. } => 6,
            ProductEvent::ProductImagesPublished { .. } => 7,
            ProductEvent::ProductDeleted { .. } => 8,
            ProductEvent::ProductPurchaseLimitChanged { .. } => 9,
            ProductEvent::VariantAdded { .. } => 10,
            ProductEvent::VariantRetired { .. } => 11,
        })
        .collect();
    assert_eq!(covered.len(), 12, "one sample per product event");
    samples
}

fn stock_samples() -> Vec<StockEvent> {
    let samples = vec![
        StockEvent::StockAdded {
            quantity: 100,
            supply: 100,
            at: at(),
            request_id: None,
        },
        StockEvent::StockAdjusted {
            delta: -3,
            reason: "damaged in storage".to_owned(),
            supply: 97,
            at: at(),
            request_id: None,
        },
    ];
    let covered: BTreeSet<usize> = samples
        .iter()
        .map(|e| match e {
            StockEvent::StockAdded { .. } => 0,
            StockEvent::StockAdjusted { .. } => 1,
        })
        .collect();
    assert_eq!(covered.len(), 2, "one sample per stock event");
    samples
}

fn order_samples() -> Vec<OrderEvent> {
    let variant = openrun_domain_variant().variant_id;
    let released = vec![StockLine {
        product_id: PRODUCT,
        variant_id: variant,
        quantity: 2,
    }];
    let samples = vec![
        OrderEvent::OrderPlaced {
            order_id: ORDER,
            buyer_id: BUYER,
            lines: vec![OrderLine {
                product_id: PRODUCT,
                variant_id: variant,
                quantity: 2,
                unit_price: Money::from_minor(129_000),
                line_total: Money::from_minor(258_000),
            }],
            total_quantity: 2,
            total: Money::from_minor(258_000),
            shipping_address: SealedAddress("k1.bm9uY2U.Y2lwaGVydGV4dA".to_owned()),
            payment: Payment {
                method: "sandbox".to_owned(),
                reference: "pay_0001".to_owned(),
                amount: Money::from_minor(258_000),
            },
            policy: OrderPolicy::default(),
            fingerprint: "b3f1c2d4e5f60718293a4b5c6d7e8f90".to_owned(),
            at: at(),
        },
        OrderEvent::OrderDeclined {
            order_id: ORDER,
            buyer_id: BUYER,
            fingerprint: "b3f1c2d4e5f60718293a4b5c6d7e8f90".to_owned(),
            total: Money::from_minor(258_000),
            reason: "card declined".to_owned(),
            at: at(),
        },
        OrderEvent::OrderVoided {
            reason: VoidReason::CommitLost,
            at: at(),
        },
        OrderEvent::OrderShipped { at: at() },
        OrderEvent::OrderDelivered { at: at() },
        OrderEvent::OrderCancelled {
            by: Actor::new(BUYER, Role::Basic),
            released: released.clone(),
            at: at(),
        },
        OrderEvent::ReturnRequested {
            reason: Some("too small".to_owned()),
            at: at(),
        },
        OrderEvent::ReturnPickedUp { at: at() },
        OrderEvent::ReturnCompleted {
            restocked: released,
            at: at(),
        },
        OrderEvent::OrderRefunded {
            refund_id: uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0007),
            cause: RefundCause::Cancellation,
            amount: Money::from_minor(258_000),
            payment_reference: "pay_0001".to_owned(),
            at: at(),
        },
        OrderEvent::RefundSettled {
            refund_id: uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0007),
            amount: Money::from_minor(258_000),
            at: at(),
        },
    ];
    let covered: BTreeSet<usize> = samples
        .iter()
        .map(|e| match e {
            OrderEvent::OrderPlaced { .. } => 0,
            OrderEvent::OrderShipped { .. } => 1,
            OrderEvent::OrderDelivered { .. } => 2,
            OrderEvent::OrderCancelled { .. } => 3,
            OrderEvent::ReturnRequested { .. } => 4,
            OrderEvent::ReturnPickedUp { .. } => 5,
            OrderEvent::ReturnCompleted { .. } => 6,
            OrderEvent::OrderRefunded { .. } => 7,
            OrderEvent::OrderDeclined { .. } => 8,
            OrderEvent::OrderVoided { .. } => 9,
            OrderEvent::RefundSettled { .. } => 10,
        })
        .collect();
    assert_eq!(covered.len(), 11, "one sample per order event");
    samples
}

fn golden_dir(stream: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(stream)
}

fn file_name(event_type: &str, event_version: &str) -> String {
    format!("{event_type}-{event_version}.json")
}

/// Compares (or with `UPDATE_GOLDEN=1` rewrites) the golden file of every sample, and
/// checks each file reads back into the same event. Returns the current file names.
fn check_samples<E>(stream: &str, samples: &[E]) -> BTreeSet<String>
where
    E: DomainEvent + Serialize + DeserializeOwned,
{
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let dir = golden_dir(stream);
    let mut names = BTreeSet::new();
    let mut failures = Vec::new();
    for sample in samples {
        let json = serde_json::to_value(sample).unwrap();
        assert_eq!(
            json["type"],
            Value::String(sample.event_type()),
            "the tag must equal event_type()"
        );
        let name = file_name(&sample.event_type(), &sample.event_version());
        let path = dir.join(&name);
        assert!(names.insert(name.clone()), "two samples for {name}");
        if update {
            fs::create_dir_all(&dir).unwrap();
            let text = serde_json::to_string_pretty(&json).unwrap() + "\n";
            fs::write(&path, text).unwrap();
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            failures.push(format!("{stream}/{name}: missing"));
            continue;
        };
        let stored: Value = serde_json::from_str(&text).unwrap();
        if stored != json {
            failures.push(format!(
                "{stream}/{name}: the event now serializes as\n{}",
                serde_json::to_string_pretty(&json).unwrap()
            ));
            continue;
        }
        let read: E = serde_json::from_value(stored).unwrap();
        assert!(&read == sample, "{stream}/{name} does not read back equal");
    }
    assert!(
        failures.is_empty(),
        "stored event shapes changed:\n{}\n\nIf the change is intended, bump the event's \
         version, add an upcaster from the old one, keep the old golden file, and record the \
         new shapes with:\n    UPDATE_GOLDEN=1 cargo test -p openrun-domain --test golden",
        failures.join("\n")
    );
    names
}

fn semver(version: &str) -> SemanticVersion {
    version.parse().unwrap()
}

/// Runs a stored payload through the domain's upcasters, as the event store does on load.
fn upcast(stream: &str, event_type: &str, event_version: &str, payload: Value) -> SerializedEvent {
    let mut event = SerializedEvent::new(
        PRODUCT.to_string(),
        1,
        stream.to_owned(),
        event_type.to_owned(),
        event_version.to_owned(),
        payload,
        Value::Null,
    );
    for upcaster in openrun_domain::upcasters() {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            event = upcaster.upcast(event);
        }
    }
    event
}

/// Every file that is not a current shape is an older version: it must still load, through
/// the upcasters, as an event of the current version.
fn check_older_versions<A: Aggregate>(stream: &str, current: &BTreeSet<String>) {
    for entry in fs::read_dir(golden_dir(stream)).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if current.contains(&name) {
            continue;
        }
        let stem = name.strip_suffix(".json").unwrap();
        let (event_type, version) = stem.rsplit_once('-').unwrap();
        let text = fs::read_to_string(golden_dir(stream).join(&name)).unwrap();
        let loaded = upcast(
            stream,
            event_type,
            version,
            serde_json::from_str(&text).unwrap(),
        );
        let event: A::Event = serde_json::from_value(loaded.payload)
            .unwrap_or_else(|e| panic!("{stream}/{name} no longer loads: {e}"));
        assert_eq!(event.event_type(), event_type);
        assert_eq!(
            semver(&event.event_version()),
            semver(&loaded.event_version),
            "{stream}/{name}"
        );
    }
}

#[test]
fn product_events_match_their_golden_files() {
    let current = check_samples(Product::TYPE, &product_samples());
    check_older_versions::<Product>(Product::TYPE, &current);
}

#[test]
fn stock_events_match_their_golden_files() {
    let current = check_samples(Stock::TYPE, &stock_samples());
    check_older_versions::<Stock>(Stock::TYPE, &current);
}

#[test]
fn order_events_match_their_golden_files() {
    let current = check_samples(Order::TYPE, &order_samples());
    check_older_versions::<Order>(Order::TYPE, &current);
}

#[test]
fn old_product_registered_events_upcast_to_v3_with_one_implicit_variant() {
    let v1 = fs::read_to_string(golden_dir("product").join("ProductRegistered-1.0.json")).unwrap();
    let v1: Value = serde_json::from_str(&v1).unwrap();
    assert!(
        v1["data"].get("description").is_none(),
        "1.0 had no description"
    );
    let implicit = openrun_domain::product::implicit_variant_id(PRODUCT);
    for (version, payload) in [
        ("1.0", v1),
        (
            "2.0",
            serde_json::from_str(
                &fs::read_to_string(golden_dir("product").join("ProductRegistered-2.0.json"))
                    .unwrap(),
            )
            .unwrap(),
        ),
    ] {
        let upcast = upcast("product", "ProductRegistered", version, payload);
        // cqrs-es writes the upcast version in full ("3.0.0"); it is the same version as "3.0".
        assert_eq!(semver(&upcast.event_version), semver("3.0"), "{version}");
        let event: ProductEvent = serde_json::from_value(upcast.payload).unwrap();
        let ProductEvent::ProductRegistered {
            description,
            product_id,
            variants,
            purchase_limit,
            ..
        } = &event
        else {
            panic!("not a ProductRegistered: {event:?}");
        };
        if version == "1.0" {
            assert_eq!(description, "");
        }
        assert_eq!(*product_id, PRODUCT);
        assert_eq!(variants.len(), 1, "{version}: one implicit variant");
        assert_eq!(
            variants[0].variant_id, implicit,
            "derived from the product id"
        );
        assert_eq!(
            variants[0].label,
            openrun_domain::product::DEFAULT_VARIANT_LABEL
        );
        assert_eq!(*purchase_limit, None);
    }

    // A 3.0 payload is left alone, and the upcasters never touch other events.
    let v3 = serde_json::to_value(&product_samples()[0]).unwrap();
    assert_eq!(
        upcast("product", "ProductRegistered", "3.0", v3.clone()).payload,
        v3
    );
    let upcasters = openrun_domain::upcasters();
    assert!(
        upcasters
            .iter()
            .all(|u| !u.can_upcast("ProductPriceChanged", "1.0"))
    );
    assert!(
        upcasters
            .iter()
            .all(|u| !u.can_upcast("ProductRegistered", "3.0"))
    );
    assert!(upcasters[0].can_upcast("ProductRegistered", "1.0"));
    assert!(!upcasters[0].can_upcast("ProductRegistered", "2.0"));
    assert!(upcasters[1].can_upcast("ProductRegistered", "2.0"));
}

fn openrun_domain_variant() -> openrun_domain::product::NewVariant {
    openrun_domain::product::NewVariant {
        variant_id: openrun_domain::VariantId::from_uuid(uuid::Uuid::from_u128(
            0x0197_5a00_0000_7000_8000_0000_0000_0270,
        )),
        label: "270".to_owned(),
    }
}

#[test]
fn old_order_lines_upcast_to_the_product_s_implicit_variant() {
    let implicit = openrun_domain::product::implicit_variant_id(PRODUCT);
    for event_type in ["OrderPlaced", "OrderCancelled", "ReturnCompleted"] {
        let text =
            fs::read_to_string(golden_dir("order").join(format!("{event_type}-1.0.json"))).unwrap();
        let payload: Value = serde_json::from_str(&text).unwrap();
        let upcast = upcast("order", event_type, "1.0", payload);
        assert_eq!(semver(&upcast.event_version), semver("2.0"), "{event_type}");
        let lines: Vec<(ProductId, openrun_domain::VariantId)> =
            match serde_json::from_value(upcast.payload).unwrap() {
                OrderEvent::OrderPlaced {
                    lines, fingerprint, ..
                } => {
                    assert_eq!(fingerprint, "", "no request can match a 1.0 order");
                    lines.iter().map(|l| (l.product_id, l.variant_id)).collect()
                }
                OrderEvent::OrderCancelled {
                    released: lines, ..
                }
                | OrderEvent::ReturnCompleted {
                    restocked: lines, ..
                } => lines.iter().map(|l| (l.product_id, l.variant_id)).collect(),
                other => panic!("{other:?}"),
            };
        assert_eq!(lines, vec![(PRODUCT, implicit)], "{event_type}");
    }
}
