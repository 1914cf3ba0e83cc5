//! Logins, tokens and device sessions over HTTP on both backends, the forgeries an access
//! check must refuse, and the rate limits.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, on_both_backends};
use crate::members::{PASSWORD, get, login, post, send, sign_up, verified_member};

on_both_backends!(
    refresh_rotates_and_a_reused_refresh_token_ends_the_session,
    logout_logout_all_and_the_session_list,
    forged_expired_and_misused_tokens_are_refused,
    a_wrong_password_and_an_unknown_login_id_look_the_same,
    login_is_rate_limited_per_account_and_per_address_with_retry_after,
    failed_logins_lock_the_account_for_the_hour,
    sign_up_and_resend_are_rate_limited_per_address,
    behind_a_trusted_proxy_the_forwarded_client_is_limited,
);

async fn sign_up_from(app: &TestApp, n: u32, forwarded_for: &str) -> StatusCode {
    app.client
        .post(app.url("/v1/members"))
        .header("x-forwarded-for", forwarded_for)
        .json(&crate::members::sign_up_body(n))
        .send()
        .await
        .unwrap()
        .status()
}

async fn behind_a_trusted_proxy_the_forwarded_client_is_limited(backend: Backend) {
    // Not configured: the header is the caller's own word and changes nothing.
    let app = TestApp::spawn_with(backend, |c| {
        c.auth.rate_limits.signups_per_address_per_hour = 1.try_into().unwrap();
    })
    .await;
    assert_eq!(
        sign_up_from(&app, 50, "198.51.100.1").await,
        StatusCode::CREATED
    );
    assert_eq!(
        sign_up_from(&app, 51, "198.51.100.2").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    app.stop().await;
    // The test client connects from 127.0.0.1: as a trusted proxy, the clients it names
    // have budgets of their own, and a client cannot escape its own by prepending addresses.
    let app = TestApp::spawn_with(backend, |c| {
        c.auth.rate_limits.signups_per_address_per_hour = 1.try_into().unwrap();
        c.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    assert_eq!(
        sign_up_from(&app, 52, "198.51.100.1").await,
        StatusCode::CREATED
    );
    assert_eq!(
        sign_up_from(&app, 53, "198.51.100.2").await,
        StatusCode::CREATED
    );
    assert_eq!(
        sign_up_from(&app, 54, "203.0.113.5, 198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    app.stop().await;
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    post(
        app,
        "/v1/auth/refresh",
        &json!({"refresh_token": token}),
        None,
    )
    .await
}

async fn refresh_rotates_and_a_reused_refresh_token_ends_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let m = verified_member(&app, 30).await;
    let first = refresh(&app, &m.refresh).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        first["session_id"],
        json!(m.session_id),
        "same device session"
    );
    let next_refresh = first["refresh_token"].as_str().unwrap();
    let next_access = first["access_token"].as_str().unwrap();
    assert_ne!(next_refresh, m.refresh);
    assert_eq!(
        get(&app, "/v1/members/me", next_access).await.status(),
        StatusCode::OK
    );

    // The rotated token again: refused, and the whole session ends with it.
    let reused = refresh(&app, &m.refresh).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&app, next_refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&app, "/v1/members/me", next_access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&app, "/v1/members/me", &m.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Garbage and a guessed secret for a live session are simply refused.
    let other = login(&app, "member30", PASSWORD, "phone").await;
    let guess = format!("{}.{}", other.session_id, "A".repeat(43));
    assert_eq!(
        refresh(&app, &guess).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(&app, "nonsense").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&app, "/v1/members/me", &other.access).await.status(),
        StatusCode::OK
    );
    assert_eq!(refresh(&app, &other.refresh).await.status(), StatusCode::OK);
    app.stop().await;
}

async fn logout_logout_all_and_the_session_list(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let laptop = verified_member(&app, 31).await;
    let phone = login(&app, "member31", PASSWORD, "phone").await;
    let tablet = login(&app, "member31", PASSWORD, "tablet").await;
    let list: Value = get(&app, "/v1/auth/sessions", &phone.access)
        .await
        .json()
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    let devices: Vec<&str> = items
        .iter()
        .map(|s| s["device"].as_str().unwrap())
        .collect();
    assert_eq!(devices, vec!["laptop", "phone", "tablet"]);
    let current: Vec<bool> = items
        .iter()
        .map(|s| s["current"].as_bool().unwrap())
        .collect();
    assert_eq!(current, vec![false, true, false]);
    assert!(items[0]["created_at"].is_string() && items[0]["last_used_at"].is_string());

    // End one from another device.
    let path = format!("/v1/auth/sessions/{}", tablet.session_id);
    assert_eq!(
        send(&app, Method::DELETE, &path, &phone.access, None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        get(&app, "/v1/members/me", &tablet.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(&app, &tablet.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, Method::DELETE, &path, &phone.access, None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // Log out here: this session ends, the laptop goes on.
    let logout = post(&app, "/v1/auth/logout", &json!({}), Some(&phone.access)).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get(&app, "/v1/members/me", &phone.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&app, "/v1/members/me", &laptop.access).await.status(),
        StatusCode::OK
    );
    let list: Value = get(&app, "/v1/auth/sessions", &laptop.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let again = login(&app, "member31", PASSWORD, "desktop").await;
    let all = post(
        &app,
        "/v1/auth/logout-all",
        &json!({}),
        Some(&laptop.access),
    )
    .await;
    assert_eq!(all.status(), StatusCode::NO_CONTENT);
    for token in [&laptop.access, &again.access] {
        assert_eq!(
            get(&app, "/v1/members/me", token).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        refresh(&app, &again.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let anonymous = app
        .client
        .post(app.url("/v1/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn sign(header: &jsonwebtoken::Header, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

async fn forged_expired_and_misused_tokens_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let m = verified_member(&app, 32).await;
    let secret = app.config.secrets.jwt_secret.expose_secret().to_vec();
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64, aud: &str| {
        json!({"sub": m.id, "sid": m.session_id, "role": "admin", "aud": aud, "iss": "openrun",
               "iat": now, "exp": exp})
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    // The control: a token made this way with the right key passes.
    let good = sign(&header, &claims(now + 300, "openrun"), &secret);
    assert_eq!(
        get(&app, "/v1/members/me", &good).await.status(),
        StatusCode::OK
    );

    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "at+jwt"})),
        b64(&claims(now + 300, "openrun"))
    );
    let mut hs512 = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512);
    hs512.typ = Some("at+jwt".into());
    let mut plain_jwt = header.clone();
    plain_jwt.typ = Some("JWT".into());
    let cases = [
        ("alg none", alg_none),
        (
            "another key",
            sign(
                &header,
                &claims(now + 300, "openrun"),
                b"another key of 32 bytes or more!!",
            ),
        ),
        (
            "expired",
            sign(&header, &claims(now - 1, "openrun"), &secret),
        ),
        (
            "another audience",
            sign(&header, &claims(now + 300, "elsewhere"), &secret),
        ),
        (
            "HS512, not on the allow-list",
            sign(&hs512, &claims(now + 300, "openrun"), &secret),
        ),
        (
            "typ JWT, not at+jwt",
            sign(&plain_jwt, &claims(now + 300, "openrun"), &secret),
        ),
        ("a refresh token", m.refresh.clone()),
        ("garbage", "not.a.token".into()),
    ];
    for (why, token) in cases {
        let response = get(&app, "/v1/members/me", &token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{why}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{why}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "/problems/invalid-token", "{why}");
    }
    let basic = app
        .client
        .get(app.url("/v1/members/me"))
        .basic_auth("member32", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

async fn a_wrong_password_and_an_unknown_login_id_look_the_same(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    sign_up(&app, 33).await;
    let mut bodies = Vec::new();
    for (login_id, password) in [
        ("member33", "wrong password!"),
        ("nobody99", PASSWORD),
        ("bad id!", PASSWORD),
    ] {
        let response = post(
            &app,
            "/v1/auth/login",
            &json!({"login_id": login_id, "password": password}),
            None,
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{login_id}");
        bodies.push(response.json::<Value>().await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert_eq!(bodies[0]["type"], "/problems/invalid-credentials");
    // Login ids are matched without regard to case.
    login(&app, "MEMBER33", PASSWORD, "x").await;
    app.stop().await;
}

async fn login_is_rate_limited_per_account_and_per_address_with_retry_after(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.auth.rate_limits.login_per_account_per_minute = 2.try_into().unwrap();
        c.auth.rate_limits.login_per_address_per_minute = 4.try_into().unwrap();
    })
    .await;
    sign_up(&app, 34).await;
    let attempt = |login_id: &'static str| {
        let app = &app;
        async move {
            post(
                app,
                "/v1/auth/login",
                &json!({"login_id": login_id, "password": PASSWORD}),
                None,
            )
            .await
        }
    };
    assert_eq!(attempt("member34").await.status(), StatusCode::OK);
    assert_eq!(attempt("member34").await.status(), StatusCode::OK);
    let limited = attempt("member34").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        limited.json::<Value>().await.unwrap()["type"],
        "/problems/rate-limited"
    );
    // Another account from the same address: one more passes the account limit, then the
    // address limit (4 a minute) stops it.
    assert_eq!(attempt("nobody11").await.status(), StatusCode::UNAUTHORIZED);
    let by_address = attempt("nobody22").await;
    assert_eq!(by_address.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(by_address.headers().contains_key("retry-after"));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("openrun_rate_limited_total{limit=\"login_address\"}"),
        "{metrics}"
    );
    app.stop().await;
}

async fn failed_logins_lock_the_account_for_the_hour(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.auth.rate_limits.failed_logins_per_account_per_hour = 3.try_into().unwrap();
    })
    .await;
    sign_up(&app, 35).await;
    for _ in 0..3 {
        let wrong = post(
            &app,
            "/v1/auth/login",
            &json!({"login_id": "member35", "password": "wrong password!"}),
            None,
        )
        .await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let locked = post(
        &app,
        "/v1/auth/login",
        &json!({"login_id": "member35", "password": PASSWORD}),
        None,
    )
    .await;
    assert_eq!(
        locked.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password"
    );
    let retry: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 60 && retry <= 3600, "{retry}");
    app.stop().await;

    // A wrong current password at a password change counts as a failed login.
    let app = TestApp::spawn_with(backend, |c| {
        c.auth.rate_limits.failed_logins_per_account_per_hour = 2.try_into().unwrap();
    })
    .await;
    sign_up(&app, 39).await;
    let m = login(&app, "member39", PASSWORD, "x").await;
    let change = json!({"current_password": "a guess at it", "new_password": "whatever it is now"});
    for expected in [
        StatusCode::UNPROCESSABLE_ENTITY,
        StatusCode::UNPROCESSABLE_ENTITY,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        let r = send(
            &app,
            Method::PUT,
            "/v1/members/me/password",
            &m.access,
            Some(&change),
        )
        .await;
        assert_eq!(r.status(), expected);
    }
    app.stop().await;

    // Guesses sent in parallel do not slip past the cap: every attempt is counted before
    // its password is checked.
    let app = TestApp::spawn_with(backend, |c| {
        c.auth.rate_limits.failed_logins_per_account_per_hour = 3.try_into().unwrap();
    })
    .await;
    sign_up(&app, 38).await;
    let m = login(&app, "member38", PASSWORD, "x").await;
    let guesses = (0..10).map(|i| {
        let (app, access) = (&app, m.access.clone());
        async move {
            let change = json!({"current_password": format!("guess number {i}"),
                                "new_password": "whatever it is now"});
            send(
                app,
                Method::PUT,
                "/v1/members/me/password",
                &access,
                Some(&change),
            )
            .await
            .status()
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNPROCESSABLE_ENTITY)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, refused), (3, 7), "{statuses:?}");
    app.stop().await;
}

async fn sign_up_and_resend_are_rate_limited_per_address(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.auth.rate_limits.signups_per_address_per_hour = 2.try_into().unwrap();
        c.auth.rate_limits.resends_per_address_per_hour = 1.try_into().unwrap();
    })
    .await;
    sign_up(&app, 36).await;
    sign_up(&app, 37).await;
    let third = post(&app, "/v1/members", &crate::members::sign_up_body(38), None).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key("retry-after"));
    let m = login(&app, "member36", PASSWORD, "x").await;
    let first = post(
        &app,
        "/v1/members/verification-email",
        &json!({}),
        Some(&m.access),
    )
    .await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let second = post(
        &app,
        "/v1/members/verification-email",
        &json!({}),
        Some(&m.access),
    )
    .await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    app.stop().await;
}
