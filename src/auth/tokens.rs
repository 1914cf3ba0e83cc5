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
}

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

    async fn ping(&self) -> anyhow::Result<()> {
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
}

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
        Ok(Self::new(crate::redis::connect(url).await?, prefix))
    }

    /// The store on an open connection (shared with the rate limits).
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
            rotate: redis::Script::new(ROTATE_LUA),
        }
    }

    fn session_key(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }

    fn rotated_key(&self, id: &str) -> String {
        format!("{}rotated:{id}", self.prefix)
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

    async fn ping(&self) -> anyhow::Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .context("Redis does not answer")?;
        Ok(())
    }
}
