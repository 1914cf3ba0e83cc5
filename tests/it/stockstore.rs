//! The `StockStore` contract, run against Redis (a key prefix per test) and the in-process
//! store: holds, idempotency records, sale windows and limits on the store's clock, the
//! projector's batches, epochs and rebuilds, leftovers.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use openrun::clock::ManualClock;
use openrun::stock::memory::MemoryStockStore;
use openrun::stock::redis::RedisStockStore;
use openrun::stock::{
    Applied, CounterBatch, CounterChange, HoldLine, HoldOutcome, HoldRequest, Levels, SaleTerms,
    StockStore, StoreState, UnitsHeld,
};
use openrun_domain::{MemberId, OrderId, ProductId, VariantId};
use uuid::Uuid;

use crate::helpers::{REDIS_URL, delete_redis_keys, random_name};

struct Fixture {
    store: Arc<dyn StockStore>,
    prefix: Option<String>,
}

impl Fixture {
    async fn memory() -> Self {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 12, 4, 10, 0, 0).unwrap());
        Self {
            store: Arc::new(MemoryStockStore::new(Arc::new(clock))),
            prefix: None,
        }
    }

    async fn redis() -> Self {
        let prefix = format!("{}:", random_name("openrun_test_"));
        let conn = openrun::redis::connect(REDIS_URL).await.unwrap();
        Self {
            store: Arc::new(RedisStockStore::new(conn, &prefix).await.unwrap()),
            prefix: Some(prefix),
        }
    }

    async fn cleanup(self) {
        if let Some(prefix) = self.prefix {
            delete_redis_keys(&prefix).await;
        }
    }
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let f = super::Fixture::memory().await;
                    super::$name(&f.store).await;
                    f.cleanup().await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let f = super::Fixture::redis().await;
                    super::$name(&f.store).await;
                    f.cleanup().await;
                }
            )*
        }
    };
}

on_both_stores!(
    a_store_without_counters_refuses_holds_until_it_is_rebuilt,
    a_hold_takes_every_line_or_none,
    concurrent_holds_never_take_more_than_there_is,
    the_idempotency_record_answers_every_retry,
    sale_windows_and_purchase_limits_are_judged_on_the_store_s_clock,
    a_batch_applies_once_and_only_after_its_watermark,
    holds_of_an_older_epoch_count_for_nothing,
    stale_holds_are_listed_and_a_leftover_is_released_once_passed,
    an_adjustment_holds_what_it_takes_and_counts_once,
    counters_the_log_caught_are_rebuilt_once_the_older_holds_have_landed,
);

const BUYER: MemberId = MemberId::from_uuid(Uuid::from_u128(0xb1));
const SHOE: ProductId = ProductId::from_uuid(Uuid::from_u128(0x100));
const CAP: ProductId = ProductId::from_uuid(Uuid::from_u128(0x101));

fn variant(n: u128) -> VariantId {
    VariantId::from_uuid(Uuid::from_u128(0x5000 + n))
}

fn order(n: u128) -> OrderId {
    OrderId::from_uuid(Uuid::from_u128(0x0d00 + n))
}

fn line(product_id: ProductId, v: u128, quantity: u32) -> HoldLine {
    HoldLine {
        product_id,
        variant_id: variant(v),
        quantity,
    }
}

fn on_sale(product_id: ProductId) -> SaleTerms {
    SaleTerms {
        product_id,
        opens_at: None,
        ends_at: None,
        limit: None,
    }
}

fn request(n: u128, lines: Vec<HoldLine>) -> HoldRequest {
    let mut terms: Vec<SaleTerms> = Vec::new();
    for l in &lines {
        if !terms.iter().any(|t| t.product_id == l.product_id) {
            terms.push(on_sale(l.product_id));
        }
    }
    HoldRequest {
        order_id: order(n),
        buyer: BUYER,
        fingerprint: format!("fp-{n}"),
        lines,
        terms,
        from_cart: None,
    }
}

/// Builds the counters: `levels` per variant, at `watermark`; returns the epoch.
async fn ready(store: &Arc<dyn StockStore>, levels: &[(u128, i64)], watermark: u64) -> String {
    let epoch = store
        .begin_rebuild(std::time::Duration::from_secs(30))
        .await
        .unwrap()
        .expect("no other rebuild holds the lease");
    let levels = Levels {
        available: levels.iter().map(|(v, n)| (variant(*v), *n)).collect(),
        bought: Vec::new(),
    };
    assert!(
        store
            .finish_rebuild(&epoch, watermark, &levels)
            .await
            .unwrap()
    );
    epoch
}

async fn left(store: &Arc<dyn StockStore>, variants: &[u128]) -> Vec<i64> {
    let ids: Vec<VariantId> = variants.iter().map(|v| variant(*v)).collect();
    store.available(&ids).await.unwrap()
}

async fn a_store_without_counters_refuses_holds_until_it_is_rebuilt(store: &Arc<dyn StockStore>) {
    assert_eq!(store.state().await.unwrap(), StoreState::Missing);
    let hold = request(1, vec![line(SHOE, 1, 1)]);
    assert_eq!(store.hold(&hold).await.unwrap(), HoldOutcome::Rebuilding);
    let epoch = store
        .begin_rebuild(std::time::Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .begin_rebuild(std::time::Duration::from_secs(30))
            .await
            .unwrap()
            .is_none(),
        "one rebuild at a time"
    );
    assert_eq!(
        store.state().await.unwrap(),
        StoreState::Rebuilding {
            epoch: epoch.clone()
        }
    );
    assert_eq!(
        store.hold(&hold).await.unwrap(),
        HoldOutcome::Rebuilding,
        "never sold out"
    );
    assert!(
        !store
            .finish_rebuild("another", 7, &Levels::default())
            .await
            .unwrap()
    );
    let levels = Levels {
        available: vec![(variant(1), 10)],
        bought: vec![(SHOE, BUYER, 2)],
    };
    assert!(store.finish_rebuild(&epoch, 7, &levels).await.unwrap());
    assert_eq!(
        store.state().await.unwrap(),
        StoreState::Ready {
            epoch,
            watermark: 7
        }
    );
    assert_eq!(left(store, &[1, 2]).await, vec![10, 0]);
    assert!(matches!(
        store.hold(&hold).await.unwrap(),
        HoldOutcome::Held { .. }
    ));
}

async fn a_hold_takes_every_line_or_none(store: &Arc<dyn StockStore>) {
    ready(store, &[(1, 5), (2, 1)], 0).await;
    let first = request(1, vec![line(SHOE, 1, 3), line(CAP, 2, 1)]);
    assert!(matches!(
        store.hold(&first).await.unwrap(),
        HoldOutcome::Held { .. }
    ));
    assert_eq!(left(store, &[1, 2]).await, vec![2, 0]);
    let second = request(2, vec![line(SHOE, 1, 1), line(CAP, 2, 1), line(CAP, 3, 1)]);
    assert_eq!(
        store.hold(&second).await.unwrap(),
        HoldOutcome::SoldOut {
            short: vec![(variant(2), 0), (variant(3), 0)]
        }
    );
    assert_eq!(
        left(store, &[1, 2, 3]).await,
        vec![2, 0, 0],
        "nothing of it was held"
    );
    // A refused hold leaves no record: the same order is decided afresh.
    let smaller = HoldRequest {
        lines: vec![line(SHOE, 1, 2)],
        terms: vec![on_sale(SHOE)],
        ..second
    };
    assert!(matches!(
        store.hold(&smaller).await.unwrap(),
        HoldOutcome::Held { .. }
    ));
    assert_eq!(left(store, &[1]).await, vec![0]);
}

async fn concurrent_holds_never_take_more_than_there_is(store: &Arc<dyn StockStore>) {
    ready(store, &[(1, 50)], 0).await;
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let mut hold = request(n, vec![line(SHOE, 1, 1)]);
                hold.buyer = MemberId::from_uuid(Uuid::from_u128(0xb000 + n));
                store.hold(&hold).await.unwrap()
            })
        })
        .collect();
    let mut held = 0;
    for task in tasks {
        match task.await.unwrap() {
            HoldOutcome::Held { .. } => held += 1,
            HoldOutcome::SoldOut { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(held, 50);
    assert_eq!(left(store, &[1]).await, vec![0]);
}

async fn the_idempotency_record_answers_every_retry(store: &Arc<dyn StockStore>) {
    ready(store, &[(1, 10)], 0).await;
    let first = request(1, vec![line(SHOE, 1, 1)]);
    assert!(matches!(
        store.hold(&first).await.unwrap(),
        HoldOutcome::Held { .. }
    ));
    assert_eq!(store.hold(&first).await.unwrap(), HoldOutcome::InFlight);
    let other_body = HoldRequest {
        fingerprint: "another body".into(),
        ..first.clone()
    };
    assert_eq!(
        store.hold(&other_body).await.unwrap(),
        HoldOutcome::KeyReused
    );
    store.finish(first.order_id, "{\"id\":1}").await.unwrap();
    assert_eq!(
        store.hold(&first).await.unwrap(),
        HoldOutcome::Finished("{\"id\":1}".into())
    );
    assert_eq!(
        store.hold(&other_body).await.unwrap(),
        HoldOutcome::KeyReused
    );
    assert_eq!(
        left(store, &[1]).await,
        vec![9],
        "retries hold nothing more"
    );
    // A payment outcome unknown: the next retry goes on with the hold it left, once.
    let second = request(2, vec![line(SHOE, 1, 2)]);
    assert!(matches!(
        store.hold(&second).await.unwrap(),
        HoldOutcome::Held { .. }
    ));
    store.allow_retry(second.order_id).await.unwrap();
    assert!(matches!(
        store.hold(&second).await.unwrap(),
        HoldOutcome::Resumed { .. }
    ));
    assert_eq!(store.hold(&second).await.unwrap(), HoldOutcome::InFlight);
    assert_eq!(left(store, &[1]).await, vec![7]);
    // A forgotten record: decided afresh.
    store.forget(second.order_id).await.unwrap();
    assert!(matches!(
        store.hold(&second).await.unwrap(),
        HoldOutcome::Held { .. }
    ));
    // allow_retry of an order with no record creates none.
    store.allow_retry(order(9)).await.unwrap();
    let ninth = request(9, vec![line(SHOE, 1, 1)]);
    assert!(matches!(
        store.hold(&ninth).await.unwrap(),
        HoldOutcome::Held { .. }
    ));
}

async fn sale_windows_and_purchase_limits_are_judged_on_the_store_s_clock(
    store: &Arc<dyn StockStore>,
) {
    ready(store, &[(1, 10), (2, 10)], 0).await;
    let now = store.now().await.unwrap();
    let with = |n: u128, lines: Vec<HoldLine>, terms: SaleTerms| HoldRequest {
        terms: vec![terms],
        ..request(n, lines)
    };
    let later = SaleTerms {
        opens_at: Some(now + Duration::hours(1)),
        ..on_sale(SHOE)
    };
    assert_eq!(
        store
            .hold(&with(1, vec![line(SHOE, 1, 1)], later))
            .await
            .unwrap(),
        HoldOutcome::NotOnSale { product_id: SHOE }
    );
    let ended = SaleTerms {
        opens_at: Some(now - Duration::hours(2)),
        ends_at: Some(now - Duration::seconds(1)),
        ..on_sale(SHOE)
    };
    assert_eq!(
        store
            .hold(&with(2, vec![line(SHOE, 1, 1)], ended))
            .await
            .unwrap(),
        HoldOutcome::NotOnSale { product_id: SHOE }
    );
    let open = SaleTerms {
        opens_at: Some(now - Duration::seconds(1)),
        ends_at: Some(now + Duration::hours(1)),
        limit: Some(2),
        ..on_sale(SHOE)
    };
    // Two sizes of one product count together against its limit, across orders.
    assert!(matches!(
        store
            .hold(&with(3, vec![line(SHOE, 1, 1), line(SHOE, 2, 1)], open))
            .await
            .unwrap(),
        HoldOutcome::Held { .. }
    ));
    assert_eq!(
        store
            .hold(&with(4, vec![line(SHOE, 2, 1)], open))
            .await
            .unwrap(),
        HoldOutcome::LimitReached {
            product_id: SHOE,
            limit: 2,
            bought: 2
        }
    );
    assert_eq!(left(store, &[1, 2]).await, vec![9, 9]);
}

async fn a_batch_applies_once_and_only_after_its_watermark(store: &Arc<dyn StockStore>) {
    let epoch = ready(store, &[], 0).await;
    let batch = |after, to, changes| CounterBatch {
        epoch: epoch.clone(),
        after,
        to,
        changes,
    };
    let supply = batch(
        0,
        3,
        vec![CounterChange::Supply {
            variant_id: variant(1),
            delta: 10,
            hold: None,
        }],
    );
    assert_eq!(store.apply(&supply).await.unwrap(), Applied::Done);
    assert_eq!(
        store.apply(&supply).await.unwrap(),
        Applied::Stale,
        "applied once"
    );
    let skipping = batch(5, 6, vec![]);
    assert_eq!(
        store.apply(&skipping).await.unwrap(),
        Applied::Stale,
        "no gap"
    );
    let other_epoch = CounterBatch {
        epoch: "another".into(),
        ..batch(3, 4, vec![])
    };
    assert_eq!(store.apply(&other_epoch).await.unwrap(), Applied::Stale);
    assert_eq!(left(store, &[1]).await, vec![10]);
    // Order 1 was held (counted then); order 2 was not (counted now); order 3 is closed
    // without an order (its hold goes back); order 4's units come back.
    for n in [1, 3] {
        let hold = request(n, vec![line(SHOE, 1, 2)]);
        assert!(matches!(
            store.hold(&hold).await.unwrap(),
            HoldOutcome::Held { .. }
        ));
    }
    assert_eq!(left(store, &[1]).await, vec![6]);
    let placed = |n| CounterChange::Placed {
        order_id: order(n),
        buyer: BUYER,
        lines: vec![line(SHOE, 1, 2)],
    };
    let orders = batch(
        3,
        9,
        vec![
            placed(1),
            placed(2),
            CounterChange::Closed { order_id: order(3) },
            placed(4),
            CounterChange::GivenBack {
                buyer: BUYER,
                lines: vec![line(SHOE, 1, 2)],
            },
        ],
    );
    assert_eq!(store.apply(&orders).await.unwrap(), Applied::Done);
    // 10 - 2 (held 1) - 2 (placed 2) - 2 (placed 4) + 2 (given back); 3's hold went back.
    assert_eq!(left(store, &[1]).await, vec![6]);
    assert_eq!(
        store.state().await.unwrap(),
        StoreState::Ready {
            epoch: epoch.clone(),
            watermark: 9
        }
    );
    let now = store.now().await.unwrap();
    assert!(
        store
            .stale_holds(now + Duration::hours(1), 10)
            .await
            .unwrap()
            .is_empty(),
        "placed and closed orders hold nothing"
    );
    // The buyer's purchases: 1, 2 and 4 (2 each) less the 2 given back.
    let limited = HoldRequest {
        terms: vec![SaleTerms {
            limit: Some(5),
            ..on_sale(SHOE)
        }],
        ..request(5, vec![line(SHOE, 1, 2)])
    };
    assert_eq!(
        store.hold(&limited).await.unwrap(),
        HoldOutcome::LimitReached {
            product_id: SHOE,
            limit: 5,
            bought: 4
        }
    );
}

async fn holds_of_an_older_epoch_count_for_nothing(store: &Arc<dyn StockStore>) {
    ready(store, &[(1, 10)], 0).await;
    for n in [1, 2] {
        let hold = request(n, vec![line(SHOE, 1, 3)]);
        assert!(matches!(
            store.hold(&hold).await.unwrap(),
            HoldOutcome::Held { .. }
        ));
    }
    // The data was lost and rebuilt from the log, which holds neither order: 10 again.
    let epoch = ready(store, &[(1, 10)], 20).await;
    assert_eq!(left(store, &[1]).await, vec![10]);
    let batch = CounterBatch {
        epoch,
        after: 20,
        to: 22,
        changes: vec![
            CounterChange::Closed { order_id: order(1) },
            CounterChange::Placed {
                order_id: order(2),
                buyer: BUYER,
                lines: vec![line(SHOE, 1, 3)],
            },
        ],
    };
    assert_eq!(store.apply(&batch).await.unwrap(), Applied::Done);
    // 1's old hold gives nothing back; 2, placed after the rebuild, takes its units now.
    assert_eq!(left(store, &[1]).await, vec![7]);
}

async fn stale_holds_are_listed_and_a_leftover_is_released_once_passed(
    store: &Arc<dyn StockStore>,
) {
    let epoch = ready(store, &[(1, 10)], 5).await;
    let hold = request(1, vec![line(SHOE, 1, 4)]);
    let HoldOutcome::Held { at, .. } = store.hold(&hold).await.unwrap() else {
        panic!("not held");
    };
    assert!(
        store.stale_holds(at, 10).await.unwrap().is_empty(),
        "not older than itself"
    );
    let stale = store
        .stale_holds(at + Duration::seconds(1), 10)
        .await
        .unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].order_id, order(1));
    assert_eq!(stale[0].at.timestamp_millis(), at.timestamp_millis());
    // Its OrderPlaced is at 8, which the projector has not passed: it will count the hold.
    assert!(!store.release_leftover(order(1), 8).await.unwrap());
    assert_eq!(left(store, &[1]).await, vec![6]);
    let batch = CounterBatch {
        epoch,
        after: 5,
        to: 9,
        changes: vec![],
    };
    assert_eq!(store.apply(&batch).await.unwrap(), Applied::Done);
    assert!(store.release_leftover(order(1), 8).await.unwrap());
    assert_eq!(left(store, &[1]).await, vec![10]);
    assert!(
        store
            .stale_holds(at + Duration::hours(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Released once: a second release gives nothing more.
    assert!(store.release_leftover(order(1), 8).await.unwrap());
    assert_eq!(left(store, &[1]).await, vec![10]);
}

/// A downward adjustment holds its units as an order would (refused when fewer are left, so
/// no order in flight loses what it holds), and its change counts once: applied with its hold
/// still there, after its hold was released, or never (the hold released alone).
async fn an_adjustment_holds_what_it_takes_and_counts_once(store: &Arc<dyn StockStore>) {
    let epoch = ready(store, &[(1, 10)], 0).await;
    // An order holds 4: 6 are left, so taking 7 away is refused and changes nothing.
    assert!(matches!(
        store
            .hold(&request(1, vec![line(SHOE, 1, 4)]))
            .await
            .unwrap(),
        HoldOutcome::Held { .. }
    ));
    let (first, second, third) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    assert_eq!(
        store.hold_units(first, variant(1), 7).await.unwrap(),
        UnitsHeld::Short { available: 6 }
    );
    assert_eq!(left(store, &[1]).await, vec![6]);
    for hold in [first, second, third] {
        assert_eq!(
            store.hold_units(hold, variant(1), 2).await.unwrap(),
            UnitsHeld::Held
        );
    }
    assert_eq!(left(store, &[1]).await, vec![0]);
    assert_eq!(
        store.hold_units(first, variant(1), 2).await.unwrap(),
        UnitsHeld::AlreadyHeld,
        "the same request again, while it is at work"
    );
    assert!(matches!(
        store
            .hold(&request(2, vec![line(SHOE, 1, 1)]))
            .await
            .unwrap(),
        HoldOutcome::SoldOut { .. }
    ));
    // All three are stale a moment later.
    let later = store.now().await.unwrap() + Duration::seconds(1);
    let mut stale = store.stale_unit_holds(later, 10).await.unwrap();
    stale.sort();
    assert_eq!(stale, vec![first, second, third]);
    // The first is applied with its hold; the second after its hold was released (the
    // sweep); the third never (its append failed): each takes its 2 units once.
    store.release_units(second).await.unwrap();
    store.release_units(third).await.unwrap();
    assert_eq!(left(store, &[1]).await, vec![4]);
    let adjusted = |hold| CounterChange::Supply {
        variant_id: variant(1),
        delta: -2,
        hold: Some(hold),
    };
    let batch = CounterBatch {
        epoch,
        after: 0,
        to: 2,
        changes: vec![adjusted(first), adjusted(second)],
    };
    assert_eq!(store.apply(&batch).await.unwrap(), Applied::Done);
    assert_eq!(left(store, &[1]).await, vec![2], "10 - 4 held - 2 - 2");
    assert!(store.stale_unit_holds(later, 10).await.unwrap().is_empty());
    // A released hold released again changes nothing.
    store.release_units(first).await.unwrap();
    assert_eq!(left(store, &[1]).await, vec![2]);
}

/// A Redis that may evict keys would drop counters and sell what is not there: the store
/// refuses to start on one.
#[tokio::test]
async fn the_redis_store_refuses_a_redis_that_may_evict() {
    let port = crate::helpers::free_port();
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--maxmemory-policy", "allkeys-lru"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is installed");
    let url = format!("redis://127.0.0.1:{port}");
    let conn = crate::helpers::eventually("the Redis server to listen", || async {
        openrun::redis::connect(&url).await.ok()
    })
    .await;
    let refused = RedisStockStore::new(conn, "openrun_test:").await;
    server.kill().unwrap();
    server.wait().unwrap();
    let error = format!("{:#}", refused.err().expect("refused"));
    assert!(
        error.contains("allkeys-lru") && error.contains("noeviction"),
        "{error}"
    );
}

/// One counter projector leads at a time; another takes over once its lease lapses.
#[tokio::test]
async fn one_projector_leads_until_its_lease_lapses() {
    let f = Fixture::redis().await;
    let lease = std::time::Duration::from_millis(300);
    assert!(f.store.lead("first", lease).await.unwrap());
    assert!(!f.store.lead("second", lease).await.unwrap());
    assert!(f.store.lead("first", lease).await.unwrap(), "renewed");
    // Redis's clock moving on is the behaviour under test.
    crate::helpers::eventually("the first lease to lapse", || async {
        f.store.lead("second", lease).await.unwrap().then_some(())
    })
    .await;
    assert!(!f.store.lead("first", lease).await.unwrap(), "taken over");
    f.cleanup().await;
}

/// The log refused what the counters let through: they are dropped for a rebuild, but not
/// while orders held under an older epoch are still landing (the log refusing some of those
/// is expected after a rebuild, and another rebuild would only start it again).
async fn counters_the_log_caught_are_rebuilt_once_the_older_holds_have_landed(
    store: &Arc<dyn StockStore>,
) {
    let old = ready(store, &[(1, 10)], 0).await;
    assert!(matches!(
        store
            .hold(&request(1, vec![line(SHOE, 1, 1)]))
            .await
            .unwrap(),
        HoldOutcome::Held { .. }
    ));
    // Rebuilt under a new epoch while order 1 is still in flight.
    store.distrust(&old).await.unwrap();
    assert_eq!(store.state().await.unwrap(), StoreState::Missing);
    let epoch = ready(store, &[(1, 10)], 0).await;
    assert_ne!(epoch, old);
    store.distrust(&old).await.unwrap();
    store.distrust(&epoch).await.unwrap();
    assert!(
        matches!(store.state().await.unwrap(), StoreState::Ready { .. }),
        "order 1, held under the old epoch, has not landed"
    );
    // It lands: now a refusal means lost writes.
    let placed = CounterBatch {
        epoch: epoch.clone(),
        after: 0,
        to: 1,
        changes: vec![CounterChange::Placed {
            order_id: order(1),
            buyer: BUYER,
            lines: vec![line(SHOE, 1, 1)],
        }],
    };
    assert_eq!(store.apply(&placed).await.unwrap(), Applied::Done);
    store.distrust(&epoch).await.unwrap();
    assert_eq!(store.state().await.unwrap(), StoreState::Missing);
}
