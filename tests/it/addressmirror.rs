//! The address mirror's contract, on Redis and in process: a sealed copy is served until a
//! change of its address begins, and no copy read before a change lands after it.

use openrun::members::mirror::{AddressMirror, LocalAddressMirror, Mirrored, RedisAddressMirror};

use crate::helpers::{REDIS_URL, delete_redis_keys, random_name};

struct Fixture {
    mirror: Box<dyn AddressMirror>,
    prefix: Option<String>,
}

impl Fixture {
    fn local() -> Self {
        Self {
            mirror: Box::new(LocalAddressMirror::default()),
            prefix: None,
        }
    }

    async fn redis() -> Self {
        let prefix = format!("{}:", random_name("openrun_test_"));
        let conn = openrun::redis::connect(REDIS_URL).await.unwrap();
        Self {
            mirror: Box::new(RedisAddressMirror::new(conn, &prefix)),
            prefix: Some(prefix),
        }
    }

    async fn cleanup(self) {
        if let Some(prefix) = self.prefix {
            delete_redis_keys(&prefix).await;
        }
    }
}

macro_rules! on_both_mirrors {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $name() {
                    let f = super::Fixture::local();
                    super::$name(f.mirror.as_ref()).await;
                    f.cleanup().await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let f = super::Fixture::redis().await;
                    super::$name(f.mirror.as_ref()).await;
                    f.cleanup().await;
                }
            )*
        }
    };
}

on_both_mirrors!(
    a_filled_copy_is_served_until_its_address_changes,
    a_copy_read_before_a_change_never_lands_after_it,
    overlapping_changes_keep_readers_off_until_the_last_ends,
);

const MEMBER: &str = "m1";
const ADDRESS: &str = "a1";

async fn ticket(mirror: &dyn AddressMirror) -> u64 {
    match mirror.get(MEMBER, ADDRESS).await.unwrap() {
        Mirrored::Missing { ticket } | Mirrored::Sealed { ticket, .. } => ticket,
        Mirrored::Changing => panic!("a change is under way"),
    }
}

async fn served(mirror: &dyn AddressMirror) -> Option<String> {
    match mirror.get(MEMBER, ADDRESS).await.unwrap() {
        Mirrored::Sealed { sealed, .. } => Some(sealed),
        _ => None,
    }
}

async fn a_filled_copy_is_served_until_its_address_changes(mirror: &dyn AddressMirror) {
    assert_eq!(served(mirror).await, None);
    let t = ticket(mirror).await;
    mirror.fill(MEMBER, ADDRESS, t, "k1:old").await.unwrap();
    assert_eq!(served(mirror).await.as_deref(), Some("k1:old"));
    assert!(
        matches!(
            mirror.get(MEMBER, "another").await.unwrap(),
            Mirrored::Missing { .. }
        ),
        "one address's copy is not another's"
    );
    mirror.begin_change(MEMBER, ADDRESS).await.unwrap();
    assert_eq!(
        mirror.get(MEMBER, ADDRESS).await.unwrap(),
        Mirrored::Changing
    );
    mirror.end_change(MEMBER, ADDRESS).await.unwrap();
    assert_eq!(served(mirror).await, None, "the old copy is gone");
    let t = ticket(mirror).await;
    mirror.fill(MEMBER, ADDRESS, t, "k1:new").await.unwrap();
    assert_eq!(served(mirror).await.as_deref(), Some("k1:new"));
}

async fn a_copy_read_before_a_change_never_lands_after_it(mirror: &dyn AddressMirror) {
    // A reader takes its ticket and reads the database; the address changes meanwhile.
    let before = ticket(mirror).await;
    mirror.begin_change(MEMBER, ADDRESS).await.unwrap();
    mirror
        .fill(MEMBER, ADDRESS, before, "k1:old")
        .await
        .unwrap();
    assert_eq!(
        mirror.get(MEMBER, ADDRESS).await.unwrap(),
        Mirrored::Changing
    );
    mirror.end_change(MEMBER, ADDRESS).await.unwrap();
    mirror
        .fill(MEMBER, ADDRESS, before, "k1:old")
        .await
        .unwrap();
    assert_eq!(served(mirror).await, None, "a copy from before the change");
    // A ticket taken while it was changing is refused too.
    mirror.begin_change(MEMBER, ADDRESS).await.unwrap();
    assert_eq!(
        mirror.get(MEMBER, ADDRESS).await.unwrap(),
        Mirrored::Changing
    );
    mirror.end_change(MEMBER, ADDRESS).await.unwrap();
    let after = ticket(mirror).await;
    mirror.fill(MEMBER, ADDRESS, after, "k1:new").await.unwrap();
    assert_eq!(served(mirror).await.as_deref(), Some("k1:new"));
}

async fn overlapping_changes_keep_readers_off_until_the_last_ends(mirror: &dyn AddressMirror) {
    let t = ticket(mirror).await;
    mirror.fill(MEMBER, ADDRESS, t, "k1:old").await.unwrap();
    mirror.begin_change(MEMBER, ADDRESS).await.unwrap();
    mirror.begin_change(MEMBER, ADDRESS).await.unwrap();
    mirror.end_change(MEMBER, ADDRESS).await.unwrap();
    assert_eq!(
        mirror.get(MEMBER, ADDRESS).await.unwrap(),
        Mirrored::Changing
    );
    mirror.end_change(MEMBER, ADDRESS).await.unwrap();
    // An end without a beginning (after an expiry) changes nothing.
    mirror.end_change(MEMBER, ADDRESS).await.unwrap();
    let t = ticket(mirror).await;
    mirror.fill(MEMBER, ADDRESS, t, "k1:new").await.unwrap();
    assert_eq!(served(mirror).await.as_deref(), Some("k1:new"));
}
