//! The rate limiter's contract, in this process (governor) and in Redis (shared by every
//! process): the same GCRA, the same answers.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use openrun::auth::ratelimit::{LimitError, Limiter};
use openrun::config::RateLimits;

use crate::helpers::{REDIS_URL, delete_redis_keys, random_name};

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

/// Logins: 120 per address per minute (one every half second), 3 per account.
fn limits() -> RateLimits {
    RateLimits {
        login_per_account_per_minute: n(3),
        login_per_address_per_minute: n(120),
        failed_logins_per_account_per_hour: n(100),
        signups_per_address_per_hour: n(2),
        resends_per_address_per_hour: n(1),
    }
}

fn refused(outcome: Result<(), LimitError>) -> Duration {
    match outcome {
        Err(LimitError::TooMany(t)) => t.retry_after,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn the_contract(limiter: &Limiter) {
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let b: IpAddr = "192.0.2.2".parse().unwrap();
    // A burst of the quota passes (on a slow machine a few more may refill meanwhile), then
    // attempts are refused for at most one interval (half a second).
    let mut passed = 0;
    let wait = loop {
        match limiter.login(Some(&format!("user{passed}")), a).await {
            Ok(()) => passed += 1,
            Err(LimitError::TooMany(t)) => break t.retry_after,
            Err(e) => panic!("{e}"),
        }
        assert!(passed <= 1000, "never refused");
    };
    assert!(passed >= 120, "{passed}");
    assert!(wait <= Duration::from_millis(500), "{wait:?}");
    // A refused attempt costs nothing: after the wait it says, the next one passes.
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    limiter.login(Some("carol3"), a).await.unwrap();
    // Another address has its own budget; an account has its own too (3 a minute).
    for _ in 0..3 {
        limiter.login(Some("alice1"), b).await.unwrap();
    }
    let wait = refused(limiter.login(Some("alice1"), b).await);
    assert!(
        wait > Duration::from_secs(10) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    refused(limiter.password_check("alice1").await);
    limiter.password_check("bob22").await.unwrap();
    // Hourly limits.
    limiter.sign_up(a).await.unwrap();
    limiter.sign_up(a).await.unwrap();
    let wait = refused(limiter.sign_up(a).await);
    assert!(
        wait > Duration::from_secs(1700) && wait <= Duration::from_secs(1800),
        "{wait:?}"
    );
    limiter.resend(a).await.unwrap();
    refused(limiter.resend(a).await);
    limiter.resend(b).await.unwrap();
}

#[tokio::test]
async fn in_process() {
    the_contract(&Limiter::new(&limits())).await;
}

#[tokio::test]
async fn in_redis() {
    let prefix = format!("{}:", random_name("openrun_test_"));
    let limiter = Limiter::shared(&limits(), REDIS_URL, &prefix)
        .await
        .unwrap();
    the_contract(&limiter).await;
    delete_redis_keys(&prefix).await;
}

/// Two processes on one Redis share one budget: 10 parallel attempts on an account allowed
/// 3 per minute let exactly 3 through.
#[tokio::test]
async fn processes_sharing_redis_share_the_limits() {
    let prefix = format!("{}:", random_name("openrun_test_"));
    let one = Limiter::shared(&limits(), REDIS_URL, &prefix)
        .await
        .unwrap();
    let two = Limiter::shared(&limits(), REDIS_URL, &prefix)
        .await
        .unwrap();
    let attempts = (0..10).map(|i| {
        let limiter = if i % 2 == 0 { &one } else { &two };
        limiter.password_check("shared5")
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let passed = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(passed, 3, "{outcomes:?}");
    delete_redis_keys(&prefix).await;
}
