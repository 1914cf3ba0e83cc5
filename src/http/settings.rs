//! The HTTP edge's settings: where it listens, which proxies it trusts to name the client, and
//! how it treats slow, idle and too many clients.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, secs};

/// As read (`LISTEN_ADDR`, `TRUSTED_PROXIES`, `HTTP_*`).
#[derive(Serialize, Deserialize)]
pub(crate) struct RawSettings {
    pub(crate) listen_addr: String,
    pub(crate) trusted_proxies: String,
    pub(crate) http_header_timeout_secs: u64,
    pub(crate) http_request_timeout_secs: u64,
    pub(crate) http_max_concurrent_requests: usize,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            listen_addr: "127.0.0.1:8080".into(),
            trusted_proxies: String::new(),
            http_header_timeout_secs: 10,
            http_request_timeout_secs: 30,
            http_max_concurrent_requests: 10_000,
        }
    }
}

/// The HTTP edge's settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Where the HTTP server listens.
    pub listen_addr: SocketAddr,
    /// Reverse proxies whose `X-Forwarded-For` header names the client (for per-address
    /// limits); empty: the TCP peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Timeouts and the bound on concurrent requests.
    pub limits: HttpLimits,
}

/// How the HTTP server treats slow, idle and too many clients.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A connection that has not sent a whole request head within this long (a new one, or
    /// an idle kept-alive one) is closed.
    pub header_timeout: Duration,
    /// A body not received within this long gets 408, a safe request not answered within it
    /// 503; also how long a shutdown waits for in-flight requests.
    pub request_timeout: Duration,
    /// Requests served at once; more are refused at once with 503 and `Retry-After`.
    pub max_concurrent_requests: usize,
}

impl RawSettings {
    pub(crate) fn validate(self) -> Result<HttpSettings, ConfigError> {
        let listen_addr = self.listen_addr.parse().map_err(|_| {
            ConfigError::new(
                "LISTEN_ADDR",
                format!(
                    "expected host:port such as 127.0.0.1:8080, got {:?}",
                    self.listen_addr
                ),
            )
        })?;
        let trusted_proxies = parse_networks(&self.trusted_proxies).ok_or_else(|| {
            ConfigError::new(
                "TRUSTED_PROXIES",
                format!(
                    "expected comma-separated addresses or networks such as \
                     10.0.0.0/8,192.0.2.7, got {:?}",
                    self.trusted_proxies
                ),
            )
        })?;
        if self.http_max_concurrent_requests == 0 {
            return Err(ConfigError::new(
                "HTTP_MAX_CONCURRENT_REQUESTS",
                "must be at least 1",
            ));
        }
        Ok(HttpSettings {
            listen_addr,
            trusted_proxies,
            limits: HttpLimits {
                header_timeout: secs(
                    "HTTP_HEADER_TIMEOUT_SECS",
                    self.http_header_timeout_secs,
                    false,
                )?,
                request_timeout: secs(
                    "HTTP_REQUEST_TIMEOUT_SECS",
                    self.http_request_timeout_secs,
                    false,
                )?,
                max_concurrent_requests: self.http_max_concurrent_requests,
            },
        })
    }
}

/// Comma-separated addresses (`192.0.2.7`) or networks (`10.0.0.0/8`); `None` when one is
/// neither.
fn parse_networks(list: &str) -> Option<Vec<ipnet::IpNet>> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>().ok().or_else(|| {
                item.parse::<std::net::IpAddr>()
                    .ok()
                    .map(ipnet::IpNet::from)
            })
        })
        .collect()
}
