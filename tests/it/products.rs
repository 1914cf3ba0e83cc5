//! Products over HTTP on both backends: creation and idempotency, visibility per viewer,
//! ETags, variants, stock supply, schedules and the freeze window, history, seller
//! suspension, the wishlist, and bad input that leaves the log as it was.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, on_both_backends};
use crate::members::{Member, PASSWORD, login, verified_member};

on_both_backends!(
    a_seller_makes_a_product_and_each_viewer_sees_what_they_may,
    a_retried_create_makes_one_product_and_a_reused_key_is_refused,
    roles_and_ownership_are_enforced_on_every_product_endpoint,
    bad_input_is_a_4xx_problem_and_leaves_the_log_as_it_was,
    stock_supply_is_added_once_per_key_and_only_at_the_named_version,
    schedules_are_refused_when_they_clash_or_could_never_apply_and_freeze_a_drop,
    a_schedule_fires_at_its_instant_and_a_cancel_after_the_fire_is_409,
    listings_page_with_a_stable_cursor_and_search_matches_substrings,
    the_history_shows_lifecycle_and_stock_with_an_admin_s_reason,
    a_suspended_seller_cannot_act_and_their_products_are_suspended,
    the_wishlist_keeps_one_entry_per_product_and_only_visible_ones,
    a_category_with_products_cannot_be_archived_and_an_archived_one_takes_none,
    a_page_cursor_neither_repeats_nor_skips_when_products_hide_or_appear_between_pages,
    the_total_is_counted_up_to_its_cap_and_says_when_it_is_not_exact,
    a_renamed_product_is_found_by_its_new_name_only,
    edits_past_the_stale_bound_rebuild_the_search_index,
    product_texts_refuse_control_bidi_and_invisible_characters,
    another_seller_s_hidden_product_is_not_found_by_writes_either,
    a_cancel_racing_the_fire_has_one_winner,
);

/// A shop with an admin, two sellers, a buyer and a category.
pub struct Shop {
    pub app: TestApp,
    pub admin: String,
    pub seller: Member,
    pub other_seller: Member,
    pub buyer: Member,
    pub category: String,
}

/// A verified member made a seller by an admin, signed in again to carry the role.
pub async fn seller_member(app: &TestApp, admin: &str, n: u32) -> Member {
    let member = verified_member(app, n).await;
    let granted = crate::members::send(
        app,
        Method::PUT,
        &format!("/v1/admin/members/{}/role", member.id),
        admin,
        Some(&json!({"role": "seller"})),
    )
    .await;
    assert_eq!(granted.status(), StatusCode::OK);
    login(app, &member.login_id, PASSWORD, "laptop").await
}

impl Shop {
    pub async fn open(backend: Backend) -> Self {
        Self::on(TestApp::spawn(backend).await).await
    }

    pub async fn on(app: TestApp) -> Self {
        let admin = crate::members::admin_token(&app, "shopadmin").await;
        let seller = seller_member(&app, &admin, 101).await;
        let other_seller = seller_member(&app, &admin, 102).await;
        let buyer = verified_member(&app, 103).await;
        let category = crate::members::post(
            &app,
            "/v1/categories",
            &json!({"name": "Sneakers"}),
            Some(&admin),
        )
        .await;
        assert_eq!(category.status(), StatusCode::CREATED);
        let category = category.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        Self {
            app,
            admin,
            seller,
            other_seller,
            buyer,
            category,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.app.client.request(method, self.app.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// A product of the seller with sizes 250 and 260, `waiting` when `publish`.
    pub async fn product(&self, name: &str, publish: bool) -> Value {
        let made = self
            .send(
                Method::POST,
                "/v1/products",
                Some(&self.seller.access),
                Some(json!({"category_id": self.category, "name": name,
                    "description": "한정판 스니커즈", "price": 189000,
                    "variants": ["250", "260"], "purchase_limit": 2})),
                &[],
            )
            .await;
        assert_eq!(made.status(), StatusCode::CREATED);
        let made: Value = made.json().await.unwrap();
        if publish {
            self.status(&made, "waiting", &self.seller.access, StatusCode::OK)
                .await;
        }
        made
    }

    pub async fn status(&self, product: &Value, to: &str, token: &str, expect: StatusCode) {
        let path = format!(
            "/v1/products/{}/status",
            product["product_id"].as_str().unwrap()
        );
        let changed = self
            .send(
                Method::PUT,
                &path,
                Some(token),
                Some(json!({"status": to})),
                &[],
            )
            .await;
        assert_eq!(
            changed.status(),
            expect,
            "{}",
            changed.text().await.unwrap()
        );
    }

    pub async fn view(&self, id: &str, token: Option<&str>) -> reqwest::Response {
        self.send(Method::GET, &format!("/v1/products/{id}"), token, None, &[])
            .await
    }

    pub async fn head(&self) -> u64 {
        self.app.events.head_position().await.unwrap()
    }
}

fn id(v: &Value) -> String {
    v["product_id"].as_str().unwrap().to_owned()
}

pub async fn problem(response: reqwest::Response, status: StatusCode, kind: &str) -> Value {
    let got = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    assert_eq!(body["type"], format!("/problems/{kind}"), "{body}");
    body
}

async fn a_seller_makes_a_product_and_each_viewer_sees_what_they_may(backend: Backend) {
    let shop = Shop::open(backend).await;
    let made = shop.product("Air Max 1 '86", false).await;
    assert_eq!(made["currency"], "KRW");
    assert_eq!(made["price"], 189000);
    assert_eq!(made["status"], "not_published");
    assert_eq!(made["seller_id"], shop.seller.id);
    assert_eq!(made["purchase_limit"], 2);
    let labels: Vec<&str> = made["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["250", "260"]);
    assert!(made["variants"][0]["sold_out"].as_bool().unwrap());
    let product = id(&made);

    // Not published: only its seller and admins see it; others get 404.
    for token in [
        None,
        Some(shop.buyer.access.as_str()),
        Some(&shop.other_seller.access),
    ] {
        problem(
            shop.view(&product, token).await,
            StatusCode::NOT_FOUND,
            "not-found",
        )
        .await;
    }
    for token in [&shop.seller.access, &shop.admin] {
        assert_eq!(
            shop.view(&product, Some(token)).await.status(),
            StatusCode::OK
        );
    }

    // Published: everyone sees it; ETags differ per viewer class and revalidate to 304.
    shop.status(&made, "waiting", &shop.seller.access, StatusCode::OK)
        .await;
    let public = shop.view(&product, None).await;
    assert_eq!(public.status(), StatusCode::OK);
    assert_eq!(public.headers()["vary"], "Authorization");
    let tag = public.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = public.json().await.unwrap();
    assert_eq!(body["status"], "waiting");
    assert_eq!(body["description"], "한정판 스니커즈");
    let owner_tag = shop
        .view(&product, Some(&shop.seller.access))
        .await
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(tag, owner_tag);
    let again = shop
        .send(
            Method::GET,
            &format!("/v1/products/{product}"),
            None,
            None,
            &[("if-none-match", &tag)],
        )
        .await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    // A change moves the ETag.
    let patched = shop
        .send(
            Method::PATCH,
            &format!("/v1/products/{product}"),
            Some(&shop.seller.access),
            Some(json!({"price": 199000, "purchase_limit": null})),
            &[],
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["price"], 199000);
    assert_eq!(patched["purchase_limit"], Value::Null);
    let after = shop
        .send(
            Method::GET,
            &format!("/v1/products/{product}"),
            None,
            None,
            &[("if-none-match", &tag)],
        )
        .await;
    assert_eq!(after.status(), StatusCode::OK);
    assert_ne!(after.headers()["etag"].to_str().unwrap(), tag);

    // Deleted: hidden from everyone but its seller and admins, and a stale ETag is not 304.
    let deleted = shop
        .send(
            Method::DELETE,
            &format!("/v1/products/{product}"),
            Some(&shop.seller.access),
            None,
            &[],
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let hidden = shop
        .send(
            Method::GET,
            &format!("/v1/products/{product}"),
            None,
            None,
            &[("if-none-match", &tag)],
        )
        .await;
    problem(hidden, StatusCode::NOT_FOUND, "not-found").await;
    let listed: Value = shop.app.get("/v1/products").await.json().await.unwrap();
    assert_eq!(listed["total"], 0);
    let again = shop
        .send(
            Method::PATCH,
            &format!("/v1/products/{product}"),
            Some(&shop.seller.access),
            Some(json!({"name": "x"})),
            &[],
        )
        .await;
    problem(again, StatusCode::CONFLICT, "product-deleted").await;
}

async fn a_retried_create_makes_one_product_and_a_reused_key_is_refused(backend: Backend) {
    let shop = Shop::open(backend).await;
    let body = json!({"category_id": shop.category, "name": "Dunk Low", "price": 139000});
    let create = |body: Value, token: String| {
        let shop = &shop;
        async move {
            shop.send(
                Method::POST,
                "/v1/products",
                Some(&token),
                Some(body),
                &[("idempotency-key", "drop-2026-12-dunk")],
            )
            .await
        }
    };
    let first = create(body.clone(), shop.seller.access.clone()).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let head = shop.head().await;
    let retry = create(body.clone(), shop.seller.access.clone()).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["product_id"], first["product_id"]);
    assert_eq!(retry["variants"], first["variants"]);
    // A product without sizes has one default variant.
    assert_eq!(first["variants"].as_array().unwrap().len(), 1);
    assert_eq!(first["variants"][0]["label"], "default");
    let mut other = body.clone();
    other["price"] = json!(1);
    problem(
        create(other, shop.seller.access.clone()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    )
    .await;
    assert_eq!(shop.head().await, head, "a replay appends nothing");
    // The same key from another seller is another product.
    let theirs = create(body, shop.other_seller.access.clone()).await;
    assert_eq!(theirs.status(), StatusCode::CREATED);
    let theirs: Value = theirs.json().await.unwrap();
    assert_ne!(theirs["product_id"], first["product_id"]);
    assert_eq!(theirs["seller_id"], shop.other_seller.id);
    // A seller named in the body is refused as an unknown field, never taken.
    let forged = shop
        .send(
            Method::POST,
            "/v1/products",
            Some(&shop.seller.access),
            Some(
                json!({"category_id": shop.category, "name": "x", "price": 1,
                "seller_id": shop.other_seller.id}),
            ),
            &[],
        )
        .await;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
}

async fn roles_and_ownership_are_enforced_on_every_product_endpoint(backend: Backend) {
    let shop = Shop::open(backend).await;
    let made = shop.product("Samba OG", true).await;
    let product = id(&made);
    let variant = made["variants"][0]["variant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = (Utc::now() + chrono::Duration::seconds(3600))
        .trunc_subsecs(0)
        .to_rfc3339();
    let later = (Utc::now() + chrono::Duration::seconds(7200))
        .trunc_subsecs(0)
        .to_rfc3339();
    let schedule = shop
        .send(
            Method::POST,
            &format!("/v1/products/{product}/schedules"),
            Some(&shop.seller.access),
            Some(json!({"status": "on_sale", "at": at})),
            &[],
        )
        .await;
    assert_eq!(schedule.status(), StatusCode::CREATED);
    let schedule = schedule.json::<Value>().await.unwrap()["schedule_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let writes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::PATCH,
            format!("/v1/products/{product}"),
            Some(json!({"price": 5})),
        ),
        (
            Method::PUT,
            format!("/v1/products/{product}/status"),
            Some(json!({"status": "not_published"})),
        ),
        (
            Method::POST,
            format!("/v1/products/{product}/variants"),
            Some(json!({"label": "270"})),
        ),
        (
            Method::POST,
            format!("/v1/products/{product}/variants/{variant}/stock"),
            Some(json!({"add": 5})),
        ),
        (
            Method::DELETE,
            format!("/v1/products/{product}/variants/{variant}"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/products/{product}/schedules"),
            Some(json!({"status": "ended", "at": later})),
        ),
        (
            Method::DELETE,
            format!("/v1/products/{product}/schedules/{schedule}"),
            None,
        ),
        (Method::DELETE, format!("/v1/products/{product}"), None),
    ];
    let reads = [
        format!("/v1/products/{product}/stock"),
        format!("/v1/products/{product}/schedules"),
        format!("/v1/products/{product}/events"),
    ];
    let head = shop.head().await;
    // A supply change needs a key; the other writes ignore it.
    let keyed: &[(&str, &str)] = &[("idempotency-key", "roles")];
    for (method, path, body) in &writes {
        // Nobody: 401. A buyer: 403 (cannot sell). Another seller: 403 (not theirs).
        let anonymous = shop
            .send(method.clone(), path, None, body.clone(), &[])
            .await;
        problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let buyer = shop
            .send(
                method.clone(),
                path,
                Some(&shop.buyer.access),
                body.clone(),
                keyed,
            )
            .await;
        problem(buyer, StatusCode::FORBIDDEN, "forbidden").await;
        let other = shop
            .send(
                method.clone(),
                path,
                Some(&shop.other_seller.access),
                body.clone(),
                keyed,
            )
            .await;
        problem(other, StatusCode::FORBIDDEN, "forbidden").await;
    }
    for path in &reads {
        let other = shop
            .send(
                Method::GET,
                path,
                Some(&shop.other_seller.access),
                None,
                &[],
            )
            .await;
        problem(other, StatusCode::FORBIDDEN, "forbidden").await;
        let buyer = shop
            .send(Method::GET, path, Some(&shop.buyer.access), None, &[])
            .await;
        problem(buyer, StatusCode::FORBIDDEN, "forbidden").await;
        for token in [&shop.seller.access, &shop.admin] {
            let ok = shop.send(Method::GET, path, Some(token), None, &[]).await;
            assert_eq!(ok.status(), StatusCode::OK, "{path}");
        }
    }
    assert_eq!(shop.head().await, head, "no refused write reached the log");
    // An admin may do what the seller may.
    for (method, path, body) in &writes {
        let done = shop
            .send(method.clone(), path, Some(&shop.admin), body.clone(), keyed)
            .await;
        assert!(
            done.status().is_success(),
            "{method} {path}: {}",
            done.text().await.unwrap()
        );
    }
}

async fn bad_input_is_a_4xx_problem_and_leaves_the_log_as_it_was(backend: Backend) {
    let shop = Shop::open(backend).await;
    let made = shop.product("Gel-Lyte III", true).await;
    let product = id(&made);
    let archived = crate::members::post(
        &shop.app,
        "/v1/categories",
        &json!({"name": "Old"}),
        Some(&shop.admin),
    )
    .await;
    let archived = archived.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let gone = shop
        .send(
            Method::DELETE,
            &format!("/v1/categories/{archived}"),
            Some(&shop.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let head = shop.head().await;
    let base = json!({"category_id": shop.category, "name": "Shoe", "price": 1000});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let labels: Vec<String> = (0..51).map(|i| format!("{}", 200 + i)).collect();
    let creates = [
        (
            with("category_id", json!(uuid::Uuid::now_v7())),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            with("category_id", json!(archived)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            with("price", json!(-1)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            with("price", json!(0)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            with("price", json!(10_000_000_000_000_i64)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            with("price", json!(1e30)),
            StatusCode::BAD_REQUEST,
            "invalid-body",
        ),
        (
            with("name", json!("   ")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            with("variants", json!(labels)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            with("variants", json!(["270", " 270 "])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            with("purchase_limit", json!(0)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            with("category_id", json!("not-an-id")),
            StatusCode::BAD_REQUEST,
            "invalid-body",
        ),
    ];
    for (body, status, kind) in creates {
        let refused = shop
            .send(
                Method::POST,
                "/v1/products",
                Some(&shop.seller.access),
                Some(body.clone()),
                &[],
            )
            .await;
        problem(refused, status, kind).await;
    }
    let schedules = format!("/v1/products/{product}/schedules");
    let past = (Utc::now() - chrono::Duration::seconds(60))
        .trunc_subsecs(0)
        .to_rfc3339();
    let soon = (Utc::now() + chrono::Duration::seconds(3))
        .trunc_subsecs(0)
        .to_rfc3339();
    let later = Utc::now() + chrono::Duration::seconds(3600);
    let naive = later.format("%Y-%m-%dT%H:%M:%S").to_string();
    let fractional = later.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    for (body, status, kind) in [
        (
            json!({"status": "on_sale", "at": past}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            json!({"status": "on_sale", "at": soon}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            json!({"status": "on_sale", "at": naive}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            json!({"status": "on_sale", "at": fractional}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            json!({"status": "sold", "at": later.to_rfc3339()}),
            StatusCode::BAD_REQUEST,
            "invalid-body",
        ),
    ] {
        let refused = shop
            .send(
                Method::POST,
                &schedules,
                Some(&shop.seller.access),
                Some(body),
                &[],
            )
            .await;
        problem(refused, status, kind).await;
    }
    // waiting -> ended is not an edge of the status graph.
    let refused = shop
        .send(
            Method::PUT,
            &format!("/v1/products/{product}/status"),
            Some(&shop.seller.access),
            Some(json!({"status": "ended"})),
            &[],
        )
        .await;
    problem(refused, StatusCode::CONFLICT, "transition-not-allowed").await;
    for query in [
        "size=0",
        "size=1000",
        "q=a",
        &format!("q={}", "가".repeat(500)),
        "cursor=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "status=sold",
        "category_id=x",
    ] {
        let refused = shop.app.get(&format!("/v1/products?{query}")).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            refused.headers()["content-type"],
            "application/problem+json"
        );
    }
    // A cursor from one listing is refused by another, and a changed one by any.
    let page: Value = shop
        .app
        .get("/v1/products?size=1")
        .await
        .json()
        .await
        .unwrap();
    assert!(page["next_cursor"].is_null(), "one product, one page");
    for malformed in ["/v1/products/not-a-uuid", "/v1/products/1/stock"] {
        let refused = shop
            .send(Method::GET, malformed, Some(&shop.seller.access), None, &[])
            .await;
        problem(refused, StatusCode::BAD_REQUEST, "invalid-path").await;
    }
    // `%` and `_` are literal.
    for q in ["%25%25", "__"] {
        let found: Value = shop
            .app
            .get(&format!("/v1/products?q={q}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(found["total"], 0, "{q}");
    }
    assert_eq!(shop.head().await, head, "nothing refused reached the log");
}

async fn stock_supply_is_added_once_per_key_and_only_at_the_named_version(backend: Backend) {
    let shop = Shop::open(backend).await;
    let made = shop.product("Forum 84", true).await;
    let product = id(&made);
    let variant = made["variants"][1]["variant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/products/{product}/variants/{variant}/stock");
    let add = |body: Value, headers: Vec<(&'static str, String)>| {
        let (shop, path) = (&shop, path.clone());
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            shop.send(
                Method::POST,
                &path,
                Some(&shop.seller.access),
                Some(body),
                &headers,
            )
            .await
        }
    };
    let first = add(
        json!({"add": 100}),
        vec![("idempotency-key", "restock-1".into())],
    )
    .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["etag"], "\"1\"");
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        (first["supply"].as_i64(), first["available"].as_i64()),
        (Some(100), Some(100))
    );
    // The same key again: the supply does not move, the answer is the same.
    let retry = add(
        json!({"add": 100}),
        vec![("idempotency-key", "restock-1".into())],
    )
    .await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap()["supply"], 100);
    // The same key for another change is refused.
    let reused = add(
        json!({"add": 7}),
        vec![("idempotency-key", "restock-1".into())],
    )
    .await;
    problem(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    )
    .await;
    // If-Match: at the stream's version it applies, stale it is 412.
    let matched = add(json!({"add": 5}), vec![("if-match", "\"1\"".into())]).await;
    assert_eq!(matched.status(), StatusCode::OK);
    assert_eq!(matched.json::<Value>().await.unwrap()["supply"], 105);
    let stale = add(json!({"add": 5}), vec![("if-match", "\"1\"".into())]).await;
    problem(
        stale,
        StatusCode::PRECONDITION_FAILED,
        "precondition-failed",
    )
    .await;
    for (body, kind) in [
        (
            json!({"adjust": 1, "reason": "a\u{1b}[31mred"}),
            "validation",
        ),
        (json!({"adjust": 1, "reason": "two\nlines"}), "validation"),
        (json!({"adjust": -5}), "validation"),
        (json!({"add": 0}), "validation"),
        (json!({"add": 1, "adjust": 1, "reason": "x"}), "validation"),
        (
            json!({"adjust": -1000, "reason": "counted"}),
            "supply-conflict",
        ),
        (
            json!({"adjust": i64::MIN, "reason": "counted"}),
            "validation",
        ),
    ] {
        let refused = add(body, vec![("idempotency-key", format!("refused-{kind}"))]).await;
        let status = if kind == "validation" {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::CONFLICT
        };
        problem(refused, status, kind).await;
    }
    let bad_header = add(json!({"add": 1}), vec![("if-match", "1".into())]).await;
    problem(bad_header, StatusCode::BAD_REQUEST, "invalid-header").await;
    // Neither If-Match nor a key: refused, as a retry could change the supply twice.
    let unguarded = add(json!({"add": 1}), vec![]).await;
    problem(
        unguarded,
        StatusCode::PRECONDITION_REQUIRED,
        "precondition-required",
    )
    .await;
    let weak = add(json!({"add": 1}), vec![("if-match", "W/\"3\"".into())]).await;
    problem(weak, StatusCode::BAD_REQUEST, "invalid-header").await;
    let adjusted = add(
        json!({"adjust": -5, "reason": "damaged in the warehouse"}),
        vec![("if-match", "\"2\"".into())],
    )
    .await;
    assert_eq!(adjusted.status(), StatusCode::OK);
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
    let items = stock["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["supply"], 0);
    assert_eq!(
        (
            items[1]["supply"].as_i64(),
            items[1]["sold"].as_i64(),
            items[1]["available"].as_i64()
        ),
        (Some(100), Some(0), Some(100))
    );
    // Buyers see sold_out per variant.
    let view: Value = shop.view(&product, None).await.json().await.unwrap();
    assert_eq!(view["variants"][0]["sold_out"], true);
    assert_eq!(view["variants"][1]["sold_out"], false);
    // A retired size takes no new units.
    let first = made["variants"][0]["variant_id"].as_str().unwrap();
    let retired = shop
        .send(
            Method::DELETE,
            &format!("/v1/products/{product}/variants/{first}"),
            Some(&shop.seller.access),
            None,
            &[],
        )
        .await;
    assert!(retired.status().is_success(), "{}", retired.status());
    let refused = shop
        .send(
            Method::POST,
            &format!("/v1/products/{product}/variants/{first}/stock"),
            Some(&shop.seller.access),
            Some(json!({"add": 1})),
            &[("idempotency-key", "to-a-retired-size")],
        )
        .await;
    problem(refused, StatusCode::CONFLICT, "variant-conflict").await;
    // A variant of another product is not found under this one.
    let other = shop.product("Other", false).await;
    let foreign = other["variants"][0]["variant_id"].as_str().unwrap();
    let refused = shop
        .send(
            Method::POST,
            &format!("/v1/products/{product}/variants/{foreign}/stock"),
            Some(&shop.seller.access),
            Some(json!({"add": 1})),
            &[("idempotency-key", "foreign")],
        )
        .await;
    problem(refused, StatusCode::NOT_FOUND, "not-found").await;
}

async fn schedules_are_refused_when_they_clash_or_could_never_apply_and_freeze_a_drop(
    backend: Backend,
) {
    let start = Utc::now().trunc_subsecs(0) + chrono::Duration::seconds(1);
    let clock = Arc::new(openrun::clock::ManualClock::new(start));
    let app = TestApp::spawn_with_clock(backend, |_| {}, clock.clone()).await;
    let shop = Shop::on(app).await;
    let made = shop.product("Jordan 1 Chicago", true).await;
    let product = id(&made);
    let schedules = format!("/v1/products/{product}/schedules");
    let t = start + chrono::Duration::seconds(600);
    let schedule = |status: &str, at: DateTime<Utc>, key: Option<&'static str>| {
        let (shop, path) = (&shop, schedules.clone());
        let body = json!({"status": status, "at": at.to_rfc3339()});
        async move {
            let headers: Vec<(&str, &str)> =
                key.map(|k| ("idempotency-key", k)).into_iter().collect();
            shop.send(
                Method::POST,
                &path,
                Some(&shop.seller.access),
                Some(body),
                &headers,
            )
            .await
        }
    };
    let open = schedule("on_sale", t, Some("open")).await;
    assert_eq!(open.status(), StatusCode::CREATED);
    let open: Value = open.json().await.unwrap();
    assert_eq!(open["state"], "pending");
    let retried = schedule("on_sale", t, Some("open")).await;
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert_eq!(
        retried.json::<Value>().await.unwrap()["schedule_id"],
        open["schedule_id"]
    );
    // The same instant twice; ended before it opens (waiting -> ended is no edge).
    problem(
        schedule("ended", t, None).await,
        StatusCode::CONFLICT,
        "schedule-refused",
    )
    .await;
    let early = t - chrono::Duration::seconds(60);
    problem(
        schedule("ended", early, None).await,
        StatusCode::CONFLICT,
        "schedule-refused",
    )
    .await;
    let close = schedule("ended", t + chrono::Duration::seconds(3600), None).await;
    assert_eq!(close.status(), StatusCode::CREATED);
    // Views count down.
    let view: Value = shop.view(&product, None).await.json().await.unwrap();
    assert_eq!(
        view["opens_at"],
        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
    assert_eq!(view["status"], "waiting");
    let listed: Value = shop
        .send(
            Method::GET,
            &schedules,
            Some(&shop.seller.access),
            None,
            &[],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);

    // In the freeze window before the drop: price, limit, variants and schedules are 409.
    clock.set(t - chrono::Duration::seconds(3));
    let path = format!("/v1/products/{product}");
    for (method, path, body) in [
        (Method::PATCH, path.clone(), json!({"price": 1000})),
        (Method::PATCH, path.clone(), json!({"purchase_limit": 5})),
        (
            Method::POST,
            format!("{path}/variants"),
            json!({"label": "290"}),
        ),
        (
            Method::POST,
            schedules.clone(),
            json!({"status": "ended", "at": (t + chrono::Duration::seconds(60)).to_rfc3339()}),
        ),
    ] {
        let frozen = shop
            .send(method, &path, Some(&shop.seller.access), Some(body), &[])
            .await;
        problem(frozen, StatusCode::CONFLICT, "frozen").await;
    }
    let sid = open["schedule_id"].as_str().unwrap();
    let cancel = shop
        .send(
            Method::DELETE,
            &format!("{schedules}/{sid}"),
            Some(&shop.seller.access),
            None,
            &[],
        )
        .await;
    problem(cancel, StatusCode::CONFLICT, "frozen").await;
    // The name may still change.
    let renamed = shop
        .send(
            Method::PATCH,
            &path,
            Some(&shop.seller.access),
            Some(json!({"name": "Jordan 1 Chicago '85"})),
            &[],
        )
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
}

/// One look at a product's public view: when it was asked and answered, what it said.
#[derive(Debug)]
struct Look {
    asked: DateTime<Utc>,
    answered: DateTime<Utc>,
    status: String,
    version: u64,
}

async fn look(client: &reqwest::Client, url: &str) -> Look {
    let asked = Utc::now();
    let view: Value = client.get(url).send().await.unwrap().json().await.unwrap();
    Look {
        asked,
        answered: Utc::now(),
        status: view["status"].as_str().unwrap_or_default().to_owned(),
        version: view["version"].as_u64().unwrap_or_default(),
    }
}

/// Watches `urls` until each shows `version`: asserts that no answer given before `t` says
/// on sale and that every answer asked after `t` does, and returns how long after `t` each
/// first showed the fired version.
async fn watch_the_drop(urls: &[String], t: DateTime<Utc>, version: u64) -> Vec<chrono::Duration> {
    let client = reqwest::Client::new();
    let deadline = t + chrono::Duration::seconds(20);
    let mut seen: Vec<Option<chrono::Duration>> = vec![None; urls.len()];
    // Looked at once well before the instant, then without pause from a second before it.
    for url in urls {
        let look = look(&client, url).await;
        assert!(look.answered < t && look.status == "waiting", "{look:?}");
    }
    until(t - chrono::Duration::seconds(1)).await;
    while seen.iter().any(Option::is_none) {
        assert!(
            Utc::now() < deadline,
            "a process never showed the drop: {seen:?}"
        );
        for (i, url) in urls.iter().enumerate() {
            let look = look(&client, url).await;
            if look.answered < t {
                assert_eq!(
                    look.status, "waiting",
                    "on sale before its instant: {look:?}"
                );
            }
            if look.asked > t {
                assert_eq!(
                    look.status, "on_sale",
                    "not on sale after its instant: {look:?}"
                );
            }
            if look.version >= version && seen[i].is_none() {
                seen[i] = Some(look.answered - t);
            }
        }
    }
    seen.into_iter().flatten().collect()
}

/// Returns at the wall-clock instant `at`: what a drop is scheduled on (the scheduler claims
/// on the database's clock, so no injected clock reaches it).
async fn until(at: DateTime<Utc>) {
    tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await;
}

async fn a_schedule_fires_at_its_instant_and_a_cancel_after_the_fire_is_409(backend: Backend) {
    let shop = Shop::open(backend).await;
    let made = shop.product("Yeezy 350", true).await;
    let product = id(&made);
    let t = Utc::now().trunc_subsecs(0) + chrono::Duration::seconds(12);
    let schedules = format!("/v1/products/{product}/schedules");
    let open = shop
        .send(
            Method::POST,
            &schedules,
            Some(&shop.seller.access),
            Some(json!({"status": "on_sale", "at": t.to_rfc3339()})),
            &[],
        )
        .await;
    assert_eq!(open.status(), StatusCode::CREATED);
    let sid = open.json::<Value>().await.unwrap()["schedule_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stream = openrun::eventstore::StreamRef::new("product", product.clone());
    let before = shop
        .app
        .events
        .read_stream(&stream, 1, 1000)
        .await
        .unwrap()
        .len() as u64;
    // The fire is the stream's next version.
    let url = shop.app.url(&format!("/v1/products/{product}"));
    let after = watch_the_drop(&[url], t, before + 1).await;
    eprintln!(
        "the drop showed {} ms after its instant",
        after[0].num_milliseconds()
    );
    let events = shop.app.events.read_stream(&stream, 1, 1000).await.unwrap();
    let changes = events
        .iter()
        .filter(|e| e.event_type == "ProductStatusChanged" && e.payload["data"]["to"] == "on_sale")
        .count();
    assert_eq!(changes, 1, "fired exactly once");
    let cancel = shop
        .send(
            Method::DELETE,
            &format!("{schedules}/{sid}"),
            Some(&shop.seller.access),
            None,
            &[],
        )
        .await;
    problem(cancel, StatusCode::CONFLICT, "schedule-closed").await;
    let listed: Value = shop
        .send(
            Method::GET,
            &schedules,
            Some(&shop.seller.access),
            None,
            &[],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["state"], "fired");
}

/// The drop on two service processes on one MariaDB: neither shows it on sale before its
/// instant, both do after it, the change is recorded once, and both live catalogs apply it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_opens_at_its_instant_on_two_processes_on_one_mariadb() {
    use openrun::commands::Commands;
    use openrun_domain::product::{NewVariant, ProductCommand, ProductStatus};
    use openrun_domain::{
        Actor, CategoryId, MemberId, Money, ProductId, Role, ScheduleId, VariantId,
    };
    let test_db = crate::helpers::TestDb::new(Backend::MySql).await;
    let (mut a, a_addr) = crate::helpers::serve_http(&test_db);
    let (mut b, b_addr) = crate::helpers::serve_http(&test_db);
    let db = test_db.connect().await;
    let events = openrun::eventstore::open(&db, &Default::default());
    let commands = Commands::new(Arc::clone(&events), openrun::clock::system());
    let seller = Actor::new(MemberId::from_uuid(uuid::Uuid::now_v7()), Role::Seller);
    let product = ProductId::from_uuid(uuid::Uuid::now_v7());
    let id = product.to_string();
    let meta = openrun::eventstore::Metadata::default();
    commands
        .create::<openrun_domain::product::Product>(
            &id,
            ProductCommand::Register {
                actor: seller,
                product_id: product,
                category_id: CategoryId::from_uuid(uuid::Uuid::now_v7()),
                name: "Two-process drop".into(),
                description: String::new(),
                price: Money::from_minor(99_000),
                variants: vec![NewVariant {
                    variant_id: VariantId::from_uuid(uuid::Uuid::now_v7()),
                    label: "270".into(),
                }],
                purchase_limit: Some(1),
            },
            meta.clone(),
        )
        .await
        .unwrap();
    commands
        .product(
            &id,
            ProductCommand::ChangeStatus {
                actor: seller,
                to: ProductStatus::Waiting,
                reason: None,
            },
            meta.clone(),
        )
        .await
        .unwrap();
    let t = Utc::now().trunc_subsecs(0) + chrono::Duration::seconds(12);
    let scheduled = commands
        .product(
            &id,
            ProductCommand::ScheduleStatusChange {
                actor: seller,
                schedule_id: ScheduleId::from_uuid(uuid::Uuid::now_v7()),
                to: ProductStatus::OnSale,
                due_at: t,
            },
            meta,
        )
        .await
        .unwrap();
    let urls = [a_addr, b_addr].map(|addr| format!("http://{addr}/v1/products/{id}"));
    // Both processes know the product before its instant.
    let client = reqwest::Client::new();
    for url in &urls {
        while look(&client, url).await.status != "waiting" {
            assert!(
                Utc::now() < t - chrono::Duration::seconds(2),
                "{url} did not show the product well before its instant"
            );
        }
    }
    let after = watch_the_drop(&urls, t, scheduled.version + 1).await;
    eprintln!(
        "the drop showed {} ms (process a) and {} ms (process b) after its instant",
        after[0].num_milliseconds(),
        after[1].num_milliseconds()
    );
    let recorded = events
        .read_stream(
            &openrun::eventstore::StreamRef::new("product", &id),
            1,
            1000,
        )
        .await
        .unwrap();
    let types: Vec<&str> = recorded.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "ProductRegistered",
            "ProductStatusChanged",
            "StatusChangeScheduled",
            "ProductStatusChanged"
        ],
        "fired exactly once"
    );
    for child in [&mut a, &mut b] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    events.shutdown().await;
}

async fn listings_page_with_a_stable_cursor_and_search_matches_substrings(backend: Backend) {
    let shop = Shop::open(backend).await;
    let names = [
        "나이키 에어맥스 97",
        "아디다스 삼바",
        "Air Jordan 4",
        "에어 조던 1 하이",
        "New Balance 990",
    ];
    let mut ids = Vec::new();
    for name in names {
        ids.push(id(&shop.product(name, true).await));
    }
    let hidden = id(&shop.product("에어 비공개", false).await);
    // Newest first, two per page; flipping statuses between pages neither repeats nor skips.
    let first: Value = shop
        .app
        .get("/v1/products?size=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["total"], 5);
    assert_eq!(first["total_exact"], true);
    let page_ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["product_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(page_ids(&first), [ids[4].clone(), ids[3].clone()]);
    shop.status(
        &json!({"product_id": ids[2]}),
        "on_sale",
        &shop.seller.access,
        StatusCode::OK,
    )
    .await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = shop
        .app
        .get(&format!("/v1/products?size=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page_ids(&second), [ids[2].clone(), ids[1].clone()]);
    let third: Value = shop
        .app
        .get(&format!(
            "/v1/products?size=2&cursor={}",
            second["next_cursor"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page_ids(&third), [ids[0].clone()]);
    assert!(third["next_cursor"].is_null());
    // A cursor is bound to its filters.
    let other = shop
        .app
        .get(&format!(
            "/v1/products?size=2&status=waiting&cursor={cursor}"
        ))
        .await;
    assert_eq!(other.status(), StatusCode::BAD_REQUEST);
    // Filters.
    let on_sale: Value = shop
        .app
        .get("/v1/products?status=on_sale")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page_ids(&on_sale), [ids[2].clone()]);
    let theirs: Value = shop
        .app
        .get(&format!("/v1/products?seller_id={}", shop.other_seller.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["total"], 0);
    // Search: Korean two-syllable words, Latin words ignoring case, substrings only.
    let search = |q: &str| {
        let (shop, q) = (&shop, q.to_owned());
        async move {
            let page: Value = shop
                .app
                .get(&format!("/v1/products?q={}", urlencode(&q)))
                .await
                .json()
                .await
                .unwrap();
            let mut found: Vec<String> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect();
            found.sort();
            found
        }
    };
    assert_eq!(
        search("에어").await,
        ["나이키 에어맥스 97", "에어 조던 1 하이"]
    );
    assert_eq!(search("삼바").await, ["아디다스 삼바"]);
    assert_eq!(search("JORDAN").await, ["Air Jordan 4"]);
    assert_eq!(search("air").await, ["Air Jordan 4"]);
    assert_eq!(
        search("스니커즈").await.len(),
        5,
        "descriptions are searched"
    );
    assert!(search("맥스에").await.is_empty());
    // The seller also finds their unpublished product; visitors do not.
    let mine: Value = shop
        .send(
            Method::GET,
            "/v1/products?q=%EB%B9%84%EA%B3%B5%EA%B0%9C",
            Some(&shop.seller.access),
            None,
            &[],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page_ids(&mine), [hidden]);
    assert!(search("비공개").await.is_empty());
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn the_history_shows_lifecycle_and_stock_with_an_admin_s_reason(backend: Backend) {
    let shop = Shop::open(backend).await;
    let made = shop.product("Kayano 14", true).await;
    let product = id(&made);
    let variant = made["variants"][0]["variant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let added = shop
        .send(
            Method::POST,
            &format!("/v1/products/{product}/variants/{variant}/stock"),
            Some(&shop.seller.access),
            Some(json!({"add": 10})),
            &[("idempotency-key", "first-delivery")],
        )
        .await;
    assert_eq!(added.status(), StatusCode::OK);
    let suspended = shop
        .send(
            Method::PUT,
            &format!("/v1/products/{product}/status"),
            Some(&shop.admin),
            Some(json!({"status": "suspended", "reason": "counterfeit report #12"})),
            &[],
        )
        .await;
    assert_eq!(suspended.status(), StatusCode::OK);
    // Only an admin lifts an admin's suspension.
    shop.status(&made, "waiting", &shop.seller.access, StatusCode::CONFLICT)
        .await;
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = shop
            .send(
                Method::GET,
                &format!("/v1/products/{product}/events?size=1&after={after}"),
                Some(&shop.seller.access),
                None,
                &[],
            )
            .await
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap();
        seen.extend(items.iter().cloned());
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    let types: Vec<&str> = seen
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "ProductRegistered",
            "ProductStatusChanged",
            "StockAdded",
            "ProductStatusChanged"
        ]
    );
    assert_eq!(seen[2]["stream_type"], "stock");
    assert_eq!(seen[3]["data"]["data"]["reason"], "counterfeit report #12");
    let positions: Vec<u64> = seen
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    let bad = shop
        .send(
            Method::GET,
            &format!("/v1/products/{product}/events?size=0"),
            Some(&shop.seller.access),
            None,
            &[],
        )
        .await;
    problem(bad, StatusCode::BAD_REQUEST, "invalid-query").await;
}

async fn a_suspended_seller_cannot_act_and_their_products_are_suspended(backend: Backend) {
    let shop = Shop::open(backend).await;
    let made = shop.product("Gazelle", true).await;
    let product = id(&made);
    // One the seller suspended themselves: the admin's suspension takes it over.
    let own = id(&shop.product("Samba", true).await);
    shop.status(
        &json!({"product_id": own}),
        "suspended",
        &shop.seller.access,
        StatusCode::OK,
    )
    .await;
    let path = format!("/v1/admin/sellers/{}/suspension", shop.seller.id);
    let by_seller = shop
        .send(
            Method::PUT,
            &path,
            Some(&shop.other_seller.access),
            Some(json!({"reason": "x"})),
            &[],
        )
        .await;
    problem(by_seller, StatusCode::FORBIDDEN, "forbidden").await;
    let done = shop
        .send(
            Method::PUT,
            &path,
            Some(&shop.admin),
            Some(json!({"reason": "fraud"})),
            &[],
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(done.json::<Value>().await.unwrap()["products_suspended"], 2);
    problem(
        shop.view(&product, None).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let refused = shop
        .send(
            Method::POST,
            "/v1/products",
            Some(&shop.seller.access),
            Some(json!({"category_id": shop.category, "name": "x", "price": 1})),
            &[],
        )
        .await;
    problem(refused, StatusCode::FORBIDDEN, "seller-suspended").await;
    let refused = shop
        .send(
            Method::PATCH,
            &format!("/v1/products/{product}"),
            Some(&shop.seller.access),
            Some(json!({"name": "y"})),
            &[],
        )
        .await;
    problem(refused, StatusCode::FORBIDDEN, "seller-suspended").await;
    let lifted = shop
        .send(Method::DELETE, &path, Some(&shop.admin), None, &[])
        .await;
    assert_eq!(lifted.status(), StatusCode::NO_CONTENT);
    let again = shop
        .send(
            Method::PATCH,
            &format!("/v1/products/{product}"),
            Some(&shop.seller.access),
            Some(json!({"name": "y"})),
            &[],
        )
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    // Lifted: the seller acts again, but resumes neither product; an admin does.
    for p in [&product, &own] {
        let resumed = shop
            .send(
                Method::PUT,
                &format!("/v1/products/{p}/status"),
                Some(&shop.seller.access),
                Some(json!({"status": "waiting"})),
                &[],
            )
            .await;
        assert_eq!(resumed.status(), StatusCode::CONFLICT, "{p}");
    }
}

async fn the_wishlist_keeps_one_entry_per_product_and_only_visible_ones(backend: Backend) {
    let shop = Shop::open(backend).await;
    let a = id(&shop.product("Wish A", true).await);
    let b = shop.product("Wish B", true).await;
    let hidden = id(&shop.product("Wish hidden", false).await);
    let token = shop.buyer.access.clone();
    let put = |p: String| {
        let (shop, token) = (&shop, token.clone());
        async move {
            shop.send(
                Method::PUT,
                &format!("/v1/wishlist/{p}"),
                Some(&token),
                None,
                &[],
            )
            .await
        }
    };
    for p in [a.clone(), a.clone(), id(&b)] {
        assert_eq!(put(p).await.status(), StatusCode::NO_CONTENT);
    }
    problem(put(hidden).await, StatusCode::NOT_FOUND, "not-found").await;
    problem(
        put(uuid::Uuid::now_v7().to_string()).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let list = || {
        let (shop, token) = (&shop, token.clone());
        async move {
            shop.send(Method::GET, "/v1/wishlist", Some(&token), None, &[])
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let wished = list().await;
    assert_eq!(wished["count"], 2);
    assert_eq!(wished["items"][0]["name"], "Wish B");
    assert_eq!(wished["items"][0]["currency"], "KRW");
    // A product that becomes hidden drops out of the view and the count.
    shop.status(&b, "not_published", &shop.seller.access, StatusCode::OK)
        .await;
    let wished = list().await;
    assert_eq!(wished["count"], 1);
    assert_eq!(wished["items"][0]["product_id"], a);
    for p in [a.clone(), uuid::Uuid::now_v7().to_string()] {
        let gone = shop
            .send(
                Method::DELETE,
                &format!("/v1/wishlist/{p}"),
                Some(&token),
                None,
                &[],
            )
            .await;
        assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(list().await["count"], 0);
    let anonymous = shop
        .send(Method::GET, "/v1/wishlist", None, None, &[])
        .await;
    problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // Another member's list is their own.
    let other: Value = shop
        .send(
            Method::GET,
            "/v1/wishlist",
            Some(&shop.other_seller.access),
            None,
            &[],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(other["count"], 0);
}

async fn a_category_with_products_cannot_be_archived_and_an_archived_one_takes_none(
    backend: Backend,
) {
    let shop = Shop::open(backend).await;
    let made = shop.product("Cortez", false).await;
    let path = format!("/v1/categories/{}", shop.category);
    let refused = shop
        .send(Method::DELETE, &path, Some(&shop.admin), None, &[])
        .await;
    problem(refused, StatusCode::CONFLICT, "category-in-use").await;
    let deleted = shop
        .send(
            Method::DELETE,
            &format!("/v1/products/{}", id(&made)),
            Some(&shop.seller.access),
            None,
            &[],
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let archived = shop
        .send(Method::DELETE, &path, Some(&shop.admin), None, &[])
        .await;
    assert_eq!(archived.status(), StatusCode::NO_CONTENT);
    let refused = shop
        .send(
            Method::POST,
            "/v1/products",
            Some(&shop.seller.access),
            Some(json!({"category_id": shop.category, "name": "x", "price": 1})),
            &[],
        )
        .await;
    let body = problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    assert_eq!(body["errors"][0]["field"], "category_id");
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_page_cursor_neither_repeats_nor_skips_when_products_hide_or_appear_between_pages(
    backend: Backend,
) {
    let shop = Shop::open(backend).await;
    let mut made = Vec::new();
    for n in 0..6 {
        made.push(shop.product(&format!("P{n}"), true).await);
    }
    let first: Value = shop
        .app
        .get("/v1/products?size=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&first), ["P5", "P4"]);
    // Between pages: a product of page 1 hides, one of a later page hides, a new one appears.
    shop.status(
        &made[4],
        "not_published",
        &shop.seller.access,
        StatusCode::OK,
    )
    .await;
    shop.status(
        &made[2],
        "not_published",
        &shop.seller.access,
        StatusCode::OK,
    )
    .await;
    shop.product("P6", true).await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = shop
        .app
        .get(&format!("/v1/products?size=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    // An offset would now skip P3 (two of the first four are gone); the cursor does not.
    assert_eq!(names(&second), ["P3", "P1"]);
    let third: Value = shop
        .app
        .get(&format!(
            "/v1/products?size=2&cursor={}",
            second["next_cursor"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&third), ["P0"]);
    assert!(third["next_cursor"].is_null());
    // A cursor changed by one character is refused.
    let mut forged = cursor.to_owned();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let refused = shop
        .app
        .get(&format!("/v1/products?size=2&cursor={forged}"))
        .await;
    problem(refused, StatusCode::BAD_REQUEST, "invalid-cursor").await;
}

async fn the_total_is_counted_up_to_its_cap_and_says_when_it_is_not_exact(backend: Backend) {
    use openrun::catalog::Viewer;
    use openrun::catalog::live::Filter;
    let shop = Shop::open(backend).await;
    for n in 0..4 {
        shop.product(&format!("C{n}"), true).await;
    }
    shop.product("hidden", false).await;
    let list = |cap: usize, size: usize| {
        shop.app.state.catalog.list_counting_up_to(
            &Viewer::Public(None),
            &Filter::default(),
            None,
            size,
            Utc::now(),
            cap,
        )
    };
    // Exactly at the cap, with a hidden product after the matches: still exact.
    let at = list(4, 2);
    assert_eq!((at.total, at.total_exact, at.items.len()), (4, true, 2));
    assert!(at.next.is_some());
    let over = list(3, 2);
    assert_eq!((over.total, over.total_exact), (3, false));
    let under = list(10, 10);
    assert_eq!(
        (under.total, under.total_exact, under.items.len()),
        (4, true, 4)
    );
    assert!(under.next.is_none());
}

async fn a_renamed_product_is_found_by_its_new_name_only(backend: Backend) {
    let shop = Shop::open(backend).await;
    let made = shop.product("조던 레트로", true).await;
    let renamed = shop
        .send(
            Method::PATCH,
            &format!("/v1/products/{}", id(&made)),
            Some(&shop.seller.access),
            Some(json!({"name": "덩크 로우", "description": "빈티지"})),
            &[],
        )
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    for (q, hits) in [("레트로", 0), ("스니커즈", 0), ("덩크", 1), ("빈티지", 1)] {
        let page: Value = shop
            .app
            .get(&format!("/v1/products?q={}", urlencode(q)))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(page["total"], hits, "{q}");
    }
}

/// Every edit of a text adds a search document; past a bound the index is rebuilt from the
/// current texts, so it grows with the catalog, not with its edit history, and still finds
/// the current text only.
async fn edits_past_the_stale_bound_rebuild_the_search_index(backend: Backend) {
    let shop = Shop::open(backend).await;
    let made = shop.product("Edited often", true).await;
    let stream = openrun::eventstore::StreamRef::new("product", id(&made));
    let edits: Vec<_> = (0..1_100)
        .map(|i| {
            let events = Arc::clone(&shop.app.events);
            let stream = stream.clone();
            tokio::spawn(async move {
                let change = openrun_domain::product::ProductEvent::ProductDetailsChanged {
                    category_id: None,
                    name: Some(format!("edition{i:04}")),
                    description: None,
                };
                let event =
                    openrun::eventstore::EventData::json("ProductDetailsChanged", "1.0", &change)
                        .unwrap();
                events
                    .append(
                        stream,
                        openrun::eventstore::ExpectedVersion::Any,
                        vec![event],
                        openrun::eventstore::Metadata::default(),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut last = 0;
    for edit in edits {
        last = last.max(*edit.await.unwrap().positions.end());
    }
    let catalog = &shop.app.state.catalog;
    assert!(
        catalog
            .wait_for(last, std::time::Duration::from_secs(30))
            .await
    );
    let documents = catalog.search_documents();
    assert!(
        documents < 1_100,
        "{documents} documents for one product after 1,100 edits: never rebuilt"
    );
    let current = catalog
        .product(openrun_domain::ProductId::from_uuid(
            id(&made).parse().unwrap(),
        ))
        .unwrap()
        .state
        .name
        .clone();
    for (q, hits) in [(current.as_str(), 1), ("edited", 0)] {
        let page: Value = shop
            .app
            .get(&format!("/v1/products?q={}", urlencode(q)))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(page["total"], hits, "{q}");
    }
}

async fn product_texts_refuse_control_bidi_and_invisible_characters(backend: Backend) {
    let shop = Shop::open(backend).await;
    let head = shop.head().await;
    let base = json!({"category_id": shop.category, "name": "Shoe", "price": 1000});
    for (field, value) in [
        ("name", json!("nul\u{0}name")),
        ("name", json!("esc\u{1b}[2J")),
        ("name", json!("\u{202e}reversed")),
        ("name", json!("\u{200b}")),
        ("description", json!("a\u{0}b")),
        ("description", json!("\u{2066}isolate\u{2069}")),
        ("variants", json!(["S", "S\u{200b}"])),
        ("variants", json!(["x\u{0}"])),
    ] {
        let mut body = base.clone();
        body[field] = value;
        let refused = shop
            .send(
                Method::POST,
                "/v1/products",
                Some(&shop.seller.access),
                Some(body),
                &[],
            )
            .await;
        let problem = problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
        assert_eq!(problem["errors"][0]["field"], field);
    }
    // Line breaks are fine in a description.
    let mut body = base.clone();
    body["description"] = json!("first line\nsecond\tline");
    let made = shop
        .send(
            Method::POST,
            "/v1/products",
            Some(&shop.seller.access),
            Some(body),
            &[],
        )
        .await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let product = id(&made.json().await.unwrap());
    let head = head + 1;
    let path = format!("/v1/products/{product}");
    for (method, path, body, field) in [
        (
            Method::POST,
            format!("{path}/variants"),
            json!({"label": "\u{feff}M"}),
            "label",
        ),
        (
            Method::PUT,
            format!("{path}/status"),
            json!({"status": "waiting", "reason": "\u{1b}[31m"}),
            "reason",
        ),
        (
            Method::POST,
            format!("{path}/schedules"),
            json!({"status": "waiting", "at": "9999-12-31T23:59:59-23:59"}),
            "at",
        ),
    ] {
        let refused = shop
            .send(method, &path, Some(&shop.seller.access), Some(body), &[])
            .await;
        let problem = problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
        assert_eq!(problem["errors"][0]["field"], field);
    }
    // An admin's suspension says why.
    let silent = shop
        .send(
            Method::PUT,
            &format!("{path}/status"),
            Some(&shop.admin),
            Some(json!({"status": "suspended"})),
            &[],
        )
        .await;
    problem(silent, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    assert_eq!(shop.head().await, head, "nothing refused reached the log");
}

async fn another_seller_s_hidden_product_is_not_found_by_writes_either(backend: Backend) {
    let shop = Shop::open(backend).await;
    let made = shop.product("Unannounced", false).await;
    let product = id(&made);
    let variant = made["variants"][0]["variant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let unknown = uuid::Uuid::now_v7();
    for (method, path, body) in [
        (
            Method::PATCH,
            "/v1/products/{}".to_string(),
            Some(json!({"price": 5})),
        ),
        (
            Method::PUT,
            "/v1/products/{}/status".to_string(),
            Some(json!({"status": "waiting"})),
        ),
        (
            Method::POST,
            format!("/v1/products/{{}}/variants/{variant}/stock"),
            Some(json!({"add": 5})),
        ),
        (Method::DELETE, "/v1/products/{}".to_string(), None),
    ] {
        // The same answer for another seller's hidden product as for no product at all.
        for id in [product.clone(), unknown.to_string()] {
            let refused = shop
                .send(
                    method.clone(),
                    &path.replace("{}", &id),
                    Some(&shop.other_seller.access),
                    body.clone(),
                    &[("idempotency-key", "probe")],
                )
                .await;
            problem(refused, StatusCode::NOT_FOUND, "not-found").await;
        }
    }
    // Archived categories are listed to admins only.
    let archived = crate::members::post(
        &shop.app,
        "/v1/categories",
        &json!({"name": "Gone"}),
        Some(&shop.admin),
    )
    .await;
    let archived = archived.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let gone = shop
        .send(
            Method::DELETE,
            &format!("/v1/categories/{archived}"),
            Some(&shop.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let count = |token: Option<String>| {
        let shop = &shop;
        async move {
            let listed: Value = shop
                .send(
                    Method::GET,
                    "/v1/categories?include_archived=true",
                    token.as_deref(),
                    None,
                    &[],
                )
                .await
                .json()
                .await
                .unwrap();
            listed["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(count(None).await, 1);
    assert_eq!(count(Some(shop.seller.access.clone())).await, 1);
    assert_eq!(count(Some(shop.admin.clone())).await, 2);
}

async fn a_cancel_racing_the_fire_has_one_winner(backend: Backend) {
    let shop = Shop::open(backend).await;
    let made = shop.product("Race", true).await;
    shop.status(&made, "on_sale", &shop.seller.access, StatusCode::OK)
        .await;
    let product = id(&made);
    let t = Utc::now().trunc_subsecs(0) + chrono::Duration::seconds(12);
    let schedules = format!("/v1/products/{product}/schedules");
    let made = shop
        .send(
            Method::POST,
            &schedules,
            Some(&shop.seller.access),
            Some(json!({"status": "ended", "at": t.to_rfc3339()})),
            &[],
        )
        .await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let sid = made.json::<Value>().await.unwrap()["schedule_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A cancel at the instant, as the scheduler comes to fire it: either may win.
    until(t).await;
    let cancel_won = {
        let answer = shop
            .send(
                Method::DELETE,
                &format!("{schedules}/{sid}"),
                Some(&shop.seller.access),
                None,
                &[],
            )
            .await;
        match answer.status() {
            StatusCode::NO_CONTENT => true,
            StatusCode::CONFLICT => {
                let body: Value = answer.json().await.unwrap();
                assert_eq!(body["type"], "/problems/schedule-closed", "{body}");
                false
            }
            other => panic!("a cancel got {other}"),
        }
    };
    // A 409 means the schedule is in effect (its instant passed, or it fired): it fires
    // once; a fire decided after a 204 finds the schedule cancelled and records nothing.
    let stream = openrun::eventstore::StreamRef::new("product", product.clone());
    let count = |events: &[openrun::eventstore::RecordedEvent]| {
        let ended = events
            .iter()
            .filter(|e| {
                e.event_type == "ProductStatusChanged" && e.payload["data"]["to"] == "ended"
            })
            .count();
        let cancelled = events
            .iter()
            .filter(|e| e.event_type == "ScheduledStatusChangeCancelled")
            .count();
        (ended, cancelled)
    };
    let started = std::time::Instant::now();
    let (ended, cancelled) = loop {
        let events = shop.app.events.read_stream(&stream, 1, 1000).await.unwrap();
        let (ended, cancelled) = count(&events);
        if cancel_won || ended > 0 || started.elapsed() > std::time::Duration::from_secs(10) {
            break (ended, cancelled);
        }
        // Woken by the next commit of this process (where the scheduler fires), or polled.
        let mut appended = shop.app.events.subscribe();
        let _ =
            tokio::time::timeout(std::time::Duration::from_millis(200), appended.changed()).await;
    };
    eprintln!(
        "the race was won by the {}",
        if cancel_won { "cancel" } else { "fire" }
    );
    if cancel_won {
        assert_eq!((ended, cancelled), (0, 1), "a cancelled schedule fired");
    } else {
        assert_eq!((ended, cancelled), (1, 0), "a fired schedule was cancelled");
    }
}
