//! The address mirror: each member's shipping addresses, sealed for an order's history, kept
//! where the order path reads them without a database query (Redis, or this process for the
//! embedded default), and never served once the address changed.
//!
//! # Why it cannot serve a changed address
//! Only the database is written by an address change; the mirror is filled by readers. A
//! change of an existing address is bracketed by [`AddressMirror::begin_change`] (before its
//! transaction: the entry's sealed copy goes, its generation moves on and it is marked
//! pending) and [`AddressMirror::end_change`] (after it, committed or not). A reader that
//! finds no sealed copy reads the database and offers what it read back with the ticket it
//! was given ([`AddressMirror::fill`]): the fill is taken only when no change is pending and
//! none began since the ticket, so a value read before a change can never land after it. A
//! change whose end never came (a crash) leaves the entry pending, and readers go to the
//! database, until the entry expires ([`PENDING_TTL`]).
//!
//! A new address needs no bracket: nothing can hold a stale copy of an id never seen. A
//! deleted one is bracketed like a change; its entry is then never filled again, as the
//! database no longer finds it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use crate::redis::Keys;

/// How long a Redis entry left pending by a change that never ended keeps readers on the
/// database.
pub const PENDING_TTL: Duration = Duration::from_secs(3600);
/// How long a filled Redis entry lives before it is dropped (and filled again): also how
/// long a copy can outlive a change whose bracket Redis lost (a failover to a replica that
/// had not seen it).
pub const FILLED_TTL: Duration = Duration::from_secs(3600);
/// Entries the in-process mirror keeps (an evicted one is read from the database again).
const LOCAL_CAPACITY: u64 = 200_000;

/// What the mirror holds for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirrored {
    /// The sealed copy, current (under the data key it names; one sealed under an older key
    /// is read from the database again and offered back with the ticket).
    Sealed {
        /// The sealed copy.
        sealed: String,
        /// As [`Mirrored::Missing`]'s.
        ticket: u64,
    },
    /// Nothing usable: read the database, then offer what was read with this ticket.
    Missing {
        /// Proves no change began since it was given.
        ticket: u64,
    },
    /// A change is under way: read the database and keep nothing.
    Changing,
}

/// The mirror of sealed shipping addresses.
#[async_trait]
pub trait AddressMirror: Send + Sync + 'static {
    /// The sealed copy of `member`'s address `address`, if it is there and current.
    async fn get(&self, member: &str, address: &str) -> anyhow::Result<Mirrored>;

    /// Offers a sealed copy read from the database after [`Self::get`] gave `ticket`; taken
    /// only when no change began since.
    async fn fill(
        &self,
        member: &str,
        address: &str,
        ticket: u64,
        sealed: &str,
    ) -> anyhow::Result<()>;

    /// Before a change (or the deletion) of an existing address: drops the sealed copy and
    /// keeps readers on the database until [`Self::end_change`]. A change must not go on
    /// when this fails.
    async fn begin_change(&self, member: &str, address: &str) -> anyhow::Result<()>;

    /// After the change committed, or was refused. A change whose outcome is unknown (its
    /// commit's answer was lost) is left pending: it may still be committing.
    async fn end_change(&self, member: &str, address: &str) -> anyhow::Result<()>;
}

/// The mirror in Redis: one hash per address, `{prefix}addr:{member}:{address}` =
/// {pending, gen, sealed}.
pub struct RedisAddressMirror {
    conn: ConnectionManager,
    keys: Keys,
    begin: redis::Script,
    end: redis::Script,
    fill: redis::Script,
}

const BEGIN_LUA: &str = "redis.call('HINCRBY', KEYS[1], 'pending', 1) \
    redis.call('HINCRBY', KEYS[1], 'gen', 1) \
    redis.call('HDEL', KEYS[1], 'sealed') \
    redis.call('EXPIRE', KEYS[1], ARGV[1]) \
    return 1";
const END_LUA: &str = "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
    if redis.call('HINCRBY', KEYS[1], 'pending', -1) < 0 then \
      redis.call('HSET', KEYS[1], 'pending', 0) end \
    return 1";
const FILL_LUA: &str = "local e = redis.call('HMGET', KEYS[1], 'pending', 'gen') \
    if tonumber(e[1] or '0') > 0 or tonumber(e[2] or '0') ~= tonumber(ARGV[1]) then return 0 end \
    redis.call('HSET', KEYS[1], 'sealed', ARGV[2], 'gen', ARGV[1]) \
    redis.call('EXPIRE', KEYS[1], ARGV[3]) \
    return 1";

impl RedisAddressMirror {
    /// The mirror on an open connection, keys under `prefix`.
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            keys: Keys::new(prefix),
            begin: redis::Script::new(BEGIN_LUA),
            end: redis::Script::new(END_LUA),
            fill: redis::Script::new(FILL_LUA),
        }
    }

    fn key(&self, member: &str, address: &str) -> String {
        self.keys.key(&format!("addr:{member}:{address}"))
    }
}

#[async_trait]
impl AddressMirror for RedisAddressMirror {
    async fn get(&self, member: &str, address: &str) -> anyhow::Result<Mirrored> {
        let (pending, generation, sealed): (Option<i64>, Option<u64>, Option<String>) =
            redis::cmd("HMGET")
                .arg(self.key(member, address))
                .arg("pending")
                .arg("gen")
                .arg("sealed")
                .query_async(&mut self.conn.clone())
                .await?;
        Ok(match (pending.unwrap_or(0) > 0, sealed) {
            (true, _) => Mirrored::Changing,
            (false, Some(sealed)) => Mirrored::Sealed {
                sealed,
                ticket: generation.unwrap_or(0),
            },
            (false, None) => Mirrored::Missing {
                ticket: generation.unwrap_or(0),
            },
        })
    }

    async fn fill(
        &self,
        member: &str,
        address: &str,
        ticket: u64,
        sealed: &str,
    ) -> anyhow::Result<()> {
        let _: i64 = self
            .fill
            .key(self.key(member, address))
            .arg(ticket)
            .arg(sealed)
            .arg(FILLED_TTL.as_secs())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn begin_change(&self, member: &str, address: &str) -> anyhow::Result<()> {
        let _: i64 = self
            .begin
            .key(self.key(member, address))
            .arg(PENDING_TTL.as_secs())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn end_change(&self, member: &str, address: &str) -> anyhow::Result<()> {
        let _: i64 = self
            .end
            .key(self.key(member, address))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

/// The mirror in this process (the embedded default): sealed copies in a bounded cache, the
/// changes under way beside it, and one generation for every change.
pub struct LocalAddressMirror {
    sealed: moka::sync::Cache<(String, String), String>,
    changing: Mutex<HashMap<(String, String), u32>>,
    generation: AtomicU64,
}

impl Default for LocalAddressMirror {
    fn default() -> Self {
        Self {
            sealed: moka::sync::Cache::new(LOCAL_CAPACITY),
            changing: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }
}

impl LocalAddressMirror {
    fn changing(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), u32>> {
        self.changing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn entry(member: &str, address: &str) -> (String, String) {
    (member.to_owned(), address.to_owned())
}

#[async_trait]
impl AddressMirror for LocalAddressMirror {
    async fn get(&self, member: &str, address: &str) -> anyhow::Result<Mirrored> {
        let key = entry(member, address);
        // The ticket is read before the look-up: a change that begins after it moves the
        // generation, so the fill that follows is refused.
        let ticket = self.generation.load(Ordering::SeqCst);
        if self.changing().contains_key(&key) {
            return Ok(Mirrored::Changing);
        }
        Ok(match self.sealed.get(&key) {
            Some(sealed) => Mirrored::Sealed { sealed, ticket },
            None => Mirrored::Missing { ticket },
        })
    }

    async fn fill(
        &self,
        member: &str,
        address: &str,
        ticket: u64,
        sealed: &str,
    ) -> anyhow::Result<()> {
        let key = entry(member, address);
        // Under the lock that changes take, so no change begins between the check and the
        // insert.
        let changing = self.changing();
        if changing.contains_key(&key) || self.generation.load(Ordering::SeqCst) != ticket {
            return Ok(());
        }
        self.sealed.insert(key, sealed.to_owned());
        drop(changing);
        Ok(())
    }

    async fn begin_change(&self, member: &str, address: &str) -> anyhow::Result<()> {
        let key = entry(member, address);
        let mut changing = self.changing();
        self.generation.fetch_add(1, Ordering::SeqCst);
        *changing.entry(key.clone()).or_default() += 1;
        self.sealed.invalidate(&key);
        Ok(())
    }

    async fn end_change(&self, member: &str, address: &str) -> anyhow::Result<()> {
        let key = entry(member, address);
        let mut changing = self.changing();
        if let Some(n) = changing.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                changing.remove(&key);
            }
        }
        Ok(())
    }
}
