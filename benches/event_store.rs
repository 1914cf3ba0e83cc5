//! Appends per second of single-event streams through the event store, at 1, 64 and 1024
//! concurrent appenders, on MariaDB and on SQLite; and, against the same MariaDB in the same
//! run, two references: the same workload through mysql-es 0.5's `MysqlEventRepository`, and
//! raw 500-row multi-row INSERTs into the same table with no event-store logic (the ceiling).
//!
//! Needs MariaDB at `OPENRUN_BENCH_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`); creates
//! and drops a database of its own. Run: `cargo bench --bench event_store`, then
//! `python3 scripts/bench_ratios.py` for the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use mysql_es::MysqlEventRepository;
use openrun::config::Config;
use openrun::db::Database;
use openrun::eventstore::{self, EventData, EventStore, ExpectedVersion, Metadata, StreamRef};
use serde::{Deserialize, Serialize};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{Connection, Executor, MySqlPool};
use tokio::runtime::Runtime;
use uuid::Uuid;

const CONCURRENCY: [usize; 3] = [1, 64, 1024];
const RAW_ROWS_PER_INSERT: usize = 500;
const RAW_CLIENTS: usize = 4;

/// A typical event: an order placed with two lines, about 300 bytes of JSON.
fn payload() -> serde_json::Value {
    serde_json::json!({
        "order_id": Uuid::now_v7(),
        "buyer_id": Uuid::now_v7(),
        "lines": [
            {"product_id": Uuid::now_v7(), "quantity": 1, "unit_price": 129000},
            {"product_id": Uuid::now_v7(), "quantity": 2, "unit_price": 45000}
        ],
        "total": 219000,
        "payment_ref": "pay_3LkQ0aZx"
    })
}

fn metadata() -> Metadata {
    Metadata {
        correlation_id: Some(Uuid::now_v7()),
        causation_id: None,
        actor: Some(format!("member:{}", Uuid::now_v7())),
        idempotency_key: None,
        hold_id: None,
    }
}

/// How many appends each appender makes in one measured iteration.
fn appends_per_appender(concurrency: usize) -> usize {
    match concurrency {
        1 => 200,
        64 => 40,
        _ => 8,
    }
}

/// Runs `concurrency` tasks, each making `per_task` calls of `op`; returns the elapsed time.
async fn drive<F, Fut>(concurrency: usize, per_task: usize, op: Arc<F>) -> Duration
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                for _ in 0..per_task {
                    op().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

fn openrun_append(
    store: Arc<dyn EventStore>,
) -> Arc<impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>
{
    Arc::new(move || {
        let store = Arc::clone(&store);
        Box::pin(async move {
            let event = EventData::json("OrderPlaced", "1.0", &payload()).unwrap();
            store
                .append(
                    StreamRef::new("order", Uuid::now_v7().to_string()),
                    ExpectedVersion::NO_STREAM,
                    vec![event],
                    metadata(),
                )
                .await
                .unwrap();
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    })
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Order;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderPlaced(serde_json::Value);

impl DomainEvent for OrderPlaced {
    fn event_type(&self) -> String {
        "OrderPlaced".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = ();
    type Event = OrderPlaced;
    type Error = Never;
    type Services = ();
    async fn handle(&mut self, _: (), _: &(), _: &EventSink<Self>) -> Result<(), Never> {
        Ok(())
    }
    fn apply(&mut self, _: OrderPlaced) {}
}

fn mysql_es_append(
    repo: Arc<MysqlEventRepository>,
) -> Arc<impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>
{
    Arc::new(move || {
        let repo = Arc::clone(&repo);
        Box::pin(async move {
            let event = SerializedEvent {
                aggregate_id: Uuid::now_v7().to_string(),
                sequence: 1,
                aggregate_type: "order".into(),
                event_type: "OrderPlaced".into(),
                event_version: "1.0".into(),
                payload: payload(),
                metadata: serde_json::to_value(metadata()).unwrap(),
            };
            repo.persist::<Order>(&[event], None).await.unwrap();
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    })
}

/// Raw multi-row INSERTs of the same rows into the same table, with positions from a counter
/// far above the store's, no version check, no head lock.
async fn raw_inserts(pool: &MySqlPool, next: &AtomicU64, statements_per_client: usize) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..RAW_CLIENTS)
        .map(|_| {
            let pool = pool.clone();
            let first = next.fetch_add(
                (RAW_ROWS_PER_INSERT * statements_per_client) as u64,
                Ordering::Relaxed,
            );
            tokio::spawn(async move {
                for s in 0..statements_per_client {
                    let base = first + (s * RAW_ROWS_PER_INSERT) as u64;
                    let mut query = sqlx::QueryBuilder::<sqlx::MySql>::new(
                        "INSERT INTO events (global_position, stream_type, stream_id, version, \
                         event_type, event_version, payload, metadata, recorded_at) ",
                    );
                    let now = chrono::Utc::now().naive_utc();
                    query.push_values(0..RAW_ROWS_PER_INSERT as u64, |mut b, i| {
                        b.push_bind(base + i)
                            .push_bind("order")
                            .push_bind(Uuid::now_v7().to_string())
                            .push_bind(1u64)
                            .push_bind("OrderPlaced")
                            .push_bind("1.0")
                            .push_bind(payload().to_string())
                            .push_bind(serde_json::to_string(&metadata()).unwrap())
                            .push_bind(now);
                    });
                    query.build().execute(&pool).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

struct MariaDb {
    server: String,
    name: String,
    url: String,
}

impl MariaDb {
    async fn create() -> Self {
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
        Self {
            url: format!("{server}/{name}"),
            server,
            name,
        }
    }

    async fn drop_database(&self) {
        let mut admin = sqlx::MySqlConnection::connect(&self.server).await.unwrap();
        admin
            .execute(format!("DROP DATABASE IF EXISTS {}", self.name).as_str())
            .await
            .unwrap();
    }
}

async fn open_store(url: &str) -> (Database, Arc<dyn EventStore>) {
    let config = Config::local(url).unwrap();
    let db = openrun::startup::connect(&config).await.unwrap();
    openrun::db::migrate(&db).await.unwrap();
    let store = eventstore::open(&db, &config.group_commit);
    (db, store)
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let mariadb = rt.block_on(MariaDb::create());
    let (_mysql_db, mysql_store) = rt.block_on(open_store(&mariadb.url));
    let mysql_es_pool = rt.block_on(async {
        let pool = MySqlPoolOptions::new()
            .max_connections(100)
            .connect(&mariadb.url)
            .await
            .unwrap();
        for ddl in [
            "CREATE TABLE mysqles_events (aggregate_type varchar(255) NOT NULL, \
             aggregate_id varchar(255) NOT NULL, sequence bigint NOT NULL CHECK (sequence >= 0), \
             event_type text NOT NULL, event_version text NOT NULL, payload json NOT NULL, \
             metadata json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
            "CREATE TABLE mysqles_snapshots (aggregate_type varchar(255) NOT NULL, \
             aggregate_id varchar(255) NOT NULL, last_sequence bigint NOT NULL, \
             current_snapshot bigint NOT NULL, payload json NOT NULL, \
             PRIMARY KEY (aggregate_type, aggregate_id))",
        ] {
            pool.execute(ddl).await.unwrap();
        }
        pool
    });
    let mysql_es = Arc::new(
        MysqlEventRepository::new(mysql_es_pool.clone())
            .with_tables("mysqles_events", "mysqles_snapshots"),
    );
    let sqlite_dir =
        std::env::temp_dir().join(format!("openrun_bench_{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&sqlite_dir).unwrap();
    let (_sqlite_db, sqlite_store) = rt.block_on(open_store(&format!(
        "sqlite://{}",
        sqlite_dir.join("bench.db").display()
    )));

    let mut group = c.benchmark_group("append");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    for concurrency in CONCURRENCY {
        let per_task = appends_per_appender(concurrency);
        group.throughput(Throughput::Elements((concurrency * per_task) as u64));
        let cases: [(&str, &dyn Fn() -> Duration); 3] = [
            ("mariadb-openrun", &|| {
                rt.block_on(drive(
                    concurrency,
                    per_task,
                    openrun_append(Arc::clone(&mysql_store)),
                ))
            }),
            ("mariadb-mysql-es", &|| {
                rt.block_on(drive(
                    concurrency,
                    per_task,
                    mysql_es_append(Arc::clone(&mysql_es)),
                ))
            }),
            ("sqlite-openrun", &|| {
                rt.block_on(drive(
                    concurrency,
                    per_task,
                    openrun_append(Arc::clone(&sqlite_store)),
                ))
            }),
        ];
        for (name, run) in cases {
            group.bench_function(BenchmarkId::new(name, concurrency), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| run()).sum())
            });
        }
    }
    let raw_pool = rt
        .block_on(
            MySqlPoolOptions::new()
                .max_connections(RAW_CLIENTS as u32)
                .connect(&mariadb.url),
        )
        .unwrap();
    let next = AtomicU64::new(1 << 50);
    let statements = 4;
    group.throughput(Throughput::Elements(
        (RAW_CLIENTS * statements * RAW_ROWS_PER_INSERT) as u64,
    ));
    group.bench_function(
        BenchmarkId::new("mariadb-raw-insert-500", RAW_CLIENTS),
        |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(raw_inserts(&raw_pool, &next, statements)))
                    .sum()
            })
        },
    );
    group.finish();

    rt.block_on(async {
        mysql_store.shutdown().await;
        sqlite_store.shutdown().await;
        mariadb.drop_database().await;
    });
    let _ = std::fs::remove_dir_all(&sqlite_dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
