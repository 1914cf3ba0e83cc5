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
    failures: Mutex<Failures>,
    max_failures: NonZeroU32,
    checks: AtomicU64,
}

/// Failed logins per normalised login id in the current hour.
#[derive(Default)]
struct Failures {
    map: HashMap<String, (Instant, u32)>,
    swept: Option<Instant>,
}

/// At most this many login ids have their failures counted at once (about 10 MB).
const MAX_TRACKED: usize = 100_000;

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
            failures: Mutex::new(Failures::default()),
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
    /// the id given is not even well-formed: such attempts share one per-account budget and
    /// are not counted as failures, since no account can have that id). On success the
    /// attempt is counted as a failure straight away, before the password is checked, so
    /// that parallel guesses cannot slip past the hourly cap; [`Limiter::succeeded`] takes it
    /// back.
    pub fn login(&self, account: Option<&str>, address: IpAddr) -> Result<(), TooMany> {
        self.sweep();
        check(&self.login_address, &address)?;
        check(&self.login_account, &account.unwrap_or("").to_owned())?;
        match account {
            Some(account) => self.attempt(account),
            None => Ok(()),
        }
    }

    /// A password check for a signed-in member (a password change): the same per-account
    /// budget and hourly failure cap as a login, so a stolen access token is no way to guess
    /// the password.
    pub fn password_check(&self, account: &str) -> Result<(), TooMany> {
        self.sweep();
        check(&self.login_account, &account.to_owned())?;
        self.attempt(account)
    }

    /// Refuses when `account` has used up its failures this hour; otherwise counts one.
    fn attempt(&self, account: &str) -> Result<(), TooMany> {
        let mut failures = self.failures.lock().map_err(|_| TooMany {
            retry_after: Duration::from_secs(1),
        })?;
        let now = Instant::now();
        if !failures.map.contains_key(account) && failures.map.len() >= MAX_TRACKED {
            if failures
                .swept
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60))
            {
                failures.map.retain(|_, (start, _)| start.elapsed() < HOUR);
                failures.swept = Some(now);
            }
            if failures.map.len() >= MAX_TRACKED {
                // Under a flood of distinct login ids: new ones go uncounted (the per-account
                // per-minute limit still holds) rather than letting the map grow unbounded.
                return Ok(());
            }
        }
        let entry = failures.map.entry(account.to_owned()).or_insert((now, 0));
        if entry.0.elapsed() >= HOUR {
            *entry = (now, 0);
        }
        if entry.1 >= self.max_failures.get() {
            return Err(TooMany {
                retry_after: HOUR.saturating_sub(entry.0.elapsed()),
            });
        }
        entry.1 += 1;
        Ok(())
    }

    /// The attempt counted by [`Limiter::login`] or [`Limiter::password_check`] succeeded:
    /// it is not a failure after all.
    pub fn succeeded(&self, account: &str) {
        if let Ok(mut failures) = self.failures.lock()
            && let Some(entry) = failures.map.get_mut(account)
        {
            entry.1 = entry.1.saturating_sub(1);
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
