//! Rate limits (DESIGN.md section 7): governor's keyed GCRA limiters for attempts per account
//! and per client address, plus a fixed hourly window of failed logins per account (governor
//! cannot count only failures without also spending on successes, hence the small counter
//! written here).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    failures: Mutex<HashMap<String, (Instant, u32)>>,
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
            failures: Mutex::new(HashMap::new()),
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

    /// Whether `account` is locked by too many failed logins this hour.
    pub fn locked(&self, account: &str) -> Result<(), TooMany> {
        let failures = self.failures.lock().map_err(|_| TooMany {
            retry_after: Duration::from_secs(1),
        })?;
        match failures.get(&account.to_ascii_lowercase()) {
            Some((start, n)) if *n >= self.max_failures.get() && start.elapsed() < HOUR => {
                Err(TooMany {
                    retry_after: HOUR.saturating_sub(start.elapsed()),
                })
            }
            _ => Ok(()),
        }
    }

    /// A login attempt for `account` from `address`.
    pub fn login(&self, account: &str, address: IpAddr) -> Result<(), TooMany> {
        self.sweep();
        check(&self.login_address, &address)?;
        check(&self.login_account, &account.to_ascii_lowercase())?;
        self.locked(account)
    }

    /// A failed login (or password check) for `account`.
    pub fn login_failed(&self, account: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            if failures.len() > 100_000 {
                failures.retain(|_, (start, _)| start.elapsed() < HOUR);
            }
            let entry = failures
                .entry(account.to_ascii_lowercase())
                .or_insert((Instant::now(), 0));
            if entry.0.elapsed() >= HOUR {
                *entry = (Instant::now(), 0);
            }
            entry.1 += 1;
        }
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
