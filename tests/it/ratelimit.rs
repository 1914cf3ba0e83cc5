//! The rate limiter's contract, in this process (governor) and in Redis (shared by every
//! process): the same GCRA, the same answers.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use openrun::auth::ratelimit::RateLimits;
use openrun::auth::ratelimit::{LimitError, Limiter};
use openrun::clock::ManualClock;

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
        resends_per_member_per_hour: n(2),
        phone_changes_per_member_per_hour: n(1),
        orders_per_member_per_minute: n(2),
        orders_per_address_per_minute: n(100),
    }
}

fn refused(outcome: Result<(), LimitError>) -> Duration {
    match outcome {
        Err(LimitError::TooMany(t)) => t.retry_after,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// How time passes for a limiter: a manual clock moved by the test in this process; on
/// Redis, whose own clock decides (every process must agree), only by waiting it out.
enum Time {
    Manual(ManualClock),
    Redis,
}

impl Time {
    async fn pass(&self, by: Duration) {
        match self {
            Self::Manual(clock) => clock.advance(chrono::Duration::from_std(by).unwrap()),
            // Not synchronisation: the behaviour under test is Redis's clock moving on.
            Self::Redis => tokio::time::sleep(by).await,
        }
    }
}

async fn the_contract(limiter: &Limiter, time: &Time) {
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let b: IpAddr = "192.0.2.2".parse().unwrap();
    let c: IpAddr = "192.0.2.3".parse().unwrap();
    let d: IpAddr = "192.0.2.4".parse().unwrap();
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
    time.pass(wait).await;
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
    limiter.resend("m1", a).await.unwrap();
    refused(limiter.resend("m2", a).await);
    limiter.resend("m3", b).await.unwrap();
    // Per member, whatever the address.
    limiter.resend("m1", c).await.unwrap();
    refused(limiter.resend("m1", d).await);
    // A phone change costs a sign-up from the address, and is limited per member.
    refused(limiter.phone_change("m4", a).await);
    limiter.phone_change("m5", c).await.unwrap();
    refused(limiter.phone_change("m5", d).await);
    the_failure_budget_counts_attempts_and_takes_back_successes(limiter).await;
    the_failure_budget_renews_after_its_window(limiter, time).await;
}

#[tokio::test]
async fn in_process() {
    let clock = ManualClock::new(chrono::Utc::now());
    let limiter = Limiter::new(&limits(), Arc::new(clock.clone()));
    the_contract(&limiter, &Time::Manual(clock)).await;
}

#[tokio::test]
async fn in_redis() {
    let prefix = format!("{}:", random_name("openrun_test_"));
    let limiter = Limiter::shared(&limits(), REDIS_URL, &prefix)
        .await
        .unwrap();
    the_contract(&limiter, &Time::Redis).await;
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

async fn the_failure_budget_counts_attempts_and_takes_back_successes(limiter: &Limiter) {
    let window = Duration::from_secs(3600);
    for _ in 0..3 {
        assert_eq!(
            limiter.count_attempt("alice1", 3, window).await.unwrap(),
            Ok(())
        );
    }
    let refused = limiter.count_attempt("alice1", 3, window).await.unwrap();
    let left = refused.expect_err("the fourth attempt is over the budget");
    assert!(
        left > Duration::from_secs(3500) && left <= window,
        "{left:?}"
    );
    // Another account has its own budget.
    assert_eq!(
        limiter.count_attempt("bob22", 3, window).await.unwrap(),
        Ok(())
    );
    // A success gives its attempt back: one more may be tried, then none.
    limiter.forgive_attempt("alice1").await.unwrap();
    assert_eq!(
        limiter.count_attempt("alice1", 3, window).await.unwrap(),
        Ok(())
    );
    assert!(
        limiter
            .count_attempt("alice1", 3, window)
            .await
            .unwrap()
            .is_err()
    );
    // Taking back from an account with nothing counted changes nothing.
    limiter.forgive_attempt("carol3").await.unwrap();
    limiter.forgive_attempt("carol3").await.unwrap();
    assert_eq!(
        limiter.count_attempt("carol3", 1, window).await.unwrap(),
        Ok(())
    );
    assert!(
        limiter
            .count_attempt("carol3", 1, window)
            .await
            .unwrap()
            .is_err()
    );
}

async fn the_failure_budget_renews_after_its_window(limiter: &Limiter, time: &Time) {
    let window = Duration::from_secs(2);
    assert_eq!(
        limiter.count_attempt("dave44", 1, window).await.unwrap(),
        Ok(())
    );
    let left = limiter.count_attempt("dave44", 1, window).await.unwrap();
    let left = left.expect_err("within the window the budget is spent");
    time.pass(left).await;
    assert_eq!(
        limiter.count_attempt("dave44", 1, window).await.unwrap(),
        Ok(())
    );
}

/// Every process on one Redis shares an account's budget: 10 guesses spread over two
/// limiters (two processes) in parallel get exactly the budget of 4 through.
#[tokio::test]
async fn processes_sharing_redis_share_the_failure_budget() {
    let prefix = format!("{}:", random_name("openrun_test_"));
    let one = Limiter::shared(&limits(), REDIS_URL, &prefix)
        .await
        .unwrap();
    let two = Limiter::shared(&limits(), REDIS_URL, &prefix)
        .await
        .unwrap();
    let window = Duration::from_secs(3600);
    let guesses = (0..10).map(|i| {
        let limiter = if i % 2 == 0 { &one } else { &two };
        limiter.count_attempt("shared5", 4, window)
    });
    let outcomes = futures_util::future::join_all(guesses).await;
    let counted = outcomes.iter().filter(|o| matches!(o, Ok(Ok(())))).count();
    let refused = outcomes.iter().filter(|o| matches!(o, Ok(Err(_)))).count();
    assert_eq!((counted, refused), (4, 6), "{outcomes:?}");
    delete_redis_keys(&prefix).await;
}
