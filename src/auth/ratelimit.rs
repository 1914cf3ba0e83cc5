//! Rate limits: attempts per account and per client address, by GCRA, in this process
//! (governor's keyed limiters) or, when `REDIS_URL` is set, in Redis, shared by every
//! process. The hourly budget of failed logins per account ([`Limiter::count_attempt`]) is
//! kept in the same place, shared the same way. In this process time is the injected
//! [`crate::clock::Clock`]; in Redis it is Redis's own clock, which every process shares.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use governor::clock::Clock as _;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use redis::aio::ConnectionManager;

use crate::clock::SharedClock;

/// Rate limits (`LOGIN_PER_*`, `*_PER_HOUR`).
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// Login attempts per login id per minute.
    pub login_per_account_per_minute: NonZeroU32,
    /// Login attempts per client address per minute.
    pub login_per_address_per_minute: NonZeroU32,
    /// Failed logins per login id per hour before the account is locked for the rest of it.
    pub failed_logins_per_account_per_hour: NonZeroU32,
    /// Sign-ups per client address per hour.
    pub signups_per_address_per_hour: NonZeroU32,
    /// Verification e-mail resends per client address per hour.
    pub resends_per_address_per_hour: NonZeroU32,
    /// Verification e-mail resends per member per hour.
    pub resends_per_member_per_hour: NonZeroU32,
    /// Phone number changes per member per hour (each one tells whether a number is taken).
    pub phone_changes_per_member_per_hour: NonZeroU32,
    /// Orders (attempts, answered or not) per member per minute.
    pub orders_per_member_per_minute: NonZeroU32,
    /// Orders per client address per minute (generous: a drop's buyers may share one
    /// carrier-grade NAT).
    pub orders_per_address_per_minute: NonZeroU32,
}

/// The injected clock as governor reads it: its monotonic [`Clock::elapsed`](crate::clock::Clock::elapsed).
#[derive(Clone)]
struct GovernorClock(SharedClock);

impl governor::clock::Clock for GovernorClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A keyed GCRA limiter on the injected clock.
type KeyedLimiter = RateLimiter<
    String,
    DefaultKeyedStateStore<String>,
    GovernorClock,
    governor::middleware::NoOpMiddleware<Duration>,
>;

/// Refused: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooMany {
    /// How long until an attempt can pass.
    pub retry_after: Duration,
}

const HOUR: Duration = Duration::from_secs(3600);

/// Why an attempt was not let through.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// Over the limit.
    #[error("too many attempts")]
    TooMany(TooMany),
    /// The shared store (Redis) failed.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<TooMany> for LimitError {
    fn from(t: TooMany) -> Self {
        Self::TooMany(t)
    }
}

/// One limit: at most `burst` attempts at once, one more every `window / burst` (GCRA, as
/// governor's quotas: `burst` per `window` on average, never more than `burst` in a row).
#[derive(Debug, Clone, Copy)]
struct Rate {
    name: &'static str,
    burst: NonZeroU32,
    window: Duration,
}

impl Rate {
    fn quota(&self) -> Quota {
        Quota::with_period(self.window / self.burst.get())
            .map(|q| q.allow_burst(self.burst))
            .unwrap_or_else(|| Quota::per_hour(self.burst))
    }
}

/// The rate limits: in this process (governor), or in Redis when `REDIS_URL` is set, where
/// every process shares them (the same GCRA, run by a Lua script on Redis's clock).
pub struct Limiter {
    rates: [Rate; RATES],
    backend: Backend,
    max_failures: NonZeroU32,
    checks: AtomicU64,
}

enum Backend {
    Local(Box<Local>),
    Redis {
        conn: ConnectionManager,
        prefix: String,
        gcra: redis::Script,
        attempt: redis::Script,
        forgive: redis::Script,
    },
}

/// The limits kept in this process.
struct Local {
    clock: GovernorClock,
    limiters: [KeyedLimiter; RATES],
    /// Password attempts per account in the current window: (start, window, count). An entry
    /// leaves when its window ends; past [`MAX_COUNTED_ACCOUNTS`] the least recently counted
    /// go, so a flood of distinct login ids cannot grow it without bound.
    attempts: moka::sync::Cache<String, Attempts>,
}

/// An account's attempts in its current window: (start on the injected clock, window, count).
type Attempts = (Duration, Duration, u32);

/// An attempt entry lives until its window ends (by the injected clock when it is written;
/// the count itself is judged on that clock, so this only frees memory).
struct WindowExpiry(GovernorClock);

impl moka::Expiry<String, Attempts> for WindowExpiry {
    fn expire_after_create(
        &self,
        _: &String,
        (start, window, _): &Attempts,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(window.saturating_sub(self.0.now().saturating_sub(*start)))
    }

    fn expire_after_update(
        &self,
        key: &String,
        value: &Attempts,
        now: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, now)
    }
}

/// At most this many accounts have their attempts counted at once in process memory (about
/// 10 MB). Under a flood of distinct login ids the least recently counted are forgotten (LRU:
/// every new account is admitted, so none is left uncounted), rather than letting the map
/// grow without bound.
const MAX_COUNTED_ACCOUNTS: usize = 100_000;

/// Atomically: count an attempt unless the budget (ARGV[1]) is spent; the window (ARGV[2],
/// milliseconds) starts with the first attempt. Returns -1 when counted, else the
/// milliseconds left in the window.
const ATTEMPT_LUA: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(ARGV[2])
  end
  -- PTTL rounds down (0 while under a millisecond is left): one more, so that whoever waits
  -- that long finds the window over.
  return math.min(left + 1, tonumber(ARGV[2]))
end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return -1
";

/// Atomically: take back one counted attempt, if any.
const FORGIVE_LUA: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
return 0
";

/// GCRA on Redis's clock: KEYS[1] holds the theoretical arrival time in microseconds;
/// ARGV[1] is the emission interval and ARGV[2] the window, both in microseconds. Returns -1
/// when the attempt is let through, else the microseconds to wait.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next = tat + interval
if next - now > window then return next - window - now end
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000))
return -1
";

const LOGIN_ACCOUNT: usize = 0;
const LOGIN_ADDRESS: usize = 1;
const SIGNUP_ADDRESS: usize = 2;
const RESEND_ADDRESS: usize = 3;
const RESEND_MEMBER: usize = 4;
const PHONE_MEMBER: usize = 5;
const ORDER_MEMBER: usize = 6;
const ORDER_ADDRESS: usize = 7;
const RATES: usize = 8;

/// Every this many checks, keys whose limits have fully replenished are forgotten.
const SWEEP_EVERY: u64 = 10_000;

impl Limiter {
    /// Limiters with the configured quotas, in this process, on `clock`.
    pub fn new(limits: &RateLimits, clock: SharedClock) -> Self {
        let rates = rates(limits);
        let clock = GovernorClock(clock);
        let local = Local {
            limiters: rates.map(|r| RateLimiter::new(r.quota(), Default::default(), clock.clone())),
            attempts: moka::sync::Cache::builder()
                .max_capacity(MAX_COUNTED_ACCOUNTS as u64)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .expire_after(WindowExpiry(clock.clone()))
                .build(),
            clock,
        };
        Self {
            rates,
            backend: Backend::Local(Box::new(local)),
            max_failures: limits.failed_logins_per_account_per_hour,
            checks: AtomicU64::new(0),
        }
    }

    /// Limiters with the configured quotas, in the Redis at `url` under `prefix`, shared by
    /// every process.
    pub async fn shared(limits: &RateLimits, url: &str, prefix: &str) -> anyhow::Result<Self> {
        Ok(Self::on_redis(
            limits,
            crate::redis::connect(url).await?,
            prefix,
        ))
    }

    /// The same on an open Redis connection (shared with the token store).
    pub fn on_redis(limits: &RateLimits, conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            rates: rates(limits),
            backend: Backend::Redis {
                conn,
                prefix: prefix.to_owned(),
                gcra: redis::Script::new(GCRA_LUA),
                attempt: redis::Script::new(ATTEMPT_LUA),
                forgive: redis::Script::new(FORGIVE_LUA),
            },
            max_failures: limits.failed_logins_per_account_per_hour,
            checks: AtomicU64::new(0),
        }
    }

    async fn check(&self, which: usize, key: &str) -> Result<(), LimitError> {
        let outcome = self.check_in_store(which, key).await;
        if let Err(LimitError::TooMany(_)) = &outcome {
            metrics::counter!("openrun_rate_limited_total", "limit" => self.rates[which].name)
                .increment(1);
        }
        outcome
    }

    async fn check_in_store(&self, which: usize, key: &str) -> Result<(), LimitError> {
        let rate = self.rates[which];
        match &self.backend {
            Backend::Local(local) => {
                let limiters = &local.limiters;
                if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
                    limiters.iter().for_each(|l| l.retain_recent());
                }
                limiters[which]
                    .check_key(&key.to_owned())
                    .map_err(|not_until| {
                        LimitError::TooMany(TooMany {
                            retry_after: not_until.wait_time_from(local.clock.now()),
                        })
                    })
            }
            Backend::Redis {
                conn, prefix, gcra, ..
            } => {
                let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
                let wait: i64 = gcra
                    .key(format!("{prefix}rate:{}:{key}", rate.name))
                    .arg(micros(rate.window / rate.burst.get()).max(1))
                    .arg(micros(rate.window))
                    .invoke_async(&mut conn.clone())
                    .await
                    .with_context(|| format!("checking the {} rate limit", rate.name))?;
                match u64::try_from(wait) {
                    Ok(us) => Err(LimitError::TooMany(TooMany {
                        retry_after: Duration::from_micros(us),
                    })),
                    Err(_) => Ok(()),
                }
            }
        }
    }

    /// A login attempt from `address` for `account`, the normalised login id (`None` when
    /// the id given is not even well-formed: such attempts share one per-account budget, as
    /// a body's arbitrary string must not become a key the limiter keeps).
    pub async fn login(&self, account: Option<&str>, address: IpAddr) -> Result<(), LimitError> {
        self.check(LOGIN_ADDRESS, &address.to_string()).await?;
        self.check(LOGIN_ACCOUNT, account.unwrap_or("")).await
    }

    /// A password check for a signed-in member (a password change): the same per-account
    /// budget as a login, so a stolen access token is no faster a way to guess the password.
    pub async fn password_check(&self, account: &str) -> Result<(), LimitError> {
        self.check(LOGIN_ACCOUNT, account).await
    }

    /// Failed password checks allowed per account per hour ([`Limiter::count_attempt`]).
    pub fn max_failures(&self) -> u32 {
        self.max_failures.get()
    }

    /// Counts one password attempt against `account`'s budget of `max` failures per `window`
    /// (a fixed window from the first counted attempt). When the budget is spent nothing is
    /// counted and the answer is how long until the window ends. An attempt is counted before
    /// its password is checked, so parallel guesses cannot slip past the budget;
    /// [`Limiter::forgive_attempt`] takes back one that succeeded.
    pub async fn count_attempt(
        &self,
        account: &str,
        max: u32,
        window: Duration,
    ) -> anyhow::Result<Result<(), Duration>> {
        match &self.backend {
            Backend::Local(local) => {
                let now = local.clock.now();
                let mut outcome = Ok(());
                // One entry is read and written atomically: parallel guesses are each counted.
                local
                    .attempts
                    .entry(account.to_owned())
                    .and_upsert_with(|entry| {
                        let (start, window, count) = match entry.map(|e| e.into_value()) {
                            Some((start, w, count)) if now.saturating_sub(start) < w => {
                                (start, w, count)
                            }
                            _ => (now, window, 0),
                        };
                        if count >= max {
                            outcome = Err(window.saturating_sub(now.saturating_sub(start)));
                            (start, window, count)
                        } else {
                            (start, window, count + 1)
                        }
                    });
                Ok(outcome)
            }
            Backend::Redis {
                conn,
                prefix,
                attempt,
                ..
            } => {
                let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
                let left: i64 = attempt
                    .key(format!("{prefix}attempts:{account}"))
                    .arg(max)
                    .arg(window_ms)
                    .invoke_async(&mut conn.clone())
                    .await
                    .context("counting a password attempt")?;
                Ok(match u64::try_from(left) {
                    Ok(ms) => Err(Duration::from_millis(ms)),
                    Err(_) => Ok(()),
                })
            }
        }
    }

    /// Takes back one attempt counted for `account` (it succeeded).
    pub async fn forgive_attempt(&self, account: &str) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Local(local) => {
                local
                    .attempts
                    .entry(account.to_owned())
                    .and_compute_with(|entry| match entry.map(|e| e.into_value()) {
                        Some((start, window, count)) => {
                            moka::ops::compute::Op::Put((start, window, count.saturating_sub(1)))
                        }
                        None => moka::ops::compute::Op::Nop,
                    });
                Ok(())
            }
            Backend::Redis {
                conn,
                prefix,
                forgive,
                ..
            } => {
                let _: i64 = forgive
                    .key(format!("{prefix}attempts:{account}"))
                    .invoke_async(&mut conn.clone())
                    .await
                    .context("taking back a password attempt")?;
                Ok(())
            }
        }
    }

    /// A sign-up from `address`.
    pub async fn sign_up(&self, address: IpAddr) -> Result<(), LimitError> {
        self.check(SIGNUP_ADDRESS, &address.to_string()).await
    }

    /// A verification e-mail resend for `member` from `address`: limited per address and per
    /// member, so many addresses cannot flood one inbox.
    pub async fn resend(&self, member: &str, address: IpAddr) -> Result<(), LimitError> {
        self.check(RESEND_ADDRESS, &address.to_string()).await?;
        self.check(RESEND_MEMBER, member).await
    }

    /// An order by `member` from `address`.
    pub async fn order(&self, member: &str, address: IpAddr) -> Result<(), LimitError> {
        // The address first: a member behind a throttled address spends none of their own.
        self.check(ORDER_ADDRESS, &address.to_string()).await?;
        self.check(ORDER_MEMBER, member).await
    }

    /// A change of `member`'s phone from `address`. The answer tells whether the number is
    /// registered to someone else, so it costs what a sign-up from that address costs, and is
    /// limited per member too.
    pub async fn phone_change(&self, member: &str, address: IpAddr) -> Result<(), LimitError> {
        self.check(SIGNUP_ADDRESS, &address.to_string()).await?;
        self.check(PHONE_MEMBER, member).await
    }
}

fn rates(limits: &RateLimits) -> [Rate; RATES] {
    const MINUTE: Duration = Duration::from_secs(60);
    let mut rates = [Rate {
        name: "",
        burst: NonZeroU32::MIN,
        window: MINUTE,
    }; RATES];
    rates[LOGIN_ACCOUNT] = Rate {
        name: "login_account",
        burst: limits.login_per_account_per_minute,
        window: MINUTE,
    };
    rates[LOGIN_ADDRESS] = Rate {
        name: "login_address",
        burst: limits.login_per_address_per_minute,
        window: MINUTE,
    };
    rates[SIGNUP_ADDRESS] = Rate {
        name: "signup_address",
        burst: limits.signups_per_address_per_hour,
        window: HOUR,
    };
    rates[RESEND_ADDRESS] = Rate {
        name: "resend_address",
        burst: limits.resends_per_address_per_hour,
        window: HOUR,
    };
    rates[RESEND_MEMBER] = Rate {
        name: "resend_member",
        burst: limits.resends_per_member_per_hour,
        window: HOUR,
    };
    rates[PHONE_MEMBER] = Rate {
        name: "phone_change_member",
        burst: limits.phone_changes_per_member_per_hour,
        window: HOUR,
    };
    rates[ORDER_MEMBER] = Rate {
        name: "order_member",
        burst: limits.orders_per_member_per_minute,
        window: MINUTE,
    };
    rates[ORDER_ADDRESS] = Rate {
        name: "order_address",
        burst: limits.orders_per_address_per_minute,
        window: MINUTE,
    };
    rates
}
