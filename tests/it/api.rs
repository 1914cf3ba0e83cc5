//! The HTTP skeleton: health, readiness, metrics, the OpenAPI document and errors.

use reqwest::StatusCode;

use crate::helpers::{Backend, TestApp, on_both_backends};

on_both_backends!(
    healthz_and_readyz_answer,
    readyz_fails_while_a_migration_is_missing,
    metrics_are_in_prometheus_format,
    openapi_and_swagger_ui_are_served,
    an_unknown_path_is_a_problem_document_with_a_request_id,
    a_start_up_that_fails_holds_no_lease_or_claim,
);

/// The projectors and the scheduler start only once the listener is bound and the services
/// are built: a start-up that fails on a taken port has taken no lease.
async fn a_start_up_that_fails_holds_no_lease_or_claim(backend: Backend) {
    let test_db = crate::helpers::TestDb::new(backend).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = openrun::config::Config::local(&test_db.url).unwrap();
    config.http.listen_addr = taken.local_addr().unwrap();
    let failed = openrun::startup::Application::build(&config).await;
    assert!(failed.is_err(), "the port was taken");
    let db = test_db.connect().await;
    let sql = "SELECT COUNT(*) FROM projection_leases";
    let leases: i64 = match &db {
        openrun::db::Database::MySql(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        openrun::db::Database::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
    };
    assert_eq!(leases, 0, "a failed start-up left leases behind");
}

async fn healthz_and_readyz_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
    app.stop().await;
}

async fn readyz_fails_while_a_migration_is_missing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let forget = "DELETE FROM _sqlx_migrations";
    match &app.db {
        openrun::db::Database::MySql(pool) => sqlx::query(forget).execute(pool).await.map(drop),
        openrun::db::Database::Sqlite(pool) => sqlx::query(forget).execute(pool).await.map(drop),
    }
    .unwrap();
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["type"], "/problems/not-ready");
    assert!(body["detail"].as_str().unwrap().contains("migrations"));
    // Liveness does not depend on the database.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    app.stop().await;
}

async fn metrics_are_in_prometheus_format(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.get("/healthz").await;
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("# TYPE openrun_http_requests_total counter"),
        "{text}"
    );
    assert!(text.contains(r#"route="/healthz""#), "{text}");
    app.stop().await;
}

async fn openapi_and_swagger_ui_are_served(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/members",
        "/v1/members/verify",
        "/v1/members/verification-email",
        "/v1/members/me",
        "/v1/members/me/password",
        "/v1/members/me/addresses",
        "/v1/members/me/addresses/{id}",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/auth/logout-all",
        "/v1/auth/sessions",
        "/v1/auth/sessions/{id}",
        "/v1/admin/members/{id}/role",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    let me = &doc["paths"]["/v1/members/me"];
    assert!(me.get("get").is_some() && me.get("patch").is_some());
    assert_eq!(me["get"]["security"][0], serde_json::json!({"bearer": []}));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let ui = app.get("/docs/").await;
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(
        ui.text().await.unwrap().contains("swagger"),
        "Swagger UI page"
    );
    app.stop().await;
}

async fn an_unknown_path_is_a_problem_document_with_a_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/v1/nothing-here").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(!response.headers()["x-request-id"].is_empty());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], "/problems/not-found");
    assert_eq!(body["status"], 404);
    // A request id the caller sends is kept.
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-42");
    app.stop().await;
}

/// A TCP relay to the test Redis that can be cut, as a network failure would.
struct Relay {
    port: u16,
    accept: tokio::task::JoinHandle<()>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let links = std::sync::Arc::clone(&links);
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect("127.0.0.1:6379").await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.lock().unwrap().push(link);
                }
            }
        });
        Self {
            port,
            accept,
            links,
        }
    }

    fn cut(&self) {
        self.accept.abort();
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

#[tokio::test]
async fn readyz_fails_while_redis_is_unreachable() {
    let relay = Relay::start().await;
    let app = TestApp::spawn_with(Backend::MySql, |c| {
        c.redis.url = Some(format!("redis://127.0.0.1:{}", relay.port).into());
    })
    .await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    relay.cut();
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["type"], "/problems/not-ready");
    assert_eq!(body["detail"], "the session store (Redis) is unreachable");
    app.stop().await;
}

/// The harness cleans up after a test that panics: its database and its Redis keys go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_leaves_no_database_or_redis_keys() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let app = TestApp::spawn(Backend::MySql).await;
        // A session puts keys under the test's prefix.
        crate::members::verified_member(&app, 95).await;
        let url = app.database_url();
        let name = url.rsplit('/').next().unwrap().to_owned();
        tx.send((name, app.config.redis.key_prefix.clone()))
            .unwrap();
        panic!("the test fails here");
    });
    assert!(test.await.unwrap_err().is_panic());
    let (name, prefix) = rx.await.unwrap();
    let mut conn = redis::Client::open(crate::helpers::REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "left behind: {keys:?}");
    let mut admin =
        <sqlx::MySqlConnection as sqlx::Connection>::connect(&crate::helpers::mysql_server_url())
            .await
            .unwrap();
    let left: Option<String> = sqlx::query_scalar(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(&name)
    .fetch_optional(&mut admin)
    .await
    .unwrap();
    assert_eq!(left, None, "database {name} left behind");
}
