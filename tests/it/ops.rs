//! Operator commands over the log: `replay` and `audit`, as the binary runs them.

use std::process::Command;

use openrun::db::Database;
use openrun::eventstore::{EventData, ExpectedVersion, Metadata, StreamRef};

use crate::helpers::{Backend, TestDb, on_both_backends};

on_both_backends!(
    replay_prints_a_stream_as_a_timeline_or_json,
    audit_passes_a_sound_log_and_fails_a_broken_one,
    audit_names_an_oversell_a_kept_charge_and_a_refunded_live_order,
    audit_names_an_unpaid_refund_a_double_settlement_and_units_given_back_twice,
);

fn openrun(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_openrun"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A sized product's supply, and an order of two of its sizes through the command path (so
/// the log's counters move with it), then shipped by the scheduler.
async fn an_order(db: &Database) {
    placed_order(db, "o1", true).await;
}

/// An order `id` of three units of two sizes (five each), shipped when `shipped`.
async fn placed_order(db: &Database, id: &str, shipped: bool) {
    use openrun_domain::order::{LineItem, OrderCommand, Payment, SealedAddress};
    use openrun_domain::stock::StockCommand;
    use openrun_domain::{
        Actor, MemberId, Money, OrderId, OrderPolicy, ProductId, Role, VariantId,
    };
    let events = openrun::eventstore::open(db, &Default::default());
    let commands =
        openrun::commands::Commands::new(std::sync::Arc::clone(&events), openrun::clock::system());
    let seller = Actor::new(MemberId::from_uuid(uuid::Uuid::now_v7()), Role::Seller);
    let product = ProductId::from_uuid(uuid::Uuid::now_v7());
    let sizes = [
        VariantId::from_uuid(uuid::Uuid::now_v7()),
        VariantId::from_uuid(uuid::Uuid::now_v7()),
    ];
    for size in sizes {
        let add = StockCommand::Add {
            actor: seller,
            owner: seller.member_id,
            quantity: 5,
            request_id: None,
        };
        commands
            .stock(&size.to_string(), add, Metadata::default())
            .await
            .unwrap();
    }
    let line = |variant_id, quantity| LineItem {
        product_id: product,
        variant_id,
        quantity,
        unit_price: Money::from_minor(73_000),
    };
    let place = OrderCommand::Place {
        actor: Actor::new(MemberId::from_uuid(uuid::Uuid::now_v7()), Role::Basic),
        order_id: OrderId::from_uuid(uuid::Uuid::now_v7()),
        lines: vec![line(sizes[0], 1), line(sizes[1], 2)],
        shipping_address: SealedAddress("sealed:v1:Zm9v".into()),
        payment: Payment {
            method: "sandbox".into(),
            reference: "pay_1".into(),
            amount: Money::from_minor(219_000),
        },
        policy: OrderPolicy::default(),
        fingerprint: String::new(),
    };
    let metadata = Metadata {
        actor: Some("member:0190aaaa".into()),
        ..Metadata::default()
    };
    commands.order(id, place, metadata).await.unwrap();
    if !shipped {
        events.shutdown().await;
        return;
    }
    let shipped =
        serde_json::json!({"type": "OrderShipped", "data": {"at": "2026-11-26T10:00:00Z"}});
    let system = Metadata {
        actor: Some("system:scheduler".into()),
        ..Metadata::default()
    };
    events
        .append(
            StreamRef::new("order", id),
            ExpectedVersion::Exact(1),
            vec![EventData::json("OrderShipped", "1.0", &shipped).unwrap()],
            system,
        )
        .await
        .unwrap();
    events.shutdown().await;
}

async fn replay_prints_a_stream_as_a_timeline_or_json(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let db = test_db.connect().await;
    an_order(&db).await;

    let (ok, out, err) = openrun(&test_db, &["replay", "--stream", "order/o1"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "order/o1  (2 events)");
    assert!(
        lines[1].contains("v1")
            && lines[1].contains("OrderPlaced 2.0")
            && lines[1].contains("member:0190aaaa"),
        "{out}"
    );
    assert!(
        lines[1].contains("total=219000") && lines[1].contains("lines=[2]"),
        "{out}"
    );
    assert!(
        !out.contains("sealed"),
        "sealed personal data is not printed: {out}"
    );
    assert!(
        lines[2].contains("v2")
            && lines[2].contains("OrderShipped")
            && lines[2].contains("system:scheduler"),
        "{out}"
    );

    // What a client wrote is printed escaped: no forged line, no terminal control.
    let events = openrun::eventstore::open(&db, &Default::default());
    let forged = serde_json::json!({"type": "StockAdjusted", "data": {
        "delta": 1, "reason": "x\n2026-12-04 18:00:00.000Z  v2   ProductDeleted\u{1b}[31m"}});
    events
        .append(
            StreamRef::new("stock", "s1"),
            ExpectedVersion::NO_STREAM,
            vec![EventData::json("StockAdjusted", "1.0", &forged).unwrap()],
            Metadata::default(),
        )
        .await
        .unwrap();
    events.shutdown().await;
    let (ok, out, err) = openrun(&test_db, &["replay", "--stream", "stock/s1"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(!out.contains('\u{1b}') && out.contains("\\n"), "{out}");

    let (ok, out, _) = openrun(&test_db, &["replay", "--stream", "order/o1", "--json"]);
    assert!(ok);
    let parsed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[1]["version"], 2);
    assert_eq!(parsed[1]["event_type"], "OrderShipped");
    assert_eq!(parsed[0]["metadata"]["actor"], "member:0190aaaa");

    let (ok, _, err) = openrun(&test_db, &["replay", "--stream", "order/none"]);
    assert!(!ok && err.contains("no stream order/none"), "{err}");
    let (ok, _, err) = openrun(&test_db, &["replay", "--stream", "nonsense"]);
    assert!(!ok && err.contains("--stream"), "{err}");
}

async fn audit_passes_a_sound_log_and_fails_a_broken_one(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let db = test_db.connect().await;
    an_order(&db).await;
    let (ok, out, err) = openrun(&test_db, &["audit"]);
    assert!(ok, "{out}{err}");
    assert!(out.lines().all(|l| l.starts_with("ok")), "{out}");

    // Lose the first event of the order: positions, versions and units all break.
    let lose = "DELETE FROM events WHERE stream_type = 'order' AND version = 1";
    match &db {
        Database::MySql(pool) => sqlx::query(lose).execute(pool).await.map(drop),
        Database::Sqlite(pool) => sqlx::query(lose).execute(pool).await.map(drop),
    }
    .unwrap();
    let (ok, out, err) = openrun(&test_db, &["audit"]);
    assert!(!ok, "the audit must fail: {out}");
    assert!(
        out.contains("FAIL global positions are contiguous from 1"),
        "{out}"
    );
    assert!(
        out.contains("FAIL stream versions are contiguous from 1"),
        "{out}"
    );
    assert!(
        out.contains("order/o1 has 1 events up to version 2"),
        "{out}"
    );
    assert!(
        out.contains("FAIL the guarded units counters equal the log"),
        "{out}"
    );
    assert!(err.contains("violations"), "{err}");
}

/// What the guards and the sweeps prevent, written behind their backs: an order of more units
/// than there are, a charge of an order never placed kept for ten minutes, and a placed
/// order's charge refunded though its stream records no refund.
async fn audit_names_an_oversell_a_kept_charge_and_a_refunded_live_order(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let db = test_db.connect().await;
    an_order(&db).await;
    let events = openrun::eventstore::open(&db, &Default::default());
    let placed = events
        .read_stream(&StreamRef::new("order", "o1"), 1, 1)
        .await
        .unwrap()
        .remove(0);
    let mut payload = placed.payload.clone();
    payload["data"]["lines"][0]["quantity"] = 10.into();
    let variant = payload["data"]["lines"][0]["variant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    events
        .append(
            StreamRef::new("order", "o2"),
            ExpectedVersion::NO_STREAM,
            vec![EventData::json("OrderPlaced", &placed.event_version, &payload).unwrap()],
            Metadata::default(),
        )
        .await
        .unwrap();
    events.shutdown().await;
    let long_ago = chrono::Utc::now() - chrono::Duration::minutes(10);
    let charge = "INSERT INTO sandbox_charges \
                  (order_id, amount, token, status, reference, refunded, created_at) \
                  VALUES (?, 219000, 'tok_visa', 'charged', 'ch', ?, ?)";
    for (order, refunded) in [("o3", 0), ("o1", 219_000)] {
        openrun::db::with_pool!(&db, pool => {
            let insert = sqlx::query(charge).bind(order).bind(refunded).bind(long_ago);
            insert.execute(pool).await.unwrap();
        });
    }
    let (ok, out, _) = openrun(&test_db, &["audit"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL no variant sold beyond its supply at any point of the log"),
        "{out}"
    );
    assert!(
        out.contains(&format!("variant {variant} is 6 units short")),
        "{out}"
    );
    assert!(
        out.contains("order o3 was never placed but 219000 of its charge of 219000 is kept"),
        "{out}"
    );
    assert!(
        out.contains(
            "order o1: the gateway refunded 219000, its stream owes 0 and records 0 paid back"
        ),
        "{out}"
    );
}

/// What the outbox and the order's stream prevent, written behind their backs: a refund never
/// paid back, one settled twice and paid twice by the gateway, and a cancel's units given back
/// twice.
async fn audit_names_an_unpaid_refund_a_double_settlement_and_units_given_back_twice(
    backend: Backend,
) {
    use openrun_domain::order::OrderCommand;
    use openrun_domain::{Actor, MemberId, Role};
    let test_db = TestDb::new(backend).await;
    let db = test_db.connect().await;
    let (unpaid, twice) = (
        uuid::Uuid::now_v7().to_string(),
        uuid::Uuid::now_v7().to_string(),
    );
    placed_order(&db, &unpaid, false).await;
    placed_order(&db, &twice, false).await;
    let events = openrun::eventstore::open(&db, &Default::default());
    let commands =
        openrun::commands::Commands::new(std::sync::Arc::clone(&events), openrun::clock::system());
    let admin = Actor::new(MemberId::from_uuid(uuid::Uuid::now_v7()), Role::Admin);
    for id in [&unpaid, &twice] {
        commands
            .order(
                id,
                OrderCommand::Cancel { actor: admin },
                Metadata::default(),
            )
            .await
            .unwrap();
    }
    let stream = StreamRef::new("order", twice.as_str());
    let recorded = events.read_stream(&stream, 1, 10).await.unwrap();
    let cancelled = &recorded[1];
    let refund_id = recorded[2].payload["data"]["refund_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let settled = serde_json::json!({"type": "RefundSettled", "data": {
        "refund_id": refund_id, "amount": 219000, "at": "2026-12-01T10:00:00Z"}});
    events
        .append(
            stream,
            ExpectedVersion::Exact(3),
            vec![
                EventData::json(
                    "OrderCancelled",
                    &cancelled.event_version,
                    &cancelled.payload,
                )
                .unwrap(),
                EventData::json("RefundSettled", "1.0", &settled).unwrap(),
                EventData::json("RefundSettled", "1.0", &settled).unwrap(),
            ],
            Metadata::default(),
        )
        .await
        .unwrap();
    let paid = "INSERT INTO sandbox_refunds (refund_id, order_id, amount, created_at) \
                VALUES (?, ?, 219000, ?)";
    for _ in 0..2 {
        openrun::db::with_pool!(&db, pool => {
            let insert = sqlx::query(paid)
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(&twice)
                .bind(chrono::Utc::now());
            insert.execute(pool).await.unwrap();
        });
    }
    let checks = openrun::ops::audit(
        &db,
        events.as_ref(),
        None,
        std::time::Duration::from_millis(1),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    assert!(!openrun::ops::write_report(&mut out, &checks).unwrap());
    let out = String::from_utf8(out).unwrap();
    for expected in [
        format!("of order {unpaid} (219000) recorded at"),
        "is not paid back".to_owned(),
        format!("refund {refund_id} of order {twice} is settled 2 times"),
        format!("order {twice} was refunded 2 times by the gateway (438000 in all)"),
        format!("order {twice} gave its units back again"),
    ] {
        assert!(out.contains(&expected), "{expected}\n{out}");
    }
    events.shutdown().await;
}
