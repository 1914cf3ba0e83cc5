//! Configuration: one struct, read from environment variables and optionally a TOML file,
//! validated at start-up. Every error names the variable at fault; secrets never print.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `OPENRUN_CONFIG` | none | a TOML file with the keys below in lower case; variables win |
//! | `LISTEN_ADDR` | `127.0.0.1:8080` | where `serve` listens |
//! | `DATABASE_URL` | `sqlite://data/openrun.db` | `mysql://user:pass@host:port/db` or `sqlite://path` |
//! | `DATABASE_MAX_CONNECTIONS` | `32` | connection pool size |
//! | `DATABASE_CONNECT_TIMEOUT_SECS` | `5` | how long start-up waits for the database |
//! | `EVENT_BATCH_MAX` | `2000` | most events in one group commit |
//! | `EVENT_WRITERS` | `2` | group-commit writer tasks (SQLite always uses one) |
//! | `NIGHTLY_AT` | `04:00` | when the nightly jobs run, `HH:MM` in the server's time zone |
//! | `LOG_FORMAT` | `text` | `text` or `json` |
//! | `RUST_LOG` | `info` | log filter |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::db::ConnectOptions;
use crate::eventstore::group_commit::GroupCommitConfig;

/// The variable naming an optional TOML configuration file.
pub const CONFIG_FILE_VAR: &str = "OPENRUN_CONFIG";

const KEYS: &[&str] = &[
    "listen_addr",
    "database_url",
    "database_max_connections",
    "database_connect_timeout_secs",
    "event_batch_max",
    "event_writers",
    "nightly_at",
    "log_format",
];

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The raw settings as read, before validation.
#[derive(Debug, Serialize, Deserialize)]
struct Raw {
    listen_addr: String,
    database_url: String,
    database_max_connections: u32,
    database_connect_timeout_secs: u64,
    event_batch_max: usize,
    event_writers: usize,
    nightly_at: String,
    log_format: LogFormat,
}

impl Default for Raw {
    fn default() -> Self {
        Self {
            listen_addr: "127.0.0.1:8080".into(),
            database_url: "sqlite://data/openrun.db".into(),
            database_max_connections: 32,
            database_connect_timeout_secs: 5,
            event_batch_max: GroupCommitConfig::default().max_batch_events,
            event_writers: GroupCommitConfig::default().writers,
            nightly_at: "04:00".into(),
            log_format: LogFormat::Text,
        }
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the HTTP server listens.
    pub listen_addr: SocketAddr,
    /// The database URL; holds the password, so it is kept secret.
    pub database_url: SecretString,
    /// Parsed from `database_url`.
    pub database: ConnectOptions,
    /// Connection pool size.
    pub database_max_connections: u32,
    /// How long start-up waits for the database.
    pub database_connect_timeout: Duration,
    /// Group-commit tuning.
    pub group_commit: GroupCommitConfig,
    /// When the nightly jobs run, in the server's time zone.
    pub nightly_at: chrono::NaiveTime,
    /// Log output format.
    pub log_format: LogFormat,
}

/// A configuration error, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    /// Reads the process environment (and the file `OPENRUN_CONFIG` names, if any).
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Raw::default()));
        if let Some(file) = std::env::var_os(CONFIG_FILE_VAR) {
            let file = PathBuf::from(file);
            if !file.is_file() {
                return Err(ConfigError(format!(
                    "{CONFIG_FILE_VAR}: no such file: {}",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        let raw: Raw = figment
            .merge(Env::raw().only(KEYS))
            .extract()
            .map_err(|e| ConfigError(describe(e)))?;
        Self::validate(raw)
    }

    /// The defaults with another database, listening on an ephemeral loopback port: for tests
    /// and tools that start the application in-process.
    pub fn local(database_url: &str) -> Result<Self, ConfigError> {
        Self::validate(Raw {
            listen_addr: "127.0.0.1:0".into(),
            database_url: database_url.into(),
            ..Raw::default()
        })
    }

    fn validate(raw: Raw) -> Result<Self, ConfigError> {
        let listen_addr = raw.listen_addr.parse().map_err(|_| {
            ConfigError(format!(
                "LISTEN_ADDR: expected host:port such as 127.0.0.1:8080, got {:?}",
                raw.listen_addr
            ))
        })?;
        let database = ConnectOptions::parse(&raw.database_url)
            .map_err(|e| ConfigError(format!("DATABASE_URL: {e}")))?;
        if raw.database_max_connections == 0 {
            return Err(ConfigError(
                "DATABASE_MAX_CONNECTIONS: must be at least 1".into(),
            ));
        }
        if raw.event_batch_max == 0 || raw.event_writers == 0 {
            return Err(ConfigError(
                "EVENT_BATCH_MAX and EVENT_WRITERS: must be at least 1".into(),
            ));
        }
        let nightly_at =
            chrono::NaiveTime::parse_from_str(&raw.nightly_at, "%H:%M").map_err(|_| {
                ConfigError(format!(
                    "NIGHTLY_AT: expected HH:MM such as 04:00, got {:?}",
                    raw.nightly_at
                ))
            })?;
        Ok(Self {
            nightly_at,
            listen_addr,
            database_url: raw.database_url.into(),
            database,
            database_max_connections: raw.database_max_connections,
            database_connect_timeout: Duration::from_secs(raw.database_connect_timeout_secs),
            group_commit: GroupCommitConfig {
                max_batch_events: raw.event_batch_max,
                writers: raw.event_writers,
                ..GroupCommitConfig::default()
            },
            log_format: raw.log_format,
        })
    }

    /// The database URL with its password hidden, for messages.
    pub fn database_url_redacted(&self) -> String {
        crate::db::redact(self.database_url.expose_secret())
    }
}

/// figment's messages name the key in lower case; we name the variable. Values of
/// `database_url` are never repeated, as they may hold a password.
fn describe(e: figment::Error) -> String {
    let key = e.path.first().map(|k| k.to_ascii_uppercase());
    let reason = match e.kind {
        figment::error::Kind::InvalidType(..) | figment::error::Kind::InvalidValue(..)
            if key.as_deref() == Some("DATABASE_URL") =>
        {
            "invalid value".to_string()
        }
        kind => kind.to_string(),
    };
    match key {
        Some(key) => format!("{key}: {reason}"),
        None => reason,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn raw(f: impl FnOnce(&mut Raw)) -> Raw {
        let mut raw = Raw::default();
        f(&mut raw);
        raw
    }

    #[test]
    fn defaults_are_the_embedded_shop() {
        let config = Config::validate(Raw::default()).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8080");
        assert!(matches!(config.database, ConnectOptions::Sqlite(_)));
    }

    #[test]
    fn errors_name_the_variable() {
        let e = Config::validate(raw(|r| r.database_url = "mysq://x".into())).unwrap_err();
        assert!(e.to_string().starts_with("DATABASE_URL:"), "{e}");
        let e = Config::validate(raw(|r| r.listen_addr = "nowhere".into())).unwrap_err();
        assert!(e.to_string().starts_with("LISTEN_ADDR:"), "{e}");
        let e = Config::validate(raw(|r| r.nightly_at = "25:00".into())).unwrap_err();
        assert!(e.to_string().starts_with("NIGHTLY_AT:"), "{e}");
        let e = Config::validate(raw(|r| r.database_max_connections = 0)).unwrap_err();
        assert!(
            e.to_string().starts_with("DATABASE_MAX_CONNECTIONS:"),
            "{e}"
        );
    }

    #[test]
    fn the_database_url_never_prints() {
        let config = Config::validate(raw(|r| {
            r.database_url = "mysql://shop:hunter2secret@localhost/db".into();
        }))
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter2secret"));
        assert!(!config.database_url_redacted().contains("hunter2secret"));
    }
}
