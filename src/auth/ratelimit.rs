//! Rate limits (DESIGN.md section 7): governor's keyed GCRA limiters for attempts per account
//! and per client address, in this process. The hourly budget of failed logins per account
//! is counted by the token store instead ([`super::tokens::TokenStore::count_attempt`]), so
//! that it is shared by every process using the same Redis.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::RateLimits;

/// Refused: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooMany {
    /// How long until an attempt can pass.
    pub retry_after: Duration,
}

const HOUR: Duration = Duration::from_secs(3600);

/// The limiters of one process.
pub struct Limiter {
    login_account: DefaultKeyedRateLimiter<String>,
    login_address: DefaultKeyedRateLimiter<IpAddr>,
    signup_address: DefaultKeyedRateLimiter<IpAddr>,
    resend_address: DefaultKeyedRateLimiter<IpAddr>,
    max_failures: NonZeroU32,
    checks: AtomicU64,
}

/// Every this many checks, keys whose limits have fully replenished are forgotten.
const SWEEP_EVERY: u64 = 10_000;

fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), TooMany> {
    limiter.check_key(key).map_err(|not_until| TooMany {
        retry_after: not_until.wait_time_from(DefaultClock::default().now()),
    })
}

impl Limiter {
    /// Limiters with the configured quotas.
    pub fn new(limits: &RateLimits) -> Self {
        let per_hour = |n: NonZeroU32| {
            Quota::with_period(HOUR / n.get())
                .map(|q| q.allow_burst(n))
                .unwrap_or_else(|| Quota::per_hour(n))
        };
        Self {
            login_account: DefaultKeyedRateLimiter::keyed(Quota::per_minute(
                limits.login_per_account_per_minute,
            )),
            login_address: DefaultKeyedRateLimiter::keyed(Quota::per_minute(
                limits.login_per_address_per_minute,
            )),
            signup_address: DefaultKeyedRateLimiter::keyed(per_hour(
                limits.signups_per_address_per_hour,
            )),
            resend_address: DefaultKeyedRateLimiter::keyed(per_hour(
                limits.resends_per_address_per_hour,
            )),
            max_failures: limits.failed_logins_per_account_per_hour,
            checks: AtomicU64::new(0),
        }
    }

    fn sweep(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.login_account.retain_recent();
            self.login_address.retain_recent();
            self.signup_address.retain_recent();
            self.resend_address.retain_recent();
        }
    }

    /// A login attempt from `address` for `account`, the normalised login id (`None` when
    /// the id given is not even well-formed: such attempts share one per-account budget, as
    /// a body's arbitrary string must not become a key the limiter keeps).
    pub fn login(&self, account: Option<&str>, address: IpAddr) -> Result<(), TooMany> {
        self.sweep();
        check(&self.login_address, &address)?;
        check(&self.login_account, &account.unwrap_or("").to_owned())
    }

    /// A password check for a signed-in member (a password change): the same per-account
    /// budget as a login, so a stolen access token is no faster a way to guess the password.
    pub fn password_check(&self, account: &str) -> Result<(), TooMany> {
        self.sweep();
        check(&self.login_account, &account.to_owned())
    }

    /// Failed password checks allowed per account per hour (counted by the token store, so
    /// that every process sharing it shares the budget).
    pub fn max_failures(&self) -> u32 {
        self.max_failures.get()
    }

    /// A sign-up from `address`.
    pub fn sign_up(&self, address: IpAddr) -> Result<(), TooMany> {
        self.sweep();
        check(&self.signup_address, &address)
    }

    /// A verification e-mail resend from `address`.
    pub fn resend(&self, address: IpAddr) -> Result<(), TooMany> {
        self.sweep();
        check(&self.resend_address, &address)
    }
}
