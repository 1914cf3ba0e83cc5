//! The order hot path, step by step and whole, without HTTP, on the embedded default (SQLite,
//! in-process stock) and on MariaDB + Redis: the token check, the live-catalog look-up, the
//! reservation (the hold script on Redis, its in-process twin), the guarded append through
//! group commit, the sandbox charge, and a whole order through the service layer, one at a
//! time and 64 at once.
//!
//! The shop is the real one, in this process; its seller, product and buyers are prepared
//! through its public API (as `openrun drill` does, not timed). Needs MariaDB at
//! `OPENRUN_BENCH_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`; a database of its own is
//! created and dropped) and Redis at 127.0.0.1:6379 (keys under a prefix of its own).
//! Run: `cargo bench --bench order_path`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use openrun::config::Config;
use openrun::drill::api::Api;
use openrun::drill::prepare::{self, Opening};
use openrun::eventstore::{CounterMove, EventData, ExpectedVersion, Metadata, StreamRef};
use openrun::orders::{NewLine, NewOrder};
use openrun::payment::PaymentGateway;
use openrun::startup::Application;
use openrun::stock::{HoldLine, HoldRequest, SaleTerms};
use openrun_domain::{Actor, MemberId, Money, OrderId, ProductId, Role, VariantId};
use sqlx::{Connection, Executor};
use uuid::Uuid;

const BUYERS: usize = 64;
const PASSWORD: &str = "bench admin password";

struct Bench {
    app: openrun::http::AppState,
    db: openrun::db::Database,
    events: Arc<dyn openrun::eventstore::EventStore>,
    product: ProductId,
    variant: VariantId,
    buyers: Vec<prepare::Member>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    cleanup: Option<(String, String)>,
    file: Option<std::path::PathBuf>,
    redis_prefix: Option<String>,
}

async fn open(name: &'static str) -> Bench {
    let id = Uuid::now_v7().simple().to_string();
    let file = (name == "sqlite")
        .then(|| std::env::temp_dir().join(format!("openrun_bench_order_{id}.db")));
    let (url, cleanup) = if let Some(path) = &file {
        (format!("sqlite://{}", path.display()), None)
    } else {
        let server = std::env::var("OPENRUN_BENCH_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        let db = format!("openrun_bench_{id}");
        let mut admin = sqlx::MySqlConnection::connect(&server)
            .await
            .expect("MariaDB must run");
        admin
            .execute(format!("CREATE DATABASE {db}").as_str())
            .await
            .unwrap();
        (format!("{server}/{db}"), Some((server, db)))
    };
    let mut config = Config::local(&url).unwrap();
    let limits = &mut config.auth.rate_limits;
    let many = 1_000_000.try_into().unwrap();
    limits.signups_per_address_per_hour = many;
    limits.login_per_address_per_minute = many;
    limits.orders_per_member_per_minute = many;
    limits.orders_per_address_per_minute = many;
    config.mail.outbox_dir = std::env::temp_dir().join(format!("openrun_bench_mail_{id}"));
    let redis_prefix = (name == "mariadb").then(|| format!("openrun_bench_{id}:"));
    if let Some(prefix) = &redis_prefix {
        config.redis.url = Some("redis://127.0.0.1:6379".to_string().into());
        config.redis.key_prefix = prefix.clone();
    }
    let app = Application::build(&config).await.unwrap();
    let addr = app.local_addr().unwrap();
    let state = app.state().clone();
    let db = app.database().clone();
    let events = Arc::clone(app.event_store());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    state
        .members
        .create_admin(
            "benchadmin",
            "bench@example.com",
            PASSWORD.to_string().into(),
        )
        .await
        .unwrap();
    let api = Api::new(format!("http://{addr}").parse().unwrap(), BUYERS).unwrap();
    let kept = std::env::temp_dir().join(format!("openrun_bench_buyers_{id}.json"));
    let shop = prepare::shop(&api, "benchadmin", PASSWORD, BUYERS, &kept)
        .await
        .unwrap();
    let _ = std::fs::remove_file(&kept);
    let products = shop
        .products(&api, 1, 1_000_000_000, &Opening::Now)
        .await
        .unwrap();
    let product = ProductId::from_uuid(products[0].product_id.parse().unwrap());
    let variant = VariantId::from_uuid(products[0].variant_id.parse().unwrap());
    // The order path sells from the live catalog and the stock store: wait for both.
    let deadline = Instant::now() + Duration::from_secs(60);
    while state
        .stock
        .available(&[variant])
        .await
        .unwrap_or_default()
        .first()
        != Some(&1_000_000_000)
    {
        assert!(
            Instant::now() < deadline,
            "the stock store never got the supply"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Bench {
        app: state,
        db,
        events,
        product,
        variant,
        buyers: shop.buyers,
        stop: Some(stop),
        server,
        cleanup,
        file,
        redis_prefix,
    }
}

impl Bench {
    fn buyer(&self, n: u64) -> (&prepare::Member, MemberId) {
        let m = &self.buyers[(n % BUYERS as u64) as usize];
        (m, MemberId::from_uuid(m.member_id.parse().unwrap()))
    }

    fn order(&self, n: u64) -> NewOrder {
        let (m, _) = self.buyer(n);
        NewOrder {
            lines: vec![NewLine {
                product_id: self.product,
                variant_id: self.variant,
                quantity: 1,
            }],
            address_id: m.address_id.parse().unwrap(),
            method: "sandbox".into(),
            token: "tok_visa".into(),
            from_cart: false,
        }
    }

    async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.server.await;
        if let Some((server, db)) = self.cleanup.take() {
            let mut admin = sqlx::MySqlConnection::connect(&server).await.unwrap();
            admin
                .execute(format!("DROP DATABASE {db}").as_str())
                .await
                .unwrap();
        }
        if let Some(file) = self.file.take() {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
        if let Some(prefix) = self.redis_prefix.take() {
            let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query_async(&mut c)
                .await
                .unwrap();
            for chunk in keys.chunks(500) {
                let _: () = redis::cmd("DEL")
                    .arg(chunk)
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        }
    }
}

/// `n` of `op` at once, `iters / n` times over; the time per operation.
async fn concurrently<F, Fut>(iters: u64, n: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let mut i = 0;
    while i < iters {
        let batch = n.min(iters - i);
        futures_util::future::join_all((i..i + batch).map(&op)).await;
        i += batch;
    }
    started.elapsed()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for name in ["sqlite", "mariadb"] {
        let opened = runtime.block_on(open(name));
        let b = &opened;
        let next = AtomicU64::new(0);
        let fresh = || next.fetch_add(1, Ordering::Relaxed);
        let mut group = c.benchmark_group(format!("order_path/{name}"));
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(5));

        let token = b.buyers[0].access.clone();
        group.bench_function("token_check", |t| {
            t.to_async(&runtime)
                .iter(|| async { b.app.auth.authenticate(&token).await.unwrap() })
        });
        group.bench_function("catalog_lookup", |t| {
            t.iter(|| b.app.catalog.product(b.product).unwrap())
        });
        let hold = |n: u64| {
            let (_, buyer) = b.buyer(n);
            HoldRequest {
                order_id: OrderId::from_uuid(Uuid::now_v7()),
                buyer,
                fingerprint: format!("bench-{n}"),
                lines: vec![HoldLine {
                    product_id: b.product,
                    variant_id: b.variant,
                    quantity: 1,
                }],
                terms: vec![SaleTerms {
                    product_id: b.product,
                    opens_at: None,
                    ends_at: None,
                    limit: None,
                }],
                from_cart: None,
            }
        };
        group.bench_function("hold", |t| {
            t.to_async(&runtime).iter(|| async {
                b.app.stock.hold(&hold(fresh())).await.unwrap();
            })
        });
        let counter = format!("bench/{}", Uuid::now_v7());
        runtime.block_on(async {
            let seed =
                vec![EventData::json("BenchSupplied", "1.0", &serde_json::json!({})).unwrap()];
            b.events
                .append_moving(
                    StreamRef::new("bench", Uuid::now_v7().to_string()),
                    ExpectedVersion::NO_STREAM,
                    seed,
                    Metadata::default(),
                    vec![CounterMove::new(counter.clone(), 1_000_000_000)],
                )
                .await
                .unwrap();
        });
        let append = || async {
            let event = EventData::json(
                "BenchOrdered",
                "1.0",
                &serde_json::json!({"lines": [{"quantity": 1}], "total": 10000}),
            )
            .unwrap();
            b.events
                .append_moving(
                    StreamRef::new("bench", Uuid::now_v7().to_string()),
                    ExpectedVersion::NO_STREAM,
                    vec![event],
                    Metadata::default(),
                    vec![CounterMove {
                        counter: counter.clone(),
                        delta: -1,
                        floor: Some(0),
                    }],
                )
                .await
                .unwrap();
        };
        group.bench_function("guarded_append", |t| t.to_async(&runtime).iter(append));
        group.bench_function("guarded_append_x64", |t| {
            t.to_async(&runtime)
                .iter_custom(|iters| concurrently(iters, 64, move |_| append()))
        });
        let entered = runtime.enter();
        let gateway =
            openrun::payment::sandbox::SandboxGateway::new(b.db.clone(), openrun::clock::system());
        drop(entered);
        let gateway = &gateway;
        group.bench_function("sandbox_charge", |t| {
            t.to_async(&runtime).iter(|| async {
                gateway
                    .charge(
                        OrderId::from_uuid(Uuid::now_v7()),
                        Money::from_minor(10_000),
                        "tok_visa",
                    )
                    .await
            })
        });
        let place = |n: u64| async move {
            let (_, buyer) = b.buyer(n);
            let answer = b
                .app
                .orders
                .place(
                    Actor::new(buyer, Role::Basic),
                    &format!("bench-{n}"),
                    b.order(n),
                )
                .await
                .unwrap();
            assert_eq!(answer.status, 201, "{}", answer.body);
        };
        group.bench_function("place_order", |t| {
            t.to_async(&runtime).iter(|| place(fresh()))
        });
        group.bench_function("place_order_x64", |t| {
            t.to_async(&runtime)
                .iter_custom(|iters| concurrently(iters, 64, |_| place(fresh())))
        });
        group.finish();
        runtime.block_on(opened.close());
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
