//! Listing, search and product detail over HTTP with 100,000 products, on SQLite and on
//! MariaDB: p50 and p99 of single requests from one client, after a warm-up.
//!
//! Products are registered through the command path (not timed); the service is the real
//! one, in this process, with its live catalog caught up. Needs MariaDB at
//! `OPENRUN_BENCH_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`) and creates and drops a
//! database of its own. Run: `cargo bench --bench catalog` (`CATALOG_BENCH_PRODUCTS` to
//! change the count).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use openrun::config::Config;
use openrun::startup::Application;
use openrun_domain::product::{NewVariant, Product, ProductCommand};
use openrun_domain::{Actor, CategoryId, MemberId, Money, ProductId, Role, VariantId};
use sqlx::{Connection, Executor};
use uuid::Uuid;

const BRANDS: [&str; 10] = [
    "나이키",
    "아디다스",
    "뉴발란스",
    "아식스",
    "푸마",
    "컨버스",
    "반스",
    "리복",
    "살로몬",
    "호카",
];
const MODELS: [&str; 10] = [
    "에어맥스",
    "조던",
    "덩크",
    "삼바",
    "가젤",
    "젤카야노",
    "척테일러",
    "올드스쿨",
    "클럽",
    "스피드크로스",
];
const WORDS: [&str; 8] = [
    "Air", "Max", "Retro", "High", "Low", "Classic", "Runner", "Trail",
];

/// A product text from its number: ten brands, ten models, eight Latin words.
fn text(n: usize) -> (String, String) {
    let (brand, model, word) = (BRANDS[n % 10], MODELS[(n / 10) % 10], WORDS[(n / 100) % 8]);
    (
        format!("{brand} {model} {word} {n}"),
        format!("{brand}의 {model} 한정판, {word} 컬렉션 {}번", n % 997),
    )
}

struct Run {
    url: String,
    cleanup: Option<(String, String)>,
}

async fn sqlite() -> Run {
    let path = std::env::temp_dir().join(format!(
        "openrun_bench_catalog_{}.db",
        Uuid::now_v7().simple()
    ));
    Run {
        url: format!("sqlite://{}", path.display()),
        cleanup: None,
    }
}

async fn mariadb() -> Run {
    let server = std::env::var("OPENRUN_BENCH_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let name = format!("openrun_bench_{}", Uuid::now_v7().simple());
    let mut admin = sqlx::MySqlConnection::connect(&server)
        .await
        .expect("MariaDB must run");
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    Run {
        url: format!("{server}/{name}"),
        cleanup: Some((server, name)),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

async fn measure(
    client: &reqwest::Client,
    urls: &[String],
    token: &str,
    rounds: usize,
) -> (Duration, Duration, u64) {
    // Warm-up: the first answer of each URL fills caches.
    for url in urls {
        client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let mut times = Vec::with_capacity(rounds);
    let mut total = 0;
    for i in 0..rounds {
        let url = &urls[i % urls.len()];
        let started = Instant::now();
        let response = client.get(url).bearer_auth(token).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        let body: serde_json::Value = response.json().await.unwrap();
        times.push(started.elapsed());
        total = body["total"].as_u64().unwrap_or(total);
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99), total)
}

async fn bench(backend: &str, run: Run, products: usize) {
    let config = Config::local(&run.url).unwrap();
    let app = Application::build(&config).await.unwrap();
    let addr = app.local_addr().unwrap();
    let state = app.state().clone();
    let events = Arc::clone(app.event_store());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let seller = Actor::new(MemberId::from_uuid(Uuid::now_v7()), Role::Seller);
    let category = CategoryId::from_uuid(Uuid::now_v7());
    let started = Instant::now();
    let mut ids = Vec::with_capacity(products);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..products {
        let commands = state.commands.clone();
        let id = ProductId::from_uuid(Uuid::now_v7());
        ids.push(id);
        let (name, description) = text(n);
        tasks.spawn(async move {
            let command = ProductCommand::Register {
                actor: seller,
                product_id: id,
                category_id: category,
                name,
                description,
                price: Money::from_minor(100_000 + (n as i64 % 100) * 1000),
                variants: vec![NewVariant {
                    variant_id: VariantId::from_uuid(Uuid::now_v7()),
                    label: "270".into(),
                }],
                purchase_limit: Some(2),
            };
            commands
                .create::<Product>(&id.to_string(), command, Default::default())
                .await
                .unwrap();
        });
        while tasks.len() >= 256 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let head = events.head_position().await.unwrap();
    assert!(state.catalog.wait_for(head, Duration::from_secs(600)).await);
    println!(
        "{backend}: {products} products registered and in the live catalog in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // An admin sees every product (they are not published): the same work as a visitor's
    // listing, which checks visibility per product too.
    state
        .members
        .create_admin(
            "benchadmin",
            "bench@example.com",
            "bench admin password".to_string().into(),
        )
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let login: serde_json::Value = client
        .post(format!("http://{addr}/v1/auth/login"))
        .json(&serde_json::json!({"login_id": "benchadmin", "password": "bench admin password", "device_name": "bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let base = format!("http://{addr}/v1/products");
    let enc = |q: &str| url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>();
    println!("| {backend} | request | matches | p50 | p99 |");
    for (label, query) in [
        ("first page, no filter", String::new()),
        ("q = 덩크 (two syllables)", format!("q={}", enc("덩크"))),
        (
            "q = 젤카야노 (four syllables)",
            format!("q={}", enc("젤카야노")),
        ),
        ("q = retro (Latin word)", "q=retro".to_owned()),
        (
            "q = 삼바 low 43 (rare)",
            format!("q={}", enc("삼바 low 43")),
        ),
    ] {
        let url = format!("{base}?size=20&{query}");
        let (p50, p99, total) = measure(&client, &[url], &token, 300).await;
        println!(
            "| | `GET /v1/products` {label} | {total} | {:.2} ms | {:.2} ms |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
    let details: Vec<String> = ids
        .iter()
        .step_by(products / 500)
        .map(|id| format!("{base}/{id}"))
        .collect();
    let (p50, p99, _) = measure(&client, &details, &token, 2000).await;
    println!(
        "| | `GET /v1/products/{{id}}` (500 products, cached) | 1 | {:.2} ms | {:.2} ms |",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    if let Some((server, name)) = run.cleanup {
        let mut admin = sqlx::MySqlConnection::connect(&server).await.unwrap();
        admin
            .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
            .await
            .unwrap();
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks one backend.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let products: usize = std::env::var("CATALOG_BENCH_PRODUCTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if only.as_deref().is_none_or(|o| o == "sqlite") {
            bench("sqlite", sqlite().await, products).await;
        }
        if only.as_deref().is_none_or(|o| o == "mysql") {
            bench("mariadb", mariadb().await, products).await;
        }
    });
}
