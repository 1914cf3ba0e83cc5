//! Carts: the `CartStore` contract against Redis and the database (SQLite, MariaDB), with the
//! clock passed in; and over HTTP on both backends: filling a cart, bad input, ordering from
//! it (the hold reads the Redis cart itself), a cart order that sells out, another member's
//! cart, and expiry after 14 days by the injected clock.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use openrun::cart::{CART_TTL, CartLine, CartStore, MAX_LINES, Put};
use openrun_domain::{MemberId, ProductId, VariantId};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, REDIS_URL, TestDb, delete_redis_keys, on_both_backends, random_name,
};
use crate::orders::{address_of, on_sale, problem, wait_for_units};
use crate::products::Shop;

enum Kind {
    Redis,
    Sql(Backend),
}

struct Fixture {
    store: Arc<dyn CartStore>,
    prefix: Option<String>,
    _db: Option<TestDb>,
}

impl Fixture {
    async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Redis => {
                let prefix = format!("{}:", random_name("openrun_test_"));
                let conn = openrun::redis::connect(REDIS_URL).await.unwrap();
                Self {
                    store: Arc::new(openrun::cart::redis::RedisCartStore::new(conn, &prefix)),
                    prefix: Some(prefix),
                    _db: None,
                }
            }
            Kind::Sql(backend) => {
                let test_db = TestDb::new(backend).await;
                let db = test_db.connect().await;
                openrun::db::migrate(&db).await.unwrap();
                Self {
                    store: Arc::new(openrun::cart::sql::SqlCartStore::new(db)),
                    prefix: None,
                    _db: Some(test_db),
                }
            }
        }
    }

    async fn cleanup(self) {
        if let Some(prefix) = self.prefix {
            delete_redis_keys(&prefix).await;
        }
    }
}

macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod store_redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let f = super::Fixture::new(super::Kind::Redis).await;
                    super::$name(&*f.store).await;
                    f.cleanup().await;
                }
            )*
        }
        mod store_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let f = super::Fixture::new(super::Kind::Sql(crate::helpers::Backend::Sqlite)).await;
                    super::$name(&*f.store).await;
                    f.cleanup().await;
                }
            )*
        }
        mod store_mysql {
            $(
                #[tokio::test]
                async fn $name() {
                    let f = super::Fixture::new(super::Kind::Sql(crate::helpers::Backend::MySql)).await;
                    super::$name(&*f.store).await;
                    f.cleanup().await;
                }
            )*
        }
    };
}

on_every_store!(
    a_cart_keeps_its_lines_in_order_and_replaces_a_quantity,
    a_cart_holds_at_most_fifty_lines,
    a_cart_expires_fourteen_days_after_its_last_change,
    members_have_carts_of_their_own,
    a_claim_takes_every_line_or_none,
);

fn member(n: u128) -> MemberId {
    MemberId::from_uuid(uuid::Uuid::from_u128(0xc0 + n))
}

fn line(n: u128, quantity: u32) -> CartLine {
    CartLine {
        product_id: ProductId::from_uuid(uuid::Uuid::from_u128(0x1000 + n / 3)),
        variant_id: VariantId::from_uuid(uuid::Uuid::from_u128(0x2000 + n)),
        quantity,
    }
}

fn at(minute: i64) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap() + Duration::minutes(minute)
}

async fn a_cart_keeps_its_lines_in_order_and_replaces_a_quantity(store: &dyn CartStore) {
    let m = member(1);
    assert_eq!(store.lines(m, at(0)).await.unwrap(), vec![]);
    for (i, n) in [5u128, 1, 3].into_iter().enumerate() {
        let put = store
            .put(m, line(n, 2), at(i64::try_from(i).unwrap()))
            .await;
        assert_eq!(put.unwrap(), Put::Done);
    }
    assert_eq!(store.put(m, line(1, 7), at(4)).await.unwrap(), Put::Done);
    assert_eq!(
        store.lines(m, at(5)).await.unwrap(),
        vec![line(5, 2), line(1, 7), line(3, 2)]
    );
    store
        .remove(m, &[line(1, 0).variant_id, line(9, 0).variant_id], at(6))
        .await
        .unwrap();
    assert_eq!(
        store.lines(m, at(7)).await.unwrap(),
        vec![line(5, 2), line(3, 2)]
    );
    store
        .remove(m, &[line(5, 0).variant_id, line(3, 0).variant_id], at(8))
        .await
        .unwrap();
    assert_eq!(store.lines(m, at(9)).await.unwrap(), vec![]);
}

async fn a_cart_holds_at_most_fifty_lines(store: &dyn CartStore) {
    let m = member(2);
    for n in 0..MAX_LINES as u128 {
        assert_eq!(store.put(m, line(n, 1), at(0)).await.unwrap(), Put::Done);
    }
    assert_eq!(store.put(m, line(999, 1), at(1)).await.unwrap(), Put::Full);
    // A line already there still changes.
    assert_eq!(store.put(m, line(0, 9), at(1)).await.unwrap(), Put::Done);
    let lines = store.lines(m, at(2)).await.unwrap();
    assert_eq!(lines.len(), MAX_LINES);
    assert_eq!(lines[0], line(0, 9));
    store
        .remove(m, &[line(7, 0).variant_id], at(3))
        .await
        .unwrap();
    assert_eq!(store.put(m, line(999, 1), at(4)).await.unwrap(), Put::Done);
}

async fn a_cart_expires_fourteen_days_after_its_last_change(store: &dyn CartStore) {
    let m = member(3);
    store.put(m, line(1, 1), at(0)).await.unwrap();
    store.put(m, line(2, 1), at(10)).await.unwrap();
    let last = at(10);
    let almost = last + CART_TTL - Duration::milliseconds(1);
    assert_eq!(store.lines(m, almost).await.unwrap().len(), 2);
    assert_eq!(store.lines(m, last + CART_TTL).await.unwrap(), vec![]);
    // A change restarts the fourteen days; an expired cart starts empty again.
    let later = last + CART_TTL + Duration::days(1);
    store.put(m, line(3, 4), later).await.unwrap();
    assert_eq!(store.lines(m, later).await.unwrap(), vec![line(3, 4)]);
    assert_eq!(
        store
            .lines(m, later + CART_TTL - Duration::seconds(1))
            .await
            .unwrap(),
        vec![line(3, 4)]
    );
}

async fn members_have_carts_of_their_own(store: &dyn CartStore) {
    store.put(member(4), line(1, 1), at(0)).await.unwrap();
    store.put(member(5), line(2, 2), at(0)).await.unwrap();
    store
        .remove(member(5), &[line(1, 0).variant_id], at(1))
        .await
        .unwrap();
    assert_eq!(
        store.lines(member(4), at(2)).await.unwrap(),
        vec![line(1, 1)]
    );
    assert_eq!(
        store.lines(member(5), at(2)).await.unwrap(),
        vec![line(2, 2)]
    );
}

/// An order takes its lines out of the cart all at once, only as they are, or none.
async fn a_claim_takes_every_line_or_none(store: &dyn CartStore) {
    let m = member(6);
    store.put(m, line(1, 2), at(0)).await.unwrap();
    store.put(m, line(2, 1), at(0)).await.unwrap();
    store.put(m, line(3, 1), at(0)).await.unwrap();
    // The second changed to 3 since it was read: nothing is taken.
    store.put(m, line(2, 3), at(1)).await.unwrap();
    assert!(
        !store
            .claim(m, &[line(1, 2), line(2, 1)], at(2))
            .await
            .unwrap()
    );
    assert_eq!(store.lines(m, at(2)).await.unwrap().len(), 3);
    assert!(
        store
            .claim(m, &[line(1, 2), line(2, 3)], at(3))
            .await
            .unwrap()
    );
    assert_eq!(store.lines(m, at(3)).await.unwrap(), vec![line(3, 1)]);
    // Taken already: a second order of the same lines finds none.
    assert!(!store.claim(m, &[line(1, 2)], at(4)).await.unwrap());
    assert!(
        !store
            .claim(m, &[line(3, 1)], at(4) + CART_TTL)
            .await
            .unwrap()
    );
}

on_both_backends!(
    one_cart_line_sent_as_many_orders_at_once_is_ordered_once,
    a_member_fills_the_cart_and_orders_from_it,
    a_cart_order_that_sells_out_leaves_the_cart_as_it_was,
    a_cart_expires_by_the_injected_clock,
);

async fn cart(shop: &Shop, token: &str) -> Value {
    let answer = shop
        .send(Method::GET, "/v1/cart", Some(token), None, &[])
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    answer.json().await.unwrap()
}

async fn put(shop: &Shop, token: &str, variant: &str, body: Value) -> reqwest::Response {
    shop.send(
        Method::PUT,
        &format!("/v1/cart/items/{variant}"),
        Some(token),
        Some(body),
        &[],
    )
    .await
}

fn cart_order(variants: &[&str], address: &str) -> Value {
    json!({
        "cart_variant_ids": variants,
        "address_id": address,
        "payment": {"method": "sandbox", "token": "tok_visa"},
    })
}

async fn order(shop: &Shop, token: &str, key: &str, body: &Value) -> reqwest::Response {
    shop.send(
        Method::POST,
        "/v1/orders",
        Some(token),
        Some(body.clone()),
        &[("idempotency-key", key)],
    )
    .await
}

async fn a_member_fills_the_cart_and_orders_from_it(backend: Backend) {
    let shop = Shop::open(backend).await;
    let (product, variant, other) = on_sale(&shop, 10, None).await;
    let buyer = &shop.buyer.access;
    let filled = put(&shop, buyer, &variant, json!({"quantity": 3})).await;
    assert_eq!(filled.status(), StatusCode::OK);
    let view: Value = filled.json().await.unwrap();
    assert_eq!(view["items"][0]["quantity"], 3);
    assert_eq!(view["items"][0]["product_id"], product.as_str());
    assert_eq!(view["items"][0]["orderable"], true);
    let price = view["items"][0]["unit_price"].as_i64().unwrap();
    assert_eq!(view["total"], 3 * price);
    // The second size has no stock: in the cart, sold out, not counted.
    let sold_out = put(&shop, buyer, &other, json!({"quantity": 1})).await;
    assert_eq!(sold_out.status(), StatusCode::OK);
    let view: Value = sold_out.json().await.unwrap();
    assert_eq!(view["items"][1]["sold_out"], true);
    assert_eq!(view["items"][1]["orderable"], false);
    assert_eq!(view["total"], 3 * price);

    // Bad input changes nothing.
    for quantity in [json!(0), json!(100), json!(-1), json!("3")] {
        let refused = put(&shop, buyer, &variant, json!({ "quantity": quantity })).await;
        assert!(refused.status().is_client_error(), "{quantity}");
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    problem(
        put(&shop, buyer, &unknown, json!({"quantity": 1})).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    problem(
        put(&shop, buyer, "not-a-uuid", json!({"quantity": 1})).await,
        StatusCode::BAD_REQUEST,
        "invalid-path",
    )
    .await;
    let view = cart(&shop, buyer).await;
    assert_eq!(view["items"].as_array().unwrap().len(), 2);
    assert_eq!(view["items"][0]["quantity"], 3);

    // Another member's cart is their own: nothing of this one shows or changes.
    let stranger = &shop.other_seller.access;
    assert_eq!(cart(&shop, stranger).await["items"], json!([]));
    let gone = shop
        .send(
            Method::DELETE,
            &format!("/v1/cart/items/{variant}"),
            Some(stranger),
            None,
            &[],
        )
        .await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    assert_eq!(cart(&shop, buyer).await["items"][0]["quantity"], 3);
    let address = address_of(&shop, &shop.buyer).await;
    problem(
        order(
            &shop,
            stranger,
            "theirs",
            &cart_order(&[&variant], &address),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;

    // Neither or both of lines and cart variants: refused.
    let both = json!({
        "lines": [{"product_id": product, "variant_id": variant, "quantity": 1}],
        "cart_variant_ids": [variant],
        "address_id": address,
        "payment": {"method": "sandbox", "token": "tok_visa"},
    });
    problem(
        order(&shop, buyer, "both", &both).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
    let not_in_cart = uuid::Uuid::now_v7().to_string();
    let refused = problem(
        order(
            &shop,
            buyer,
            "absent",
            &cart_order(&[&not_in_cart], &address),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
    assert_eq!(
        refused["errors"][0]["field"], "cart_variant_ids[0]",
        "{refused}"
    );

    let body = cart_order(&[&variant], &address);
    let placed = order(&shop, buyer, "from-cart", &body).await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    let placed: Value = placed.json().await.unwrap();
    assert_eq!(placed["lines"][0]["quantity"], 3);
    assert_eq!(placed["total"], 3 * price);
    wait_for_units(&shop, &variant, 7).await;
    // The ordered line left the cart; the other stays.
    let view = cart(&shop, buyer).await;
    assert_eq!(view["items"].as_array().unwrap().len(), 1);
    assert_eq!(view["items"][0]["variant_id"], other.as_str());
    // A retry gets the same order, though the line is no longer in the cart.
    let again = order(&shop, buyer, "from-cart", &body).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], placed["id"]);
    wait_for_units(&shop, &variant, 7).await;
    crate::orders::audit_passes(&shop).await;
}

async fn a_cart_order_that_sells_out_leaves_the_cart_as_it_was(backend: Backend) {
    let shop = Shop::open(backend).await;
    let (_, variant, _) = on_sale(&shop, 2, None).await;
    let buyer = &shop.buyer.access;
    assert_eq!(
        put(&shop, buyer, &variant, json!({"quantity": 3}))
            .await
            .status(),
        StatusCode::OK
    );
    let address = address_of(&shop, &shop.buyer).await;
    let refused = order(&shop, buyer, "too-many", &cart_order(&[&variant], &address)).await;
    let refused = problem(refused, StatusCode::CONFLICT, "sold-out").await;
    assert_eq!(refused["sold_out"][0]["available"], 2);
    let view = cart(&shop, buyer).await;
    assert_eq!(view["items"].as_array().unwrap().len(), 1);
    assert_eq!(view["items"][0]["quantity"], 3);
    wait_for_units(&shop, &variant, 2).await;
    assert_eq!(crate::orders::count_events(&shop, "OrderPlaced").await, 0);
}

async fn a_cart_expires_by_the_injected_clock(backend: Backend) {
    let clock = openrun::clock::ManualClock::new(Utc::now());
    let app =
        crate::helpers::TestApp::spawn_with_clock(backend, |_| {}, Arc::new(clock.clone())).await;
    let shop = Shop::on(app).await;
    let (_, variant, _) = on_sale(&shop, 5, None).await;
    assert_eq!(
        put(&shop, &shop.buyer.access, &variant, json!({"quantity": 1}))
            .await
            .status(),
        StatusCode::OK
    );
    clock.advance(CART_TTL - Duration::seconds(1));
    // Signed in again: the access token of fourteen days ago has expired.
    let buyer = crate::members::login(
        &shop.app,
        &shop.buyer.login_id,
        crate::members::PASSWORD,
        "later",
    )
    .await;
    assert_eq!(
        cart(&shop, &buyer.access).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    clock.advance(Duration::seconds(2));
    assert_eq!(cart(&shop, &buyer.access).await["items"], json!([]));
    let address = address_of(&shop, &buyer).await;
    // The live catalog measures its lag on the same clock: it catches up with the jump.
    crate::helpers::eventually("the live catalog fresh again", || async {
        shop.app.state.catalog.is_fresh().then_some(())
    })
    .await;
    problem(
        order(
            &shop,
            &buyer.access,
            "expired",
            &cart_order(&[&variant], &address),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
}

/// Eight orders of one cart line at once, each with its own key (a double click, a retry
/// after a timeout): one is placed, with the cart's quantity; the others find the line gone.
/// A declined card puts the line back.
async fn one_cart_line_sent_as_many_orders_at_once_is_ordered_once(backend: Backend) {
    let shop = Shop::open(backend).await;
    let (_, variant, _) = on_sale(&shop, 50, None).await;
    let buyer = &shop.buyer.access;
    let address = address_of(&shop, &shop.buyer).await;
    assert_eq!(
        put(&shop, buyer, &variant, json!({"quantity": 2}))
            .await
            .status(),
        StatusCode::OK
    );
    let declined = json!({
        "cart_variant_ids": [variant],
        "address_id": address,
        "payment": {"method": "sandbox", "token": "tok_declined"},
    });
    let answer = order(&shop, buyer, "declined", &declined).await;
    problem(answer, StatusCode::PAYMENT_REQUIRED, "payment-declined").await;
    crate::helpers::eventually("the declined order's line back in the cart", || async {
        (cart(&shop, buyer).await["items"][0]["quantity"] == 2).then_some(())
    })
    .await;
    let body = cart_order(&[&variant], &address);
    let answers = futures_util::future::join_all((0..8).map(|i| {
        let (shop, body) = (&shop, &body);
        async move {
            order(shop, buyer, &format!("click-{i}"), body)
                .await
                .status()
        }
    }))
    .await;
    let placed = answers
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = answers
        .iter()
        .filter(|s| **s == StatusCode::UNPROCESSABLE_ENTITY)
        .count();
    assert_eq!((placed, refused), (1, 7), "{answers:?}");
    wait_for_units(&shop, &variant, 48).await;
    assert_eq!(cart(&shop, buyer).await["items"], json!([]));
    crate::orders::audit_passes(&shop).await;
}
