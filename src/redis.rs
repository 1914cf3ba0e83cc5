//! The shared Redis connection and key naming: one connection manager per process, used by
//! sessions and rate limits today and by stock, carts and idempotency records next.
//!
//! Every key starts with the configured prefix (`REDIS_KEY_PREFIX`), so several shops or test
//! runs share one Redis without colliding. Keys that one Lua script must touch together carry
//! the same hash tag (`{...}`), so that on Redis Cluster they live in one slot.

use anyhow::Context;
use redis::aio::ConnectionManager;

/// A connection to the Redis at `url`; the manager reconnects by itself afterwards.
pub async fn connect(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
    ConnectionManager::new(client)
        .await
        .context("cannot connect to Redis (REDIS_URL)")
}

/// Names keys under the configured prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (for example `openrun:`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix itself (for scripts that build keys from it).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}{name}`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `{prefix}{{tag}}:{name}`: every key with the same `tag` hashes to one Redis Cluster
    /// slot, so a script may touch them together.
    pub fn tagged(&self, tag: &str, name: &str) -> String {
        format!("{}{{{tag}}}:{name}", self.prefix)
    }
}

/// The Redis settings as read (`REDIS_URL`, `REDIS_KEY_PREFIX`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct RawSettings {
    pub(crate) redis_url: Option<String>,
    pub(crate) redis_key_prefix: String,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_key_prefix: "openrun:".into(),
        }
    }
}

/// Redis, for sessions, refresh tokens and rate limits (in-process without it).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The URL (may hold a password); in-process stores when `None`.
    pub url: Option<secrecy::SecretString>,
    /// Prefix of every key.
    pub key_prefix: String,
}

impl RawSettings {
    pub(crate) fn validate(self) -> Result<RedisSettings, crate::config::ConfigError> {
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(crate::config::ConfigError::new(
                "REDIS_URL",
                "expected redis://host:port or rediss://...",
            ));
        }
        Ok(RedisSettings {
            url: self.redis_url.map(Into::into),
            key_prefix: self.redis_key_prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn keys_carry_the_prefix_and_tagged_keys_share_a_hash_tag() {
        let keys = Keys::new("shop:");
        assert_eq!(keys.key("rate:login:alice"), "shop:rate:login:alice");
        assert_eq!(keys.tagged("p1", "stock"), "shop:{p1}:stock");
        assert_eq!(keys.tagged("p1", "holds"), "shop:{p1}:holds");
    }
}
