//! The command path tells the truth: what it returns is what the log holds, a create reads
//! nothing and never retries a clash, and a lost commit stays "maybe written" all the way up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use openrun::clock::{Clock, ManualClock};
use openrun::commands::{CommandError, Commands};
use openrun::eventstore::{
    Appended, CounterMove, EventData, EventStore, EventStoreError, ExpectedVersion, Metadata,
    RecordedEvent, StreamRef,
};
use openrun_domain::order::{LineItem, Order, OrderCommand, OrderError, Payment, SealedAddress};
use openrun_domain::product::{Product, ProductCommand};
use openrun_domain::stock::{Stock, StockCommand, StockError, StockEvent};
use openrun_domain::{Actor, CategoryId, MemberId, Money, OrderId, OrderPolicy, ProductId, Role};
use tokio::sync::watch;
use uuid::Uuid;

use crate::helpers::{Backend, StoreFixture, on_both_backends};

on_both_backends!(
    a_command_returns_what_it_committed,
    a_create_reads_nothing_and_a_clash_is_returned_not_retried,
    a_lost_commit_reaches_the_caller_as_maybe_written,
    a_commit_lost_on_an_open_append_is_unknown,
    the_decision_instant_comes_from_the_injected_clock,
    old_event_shapes_fold_through_the_upcasters,
    a_retried_stock_add_does_not_change_the_supply,
    orders_take_units_only_while_the_log_has_them
);

/// The store, with counts of what the command path asked of it, and optionally losing the
/// answer of every commit (the append is written, the caller is told the outcome is unknown).
struct Spy {
    inner: Arc<dyn EventStore>,
    reads: AtomicUsize,
    appends: AtomicUsize,
    lose_answers: AtomicBool,
}

impl Spy {
    fn new(inner: Arc<dyn EventStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            reads: AtomicUsize::new(0),
            appends: AtomicUsize::new(0),
            lose_answers: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl EventStore for Spy {
    async fn append_moving(
        &self,
        stream: StreamRef,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        metadata: Metadata,
        counters: Vec<CounterMove>,
    ) -> Result<Appended, EventStoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        let result = self
            .inner
            .append_moving(stream, expected, events, metadata, counters)
            .await;
        if self.lose_answers.load(Ordering::SeqCst) {
            return Err(EventStoreError::OutcomeUnknown(Arc::new(sqlx::Error::Io(
                std::io::Error::new(std::io::ErrorKind::ConnectionReset, "lost"),
            ))));
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &StreamRef,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn read_streams(
        &self,
        streams: &[StreamRef],
        after: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_streams(streams, after, limit).await
    }

    async fn read_all_bounded(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        self.inner.read_all_bounded(after, limit, max_bytes).await
    }

    async fn head_position(&self) -> Result<u64, EventStoreError> {
        self.inner.head_position().await
    }

    async fn counters(
        &self,
        names: &[&str],
    ) -> Result<std::collections::HashMap<String, i64>, EventStoreError> {
        self.inner.counters(names).await
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.subscribe()
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}

fn clock() -> ManualClock {
    ManualClock::new(Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap())
}

fn seller() -> Actor {
    Actor::new(MemberId::from_uuid(Uuid::from_u128(7)), Role::Seller)
}

/// Units of the variant `place` orders, added around the spy (its counts stay the test's).
async fn supply(events: &Arc<dyn EventStore>) {
    Commands::new(Arc::clone(events), Arc::new(clock()))
        .stock(
            &Uuid::from_u128(4).to_string(),
            add(100),
            Metadata::default(),
        )
        .await
        .unwrap();
}

fn add(quantity: i64) -> StockCommand {
    StockCommand::Add {
        actor: seller(),
        owner: seller().member_id,
        quantity,
        request_id: None,
    }
}

fn place(order_id: OrderId) -> OrderCommand {
    OrderCommand::Place {
        actor: Actor::new(MemberId::from_uuid(Uuid::from_u128(9)), Role::Basic),
        order_id,
        lines: vec![LineItem {
            product_id: ProductId::from_uuid(Uuid::from_u128(3)),
            variant_id: openrun_domain::VariantId::from_uuid(Uuid::from_u128(4)),
            quantity: 1,
            unit_price: Money::from_minor(1000),
        }],
        shipping_address: SealedAddress("sealed:test".into()),
        payment: Payment {
            method: "sandbox".into(),
            reference: "pay_1".into(),
            amount: Money::from_minor(1000),
        },
        policy: OrderPolicy::default(),
        fingerprint: String::new(),
    }
}

async fn a_command_returns_what_it_committed(backend: Backend) {
    let fx = StoreFixture::new(backend).await;
    let commands = Commands::new(Arc::clone(&fx.events), Arc::new(clock()));
    let metadata = Metadata {
        actor: Some("member:7".into()),
        correlation_id: Some(Uuid::now_v7()),
        ..Metadata::default()
    };
    let first = commands
        .stock("variant-a", add(10), metadata.clone())
        .await
        .unwrap();
    let second = commands
        .stock("variant-a", add(5), metadata.clone())
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(second.version, 2);
    assert!(matches!(
        second.events.as_slice(),
        [StockEvent::StockAdded {
            quantity: 5,
            supply: 15,
            ..
        }]
    ));
    // The positions returned are those of the caller's own events when read back.
    let stream = StreamRef::new("stock", "variant-a");
    let recorded = fx.events.read_stream(&stream, 1, 10).await.unwrap();
    assert_eq!(recorded.len(), 2);
    for (committed, recorded) in [&first, &second].into_iter().zip(&recorded) {
        let positions = committed.positions.clone().unwrap();
        assert_eq!(*positions.start(), recorded.global_position);
        assert_eq!(*positions.end(), recorded.global_position);
        assert_eq!(committed.version, recorded.version);
        assert_eq!(
            recorded.metadata, metadata,
            "typed metadata is stored as given"
        );
    }
    assert_eq!(recorded[1].payload["data"]["supply"], 15);
    // A refused command writes nothing and says why.
    let refused = commands
        .stock("variant-a", add(0), Metadata::default())
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        CommandError::Rejected(StockError::NonPositiveQuantity)
    ));
    assert!(!refused.maybe_written());
    let loaded = commands
        .load::<openrun_domain::stock::Stock>("variant-a")
        .await
        .unwrap();
    assert_eq!((loaded.state.supply, loaded.version), (15, 2));
}

async fn a_create_reads_nothing_and_a_clash_is_returned_not_retried(backend: Backend) {
    let fx = StoreFixture::new(backend).await;
    let spy = Spy::new(Arc::clone(&fx.events));
    let commands = Commands::new(spy.clone(), Arc::new(clock()));
    supply(&fx.events).await;
    let order_id = OrderId::from_uuid(Uuid::now_v7());
    let id = order_id.as_uuid().to_string();

    let created = commands
        .create::<Order>(&id, place(order_id), Metadata::default())
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(spy.reads.load(Ordering::SeqCst), 0, "a create reads no SQL");
    assert_eq!(spy.appends.load(Ordering::SeqCst), 1);

    // The same stream again: a conflict for the caller, after one append and no read.
    let clash = commands
        .create::<Order>(&id, place(order_id), Metadata::default())
        .await
        .unwrap_err();
    match &clash {
        CommandError::Conflict { stream, actual } => {
            assert_eq!(stream, &StreamRef::new("order", &id));
            assert_eq!(*actual, 1);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(!clash.maybe_written());
    assert_eq!(
        spy.reads.load(Ordering::SeqCst),
        0,
        "the clash was not retried"
    );
    assert_eq!(spy.appends.load(Ordering::SeqCst), 2);

    // An update of an existing stream decides against what is there: placing again is refused.
    let again = commands
        .order(&id, place(order_id), Metadata::default())
        .await
        .unwrap_err();
    assert!(matches!(
        again,
        CommandError::Rejected(OrderError::AlreadyPlaced)
    ));
}

async fn a_lost_commit_reaches_the_caller_as_maybe_written(backend: Backend) {
    let fx = StoreFixture::new(backend).await;
    let spy = Spy::new(Arc::clone(&fx.events));
    let commands = Commands::new(spy.clone(), Arc::new(clock()));
    supply(&fx.events).await;
    spy.lose_answers.store(true, Ordering::SeqCst);

    let order_id = OrderId::from_uuid(Uuid::now_v7());
    let id = order_id.as_uuid().to_string();
    let lost = commands
        .create::<Order>(&id, place(order_id), Metadata::default())
        .await
        .unwrap_err();
    assert!(
        matches!(lost, CommandError::OutcomeUnknown(_)),
        "got {lost:?}"
    );
    assert!(lost.maybe_written());
    let update = commands
        .stock("variant-b", add(3), Metadata::default())
        .await
        .unwrap_err();
    assert!(matches!(update, CommandError::OutcomeUnknown(_)));
    // Neither was retried: "maybe written" is not "try again".
    assert_eq!(spy.appends.load(Ordering::SeqCst), 2);
    // And both were in fact written.
    let loaded = commands.load::<Order>(&id).await.unwrap();
    assert_eq!(loaded.version, 1);

    // Through cqrs-es the same loss is no retryable connection error either.
    use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
    let repo = openrun::eventstore::cqrs::CqrsEventRepository::new(spy.clone());
    let event = SerializedEvent {
        aggregate_id: "variant-c".into(),
        sequence: 1,
        aggregate_type: "stock".into(),
        event_type: "StockAdded".into(),
        event_version: "1.0".into(),
        payload: serde_json::json!({"type": "StockAdded", "data": {"quantity": 1, "supply": 1, "at": "2026-12-01T10:00:00Z"}}),
        metadata: serde_json::json!({}),
    };
    let err = repo
        .persist::<openrun_domain::stock::Stock>(&[event], None)
        .await
        .unwrap_err();
    match err {
        PersistenceError::UnknownError(inner) => assert!(matches!(
            inner.downcast_ref::<EventStoreError>(),
            Some(EventStoreError::OutcomeUnknown(_))
        )),
        other => panic!("expected the unknown outcome to survive, got {other:?}"),
    }
}

/// A commit whose connection dies is "outcome unknown", not a retryable database error.
async fn a_commit_lost_on_an_open_append_is_unknown(backend: Backend) {
    let fx = StoreFixture::new(backend).await;
    let held = fx
        .store
        .begin_append(
            StreamRef::new("t", "held"),
            vec![crate::helpers::event("E", 0)],
        )
        .await;
    match &fx.db {
        openrun::db::Database::MySql(pool) => {
            // Kill the held transaction's connection from another one.
            let mut admin = pool.acquire().await.unwrap();
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT ID FROM information_schema.PROCESSLIST \
                 WHERE DB = DATABASE() AND ID <> CONNECTION_ID()",
            )
            .fetch_all(&mut *admin)
            .await
            .unwrap();
            for id in ids {
                // Ignored error: an idle pooled connection may already be gone.
                let _ = sqlx::query(&format!("KILL {id}"))
                    .execute(&mut *admin)
                    .await;
            }
            let result = held.commit().await;
            assert!(
                matches!(result, Err(EventStoreError::OutcomeUnknown(_))),
                "got {result:?}"
            );
        }
        openrun::db::Database::Sqlite(_) => {
            // SQLite's commit is local and cannot be lost on a wire; it commits.
            held.commit().await.unwrap();
        }
    }
}

async fn the_decision_instant_comes_from_the_injected_clock(backend: Backend) {
    let fx = StoreFixture::new(backend).await;
    let clock = clock();
    let commands = Commands::new(Arc::clone(&fx.events), Arc::new(clock.clone()));
    clock.advance(chrono::Duration::days(3));
    let committed = commands
        .stock("variant-d", add(1), Metadata::default())
        .await
        .unwrap();
    match &committed.events[..] {
        [StockEvent::StockAdded { at, .. }] => assert_eq!(*at, clock.now()),
        other => panic!("unexpected {other:?}"),
    }
}

async fn old_event_shapes_fold_through_the_upcasters(backend: Backend) {
    let fx = StoreFixture::new(backend).await;
    let commands = Commands::new(Arc::clone(&fx.events), Arc::new(clock()));
    let product = ProductId::from_uuid(Uuid::now_v7());
    let id = product.as_uuid().to_string();
    // A version 1.0 registration, which had no description.
    let v1 = serde_json::json!({"type": "ProductRegistered", "data": {
        "product_id": product, "seller_id": seller().member_id,
        "category_id": CategoryId::from_uuid(Uuid::from_u128(5)),
        "name": "Old sneaker", "price": 1000, "at": "2025-03-01T10:00:00Z"}});
    fx.events
        .append(
            StreamRef::new("product", &id),
            ExpectedVersion::NO_STREAM,
            vec![EventData::json("ProductRegistered", "1.0", &v1).unwrap()],
            Metadata::default(),
        )
        .await
        .unwrap();
    let loaded = commands.load::<Product>(&id).await.unwrap();
    let state = loaded.state.state.unwrap();
    assert_eq!(state.name, "Old sneaker");
    assert_eq!(state.description, "");
    // And commands decide against it.
    let changed = commands
        .product(
            &id,
            ProductCommand::ChangeDetails {
                actor: seller(),
                category_id: None,
                name: None,
                description: Some("Now described".into()),
                price: None,
                purchase_limit: None,
            },
            Metadata::default(),
        )
        .await
        .unwrap();
    assert_eq!(changed.version, 2);
}

/// A retried add (the same request id, as an `Idempotency-Key` gives it) and an add at a
/// stale version (a stale `If-Match`) leave the supply as the first add made it.
async fn a_retried_stock_add_does_not_change_the_supply(backend: Backend) {
    let fx = StoreFixture::new(backend).await;
    let commands = Commands::new(Arc::clone(&fx.events), Arc::new(clock()));
    let keyed = |quantity| StockCommand::Add {
        actor: seller(),
        owner: seller().member_id,
        quantity,
        request_id: Some(Uuid::from_u128(42)),
    };
    let first = commands
        .stock("variant-k", keyed(10), Metadata::default())
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    let retried = commands
        .stock("variant-k", keyed(10), Metadata::default())
        .await
        .unwrap();
    assert!(retried.events.is_empty(), "the retry appended nothing");
    assert_eq!(retried.version, 1);
    let reused = commands
        .stock("variant-k", keyed(11), Metadata::default())
        .await;
    assert!(matches!(
        reused,
        Err(CommandError::Rejected(StockError::RequestReused))
    ));
    // If-Match: at the version read, once; again with that now stale version, refused.
    let at_one = commands
        .execute_at::<Stock>("variant-k", 1, add(5), Metadata::default())
        .await
        .unwrap();
    assert_eq!(at_one.version, 2);
    let stale = commands
        .execute_at::<Stock>("variant-k", 1, add(5), Metadata::default())
        .await;
    assert!(matches!(
        stale,
        Err(CommandError::Conflict { actual: 2, .. })
    ));
    let loaded = commands.load::<Stock>("variant-k").await.unwrap();
    assert_eq!(loaded.state.supply, 15);
    assert_eq!(loaded.version, 2);
}

/// Stock events and orders move the log's units counter of each variant: an order that takes
/// more than is left is refused by the log itself (whatever a hot store said), and so is a
/// downward adjustment below what is left; a cancel gives the units back.
async fn orders_take_units_only_while_the_log_has_them(backend: Backend) {
    let fx = StoreFixture::new(backend).await;
    let commands = Commands::new(Arc::clone(&fx.events), Arc::new(clock()));
    let variant = openrun_domain::VariantId::from_uuid(Uuid::from_u128(4));
    let counter = openrun::commands::units_counter(variant);
    let units = || async {
        fx.events
            .counters(&[counter.as_str()])
            .await
            .unwrap()
            .get(&counter)
            .copied()
    };
    commands
        .stock(&variant.to_string(), add(2), Metadata::default())
        .await
        .unwrap();
    assert_eq!(units().await, Some(2));
    let order = |n: u128| OrderId::from_uuid(Uuid::from_u128(0x100 + n));
    for n in 0..2 {
        commands
            .order(&order(n).to_string(), place(order(n)), Metadata::default())
            .await
            .unwrap();
    }
    assert_eq!(units().await, Some(0));
    let refused = commands
        .order(&order(2).to_string(), place(order(2)), Metadata::default())
        .await;
    assert!(
        matches!(&refused, Err(CommandError::GuardRefused { value: 0, .. })),
        "{refused:?}"
    );
    assert!(
        fx.events
            .read_stream(&StreamRef::new("order", order(2).to_string()), 1, 10)
            .await
            .unwrap()
            .is_empty(),
        "a refused order wrote nothing"
    );
    let take_back = StockCommand::Adjust {
        actor: seller(),
        owner: seller().member_id,
        delta: -1,
        reason: "miscounted".into(),
        request_id: None,
    };
    let refused = commands
        .stock(&variant.to_string(), take_back.clone(), Metadata::default())
        .await;
    assert!(matches!(refused, Err(CommandError::GuardRefused { .. })));
    let cancel = OrderCommand::Cancel {
        actor: Actor::new(MemberId::from_uuid(Uuid::from_u128(9)), Role::Basic),
    };
    commands
        .order(&order(0).to_string(), cancel, Metadata::default())
        .await
        .unwrap();
    assert_eq!(units().await, Some(1), "a cancel gives its units back");
    commands
        .stock(&variant.to_string(), take_back, Metadata::default())
        .await
        .unwrap();
    assert_eq!(units().await, Some(0));
}
