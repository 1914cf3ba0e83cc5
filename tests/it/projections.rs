//! Projections: following the log exactly once, across out-of-order commits, process kills and
//! rebuilds, on both backends.

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openrun::db::Database;
use openrun::eventstore::{EventStore, ExpectedVersion, Metadata, StreamRef};
use openrun::projections::{self, Projectors};
use openrun_projections::store::{self, Tables};

use crate::helpers::{Backend, StoreFixture, TestDb, event, on_both_backends, serve};

on_both_backends!(
    the_stream_index_follows_the_log,
    a_projection_never_skips_an_append_committed_after_a_held_earlier_one,
    a_rebuild_from_zero_equals_the_live_projection_after_100k_events,
    a_projection_killed_mid_batch_neither_skips_nor_double_applies,
    a_rebuild_under_live_appends_loses_nothing,
    runners_racing_on_one_projection_apply_each_event_once,
    a_follower_reads_a_live_lease_and_writes_nothing,
);

type Row = (String, String, i64, i64, i64, i64);

/// The `streams` read model, row for row.
pub async fn stream_rows(db: &Database) -> BTreeMap<(String, String), (i64, i64, i64, i64)> {
    const SQL: &str = "SELECT CAST(stream_type AS CHAR), CAST(stream_id AS CHAR), version, event_count, \
                       first_position, last_position FROM streams";
    let rows: Vec<Row> = match db {
        Database::MySql(pool) => sqlx::query_as(SQL).fetch_all(pool).await.unwrap(),
        Database::Sqlite(pool) => sqlx::query_as(&SQL.replace("AS CHAR", "AS TEXT"))
            .fetch_all(pool)
            .await
            .unwrap(),
    };
    rows.into_iter()
        .map(|(t, id, v, n, first, last)| ((t, id), (v, n, first, last)))
        .collect()
}

/// What the `streams` read model must hold, computed from the events table.
pub async fn expected_rows(db: &Database) -> BTreeMap<(String, String), (i64, i64, i64, i64)> {
    const SQL: &str = "SELECT CAST(stream_type AS CHAR), CAST(stream_id AS CHAR), CAST(MAX(version) AS SIGNED), \
                       CAST(COUNT(*) AS SIGNED), CAST(MIN(global_position) AS SIGNED), CAST(MAX(global_position) AS SIGNED) \
                       FROM events GROUP BY stream_type, stream_id";
    let rows: Vec<Row> = match db {
        Database::MySql(pool) => sqlx::query_as(SQL).fetch_all(pool).await.unwrap(),
        Database::Sqlite(pool) => sqlx::query_as(
            &SQL.replace("AS CHAR", "AS TEXT")
                .replace("AS SIGNED", "AS INTEGER"),
        )
        .fetch_all(pool)
        .await
        .unwrap(),
    };
    rows.into_iter()
        .map(|(t, id, v, n, first, last)| ((t, id), (v, n, first, last)))
        .collect()
}

/// Waits until the `streams` projection has applied everything up to the head.
pub async fn caught_up(db: &Database, events: &dyn EventStore, within: Duration) {
    let started = Instant::now();
    loop {
        let head = events.head_position().await.unwrap();
        let at = store::checkpoint(db, "streams", &Tables::LIVE)
            .await
            .unwrap_or(0);
        if at == head {
            return;
        }
        assert!(
            started.elapsed() < within,
            "the projection is at {at}, the head at {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn append_many(
    events: &Arc<dyn EventStore>,
    writers: u64,
    streams_per_writer: u64,
    per_stream: u64,
) {
    append_named(events, "", writers, streams_per_writer, per_stream).await;
}

async fn append_named(
    events: &Arc<dyn EventStore>,
    prefix: &str,
    writers: u64,
    streams_per_writer: u64,
    per_stream: u64,
) {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let s = Arc::clone(events);
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                for i in 0..streams_per_writer {
                    let stream = StreamRef::new("order", format!("{prefix}w{w}-s{i}"));
                    let batch = (0..per_stream).map(|n| event("Happened", n)).collect();
                    s.append(
                        stream,
                        ExpectedVersion::NO_STREAM,
                        batch,
                        Metadata::default(),
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn the_stream_index_follows_the_log(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let projectors = Projectors::start(&f.db, Arc::clone(&f.events))
        .await
        .unwrap();
    append_many(&f.events, 8, 25, 3).await;
    f.events
        .append(
            StreamRef::new("order", "w0-s0"),
            ExpectedVersion::Exact(3),
            vec![event("More", 9)],
            Metadata::default(),
        )
        .await
        .unwrap();
    caught_up(&f.db, f.events.as_ref(), Duration::from_secs(30)).await;
    let rows = stream_rows(&f.db).await;
    assert_eq!(rows.len(), 200);
    assert_eq!(rows[&("order".to_string(), "w0-s0".to_string())].0, 4);
    assert_eq!(rows, expected_rows(&f.db).await);
    let status = projections::status(&f.db, f.events.as_ref()).await.unwrap();
    assert_eq!(
        (status[0].name, status[0].checkpoint, status[0].lag),
        ("streams", 601, 0)
    );
    projectors.stop().await;
}

async fn a_projection_never_skips_an_append_committed_after_a_held_earlier_one(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let projectors = Projectors::start(&f.db, Arc::clone(&f.events))
        .await
        .unwrap();
    append_many(&f.events, 1, 3, 1).await;
    let held = f
        .store
        .begin_append(StreamRef::new("order", "held"), vec![event("Held", 0)])
        .await;
    let (accepted, batches) = (f.store.accepted_appends(), f.store.batches_begun());
    let later: Vec<_> = (0..10u64)
        .map(|i| {
            let s = Arc::clone(&f.events);
            tokio::spawn(async move {
                s.append(
                    StreamRef::new("order", format!("later{i}")),
                    ExpectedVersion::NO_STREAM,
                    vec![event("Later", i)],
                    Metadata::default(),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    // Every later append is queued and the writers are at work on them, behind the held one.
    f.store
        .until("the later appends in a batch", |s| {
            s.accepted_appends() == accepted + 10 && s.batches_begun() > batches
        })
        .await;
    held.commit().await.unwrap();
    for task in later {
        task.await.unwrap();
    }
    caught_up(&f.db, f.events.as_ref(), Duration::from_secs(30)).await;
    let rows = stream_rows(&f.db).await;
    assert_eq!(rows.len(), 14);
    assert!(rows.contains_key(&("order".to_string(), "held".to_string())));
    assert_eq!(rows, expected_rows(&f.db).await);
    projectors.stop().await;
}

async fn a_rebuild_from_zero_equals_the_live_projection_after_100k_events(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let projectors = Projectors::start(&f.db, Arc::clone(&f.events))
        .await
        .unwrap();
    // 100,000 events: 25,000 streams of 4, from 250 concurrent appenders.
    append_many(&f.events, 250, 100, 4).await;
    assert_eq!(f.events.head_position().await.unwrap(), 100_000);
    caught_up(&f.db, f.events.as_ref(), Duration::from_secs(300)).await;
    let live = stream_rows(&f.db).await;
    assert_eq!(live.len(), 25_000);
    let rebuilt = openrun::ops::rebuild(&f.db, Arc::clone(&f.events), "streams")
        .await
        .unwrap();
    assert_eq!(rebuilt.position, 100_000);
    let rebuilt = stream_rows(&f.db).await;
    assert_eq!(
        rebuilt, live,
        "the rebuilt projection equals the live one row for row"
    );
    // The live follower carries on from the rebuilt checkpoint.
    f.events
        .append(
            StreamRef::new("order", "after"),
            ExpectedVersion::NO_STREAM,
            vec![event("After", 0)],
            Metadata::default(),
        )
        .await
        .unwrap();
    caught_up(&f.db, f.events.as_ref(), Duration::from_secs(30)).await;
    assert_eq!(stream_rows(&f.db).await, expected_rows(&f.db).await);
    projectors.stop().await;
}

/// Leases keep a projection to one process, but even when two processes believe they hold
/// it (a lease taken over while the old holder is mid-batch), the checkpoint's
/// compare-and-set lets only one of them commit each batch: four runners with no lease at all
/// stepping the same projection leave exactly the log's counts.
async fn runners_racing_on_one_projection_apply_each_event_once(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    append_many(&f.events, 20, 50, 5).await;
    let pool = f.db.clone();
    let streams = openrun_projections::streams::Streams;
    openrun_projections::runner::install(&pool, &streams)
        .await
        .unwrap();
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (pool, events) = (pool.clone(), Arc::clone(&f.events));
            tokio::spawn(async move {
                let source = openrun::eventstore::LogSource(events);
                let (mut applied, mut refused) = (0, 0);
                loop {
                    match openrun_projections::runner::step(
                        &pool,
                        &source,
                        &streams,
                        &Tables::LIVE,
                        openrun_projections::log::Batch {
                            events: 50,
                            bytes: usize::MAX,
                        },
                    )
                    .await
                    {
                        Ok(openrun_projections::runner::Step::Applied(_)) => applied += 1,
                        Ok(openrun_projections::runner::Step::NotLeader) => refused += 1,
                        Ok(openrun_projections::runner::Step::Idle(_)) => break (applied, refused),
                        // Lock waits and busy errors between the racers: try again.
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            })
        })
        .collect();
    let mut batches = 0;
    for racer in racers {
        batches += racer.await.unwrap().0;
    }
    // 5,000 events in batches of at most 50: at least 100 batches committed in all.
    assert!(batches >= 100, "{batches}");
    assert_eq!(stream_rows(&f.db).await, expected_rows(&f.db).await);
}

async fn a_rebuild_under_live_appends_loses_nothing(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let projectors = Projectors::start(&f.db, Arc::clone(&f.events))
        .await
        .unwrap();
    append_many(&f.events, 50, 100, 4).await;
    // Appends keep coming while the rebuild replays and swaps: to new streams and to streams
    // the rebuild has already replayed.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let (events, stop) = (Arc::clone(&f.events), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 50 {
                let stream = StreamRef::new("order", format!("live{n}"));
                events
                    .append(
                        stream,
                        ExpectedVersion::NO_STREAM,
                        vec![event("Live", n)],
                        Metadata::default(),
                    )
                    .await
                    .unwrap();
                let old = StreamRef::new("order", format!("w{}-s0", n % 50));
                events
                    .append(
                        old,
                        ExpectedVersion::Any,
                        vec![event("More", n)],
                        Metadata::default(),
                    )
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    openrun::ops::rebuild(&f.db, Arc::clone(&f.events), "streams")
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let appended = appender.await.unwrap();
    assert!(appended >= 50);
    caught_up(&f.db, f.events.as_ref(), Duration::from_secs(60)).await;
    assert_eq!(stream_rows(&f.db).await, expected_rows(&f.db).await);
    projectors.stop().await;
}

async fn a_projection_killed_mid_batch_neither_skips_nor_double_applies(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let db = test_db.connect().await;
    let events = openrun::eventstore::open(&db, &Default::default());
    append_many(&events, 100, 100, 3).await;
    let head = events.head_position().await.unwrap();
    let pool = db.clone();
    // Kill the serving process (SIGKILL: no clean-up at all) three times while it is catching
    // up, at different points, and restart it; appends go on meanwhile.
    let mut kills = 0;
    for round in 0..3u64 {
        let mut child = serve(&test_db);
        let started = Instant::now();
        let at_start = store::checkpoint(&pool, "streams", &Tables::LIVE)
            .await
            .unwrap_or(0);
        loop {
            let at = store::checkpoint(&pool, "streams", &Tables::LIVE)
                .await
                .unwrap_or(0);
            if at > at_start + 1000 * (round + 1) || started.elapsed() > Duration::from_secs(60) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (at, head) = (
            store::checkpoint(&pool, "streams", &Tables::LIVE)
                .await
                .unwrap_or(0),
            events.head_position().await.unwrap(),
        );
        child.kill().unwrap();
        child.wait().unwrap();
        if at < head {
            // Killed while catching up: somewhere in, or between, its batches.
            kills += 1;
        }
        append_named(&events, &format!("r{round}-"), 10, 10, 2).await;
    }
    assert!(
        kills >= 2,
        "the process was killed while catching up ({kills} of 3)"
    );
    let at = store::checkpoint(&pool, "streams", &Tables::LIVE)
        .await
        .unwrap();
    assert!(at > 0, "the killed processes made progress");
    // A fresh process takes over (after the dead one's lease expires) and finishes.
    let mut child = serve(&test_db);
    caught_up(&db, events.as_ref(), Duration::from_secs(120)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(events.head_position().await.unwrap() > head);
    let rows = stream_rows(&db).await;
    assert_eq!(
        rows,
        expected_rows(&db).await,
        "every event applied exactly once"
    );
    let applied: i64 = rows.values().map(|r| r.1).sum();
    assert_eq!(applied as u64, events.head_position().await.unwrap());
    events.shutdown().await;
}

async fn lease_holder(db: &Database, name: &str) -> Option<String> {
    let sql = "SELECT owner FROM projection_leases WHERE name = ?";
    match db {
        Database::MySql(pool) => {
            sqlx::query_scalar(sql)
                .bind(name)
                .fetch_optional(pool)
                .await
        }
        Database::Sqlite(pool) => {
            sqlx::query_scalar(sql)
                .bind(name)
                .fetch_optional(pool)
                .await
        }
    }
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_process_running_a_projection_dies_another_takes_over() {
    let test_db = TestDb::new(Backend::MySql).await;
    let db = test_db.connect().await;
    let events = openrun::eventstore::open(&db, &Default::default());
    let first = serve(&test_db);
    let second = serve(&test_db);
    // Leases name their holder's process id first.
    let started = Instant::now();
    let holder = loop {
        if let Some(owner) = lease_holder(&db, "streams").await {
            break owner;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no process took the lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pid = |c: &Child| c.id().to_string();
    let (mut dead, mut survivor) = if holder.starts_with(&format!("{}-", pid(&first))) {
        (first, second)
    } else {
        assert!(
            holder.starts_with(&format!("{}-", pid(&second))),
            "{holder}"
        );
        (second, first)
    };
    append_many(&events, 10, 10, 1).await;
    caught_up(&db, events.as_ref(), Duration::from_secs(30)).await;
    dead.kill().unwrap();
    dead.wait().unwrap();
    // With the holder dead, new events are applied by the survivor once the lease expires.
    append_named(&events, "after-", 10, 10, 1).await;
    caught_up(&db, events.as_ref(), Duration::from_secs(30)).await;
    let holder = lease_holder(&db, "streams").await.unwrap();
    assert!(
        holder.starts_with(&format!("{}-", pid(&survivor))),
        "{holder}"
    );
    assert_eq!(stream_rows(&db).await, expected_rows(&db).await);
    survivor.kill().unwrap();
    survivor.wait().unwrap();
    events.shutdown().await;
}

/// A process that is not the leader only reads a live lease: with the lease row's write lock
/// held elsewhere (a writer busy on SQLite, a row lock on MySQL), its check still answers at
/// once, and says no.
async fn a_follower_reads_a_live_lease_and_writes_nothing(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let pool = f.db.clone();
    let ttl = Duration::from_secs(60);
    assert!(
        store::acquire_lease(&pool, "lease-test", "leader", ttl)
            .await
            .unwrap()
    );
    let lock = "UPDATE projection_leases SET owner = owner WHERE name = 'lease-test'";
    let _held = match &f.db {
        openrun::db::Database::MySql(p) => {
            let mut tx = p.begin().await.unwrap();
            sqlx::query(lock).execute(&mut *tx).await.unwrap();
            Either::MySql(tx)
        }
        openrun::db::Database::Sqlite(p) => {
            let mut tx = p.begin_with("BEGIN IMMEDIATE").await.unwrap();
            sqlx::query(lock).execute(&mut *tx).await.unwrap();
            Either::Sqlite(tx)
        }
    };
    let follower = tokio::time::timeout(
        Duration::from_secs(5),
        store::acquire_lease(&pool, "lease-test", "follower", ttl),
    )
    .await;
    assert!(
        matches!(follower, Ok(Ok(false))),
        "the follower wrote, or waited to write, the lease: {follower:?}"
    );
}

/// An open transaction of either backend.
enum Either {
    MySql(#[allow(dead_code)] sqlx::Transaction<'static, sqlx::MySql>),
    Sqlite(#[allow(dead_code)] sqlx::Transaction<'static, sqlx::Sqlite>),
}
