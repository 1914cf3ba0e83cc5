//! The served OpenAPI document is exact: schemathesis (pinned, installed by
//! scripts/install-test-deps.sh) generates requests for every operation from `/openapi.json`
//! of a running embedded shop, signed in as a seller, a buyer and an admin, with every check
//! on, and finds nothing the document does not say.

use crate::helpers::{Backend, TestApp, ensure_test_tools};
use crate::members::verified_member;

/// A verified admin, signed in: its access token.
async fn admin(app: &TestApp) -> String {
    crate::members::admin_token(app, "fuzzadmin").await
}

/// Examples per operation and phase: bounded, so the run takes a minute or two.
const MAX_EXAMPLES: &str = "15";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_in_the_served_document() {
    ensure_test_tools();
    let app = TestApp::spawn(Backend::Sqlite).await;
    // An admin reaches every operation. Logging out and ending a session end the session of
    // the token they are sent with (the stateful phase finds the caller's own session id in
    // the session list): those run apart, with a member's session of their own, afterwards.
    // (Both sign in first: the fuzzer spends the sign-up budget of the address.)
    let admin = admin(&app).await;
    let member = verified_member(&app, 91).await;
    let seller = crate::products::seller_member(&app, &admin, 92).await;
    let buyer = verified_member(&app, 93).await;
    let category = crate::members::post(
        &app,
        "/v1/categories",
        &serde_json::json!({"name": "Fuzzing"}),
        Some(&admin),
    )
    .await;
    assert_eq!(category.status(), reqwest::StatusCode::CREATED);
    // The catalog as a seller (who alone registers products) and as a buyer (to whom most
    // of it is 403, the documented answer), before the admin's run can suspend anyone.
    let catalog = "^/v1/(products|wishlist|orders)";
    run(
        &app,
        &seller.access,
        &["--include-path-regex", catalog],
        true,
    )
    .await;
    run(
        &app,
        &buyer.access,
        &["--include-path-regex", catalog],
        false,
    )
    .await;
    let sessions = "^/v1/auth/(logout|sessions)";
    // Admins register no products (403): that operation ran as the seller.
    let admin_filter = [
        "--exclude-path-regex",
        sessions,
        "--exclude-name",
        "POST /v1/products",
    ];
    run(&app, &admin, &admin_filter, true).await;
    // Here the first logout ends the session for the rest: 401 is their documented answer.
    run(
        &app,
        &member.access,
        &["--include-path-regex", sessions],
        false,
    )
    .await;
    app.stop().await;
}

/// Runs schemathesis on the app's document with `filter`, signed in with `token`; fails the
/// test on any failure it finds, and, when `signed_in`, if some operation was never reached
/// past authentication.
async fn run(app: &TestApp, token: &str, filter: &[&str], signed_in: bool) {
    let schema = app.url("/openapi.json");
    let auth = format!("Authorization: Bearer {token}");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let filter: Vec<String> = filter.iter().map(|s| (*s).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args([
                "-m",
                "schemathesis.cli",
                "--config-file",
                config,
                "run",
                &schema,
            ])
            .args(["--checks", "all", "--max-examples", MAX_EXAMPLES])
            // One worker: schemathesis's threads race inside Python's code compiler on a busy
            // machine ("AST constructor recursion depth mismatch"), failing the run itself.
            .args(["--seed", "20261201", "--workers", "1"])
            .args(["--request-timeout", "30", "--header", &auth])
            .args(&filter)
            .env("NO_COLOR", "1")
            // Its cache goes to a directory of the run, not the work tree.
            .current_dir(std::env::temp_dir())
            .output()
            .expect("python3 -m schemathesis.cli (scripts/install-test-deps.sh)")
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    assert!(
        !signed_in || !report.contains("Authentication failed"),
        "operations were not reached signed in:\n{report}"
    );
}
