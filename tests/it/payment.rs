//! The sandbox gateway's ledger on both backends: charges once per order, answered after
//! commit, and written many at a time.

use std::sync::Arc;

use openrun::payment::sandbox::SandboxGateway;
use openrun::payment::{ChargeOutcome, PaymentGateway};
use openrun_domain::{Money, OrderId};

use crate::helpers::{Backend, TestDb, on_both_backends};

on_both_backends!(charges_waiting_for_the_ledger_share_one_transaction);

/// The ledger is locked while 200 charges come in: the writer's first transaction waits on
/// the lock, every other charge waits for the writer, and once the lock goes they are
/// written together. Each is answered with its own row; a repeated order is charged once
/// (its second call counted), one with another amount is a mismatch.
async fn charges_waiting_for_the_ledger_share_one_transaction(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let db = test_db.connect().await;
    openrun::db::migrate(&db).await.unwrap();
    let gateway = Arc::new(SandboxGateway::new(db.clone(), openrun::clock::system()));
    let first = OrderId::from_uuid(uuid::Uuid::now_v7());
    assert!(matches!(
        gateway
            .charge(first, Money::from_minor(1000), "tok_visa")
            .await,
        ChargeOutcome::Charged { .. }
    ));
    // Another connection holds the ledger.
    let lock = match &db {
        openrun::db::Database::MySql(pool) => {
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("LOCK TABLES sandbox_charges WRITE")
                .execute(&mut *conn)
                .await
                .unwrap();
            Lock::MySql(conn)
        }
        openrun::db::Database::Sqlite(pool) => {
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .unwrap();
            Lock::Sqlite(conn)
        }
    };
    let before = gateway.batches();
    let orders: Vec<OrderId> = (0..200)
        .map(|_| OrderId::from_uuid(uuid::Uuid::now_v7()))
        .collect();
    let mut tasks = Vec::new();
    for (i, order) in orders.iter().copied().enumerate() {
        let gateway = Arc::clone(&gateway);
        tasks.push(tokio::spawn(async move {
            // The first order again, once with its amount and once with another.
            let (order, amount) = match i {
                0 => (first, 1000),
                1 => (first, 2000),
                _ => (order, 1000 + i as i64),
            };
            gateway
                .charge(order, Money::from_minor(amount), "tok_visa")
                .await
        }));
    }
    // Some charges are in the writer's blocked transaction; the others wait for it.
    let started = std::time::Instant::now();
    while gateway.in_flight() < 200 || gateway.batches() - before < 1 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "charges never queued"
        );
        tokio::task::yield_now().await;
    }
    match lock {
        Lock::MySql(mut conn) => {
            sqlx::query("UNLOCK TABLES")
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        Lock::Sqlite(mut conn) => {
            sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
        }
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert_eq!(
        gateway.batches() - before,
        2,
        "one blocked, then all the others at once"
    );
    assert!(matches!(answers[0], ChargeOutcome::Charged { .. }));
    assert_eq!(answers[1], ChargeOutcome::Mismatch);
    for (i, answer) in answers.iter().enumerate().skip(2) {
        let ChargeOutcome::Charged { reference } = answer else {
            panic!("{i}: {answer:?}");
        };
        assert_eq!(*reference, format!("ch_{}", orders[i].as_uuid().simple()));
        let charge = gateway.charge_of(orders[i]).await.unwrap().unwrap();
        assert_eq!(charge.amount, Money::from_minor(1000 + i as i64));
    }
    let sql = "SELECT CAST(calls AS SIGNED) FROM sandbox_charges WHERE order_id = ?";
    let calls: i64 = openrun::db::with_pool!(&db, pool => {
        sqlx::query_scalar(sql).bind(first.to_string()).fetch_one(pool).await.unwrap()
    });
    assert_eq!(calls, 3);
    db.close().await;
}

enum Lock {
    MySql(sqlx::pool::PoolConnection<sqlx::MySql>),
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}
