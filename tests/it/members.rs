//! Members over HTTP on both backends: sign-up, the verification e-mail through a real SMTP
//! server (MySQL side) or the outbox (SQLite side), profile, addresses, roles, and what the
//! database holds.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, on_both_backends};

on_both_backends!(
    sign_up_mails_a_single_use_link_that_makes_the_member_basic,
    an_expired_link_is_refused_and_resend_sends_a_new_one,
    duplicate_login_id_email_or_phone_is_409_naming_the_fields,
    invalid_sign_ups_are_422_naming_every_field,
    ids_and_roles_in_request_bodies_are_ignored,
    a_raw_dump_of_the_database_holds_no_personal_data,
    the_profile_is_read_and_changed_by_its_owner_only,
    password_change_needs_the_current_one_and_ends_other_sessions,
    addresses_are_for_verified_members_and_at_most_five,
    ten_concurrent_adds_on_four_addresses_let_exactly_one_win,
    member_a_cannot_read_or_change_member_b_s_things,
    an_admin_grants_roles_and_only_an_admin,
    the_link_follows_public_base_url_and_bodies_must_be_json,
);

pub const PASSWORD: &str = "correct horse battery";

/// A valid sign-up body, unique by `n`.
pub fn sign_up_body(n: u32) -> Value {
    json!({
        "login_id": format!("member{n}"),
        "password": PASSWORD,
        "name": format!("홍길동{n}"),
        "phone": format!("010-5{n:03}-{n:04}"),
        "email": format!("member{n}.test@example.co.kr"),
        "address": {"line1": format!("서울시 강남구 테헤란로 {n}길"), "line2": format!("{n}층 비밀의 방"), "postal_code": "06236"}
    })
}

/// A signed-in member.
pub struct Member {
    pub id: String,
    pub login_id: String,
    pub access: String,
    pub refresh: String,
    pub session_id: String,
}

pub async fn post(
    app: &TestApp,
    path: &str,
    body: &Value,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

pub async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.unwrap()
}

pub async fn get(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    send(app, reqwest::Method::GET, path, token, None).await
}

pub async fn login(app: &TestApp, login_id: &str, password: &str, device: &str) -> Member {
    let response = post(
        app,
        "/v1/auth/login",
        &json!({"login_id": login_id, "password": password, "device_name": device}),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "login of {login_id}");
    let pair: Value = response.json().await.unwrap();
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 900);
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let me: Value = get(app, "/v1/members/me", &access)
        .await
        .json()
        .await
        .unwrap();
    Member {
        id: me["id"].as_str().unwrap().to_owned(),
        login_id: login_id.to_owned(),
        access,
        refresh: pair["refresh_token"].as_str().unwrap().to_owned(),
        session_id: pair["session_id"].as_str().unwrap().to_owned(),
    }
}

/// The verification tokens of every message sent to `email` (in no particular order: files
/// written in the same instant have no order).
pub fn tokens_in_mails(app: &TestApp, email: &str) -> Vec<String> {
    app.mails()
        .iter()
        .filter(|m| m.contains(&format!("To: {email}")))
        .map(|mail| {
            // Undo quoted-printable: soft line breaks and the encoded '='.
            let mail = mail
                .replace("=\r\n", "")
                .replace("=\n", "")
                .replace("=3D", "=");
            let at =
                mail.find("verify?token=").expect("a verification link") + "verify?token=".len();
            mail[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect()
        })
        .collect()
}

/// The verification token of the one message sent to `email`.
pub fn token_in_mail(app: &TestApp, email: &str) -> String {
    let mut tokens = tokens_in_mails(app, email);
    assert_eq!(tokens.len(), 1, "one mail to {email}");
    tokens.remove(0)
}

/// Signs up member `n` (unverified), without logging in.
pub async fn sign_up(app: &TestApp, n: u32) -> Value {
    let response = post(app, "/v1/members", &sign_up_body(n), None).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// Signs up member `n`, follows the e-mailed link, and logs in.
/// A verified admin made the way the CLI makes one, signed in: its access token.
pub async fn admin_token(app: &TestApp, login_id: &str) -> String {
    let email = format!("{login_id}@example.co.kr");
    app.state
        .members
        .create_admin(login_id, &email, PASSWORD.into())
        .await
        .unwrap();
    login(app, login_id, PASSWORD, "laptop").await.access
}

pub async fn verified_member(app: &TestApp, n: u32) -> Member {
    let body = sign_up_body(n);
    sign_up(app, n).await;
    let token = token_in_mail(app, body["email"].as_str().unwrap());
    let verified = app.get(&format!("/v1/members/verify?token={token}")).await;
    assert_eq!(verified.status(), StatusCode::OK);
    login(app, body["login_id"].as_str().unwrap(), PASSWORD, "laptop").await
}

async fn problem(response: reqwest::Response, status: StatusCode, kind: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], format!("/problems/{kind}"), "{body}");
    body
}

/// Sends `request` raw and reads the whole answer, until the server closes the connection.
async fn raw_answer(app: &TestApp, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("answered and closed within 30 s")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn fields(problem: &Value) -> Vec<String> {
    let mut fields: Vec<String> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    fields.sort();
    fields
}

async fn sign_up_mails_a_single_use_link_that_makes_the_member_basic(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = sign_up(&app, 1).await;
    assert_eq!(created["role"], "unverified");
    assert_eq!(created["login_id"], "member1");
    let mails = app.mails();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].contains("To: member1.test@example.co.kr"),
        "{}",
        mails[0]
    );
    assert!(mails[0].contains("Subject: Confirm your e-mail address"));
    let unfolded = mails[0]
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    assert!(
        unfolded.contains("http://127.0.0.1:8080/v1/members/verify?token="),
        "{unfolded}"
    );
    let token = token_in_mail(&app, "member1.test@example.co.kr");
    assert_eq!(token.len(), 43, "256 random bits");

    // Unverified members may sign in and see themselves, but not shop.
    let member = login(&app, "member1", PASSWORD, "phone").await;
    let me: Value = get(&app, "/v1/members/me", &member.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "unverified");
    let addresses = get(&app, "/v1/members/me/addresses", &member.access).await;
    problem(addresses, StatusCode::FORBIDDEN, "forbidden").await;

    let verified = app.get(&format!("/v1/members/verify?token={token}")).await;
    assert_eq!(verified.status(), StatusCode::OK);
    assert_eq!(verified.json::<Value>().await.unwrap()["role"], "basic");
    let again = app.get(&format!("/v1/members/verify?token={token}")).await;
    problem(again, StatusCode::GONE, "verification-link-used").await;
    let unknown = app.get("/v1/members/verify?token=nonsense").await;
    problem(unknown, StatusCode::NOT_FOUND, "verification-link-unknown").await;

    // The role shows from the next refresh on (read afresh, not copied from the old token).
    let me: Value = get(&app, "/v1/members/me", &member.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "basic");
    let pair: Value = post(
        &app,
        "/v1/auth/refresh",
        &json!({"refresh_token": member.refresh}),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let access = pair["access_token"].as_str().unwrap();
    assert_eq!(
        get(&app, "/v1/members/me/addresses", access).await.status(),
        StatusCode::OK
    );
    app.stop().await;
}

async fn an_expired_link_is_refused_and_resend_sends_a_new_one(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.members.verification_ttl = std::time::Duration::ZERO
    })
    .await;
    sign_up(&app, 2).await;
    let token = token_in_mail(&app, "member2.test@example.co.kr");
    let expired = app.get(&format!("/v1/members/verify?token={token}")).await;
    let body = problem(expired, StatusCode::GONE, "verification-link-expired").await;
    assert!(body["detail"].as_str().unwrap().contains("expired"));
    app.stop().await;

    let app = TestApp::spawn(backend).await;
    sign_up(&app, 3).await;
    let first = token_in_mail(&app, "member3.test@example.co.kr");
    let resend = post(&app, "/v1/members/verification-email", &json!({}), None).await;
    problem(resend, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let member = login(&app, "member3", PASSWORD, "phone").await;
    let resend = post(
        &app,
        "/v1/members/verification-email",
        &json!({}),
        Some(&member.access),
    )
    .await;
    assert_eq!(resend.status(), StatusCode::ACCEPTED);
    assert_eq!(app.mails().len(), 2);
    let tokens = tokens_in_mails(&app, "member3.test@example.co.kr");
    assert_eq!(tokens.len(), 2);
    let second = tokens.into_iter().find(|t| *t != first).unwrap();
    assert_ne!(first, second);
    let verified = app.get(&format!("/v1/members/verify?token={second}")).await;
    assert_eq!(verified.status(), StatusCode::OK);
    let resend = post(
        &app,
        "/v1/members/verification-email",
        &json!({}),
        Some(&member.access),
    )
    .await;
    problem(resend, StatusCode::CONFLICT, "already-verified").await;
    app.stop().await;
}

async fn duplicate_login_id_email_or_phone_is_409_naming_the_fields(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    sign_up(&app, 4).await;
    let cases = [
        ("login_id", json!("MEMBER4"), "login_id"),
        ("email", json!("Member4.Test@EXAMPLE.co.kr"), "email"),
        ("phone", json!("010-5004-0004"), "phone"),
    ];
    for (field, value, expected) in cases {
        let mut body = sign_up_body(5);
        body[field] = value;
        let response = post(&app, "/v1/members", &body, None).await;
        let p = problem(response, StatusCode::CONFLICT, "duplicate").await;
        assert_eq!(fields(&p), vec![expected.to_owned()], "{p}");
        // The body never repeats personal data.
        assert!(!p.to_string().contains("example.co.kr") && !p.to_string().contains("5004"));
    }
    let response = post(&app, "/v1/members", &sign_up_body(4), None).await;
    let p = problem(response, StatusCode::CONFLICT, "duplicate").await;
    assert_eq!(fields(&p), vec!["email", "login_id", "phone"]);
    app.stop().await;
}

async fn invalid_sign_ups_are_422_naming_every_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("login_id", json!("abcd"), "login_id"),
        ("login_id", json!("12345"), "login_id"),
        ("login_id", json!("user_name"), "login_id"),
        ("password", json!("short"), "password"),
        ("password", json!("password123"), "password"),
        ("password", json!("member6member6"), "password"),
        ("name", json!("   "), "name"),
        ("phone", json!("02-123-4567"), "phone"),
        ("phone", json!("01012345678"), "phone"),
        ("email", json!("x@localhost"), "email"),
        ("email", json!("not an email"), "email"),
        ("address", json!({"line1": " "}), "address.line1"),
        (
            "address",
            json!({"line1": "a", "postal_code": "1234"}),
            "address.postal_code",
        ),
    ];
    for (field, value, expected) in cases {
        let mut body = sign_up_body(6);
        if field == "password" && value == "member6member6" {
            body["login_id"] = json!("member6member6");
        }
        body[field] = value.clone();
        let response = post(&app, "/v1/members", &body, None).await;
        let p = problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
        assert_eq!(
            fields(&p),
            vec![expected.to_owned()],
            "{field} = {value}: {p}"
        );
    }
    let everything_wrong = json!({"login_id": "x", "password": "x", "name": "", "phone": "x",
        "email": "x", "address": {"line1": ""}});
    let p = problem(
        post(&app, "/v1/members", &everything_wrong, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
    assert_eq!(
        fields(&p),
        vec![
            "address.line1",
            "email",
            "login_id",
            "name",
            "password",
            "phone"
        ]
    );
    let missing = post(&app, "/v1/members", &json!({"login_id": "abcdef"}), None).await;
    let p = problem(missing, StatusCode::BAD_REQUEST, "invalid-body").await;
    assert!(
        p["detail"].as_str().unwrap().contains("missing field"),
        "{p}"
    );
    assert!(app.mails().is_empty(), "no member, no mail");
    app.stop().await;
}

async fn ids_and_roles_in_request_bodies_are_ignored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = verified_member(&app, 7).await;
    let mut body = sign_up_body(8);
    body["id"] = json!(a.id);
    body["member_id"] = json!(a.id);
    body["role"] = json!("admin");
    let created: Value = post(&app, "/v1/members", &body, None)
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(created["id"], json!(a.id));
    assert_eq!(created["role"], "unverified");
    let b = login(&app, "member8", PASSWORD, "x").await;
    let patched = send(
        &app,
        reqwest::Method::PATCH,
        "/v1/members/me",
        &b.access,
        Some(&json!({"id": a.id, "role": "admin", "name": "새이름"})),
    )
    .await;
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(
        (patched["id"].as_str(), patched["role"].as_str()),
        (Some(b.id.as_str()), Some("unverified"))
    );
    let a_me: Value = get(&app, "/v1/members/me", &a.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a_me["name"], "홍길동7", "A's profile is untouched");
    let added = post(
        &app,
        "/v1/members/me/addresses",
        &json!({"line1": "x", "member_id": b.id, "id": "1"}),
        Some(&a.access),
    )
    .await;
    assert_eq!(added.status(), StatusCode::CREATED);
    let added: Value = added.json().await.unwrap();
    assert_ne!(added["id"], "1");
    let own = get(
        &app,
        &format!("/v1/members/me/addresses/{}", added["id"].as_str().unwrap()),
        &a.access,
    )
    .await;
    assert_eq!(
        own.status(),
        StatusCode::OK,
        "the address is A's, the body's member_id was ignored"
    );
    app.stop().await;
}

async fn a_raw_dump_of_the_database_holds_no_personal_data(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut secrets = Vec::new();
    for n in [11, 12] {
        let m = verified_member(&app, n).await;
        let extra = json!({"line1": format!("부산시 해운대구 {n}번지"), "line2": format!("Apt {n}0{n}"), "postal_code": "48099"});
        post(&app, "/v1/members/me/addresses", &extra, Some(&m.access)).await;
        let body = sign_up_body(n);
        for v in [
            &body["name"],
            &body["phone"],
            &body["email"],
            &body["address"]["line1"],
            &body["address"]["line2"],
            &extra["line1"],
            &extra["line2"],
        ] {
            secrets.push(v.as_str().unwrap().to_owned());
        }
        secrets.push(body["phone"].as_str().unwrap().replace('-', ""));
        secrets.push(body["email"].as_str().unwrap().to_uppercase());
    }
    let dump = raw_dump(&app);
    assert!(
        dump.contains("member11"),
        "the dump is real (login ids are not personal data)"
    );
    for secret in &secrets {
        assert!(
            !dump.contains(secret.as_str()),
            "{secret:?} is in the raw dump"
        );
        assert!(
            !dump.to_lowercase().contains(&secret.to_lowercase()),
            "{secret:?} (any case)"
        );
    }
    app.stop().await;
}

/// Every byte the database holds for the test: `mysqldump` of the database, or the SQLite
/// file and its write-ahead log.
fn raw_dump(app: &TestApp) -> String {
    match app.backend {
        Backend::MySql => {
            let url = url::Url::parse(&app.database_url()).unwrap();
            let mut command = std::process::Command::new("mysqldump");
            command
                .arg("--protocol=tcp")
                .arg(format!("--host={}", url.host_str().unwrap()))
                .arg(format!("--port={}", url.port().unwrap_or(3306)))
                .arg(format!("--user={}", url.username()))
                .arg("--skip-extended-insert")
                .arg(url.path().trim_start_matches('/'));
            if let Some(password) = url.password() {
                command.env("MYSQL_PWD", password);
            }
            let output = command.output().unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
        Backend::Sqlite => {
            let path = app.sqlite_path();
            let mut bytes = std::fs::read(&path).unwrap();
            if let Ok(wal) = std::fs::read(format!("{}-wal", path.display())) {
                bytes.extend(wal);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

async fn the_profile_is_read_and_changed_by_its_owner_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = verified_member(&app, 13).await;
    verified_member(&app, 14).await;
    let me: Value = get(&app, "/v1/members/me", &a.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["login_id"], "member13");
    assert_eq!(me["name"], "홍길동13");
    assert_eq!(me["email"], "member13.test@example.co.kr");
    assert_eq!(me["phone"], "010-5013-0013");
    assert_eq!(me["role"], "basic");
    let no_token = app.get("/v1/members/me").await;
    problem(no_token, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let patch = |body: Value| {
        let app = &app;
        let token = a.access.clone();
        async move {
            send(
                app,
                reqwest::Method::PATCH,
                "/v1/members/me",
                &token,
                Some(&body),
            )
            .await
        }
    };
    let changed: Value = patch(json!({"name": "김철수", "phone": "011-389-0404"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (changed["name"].as_str(), changed["phone"].as_str()),
        (Some("김철수"), Some("011-389-0404"))
    );
    assert_eq!(changed["email"], "member13.test@example.co.kr");
    let bad = patch(json!({"phone": "010-1234"})).await;
    problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    let taken = patch(json!({"phone": "010-5014-0014"})).await;
    let p = problem(taken, StatusCode::CONFLICT, "duplicate").await;
    assert_eq!(fields(&p), vec!["phone"]);
    // The old phone is free again, the new one is taken.
    let mut body = sign_up_body(15);
    body["phone"] = json!("010-5013-0013");
    assert_eq!(
        post(&app, "/v1/members", &body, None).await.status(),
        StatusCode::CREATED
    );
    body = sign_up_body(16);
    body["phone"] = json!("011-389-0404");
    assert_eq!(
        post(&app, "/v1/members", &body, None).await.status(),
        StatusCode::CONFLICT
    );
    app.stop().await;
}

async fn password_change_needs_the_current_one_and_ends_other_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let here = verified_member(&app, 17).await;
    let there = login(&app, "member17", PASSWORD, "tablet").await;
    let change = |current: &str, new: &str| {
        let body = json!({"current_password": current, "new_password": new});
        let app = &app;
        let token = here.access.clone();
        async move {
            send(
                app,
                reqwest::Method::PUT,
                "/v1/members/me/password",
                &token,
                Some(&body),
            )
            .await
        }
    };
    let p = problem(
        change("wrong password!", "a brand new secret").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
    assert_eq!(fields(&p), vec!["current_password"]);
    let p = problem(
        change(PASSWORD, "member17").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
    assert_eq!(fields(&p), vec!["new_password"]);
    assert_eq!(
        change(PASSWORD, "a brand new secret").await.status(),
        StatusCode::NO_CONTENT
    );
    // The other session is over, this one goes on.
    assert_eq!(
        get(&app, "/v1/members/me", &there.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let refresh = post(
        &app,
        "/v1/auth/refresh",
        &json!({"refresh_token": there.refresh}),
        None,
    )
    .await;
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&app, "/v1/members/me", &here.access).await.status(),
        StatusCode::OK
    );
    let old = post(
        &app,
        "/v1/auth/login",
        &json!({"login_id": "member17", "password": PASSWORD}),
        None,
    )
    .await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    login(&app, "member17", "a brand new secret", "phone").await;
    app.stop().await;
}

async fn addresses_are_for_verified_members_and_at_most_five(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let m = verified_member(&app, 18).await;
    let list: Value = get(&app, "/v1/members/me/addresses", &m.access)
        .await
        .json()
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["line1"], "서울시 강남구 테헤란로 18길");
    assert_eq!(items[0]["postal_code"], "06236");
    assert_eq!(items[0]["is_default"], true);
    let added = post(
        &app,
        "/v1/members/me/addresses",
        &json!({"line1": "대전시 유성구", "line2": "", "is_default": true}),
        Some(&m.access),
    )
    .await;
    assert_eq!(added.status(), StatusCode::CREATED);
    let added: Value = added.json().await.unwrap();
    let path = format!("/v1/members/me/addresses/{}", added["id"].as_str().unwrap());
    let read: Value = get(&app, &path, &m.access).await.json().await.unwrap();
    assert_eq!(
        (read["line1"].as_str(), read["is_default"].as_bool()),
        (Some("대전시 유성구"), Some(true))
    );
    let list: Value = get(&app, "/v1/members/me/addresses", &m.access)
        .await
        .json()
        .await
        .unwrap();
    let defaults = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["is_default"] == true)
        .count();
    assert_eq!(defaults, 1, "one default at a time");
    let updated = send(
        &app,
        reqwest::Method::PUT,
        &path,
        &m.access,
        Some(&json!({"line1": "대전시 서구", "line2": "2층", "postal_code": "35200"})),
    )
    .await;
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(
        (updated["line1"].as_str(), updated["line2"].as_str()),
        (Some("대전시 서구"), Some("2층"))
    );
    let bad = send(
        &app,
        reqwest::Method::PUT,
        &path,
        &m.access,
        Some(&json!({"line1": ""})),
    )
    .await;
    problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    assert_eq!(
        send(&app, reqwest::Method::DELETE, &path, &m.access, None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        get(&app, &path, &m.access).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&app, reqwest::Method::DELETE, &path, &m.access, None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    for n in 2..=5 {
        let r = post(
            &app,
            "/v1/members/me/addresses",
            &json!({"line1": format!("주소 {n}")}),
            Some(&m.access),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED, "address {n}");
    }
    let sixth = post(
        &app,
        "/v1/members/me/addresses",
        &json!({"line1": "주소 6"}),
        Some(&m.access),
    )
    .await;
    problem(sixth, StatusCode::CONFLICT, "address-limit").await;
    app.stop().await;
}

async fn ten_concurrent_adds_on_four_addresses_let_exactly_one_win(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let m = verified_member(&app, 19).await;
    for n in 2..=4 {
        post(
            &app,
            "/v1/members/me/addresses",
            &json!({"line1": format!("주소 {n}")}),
            Some(&m.access),
        )
        .await;
    }
    let adds = (0..10).map(|n| {
        let body = json!({"line1": format!("동시 {n}")});
        let app = &app;
        let token = m.access.clone();
        async move {
            post(app, "/v1/members/me/addresses", &body, Some(&token))
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(adds).await;
    let won = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((won, refused), (1, 9), "{statuses:?}");
    let list: Value = get(&app, "/v1/members/me/addresses", &m.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 5);
    app.stop().await;
}

async fn member_a_cannot_read_or_change_member_b_s_things(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = verified_member(&app, 20).await;
    let b = verified_member(&app, 21).await;
    let b_list: Value = get(&app, "/v1/members/me/addresses", &b.access)
        .await
        .json()
        .await
        .unwrap();
    let b_address = format!(
        "/v1/members/me/addresses/{}",
        b_list["items"][0]["id"].as_str().unwrap()
    );
    problem(
        get(&app, &b_address, &a.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let put = send(
        &app,
        reqwest::Method::PUT,
        &b_address,
        &a.access,
        Some(&json!({"line1": "hijack"})),
    )
    .await;
    problem(put, StatusCode::FORBIDDEN, "forbidden").await;
    let delete = send(&app, reqwest::Method::DELETE, &b_address, &a.access, None).await;
    problem(delete, StatusCode::FORBIDDEN, "forbidden").await;
    // An address that does not exist at all is 404.
    let nowhere = "/v1/members/me/addresses/01900000-0000-7000-8000-000000000000";
    problem(
        get(&app, nowhere, &a.access).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let still: Value = get(&app, &b_address, &b.access).await.json().await.unwrap();
    assert_eq!(still["line1"], "서울시 강남구 테헤란로 21길");
    // Sessions: A sees only A's, cannot end B's.
    let a_sessions: Value = get(&app, "/v1/auth/sessions", &a.access)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = a_sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.session_id.as_str()]);
    let end = send(
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/auth/sessions/{}", b.session_id),
        &a.access,
        None,
    )
    .await;
    problem(end, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(
        get(&app, "/v1/members/me", &b.access).await.status(),
        StatusCode::OK
    );
    // The profile endpoint has no member id to swap: it is always the caller's.
    let me: Value = get(&app, "/v1/members/me", &a.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], json!(a.id));
    app.stop().await;
}

async fn an_admin_grants_roles_and_only_an_admin(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin_id = app
        .state
        .members
        .create_admin(
            "root1",
            "root@example.com",
            "an admin password".to_string().into(),
        )
        .await
        .unwrap();
    let admin = login(&app, "root1", "an admin password", "console").await;
    assert_eq!(admin.id, admin_id);
    let b = verified_member(&app, 22).await;
    let path = format!("/v1/admin/members/{}/role", b.id);
    let grant = |token: String, role: &str| {
        let body = json!({"role": role});
        let app = &app;
        let path = path.clone();
        async move { send(app, reqwest::Method::PUT, &path, &token, Some(&body)).await }
    };
    let anonymous = app
        .client
        .put(app.url(&path))
        .json(&json!({"role": "seller"}))
        .send()
        .await
        .unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    problem(
        grant(b.access.clone(), "admin").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let granted = grant(admin.access.clone(), "seller").await;
    assert_eq!(granted.status(), StatusCode::OK);
    assert_eq!(granted.json::<Value>().await.unwrap()["role"], "seller");
    let me: Value = get(&app, "/v1/members/me", &b.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "seller");
    // A seller is still not an admin.
    let seller = login(&app, &b.login_id, PASSWORD, "again").await;
    problem(
        grant(seller.access.clone(), "admin").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    problem(
        grant(admin.access.clone(), "unverified").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    )
    .await;
    problem(
        grant(admin.access.clone(), "basic").await,
        StatusCode::CONFLICT,
        "role-not-raised",
    )
    .await;
    // `basic` verifies a member by hand: an unverified member may buy after a refresh.
    let unverified: Value = post(&app, "/v1/members", &sign_up_body(23), None)
        .await
        .json()
        .await
        .unwrap();
    let by_hand = send(
        &app,
        reqwest::Method::PUT,
        &format!(
            "/v1/admin/members/{}/role",
            unverified["id"].as_str().unwrap()
        ),
        &admin.access,
        Some(&json!({"role": "basic"})),
    )
    .await;
    assert_eq!(by_hand.status(), StatusCode::OK);
    let verified = login(
        &app,
        sign_up_body(23)["login_id"].as_str().unwrap(),
        PASSWORD,
        "x",
    )
    .await;
    let me: Value = get(&app, "/v1/members/me", &verified.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "basic");
    // A second admin.
    let promoted = grant(admin.access.clone(), "admin").await;
    assert_eq!(promoted.json::<Value>().await.unwrap()["role"], "admin");
    // A grant never lowers a role: "seller" for an admin is refused and changes nothing,
    // granting the role a member has already is a no-op.
    problem(
        grant(admin.access.clone(), "seller").await,
        StatusCode::CONFLICT,
        "role-not-raised",
    )
    .await;
    let again = grant(admin.access.clone(), "admin").await;
    assert_eq!(again.status(), StatusCode::OK);
    let b_again = login(&app, &b.login_id, PASSWORD, "third").await;
    let me: Value = get(&app, "/v1/members/me", &b_again.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "admin");
    problem(
        grant(admin.access.clone(), "owner").await,
        StatusCode::BAD_REQUEST,
        "invalid-body",
    )
    .await;
    let nobody = send(
        &app,
        reqwest::Method::PUT,
        "/v1/admin/members/nobody/role",
        &admin.access,
        Some(&json!({"role": "seller"})),
    )
    .await;
    assert_eq!(nobody.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn the_link_follows_public_base_url_and_bodies_must_be_json(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.members.public_base_url = "https://shop.example/api".parse().unwrap();
    })
    .await;
    sign_up(&app, 40).await;
    let mail = app.mails().pop().unwrap();
    let unfolded = mail
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    assert!(
        unfolded.contains("https://shop.example/api/v1/members/verify?token="),
        "{unfolded}"
    );
    let form = app
        .client
        .post(app.url("/v1/members"))
        .body("login_id=x")
        .send()
        .await
        .unwrap();
    problem(
        form,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    // A body over the limit is refused before it is read. Sent raw and never written: a client
    // still writing a body the server has refused may see its connection reset first.
    let huge = raw_answer(
        &app,
        b"POST /v1/members HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 3145728\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(huge.starts_with("HTTP/1.1 413"), "{huge}");
    assert!(huge.contains("application/problem+json"), "{huge}");
    assert!(huge.contains("/problems/body-too-large"), "{huge}");
    let no_token = app.get("/v1/members/verify").await;
    let body = problem(no_token, StatusCode::BAD_REQUEST, "invalid-query").await;
    assert_eq!(body["detail"], "missing field `token`");
    let wrong_method = app
        .client
        .delete(app.url("/v1/members"))
        .send()
        .await
        .unwrap();
    assert!(wrong_method.headers().contains_key("allow"));
    problem(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    )
    .await;
    let m = verified_member(&app, 41).await;
    let bad_path = get(&app, "/v1/members/me/addresses/%FF%FE", &m.access).await;
    problem(bad_path, StatusCode::BAD_REQUEST, "invalid-path").await;
    app.stop().await;
}
