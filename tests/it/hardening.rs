//! What an outside attacker found, mended: slow and idle clients are cut off, load is shed
//! with 503, a forged request id never reaches a log line, member answers are not cached,
//! phone probes and resend floods are limited, older links die, private files are private and
//! every member with addresses keeps a default one.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp, on_both_backends};
use crate::members::{
    PASSWORD, get, login, post, send, sign_up, sign_up_body, tokens_in_mails, verified_member,
};

on_both_backends!(
    idle_and_slow_connections_are_closed,
    requests_beyond_the_bound_are_shed_and_slow_ones_time_out,
    an_unusable_request_id_is_replaced,
    member_answers_are_not_cached,
    phone_changes_are_rate_limited_per_member,
    resends_are_limited_per_member_and_a_new_link_retires_the_old,
    a_member_with_addresses_always_has_a_default,
    a_name_of_invisible_or_reordering_characters_is_refused,
    a_link_expires_once_the_clock_passes_its_lifetime,
);

/// The members service reads the injected clock: a verification link that is good now is
/// expired (410) once the clock has moved past its lifetime, with no waiting.
async fn a_link_expires_once_the_clock_passes_its_lifetime(backend: Backend) {
    let clock = openrun::clock::ManualClock::new(chrono::Utc::now());
    let app = TestApp::spawn_with_clock(backend, |_| {}, std::sync::Arc::new(clock.clone())).await;
    sign_up(&app, 69).await;
    sign_up(&app, 70).await;
    let token = |n: u32| {
        let email = sign_up_body(n)["email"].as_str().unwrap().to_owned();
        tokens_in_mails(&app, &email).remove(0)
    };
    let fresh = app
        .get(&format!("/v1/members/verify?token={}", token(69)))
        .await;
    assert_eq!(fresh.status(), StatusCode::OK);
    let ttl = chrono::Duration::from_std(app.config.members.verification_ttl).unwrap();
    clock.advance(ttl + chrono::Duration::seconds(1));
    let late = app
        .get(&format!("/v1/members/verify?token={}", token(70)))
        .await;
    assert_eq!(late.status(), StatusCode::GONE);
    let body: Value = late.json().await.unwrap();
    assert_eq!(body["type"], "/problems/verification-link-expired");
    app.stop().await;
}

/// Reads until the server closes the connection; fails if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let started = Instant::now();
    loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection was still open after {within:?}"),
        }
    }
}

async fn idle_and_slow_connections_are_closed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.http.limits.header_timeout = Duration::from_secs(1)
    })
    .await;
    // Sends nothing at all.
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    // Sends half a request head and stops (slowloris).
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // Makes one request, then keeps the connection idle.
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let deadline = Duration::from_secs(20);
    closed_within(&mut silent, deadline).await;
    closed_within(&mut slow, deadline).await;
    let answered = closed_within(&mut idle, deadline).await;
    assert!(
        String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"),
        "the idle connection was answered first"
    );
    // The server still serves.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    app.stop().await;
}

async fn requests_beyond_the_bound_are_shed_and_slow_ones_time_out(backend: Backend) {
    const HEAD: &[u8] =
        b"POST /v1/members HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                          Content-Length: 13\r\n\r\n{\"login_id\":";
    let app = TestApp::spawn_with(backend, |c| c.http.limits.max_concurrent_requests = 1).await;
    // A request whose body is not finished holds the one permit. Once it is in, another
    // request is refused at once. (Should a probe hold the permit when it arrives, the held
    // request is the one refused: it is sent again.)
    let started = Instant::now();
    let (mut held, shed) = 'hold: loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no request was shed"
        );
        let mut held = TcpStream::connect(app.addr).await.unwrap();
        held.write_all(HEAD).await.unwrap();
        loop {
            let mut buf = [0u8; 64];
            match held.try_read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => continue 'hold,
            }
            let response = app.get("/v1/members/me").await;
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                break 'hold (held, response);
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no request was shed"
            );
            tokio::task::yield_now().await;
        }
    };
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(shed.headers()["content-type"], "application/problem+json");
    assert!(shed.headers().contains_key("x-request-id"));
    assert_eq!(shed.headers()["cache-control"], "no-store");
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["type"], "/problems/unavailable");
    // The probes are answered all the same.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    // The held request ends (its body is a bad one), and the permit comes back.
    held.write_all(b"1}").await.unwrap();
    let answer = closed_or_answered(&mut held, Duration::from_secs(30)).await;
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert_eq!(
        app.get("/v1/members/me").await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;

    // A body that does not arrive within the request timeout is refused with 408; a safe
    // request is answered within it or gets 503 (nothing here is that slow to answer).
    let app = TestApp::spawn_with(backend, |c| {
        c.http.limits.request_timeout = Duration::from_secs(1)
    })
    .await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(HEAD).await.unwrap();
    let answer = closed_or_answered(&mut slow, Duration::from_secs(30)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("/problems/body-timeout"), "{answer}");

    // A body trickled a byte at a time (each within the timeout) is refused at the deadline
    // counted from its head: the answer comes while the body is still trickling in.
    let mut trickle = TcpStream::connect(app.addr).await.unwrap();
    trickle
        .write_all(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = String::new();
    for _ in 0..200 {
        if trickle.write_all(b" ").await.is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(300), trickle.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                answer = String::from_utf8_lossy(&buf[..n]).into_owned();
                break;
            }
            Ok(_) => break,
            Err(_) => {}
        }
    }
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "answered while trickling: {answer:?}"
    );

    // A declared length above the limit is refused at once, before any body is sent.
    let mut huge = TcpStream::connect(app.addr).await.unwrap();
    huge.write_all(
        b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 99999999999\r\n\r\n{}",
    )
    .await
    .unwrap();
    let answer = closed_or_answered(&mut huge, Duration::from_secs(30)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    app.stop().await;
}

/// Reads the first answer on `stream` (until its head and some body arrived, or it closed).
async fn closed_or_answered(stream: &mut TcpStream, within: Duration) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let started = Instant::now();
    while !String::from_utf8_lossy(&received).contains("\r\n\r\n") {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no answer within {within:?}"),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

async fn an_unusable_request_id_is_replaced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id_of = async |sent: &[u8]| {
        let response = app
            .client
            .get(app.url("/healthz"))
            .header(
                "x-request-id",
                reqwest::header::HeaderValue::from_bytes(sent).unwrap(),
            )
            .send()
            .await
            .unwrap();
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(id_of(b"abc-123_x.y").await, "abc-123_x.y");
    for forged in [
        "a".repeat(5000).into_bytes(),
        b"id\" level=error msg=\"forged".to_vec(),
        b"caf\xc3\xa9".to_vec(),
        b"".to_vec(),
    ] {
        let got = id_of(&forged).await;
        assert!(uuid::Uuid::parse_str(&got).is_ok(), "{got:?} is a new id");
    }
    app.stop().await;
}

async fn member_answers_are_not_cached(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let m = verified_member(&app, 61).await;
    let login = post(
        &app,
        "/v1/auth/login",
        &json!({"login_id": m.login_id, "password": PASSWORD}),
        None,
    )
    .await;
    assert_eq!(login.headers()["cache-control"], "no-store");
    let me = get(&app, "/v1/members/me", &m.access).await;
    assert_eq!(me.headers()["cache-control"], "no-store");
    let refreshed = post(
        &app,
        "/v1/auth/refresh",
        &json!({"refresh_token": m.refresh}),
        None,
    )
    .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert_eq!(refreshed.headers()["cache-control"], "no-store");
    assert_eq!(refreshed.headers()["x-content-type-options"], "nosniff");
    // The scheme's name is case-insensitive.
    let lower = app
        .client
        .get(app.url("/v1/members/me"))
        .header("authorization", format!("bearer {}", m.access))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), StatusCode::OK);
    // A device name cannot reorder what the session list shows.
    let faked = post(
        &app,
        "/v1/auth/login",
        &json!({"login_id": m.login_id, "password": PASSWORD, "device_name": "iPhone\u{202E}gnp.exe"}),
        None,
    )
    .await;
    let faked: Value = faked.json().await.unwrap();
    let sessions: Value = get(
        &app,
        "/v1/auth/sessions",
        faked["access_token"].as_str().unwrap(),
    )
    .await
    .json()
    .await
    .unwrap();
    let names: Vec<&str> = sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["device"].as_str())
        .collect();
    assert!(names.contains(&"iPhonegnp.exe"), "{sessions}");
    app.stop().await;
}

async fn phone_changes_are_rate_limited_per_member(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.auth.rate_limits.phone_changes_per_member_per_hour = 3.try_into().unwrap();
    })
    .await;
    let prober = verified_member(&app, 62).await;
    sign_up(&app, 63).await;
    let taken = sign_up_body(63)["phone"].clone();
    let mut statuses = Vec::new();
    for n in 0..5u32 {
        let phone = if n == 0 {
            taken.clone()
        } else {
            json!(format!("010-7{n:03}-{n:04}"))
        };
        let response = send(
            &app,
            reqwest::Method::PATCH,
            "/v1/members/me",
            &prober.access,
            Some(&json!({ "phone": phone })),
        )
        .await;
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::CONFLICT,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // A name change alone is no probe and is not limited.
    let renamed = send(
        &app,
        reqwest::Method::PATCH,
        "/v1/members/me",
        &prober.access,
        Some(&json!({ "name": "김철수" })),
    )
    .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    app.stop().await;
}

async fn resends_are_limited_per_member_and_a_new_link_retires_the_old(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.auth.rate_limits.resends_per_member_per_hour = 2.try_into().unwrap();
    })
    .await;
    sign_up(&app, 64).await;
    let email = sign_up_body(64)["email"].as_str().unwrap().to_owned();
    let m = login(&app, "member64", PASSWORD, "x").await;
    let resend_from = async |address: &str| {
        app.client
            .post(app.url("/v1/members/verification-email"))
            .bearer_auth(&m.access)
            .header("x-forwarded-for", address)
            .send()
            .await
            .unwrap()
            .status()
    };
    // Each from another address: the member's own budget still ends.
    assert_eq!(resend_from("192.0.2.1").await, StatusCode::ACCEPTED);
    assert_eq!(resend_from("192.0.2.2").await, StatusCode::ACCEPTED);
    assert_eq!(
        resend_from("192.0.2.3").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let tokens = tokens_in_mails(&app, &email);
    assert_eq!(tokens.len(), 3, "the sign-up mail and two resends");
    // Only the newest link works; the older ones are expired (410).
    let mut outcomes = Vec::new();
    for token in &tokens {
        let status = app
            .get(&format!("/v1/members/verify?token={token}"))
            .await
            .status();
        outcomes.push(status);
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        [StatusCode::OK, StatusCode::GONE, StatusCode::GONE],
        "one live link of three"
    );
    app.stop().await;
}

async fn addresses(app: &TestApp, token: &str) -> Vec<Value> {
    let list: Value = get(app, "/v1/members/me/addresses", token)
        .await
        .json()
        .await
        .unwrap();
    list["items"].as_array().unwrap().clone()
}

fn defaults(list: &[Value]) -> usize {
    list.iter().filter(|a| a["is_default"] == true).count()
}

async fn a_member_with_addresses_always_has_a_default(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let m = verified_member(&app, 65).await;
    let first = addresses(&app, &m.access).await;
    assert_eq!(defaults(&first), 1, "the sign-up address is the default");
    let first_id = first[0]["id"].as_str().unwrap().to_owned();
    let line = json!({"line1": "부산시 해운대구 1", "line2": "2층", "postal_code": "48094"});
    let added = post(&app, "/v1/members/me/addresses", &line, Some(&m.access)).await;
    assert_eq!(added.status(), StatusCode::CREATED);
    let second: Value = added.json().await.unwrap();
    assert_eq!(second["is_default"], false);

    // Unsetting the only default leaves it the default.
    let undefault = json!({"line1": "서울시 1", "line2": "", "is_default": false});
    let updated = send(
        &app,
        reqwest::Method::PUT,
        &format!("/v1/members/me/addresses/{first_id}"),
        &m.access,
        Some(&undefault),
    )
    .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(
        updated["is_default"], true,
        "the answer says what is stored"
    );
    assert_eq!(defaults(&addresses(&app, &m.access).await), 1);

    // Deleting the default makes the remaining one the default.
    let deleted = send(
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/members/me/addresses/{first_id}"),
        &m.access,
        None,
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let left = addresses(&app, &m.access).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], second["id"]);
    assert_eq!(left[0]["is_default"], true);

    // With none left, the next address added is the default whatever it asked.
    let second_id = second["id"].as_str().unwrap();
    let deleted = send(
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/members/me/addresses/{second_id}"),
        &m.access,
        None,
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let added = post(&app, "/v1/members/me/addresses", &line, Some(&m.access)).await;
    let added: Value = added.json().await.unwrap();
    assert_eq!(added["is_default"], true);
    assert_eq!(defaults(&addresses(&app, &m.access).await), 1);
    app.stop().await;
}

async fn a_name_of_invisible_or_reordering_characters_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (n, name) in [(66, "\u{200B}\u{200D}\u{FEFF}"), (67, "Kim\u{202E}gnaL")] {
        let mut body = sign_up_body(n);
        body["name"] = json!(name);
        let response = post(&app, "/v1/members", &body, None).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "name", "{problem}");
        assert!(
            !problem.to_string().contains(name),
            "the message does not repeat the value"
        );
    }
    app.stop().await;
}

/// The embedded shop's database, its WAL and the e-mail outbox (which holds live verification
/// links) are readable by the service's user only.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_and_the_outbox_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn(Backend::Sqlite).await;
    sign_up(&app, 68).await;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let db = app.sqlite_path();
    assert_eq!(mode(&db), 0o600, "the database file");
    let wal = db.with_extension("db-wal");
    assert_eq!(mode(&wal), 0o600, "the WAL");
    let crate::helpers::MailSink::Outbox(outbox) = &app.mail else {
        unreachable!("SQLite writes mail to the outbox")
    };
    assert_eq!(mode(outbox), 0o700, "the outbox directory");
    let mails: Vec<_> = std::fs::read_dir(outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(mails.len(), 1);
    assert_eq!(mode(&mails[0]), 0o600, "a message file");
    app.stop().await;
}
