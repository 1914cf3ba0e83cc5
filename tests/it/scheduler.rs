//! The durable schedule and the scheduler: timed transitions fire through the command path,
//! exactly once, with several service processes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use openrun::commands::Commands;
use openrun::db::Database;
use openrun::eventstore::{EventStore, Metadata, StreamRef};
use openrun_domain::order::{LineItem, OrderCommand, Payment, SealedAddress};
use openrun_domain::product::{ProductCommand, ProductStatus};
use openrun_domain::{
    Actor, CategoryId, MemberId, Money, OrderId, OrderPolicy, ProductId, Role, ScheduleId,
};
use openrun_projections::Projection;
use openrun_projections::schedule::Schedule;
use openrun_projections::store::{Pool, Tables, Tx};
use uuid::Uuid;

use crate::helpers::{Backend, TestApp, TestDb, on_both_backends, serve_http};

/// How many shipping commands the process at `addr` has sent, from its `/metrics`.
async fn shipments_fired(addr: std::net::SocketAddr) -> u64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("openrun_schedule_fired_total") && l.contains("order_ship"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

on_both_backends!(
    scheduled_transitions_fire_through_the_command_path,
    the_nightly_audit_runs_at_its_time,
    rebuilding_the_schedule_keeps_the_scheduler_s_progress,
    a_rebuild_that_dies_in_its_swap_keeps_every_claim,
    a_rebuild_that_dies_after_replacing_the_rows_keeps_every_claim,
    a_rebuild_that_loses_its_lease_never_swaps,
    a_scheduler_firing_through_rebuilds_fires_each_row_once,
    schedule_keys_compare_byte_for_byte_like_stream_ids,
    a_claim_left_by_a_dead_process_fires_once_it_expires,
    a_host_whose_clock_runs_fast_cannot_take_a_live_claim
);

/// Claims and their expiry are on the database's clock: a process whose own clock runs an
/// hour ahead fires what is due, but leaves alone a claim another process holds for 30 more
/// minutes.
async fn a_host_whose_clock_runs_fast_cannot_take_a_live_claim(backend: Backend) {
    let fast = openrun::clock::ManualClock::new(Utc::now() + chrono::Duration::hours(1));
    let app = TestApp::spawn_with_clock(backend, |_| {}, Arc::new(fast)).await;
    let db = app.db.clone();
    let pool: openrun_projections::store::Pool = db.clone();
    let now = openrun_projections::store::database_now(&pool)
        .await
        .unwrap();
    let minute = 60_000_000;
    let insert = "INSERT INTO schedule (id, kind, stream_id, due_at, status, next_attempt_at, \
                  attempts, claimed_by) VALUES (?, 'test/none', '-', ?, ?, ?, ?, ?)";
    let rows = [
        (
            "live-claim",
            "claimed",
            now + 30 * minute,
            1,
            Some("another-process"),
        ),
        ("due-now", "pending", now - minute, 0, None),
    ];
    for (id, status, next, attempts, owner) in rows {
        crate::helpers::on_pool!(&db, p => {
            let q = sqlx::query(insert).bind(id).bind(now - minute).bind(status);
            q.bind(next).bind(attempts).bind(owner).execute(p).await.map(drop)
        })
        .unwrap();
    }
    // The scheduler got past both rows once it closed the due one.
    wait_for(
        "the due row to close",
        Duration::from_secs(30),
        async || {
            schedule_rows(&db)
                .await
                .iter()
                .any(|r| r.0 == "due-now" && r.5 == "done")
        },
    )
    .await;
    let live = schedule_rows(&db)
        .await
        .into_iter()
        .find(|r| r.0 == "live-claim")
        .unwrap();
    assert_eq!(live.5, "claimed");
    assert_eq!(live.8.as_deref(), Some("another-process"));
    assert_eq!(live.7, 1, "the live claim was not taken again");
    app.stop().await;
}

async fn a_claim_left_by_a_dead_process_fires_once_it_expires(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let events = Arc::clone(&app.events);
    let commands = app.state.commands.clone();
    let db = app.db.clone();
    // Ships 20 s after it is placed; before then, a process claims the row and dies.
    let order = place_order(&commands, 20, 3600).await;
    let id = format!("order/{order}/ship");
    wait_for("the ship row", Duration::from_secs(16), async || {
        schedule_rows(&db).await.iter().any(|r| r.0 == id)
    })
    .await;
    let expires = Utc::now() + chrono::Duration::seconds(24);
    let sql = format!(
        "UPDATE schedule SET status = 'claimed', claimed_by = 'a-dead-process', attempts = 1, \
         next_attempt_at = {} WHERE id = ? AND status = 'pending'",
        expires.timestamp_micros()
    );
    let claimed = match &db {
        Database::MySql(pool) => sqlx::query(&sql)
            .bind(&id)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
        Database::Sqlite(pool) => sqlx::query(&sql)
            .bind(&id)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
    };
    assert_eq!(claimed, 1, "the row was still pending");
    let stream = StreamRef::new("order", &order);
    wait_for("the order to ship", Duration::from_secs(60), async || {
        event_types(events.as_ref(), &stream).await.len() == 2
    })
    .await;
    let shipped = events.read_stream(&stream, 2, 1).await.unwrap();
    assert_eq!(shipped[0].event_type, "OrderShipped");
    assert!(
        shipped[0].recorded_at >= expires,
        "not before the dead claim expired"
    );
    let row = schedule_rows(&db)
        .await
        .into_iter()
        .find(|r| r.0 == id)
        .unwrap();
    wait_for("the row to close", Duration::from_secs(10), async || {
        schedule_rows(&db)
            .await
            .iter()
            .any(|r| r.0 == id && r.5 == "done")
    })
    .await;
    let row_done = schedule_rows(&db)
        .await
        .into_iter()
        .find(|r| r.0 == id)
        .unwrap();
    assert_eq!((row_done.7, row_done.8), (2, None), "{row:?}");
    app.stop().await;
}

type Row = (
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
    i64,
    i32,
    Option<String>,
    Option<String>,
    Option<i64>,
);

async fn schedule_rows(db: &Database) -> Vec<Row> {
    let sql = "SELECT CAST(id AS CHAR), kind, CAST(stream_id AS CHAR), schedule_id, due_at, status, next_attempt_at, \
               attempts, claimed_by, last_error, closed_at FROM schedule ORDER BY id";
    match db {
        Database::MySql(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        Database::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
    }
}

async fn execute(db: &Database, sql: &str, id: &str) {
    match db {
        Database::MySql(pool) => sqlx::query(sql).bind(id).execute(pool).await.map(drop),
        Database::Sqlite(pool) => sqlx::query(sql).bind(id).execute(pool).await.map(drop),
    }
    .unwrap();
}

/// The schedule is a projection, but the scheduler's progress in it is not in the log: a
/// rebuild must keep rows closed without an event, claims, attempts and errors, and the
/// nightly rows.
async fn rebuilding_the_schedule_keeps_the_scheduler_s_progress(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (db, events) = (app.db.clone(), Arc::clone(&app.events));
    schedule_with_progress(&app).await;
    let before = schedule_rows(&db).await;
    openrun::ops::rebuild(&db, Arc::clone(&events), "schedule")
        .await
        .unwrap();
    assert_eq!(schedule_rows(&db).await, before);
    app.stop().await;
}

/// Two orders whose stream ids differ only in case are two streams in the log, and so two
/// rows in the schedule: a case-insensitive key would fold the second into the first and
/// its shipment would never fire.
async fn schedule_keys_compare_byte_for_byte_like_stream_ids(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let db = app.db.clone();
    let tag = Uuid::now_v7().simple().to_string();
    let ids = [format!("Case-{tag}"), format!("case-{tag}")];
    for id in &ids {
        place_order_as(
            &app.state.commands,
            id,
            OrderId::from_uuid(Uuid::now_v7()),
            3600,
            3600,
        )
        .await;
    }
    wait_for("both ship rows", Duration::from_secs(30), async || {
        let rows = schedule_rows(&db).await;
        ids.iter().all(|id| {
            rows.iter()
                .any(|r| r.0 == format!("order/{id}/ship") && r.2 == *id)
        })
    })
    .await;
    app.stop().await;
}

/// The schedule projection with a fault put into its rebuild.
struct Faulty(Fault);

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// The process dies inside the swap, after the state was carried over.
    DiesInTheSwap,
    /// The process dies at the end of the swap, after the live rows were replaced with the
    /// rebuilt ones and before the commit; `spoiled` is a row the rebuilt tables put right.
    DiesAfterReplacing { spoiled: &'static str },
    /// While replaying, another rebuild takes the lease over (this one stalled past it).
    LosesTheLease,
}

#[async_trait::async_trait]
impl Projection for Faulty {
    fn name(&self) -> &'static str {
        Schedule.name()
    }

    fn tables(&self) -> &'static [&'static str] {
        Schedule.tables()
    }

    async fn create_tables(&self, pool: &Pool, tables: &Tables) -> anyhow::Result<()> {
        Schedule.create_tables(pool, tables).await
    }

    fn holds_state_outside_the_log(&self) -> bool {
        Schedule.holds_state_outside_the_log()
    }

    async fn carry_over(&self, tx: &mut Tx, from: &Tables, into: &Tables) -> anyhow::Result<()> {
        Schedule.carry_over(tx, from, into).await?;
        if self.0 == Fault::DiesInTheSwap {
            anyhow::bail!("the process died in the middle of the swap");
        }
        Ok(())
    }

    async fn check_swap(&self, tx: &mut Tx, live: &Tables) -> anyhow::Result<()> {
        let Fault::DiesAfterReplacing { spoiled } = self.0 else {
            return Ok(());
        };
        let sql = format!("SELECT due_at FROM {} WHERE id = ?", live.name("schedule"));
        let due: i64 = match tx {
            Tx::MySql(t) => {
                sqlx::query_scalar(&sql)
                    .bind(spoiled)
                    .fetch_one(&mut **t)
                    .await?
            }
            Tx::Sqlite(t) => {
                sqlx::query_scalar(&sql)
                    .bind(spoiled)
                    .fetch_one(&mut **t)
                    .await?
            }
        };
        anyhow::ensure!(due > 1, "the live rows were not replaced inside the swap");
        anyhow::bail!("the process died after replacing the live rows")
    }

    async fn apply(
        &self,
        tx: &mut Tx,
        tables: &Tables,
        event: &openrun_projections::log::RecordedEvent,
    ) -> anyhow::Result<()> {
        if self.0 == Fault::LosesTheLease && *tables == Tables::REBUILD {
            tx.execute(
                "UPDATE projection_leases SET owner = 'another-rebuild' WHERE name = 'schedule#rebuild'",
            )
            .await?;
        }
        Schedule.apply(tx, tables, event).await
    }
}

async fn rebuild_with(
    db: &Database,
    events: &Arc<dyn EventStore>,
    fault: Fault,
) -> anyhow::Result<u64> {
    let source = openrun::eventstore::LogSource(Arc::clone(events));
    openrun_projections::rebuild::rebuild(
        db,
        &source,
        Arc::new(Faulty(fault)),
        "faulty-rebuild",
        Duration::from_secs(5),
        &|_, _| {},
    )
    .await
}

/// Four orders that ship in an hour, and the scheduler's progress on three of them that the
/// log does not hold: one closed without an event, one failed and waiting to retry, one
/// claimed by another process.
async fn schedule_with_progress(app: &TestApp) -> Vec<String> {
    let db = &app.db;
    let mut orders = Vec::new();
    for _ in 0..4 {
        orders.push(place_order(&app.state.commands, 3600, 3600).await);
    }
    wait_for(
        "the schedule projection",
        Duration::from_secs(60),
        async || {
            let rows = schedule_rows(db).await;
            rows.iter().filter(|r| r.1 == "order_ship").count() == 4
                && rows.iter().any(|r| r.1 == "nightly_audit")
        },
    )
    .await;
    let ship = |order: &str| format!("order/{order}/ship");
    let later = "4102444800000000"; // 2100-01-01, never due in this test
    execute(
        db,
        "UPDATE schedule SET status = 'done', attempts = 1, closed_at = 1, \
         last_error = 'not applicable: refused' WHERE id = ?",
        &ship(&orders[0]),
    )
    .await;
    execute(
        db,
        &format!(
            "UPDATE schedule SET attempts = 3, next_attempt_at = {later}, \
             last_error = 'database down' WHERE id = ?"
        ),
        &ship(&orders[1]),
    )
    .await;
    execute(
        db,
        &format!(
            "UPDATE schedule SET status = 'claimed', attempts = 1, claimed_by = 'another', \
             next_attempt_at = {later} WHERE id = ?"
        ),
        &ship(&orders[2]),
    )
    .await;
    orders
}

/// A crash in the middle of the swap (after the scheduler's state was carried into the
/// rebuilt tables) rolls the whole swap back: the live schedule keeps every claim, closed row
/// and retry, and the next rebuild goes through.
async fn a_rebuild_that_dies_in_its_swap_keeps_every_claim(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (db, events) = (app.db.clone(), Arc::clone(&app.events));
    schedule_with_progress(&app).await;
    let before = schedule_rows(&db).await;
    let died = rebuild_with(&db, &events, Fault::DiesInTheSwap).await;
    assert!(
        format!("{:#}", died.unwrap_err()).contains("died in the middle of the swap"),
        "the fault fired"
    );
    assert_eq!(schedule_rows(&db).await, before);
    openrun::ops::rebuild(&db, Arc::clone(&events), "schedule")
        .await
        .unwrap();
    assert_eq!(schedule_rows(&db).await, before);
    app.stop().await;
}

/// A crash at the very end of the swap, when the live tables already hold the rebuilt rows
/// (the fault checks that they do), rolls everything back too: the spoiled row stays
/// spoiled and the scheduler's claims, closed rows and retries stay as they were.
async fn a_rebuild_that_dies_after_replacing_the_rows_keeps_every_claim(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (db, events) = (app.db.clone(), Arc::clone(&app.events));
    let orders = schedule_with_progress(&app).await;
    let spoiled: &'static str = format!("order/{}/ship", orders[3]).leak();
    execute(&db, "UPDATE schedule SET due_at = 1 WHERE id = ?", spoiled).await;
    let before = schedule_rows(&db).await;
    let died = rebuild_with(&db, &events, Fault::DiesAfterReplacing { spoiled }).await;
    assert!(
        format!("{:#}", died.unwrap_err()).contains("died after replacing the live rows"),
        "the fault fired after the live rows were replaced"
    );
    assert_eq!(
        schedule_rows(&db).await,
        before,
        "the whole swap rolled back"
    );
    openrun::ops::rebuild(&db, Arc::clone(&events), "schedule")
        .await
        .unwrap();
    let after = schedule_rows(&db).await;
    assert!(after.iter().find(|r| r.0 == spoiled).unwrap().4 > 1);
    app.stop().await;
}

/// A rebuild that finds its lease taken over (it stalled past it and another rebuild began)
/// stops without swapping, and a second rebuild is refused while the lease is held.
async fn a_rebuild_that_loses_its_lease_never_swaps(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (db, events) = (app.db.clone(), Arc::clone(&app.events));
    let orders = schedule_with_progress(&app).await;
    // A column only the log decides, spoiled: a swap would put it right.
    let spoiled = format!("order/{}/ship", orders[3]);
    execute(&db, "UPDATE schedule SET due_at = 1 WHERE id = ?", &spoiled).await;
    let before = schedule_rows(&db).await;
    let lost = rebuild_with(&db, &events, Fault::LosesTheLease).await;
    assert!(
        format!("{:#}", lost.unwrap_err()).contains("lease"),
        "stopped for its lease"
    );
    assert_eq!(schedule_rows(&db).await, before, "nothing was swapped in");
    // The lease is another rebuild's now (live for seconds more): no second one interleaves.
    let refused = openrun::ops::rebuild(&db, Arc::clone(&events), "schedule").await;
    assert!(
        format!("{:#}", refused.unwrap_err()).contains("another rebuild"),
        "a second rebuild is refused while one holds the lease"
    );
    execute(
        &db,
        "DELETE FROM projection_leases WHERE name = ?",
        "schedule#rebuild",
    )
    .await;
    openrun::ops::rebuild(&db, Arc::clone(&events), "schedule")
        .await
        .unwrap();
    let fixed = schedule_rows(&db).await;
    let row = fixed.iter().find(|r| r.0 == spoiled).unwrap();
    assert!(row.4 > 1, "the swap rebuilt the row from the log");
    app.stop().await;
}

/// The scheduler fires 40 shipments that fall due over four seconds while the schedule is
/// rebuilt again and again, beside ten rows it closed without an event. A reader watching the table never sees a claimed or closed row
/// pending again, and every shipment fires once (a second firing would be refused by the
/// domain and leave its note on the row).
async fn a_scheduler_firing_through_rebuilds_fires_each_row_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (db, events) = (app.db.clone(), Arc::clone(&app.events));
    let mut firing = std::collections::HashSet::new();
    for i in 0..40 {
        let order = place_order(&app.state.commands, 1 + i % 4, 3600).await;
        firing.insert(format!("order/{order}/ship"));
    }
    // Ten more that the scheduler closed without an event (the domain refused the step): the
    // log alone would leave them pending, so every swap must carry them over.
    for _ in 0..10 {
        let order = place_order(&app.state.commands, 3600, 3600).await;
        let id = format!("order/{order}/ship");
        wait_for("the ship row", Duration::from_secs(30), async || {
            schedule_rows(&db).await.iter().any(|r| r.0 == id)
        })
        .await;
        execute(
            &db,
            "UPDATE schedule SET status = 'done', attempts = 1, closed_at = 1, \
             last_error = 'not applicable: refused' WHERE id = ?",
            &id,
        )
        .await;
    }
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (db, watching) = (db.clone(), Arc::clone(&watching));
        tokio::spawn(async move {
            let mut progressed = std::collections::HashSet::new();
            let mut regressions = std::collections::BTreeSet::new();
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                for row in schedule_rows(&db)
                    .await
                    .into_iter()
                    .filter(|r| r.1 == "order_ship")
                {
                    if row.5 == "pending" && progressed.contains(&row.0) {
                        regressions.insert(row.0.clone());
                    } else if row.5 != "pending" {
                        progressed.insert(row.0);
                    }
                }
                tokio::task::yield_now().await;
            }
            (progressed.len(), regressions)
        })
    };
    let mut rebuilds = 0;
    let started = Instant::now();
    loop {
        openrun::ops::rebuild(&db, Arc::clone(&events), "schedule")
            .await
            .unwrap();
        rebuilds += 1;
        let ships = ship_rows(&db).await;
        if ships.len() == 50 && ships.iter().all(|r| r.0 == "done") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the shipments did not all fire"
        );
    }
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let (seen, regressions) = watcher.await.unwrap();
    assert!(rebuilds >= 3, "only {rebuilds} rebuilds ran while firing");
    assert!(seen > 0, "the watcher saw the scheduler's progress");
    assert!(
        regressions.is_empty(),
        "{} rows seen pending again, among them {:?}",
        regressions.len(),
        regressions.first()
    );
    for row in schedule_rows(&db)
        .await
        .iter()
        .filter(|r| r.1 == "order_ship")
    {
        let (attempts, error) = (row.7, row.9.as_deref());
        if firing.contains(&row.0) {
            assert_eq!((attempts, error), (1, None), "fired once: {row:?}");
        } else {
            assert_eq!(
                (attempts, error),
                (1, Some("not applicable: refused")),
                "{row:?}"
            );
        }
    }
    app.stop().await;
}

async fn the_nightly_audit_runs_at_its_time(backend: Backend) {
    // Its time passed five minutes ago: a run missed by less than an hour runs at start-up,
    // and its own audit does not count it (or anything else it is running) as overdue.
    let at = (chrono::Local::now() - chrono::Duration::minutes(5)).time();
    let app = TestApp::spawn_with(backend, |c| c.scheduler.nightly_at = at).await;
    let sql = "SELECT status, last_error FROM schedule WHERE kind = 'nightly_audit'";
    let db = app.db.clone();
    wait_for("the nightly audit", Duration::from_secs(60), async || {
        let rows: Vec<(String, Option<String>)> = match &db {
            Database::MySql(pool) => sqlx::query_as(sql).fetch_all(pool).await,
            Database::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
        }
        .unwrap_or_default();
        rows.iter()
            .any(|(status, error)| status == "done" && error.is_none())
    })
    .await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("openrun_audit_violations 0"), "{metrics}");
    app.stop().await;
}

fn member(role: Role) -> Actor {
    Actor {
        member_id: MemberId::from_uuid(Uuid::now_v7()),
        role,
    }
}

/// Places an order that ships `ship_after` after it is placed and is delivered `deliver_after`
/// after that.
async fn place_order(commands: &Commands, ship_after: i64, deliver_after: i64) -> String {
    let order_id = OrderId::from_uuid(Uuid::now_v7());
    let id = order_id.as_uuid().to_string();
    place_order_as(commands, &id, order_id, ship_after, deliver_after).await;
    id
}

/// Places an order on the stream `id`.
async fn place_order_as(
    commands: &Commands,
    id: &str,
    order_id: OrderId,
    ship_after: i64,
    deliver_after: i64,
) {
    let policy = OrderPolicy {
        ship_after: chrono::Duration::seconds(ship_after),
        deliver_after: chrono::Duration::seconds(deliver_after),
        ..OrderPolicy::default()
    };
    // The units it sells, first.
    let variant = openrun_domain::VariantId::from_uuid(Uuid::now_v7());
    let seller = member(Role::Seller);
    let supply = openrun_domain::stock::StockCommand::Add {
        actor: seller,
        owner: seller.member_id,
        quantity: 2,
        request_id: None,
    };
    commands
        .stock(&variant.to_string(), supply, Metadata::default())
        .await
        .unwrap();
    let place = OrderCommand::Place {
        actor: member(Role::Basic),
        order_id,
        lines: vec![LineItem {
            product_id: ProductId::from_uuid(Uuid::now_v7()),
            variant_id: variant,
            quantity: 2,
            unit_price: Money::from_minor(5000),
        }],
        shipping_address: SealedAddress("sealed:test".into()),
        payment: Payment {
            method: "sandbox".into(),
            reference: "pay_1".into(),
            amount: Money::from_minor(10_000),
        },
        policy,
        fingerprint: String::new(),
    };
    commands
        .order(id, place, Metadata::default())
        .await
        .unwrap();
}

async fn event_types(events: &dyn EventStore, stream: &StreamRef) -> Vec<String> {
    events
        .read_stream(stream, 1, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

async fn wait_for(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scheduled_transitions_fire_through_the_command_path(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let events = Arc::clone(&app.events);
    let commands = app.state.commands.clone();

    // An order that ships 1 s after it is placed and is delivered 1 s after that.
    let order = place_order(&commands, 1, 1).await;
    let stream = StreamRef::new("order", &order);
    wait_for(
        "the order to be delivered",
        Duration::from_secs(60),
        async || {
            event_types(events.as_ref(), &stream).await
                == ["OrderPlaced", "OrderShipped", "OrderDelivered"]
        },
    )
    .await;
    let recorded = events.read_stream(&stream, 1, 10).await.unwrap();
    assert_eq!(
        recorded[1].metadata.actor.as_deref(),
        Some("system:scheduler")
    );
    assert!(recorded[1].metadata.causation_id.is_some());

    // A product whose sale is announced by a status change scheduled 2 s ahead.
    let seller = member(Role::Seller);
    let product = ProductId::from_uuid(Uuid::now_v7());
    let product_id = product.as_uuid().to_string();
    let register = ProductCommand::Register {
        actor: seller,
        product_id: product,
        category_id: CategoryId::from_uuid(Uuid::now_v7()),
        name: "Sneaker".into(),
        description: "A limited sneaker".into(),
        price: Money::from_minor(129_000),
        variants: vec![openrun_domain_variant()],
        purchase_limit: None,
    };
    commands
        .product(&product_id, register, Metadata::default())
        .await
        .unwrap();
    // Due in about 2 s, in whole seconds; made as if 10 s earlier (the least lead), by a
    // command path on a clock of its own, so the test need not wait out the lead.
    let due_at = chrono::DateTime::from_timestamp(Utc::now().timestamp() + 3, 0).unwrap();
    let schedule = ProductCommand::ScheduleStatusChange {
        actor: seller,
        schedule_id: ScheduleId::from_uuid(Uuid::now_v7()),
        to: ProductStatus::Waiting,
        due_at,
    };
    let earlier =
        openrun::clock::ManualClock::new(due_at - openrun_domain::product::SCHEDULE_MIN_LEAD);
    Commands::new(Arc::clone(&events), Arc::new(earlier))
        .product(&product_id, schedule, Metadata::default())
        .await
        .unwrap();
    let stream = StreamRef::new("product", &product_id);
    wait_for(
        "the scheduled status change",
        Duration::from_secs(60),
        async || {
            event_types(events.as_ref(), &stream)
                .await
                .iter()
                .any(|t| t == "ProductStatusChanged")
        },
    )
    .await;
    let changed = events.read_stream(&stream, 3, 1).await.unwrap();
    assert_eq!(changed[0].payload["data"]["to"], "waiting");
    assert!(changed[0].recorded_at >= Utc::now() - chrono::Duration::seconds(60));
    let audit = openrun::ops::audit(
        &app.db,
        events.as_ref(),
        Some(app.state.stock.as_ref()),
        std::time::Duration::from_secs(600),
    )
    .await
    .unwrap();
    assert!(audit.iter().all(|c| c.violations.is_empty()), "{audit:?}");
    app.stop().await;
}

/// The shipping rows of the schedule (none while the projection has not created its table).
async fn ship_rows(db: &Database) -> Vec<(String, i32, Option<String>)> {
    let sql = "SELECT status, attempts, last_error FROM schedule WHERE kind = 'order_ship'";
    match db {
        Database::MySql(pool) => sqlx::query_as(sql).fetch_all(pool).await,
        Database::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
    }
    .unwrap_or_default()
}

/// Two service processes share 1,000 due shipments; 100 of them were claimed by a process
/// that died, and fire once its claims expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduler_processes_on_one_mariadb_fire_each_of_1000_due_items_exactly_once() {
    let test_db = TestDb::new(Backend::MySql).await;
    let db = test_db.connect().await;
    let events = openrun::eventstore::open(&db, &Default::default());
    let commands = Commands::new(Arc::clone(&events), openrun::clock::system());
    // 1,000 orders whose shipping falls due 2 s after they are placed.
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let commands = commands.clone();
            tokio::spawn(async move { place_order(&commands, 2, 86_400).await })
        })
        .collect();
    let mut orders = Vec::new();
    for task in tasks {
        orders.push(task.await.unwrap());
    }
    // Every item falls due while no service process runs; they fire once the processes start.
    let last_due = Utc::now() + chrono::Duration::seconds(2);
    wait_for(
        "the items to fall due",
        Duration::from_secs(10),
        async || Utc::now() > last_due,
    )
    .await;
    // A process claimed the first 100 and died: its claims expire 5 s from now, on the
    // database's clock, and only then may the live processes fire those rows.
    openrun::ops::rebuild(&db, Arc::clone(&events), "schedule")
        .await
        .unwrap();
    let pool: openrun_projections::store::Pool = db.clone();
    let expires = openrun_projections::store::database_now(&pool)
        .await
        .unwrap()
        + 5_000_000;
    let dead: Vec<String> = orders[..100]
        .iter()
        .map(|o| format!("order/{o}/ship"))
        .collect();
    for id in &dead {
        execute(
            &db,
            &format!(
                "UPDATE schedule SET status = 'claimed', claimed_by = 'a-dead-process', \
                 attempts = 1, next_attempt_at = {expires} WHERE id = ? AND status = 'pending'"
            ),
            id,
        )
        .await;
    }
    let (mut a, a_addr) = serve_http(&test_db);
    let (mut b, b_addr) = serve_http(&test_db);
    wait_for("1,000 shipments", Duration::from_secs(120), async || {
        let rows = ship_rows(&db).await;
        rows.len() == 1000 && rows.iter().all(|r| r.0 == "done")
    })
    .await;
    // Executions, counted by each process as it sends a command: both took part, and the
    // commands ran 1,000 times in all, not once per resulting event.
    let fired_a = shipments_fired(a_addr).await;
    let fired_b = shipments_fired(b_addr).await;
    for child in [&mut a, &mut b] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(
        fired_a > 0 && fired_b > 0,
        "both fired: {fired_a} and {fired_b}"
    );
    assert_eq!(fired_a + fired_b, 1000, "{fired_a} + {fired_b} executions");
    // Each row claimed once by the live processes; the dead process's rows once more after
    // its claims expired, and not before.
    for row in schedule_rows(&db)
        .await
        .iter()
        .filter(|r| r.1 == "order_ship")
    {
        let claims = if dead.contains(&row.0) { 2 } else { 1 };
        assert_eq!(
            (row.5.as_str(), row.7, row.9.as_deref()),
            ("done", claims, None),
            "{row:?}"
        );
        assert!(
            !dead.contains(&row.0) || row.10.unwrap() >= expires,
            "a live claim was fired before it expired: {row:?}"
        );
    }
    for order in &orders {
        let types = event_types(events.as_ref(), &StreamRef::new("order", order)).await;
        assert_eq!(types, ["OrderPlaced", "OrderShipped"], "order {order}");
    }
    events.shutdown().await;
}

fn openrun_domain_variant() -> openrun_domain::product::NewVariant {
    openrun_domain::product::NewVariant {
        variant_id: openrun_domain::VariantId::from_uuid(uuid::Uuid::from_u128(
            0x0197_5a00_0000_7000_8000_0000_0000_0270,
        )),
        label: "270".to_owned(),
    }
}
