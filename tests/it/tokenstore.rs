//! The `TokenStore` contract, run against Redis (a key prefix per test) and the in-process
//! store.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use openrun::auth::tokens::{MemoryTokenStore, RedisTokenStore, Refreshed, Session, TokenStore};

use crate::helpers::{REDIS_URL, delete_redis_keys, random_name};

const TTL: Duration = Duration::from_secs(600);

enum Kind {
    Memory,
    Redis,
}

struct Fixture {
    store: Arc<dyn TokenStore>,
    prefix: Option<String>,
}

impl Fixture {
    async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Memory => Self {
                store: Arc::new(MemoryTokenStore::default()),
                prefix: None,
            },
            Kind::Redis => {
                let prefix = format!("{}:", random_name("openrun_test_"));
                let store = RedisTokenStore::connect(REDIS_URL, &prefix).await.unwrap();
                Self {
                    store: Arc::new(store),
                    prefix: Some(prefix),
                }
            }
        }
    }

    async fn cleanup(self) {
        if let Some(prefix) = self.prefix {
            delete_redis_keys(&prefix).await;
        }
    }
}

fn session(id: &str, member: &str, minute: u32) -> Session {
    let at = Utc.with_ymd_and_hms(2026, 11, 25, 12, minute, 0).unwrap();
    Session {
        id: id.into(),
        member_id: member.into(),
        device: format!("device {id}"),
        created_at: at,
        last_used_at: at,
    }
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    let f = super::Fixture::new(super::Kind::Memory).await;
                    super::$name(&*f.store).await;
                    f.cleanup().await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let f = super::Fixture::new(super::Kind::Redis).await;
                    super::$name(&*f.store).await;
                    f.cleanup().await;
                }
            )*
        }
    };
}

on_both_stores!(
    a_created_session_is_active_and_listed,
    rotation_replaces_the_current_token_and_extends_the_session,
    a_rotated_token_presented_again_ends_the_session,
    an_unknown_token_or_session_changes_nothing,
    a_member_ends_only_their_own_sessions,
    end_all_keeps_the_excepted_session,
);

async fn a_created_session_is_active_and_listed(store: &dyn TokenStore) {
    let a = session("s1", "m1", 1);
    let b = session("s2", "m1", 2);
    store.create(&b, "hb", TTL).await.unwrap();
    store.create(&a, "ha", TTL).await.unwrap();
    store
        .create(&session("s3", "m2", 3), "hc", TTL)
        .await
        .unwrap();
    assert!(store.is_active("s1").await.unwrap());
    assert!(!store.is_active("nope").await.unwrap());
    assert_eq!(
        store.sessions("m1").await.unwrap(),
        vec![a, b],
        "oldest first, m1 only"
    );
    assert!(store.sessions("m9").await.unwrap().is_empty());
}

async fn rotation_replaces_the_current_token_and_extends_the_session(store: &dyn TokenStore) {
    store
        .create(&session("s1", "m1", 1), "h1", TTL)
        .await
        .unwrap();
    let later = Utc.with_ymd_and_hms(2026, 11, 25, 13, 0, 0).unwrap();
    let Refreshed::Rotated(s) = store.rotate("s1", "h1", "h2", later, TTL).await.unwrap() else {
        panic!("the current token rotates");
    };
    assert_eq!(
        (s.id.as_str(), s.member_id.as_str(), s.device.as_str()),
        ("s1", "m1", "device s1")
    );
    assert_eq!(s.last_used_at, later);
    assert_eq!(store.sessions("m1").await.unwrap()[0].last_used_at, later);
    assert!(matches!(
        store.rotate("s1", "h2", "h3", later, TTL).await.unwrap(),
        Refreshed::Rotated(_)
    ));
}

async fn a_rotated_token_presented_again_ends_the_session(store: &dyn TokenStore) {
    store
        .create(&session("s1", "m1", 1), "h1", TTL)
        .await
        .unwrap();
    store
        .create(&session("s2", "m1", 2), "k1", TTL)
        .await
        .unwrap();
    let now = Utc::now();
    store.rotate("s1", "h1", "h2", now, TTL).await.unwrap();
    store.rotate("s1", "h2", "h3", now, TTL).await.unwrap();
    // The oldest rotated token, not just the last one.
    let reused = store.rotate("s1", "h1", "h9", now, TTL).await.unwrap();
    assert_eq!(
        reused,
        Refreshed::Reused {
            member_id: "m1".into()
        }
    );
    assert!(!store.is_active("s1").await.unwrap());
    assert_eq!(
        store.rotate("s1", "h3", "h4", now, TTL).await.unwrap(),
        Refreshed::Unknown
    );
    let left: Vec<String> = store
        .sessions("m1")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, vec!["s2"], "other sessions live on");
}

async fn an_unknown_token_or_session_changes_nothing(store: &dyn TokenStore) {
    store
        .create(&session("s1", "m1", 1), "h1", TTL)
        .await
        .unwrap();
    let now = Utc::now();
    assert_eq!(
        store.rotate("s1", "guess", "x", now, TTL).await.unwrap(),
        Refreshed::Unknown
    );
    assert_eq!(
        store.rotate("s9", "h1", "x", now, TTL).await.unwrap(),
        Refreshed::Unknown
    );
    assert!(store.is_active("s1").await.unwrap());
    assert!(matches!(
        store.rotate("s1", "h1", "h2", now, TTL).await.unwrap(),
        Refreshed::Rotated(_)
    ));
}

async fn a_member_ends_only_their_own_sessions(store: &dyn TokenStore) {
    store
        .create(&session("s1", "m1", 1), "h1", TTL)
        .await
        .unwrap();
    store
        .create(&session("s2", "m2", 2), "h2", TTL)
        .await
        .unwrap();
    assert!(!store.end("m1", "s2").await.unwrap(), "not m1's");
    assert!(store.is_active("s2").await.unwrap());
    assert!(store.end("m1", "s1").await.unwrap());
    assert!(!store.is_active("s1").await.unwrap());
    assert!(!store.end("m1", "s1").await.unwrap(), "already ended");
    assert_eq!(
        store
            .rotate("s1", "h1", "x", Utc::now(), TTL)
            .await
            .unwrap(),
        Refreshed::Unknown
    );
    assert!(store.sessions("m1").await.unwrap().is_empty());
}

async fn end_all_keeps_the_excepted_session(store: &dyn TokenStore) {
    for (id, minute) in [("s1", 1), ("s2", 2), ("s3", 3)] {
        store
            .create(&session(id, "m1", minute), id, TTL)
            .await
            .unwrap();
    }
    store
        .create(&session("t1", "m2", 4), "t1", TTL)
        .await
        .unwrap();
    let mut ended = store.end_all("m1", Some("s2")).await.unwrap();
    ended.sort();
    assert_eq!(ended, vec!["s1", "s3"]);
    let left: Vec<String> = store
        .sessions("m1")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, vec!["s2"]);
    assert_eq!(store.end_all("m1", None).await.unwrap(), vec!["s2"]);
    assert!(store.sessions("m1").await.unwrap().is_empty());
    assert!(
        store.is_active("t1").await.unwrap(),
        "another member's session stays"
    );
}
