//! Placing orders over HTTP on both backends (SQLite with the in-process stock store, MariaDB
//! with Redis): the answer and its retries, sell-out under concurrency, the log as the last
//! guard, payments declined or failing, and bad input that holds and charges nothing.

use std::sync::Arc;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, eventually, on_both_backends};
use crate::members::{Member, verified_member};
use crate::products::Shop;

on_both_backends!(
    a_buyer_places_an_order_reads_it_and_a_retry_gets_the_same_answer,
    concurrent_orders_sell_exactly_the_units_there_are,
    bad_input_is_refused_and_holds_or_charges_nothing,
    a_declined_card_is_recorded_and_a_failing_gateway_keeps_the_hold_for_a_retry,
    the_log_refuses_an_oversell_the_stock_store_let_through,
    an_order_needs_the_product_on_sale_and_within_its_purchase_limit,
    what_a_crash_leaves_between_charge_and_append_is_swept_and_refunded_once,
    orders_are_rate_limited_per_member,
    a_lost_commit_or_a_lost_answer_still_lands_the_retry_on_the_order,
    a_retry_after_the_sale_ended_or_the_address_went_still_gets_its_order,
    two_thousand_buyers_sell_out_four_products_of_a_hundred_exactly,
    twenty_small_drops_in_a_row_never_oversell,
    one_key_sent_fifty_times_at_once_places_one_order_and_charges_once,
    a_downward_adjustment_never_takes_units_an_order_holds,
    the_address_comes_from_the_mirror_and_follows_every_change,
    orders_are_rate_limited_per_client_address,
    a_buyer_s_orders_are_listed_newest_first_in_pages,
);

/// A shop whose buyers may send many orders a minute (the tests burst from one member, or
/// from thousands of members on one client address).
async fn open(backend: Backend) -> Shop {
    Shop::on(
        crate::helpers::TestApp::spawn_with(backend, |c| {
            c.auth.rate_limits.orders_per_member_per_minute = 100_000.try_into().unwrap();
            c.auth.rate_limits.orders_per_address_per_minute = 1_000_000.try_into().unwrap();
        })
        .await,
    )
    .await
}

/// A buyer made beside the server: a verified member with one address and a session.
#[derive(Clone)]
struct Buyer {
    access: String,
    address: String,
}

/// `n` verified members, each with an address and signed in, made through the services
/// rather than sign-up and login (a password hash each would take minutes for thousands);
/// their password is unusable.
async fn buyers(shop: &Shop, n: usize) -> Vec<Buyer> {
    use futures_util::StreamExt;
    let state = &shop.app.state;
    futures_util::stream::iter(0..n)
        .map(|i| async move {
            let id = uuid::Uuid::now_v7().to_string();
            let row = openrun::members::repository::MemberRow {
                id: id.clone(),
                login_id: format!("drop{i}_{}", &id[24..]),
                password_hash: "!".into(),
                role: "basic".into(),
                name_enc: "-".into(),
                email_enc: "-".into(),
                email_bidx: format!("bidx-{id}"),
                phone_enc: None,
                phone_bidx: None,
                created_at: Utc::now(),
            };
            openrun::members::repository::insert_member(&shop.app.db, &row, None)
                .await
                .unwrap();
            let address = state
                .members
                .add_address(
                    &id,
                    openrun::members::service::AddressInput {
                        line1: "서울시 강남구 테헤란로 1".into(),
                        line2: format!("{i}호"),
                        postal_code: None,
                        is_default: None,
                    },
                )
                .await
                .unwrap();
            let pair = state
                .auth
                .open_session(&id, openrun_domain::Role::Basic, Some("drop"))
                .await
                .unwrap();
            Buyer {
                access: pair.access_token,
                address: address.id,
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Every buyer sends one order of one unit of `products[i % len]`'s variant at once; the
/// answers by product: `(placed ids, sold-out refusals)`.
async fn burst(
    shop: &Shop,
    buyers: &[Buyer],
    products: &[(String, String)],
    round: usize,
) -> Vec<(Vec<String>, usize)> {
    let answers: Vec<_> =
        futures_util::future::join_all(buyers.iter().enumerate().map(|(i, buyer)| {
            let (product, variant) = &products[i % products.len()];
            let body = order_body(product, variant, 1, &buyer.address, "tok_visa");
            async move {
                let answer = shop
                    .app
                    .client
                    .post(shop.app.url("/v1/orders"))
                    .bearer_auth(&buyer.access)
                    .header("idempotency-key", format!("drop-{round}"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = answer.status();
                (
                    i % products.len(),
                    status,
                    answer.json::<Value>().await.unwrap(),
                )
            }
        }))
        .await;
    let mut by_product = vec![(Vec::new(), 0); products.len()];
    for (p, status, body) in answers {
        match status {
            StatusCode::CREATED => by_product[p]
                .0
                .push(body["id"].as_str().unwrap().to_owned()),
            StatusCode::CONFLICT if body["type"] == "/problems/sold-out" => {
                assert_eq!(body["sold_out"][0]["available"], 0, "{body}");
                assert_eq!(body["sold_out"][0]["product_id"], products[p].0.as_str());
                assert_eq!(body["sold_out"][0]["variant_id"], products[p].1.as_str());
                by_product[p].1 += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    by_product
}

/// The sandbox ledger's row of `order`: `(charge calls, amount, refunded)`.
pub(crate) async fn ledger(shop: &Shop, order: &str) -> Option<(i64, i64, i64)> {
    let sql =
        "SELECT CAST(calls AS SIGNED), amount, refunded FROM sandbox_charges WHERE order_id = ?";
    openrun::db::with_pool!(&shop.app.db, pool => {
        sqlx::query_as(sql).bind(order).fetch_optional(pool).await.unwrap()
    })
}

/// How many events of `event_type` the log holds.
pub(crate) async fn count_events(shop: &Shop, event_type: &str) -> i64 {
    let sql = "SELECT COUNT(*) FROM events WHERE event_type = ?";
    openrun::db::with_pool!(&shop.app.db, pool => {
        sqlx::query_scalar(sql).bind(event_type).fetch_one(pool).await.unwrap()
    })
}

/// After a drop: each placed order in the log, every counter at zero, the stock store's
/// refusals alone kept the sale within its supply (the log refused nothing), the audit passes.
async fn sold_exactly(shop: &Shop, variants: &[&str], placed: &[String]) {
    for id in placed {
        assert_eq!(stream_types(shop, id).await, ["OrderPlaced"], "{id}");
    }
    for variant in variants {
        let counter = openrun::commands::units_counter(variant);
        let values = shop.app.events.counters(&[counter.as_str()]).await.unwrap();
        assert_eq!(
            values.get(&counter),
            Some(&0),
            "the log's units of {variant}"
        );
        wait_for_units(shop, variant, 0).await;
    }
    assert_eq!(
        count_events(shop, "OrderVoided").await,
        0,
        "the stock store let through more than there was"
    );
    audit_passes(shop).await;
}

/// A product on sale with `units` of its first size (and none of the second).
pub(crate) async fn on_sale(
    shop: &Shop,
    units: i64,
    limit: Option<u32>,
) -> (String, String, String) {
    let made = shop
        .send(
            Method::POST,
            "/v1/products",
            Some(&shop.seller.access),
            Some(
                json!({"category_id": shop.category, "name": "Jordan 1 Chicago",
                "price": 219000, "variants": ["270", "280"], "purchase_limit": limit}),
            ),
            &[],
        )
        .await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let made: Value = made.json().await.unwrap();
    let product = made["product_id"].as_str().unwrap().to_owned();
    let variant = made["variants"][0]["variant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = made["variants"][1]["variant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    if units > 0 {
        let added = shop
            .send(
                Method::POST,
                &format!("/v1/products/{product}/variants/{variant}/stock"),
                Some(&shop.seller.access),
                Some(json!({"add": units})),
                &[("idempotency-key", "supply")],
            )
            .await;
        assert_eq!(added.status(), StatusCode::OK);
    }
    for to in ["waiting", "on_sale"] {
        shop.status(
            &json!({"product_id": product}),
            to,
            &shop.seller.access,
            StatusCode::OK,
        )
        .await;
    }
    wait_for_units(shop, &variant, units).await;
    (product, variant, other)
}

/// Waits until the stock store has `units` of `variant` left.
pub(crate) async fn wait_for_units(shop: &Shop, variant: &str, units: i64) {
    let id = variant_id(variant);
    eventually(
        &format!("{units} units of {variant} in the stock store"),
        || async {
            (shop.app.state.stock.available(&[id]).await.unwrap()[0] == units).then_some(())
        },
    )
    .await;
}

/// `openrun audit` over the shop's log and ledger: every check passes.
pub(crate) async fn audit_passes(shop: &Shop) {
    let stock = shop.app.state.stock.as_ref();
    let checks = openrun::ops::audit(
        &shop.app.db,
        shop.app.events.as_ref(),
        Some(stock),
        std::time::Duration::from_secs(600),
    )
    .await
    .unwrap();
    let failed: Vec<_> = checks.iter().filter(|c| !c.violations.is_empty()).collect();
    assert!(failed.is_empty(), "the audit failed: {failed:?}");
    assert!(checks.iter().any(|c| c.name.contains("beyond its supply")));
    assert!(checks.iter().any(|c| c.name.contains("stock store")));
}

/// Waits until the counter projector has applied the log up to its head.
pub(crate) async fn wait_for_projector(shop: &Shop) {
    let head = shop.app.events.head_position().await.unwrap();
    eventually(&format!("the counter projector at {head}"), || async {
        matches!(
            shop.app.state.stock.state().await.unwrap(),
            openrun::stock::StoreState::Ready { watermark, .. } if watermark >= head
        )
        .then_some(())
    })
    .await;
}

pub(crate) async fn address_of(shop: &Shop, member: &Member) -> String {
    let list: Value = shop
        .send(
            Method::GET,
            "/v1/members/me/addresses",
            Some(&member.access),
            None,
            &[],
        )
        .await
        .json()
        .await
        .unwrap();
    list["items"][0]["id"]
        .as_str()
        .or_else(|| list[0]["id"].as_str())
        .expect("the member has an address")
        .to_owned()
}

pub(crate) fn order_body(
    product: &str,
    variant: &str,
    quantity: i64,
    address: &str,
    token: &str,
) -> Value {
    json!({
        "lines": [{"product_id": product, "variant_id": variant, "quantity": quantity}],
        "address_id": address,
        "payment": {"method": "sandbox", "token": token},
    })
}

pub(crate) async fn place(
    shop: &Shop,
    member: &Member,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    shop.send(
        Method::POST,
        "/v1/orders",
        Some(&member.access),
        Some(body.clone()),
        &[("idempotency-key", key)],
    )
    .await
}

/// Places an order that must be placed (201); its id.
pub(crate) async fn placed(shop: &Shop, member: &Member, key: &str, body: &Value) -> String {
    let answer = place(shop, member, key, body).await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    answer.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) async fn problem(response: reqwest::Response, status: StatusCode, kind: &str) -> Value {
    let got = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(got, status, "{body}");
    assert_eq!(body["type"], format!("/problems/{kind}"), "{body}");
    body
}

/// Events of the order stream `id`, by type.
async fn stream_types(shop: &Shop, id: &str) -> Vec<String> {
    shop.app
        .events
        .read_stream(&openrun::eventstore::StreamRef::new("order", id), 1, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

async fn a_buyer_places_an_order_reads_it_and_a_retry_gets_the_same_answer(backend: Backend) {
    let shop = open(backend).await;
    let (product, variant, _) = on_sale(&shop, 10, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    let body = order_body(&product, &variant, 2, &address, "tok_visa");
    let placed = place(&shop, &shop.buyer, "order-1", &body).await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    assert!(placed.headers().get("idempotent-replayed").is_none());
    let view: Value = placed.json().await.unwrap();
    assert_eq!(view["status"], "prepared");
    assert_eq!(view["total"], 438000);
    assert_eq!(view["currency"], "KRW");
    assert_eq!(view["lines"][0]["unit_price"], 219000);
    assert_eq!(view["lines"][0]["variant_id"], variant.as_str());
    let id = view["id"].as_str().unwrap().to_owned();
    // The same key and body: the same answer, nothing more held or charged.
    let again = place(&shop, &shop.buyer, "order-1", &body).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["id"], id.as_str());
    // The same key, another body: refused, nothing held.
    let other = order_body(&product, &variant, 1, &address, "tok_visa");
    problem(
        place(&shop, &shop.buyer, "order-1", &other).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    )
    .await;
    assert_eq!(stream_types(&shop, &id).await, ["OrderPlaced"]);
    wait_for_units(&shop, &variant, 8).await;
    // Its buyer reads it; another member does not find it.
    let read = shop
        .send(
            Method::GET,
            &format!("/v1/orders/{id}"),
            Some(&shop.buyer.access),
            None,
            &[],
        )
        .await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.json::<Value>().await.unwrap()["total"], 438000);
    let stranger = verified_member(&shop.app, 104).await;
    problem(
        shop.send(
            Method::GET,
            &format!("/v1/orders/{id}"),
            Some(&stranger.access),
            None,
            &[],
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    // Their list shows it once the order summaries follow the log; the stranger's is empty.
    let list = eventually("the order in its buyer's list", || async {
        let list: Value = shop
            .send(
                Method::GET,
                "/v1/orders?size=10",
                Some(&shop.buyer.access),
                None,
                &[],
            )
            .await
            .json()
            .await
            .unwrap();
        (list["total"] == 1).then_some(list)
    })
    .await;
    assert_eq!(list["items"][0]["id"], id.as_str(), "{list}");
    assert_eq!(list["items"][0]["status"], "prepared");
    assert_eq!(list["items"][0]["total"], 438000);
    let theirs: Value = shop
        .send(Method::GET, "/v1/orders", Some(&stranger.access), None, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["total"], 0);
    for bad in ["size=0", "size=1000", "page=0", "page=x"] {
        let refused = shop
            .send(
                Method::GET,
                &format!("/v1/orders?{bad}"),
                Some(&shop.buyer.access),
                None,
                &[],
            )
            .await;
        assert!(refused.status().is_client_error(), "{bad}");
    }
    // The seller's stock view counts the units sold.
    let stock: Value = shop
        .send(
            Method::GET,
            &format!("/v1/products/{product}/stock"),
            Some(&shop.seller.access),
            None,
            &[],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stock["items"][0]["sold"], 2);
    assert_eq!(stock["items"][0]["available"], 8);
    // The log's guarded counter agrees.
    let counter = openrun::commands::units_counter(&variant);
    let values = shop.app.events.counters(&[counter.as_str()]).await.unwrap();
    assert_eq!(values.get(&counter), Some(&8));
}

/// The old system's race, at scale: 2,000 distinct members over real HTTP at once against
/// four products of 100 units: exactly 400 orders, 100 of each, every other buyer told sold
/// out.
async fn two_thousand_buyers_sell_out_four_products_of_a_hundred_exactly(backend: Backend) {
    let shop = open(backend).await;
    let mut products = Vec::new();
    for _ in 0..4 {
        let (product, variant, _) = on_sale(&shop, 100, None).await;
        products.push((product, variant));
    }
    let buyers = buyers(&shop, 2000).await;
    let answers = burst(&shop, &buyers, &products, 0).await;
    let mut placed = Vec::new();
    for (ids, sold_out) in answers {
        assert_eq!((ids.len(), sold_out), (100, 400));
        placed.extend(ids);
    }
    let variants: Vec<&str> = products.iter().map(|(_, v)| v.as_str()).collect();
    sold_exactly(&shop, &variants, &placed).await;
}

/// Twenty drops one after another, each of 10 units for 40 buyers at once: never one unit
/// more.
async fn twenty_small_drops_in_a_row_never_oversell(backend: Backend) {
    let shop = open(backend).await;
    let buyers = buyers(&shop, 40).await;
    for round in 0..20 {
        let (product, variant, _) = on_sale(&shop, 10, None).await;
        let answers = burst(&shop, &buyers, &[(product, variant.clone())], round).await;
        let (placed, sold_out) = &answers[0];
        assert_eq!((placed.len(), *sold_out), (10, 30), "round {round}");
        sold_exactly(&shop, &[variant.as_str()], placed).await;
    }
}

/// A client that sends one request 50 times at once (a double click, a retrying proxy): one
/// order, one charge call, nothing refunded; each answer is the order or "in flight".
async fn one_key_sent_fifty_times_at_once_places_one_order_and_charges_once(backend: Backend) {
    let shop = open(backend).await;
    let (product, variant, _) = on_sale(&shop, 10, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    let body = order_body(&product, &variant, 2, &address, "tok_visa");
    let answers = futures_util::future::join_all((0..50).map(|_| async {
        let answer = place(&shop, &shop.buyer, "double-click", &body).await;
        let status = answer.status();
        (status, answer.json::<Value>().await.unwrap())
    }))
    .await;
    let id = openrun::orders::Orders::order_id(
        openrun_domain::MemberId::from_uuid(shop.buyer.id.parse().unwrap()),
        "double-click",
    )
    .to_string();
    let mut placed = 0;
    for (status, body) in answers {
        match status {
            StatusCode::CREATED => {
                assert_eq!(body["id"], id.as_str());
                placed += 1;
            }
            StatusCode::CONFLICT => assert_eq!(body["type"], "/problems/order-in-flight", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert!(placed >= 1);
    assert_eq!(stream_types(&shop, &id).await, ["OrderPlaced"]);
    assert_eq!(
        ledger(&shop, &id).await,
        Some((1, 438_000, 0)),
        "one charge call"
    );
    wait_for_units(&shop, &variant, 8).await;
    let again = place(&shop, &shop.buyer, "double-click", &body).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(ledger(&shop, &id).await, Some((1, 438_000, 0)));
    audit_passes(&shop).await;
}

/// A seller taking units out of a drop while an order holds some: the adjustment holds what
/// it takes as an order would, so it cannot take what the order holds (the log alone would
/// let it, and the order would then be refused and refunded after its charge).
async fn a_downward_adjustment_never_takes_units_an_order_holds(backend: Backend) {
    let shop = open(backend).await;
    let (product, variant, _) = on_sale(&shop, 10, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    // The gateway does not answer: the order keeps its hold of 2 for its retry.
    let waiting = order_body(&product, &variant, 2, &address, "tok_gateway_error");
    problem(
        place(&shop, &shop.buyer, "waiting", &waiting).await,
        StatusCode::BAD_GATEWAY,
        "payment-gateway",
    )
    .await;
    wait_for_units(&shop, &variant, 8).await;
    let adjust = async |delta: i64, key: &str| {
        shop.send(
            Method::POST,
            &format!("/v1/products/{product}/variants/{variant}/stock"),
            Some(&shop.seller.access),
            Some(json!({"adjust": delta, "reason": "damaged in the warehouse"})),
            &[("idempotency-key", key)],
        )
        .await
    };
    let refused = problem(
        adjust(-9, "take-9").await,
        StatusCode::CONFLICT,
        "supply-conflict",
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains('8'),
        "{refused}"
    );
    let units = openrun::commands::units_counter(&variant);
    let counted = async || {
        let values = shop.app.events.counters(&[units.as_str()]).await.unwrap();
        values.get(&units).copied()
    };
    assert_eq!(counted().await, Some(10), "nothing written");
    assert_eq!(adjust(-8, "take-8").await.status(), StatusCode::OK);
    // Applied by the counter projector, the change counts once: none left, the order's 2
    // still held.
    wait_for_projector(&shop).await;
    wait_for_units(&shop, &variant, 0).await;
    assert_eq!(counted().await, Some(2));
    // Its retry with the same key is the same answer, and takes nothing more.
    assert_eq!(adjust(-8, "take-8").await.status(), StatusCode::OK);
    wait_for_units(&shop, &variant, 0).await;
    assert_eq!(counted().await, Some(2));
    // Another seller holds nothing and learns nothing (the order's 2 come back first).
    let bought_back = shop
        .send(
            Method::POST,
            &format!("/v1/products/{product}/variants/{variant}/stock"),
            Some(&shop.seller.access),
            Some(json!({"add": 10})),
            &[("idempotency-key", "more")],
        )
        .await;
    assert_eq!(bought_back.status(), StatusCode::OK);
    wait_for_units(&shop, &variant, 10).await;
    let stranger = shop
        .send(
            Method::POST,
            &format!("/v1/products/{product}/variants/{variant}/stock"),
            Some(&shop.other_seller.access),
            Some(json!({"adjust": -50, "reason": "not mine"})),
            &[("idempotency-key", "theirs")],
        )
        .await;
    assert!(
        matches!(
            stranger.status(),
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
        ),
        "{}",
        stranger.status()
    );
    assert_eq!(
        shop.app
            .state
            .stock
            .available(&[variant_id(&variant)])
            .await
            .unwrap()[0],
        10
    );
    // One adjustment sent twice at once: applied once; the other answer is the same change
    // or "in flight", never "not enough left".
    let (first, second) = tokio::join!(adjust(-6, "twice"), adjust(-6, "twice"));
    for answer in [first, second] {
        let status = answer.status();
        let body: Value = answer.json().await.unwrap();
        assert!(
            status == StatusCode::OK
                || (status == StatusCode::CONFLICT && body["type"] == "/problems/conflict"),
            "{status}: {body}"
        );
    }
    wait_for_projector(&shop).await;
    assert_eq!(counted().await, Some(6));
    wait_for_units(&shop, &variant, 4).await;
    audit_passes(&shop).await;
}

pub(crate) fn variant_id(variant: &str) -> openrun_domain::VariantId {
    openrun_domain::VariantId::from_uuid(variant.parse().unwrap())
}

/// The shipping address an order seals, decrypted from its `OrderPlaced`.
async fn sealed_line1(shop: &Shop, order: &str) -> String {
    let first = shop
        .app
        .events
        .read_stream(&openrun::eventstore::StreamRef::new("order", order), 1, 1)
        .await
        .unwrap();
    let sealed = first[0].payload["data"]["shipping_address"]
        .as_str()
        .unwrap();
    let plain = shop
        .app
        .config
        .secrets
        .keys
        .decrypt(openrun::members::service::ORDER_ADDRESS, sealed)
        .unwrap();
    serde_json::from_str::<Value>(&plain).unwrap()["line1"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The order path reads the buyer's address from the mirror, not the database (a row taken
/// away behind the service's back is not noticed), and an order placed after a change seals
/// the address as changed.
async fn the_address_comes_from_the_mirror_and_follows_every_change(backend: Backend) {
    let shop = open(backend).await;
    let (product, variant, _) = on_sale(&shop, 10, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    let body = order_body(&product, &variant, 1, &address, "tok_visa");
    let placed = async |key: &str| placed(&shop, &shop.buyer, key, &body).await;
    let first = placed("first").await;
    let original = sealed_line1(&shop, &first).await;
    // Named in another spelling of its id: the same address, in the database and the mirror.
    let changed = shop
        .send(
            Method::PUT,
            &format!("/v1/members/me/addresses/{}", address.to_uppercase()),
            Some(&shop.buyer.access),
            Some(json!({"line1": "부산시 해운대구 센텀로 9", "line2": "3층"})),
            &[],
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let second = placed("second").await;
    assert_eq!(
        sealed_line1(&shop, &second).await,
        "부산시 해운대구 센텀로 9"
    );
    assert_ne!(original, "부산시 해운대구 센텀로 9");
    // Taken away behind the service's back: the mirror still has it, and the order path
    // never asks the database.
    let sql = "DELETE FROM addresses WHERE id = ?";
    openrun::db::with_pool!(&shop.app.db, pool => {
        sqlx::query(sql).bind(&address).execute(pool).await.map(drop)
    })
    .unwrap();
    let third = placed("third").await;
    assert_eq!(
        sealed_line1(&shop, &third).await,
        "부산시 해운대구 센텀로 9"
    );
    // Deleted through the service (the row is gone already): the mirror's copy goes too.
    let deleted = shop
        .send(
            Method::DELETE,
            &format!("/v1/members/me/addresses/{}", address.to_uppercase()),
            Some(&shop.buyer.access),
            None,
            &[],
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::NOT_FOUND);
    problem(
        place(&shop, &shop.buyer, "fourth", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
    // Not a UUID at all: no address.
    let padded = shop
        .send(
            Method::GET,
            &format!("/v1/members/me/addresses/{address}%20"),
            Some(&shop.buyer.access),
            None,
            &[],
        )
        .await;
    assert_eq!(padded.status(), StatusCode::NOT_FOUND);
}

/// A retry is answered what its key was answered, whatever changed since: the address
/// deleted, the sale ended, and the record of the answer lost (from the log then).
async fn a_retry_after_the_sale_ended_or_the_address_went_still_gets_its_order(backend: Backend) {
    let shop = open(backend).await;
    let (product, variant, _) = on_sale(&shop, 10, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    let body = order_body(&product, &variant, 1, &address, "tok_visa");
    let id = placed(&shop, &shop.buyer, "kept", &body).await;
    let same_order = async |answer: reqwest::Response| {
        assert_eq!(answer.status(), StatusCode::CREATED);
        assert_eq!(answer.headers()["idempotent-replayed"], "true");
        assert_eq!(answer.json::<Value>().await.unwrap()["id"], id.as_str());
    };
    // The address is deleted: the retry still gets its order, a new order is refused.
    let deleted = shop
        .send(
            Method::DELETE,
            &format!("/v1/members/me/addresses/{address}"),
            Some(&shop.buyer.access),
            None,
            &[],
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    same_order(place(&shop, &shop.buyer, "kept", &body).await).await;
    problem(
        place(&shop, &shop.buyer, "new", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
    // The sale ends: the same.
    shop.status(
        &json!({"product_id": product}),
        "ended",
        &shop.seller.access,
        StatusCode::OK,
    )
    .await;
    same_order(place(&shop, &shop.buyer, "kept", &body).await).await;
    // The record of the answer is lost: the log answers.
    let buyer = openrun_domain::MemberId::from_uuid(shop.buyer.id.parse().unwrap());
    let order_id = openrun::orders::Orders::order_id(buyer, "kept");
    shop.app.state.stock.forget(order_id).await.unwrap();
    same_order(place(&shop, &shop.buyer, "kept", &body).await).await;
    // Another body with the same key is still refused as such.
    let other = order_body(&product, &variant, 2, &address, "tok_visa");
    problem(
        place(&shop, &shop.buyer, "kept", &other).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    )
    .await;
    assert_eq!(stream_types(&shop, &id).await, ["OrderPlaced"]);
    audit_passes(&shop).await;
}

async fn concurrent_orders_sell_exactly_the_units_there_are(backend: Backend) {
    let shop = Arc::new(open(backend).await);
    let (product, variant, _) = on_sale(&shop, 25, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    let tasks: Vec<_> = (0..120)
        .map(|i| {
            let (shop, product, variant, address) = (
                Arc::clone(&shop),
                product.clone(),
                variant.clone(),
                address.clone(),
            );
            tokio::spawn(async move {
                let body = order_body(&product, &variant, 1, &address, "tok_visa");
                let answer = place(&shop, &shop.buyer, &format!("burst-{i}"), &body).await;
                let status = answer.status();
                let body: Value = answer.json().await.unwrap();
                (status, body)
            })
        })
        .collect();
    let mut placed = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => placed.push(body["id"].as_str().unwrap().to_owned()),
            StatusCode::CONFLICT => {
                assert_eq!(body["type"], "/problems/sold-out", "{body}");
                assert_eq!(body["sold_out"][0]["available"], 0, "{body}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(placed.len(), 25, "exactly the units there are");
    audit_passes(&shop).await;
    for id in &placed {
        assert_eq!(stream_types(&shop, id).await, ["OrderPlaced"]);
    }
    let counter = openrun::commands::units_counter(&variant);
    let values = shop.app.events.counters(&[counter.as_str()]).await.unwrap();
    assert_eq!(values.get(&counter), Some(&0));
    wait_for_units(&shop, &variant, 0).await;
}

async fn bad_input_is_refused_and_holds_or_charges_nothing(backend: Backend) {
    let shop = open(backend).await;
    let (product, variant, other_size) = on_sale(&shop, 10, None).await;
    let (other_product, other_variant, _) = on_sale(&shop, 5, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    let stranger = verified_member(&shop.app, 105).await;
    let strangers_address = address_of(&shop, &stranger).await;
    let line = |p: &str, v: &str, q: i64| json!({"product_id": p, "variant_id": v, "quantity": q});
    let with_lines = |lines: Vec<Value>| {
        json!({"lines": lines, "address_id": address,
            "payment": {"method": "sandbox", "token": "tok_visa"}})
    };
    // 21 lines of 21 sizes of one product: one line more than an order takes.
    let sized = shop
        .send(
            Method::POST,
            "/v1/products",
            Some(&shop.seller.access),
            Some(
                json!({"category_id": shop.category, "name": "Runner", "price": 1000,
                "variants": (230..251).map(|n| n.to_string()).collect::<Vec<_>>()}),
            ),
            &[],
        )
        .await;
    assert_eq!(sized.status(), StatusCode::CREATED);
    let sized: Value = sized.json().await.unwrap();
    let many: Vec<Value> = sized["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            line(
                sized["product_id"].as_str().unwrap(),
                v["variant_id"].as_str().unwrap(),
                1,
            )
        })
        .collect();
    assert_eq!(many.len(), 21);
    let cases = [
        with_lines(vec![line(&product, &variant, 0)]),
        with_lines(vec![line(&product, &variant, -1)]),
        with_lines(vec![line(&product, &variant, 100)]),
        with_lines(vec![
            line(&product, &variant, 1),
            line(&product, &variant, 1),
        ]),
        with_lines(vec![line(&product, &other_variant, 1)]),
        with_lines(vec![line(&other_product, &variant, 1)]),
        with_lines(many),
        with_lines(vec![]),
        with_lines(vec![line(&uuid::Uuid::now_v7().to_string(), &variant, 1)]),
        order_body(&product, &variant, 1, &strangers_address, "tok_visa"),
        order_body(
            &product,
            &variant,
            1,
            &uuid::Uuid::now_v7().to_string(),
            "tok_visa",
        ),
        order_body(&product, &variant, 1, &address, "tok_unknown"),
        json!({"lines": [line(&product, &variant, 1)], "address_id": address,
            "payment": {"method": "paypal", "token": "tok_visa"}}),
    ];
    for (i, body) in cases.iter().enumerate() {
        let answer = place(&shop, &shop.buyer, &format!("bad-{i}"), body).await;
        let status = answer.status();
        let media = answer.headers()["content-type"].clone();
        let text = answer.text().await.unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "case {i}: {text}");
        assert_eq!(media, "application/problem+json", "case {i}");
        assert!(text.contains("/problems/validation"), "case {i}: {text}");
    }
    // No key, an over-long one, a malformed body.
    let body = order_body(&product, &variant, 1, &address, "tok_visa");
    let keyless = shop
        .send(
            Method::POST,
            "/v1/orders",
            Some(&shop.buyer.access),
            Some(body.clone()),
            &[],
        )
        .await;
    problem(keyless, StatusCode::BAD_REQUEST, "idempotency-key-required").await;
    let long = "k".repeat(129);
    problem(
        place(&shop, &shop.buyer, &long, &body).await,
        StatusCode::BAD_REQUEST,
        "invalid-header",
    )
    .await;
    let malformed = json!({"lines": [{"product_id": "x"}], "address_id": address});
    assert_eq!(
        place(&shop, &shop.buyer, "malformed", &malformed)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    // Nobody: 401.
    let anonymous = shop
        .send(
            Method::POST,
            "/v1/orders",
            None,
            Some(body),
            &[("idempotency-key", "a")],
        )
        .await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // Nothing was held, charged or written.
    wait_for_units(&shop, &variant, 10).await;
    wait_for_units(&shop, &other_size, 0).await;
    let head = shop.app.events.head_position().await.unwrap();
    let orders = shop
        .app
        .events
        .read_all(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.stream_type == "order")
        .count();
    assert_eq!(orders, 0, "no order stream among {head} events");
    let charges = "SELECT COUNT(*) FROM sandbox_charges";
    let charged: i64 = openrun::db::with_pool!(&shop.app.db, pool => {
        sqlx::query_scalar(charges).fetch_one(pool).await.unwrap()
    });
    assert_eq!(charged, 0, "nothing reached the payment gateway");
}

async fn a_declined_card_is_recorded_and_a_failing_gateway_keeps_the_hold_for_a_retry(
    backend: Backend,
) {
    let shop = open(backend).await;
    let (product, variant, _) = on_sale(&shop, 10, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    let declined = order_body(&product, &variant, 3, &address, "tok_declined");
    let first = problem(
        place(&shop, &shop.buyer, "declined", &declined).await,
        StatusCode::PAYMENT_REQUIRED,
        "payment-declined",
    )
    .await;
    assert!(
        first["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was charged")
    );
    // The retry is answered the same, and charges nothing.
    let again = place(&shop, &shop.buyer, "declined", &declined).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    problem(again, StatusCode::PAYMENT_REQUIRED, "payment-declined").await;
    let id = openrun::orders::Orders::order_id(
        openrun_domain::MemberId::from_uuid(shop.buyer.id.parse().unwrap()),
        "declined",
    )
    .to_string();
    assert_eq!(stream_types(&shop, &id).await, ["OrderDeclined"]);
    assert_eq!(
        ledger(&shop, &id).await.map(|(calls, _, _)| calls),
        Some(1),
        "the retry never reached the gateway"
    );
    // The hold goes back once the counter projector applies the decline.
    wait_for_units(&shop, &variant, 10).await;
    // The gateway failing: 502, the hold stays, a retry goes on with it (and fails again).
    let failing = order_body(&product, &variant, 2, &address, "tok_gateway_error");
    for _ in 0..2 {
        problem(
            place(&shop, &shop.buyer, "failing", &failing).await,
            StatusCode::BAD_GATEWAY,
            "payment-gateway",
        )
        .await;
        wait_for_units(&shop, &variant, 8).await;
    }
}

async fn the_log_refuses_an_oversell_the_stock_store_let_through(backend: Backend) {
    let shop = open(backend).await;
    let (product, variant, _) = on_sale(&shop, 1, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    // The store's counter made too high by hand, as a lost write would leave it.
    let store = &shop.app.state.stock;
    let openrun::stock::StoreState::Ready { epoch, watermark } = store.state().await.unwrap()
    else {
        panic!("the stock store is not ready");
    };
    let id = openrun_domain::VariantId::from_uuid(variant.parse().unwrap());
    let batch = openrun::stock::CounterBatch {
        epoch,
        after: watermark,
        to: watermark,
        changes: vec![openrun::stock::CounterChange::Supply {
            variant_id: id,
            delta: 5,
            hold: None,
        }],
    };
    assert_eq!(
        store.apply(&batch).await.unwrap(),
        openrun::stock::Applied::Done
    );
    // The audit sees the store disagree with the log.
    let checks = openrun::ops::audit(
        &shop.app.db,
        shop.app.events.as_ref(),
        Some(store.as_ref()),
        std::time::Duration::from_secs(600),
    )
    .await
    .unwrap();
    let stock_check = checks
        .iter()
        .find(|c| c.name.contains("stock store"))
        .unwrap();
    assert_eq!(stock_check.violations.len(), 1, "{checks:?}");
    assert!(stock_check.violations[0].contains(&variant), "{checks:?}");
    assert!(
        stock_check.violations[0].contains("the store has 6"),
        "{checks:?}"
    );
    let body = |q| order_body(&product, &variant, q, &address, "tok_visa");
    assert_eq!(
        place(&shop, &shop.buyer, "first", &body(1)).await.status(),
        StatusCode::CREATED
    );
    let refused = problem(
        place(&shop, &shop.buyer, "second", &body(1)).await,
        StatusCode::CONFLICT,
        "sold-out",
    )
    .await;
    assert_eq!(refused["sold_out"][0]["available"], 0, "{refused}");
    // The second order was closed, and its charge refunded.
    let second = openrun::orders::Orders::order_id(
        openrun_domain::MemberId::from_uuid(shop.buyer.id.parse().unwrap()),
        "second",
    );
    assert_eq!(
        stream_types(&shop, &second.to_string()).await,
        ["OrderVoided"]
    );
    let gateway = openrun::payment::sandbox::SandboxGateway::new(
        shop.app.db.clone(),
        openrun::clock::system(),
    );
    use openrun::payment::PaymentGateway;
    let charge = gateway.charge_of(second).await.unwrap().unwrap();
    assert_eq!(charge.refunded, charge.amount, "the charge went back");
    let counter = openrun::commands::units_counter(&variant);
    let values = shop.app.events.counters(&[counter.as_str()]).await.unwrap();
    assert_eq!(values.get(&counter), Some(&0), "never below zero");
    // The refusal showed the counters lost writes: they are rebuilt from the log, and agree
    // with it again.
    wait_for_projector(&shop).await;
    wait_for_units(&shop, &variant, 0).await;
    audit_passes(&shop).await;
}

async fn an_order_needs_the_product_on_sale_and_within_its_purchase_limit(backend: Backend) {
    let shop = open(backend).await;
    let (product, variant, _) = on_sale(&shop, 10, Some(2)).await;
    let address = address_of(&shop, &shop.buyer).await;
    let body = |q| order_body(&product, &variant, q, &address, "tok_visa");
    assert_eq!(
        place(&shop, &shop.buyer, "limit-1", &body(2))
            .await
            .status(),
        StatusCode::CREATED
    );
    problem(
        place(&shop, &shop.buyer, "limit-2", &body(1)).await,
        StatusCode::CONFLICT,
        "purchase-limit",
    )
    .await;
    // Another member has a limit of their own.
    let other = verified_member(&shop.app, 106).await;
    let other_address = address_of(&shop, &other).await;
    let theirs = order_body(&product, &variant, 1, &other_address, "tok_visa");
    assert_eq!(
        place(&shop, &other, "limit-3", &theirs).await.status(),
        StatusCode::CREATED
    );
    // Ended: not on sale.
    shop.status(
        &json!({"product_id": product}),
        "ended",
        &shop.seller.access,
        StatusCode::OK,
    )
    .await;
    let catalog = &shop.app.state.catalog;
    assert!(
        catalog
            .catch_up_to_head(std::time::Duration::from_secs(10))
            .await
            .unwrap()
    );
    problem(
        place(&shop, &other, "limit-4", &theirs).await,
        StatusCode::CONFLICT,
        "not-on-sale",
    )
    .await;
}

fn gateway(shop: &Shop) -> openrun::payment::sandbox::SandboxGateway {
    openrun::payment::sandbox::SandboxGateway::new(shop.app.db.clone(), openrun::clock::system())
}

/// A sweeper of the app's orders with no grace period: whatever is there now is stale.
fn sweeper(shop: &Shop) -> openrun::orders::sweep::Sweeper {
    let state = &shop.app.state;
    openrun::orders::sweep::Sweeper::new(
        Arc::clone(&state.orders),
        Arc::clone(&state.stock),
        Arc::new(gateway(shop)),
        Arc::clone(&shop.app.events),
        openrun::clock::system(),
        std::time::Duration::ZERO,
    )
}

/// A process that died after the charge and before `OrderPlaced` (with its hold, or with the
/// hold lost to a flush) leaves a hold and a charge: the sweeps close the stream, refund the
/// charge once and give the units back; a placed order's charge is only marked settled.
async fn what_a_crash_leaves_between_charge_and_append_is_swept_and_refunded_once(
    backend: Backend,
) {
    use openrun::payment::PaymentGateway;
    let shop = open(backend).await;
    let (product, variant, _) = on_sale(&shop, 10, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    let buyer = openrun_domain::MemberId::from_uuid(shop.buyer.id.parse().unwrap());
    let gateway = gateway(&shop);
    let amount = openrun_domain::Money::from_minor(219000 * 2);
    // Held and charged, never appended.
    let crashed = openrun::orders::Orders::order_id(buyer, "crashed");
    let crashed_request = openrun::orders::NewOrder {
        lines: vec![openrun::orders::NewLine {
            product_id: openrun_domain::ProductId::from_uuid(product.parse().unwrap()),
            variant_id: openrun_domain::VariantId::from_uuid(variant.parse().unwrap()),
            quantity: 2,
        }],
        address_id: address.parse().unwrap(),
        method: "sandbox".into(),
        token: "tok_visa".into(),
        from_cart: false,
    };
    let hold = openrun::stock::HoldRequest {
        order_id: crashed,
        buyer,
        fingerprint: openrun::orders::fingerprint(&crashed_request),
        lines: vec![openrun::stock::HoldLine {
            product_id: openrun_domain::ProductId::from_uuid(product.parse().unwrap()),
            variant_id: openrun_domain::VariantId::from_uuid(variant.parse().unwrap()),
            quantity: 2,
        }],
        terms: vec![],
        from_cart: None,
    };
    assert!(matches!(
        shop.app.state.stock.hold(&hold).await.unwrap(),
        openrun::stock::HoldOutcome::Held { .. }
    ));
    assert!(matches!(
        gateway.charge(crashed, amount, "tok_visa").await,
        openrun::payment::ChargeOutcome::Charged { .. }
    ));
    // Charged, its hold lost (a flush): only the gateway knows of it.
    let flushed = openrun::orders::Orders::order_id(buyer, "flushed");
    assert!(matches!(
        gateway.charge(flushed, amount, "tok_visa").await,
        openrun::payment::ChargeOutcome::Charged { .. }
    ));
    // A placed order, whose charge stays.
    let body = order_body(&product, &variant, 1, &address, "tok_visa");
    let placed = place(&shop, &shop.buyer, "placed", &body).await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    let placed = openrun::orders::Orders::order_id(buyer, "placed");
    wait_for_units(&shop, &variant, 7).await;

    // The counter projector has counted the placed order's hold (so it is no leftover).
    wait_for_projector(&shop).await;
    let sweeper = sweeper(&shop);
    assert_eq!(sweeper.sweep().await.unwrap(), 3);
    for id in [crashed, flushed] {
        assert_eq!(stream_types(&shop, &id.to_string()).await, ["OrderVoided"]);
        let charge = gateway.charge_of(id).await.unwrap().unwrap();
        assert_eq!(charge.refunded, charge.amount, "{id} refunded");
    }
    assert_eq!(
        stream_types(&shop, &placed.to_string()).await,
        ["OrderPlaced"]
    );
    let kept = gateway.charge_of(placed).await.unwrap().unwrap();
    assert_eq!(kept.refunded.minor(), 0, "a placed order keeps its charge");
    // The crashed order's hold comes back; a second round finds nothing more to do.
    wait_for_units(&shop, &variant, 9).await;
    assert_eq!(sweeper.sweep().await.unwrap(), 0);
    let refunds: i64 = match &shop.app.db {
        openrun::db::Database::MySql(pool) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM sandbox_refunds")
                .fetch_one(pool)
                .await
                .unwrap()
        }
        openrun::db::Database::Sqlite(pool) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM sandbox_refunds")
                .fetch_one(pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(refunds, 2, "one refund per closed order");
    audit_passes(&shop).await;
    // A retry of the crashed request is told the order was closed, and nothing is held.
    let retry = order_body(&product, &variant, 2, &address, "tok_visa");
    let answer = place(&shop, &shop.buyer, "crashed", &retry).await;
    assert_eq!(answer.headers()["idempotent-replayed"], "true");
    problem(answer, StatusCode::CONFLICT, "order-closed").await;
    wait_for_units(&shop, &variant, 9).await;
}

/// An order that passes its hard deadline (the payment ledger is locked) is answered
/// "outcome unknown" at the deadline, never cut off: it goes on placing, a retry meanwhile is
/// told it is in flight, and once it is done the retry gets the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_past_its_deadline_is_answered_unknown_and_still_placed() {
    let shop = Shop::on(
        crate::helpers::TestApp::spawn_with(Backend::MySql, |c| {
            c.auth.rate_limits.orders_per_member_per_minute = 100_000.try_into().unwrap();
            c.http.limits.request_timeout = std::time::Duration::from_secs(1);
        })
        .await,
    )
    .await;
    let (product, variant, _) = on_sale(&shop, 10, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    let body = order_body(&product, &variant, 1, &address, "tok_visa");
    let openrun::db::Database::MySql(pool) = &shop.app.db else {
        unreachable!("MariaDB only")
    };
    let mut lock = pool.acquire().await.unwrap();
    sqlx::query("LOCK TABLES sandbox_charges WRITE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let late = place(&shop, &shop.buyer, "late", &body).await;
    problem(late, StatusCode::INTERNAL_SERVER_ERROR, "outcome-unknown").await;
    problem(
        place(&shop, &shop.buyer, "late", &body).await,
        StatusCode::CONFLICT,
        "order-in-flight",
    )
    .await;
    sqlx::query("UNLOCK TABLES")
        .execute(&mut *lock)
        .await
        .unwrap();
    drop(lock);
    let placed = eventually("the late order placed", || async {
        let answer = place(&shop, &shop.buyer, "late", &body).await;
        if answer.status() == StatusCode::CREATED {
            return Some(answer.json::<Value>().await.unwrap());
        }
        problem(answer, StatusCode::CONFLICT, "order-in-flight").await;
        None
    })
    .await;
    let id = placed["id"].as_str().unwrap();
    assert_eq!(stream_types(&shop, id).await, ["OrderPlaced"]);
    wait_for_units(&shop, &variant, 9).await;
    audit_passes(&shop).await;
}

/// Redis loses everything in the middle of a drop, while orders hold units: orders wait
/// (503 with `Retry-After`, never sold out) while the counters are rebuilt from the log under
/// a new epoch, then go on; exactly the supply is sold (every buyer of the 20 units left gets
/// one), and a retry of an order placed before the flush lands on the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_flush_during_a_drop_oversells_nothing_and_orders_resume() {
    let shop = Arc::new(open(Backend::MySql).await);
    let (product, variant, _) = on_sale(&shop, 30, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    let body = order_body(&product, &variant, 1, &address, "tok_visa");
    let mut placed = std::collections::HashSet::new();
    for i in 0..10 {
        placed.insert(self::placed(&shop, &shop.buyer, &format!("before-{i}"), &body).await);
    }
    let answered = Arc::new(tokio::sync::Notify::new());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (shop, body, answered) = (Arc::clone(&shop), body.clone(), Arc::clone(&answered));
            tokio::spawn(async move {
                eventually("orders to resume after the rebuild", || async {
                    let answer = place(&shop, &shop.buyer, &format!("after-{i}"), &body).await;
                    let status = answer.status();
                    let retry_after = answer.headers().get("retry-after").cloned();
                    let body: Value = answer.json().await.unwrap();
                    answered.notify_one();
                    if status != StatusCode::SERVICE_UNAVAILABLE {
                        return Some((status, body));
                    }
                    assert!(
                        retry_after.is_some(),
                        "a 503 says when to come back: {body}"
                    );
                    None
                })
                .await
            })
        })
        .collect();
    // Flushed once the burst is under way.
    answered.notified().await;
    crate::helpers::delete_redis_keys(&shop.app.config.redis.key_prefix).await;
    for task in tasks {
        match task.await.unwrap() {
            (StatusCode::CREATED, body) => {
                assert!(placed.insert(body["id"].as_str().unwrap().to_owned()));
            }
            (status, body) => panic!("{status}: {body}"),
        }
    }
    assert_eq!(placed.len(), 30, "exactly the supply");
    let counter = openrun::commands::units_counter(&variant);
    let values = shop.app.events.counters(&[counter.as_str()]).await.unwrap();
    assert_eq!(values.get(&counter), Some(&0));
    // The counters the flush took are built again from the log; then the audit compares.
    wait_for_units(&shop, &variant, 0).await;
    audit_passes(&shop).await;
    // A retry of an order placed before the flush lands on the same order.
    let again = place(&shop, &shop.buyer, "before-0", &body).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert!(placed.contains(again.json::<Value>().await.unwrap()["id"].as_str().unwrap()));
}

async fn orders_are_rate_limited_per_member(backend: Backend) {
    let app = crate::helpers::TestApp::spawn_with(backend, |c| {
        c.auth.rate_limits.orders_per_member_per_minute = 2.try_into().unwrap();
    })
    .await;
    let shop = Shop::on(app).await;
    let (product, variant, _) = on_sale(&shop, 10, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    let body = order_body(&product, &variant, 1, &address, "tok_visa");
    for i in 0..2 {
        let answer = place(&shop, &shop.buyer, &format!("rate-{i}"), &body).await;
        assert_eq!(answer.status(), StatusCode::CREATED);
    }
    let refused = place(&shop, &shop.buyer, "rate-2", &body).await;
    assert!(refused.headers().contains_key("retry-after"));
    problem(refused, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    // Another member has a budget of their own; nothing was held for the refused one.
    let other = verified_member(&shop.app, 107).await;
    let theirs = order_body(
        &product,
        &variant,
        1,
        &address_of(&shop, &other).await,
        "tok_visa",
    );
    assert_eq!(
        place(&shop, &other, "rate-3", &theirs).await.status(),
        StatusCode::CREATED
    );
    wait_for_units(&shop, &variant, 7).await;
}

/// Many members behind one client address share its budget.
async fn orders_are_rate_limited_per_client_address(backend: Backend) {
    let app = crate::helpers::TestApp::spawn_with(backend, |c| {
        c.auth.rate_limits.orders_per_address_per_minute = 3.try_into().unwrap();
    })
    .await;
    let shop = Shop::on(app).await;
    let (product, variant, _) = on_sale(&shop, 10, None).await;
    let buyers = buyers(&shop, 4).await;
    for (i, buyer) in buyers.iter().enumerate() {
        let answer = shop
            .app
            .client
            .post(shop.app.url("/v1/orders"))
            .bearer_auth(&buyer.access)
            .header("idempotency-key", "one")
            .json(&order_body(
                &product,
                &variant,
                1,
                &buyer.address,
                "tok_visa",
            ))
            .send()
            .await
            .unwrap();
        if i < 3 {
            assert_eq!(answer.status(), StatusCode::CREATED, "buyer {i}");
        } else {
            assert!(answer.headers().contains_key("retry-after"));
            problem(answer, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
        }
    }
    wait_for_units(&shop, &variant, 7).await;
}

/// `GET /v1/orders`: the caller's orders, newest first, a page at a time; an admin reads any
/// order.
async fn a_buyer_s_orders_are_listed_newest_first_in_pages(backend: Backend) {
    let shop = open(backend).await;
    let (product, variant, _) = on_sale(&shop, 10, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    let mut ids = Vec::new();
    for q in 1..=3 {
        let body = order_body(&product, &variant, q, &address, "tok_visa");
        ids.push(placed(&shop, &shop.buyer, &format!("list-{q}"), &body).await);
    }
    let page = async |n: u32| -> Value {
        shop.send(
            Method::GET,
            &format!("/v1/orders?size=2&page={n}"),
            Some(&shop.buyer.access),
            None,
            &[],
        )
        .await
        .json()
        .await
        .unwrap()
    };
    eventually("the order summaries to follow the log", || async {
        (page(1).await["total"] == 3).then_some(())
    })
    .await;
    let listed = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = page(1).await;
    assert_eq!(listed(&first), [ids[2].clone(), ids[1].clone()]);
    assert_eq!(first["items"][0]["total"], 3 * 219000);
    assert_eq!(listed(&page(2).await), [ids[0].clone()]);
    assert!(listed(&page(3).await).is_empty());
    let read = shop
        .send(
            Method::GET,
            &format!("/v1/orders/{}", ids[0]),
            Some(&shop.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.json::<Value>().await.unwrap()["total"], 219000);
}

/// The log, losing the answer of every order append while `lose` is set: the append commits,
/// the caller is told its outcome is unknown.
struct LosingLog {
    inner: Arc<dyn openrun::eventstore::EventStore>,
    lose: std::sync::atomic::AtomicBool,
    /// The next order append is not written at all, and the caller is told its outcome is
    /// unknown.
    drop: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl openrun::eventstore::EventStore for LosingLog {
    async fn append_moving(
        &self,
        stream: openrun::eventstore::StreamRef,
        expected: openrun::eventstore::ExpectedVersion,
        events: Vec<openrun::eventstore::EventData>,
        metadata: openrun::eventstore::Metadata,
        counters: Vec<openrun::eventstore::CounterMove>,
    ) -> Result<openrun::eventstore::Appended, openrun::eventstore::EventStoreError> {
        let order = stream.stream_type == "order";
        if order && self.drop.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(openrun::eventstore::EventStoreError::OutcomeUnknown(
                Arc::new(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "lost before it was written",
                ))),
            ));
        }
        let result = self
            .inner
            .append_moving(stream, expected, events, metadata, counters)
            .await;
        if order && self.lose.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(openrun::eventstore::EventStoreError::OutcomeUnknown(
                Arc::new(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "lost",
                ))),
            ));
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &openrun::eventstore::StreamRef,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<openrun::eventstore::RecordedEvent>, openrun::eventstore::EventStoreError> {
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn read_streams(
        &self,
        streams: &[openrun::eventstore::StreamRef],
        after: u64,
        limit: usize,
    ) -> Result<Vec<openrun::eventstore::RecordedEvent>, openrun::eventstore::EventStoreError> {
        self.inner.read_streams(streams, after, limit).await
    }

    async fn read_all_bounded(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<openrun::eventstore::RecordedEvent>, openrun::eventstore::EventStoreError> {
        self.inner.read_all_bounded(after, limit, max_bytes).await
    }

    async fn head_position(&self) -> Result<u64, openrun::eventstore::EventStoreError> {
        self.inner.head_position().await
    }

    async fn counters(
        &self,
        names: &[&str],
    ) -> Result<std::collections::HashMap<String, i64>, openrun::eventstore::EventStoreError> {
        self.inner.counters(names).await
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.subscribe()
    }

    async fn shutdown(&self) {}
}

/// The commit of `OrderPlaced` goes through but its answer is lost: the fence (a close at
/// version 0) conflicts, and the stream answers 201, never "closed" (a second charge would
/// follow). And a process that died after the append, before recording its answer, leaves
/// a record "in flight" whose hold the projector took: the retry is answered from the log.
async fn a_lost_commit_or_a_lost_answer_still_lands_the_retry_on_the_order(backend: Backend) {
    use openrun::payment::PaymentGateway;
    let shop = open(backend).await;
    let (product, variant, _) = on_sale(&shop, 10, None).await;
    let address = address_of(&shop, &shop.buyer).await;
    let state = &shop.app.state;
    let log = Arc::new(LosingLog {
        inner: Arc::clone(&shop.app.events),
        lose: std::sync::atomic::AtomicBool::new(true),
        drop: std::sync::atomic::AtomicBool::new(false),
    });
    let commands = openrun::commands::Commands::new(log.clone(), openrun::clock::system());
    let orders = openrun::orders::Orders::new(
        shop.app.db.clone(),
        commands,
        Arc::clone(&state.catalog),
        Arc::clone(&state.stock),
        Arc::new(gateway(&shop)),
        Arc::clone(&state.members),
        Arc::clone(&state.cart),
        openrun::clock::system(),
        openrun_domain::OrderPolicy::default(),
    );
    let buyer = openrun_domain::Actor::new(
        openrun_domain::MemberId::from_uuid(shop.buyer.id.parse().unwrap()),
        openrun_domain::Role::Basic,
    );
    let request = openrun::orders::NewOrder {
        lines: vec![openrun::orders::NewLine {
            product_id: openrun_domain::ProductId::from_uuid(product.parse().unwrap()),
            variant_id: openrun_domain::VariantId::from_uuid(variant.parse().unwrap()),
            quantity: 1,
        }],
        address_id: address.parse().unwrap(),
        method: "sandbox".into(),
        token: "tok_visa".into(),
        from_cart: false,
    };
    let answer = orders.place(buyer, "lost", request.clone()).await.unwrap();
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    let id = openrun::orders::Orders::order_id(buyer.member_id, "lost");
    assert_eq!(stream_types(&shop, &id.to_string()).await, ["OrderPlaced"]);
    let charge = gateway(&shop).charge_of(id).await.unwrap().unwrap();
    assert_eq!(
        charge.refunded.minor(),
        0,
        "a placed order keeps its charge"
    );

    // Lost before it was written: the fence commits, so the order was not placed; its
    // charge goes back, and so does its hold.
    log.drop.store(true, std::sync::atomic::Ordering::SeqCst);
    let lost = orders.place(buyer, "never-written", request.clone()).await;
    assert!(
        matches!(lost, Err(openrun::orders::OrderFailure::Closed)),
        "{lost:?}"
    );
    let never = openrun::orders::Orders::order_id(buyer.member_id, "never-written");
    assert_eq!(
        stream_types(&shop, &never.to_string()).await,
        ["OrderVoided"]
    );
    let charge = gateway(&shop).charge_of(never).await.unwrap().unwrap();
    assert_eq!(charge.refunded, charge.amount, "the charge went back");
    wait_for_units(&shop, &variant, 9).await;

    // Died after the append: held, appended, never finished.
    let died = openrun::orders::Orders::order_id(buyer.member_id, "died");
    let hold = openrun::stock::HoldRequest {
        order_id: died,
        buyer: buyer.member_id,
        fingerprint: openrun::orders::fingerprint(&request),
        lines: vec![openrun::stock::HoldLine {
            product_id: request.lines[0].product_id,
            variant_id: request.lines[0].variant_id,
            quantity: 1,
        }],
        terms: vec![],
        from_cart: None,
    };
    assert!(matches!(
        state.stock.hold(&hold).await.unwrap(),
        openrun::stock::HoldOutcome::Held { .. }
    ));
    let placing = openrun_domain::order::OrderCommand::Place {
        actor: buyer,
        order_id: died,
        lines: vec![openrun_domain::order::LineItem {
            product_id: request.lines[0].product_id,
            variant_id: request.lines[0].variant_id,
            quantity: 1,
            unit_price: openrun_domain::Money::from_minor(219000),
        }],
        shipping_address: openrun_domain::order::SealedAddress("sealed".into()),
        payment: openrun_domain::order::Payment {
            method: "sandbox".into(),
            reference: "ch_died".into(),
            amount: openrun_domain::Money::from_minor(219000),
        },
        policy: openrun_domain::OrderPolicy::default(),
        fingerprint: openrun::orders::fingerprint(&request),
    };
    state
        .commands
        .create::<openrun_domain::order::Order>(&died.to_string(), placing, Default::default())
        .await
        .unwrap();
    wait_for_projector(&shop).await;
    let body = order_body(&product, &variant, 1, &address, "tok_visa");
    let retry = place(&shop, &shop.buyer, "died", &body).await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.json::<Value>().await.unwrap()["id"], died.to_string());
    wait_for_units(&shop, &variant, 8).await;
    audit_passes(&shop).await;
}

/// Service processes of one shop (one MariaDB, one Redis prefix, one key file), started as
/// an operator starts them, with buyers made on the command line.
pub(crate) struct Processes {
    pub(crate) test_db: crate::helpers::TestDb,
    prefix: String,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) client: reqwest::Client,
}

impl Processes {
    pub(crate) async fn new() -> Self {
        let dir = std::env::temp_dir().join(crate::helpers::random_name("openrun_procs_"));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            test_db: crate::helpers::TestDb::new(Backend::MySql).await,
            prefix: format!("{}:", crate::helpers::random_name("openrun_test_")),
            dir,
            client: reqwest::Client::new(),
        }
    }

    pub(crate) fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_openrun"));
        command
            .args(args)
            .current_dir(&self.dir)
            .env("DATABASE_URL", &self.test_db.url)
            .env("REDIS_URL", crate::helpers::REDIS_URL)
            .env("REDIS_KEY_PREFIX", &self.prefix)
            .env("OPENRUN_KEYS_FILE", self.dir.join("keys.toml"))
            .env("ORDERS_PER_MEMBER_PER_MINUTE", "100000")
            // The sweeps wait three request deadlines: 3 s here.
            .env("HTTP_REQUEST_TIMEOUT_SECS", "1")
            .env("RUST_LOG", "warn,openrun::startup=info");
        command
    }

    /// One more serving process, once it serves.
    pub(crate) fn serve(&self, name: &str) -> (std::process::Child, std::net::SocketAddr) {
        let command = self.command(&["serve"]);
        crate::helpers::spawn_serving(command, &self.dir.join(format!("{name}.log")))
    }

    /// `n` buyers (admins made on the command line, verified), each signed in on `addr` and
    /// with an address: `(token, address id)`.
    pub(crate) async fn buyers(
        &self,
        addr: std::net::SocketAddr,
        n: usize,
    ) -> Vec<(String, String)> {
        let mut buyers = Vec::new();
        for i in 0..n {
            let login = format!("buyer{i}");
            let made = self
                .command(&[
                    "admin",
                    "create",
                    "--login-id",
                    &login,
                    "--email",
                    &format!("{login}@example.com"),
                ])
                .env("OPENRUN_ADMIN_PASSWORD", crate::members::PASSWORD)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            assert!(
                made.status.success(),
                "{}",
                String::from_utf8_lossy(&made.stderr)
            );
            let signed_in: Value = self
                .client
                .post(format!("http://{addr}/v1/auth/login"))
                .json(&json!({"login_id": login, "password": crate::members::PASSWORD}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let token = signed_in["access_token"].as_str().unwrap().to_owned();
            let address: Value = self
                .client
                .post(format!("http://{addr}/v1/members/me/addresses"))
                .bearer_auth(&token)
                .json(&json!({"line1": "서울시 강남구 테헤란로 1", "line2": "2층", "postal_code": "06236"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            buyers.push((token, address["id"].as_str().unwrap().to_owned()));
        }
        buyers
    }

    /// A product with `units` of one size, waiting, opening at `opens` (now when `None`);
    /// returns it and its size.
    pub(crate) async fn product(
        &self,
        units: i64,
        opens: Option<chrono::DateTime<Utc>>,
    ) -> (openrun_domain::ProductId, openrun_domain::VariantId) {
        use openrun::commands::Commands;
        use openrun_domain::product::{NewVariant, ProductCommand, ProductStatus};
        use openrun_domain::stock::StockCommand;
        use openrun_domain::{
            Actor, CategoryId, MemberId, Money, ProductId, Role, ScheduleId, VariantId,
        };
        let db = self.test_db.connect().await;
        let events = openrun::eventstore::open(&db, &Default::default());
        let commands = Commands::new(Arc::clone(&events), openrun::clock::system());
        let seller = Actor::new(MemberId::from_uuid(uuid::Uuid::now_v7()), Role::Seller);
        let product = ProductId::from_uuid(uuid::Uuid::now_v7());
        let variant = VariantId::from_uuid(uuid::Uuid::now_v7());
        let id = product.to_string();
        let meta = openrun::eventstore::Metadata::default();
        let register = ProductCommand::Register {
            actor: seller,
            product_id: product,
            category_id: CategoryId::from_uuid(uuid::Uuid::now_v7()),
            name: "Processes".into(),
            description: String::new(),
            price: Money::from_minor(99_000),
            variants: vec![NewVariant {
                variant_id: variant,
                label: "270".into(),
            }],
            purchase_limit: None,
        };
        commands
            .create::<openrun_domain::product::Product>(&id, register, meta.clone())
            .await
            .unwrap();
        let add = StockCommand::Add {
            actor: seller,
            owner: seller.member_id,
            quantity: units,
            request_id: None,
        };
        commands
            .stock(&variant.to_string(), add, meta.clone())
            .await
            .unwrap();
        let to = |status| ProductCommand::ChangeStatus {
            actor: seller,
            to: status,
            reason: None,
        };
        commands
            .product(&id, to(ProductStatus::Waiting), meta.clone())
            .await
            .unwrap();
        match opens {
            Some(at) => {
                let schedule = ProductCommand::ScheduleStatusChange {
                    actor: seller,
                    schedule_id: ScheduleId::from_uuid(uuid::Uuid::now_v7()),
                    to: ProductStatus::OnSale,
                    due_at: at,
                };
                commands.product(&id, schedule, meta).await.unwrap();
            }
            None => {
                commands
                    .product(&id, to(ProductStatus::OnSale), meta)
                    .await
                    .unwrap();
            }
        }
        events.shutdown().await;
        db.close().await;
        (product, variant)
    }

    /// One order of one unit of `variant` by `buyer` with `key` at `addr`.
    pub(crate) async fn order(
        &self,
        addr: std::net::SocketAddr,
        buyer: &(String, String),
        key: &str,
        product: openrun_domain::ProductId,
        variant: openrun_domain::VariantId,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let body = json!({
            "lines": [{"product_id": product, "variant_id": variant, "quantity": 1}],
            "address_id": buyer.1,
            "payment": {"method": "sandbox", "token": "tok_visa"},
        });
        let answer = self
            .client
            .post(format!("http://{addr}/v1/orders"))
            .bearer_auth(&buyer.0)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await?;
        let status = answer.status();
        Ok((status, answer.json::<Value>().await?))
    }

    /// Waits (30 s at most) until the process at `addr` shows `product` on sale and the
    /// stock store holds `units` of `variant`.
    pub(crate) async fn selling(
        &self,
        addr: std::net::SocketAddr,
        product: openrun_domain::ProductId,
        variant: openrun_domain::VariantId,
        units: i64,
    ) {
        use openrun::stock::StockStore;
        let stock = self.stock().await;
        eventually(
            &format!("the product on sale with {units} units"),
            || async {
                let view = self
                    .client
                    .get(format!("http://{addr}/v1/products/{product}"))
                    .send()
                    .await
                    .unwrap();
                let on_sale = view.status() == StatusCode::OK
                    && view.json::<Value>().await.unwrap()["status"] == "on_sale";
                (on_sale && stock.available(&[variant]).await.unwrap()[0] == units).then_some(())
            },
        )
        .await;
    }

    /// The shop's stock store in Redis.
    pub(crate) async fn stock(&self) -> openrun::stock::redis::RedisStockStore {
        let conn = openrun::redis::connect(crate::helpers::REDIS_URL)
            .await
            .unwrap();
        openrun::stock::redis::RedisStockStore::new(conn, &self.prefix)
            .await
            .unwrap()
    }

    /// `openrun audit` on the shop's log, ledger and stock store passes.
    pub(crate) async fn audit_passes(&self) {
        let db = self.test_db.connect().await;
        let events = openrun::eventstore::open(&db, &Default::default());
        let stock = self.stock().await;
        let checks = openrun::ops::audit(
            &db,
            events.as_ref(),
            Some(&stock),
            std::time::Duration::from_secs(600),
        )
        .await
        .unwrap();
        let failed: Vec<_> = checks.iter().filter(|c| !c.violations.is_empty()).collect();
        assert!(failed.is_empty(), "the audit failed: {failed:?}");
        events.shutdown().await;
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        crate::helpers::delete_redis_keys_blocking(&self.prefix);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two service processes on one MariaDB and one Redis sell one product between them: the
/// sale opens at the same instant on both (judged on Redis's clock), no unit is sold twice,
/// and the audit passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_mariadb_and_redis_sell_out_one_product_between_them() {
    use chrono::SubsecRound;
    let shop = Processes::new().await;
    let (mut a, a_addr) = shop.serve("a");
    let (mut b, b_addr) = shop.serve("b");
    let buyers = shop.buyers(a_addr, 3).await;
    let t = Utc::now().trunc_subsecs(0) + chrono::Duration::seconds(12);
    let (product, variant) = shop.product(40, Some(t)).await;
    // Just before the instant, neither process sells (once both know the product).
    tokio::time::sleep(
        ((t - chrono::Duration::milliseconds(1500)) - Utc::now())
            .to_std()
            .unwrap_or_default(),
    )
    .await;
    for (i, addr) in [a_addr, b_addr].into_iter().enumerate() {
        let (status, body) = shop
            .order(addr, &buyers[i], &format!("early-{i}"), product, variant)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["type"], "/problems/not-on-sale", "{body}");
    }
    // From the instant, 120 orders over both processes: exactly the 40 units go.
    tokio::time::sleep((t - Utc::now()).to_std().unwrap_or_default()).await;
    let shop = Arc::new(shop);
    let buyers = Arc::new(buyers);
    let tasks: Vec<_> = (0..120)
        .map(|i| {
            let (shop, buyers) = (Arc::clone(&shop), Arc::clone(&buyers));
            let addr = if i % 2 == 0 { a_addr } else { b_addr };
            tokio::spawn(async move {
                shop.order(addr, &buyers[i % 3], &format!("drop-{i}"), product, variant)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut placed = std::collections::HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            (StatusCode::CREATED, body) => {
                assert!(placed.insert(body["id"].as_str().unwrap().to_owned()));
            }
            (StatusCode::CONFLICT, body) => {
                assert_eq!(body["type"], "/problems/sold-out", "{body}");
            }
            (status, body) => panic!("{status}: {body}"),
        }
    }
    assert_eq!(
        placed.len(),
        40,
        "exactly the supply, between both processes"
    );
    for child in [&mut a, &mut b] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    shop.audit_passes().await;
}

/// The server is killed (SIGKILL) in the middle of a burst and started again: every order it
/// answered 201 is in the log and in its buyer's list, what it held or charged for orders it
/// never placed is given back and refunded by the sweeps, nothing is oversold, and the audit
/// passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_during_a_burst_loses_no_acknowledged_order() {
    let shop = Arc::new(Processes::new().await);
    let (mut server, addr) = shop.serve("first");
    let buyers = Arc::new(shop.buyers(addr, 3).await);
    let (product, variant) = shop.product(60, None).await;
    shop.selling(addr, product, variant, 60).await;
    let answered = Arc::new(tokio::sync::Notify::new());
    let placed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..150)
        .map(|i| {
            let (shop, buyers) = (Arc::clone(&shop), Arc::clone(&buyers));
            let (answered, placed) = (Arc::clone(&answered), Arc::clone(&placed));
            tokio::spawn(async move {
                let key = format!("burst-{i}");
                let answer = shop
                    .order(addr, &buyers[i % 3], &key, product, variant)
                    .await;
                if matches!(answer, Ok((StatusCode::CREATED, _))) {
                    placed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    answered.notify_one();
                }
                (i % 3, key, answer)
            })
        })
        .collect();
    // Killed while the burst is under way: once five orders were answered 201.
    let db = shop.test_db.connect().await;
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while placed.load(std::sync::atomic::Ordering::SeqCst) < 5 {
            answered.notified().await;
        }
    })
    .await
    .expect("five orders answered within 30 s");
    server.kill().unwrap();
    server.wait().unwrap();
    let mut acknowledged = Vec::new();
    for task in tasks {
        if let (buyer, key, Ok((StatusCode::CREATED, body))) = task.await.unwrap() {
            acknowledged.push((buyer, key, body["id"].as_str().unwrap().to_owned()));
        }
    }
    assert!(!acknowledged.is_empty());
    // Started again: every acknowledged order is in the log and in its buyer's list.
    let (mut again, addr) = shop.serve("second");
    let events = openrun::eventstore::open(&db, &Default::default());
    for (buyer, _, id) in &acknowledged {
        let stream = openrun::eventstore::StreamRef::new("order", id.as_str());
        let types: Vec<String> = events
            .read_stream(&stream, 1, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(types, ["OrderPlaced"], "acknowledged order {id}");
        let read = shop
            .client
            .get(format!("http://{addr}/v1/orders/{id}"))
            .bearer_auth(&buyers[*buyer].0)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), StatusCode::OK, "{id}");
    }
    // And in its buyer's list, once the order summaries follow the log.
    for (n, (token, _)) in buyers.iter().enumerate() {
        let mine: std::collections::HashSet<&str> = acknowledged
            .iter()
            .filter(|(buyer, _, _)| *buyer == n)
            .map(|(_, _, id)| id.as_str())
            .collect();
        let what = format!("buyer {n}'s list to show every order answered 201");
        eventually(&what, || async {
            let list: Value = shop
                .client
                .get(format!("http://{addr}/v1/orders?size=100"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let listed: std::collections::HashSet<&str> = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|o| o["id"].as_str())
                .collect();
            mine.is_subset(&listed).then_some(())
        })
        .await;
    }
    // The sweeps close what the dead process held or charged (3 s grace): then the units
    // left and the log agree, and every charge is placed or refunded.
    let stock = shop.stock().await;
    eventually(
        "the sweeps to settle what the dead process left",
        || async {
            let checks = openrun::ops::audit(
                &db,
                events.as_ref(),
                Some(&stock),
                std::time::Duration::from_secs(600),
            )
            .await
            .unwrap();
            let held = {
                use openrun::stock::StockStore;
                stock.snapshot().await.unwrap().map(|s| s.held)
            };
            let unsettled: i64 = openrun::db::with_pool!(&db, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM sandbox_charges c WHERE c.status = 'charged' \
             AND c.settled = FALSE AND c.refunded = 0",
        )
        .fetch_one(pool)
        .await
        .unwrap());
            (checks.iter().all(|c| c.violations.is_empty())
                && unsettled == 0
                && held.is_some_and(|h| h.iter().all(|(_, n)| *n == 0)))
            .then_some(())
        },
    )
    .await;
    // A retry of an acknowledged order gets the same order; the rest of the supply sells.
    let (buyer, key, id) = &acknowledged[0];
    let (status, body) = shop
        .order(addr, &buyers[*buyer], key, product, variant)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], id.as_str());
    again.kill().unwrap();
    again.wait().unwrap();
    events.shutdown().await;
    shop.audit_passes().await;
}
