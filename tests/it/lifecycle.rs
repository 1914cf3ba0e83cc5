//! After the order, on both backends: the scheduler walks an order through delivery and a
//! return on timings of seconds; cancels and returns inside and outside their windows; a
//! cancel racing the shipping step; one refund, paid back once; stock given back once; the
//! buyer's, the admin's and the seller's views; the confirmation e-mail. And on MariaDB with
//! Redis, service processes killed between a refund's record and its payment, and mid-batch.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use openrun_domain::order::{OrderCommand, OrderError, OrderStatus};
use openrun_domain::{Actor, Issuer, MemberId, OrderPolicy, Role};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, Serving, eventually, on_both_backends};
use crate::orders::{
    address_of, audit_passes, count_events, ledger, on_sale, order_body, placed, problem,
    wait_for_units,
};
use crate::products::Shop;

on_both_backends!(
    a_confirmation_goes_out_for_a_recent_order_and_not_for_an_old_one,
    an_order_ships_delivers_and_is_returned_restocked_and_refunded_once,
    a_cancel_gives_the_units_back_at_once_and_refunds_once,
    cancel_and_return_are_refused_once_their_windows_close,
    a_cancel_racing_the_shipping_step_has_one_winner,
);

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// A shop whose orders live by `policy`.
async fn shop_with(backend: Backend, policy: OrderPolicy) -> Shop {
    Shop::on(
        crate::helpers::TestApp::spawn_with(backend, |c| {
            c.orders.policy = policy;
            c.auth.rate_limits.orders_per_member_per_minute = 100_000.try_into().unwrap();
        })
        .await,
    )
    .await
}

async fn get(shop: &Shop, token: &str, path: &str) -> reqwest::Response {
    shop.send(Method::GET, path, Some(token), None, &[]).await
}

async fn post(shop: &Shop, token: &str, path: &str, body: Option<Value>) -> reqwest::Response {
    shop.send(Method::POST, path, Some(token), body, &[]).await
}

/// `POST /v1/orders/{id}/{step}` (cancel or return) as `token`.
async fn step(
    shop: &Shop,
    token: &str,
    id: &impl std::fmt::Display,
    step: &str,
    body: Option<Value>,
) -> reqwest::Response {
    post(shop, token, &format!("/v1/orders/{id}/{step}"), body).await
}

async fn order_of(shop: &Shop, token: &str, id: &str) -> Value {
    let answer = get(shop, token, &format!("/v1/orders/{id}")).await;
    assert_eq!(answer.status(), StatusCode::OK);
    answer.json().await.unwrap()
}

/// Waits until the buyer's view of `id` satisfies `done`; that view.
async fn until(shop: &Shop, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || async {
        let view = order_of(shop, &shop.buyer.access, id).await;
        done(&view).then_some(view)
    })
    .await
}

/// A product on sale with `units` of its first size, and the buyer's order of `quantity` of
/// them: `(product, variant, order id)`.
async fn bought(shop: &Shop, units: i64, quantity: i64, key: &str) -> (String, String, String) {
    let (product, variant, _) = on_sale(shop, units, None).await;
    let address = address_of(shop, &shop.buyer).await;
    let body = order_body(&product, &variant, quantity, &address, "tok_visa");
    let id = placed(shop, &shop.buyer, key, &body).await;
    (product, variant, id)
}

fn instant(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

/// The event types of the order's stream, from its timeline.
async fn timeline(shop: &Shop, id: &str) -> Vec<String> {
    let answer = get(shop, &shop.buyer.access, &format!("/v1/orders/{id}/events")).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let entries: Vec<Value> = answer.json().await.unwrap();
    for entry in &entries {
        assert!(entry["data"].get("shipping_address").is_none(), "{entry}");
    }
    entries
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// How many refunds the gateway paid for `order`.
async fn gateway_refunds(shop: &Shop, order: &str) -> i64 {
    let sql = "SELECT COUNT(*) FROM sandbox_refunds WHERE order_id = ?";
    openrun::db::with_pool!(&shop.app.db, pool => {
        sqlx::query_scalar(sql).bind(order).fetch_one(pool).await.unwrap()
    })
}

/// The log's own count of units left of `variant`.
async fn log_units(shop: &Shop, variant: &str) -> i64 {
    let counter = openrun::commands::units_counter(variant);
    let values = shop.app.events.counters(&[counter.as_str()]).await.unwrap();
    values.get(&counter).copied().unwrap_or(0)
}

/// How many of the seller's rows of `product` are in `status`.
async fn seller_rows(shop: &Shop, product: &str, status: &str) -> u64 {
    let path = format!("/v1/seller/orders?status={status}&product_id={product}");
    let list: Value = get(shop, &shop.seller.access, &path)
        .await
        .json()
        .await
        .unwrap();
    list["total"].as_u64().unwrap()
}

fn buyer_actor(shop: &Shop) -> Actor {
    Actor::new(
        MemberId::from_uuid(shop.buyer.id.parse().unwrap()),
        Role::Basic,
    )
}

async fn an_order_ships_delivers_and_is_returned_restocked_and_refunded_once(backend: Backend) {
    let policy = OrderPolicy {
        cancel_window: secs(3600),
        ship_after: secs(1),
        deliver_after: secs(1),
        return_window: secs(3600),
        return_pickup_after: secs(1),
        return_complete_after: secs(1),
    };
    let shop = shop_with(backend, policy).await;
    let (_, variant, id) = bought(&shop, 10, 2, "walk").await;
    wait_for_units(&shop, &variant, 8).await;

    let delivered = until(&shop, &id, "the order delivered", |v| {
        v["status"] == "delivered"
    })
    .await;
    let steps: Vec<&str> = delivered["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["prepared", "in_delivery", "delivered"]);
    let at: Vec<DateTime<Utc>> = delivered["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| instant(&s["at"]))
        .collect();
    assert!(
        at[1] - at[0] >= secs(1) && at[2] - at[1] >= secs(1),
        "{at:?}"
    );
    assert!(delivered["returnable_until"].is_string());
    assert!(delivered["cancellable_until"].is_null());

    // Shipped: too late to cancel.
    let late = step(&shop, &shop.buyer.access, &id, "cancel", None).await;
    problem(late, StatusCode::CONFLICT, "order-status").await;

    let asked = step(
        &shop,
        &shop.buyer.access,
        &id,
        "return",
        Some(json!({"reason": "too small"})),
    )
    .await;
    assert_eq!(asked.status(), StatusCode::OK);
    let asked: Value = asked.json().await.unwrap();
    assert_eq!(asked["status"], "return_requested");
    let twice = step(&shop, &shop.buyer.access, &id, "return", None).await;
    problem(twice, StatusCode::CONFLICT, "order-status").await;

    let done = until(&shop, &id, "the return completed and refunded", |v| {
        v["status"] == "return_completed" && v["refunds"][0]["state"] == "settled"
    })
    .await;
    let total = done["total"].as_i64().unwrap();
    assert_eq!(done["refunds"].as_array().unwrap().len(), 1);
    assert_eq!(done["refunds"][0]["cause"], "return");
    assert_eq!(done["refunds"][0]["amount"], total);
    assert_eq!(done["refunded"], total);
    assert_eq!(ledger(&shop, &id).await.map(|l| l.2), Some(total));
    assert_eq!(gateway_refunds(&shop, &id).await, 1);
    wait_for_units(&shop, &variant, 10).await;
    assert_eq!(log_units(&shop, &variant).await, 10);
    assert_eq!(
        timeline(&shop, &id).await,
        [
            "OrderPlaced",
            "OrderShipped",
            "OrderDelivered",
            "ReturnRequested",
            "ReturnPickedUp",
            "ReturnCompleted",
            "OrderRefunded",
            "RefundSettled"
        ]
    );
    assert_eq!(count_events(&shop, "RefundSettled").await, 1);
    // The buyer was told of the order, once, by the outbox.
    eventually("the confirmation e-mail", || async {
        let mails: Vec<String> = shop
            .app
            .mails()
            .into_iter()
            .filter(|m| m.contains(&id))
            .collect();
        (mails.len() == 1).then_some(())
    })
    .await;
    audit_passes(&shop).await;
}

async fn a_cancel_gives_the_units_back_at_once_and_refunds_once(backend: Backend) {
    let shop = shop_with(backend, OrderPolicy::default()).await;
    let (product, variant, id) = bought(&shop, 10, 3, "cancel-me").await;
    wait_for_units(&shop, &variant, 7).await;
    let before = ledger(&shop, &id).await;

    // Another member learns nothing of the order and changes nothing.
    let stranger = &shop.other_seller.access;
    problem(
        get(&shop, stranger, &format!("/v1/orders/{id}")).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    problem(
        get(&shop, stranger, &format!("/v1/orders/{id}/events")).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    for step in ["cancel", "return"] {
        let refused = self::step(&shop, stranger, &id, step, None).await;
        problem(refused, StatusCode::NOT_FOUND, "not-found").await;
    }
    let unknown = uuid::Uuid::now_v7();
    let none = step(&shop, &shop.buyer.access, &unknown, "cancel", None).await;
    problem(none, StatusCode::NOT_FOUND, "not-found").await;
    // Not delivered: no return yet.
    let early = step(&shop, &shop.buyer.access, &id, "return", None).await;
    problem(early, StatusCode::CONFLICT, "order-status").await;
    let long = "r".repeat(1001);
    let reason = step(
        &shop,
        &shop.buyer.access,
        &id,
        "return",
        Some(json!({"reason": long})),
    )
    .await;
    assert!(reason.status().is_client_error());
    assert_eq!(ledger(&shop, &id).await, before);

    // The buyer sees the sealed address; an admin sees the order without it.
    let mine = order_of(&shop, &shop.buyer.access, &id).await;
    assert!(
        mine["shipping_address"]["line1"].as_str().is_some(),
        "{mine}"
    );
    assert!(instant(&mine["cancellable_until"]) > Utc::now());
    let admin = order_of(&shop, &shop.admin, &id).await;
    assert!(admin.get("shipping_address").is_none(), "{admin}");

    // The seller sees the order of their product, and nothing personal.
    let rows = eventually("the seller's order row", || async {
        let list: Value = get(&shop, &shop.seller.access, "/v1/seller/orders")
            .await
            .json()
            .await
            .unwrap();
        (list["total"] == 1).then_some(list)
    })
    .await;
    let row = &rows["items"][0];
    let mut keys: Vec<&str> = row
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "amount",
            "currency",
            "order_id",
            "placed_at",
            "product_id",
            "quantity",
            "status"
        ]
    );
    assert_eq!(row["order_id"], id.as_str());
    assert_eq!(row["quantity"], 3);
    let theirs: Value = get(&shop, &shop.other_seller.access, "/v1/seller/orders")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["total"], 0);
    problem(
        get(&shop, &shop.buyer.access, "/v1/seller/orders").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    problem(
        get(&shop, &shop.seller.access, "/v1/seller/orders?status=lost").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;

    let cancelled = step(&shop, &shop.buyer.access, &id, "cancel", None).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["refunds"][0]["cause"], "cancellation");
    // The units are back at once, in the store and in the log.
    wait_for_units(&shop, &variant, 10).await;
    assert_eq!(log_units(&shop, &variant).await, 10);
    until(&shop, &id, "the refund paid back", |v| {
        v["refunds"][0]["state"] == "settled"
    })
    .await;
    let twice = step(&shop, &shop.buyer.access, &id, "cancel", None).await;
    problem(twice, StatusCode::CONFLICT, "order-status").await;
    let total = cancelled["total"].as_i64().unwrap();
    assert_eq!(ledger(&shop, &id).await.map(|l| l.2), Some(total));
    assert_eq!(gateway_refunds(&shop, &id).await, 1);
    assert_eq!(count_events(&shop, "OrderCancelled").await, 1);
    assert_eq!(count_events(&shop, "RefundSettled").await, 1);
    wait_for_units(&shop, &variant, 10).await;
    // The buyer's timeline names who acted without naming any staff member.
    let entries: Vec<Value> = get(
        &shop,
        &shop.buyer.access,
        &format!("/v1/orders/{id}/events"),
    )
    .await
    .json()
    .await
    .unwrap();
    let actors: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["actor"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        actors,
        [
            ("OrderPlaced", "buyer"),
            ("OrderCancelled", "buyer"),
            ("OrderRefunded", "buyer"),
            ("RefundSettled", "system:refunds")
        ]
    );
    assert!(entries[1]["data"].get("by").is_none(), "{}", entries[1]);

    eventually("the seller's row cancelled", || async {
        (seller_rows(&shop, &product, "cancelled").await == 1).then_some(())
    })
    .await;
    assert_eq!(seller_rows(&shop, &product, "prepared").await, 0);
    audit_passes(&shop).await;
}

async fn cancel_and_return_are_refused_once_their_windows_close(backend: Backend) {
    let policy = OrderPolicy {
        cancel_window: secs(1),
        ship_after: secs(3),
        deliver_after: secs(0),
        return_window: secs(1),
        return_pickup_after: secs(3600),
        return_complete_after: secs(3600),
    };
    let shop = shop_with(backend, policy).await;
    let (_, variant, id) = bought(&shop, 10, 1, "windows").await;
    let view = order_of(&shop, &shop.buyer.access, &id).await;
    let cancel_until = instant(&view["cancellable_until"]);
    eventually("the cancel window closed", || async {
        (Utc::now() > cancel_until).then_some(())
    })
    .await;
    let late = step(&shop, &shop.buyer.access, &id, "cancel", None).await;
    let late = problem(late, StatusCode::CONFLICT, "order-window-closed").await;
    assert!(late["detail"].as_str().unwrap().contains("cancel window"));

    let delivered = until(&shop, &id, "the order delivered", |v| {
        v["status"] == "delivered"
    })
    .await;
    let return_until = instant(&delivered["returnable_until"]);
    eventually("the return window closed", || async {
        (Utc::now() > return_until).then_some(())
    })
    .await;
    let late = step(&shop, &shop.buyer.access, &id, "return", None).await;
    problem(late, StatusCode::CONFLICT, "order-window-closed").await;
    let view = order_of(&shop, &shop.buyer.access, &id).await;
    assert_eq!(view["status"], "delivered");
    assert_eq!(view["refunds"], json!([]));
    assert_eq!(count_events(&shop, "OrderRefunded").await, 0);
    wait_for_units(&shop, &variant, 9).await;
    audit_passes(&shop).await;
}

/// The outbox mails a confirmation for an order recorded a moment ago, and none for one
/// recorded over a day ago (a shop whose outbox is new, or rebuilt, mails no past buyer).
async fn a_confirmation_goes_out_for_a_recent_order_and_not_for_an_old_one(backend: Backend) {
    let shop = shop_with(backend, OrderPolicy::default()).await;
    let (recent, old) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let now = openrun_projections::store::database_now(&shop.app.db)
        .await
        .unwrap();
    let detail = json!({"buyer_id": shop.buyer.id, "lines": [], "total": 1000}).to_string();
    let insert = format!(
        "INSERT INTO {} (id, kind, order_id, detail, status, position, recorded_at, next_attempt_at) \
         VALUES (?, 'order_mail', ?, ?, 'pending', ?, ?, 0)",
        openrun_projections::outbox::TABLE
    );
    for (n, (order, at)) in [(recent, now), (old, now - 25 * 3600 * 1_000_000)]
        .into_iter()
        .enumerate()
    {
        openrun::db::with_pool!(&shop.app.db, pool => {
            sqlx::query(&insert)
                .bind(format!("order_mail/{order}"))
                .bind(order.to_string())
                .bind(&detail)
                .bind(1_000_000 + i64::try_from(n).unwrap())
                .bind(at)
                .execute(pool)
                .await
                .unwrap();
        });
    }
    let done = format!(
        "SELECT COUNT(*) FROM {} WHERE status = 'done' AND kind = 'order_mail'",
        openrun_projections::outbox::TABLE
    );
    eventually("both rows worked", || async {
        let n: i64 = openrun::db::with_pool!(&shop.app.db, pool => {
            sqlx::query_scalar(&done).fetch_one(pool).await.unwrap()
        });
        (n == 2).then_some(())
    })
    .await;
    let mails = shop.app.mails();
    assert_eq!(
        mails
            .iter()
            .filter(|m| m.contains(&recent.to_string()))
            .count(),
        1
    );
    assert_eq!(
        mails
            .iter()
            .filter(|m| m.contains(&old.to_string()))
            .count(),
        0
    );
}

/// Twenty orders, each cancelled by its buyer and shipped by the system at the same moment:
/// the stream's version picks one winner, the loser is decided again and refused, and only a
/// cancelled order gives its unit back.
async fn a_cancel_racing_the_shipping_step_has_one_winner(backend: Backend) {
    let policy = OrderPolicy {
        ship_after: secs(1),
        ..OrderPolicy::default()
    };
    let shop = shop_with(backend, policy).await;
    let (product, variant, _) = on_sale(&shop, 50, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    let body = order_body(&product, &variant, 1, &address, "tok_visa");
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(placed(&shop, &shop.buyer, &format!("race-{i}"), &body).await);
    }
    let last = order_of(&shop, &shop.buyer.access, ids.last().unwrap()).await;
    let due = instant(&last["placed_at"]) + secs(1);
    eventually("the shipping step due", || async {
        (Utc::now() >= due).then_some(())
    })
    .await;
    let commands = &shop.app.state.commands;
    let buyer = buyer_actor(&shop);
    let races = futures_util::future::join_all(ids.iter().map(|id| async move {
        let cancel = commands.order(
            id,
            OrderCommand::Cancel { actor: buyer },
            Default::default(),
        );
        let ship = commands.order(
            id,
            OrderCommand::MarkInDelivery {
                issuer: Issuer::System,
            },
            Default::default(),
        );
        let (cancel, ship) = tokio::join!(cancel, ship);
        (id.clone(), cancel, ship)
    }))
    .await;
    let mut cancelled = 0;
    for (id, cancel, ship) in races {
        let cancel_won = cancel.as_ref().is_ok_and(|c| !c.events.is_empty());
        let ship_won = ship.as_ref().is_ok_and(|c| !c.events.is_empty());
        // The scheduler may ship first; then neither racer wins.
        assert!(!(cancel_won && ship_won), "{id}: both won");
        if cancel_won {
            cancelled += 1;
            assert!(
                matches!(
                    ship,
                    Err(openrun::commands::CommandError::Rejected(
                        OrderError::StepNotApplicable {
                            status: OrderStatus::Cancelled,
                            ..
                        }
                    ))
                ),
                "{id}: {ship:?}"
            );
        } else {
            assert!(
                matches!(
                    cancel,
                    Err(openrun::commands::CommandError::Rejected(
                        OrderError::CannotCancel {
                            status: OrderStatus::InDelivery
                        }
                    ))
                ),
                "{id}: {cancel:?}"
            );
        }
        let view = order_of(&shop, &shop.buyer.access, &id).await;
        let expected = if cancel_won {
            "cancelled"
        } else {
            "in_delivery"
        };
        assert_eq!(view["status"], expected, "{id}");
        assert_eq!(
            view["refunds"].as_array().unwrap().len(),
            usize::from(cancel_won)
        );
    }
    assert_eq!(count_events(&shop, "OrderCancelled").await, cancelled);
    assert_eq!(
        count_events(&shop, "OrderShipped").await + cancelled,
        20,
        "every order shipped or cancelled, none both"
    );
    wait_for_units(&shop, &variant, 30 + cancelled).await;
    assert_eq!(log_units(&shop, &variant).await, 30 + cancelled);
    // The outbox pays the refunds of the cancels that won (no handler paid them inline).
    eventually("every refund paid back", || async {
        (count_events(&shop, "RefundSettled").await == cancelled).then_some(())
    })
    .await;
    audit_passes(&shop).await;
}

fn serve(shop: &crate::orders::Processes, name: &str) -> (Serving, std::net::SocketAddr) {
    let (child, addr) = shop.serve(name);
    (Serving(child), addr)
}

/// A scalar of the shop's database behind `processes`.
async fn scalar(db: &openrun::db::Database, sql: &str, bind: &str) -> i64 {
    openrun::db::with_pool!(db, pool => {
        sqlx::query_scalar(sql).bind(bind).fetch_one(pool).await.unwrap()
    })
}

/// Holds the sandbox ledger's row of `order` locked until the transaction is dropped or
/// rolled back: a refund of the order waits for it.
async fn lock_ledger_row(
    db: &openrun::db::Database,
    order: &str,
) -> sqlx::Transaction<'static, sqlx::MySql> {
    let openrun::db::Database::MySql(pool) = db else {
        unreachable!("the processes run on MariaDB")
    };
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("SELECT amount FROM sandbox_charges WHERE order_id = ? FOR UPDATE")
        .bind(order)
        .fetch_one(&mut *lock)
        .await
        .unwrap();
    lock
}

/// A cancel's refund is recorded, and the process is killed before the gateway paid it (the
/// ledger row is locked, so both the inline payment and the outbox wait). Started again, the
/// refund is paid exactly once, and the units are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_recorded_when_the_server_is_killed_is_paid_once_after_the_restart() {
    let shop = crate::orders::Processes::new().await;
    let (mut server, addr) = serve(&shop, "first");
    let buyers = shop.buyers(addr, 1).await;
    let (product, variant) = shop.product(5, None).await;
    shop.selling(addr, product, variant, 5).await;
    let (status, body) = shop
        .order(addr, &buyers[0], "crash", product, variant)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let db = shop.test_db.connect().await;
    let lock = lock_ledger_row(&db, &id).await;
    let cancel = {
        let (client, token, id) = (shop.client.clone(), buyers[0].0.clone(), id.clone());
        tokio::spawn(async move {
            client
                .post(format!("http://{addr}/v1/orders/{id}/cancel"))
                .bearer_auth(token)
                .send()
                .await
        })
    };
    let refunded =
        "SELECT COUNT(*) FROM events WHERE event_type = 'OrderRefunded' AND stream_id = ?";
    eventually("the refund recorded", || async {
        (scalar(&db, refunded, &id).await == 1).then_some(())
    })
    .await;
    server.kill();
    // Whatever the killed process was answering, it never got to pay.
    let _ = cancel.await.unwrap();
    lock.rollback().await.unwrap();
    let paid = "SELECT COUNT(*) FROM sandbox_refunds WHERE order_id = ?";
    let settled =
        "SELECT COUNT(*) FROM events WHERE event_type = 'RefundSettled' AND stream_id = ?";
    assert_eq!(scalar(&db, paid, &id).await, 0);
    assert_eq!(scalar(&db, settled, &id).await, 0);

    let (_again, _) = serve(&shop, "second");
    eventually("the refund paid after the restart", || async {
        (scalar(&db, settled, &id).await == 1).then_some(())
    })
    .await;
    assert_eq!(scalar(&db, paid, &id).await, 1);
    let whole = "SELECT CAST(refunded - amount AS SIGNED) FROM sandbox_charges WHERE order_id = ?";
    assert_eq!(scalar(&db, whole, &id).await, 0);
    let stock = shop.stock().await;
    eventually("the units back", || async {
        use openrun::stock::StockStore;
        (stock.available(&[variant]).await.unwrap()[0] == 5).then_some(())
    })
    .await;
    shop.audit_passes().await;
}

/// Forty refunds recorded at once; the outbox pays them in the log's order and is killed
/// mid-batch, while paying the tenth (its ledger row is locked). Started again, every refund
/// is paid exactly once: the nine paid before the kill not again, the rest once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refund_processor_killed_mid_batch_pays_every_refund_once() {
    use openrun_domain::order::RefundCause;
    let shop = crate::orders::Processes::new().await;
    let (mut server, addr) = serve(&shop, "first");
    let buyers = shop.buyers(addr, 1).await;
    let (product, variant) = shop.product(40, None).await;
    shop.selling(addr, product, variant, 40).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let (status, body) = shop
            .order(addr, &buyers[0], &format!("batch-{i}"), product, variant)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let db = shop.test_db.connect().await;
    let lock = lock_ledger_row(&db, &ids[9]).await;
    // Cancelled beside the server (as an admin would, with no payment inline): the outbox
    // is left to pay all forty.
    let events = openrun::eventstore::open(&db, &Default::default());
    let commands = openrun::commands::Commands::new(Arc::clone(&events), openrun::clock::system());
    let admin = Actor::new(MemberId::from_uuid(uuid::Uuid::now_v7()), Role::Admin);
    for id in &ids {
        commands
            .order(
                id,
                OrderCommand::Cancel { actor: admin },
                Default::default(),
            )
            .await
            .unwrap();
    }
    let settled_all = "SELECT COUNT(*) FROM events WHERE event_type = ? AND stream_type = 'order'";
    eventually("nine refunds paid and the tenth waiting", || async {
        (scalar(&db, settled_all, "RefundSettled").await == 9).then_some(())
    })
    .await;
    server.kill();
    lock.rollback().await.unwrap();
    assert_eq!(scalar(&db, settled_all, "RefundSettled").await, 9);

    let (_again, _) = serve(&shop, "second");
    eventually("every refund paid after the restart", || async {
        (scalar(&db, settled_all, "RefundSettled").await == 40).then_some(())
    })
    .await;
    for (i, id) in ids.iter().enumerate() {
        let paid = "SELECT COUNT(*) FROM sandbox_refunds WHERE order_id = ?";
        assert_eq!(scalar(&db, paid, id).await, 1, "order {i}");
        let refund = openrun_domain::order::refund_id(
            openrun_domain::OrderId::from_uuid(id.parse().unwrap()),
            RefundCause::Cancellation,
        );
        let settled =
            "SELECT COUNT(*) FROM events WHERE event_type = 'RefundSettled' AND stream_id = ?";
        assert_eq!(
            scalar(&db, settled, id).await,
            1,
            "order {i}, refund {refund}"
        );
    }
    let stock = shop.stock().await;
    eventually("every unit back", || async {
        use openrun::stock::StockStore;
        (stock.available(&[variant]).await.unwrap()[0] == 40).then_some(())
    })
    .await;
    shop.audit_passes().await;
    events.shutdown().await;
}
