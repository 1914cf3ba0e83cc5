//! Device sessions and their refresh tokens, behind the [`TokenStore`] trait: Redis when
//! `REDIS_URL` is set (shared by every process), otherwise in this process's memory (the
//! embedded default; sessions end when the process restarts). One conformance suite
//! (`tests/it/tokenstore.rs`) runs against both.
//!
//! A refresh token is `{session_id}.{secret}`; only the SHA-256 of the current one is stored.
//! Rotation replaces it and remembers the old hash: presenting a rotated token again is reuse,
//! and ends the whole session (the thief and the owner both lose it, and the owner logs in
//! again).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

/// One device session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session id.
    pub id: String,
    /// Its member.
    pub member_id: String,
    /// The device name given at login.
    pub device: String,
    /// When the member logged in.
    pub created_at: DateTime<Utc>,
    /// When a refresh token of the session was last used.
    pub last_used_at: DateTime<Utc>,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// It was the current token: it is replaced by the new one.
    Rotated(Session),
    /// It was an already-rotated token: the session is ended.
    Reused {
        /// The member whose session ended.
        member_id: String,
    },
    /// No live session knows it.
    Unknown,
}

/// Sessions and refresh tokens.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Records a new session whose current refresh token hashes to `refresh_hash`; it lives
    /// `ttl` from its last use.
    async fn create(
        &self,
        session: &Session,
        refresh_hash: &str,
        ttl: Duration,
    ) -> anyhow::Result<()>;

    /// Presents the token hashing to `presented` for session `session_id`; when current,
    /// replaces it by `next` and extends the session.
    async fn rotate(
        &self,
        session_id: &str,
        presented: &str,
        next: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> anyhow::Result<Refreshed>;

    /// Whether the session is live.
    async fn is_active(&self, session_id: &str) -> anyhow::Result<bool>;

    /// The live session `session_id`, whoever it belongs to.
    async fn session(&self, session_id: &str) -> anyhow::Result<Option<Session>>;

    /// The member's live sessions, oldest first.
    async fn sessions(&self, member_id: &str) -> anyhow::Result<Vec<Session>>;

    /// Ends one of the member's sessions; false when the member has no such session.
    async fn end(&self, member_id: &str, session_id: &str) -> anyhow::Result<bool>;

    /// Ends every session of the member but `except`; returns the ended ids.
    async fn end_all(&self, member_id: &str, except: Option<&str>) -> anyhow::Result<Vec<String>>;

    /// Counts one password attempt against `account`'s budget of `max` failures per `window`
    /// (a fixed window from the first counted attempt). When the budget is spent nothing is
    /// counted and the answer is how long until the window ends. An attempt is counted before
    /// its password is checked, so parallel guesses cannot slip past the budget;
    /// [`TokenStore::forgive_attempt`] takes back one that succeeded.
    async fn count_attempt(
        &self,
        account: &str,
        max: u32,
        window: Duration,
    ) -> anyhow::Result<Result<(), Duration>>;

    /// Takes back one attempt counted for `account` (it succeeded).
    async fn forgive_attempt(&self, account: &str) -> anyhow::Result<()>;

    /// Whether the store answers (readiness).
    async fn ping(&self) -> anyhow::Result<()>;
}

struct Entry {
    session: Session,
    current: String,
    rotated: HashSet<String>,
    expires: Instant,
}

/// The in-process store.
#[derive(Default)]
pub struct MemoryTokenStore {
    sessions: Mutex<HashMap<String, Entry>>,
    attempts: Mutex<Attempts>,
}

/// Password attempts per account in the current window.
#[derive(Default)]
struct Attempts {
    map: HashMap<String, (Instant, Duration, u32)>,
    swept: Option<Instant>,
}

/// At most this many accounts have their attempts counted at once in process memory (about
/// 10 MB). Under a flood of distinct login ids the older half is forgotten, rather than
/// letting the map grow without bound or leaving new accounts uncounted.
const MAX_COUNTED_ACCOUNTS: usize = 100_000;

impl MemoryTokenStore {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> anyhow::Result<T> {
        let mut map = self
            .sessions
            .lock()
            .map_err(|_| anyhow::anyhow!("the session map was poisoned"))?;
        let now = Instant::now();
        map.retain(|_, e| e.expires > now);
        Ok(f(&mut map))
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn create(&self, session: &Session, hash: &str, ttl: Duration) -> anyhow::Result<()> {
        self.with(|map| {
            map.insert(
                session.id.clone(),
                Entry {
                    session: session.clone(),
                    current: hash.into(),
                    rotated: HashSet::new(),
                    expires: Instant::now() + ttl,
                },
            );
        })
    }

    async fn rotate(
        &self,
        session_id: &str,
        presented: &str,
        next: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> anyhow::Result<Refreshed> {
        self.with(|map| {
            let Some(entry) = map.get_mut(session_id) else {
                return Refreshed::Unknown;
            };
            if entry.current == presented {
                let old = std::mem::replace(&mut entry.current, next.into());
                entry.rotated.insert(old);
                entry.session.last_used_at = now;
                entry.expires = Instant::now() + ttl;
                Refreshed::Rotated(entry.session.clone())
            } else if entry.rotated.contains(presented) {
                let member_id = entry.session.member_id.clone();
                map.remove(session_id);
                Refreshed::Reused { member_id }
            } else {
                Refreshed::Unknown
            }
        })
    }

    async fn is_active(&self, session_id: &str) -> anyhow::Result<bool> {
        self.with(|map| map.contains_key(session_id))
    }

    async fn session(&self, session_id: &str) -> anyhow::Result<Option<Session>> {
        self.with(|map| map.get(session_id).map(|e| e.session.clone()))
    }

    async fn sessions(&self, member_id: &str) -> anyhow::Result<Vec<Session>> {
        self.with(|map| {
            let mut list: Vec<Session> = map
                .values()
                .filter(|e| e.session.member_id == member_id)
                .map(|e| e.session.clone())
                .collect();
            list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            list
        })
    }

    async fn end(&self, member_id: &str, session_id: &str) -> anyhow::Result<bool> {
        self.with(|map| {
            let owned = map
                .get(session_id)
                .is_some_and(|e| e.session.member_id == member_id);
            if owned {
                map.remove(session_id);
            }
            owned
        })
    }

    async fn end_all(&self, member_id: &str, except: Option<&str>) -> anyhow::Result<Vec<String>> {
        self.with(|map| {
            let ended: Vec<String> = map
                .values()
                .filter(|e| {
                    e.session.member_id == member_id && Some(e.session.id.as_str()) != except
                })
                .map(|e| e.session.id.clone())
                .collect();
            for id in &ended {
                map.remove(id);
            }
            ended
        })
    }

    async fn count_attempt(
        &self,
        account: &str,
        max: u32,
        window: Duration,
    ) -> anyhow::Result<Result<(), Duration>> {
        let mut attempts = self
            .attempts
            .lock()
            .map_err(|_| anyhow::anyhow!("the attempt map was poisoned"))?;
        let now = Instant::now();
        if !attempts.map.contains_key(account) && attempts.map.len() >= MAX_COUNTED_ACCOUNTS {
            if attempts
                .swept
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60))
            {
                attempts
                    .map
                    .retain(|_, (start, window, _)| start.elapsed() < *window);
                attempts.swept = Some(now);
            }
            if attempts.map.len() >= MAX_COUNTED_ACCOUNTS {
                // Still full (a flood of distinct login ids): forget the older half, so that
                // every account keeps being counted, each for a shorter memory.
                let mut starts: Vec<Instant> = attempts.map.values().map(|e| e.0).collect();
                let middle = starts.len() / 2;
                let (_, cut, _) = starts.select_nth_unstable(middle);
                let cut = *cut;
                attempts.map.retain(|_, (start, _, _)| *start > cut);
            }
        }
        let entry = attempts
            .map
            .entry(account.to_owned())
            .or_insert((now, window, 0));
        if entry.0.elapsed() >= entry.1 {
            *entry = (now, window, 0);
        }
        if entry.2 >= max {
            return Ok(Err(entry.1.saturating_sub(entry.0.elapsed())));
        }
        entry.2 += 1;
        Ok(Ok(()))
    }

    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn forgive_attempt(&self, account: &str) -> anyhow::Result<()> {
        let mut attempts = self
            .attempts
            .lock()
            .map_err(|_| anyhow::anyhow!("the attempt map was poisoned"))?;
        if let Some(entry) = attempts.map.get_mut(account) {
            entry.2 = entry.2.saturating_sub(1);
        }
        Ok(())
    }
}

/// The Redis store. Keys (under the configured prefix): `session:{id}` a hash (member_id,
/// device, created_at, last_used_at, refresh = current hash), `rotated:{id}` the set of
/// rotated hashes, `member:{id}:sessions` the set of a member's session ids. Every key
/// expires with the session's idle lifetime.
pub struct RedisTokenStore {
    conn: ConnectionManager,
    prefix: String,
    rotate: redis::Script,
    attempt: redis::Script,
    forgive: redis::Script,
}

/// Atomically: count an attempt unless the budget (ARGV[1]) is spent; the window (ARGV[2],
/// milliseconds) starts with the first attempt. Returns -1 when counted, else the
/// milliseconds left in the window.
const ATTEMPT_LUA: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    left = tonumber(ARGV[2])
  end
  return left
end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return -1
";

/// Atomically: take back one counted attempt, if any.
const FORGIVE_LUA: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
return 0
";

/// Atomically: rotate when the presented hash is current, end the session when it was
/// rotated before, else nothing.
const ROTATE_LUA: &str = r"
local session, rotated, members_prefix = KEYS[1], KEYS[2], ARGV[6]
if redis.call('EXISTS', session) == 0 then return {'unknown'} end
local current = redis.call('HGET', session, 'refresh')
local member = redis.call('HGET', session, 'member_id')
if current == ARGV[1] then
  redis.call('HSET', session, 'refresh', ARGV[2], 'last_used_at', ARGV[3])
  redis.call('SADD', rotated, ARGV[1])
  redis.call('EXPIRE', session, ARGV[4])
  redis.call('EXPIRE', rotated, ARGV[4])
  redis.call('EXPIRE', members_prefix .. member .. ':sessions', ARGV[4])
  return {'rotated', member, redis.call('HGET', session, 'device'),
          redis.call('HGET', session, 'created_at')}
end
if redis.call('SISMEMBER', rotated, ARGV[1]) == 1 then
  redis.call('DEL', session, rotated)
  redis.call('SREM', members_prefix .. member .. ':sessions', ARGV[5])
  return {'reused', member}
end
return {'unknown'}
";

impl RedisTokenStore {
    /// Connects (the connection manager reconnects by itself afterwards).
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
        let conn = ConnectionManager::new(client)
            .await
            .context("cannot connect to Redis (REDIS_URL)")?;
        Ok(Self {
            conn,
            prefix: prefix.into(),
            rotate: redis::Script::new(ROTATE_LUA),
            attempt: redis::Script::new(ATTEMPT_LUA),
            forgive: redis::Script::new(FORGIVE_LUA),
        })
    }

    fn session_key(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }

    fn rotated_key(&self, id: &str) -> String {
        format!("{}rotated:{id}", self.prefix)
    }

    fn attempts_key(&self, account: &str) -> String {
        format!("{}attempts:{account}", self.prefix)
    }

    fn member_key(&self, member_id: &str) -> String {
        format!("{}member:{member_id}:sessions", self.prefix)
    }

    async fn load(&self, id: &str) -> anyhow::Result<Option<Session>> {
        let fields: HashMap<String, String> =
            self.conn.clone().hgetall(self.session_key(id)).await?;
        let time = |k: &str| -> Option<DateTime<Utc>> {
            DateTime::parse_from_rfc3339(fields.get(k)?)
                .ok()
                .map(Into::into)
        };
        Ok(
            match (
                fields.get("member_id"),
                fields.get("device"),
                time("created_at"),
                time("last_used_at"),
            ) {
                (Some(member_id), Some(device), Some(created_at), Some(last_used_at)) => {
                    Some(Session {
                        id: id.into(),
                        member_id: member_id.clone(),
                        device: device.clone(),
                        created_at,
                        last_used_at,
                    })
                }
                _ => None,
            },
        )
    }

    async fn delete(&self, member_id: &str, ids: &[String]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.del(self.session_key(id)).ignore();
            pipe.del(self.rotated_key(id)).ignore();
            pipe.srem(self.member_key(member_id), id).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }
}

fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX)
}

#[async_trait]
impl TokenStore for RedisTokenStore {
    async fn create(&self, session: &Session, hash: &str, ttl: Duration) -> anyhow::Result<()> {
        let key = self.session_key(&session.id);
        let members = self.member_key(&session.member_id);
        redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    ("member_id", session.member_id.clone()),
                    ("device", session.device.clone()),
                    ("created_at", session.created_at.to_rfc3339()),
                    ("last_used_at", session.last_used_at.to_rfc3339()),
                    ("refresh", hash.to_owned()),
                ],
            )
            .ignore()
            .expire(&key, ttl_secs(ttl))
            .ignore()
            .sadd(&members, &session.id)
            .ignore()
            .expire(&members, ttl_secs(ttl))
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn rotate(
        &self,
        session_id: &str,
        presented: &str,
        next: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> anyhow::Result<Refreshed> {
        let reply: Vec<String> = self
            .rotate
            .key(self.session_key(session_id))
            .key(self.rotated_key(session_id))
            .arg(presented)
            .arg(next)
            .arg(now.to_rfc3339())
            .arg(ttl_secs(ttl))
            .arg(session_id)
            .arg(format!("{}member:", self.prefix))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match reply.as_slice() {
            [status, member_id, device, created_at] if status == "rotated" => {
                Refreshed::Rotated(Session {
                    id: session_id.into(),
                    member_id: member_id.clone(),
                    device: device.clone(),
                    created_at: DateTime::parse_from_rfc3339(created_at)?.into(),
                    last_used_at: now,
                })
            }
            [status, member_id] if status == "reused" => Refreshed::Reused {
                member_id: member_id.clone(),
            },
            _ => Refreshed::Unknown,
        })
    }

    async fn is_active(&self, session_id: &str) -> anyhow::Result<bool> {
        Ok(self
            .conn
            .clone()
            .exists(self.session_key(session_id))
            .await?)
    }

    async fn session(&self, session_id: &str) -> anyhow::Result<Option<Session>> {
        self.load(session_id).await
    }

    async fn sessions(&self, member_id: &str) -> anyhow::Result<Vec<Session>> {
        let ids: Vec<String> = self
            .conn
            .clone()
            .smembers(self.member_key(member_id))
            .await?;
        let mut list = Vec::new();
        let mut gone = Vec::new();
        for id in ids {
            match self.load(&id).await? {
                Some(s) if s.member_id == member_id => list.push(s),
                _ => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let _: () = self
                .conn
                .clone()
                .srem(self.member_key(member_id), gone)
                .await?;
        }
        list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(list)
    }

    async fn end(&self, member_id: &str, session_id: &str) -> anyhow::Result<bool> {
        let owner: Option<String> = self
            .conn
            .clone()
            .hget(self.session_key(session_id), "member_id")
            .await?;
        if owner.as_deref() != Some(member_id) {
            return Ok(false);
        }
        self.delete(member_id, &[session_id.to_owned()]).await?;
        Ok(true)
    }

    async fn end_all(&self, member_id: &str, except: Option<&str>) -> anyhow::Result<Vec<String>> {
        let ids: Vec<String> = self
            .conn
            .clone()
            .smembers(self.member_key(member_id))
            .await?;
        let ended: Vec<String> = ids
            .into_iter()
            .filter(|id| Some(id.as_str()) != except)
            .collect();
        self.delete(member_id, &ended).await?;
        Ok(ended)
    }

    async fn count_attempt(
        &self,
        account: &str,
        max: u32,
        window: Duration,
    ) -> anyhow::Result<Result<(), Duration>> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let left: i64 = self
            .attempt
            .key(self.attempts_key(account))
            .arg(max)
            .arg(window_ms)
            .invoke_async(&mut self.conn.clone())
            .await
            .context("counting a password attempt")?;
        Ok(match u64::try_from(left) {
            Ok(ms) => Err(Duration::from_millis(ms)),
            Err(_) => Ok(()),
        })
    }

    async fn forgive_attempt(&self, account: &str) -> anyhow::Result<()> {
        let _: i64 = self
            .forgive
            .key(self.attempts_key(account))
            .invoke_async(&mut self.conn.clone())
            .await
            .context("taking back a password attempt")?;
        Ok(())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .context("Redis does not answer")?;
        Ok(())
    }
}
