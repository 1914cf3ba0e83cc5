//! The event store conformance suite: the whole contract, on both backends.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use openrun::eventstore::group_commit::GroupCommitConfig;
use openrun::eventstore::{
    CounterMove, EventData, EventStore, EventStoreError, ExpectedVersion, Metadata, RecordedEvent,
    StreamRef,
};
use uuid::Uuid;

use crate::helpers::{Backend, StoreFixture, event, on_both_backends};

on_both_backends!(
    append_returns_the_new_version_and_global_positions,
    a_version_clash_is_a_typed_conflict_and_writes_nothing,
    any_version_appends_without_a_check,
    an_append_commits_all_its_events_or_none,
    bad_input_is_refused_before_anything_is_written,
    read_stream_from_a_version,
    read_several_streams_in_log_order_from_a_position,
    read_all_in_batches_from_a_position,
    a_page_of_the_log_is_bounded_by_bytes_too,
    metadata_is_stored_with_every_event,
    concurrent_appenders_racing_for_one_stream_get_gapless_versions,
    concurrent_appends_share_one_commit_and_a_conflict_fails_alone,
    a_conflict_in_a_later_statement_of_a_large_batch_undoes_only_itself,
    a_follower_never_skips_an_event_committed_after_a_held_earlier_position,
    a_follower_under_load_sees_every_event_exactly_once_in_order,
    shutdown_commits_accepted_appends_and_refuses_new_ones,
    concurrent_guarded_appends_never_take_a_counter_below_its_floor,
    a_refused_move_writes_nothing_and_counters_outlive_the_store,
    a_guard_is_checked_under_the_commit_order_lock,
);

fn stream(id: &str) -> StreamRef {
    StreamRef::new("test", id)
}

async fn read_everything(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |e: &RecordedEvent| e.global_position);
        let page = store.read_all(after, 1000).await.unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

async fn append_returns_the_new_version_and_global_positions(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let s = f.events.as_ref();
    let a = s
        .append(
            stream("a"),
            ExpectedVersion::NO_STREAM,
            vec![event("Opened", 1), event("Moved", 2)],
            Metadata::default(),
        )
        .await
        .unwrap();
    assert_eq!(a.version, 2);
    assert_eq!(a.positions, 1..=2);
    let b = s
        .append(
            stream("b"),
            ExpectedVersion::NO_STREAM,
            vec![event("Opened", 1)],
            Metadata::default(),
        )
        .await
        .unwrap();
    assert_eq!((b.version, b.positions), (1, 3..=3));
    let a = s
        .append(
            stream("a"),
            ExpectedVersion::Exact(2),
            vec![event("Moved", 3)],
            Metadata::default(),
        )
        .await
        .unwrap();
    assert_eq!((a.version, a.positions), (3, 4..=4));
    assert_eq!(s.head_position().await.unwrap(), 4);
    let stored = s.read_stream(&stream("a"), 1, 100).await.unwrap();
    let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
    let positions: Vec<u64> = stored.iter().map(|e| e.global_position).collect();
    assert_eq!(versions, vec![1, 2, 3]);
    assert_eq!(positions, vec![1, 2, 4]);
    assert_eq!(stored[1].event_type, "Moved");
    assert_eq!(stored[1].event_version, "1.0");
    assert_eq!(stored[1].payload, serde_json::json!({ "n": 2 }));
}

async fn a_version_clash_is_a_typed_conflict_and_writes_nothing(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let s = f.events.as_ref();
    s.append(
        stream("a"),
        ExpectedVersion::NO_STREAM,
        vec![event("E", 1), event("E", 2)],
        Metadata::default(),
    )
    .await
    .unwrap();
    for (expected, actual) in [
        (ExpectedVersion::NO_STREAM, 2),
        (ExpectedVersion::Exact(1), 2),
        (ExpectedVersion::Exact(5), 2),
    ] {
        let err = s
            .append(
                stream("a"),
                expected,
                vec![event("E", 9)],
                Metadata::default(),
            )
            .await
            .unwrap_err();
        match err {
            EventStoreError::Conflict {
                stream: st,
                expected: e,
                actual: a,
            } => {
                assert_eq!((st, e, a), (stream("a"), expected, actual));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    let err = s
        .append(
            stream("new"),
            ExpectedVersion::Exact(3),
            vec![event("E", 1)],
            Metadata::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, EventStoreError::Conflict { actual: 0, .. }),
        "{err:?}"
    );
    assert_eq!(read_everything(s).await.len(), 2);
    assert_eq!(s.head_position().await.unwrap(), 2);
}

async fn any_version_appends_without_a_check(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let s = f.events.as_ref();
    for n in 1..=3 {
        let a = s
            .append(
                stream("a"),
                ExpectedVersion::Any,
                vec![event("E", n)],
                Metadata::default(),
            )
            .await
            .unwrap();
        assert_eq!(a.version, n);
    }
}

async fn an_append_commits_all_its_events_or_none(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let s = f.events.as_ref();
    let many: Vec<EventData> = (1..=50).map(|n| event("E", n)).collect();
    let a = s
        .append(
            stream("a"),
            ExpectedVersion::NO_STREAM,
            many.clone(),
            Metadata::default(),
        )
        .await
        .unwrap();
    assert_eq!((a.version, a.positions), (50, 1..=50));
    // A conflicting multi-event append leaves not one of its events behind.
    let err = s
        .append(
            stream("a"),
            ExpectedVersion::Exact(10),
            many,
            Metadata::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EventStoreError::Conflict { .. }));
    let stored = s.read_stream(&stream("a"), 1, 1000).await.unwrap();
    assert_eq!(stored.len(), 50);
    assert!(stored.iter().zip(1..).all(|(e, v)| e.version == v));
}

async fn bad_input_is_refused_before_anything_is_written(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let s = f.events.as_ref();
    let cases = [
        (stream("a"), vec![]),
        (StreamRef::new("", "a"), vec![event("E", 1)]),
        (StreamRef::new("test", "has space"), vec![event("E", 1)]),
        (StreamRef::new("test", "x".repeat(129)), vec![event("E", 1)]),
        (stream("a"), vec![event("E", 1), event("", 2)]),
        (
            stream("a"),
            vec![EventData::json("E", "", &serde_json::json!({})).unwrap()],
        ),
    ];
    for (st, events) in cases {
        let err = s
            .append(st, ExpectedVersion::Any, events, Metadata::default())
            .await
            .unwrap_err();
        assert!(matches!(err, EventStoreError::InvalidInput(_)), "{err:?}");
    }
    assert_eq!(s.head_position().await.unwrap(), 0);
}

async fn read_stream_from_a_version(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let s = f.events.as_ref();
    let events: Vec<EventData> = (1..=10).map(|n| event("E", n)).collect();
    s.append(
        stream("a"),
        ExpectedVersion::NO_STREAM,
        events,
        Metadata::default(),
    )
    .await
    .unwrap();
    s.append(
        stream("b"),
        ExpectedVersion::NO_STREAM,
        vec![event("E", 1)],
        Metadata::default(),
    )
    .await
    .unwrap();
    let tail = s.read_stream(&stream("a"), 7, 100).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![7, 8, 9, 10]
    );
    assert!(
        tail.iter()
            .all(|e| e.stream_type == "test" && e.stream_id == "a")
    );
    let limited = s.read_stream(&stream("a"), 1, 3).await.unwrap();
    assert_eq!(
        limited.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(
        s.read_stream(&stream("a"), 11, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.read_stream(&stream("none"), 1, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn read_all_in_batches_from_a_position(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let s = f.events.as_ref();
    for i in 0..25 {
        s.append(
            stream(&format!("s{i}")),
            ExpectedVersion::NO_STREAM,
            vec![event("E", i), event("F", i)],
            Metadata::default(),
        )
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = s.read_all(after, 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = last.global_position;
        seen.extend(page.iter().map(|e| e.global_position));
    }
    assert_eq!(seen, (1..=50).collect::<Vec<_>>());
    let from_middle = s.read_all(40, 100).await.unwrap();
    assert_eq!(from_middle.first().map(|e| e.global_position), Some(41));
    assert_eq!(from_middle.len(), 10);
}

/// Large events fill a page by their bytes before its count: a projection batch of a
/// thousand 1 MB events never sits in memory at once. A page holds at least one event.
async fn a_page_of_the_log_is_bounded_by_bytes_too(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let s = f.events.as_ref();
    let large = "x".repeat(1000);
    for i in 0..10 {
        s.append(
            stream(&format!("big{i}")),
            ExpectedVersion::NO_STREAM,
            vec![EventData::json("Large", "1.0", &serde_json::json!({ "blob": large })).unwrap()],
            Metadata::default(),
        )
        .await
        .unwrap();
    }
    let one = s.read_all_bounded(0, 100, 1).await.unwrap();
    assert_eq!(one.len(), 1, "a page holds at least one event");
    // Each event is a little over 1,000 bytes: the third reaches 2,500.
    let three = s.read_all_bounded(0, 100, 2500).await.unwrap();
    assert_eq!(
        three.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = s.read_all_bounded(after, 100, 2500).await.unwrap();
        assert!(page.len() <= 3, "{} events in a page", page.len());
        let Some(last) = page.last() else { break };
        after = last.global_position;
        seen.extend(page.iter().map(|e| e.global_position));
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
    assert_eq!(s.read_all_bounded(0, 4, usize::MAX).await.unwrap().len(), 4);
}

async fn metadata_is_stored_with_every_event(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let s = f.events.as_ref();
    let metadata = Metadata {
        correlation_id: Some(Uuid::now_v7()),
        causation_id: Some(Uuid::now_v7()),
        actor: Some("member:0190a1b2".into()),
        idempotency_key: Some("key-123".into()),
        hold_id: Some(Uuid::now_v7()),
    };
    s.append(
        stream("a"),
        ExpectedVersion::NO_STREAM,
        vec![event("E", 1), event("E", 2)],
        metadata.clone(),
    )
    .await
    .unwrap();
    s.append(
        stream("a"),
        ExpectedVersion::Exact(2),
        vec![event("E", 3)],
        Metadata::default(),
    )
    .await
    .unwrap();
    let stored = s.read_stream(&stream("a"), 1, 10).await.unwrap();
    assert_eq!(stored[0].metadata, metadata);
    assert_eq!(stored[1].metadata, metadata);
    assert_eq!(stored[2].metadata, Metadata::default());
    let age = chrono::Utc::now() - stored[0].recorded_at;
    assert!(
        age < chrono::Duration::minutes(5),
        "recorded_at is now-ish: {age}"
    );
}

async fn concurrent_appenders_racing_for_one_stream_get_gapless_versions(backend: Backend) {
    const APPENDERS: u64 = 200;
    let f = StoreFixture::new(backend).await;
    // Round one: all 200 want version 1 of a new stream; exactly one gets it.
    let first_round: Vec<_> = (0..APPENDERS)
        .map(|i| {
            let s = Arc::clone(&f.events);
            tokio::spawn(async move {
                s.append(
                    stream("race"),
                    ExpectedVersion::NO_STREAM,
                    vec![event("Claimed", i)],
                    Metadata::default(),
                )
                .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, task) in first_round.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(a) => {
                assert_eq!(a.version, 1);
                winners.push((i as u64, a));
            }
            Err(EventStoreError::Conflict { actual: 1, .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one appender wins version 1");

    // Round two: each appender reads the version and retries on conflict until its own event
    // is in. Every version is won by exactly one appender, with no gap.
    let tasks: Vec<_> = (0..APPENDERS)
        .map(|i| {
            let s = Arc::clone(&f.events);
            tokio::spawn(async move {
                let mut conflicts = 0u32;
                loop {
                    let version = s
                        .read_stream(&stream("race"), 1, 10_000)
                        .await
                        .unwrap()
                        .len() as u64;
                    match s
                        .append(
                            stream("race"),
                            ExpectedVersion::Exact(version),
                            vec![event("Won", i)],
                            Metadata::default(),
                        )
                        .await
                    {
                        Ok(a) => return (i, a, conflicts),
                        Err(EventStoreError::Conflict { .. }) => conflicts += 1,
                        Err(other) => panic!("unexpected {other:?}"),
                    }
                }
            })
        })
        .collect();
    let mut versions = BTreeSet::new();
    let mut conflicts = 0;
    let mut results = winners;
    for task in tasks {
        let (i, appended, c) = task.await.unwrap();
        assert!(
            versions.insert(appended.version),
            "version {} won twice",
            appended.version
        );
        results.push((i, appended));
        conflicts += c;
    }
    assert_eq!(versions, (2..=APPENDERS + 1).collect::<BTreeSet<_>>());
    assert!(conflicts > 0, "the appenders did race");
    let stored = f
        .events
        .read_stream(&stream("race"), 1, 10_000)
        .await
        .unwrap();
    assert!(
        stored.iter().zip(1..).all(|(e, v)| e.version == v),
        "no gaps"
    );
    let owners: HashSet<u64> = stored[1..]
        .iter()
        .map(|e| e.payload["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        owners.len() as u64,
        APPENDERS,
        "each appender's event is in exactly once"
    );
    // Each caller was told its own version and position: read back, they hold its payload.
    for (i, appended) in results {
        let at = &stored[(appended.version - 1) as usize];
        assert_eq!(at.payload["n"].as_u64(), Some(i), "version {}", at.version);
        assert_eq!(appended.positions, at.global_position..=at.global_position);
    }
}

async fn concurrent_appends_share_one_commit_and_a_conflict_fails_alone(backend: Backend) {
    // One writer, so that everything queued while a batch commits lands in the next batch.
    let config = GroupCommitConfig {
        writers: 1,
        ..GroupCommitConfig::default()
    };
    let f = StoreFixture::with_config(backend, &config).await;
    f.events
        .append(
            stream("taken"),
            ExpectedVersion::NO_STREAM,
            vec![event("E", 0)],
            Metadata::default(),
        )
        .await
        .unwrap();
    let tasks: Vec<_> = (0..300u64)
        .map(|i| {
            let s = Arc::clone(&f.events);
            tokio::spawn(async move {
                // Every 50th append clashes with the existing stream.
                let target = if i % 50 == 0 {
                    "taken".to_string()
                } else {
                    format!("s{i}")
                };
                s.append(
                    stream(&target),
                    ExpectedVersion::NO_STREAM,
                    vec![event("E", i)],
                    Metadata::default(),
                )
                .await
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut conflicts = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(appended) => ok.push((i as u64, appended)),
            Err(EventStoreError::Conflict { .. }) => conflicts += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ok.len(), conflicts), (294, 6));
    let all = read_everything(f.events.as_ref()).await;
    assert_eq!(all.len(), 295);
    // Each caller of the shared commits got its own result: the position and version it was
    // told are those of its own payload, on its own stream.
    for (i, appended) in &ok {
        let at = &all[(*appended.positions.start() - 1) as usize];
        assert_eq!(at.global_position, *appended.positions.start());
        assert_eq!(at.payload["n"].as_u64(), Some(*i));
        assert_eq!(at.stream_id, format!("s{i}"));
        assert_eq!(appended.version, 1);
    }
    // Events of one batch share their commit instant: far fewer commits than appends.
    let commits: HashSet<_> = all.iter().map(|e| e.recorded_at).collect();
    assert!(
        commits.len() < 100,
        "300 concurrent appends took {} commits",
        commits.len()
    );
    assert!(
        all.iter().zip(1..).all(|(e, p)| e.global_position == p),
        "contiguous positions"
    );
}

async fn a_conflict_in_a_later_statement_of_a_large_batch_undoes_only_itself(backend: Backend) {
    let config = GroupCommitConfig {
        writers: 1,
        ..GroupCommitConfig::default()
    };
    let f = StoreFixture::with_config(backend, &config).await;
    f.events
        .append(
            stream("taken"),
            ExpectedVersion::NO_STREAM,
            vec![event("E", 0)],
            Metadata::default(),
        )
        .await
        .unwrap();
    // Hold the write lock so that the writer stalls on its first batch and the next two
    // appends queue up behind it, to be written together as one batch.
    let held = f
        .store
        .begin_append(stream("held"), vec![event("Held", 0)])
        .await;
    let (batches, accepted) = (f.store.batches_begun(), f.store.accepted_appends());
    let first = {
        let s = Arc::clone(&f.events);
        tokio::spawn(async move {
            s.append(
                stream("first"),
                ExpectedVersion::NO_STREAM,
                vec![event("E", 0)],
                Metadata::default(),
            )
            .await
        })
    };
    // The writer took `first` as a batch of its own and waits for the lock.
    f.store
        .until("the first batch", |s| s.batches_begun() == batches + 1)
        .await;
    let big = {
        let s = Arc::clone(&f.events);
        let events: Vec<EventData> = (0..600).map(|n| event("Big", n)).collect();
        tokio::spawn(async move {
            s.append(
                stream("big"),
                ExpectedVersion::NO_STREAM,
                events,
                Metadata::default(),
            )
            .await
        })
    };
    f.store
        .until("the big append queued", |s| {
            s.accepted_appends() == accepted + 2
        })
        .await;
    let clash = {
        let s = Arc::clone(&f.events);
        tokio::spawn(async move {
            s.append(
                stream("taken"),
                ExpectedVersion::NO_STREAM,
                vec![event("E", 1)],
                Metadata::default(),
            )
            .await
        })
    };
    f.store
        .until("the clash queued", |s| s.accepted_appends() == accepted + 3)
        .await;
    held.commit().await.unwrap();
    first.await.unwrap().unwrap();
    let big = big.await.unwrap().unwrap();
    assert_eq!(big.version, 600);
    let clash = clash.await.unwrap().unwrap_err();
    assert!(
        matches!(clash, EventStoreError::Conflict { actual: 1, .. }),
        "{clash:?}"
    );
    // The big append's 600 rows went in once, in two or more statements, and the clash left
    // no row: the log is contiguous and holds exactly what was acknowledged.
    let all = read_everything(f.events.as_ref()).await;
    assert_eq!(all.len(), 1 + 1 + 1 + 600);
    assert!(all.iter().zip(1..).all(|(e, p)| e.global_position == p));
    assert_eq!(
        f.events
            .read_stream(&stream("taken"), 1, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let big_commits: HashSet<_> = all
        .iter()
        .filter(|e| e.event_type == "Big")
        .map(|e| e.recorded_at)
        .collect();
    assert_eq!(big_commits.len(), 1);
}

/// Follows the log from `after` until it has seen `until`, checking that positions arrive
/// contiguous and once each. Returns what it saw.
async fn follow(store: Arc<dyn EventStore>, mut after: u64, until: u64) -> Vec<RecordedEvent> {
    let mut seen = Vec::new();
    while after < until {
        let page = store.read_all(after, 5).await.unwrap();
        for e in &page {
            assert_eq!(
                e.global_position,
                after + 1,
                "a follower skipped or repeated an event"
            );
            after = e.global_position;
        }
        seen.extend(page);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    seen
}

async fn a_follower_never_skips_an_event_committed_after_a_held_earlier_position(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    for i in 0..3 {
        f.events
            .append(
                stream(&format!("before{i}")),
                ExpectedVersion::NO_STREAM,
                vec![event("E", i)],
                Metadata::default(),
            )
            .await
            .unwrap();
    }
    // An append takes position 4 and holds its transaction open.
    let held = f
        .store
        .begin_append(stream("held"), vec![event("Held", 0)])
        .await;
    assert_eq!(held.outcome().positions, 4..=4);
    let (accepted, batches) = (f.store.accepted_appends(), f.store.batches_begun());
    // Twenty later appends are made while it is open.
    let later: Vec<_> = (0..20u64)
        .map(|i| {
            let s = Arc::clone(&f.events);
            tokio::spawn(async move {
                s.append(
                    stream(&format!("later{i}")),
                    ExpectedVersion::NO_STREAM,
                    vec![event("Later", i)],
                    Metadata::default(),
                )
                .await
            })
        })
        .collect();
    // A follower running meanwhile sees nothing past the committed prefix: no later event can
    // become visible ahead of the held one.
    let follower = tokio::spawn(follow(Arc::clone(&f.events), 0, 24));
    // Past the point where one could show: all twenty are queued and the writers are at work
    // on them (waiting behind the held one's lock).
    f.store
        .until("the later appends in a batch", |s| {
            s.accepted_appends() == accepted + 20 && s.batches_begun() > batches
        })
        .await;
    let visible = read_everything(f.events.as_ref()).await;
    assert_eq!(
        visible
            .iter()
            .map(|e| e.global_position)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(
        later.iter().all(|t| !t.is_finished()),
        "no later append was acknowledged before the held one"
    );

    held.commit().await.unwrap();
    let mut later_positions = Vec::new();
    for task in later {
        later_positions.push(*task.await.unwrap().unwrap().positions.start());
    }
    assert!(later_positions.iter().all(|p| *p > 4));
    let seen = tokio::time::timeout(Duration::from_secs(20), follower)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.len(), 24);
    assert_eq!(seen[3].event_type, "Held");
    let later_seen: HashSet<u64> = seen
        .iter()
        .filter(|e| e.event_type == "Later")
        .map(|e| e.payload["n"].as_u64().unwrap())
        .collect();
    assert_eq!(later_seen.len(), 20);
}

async fn a_follower_under_load_sees_every_event_exactly_once_in_order(backend: Backend) {
    const WRITERS: u64 = 16;
    const APPENDS: u64 = 100;
    let f = StoreFixture::new(backend).await;
    let follower = tokio::spawn(follow(Arc::clone(&f.events), 0, WRITERS * APPENDS * 2));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = Arc::clone(&f.events);
            tokio::spawn(async move {
                for i in 0..APPENDS {
                    s.append(
                        stream(&format!("w{w}")),
                        ExpectedVersion::Exact(i * 2),
                        vec![event("E", i), event("F", i)],
                        Metadata::default(),
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.len() as u64, WRITERS * APPENDS * 2);
    for w in 0..WRITERS {
        let versions: Vec<u64> = seen
            .iter()
            .filter(|e| e.stream_id == format!("w{w}"))
            .map(|e| e.version)
            .collect();
        assert_eq!(
            versions,
            (1..=APPENDS * 2).collect::<Vec<_>>(),
            "stream w{w} in version order"
        );
    }
}

async fn shutdown_commits_accepted_appends_and_refuses_new_ones(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    // An append holds the commit-order lock, so the next 100 wait in the queue and in the
    // writers while the shutdown begins; every one of them must still be written.
    let held = f
        .store
        .begin_append(stream("held"), vec![event("E", 0)])
        .await;
    let tasks: Vec<_> = (0..100u64)
        .map(|i| {
            let s = Arc::clone(&f.events);
            tokio::spawn(async move {
                s.append(
                    stream(&format!("s{i}")),
                    ExpectedVersion::NO_STREAM,
                    vec![event("E", i)],
                    Metadata::default(),
                )
                .await
            })
        })
        .collect();
    f.store
        .until("100 appends queued", |s| s.accepted_appends() >= 100)
        .await;
    let shutdown = tokio::spawn({
        let events = Arc::clone(&f.events);
        async move { events.shutdown().await }
    });
    // Past the point where a shutdown that did not wait would return: the queue is closed.
    f.store
        .until("the queue to close", |s| s.shutdown_begun())
        .await;
    assert!(
        !shutdown.is_finished(),
        "the shutdown waits for the queued appends"
    );
    held.commit().await.unwrap();
    shutdown.await.unwrap();
    for task in tasks {
        task.await
            .unwrap()
            .expect("an accepted append is written across a shutdown");
    }
    let err = f
        .events
        .append(
            stream("late"),
            ExpectedVersion::NO_STREAM,
            vec![event("E", 0)],
            Metadata::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EventStoreError::ShuttingDown));
    assert_eq!(read_everything(f.events.as_ref()).await.len(), 101);
}

/// Appends one event to a new stream, moving `counters`.
async fn append_moving(
    s: &dyn EventStore,
    id: &str,
    counters: Vec<CounterMove>,
) -> Result<openrun::eventstore::Appended, EventStoreError> {
    s.append_moving(
        stream(id),
        ExpectedVersion::NO_STREAM,
        vec![event("Moved", 0)],
        Metadata::default(),
        counters,
    )
    .await
}

async fn counter(s: &dyn EventStore, name: &str) -> Option<i64> {
    s.counters(&[name]).await.unwrap().get(name).copied()
}

/// 100 units, 300 buyers of one (some of two) at once, batched together: exactly the units
/// there are go, every other append is refused alone, and the counter ends at its floor.
async fn concurrent_guarded_appends_never_take_a_counter_below_its_floor(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let s = f.events.as_ref();
    assert_eq!(
        counter(s, "units/x").await,
        None,
        "a counter never moved is absent"
    );
    append_moving(s, "supply", vec![CounterMove::new("units/x", 100)])
        .await
        .unwrap();
    let tasks: Vec<_> = (0..300i64)
        .map(|i| {
            let s = Arc::clone(&f.events);
            let take = if i % 3 == 0 { 2 } else { 1 };
            tokio::spawn(async move {
                let moves = vec![CounterMove::new("units/x", -take).at_least(0)];
                (
                    take,
                    append_moving(s.as_ref(), &format!("o{i}"), moves).await,
                )
            })
        })
        .collect();
    let (mut taken, mut placed) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            (take, Ok(_)) => {
                taken += take;
                placed += 1;
            }
            (_, Err(EventStoreError::GuardRefused { counter, .. })) => {
                assert_eq!(counter, "units/x");
            }
            (_, Err(e)) => panic!("unexpected {e}"),
        }
    }
    assert!(
        (99..=100).contains(&taken),
        "took {taken} of 100 units: one left only when a two-unit buyer came last"
    );
    assert_eq!(counter(s, "units/x").await, Some(100 - taken));
    assert_eq!(
        read_everything(s).await.len(),
        placed + 1,
        "a refused append wrote no event"
    );
}

/// A refused move and a version conflict leave the counters and the log as they were; what
/// was committed is read back by a store opened afresh on the same database.
async fn a_refused_move_writes_nothing_and_counters_outlive_the_store(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let s = f.events.as_ref();
    append_moving(
        s,
        "a",
        vec![CounterMove::new("one", 3), CounterMove::new("two", -4)],
    )
    .await
    .unwrap();
    // The first move would pass; the second crosses its floor, so neither happens.
    let refused = append_moving(
        s,
        "b",
        vec![
            CounterMove::new("one", -1).at_least(0),
            CounterMove::new("one", -3).at_least(0),
        ],
    )
    .await;
    assert!(
        matches!(&refused, Err(EventStoreError::GuardRefused { counter, value: 2, delta: -3 }) if counter == "one"),
        "{refused:?}"
    );
    // The stream exists: a conflict, and the move it carried does not happen either.
    let conflict = append_moving(s, "a", vec![CounterMove::new("one", 10)]).await;
    assert!(matches!(conflict, Err(EventStoreError::Conflict { .. })));
    // Overflowing a 64-bit value is refused, never wrapped.
    let overflow = append_moving(s, "c", vec![CounterMove::new("one", i64::MAX)]).await;
    assert!(matches!(
        overflow,
        Err(EventStoreError::GuardRefused { .. })
    ));
    assert_eq!(read_everything(s).await.len(), 1);
    let reopened = openrun::eventstore::open(&f.db, &GroupCommitConfig::default());
    let values = reopened.counters(&["one", "two", "three"]).await.unwrap();
    assert_eq!(values.get("one"), Some(&3));
    assert_eq!(
        values.get("two"),
        Some(&-4),
        "an unchecked move may go below zero"
    );
    assert_eq!(values.get("three"), None);
    reopened.shutdown().await;
}

/// An append holding the commit-order lock has taken the last unit; an append that begins
/// its batch meanwhile must see that take once it commits (refused), and the unit again if
/// it rolls back (accepted). A guard read outside the lock would accept both.
async fn a_guard_is_checked_under_the_commit_order_lock(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    append_moving(f.events.as_ref(), "supply", vec![CounterMove::new("u", 1)])
        .await
        .unwrap();
    let take = || vec![CounterMove::new("u", -1).at_least(0)];
    for commit in [true, false] {
        let held = f
            .store
            .begin_moving(
                stream(&format!("held-{commit}")),
                vec![event("E", 0)],
                take(),
            )
            .await
            .unwrap();
        let begun = f.store.batches_begun();
        let waiting = tokio::spawn({
            let s = Arc::clone(&f.events);
            async move { append_moving(s.as_ref(), &format!("next-{commit}"), take()).await }
        });
        f.store
            .until("the next append's batch", |s| s.batches_begun() > begun)
            .await;
        if commit {
            held.commit().await.unwrap();
            let refused = waiting.await.unwrap();
            assert!(
                matches!(refused, Err(EventStoreError::GuardRefused { value: 0, .. })),
                "{refused:?}"
            );
            assert_eq!(counter(f.events.as_ref(), "u").await, Some(0));
            // Give the unit back for the second round.
            append_moving(f.events.as_ref(), "back", vec![CounterMove::new("u", 1)])
                .await
                .unwrap();
        } else {
            drop(held);
            waiting.await.unwrap().unwrap();
            assert_eq!(counter(f.events.as_ref(), "u").await, Some(0));
        }
    }
}

/// A history across a few streams: their events only, in log order, after a position, paged.
async fn read_several_streams_in_log_order_from_a_position(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let s = f.events.as_ref();
    for (i, id) in ["a", "b", "c", "a", "b", "c", "a"].into_iter().enumerate() {
        s.append(
            stream(id),
            ExpectedVersion::Any,
            vec![event("E", i as u64)],
            Metadata::default(),
        )
        .await
        .unwrap();
    }
    let ab = &[stream("a"), stream("b")];
    let page = |after, limit| async move {
        s.read_streams(ab, after, limit)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.global_position, e.stream_id.clone()))
            .collect::<Vec<_>>()
    };
    let all = page(0, 100).await;
    let positions: Vec<u64> = all.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, vec![1, 2, 4, 5, 7]);
    assert!(all.iter().all(|(_, id)| id != "c"));
    assert_eq!(
        page(2, 2).await.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert!(page(7, 10).await.is_empty());
    assert!(matches!(
        s.read_streams(&[], 0, 10).await,
        Err(EventStoreError::InvalidInput(_))
    ));
}
