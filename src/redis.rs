//! The shared Redis connection and key naming: one connection manager per process, used by
//! sessions and rate limits today and by stock, carts and idempotency records next.
//!
//! Every key starts with the configured prefix (`REDIS_KEY_PREFIX`), so several shops or test
//! runs share one Redis without colliding. Keys that one Lua script must touch together carry
//! the same hash tag (`{...}`), so that on Redis Cluster they live in one slot.

use std::time::Duration;

use anyhow::Context;
use redis::aio::ConnectionManager;

/// How long a command may wait for its answer unless `REDIS_RESPONSE_TIMEOUT_MS` says
/// otherwise. The client's own default (500 ms) is shorter than a queue of commands takes to
/// drain on a busy two-core host at a drop's first second, and each such timeout is a
/// refused request.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to the Redis at `url`, with the default response timeout; the manager
/// reconnects by itself afterwards.
pub async fn connect(url: &str) -> anyhow::Result<ConnectionManager> {
    connect_with(url, DEFAULT_RESPONSE_TIMEOUT).await
}

/// A connection to the Redis at `url` whose commands fail after `response_timeout` without
/// an answer (a command that timed out may still have run).
pub async fn connect_with(
    url: &str,
    response_timeout: Duration,
) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
    let config =
        redis::aio::ConnectionManagerConfig::new().set_response_timeout(Some(response_timeout));
    ConnectionManager::new_with_config(client, config)
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

/// The Redis settings as read (`REDIS_URL`, `REDIS_KEY_PREFIX`, `REDIS_RESPONSE_TIMEOUT_MS`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct RawSettings {
    pub(crate) redis_url: Option<String>,
    pub(crate) redis_key_prefix: String,
    pub(crate) redis_response_timeout_ms: u64,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_key_prefix: "openrun:".into(),
            redis_response_timeout_ms: u64::try_from(DEFAULT_RESPONSE_TIMEOUT.as_millis())
                .unwrap_or(2000),
        }
    }
}

/// Redis, for sessions, refresh tokens, rate limits and the hot stock (in-process without
/// it).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The URL (may hold a password); in-process stores when `None`.
    pub url: Option<secrecy::SecretString>,
    /// Prefix of every key.
    pub key_prefix: String,
    /// How long a command waits for its answer.
    pub response_timeout: Duration,
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
        if !(1..=60_000).contains(&self.redis_response_timeout_ms) {
            return Err(crate::config::ConfigError::new(
                "REDIS_RESPONSE_TIMEOUT_MS",
                "expected 1 to 60000 milliseconds",
            ));
        }
        Ok(RedisSettings {
            url: self.redis_url.map(Into::into),
            key_prefix: self.redis_key_prefix,
            response_timeout: Duration::from_millis(self.redis_response_timeout_ms),
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
