//! The catalog over HTTP: categories.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, on_both_backends};
use crate::members::verified_member;

on_both_backends!(categories_are_listed_by_anyone_and_made_and_archived_by_admins);

async fn admin(app: &TestApp) -> String {
    crate::members::admin_token(app, "catadmin").await
}

async fn kind(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    body["type"].as_str().unwrap().to_owned()
}

async fn categories_are_listed_by_anyone_and_made_and_archived_by_admins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = admin(&app).await;
    let buyer = verified_member(&app, 1).await;
    let post = |token: Option<&str>, body: Value| {
        let mut request = app.client.post(app.url("/v1/categories")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let made = post(Some(&admin), json!({"name": "  Sneakers "}))
        .await
        .unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);
    let made: Value = made.json().await.unwrap();
    assert_eq!(made["name"], "Sneakers");
    let id = made["id"].as_str().unwrap().to_owned();

    // Unique after NFKC and case folding: full-width and upper case are the same name.
    for name in ["SNEAKERS", "Ｓｎｅａｋｅｒｓ"] {
        let clash = post(Some(&admin), json!({ "name": name })).await.unwrap();
        assert_eq!(
            kind(clash, StatusCode::CONFLICT).await,
            "/problems/duplicate"
        );
    }
    for bad in [
        json!({"name": " "}),
        json!({"name": "a".repeat(51)}),
        json!({"name": "a\u{202E}b"}),
    ] {
        let refused = post(Some(&admin), bad).await.unwrap();
        assert_eq!(
            kind(refused, StatusCode::UNPROCESSABLE_ENTITY).await,
            "/problems/validation"
        );
    }
    let unknown_field = post(Some(&admin), json!({"name": "Bags", "id": "x"}))
        .await
        .unwrap();
    assert_eq!(unknown_field.status(), StatusCode::BAD_REQUEST);
    // Roles: a buyer is 403, nobody is 401.
    let buyer_post = post(Some(&buyer.access), json!({"name": "Bags"}))
        .await
        .unwrap();
    assert_eq!(
        kind(buyer_post, StatusCode::FORBIDDEN).await,
        "/problems/forbidden"
    );
    let anonymous = post(None, json!({"name": "Bags"})).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Anyone lists; an archived category leaves the list but is still there when asked for.
    let list = |query: &str| {
        let url = app.url(&format!("/v1/categories{query}"));
        let client = app.client.clone();
        async move {
            let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list("").await, ["Sneakers"]);
    let archive = |token: &str, id: &str| {
        app.client
            .delete(app.url(&format!("/v1/categories/{id}")))
            .bearer_auth(token)
            .send()
    };
    let by_buyer = archive(&buyer.access, &id).await.unwrap();
    assert_eq!(by_buyer.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        archive(&admin, &id).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let again = archive(&admin, &id).await.unwrap();
    assert_eq!(
        kind(again, StatusCode::CONFLICT).await,
        "/problems/category-archived"
    );
    let missing = archive(&admin, &uuid::Uuid::now_v7().to_string())
        .await
        .unwrap();
    assert_eq!(
        kind(missing, StatusCode::NOT_FOUND).await,
        "/problems/not-found"
    );
    let malformed = archive(&admin, "not-a-uuid").await.unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert!(list("").await.is_empty());
    // Archived categories are listed to admins only.
    assert!(list("?include_archived=true").await.is_empty());
    let listed: Value = app
        .client
        .get(app.url("/v1/categories?include_archived=true"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["name"], "Sneakers");
    // The archive is recorded: who and when.
    let who: Option<String> = match &app.db {
        openrun::db::Database::MySql(pool) => {
            sqlx::query_scalar("SELECT archived_by FROM categories WHERE id = ?")
                .bind(&id)
                .fetch_one(pool)
                .await
                .unwrap()
        }
        openrun::db::Database::Sqlite(pool) => {
            sqlx::query_scalar("SELECT archived_by FROM categories WHERE id = ?")
                .bind(&id)
                .fetch_one(pool)
                .await
                .unwrap()
        }
    };
    assert!(who.is_some_and(|w| !w.is_empty()));
    app.stop().await;
}
