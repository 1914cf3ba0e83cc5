//! Configuration: one struct, read from environment variables and optionally a TOML file,
//! validated at start-up. Every error names the variable at fault; secrets never print.
//!
//! Every variable, its default and its meaning are in the README's configuration table; a
//! test checks that the table and the accepted keys agree.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::{Deserialize, Serialize};

use crate::crypto::keyfile::KeyFile;
use crate::crypto::{self, DataKey, KeyRing};
use crate::db::ConnectOptions;
use crate::eventstore::group_commit::GroupCommitConfig;

/// The variable naming an optional TOML configuration file.
pub const CONFIG_FILE_VAR: &str = "OPENRUN_CONFIG";

/// The accepted keys: the fields of [`Raw`], read off its serialised defaults, so no key is
/// written twice.
fn keys() -> Vec<String> {
    match serde_json::to_value(Raw::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The raw settings as read, before validation. It holds secrets in the clear, so it has no
/// `Debug`.
#[derive(Serialize, Deserialize)]
struct Raw {
    listen_addr: String,
    database_url: String,
    database_max_connections: u32,
    database_connect_timeout_secs: u64,
    event_batch_max: usize,
    event_writers: usize,
    nightly_at: String,
    log_format: LogFormat,
    public_base_url: String,
    redis_url: Option<String>,
    redis_key_prefix: String,
    smtp_url: Option<String>,
    mail_from: String,
    mail_outbox_dir: PathBuf,
    jwt_secret: Option<String>,
    openrun_data_keys: Option<String>,
    openrun_blind_index_key: Option<String>,
    openrun_keys_file: PathBuf,
    verification_ttl_secs: u64,
    access_token_ttl_secs: u64,
    refresh_token_ttl_secs: u64,
    login_per_account_per_minute: u32,
    login_per_address_per_minute: u32,
    failed_logins_per_account_per_hour: u32,
    signups_per_address_per_hour: u32,
    resends_per_address_per_hour: u32,
    resends_per_member_per_hour: u32,
    phone_changes_per_member_per_hour: u32,
    trusted_proxies: String,
    http_header_timeout_secs: u64,
    http_request_timeout_secs: u64,
    http_max_concurrent_requests: usize,
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
            public_base_url: "http://127.0.0.1:8080".into(),
            redis_url: None,
            redis_key_prefix: "openrun:".into(),
            smtp_url: None,
            mail_from: "openrun <no-reply@localhost>".into(),
            mail_outbox_dir: "data/outbox".into(),
            jwt_secret: None,
            openrun_data_keys: None,
            openrun_blind_index_key: None,
            openrun_keys_file: "data/keys.toml".into(),
            verification_ttl_secs: 24 * 3600,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            login_per_account_per_minute: 10,
            login_per_address_per_minute: 30,
            failed_logins_per_account_per_hour: 100,
            signups_per_address_per_hour: 20,
            resends_per_address_per_hour: 5,
            resends_per_member_per_hour: 3,
            phone_changes_per_member_per_hour: 5,
            trusted_proxies: String::new(),
            http_header_timeout_secs: 10,
            http_request_timeout_secs: 30,
            http_max_concurrent_requests: 10_000,
        }
    }
}

/// Where the secrets came from: `openrun keys rotate` adds a key to the file, but cannot
/// change variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `JWT_SECRET`, `OPENRUN_DATA_KEYS` and `OPENRUN_BLIND_INDEX_KEY` (all set).
    Environment,
    /// The generated key file (some or all of the secrets).
    File(PathBuf),
    /// Generated in memory for this process only (tests).
    Ephemeral,
}

/// The secrets of members and sessions. `Debug` shows none of them.
#[derive(Clone)]
pub struct Secrets {
    /// HS256 key of access tokens.
    pub jwt_secret: SecretSlice<u8>,
    /// The data keys (first is current) and the blind-index key.
    pub keys: KeyRing,
    /// Where they came from.
    pub source: KeySource,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({:?}, {:?})", self.keys, self.source)
    }
}

/// E-mail delivery.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// SMTP server URL (may hold a password); `.eml` files in `outbox_dir` when unset.
    pub smtp_url: Option<SecretString>,
    /// The `From:` of every message.
    pub from: lettre::message::Mailbox,
    /// Where `.eml` files are written without SMTP.
    pub outbox_dir: PathBuf,
}

/// Rate limits.
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
    /// The public base URL of the service, for links in e-mails.
    pub public_base_url: url::Url,
    /// Redis for sessions, refresh tokens and rate limits; in-process when `None`.
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key.
    pub redis_key_prefix: String,
    /// E-mail delivery.
    pub mail: MailConfig,
    /// Signing and encryption keys.
    pub secrets: Secrets,
    /// Lifetime of an e-mail verification link.
    pub verification_ttl: Duration,
    /// Lifetime of an access token.
    pub access_token_ttl: Duration,
    /// Idle lifetime of a device session (each refresh extends it).
    pub refresh_token_ttl: Duration,
    /// Rate limits.
    pub rate_limits: RateLimits,
    /// Reverse proxies whose `X-Forwarded-For` header names the client (for per-address
    /// limits); empty: the TCP peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Timeouts and the bound on concurrent requests.
    pub http: HttpLimits,
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
            .merge(Env::raw().only(&keys().iter().map(String::as_str).collect::<Vec<_>>()))
            .extract()
            .map_err(|e| ConfigError(describe(e)))?;
        let secrets = resolve_secrets(&raw)?;
        Self::validate(raw, secrets)
    }

    /// The defaults with another database, listening on an ephemeral loopback port: for tests
    /// and tools that start the application in-process.
    /// Its secrets are random and live in memory only.
    pub fn local(database_url: &str) -> Result<Self, ConfigError> {
        Self::validate(
            Raw {
                listen_addr: "127.0.0.1:0".into(),
                database_url: database_url.into(),
                ..Raw::default()
            },
            Secrets {
                jwt_secret: crypto::random_bytes(crypto::KEY_LEN).into(),
                keys: KeyRing::generate(),
                source: KeySource::Ephemeral,
            },
        )
    }

    fn validate(raw: Raw, secrets: Secrets) -> Result<Self, ConfigError> {
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
        let public_base_url = url::Url::parse(raw.public_base_url.trim_end_matches('/'))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ConfigError(
                    "PUBLIC_BASE_URL: expected an http(s) URL such as https://shop.example".into(),
                )
            })?;
        if let Some(url) = &raw.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError(
                "REDIS_URL: expected redis://host:port or rediss://...".into(),
            ));
        }
        if let Some(url) = &raw.smtp_url {
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url).map_err(|_| {
                ConfigError(
                    "SMTP_URL: expected smtp://user:pass@host:port[?tls=required] or smtps://..."
                        .into(),
                )
            })?;
        }
        let from = raw.mail_from.parse().map_err(|_| {
            ConfigError(
                "MAIL_FROM: expected an address such as Shop <no-reply@shop.example>".into(),
            )
        })?;
        let secs = |var: &str, value: u64, zero_ok: bool| {
            if value == 0 && !zero_ok {
                Err(ConfigError(format!("{var}: must be at least 1")))
            } else {
                Ok(Duration::from_secs(value))
            }
        };
        let rate = |var: &str, value: u32| {
            NonZeroU32::new(value).ok_or_else(|| ConfigError(format!("{var}: must be at least 1")))
        };
        let trusted_proxies = parse_networks(&raw.trusted_proxies).ok_or_else(|| {
            ConfigError(format!(
                "TRUSTED_PROXIES: expected comma-separated addresses or networks such as \
                 10.0.0.0/8,192.0.2.7, got {:?}",
                raw.trusted_proxies
            ))
        })?;
        Ok(Self {
            trusted_proxies,
            nightly_at,
            public_base_url,
            redis_url: raw.redis_url.map(Into::into),
            redis_key_prefix: raw.redis_key_prefix,
            mail: MailConfig {
                smtp_url: raw.smtp_url.map(Into::into),
                from,
                outbox_dir: raw.mail_outbox_dir,
            },
            secrets,
            verification_ttl: secs("VERIFICATION_TTL_SECS", raw.verification_ttl_secs, true)?,
            access_token_ttl: secs("ACCESS_TOKEN_TTL_SECS", raw.access_token_ttl_secs, false)?,
            refresh_token_ttl: secs("REFRESH_TOKEN_TTL_SECS", raw.refresh_token_ttl_secs, false)?,
            rate_limits: RateLimits {
                login_per_account_per_minute: rate(
                    "LOGIN_PER_ACCOUNT_PER_MINUTE",
                    raw.login_per_account_per_minute,
                )?,
                login_per_address_per_minute: rate(
                    "LOGIN_PER_ADDRESS_PER_MINUTE",
                    raw.login_per_address_per_minute,
                )?,
                failed_logins_per_account_per_hour: rate(
                    "FAILED_LOGINS_PER_ACCOUNT_PER_HOUR",
                    raw.failed_logins_per_account_per_hour,
                )?,
                signups_per_address_per_hour: rate(
                    "SIGNUPS_PER_ADDRESS_PER_HOUR",
                    raw.signups_per_address_per_hour,
                )?,
                resends_per_address_per_hour: rate(
                    "RESENDS_PER_ADDRESS_PER_HOUR",
                    raw.resends_per_address_per_hour,
                )?,
                resends_per_member_per_hour: rate(
                    "RESENDS_PER_MEMBER_PER_HOUR",
                    raw.resends_per_member_per_hour,
                )?,
                phone_changes_per_member_per_hour: rate(
                    "PHONE_CHANGES_PER_MEMBER_PER_HOUR",
                    raw.phone_changes_per_member_per_hour,
                )?,
            },
            http: HttpLimits {
                header_timeout: secs(
                    "HTTP_HEADER_TIMEOUT_SECS",
                    raw.http_header_timeout_secs,
                    false,
                )?,
                request_timeout: secs(
                    "HTTP_REQUEST_TIMEOUT_SECS",
                    raw.http_request_timeout_secs,
                    false,
                )?,
                max_concurrent_requests: match raw.http_max_concurrent_requests {
                    0 => {
                        return Err(ConfigError(
                            "HTTP_MAX_CONCURRENT_REQUESTS: must be at least 1".into(),
                        ));
                    }
                    n => n,
                },
            },
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

/// The secrets from their variables, each unset one from the key file (created if missing).
fn resolve_secrets(raw: &Raw) -> Result<Secrets, ConfigError> {
    let all_set = raw.jwt_secret.is_some()
        && raw.openrun_data_keys.is_some()
        && raw.openrun_blind_index_key.is_some();
    let file = if all_set {
        None
    } else {
        Some(
            KeyFile::load_or_create(&raw.openrun_keys_file)
                .map_err(|e| ConfigError(format!("OPENRUN_KEYS_FILE: {e}")))?,
        )
    };
    let pick = |var: &str, env: &Option<String>, from_file: Option<&String>| {
        env.clone()
            .or_else(|| from_file.cloned())
            .ok_or_else(|| ConfigError(format!("{var}: not set")))
    };
    let jwt = pick(
        "JWT_SECRET",
        &raw.jwt_secret,
        file.as_ref().map(|f| &f.jwt_secret),
    )?;
    let jwt_secret = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, jwt.trim())
        .ok()
        .filter(|k| k.len() >= crypto::KEY_LEN)
        .ok_or_else(|| ConfigError("JWT_SECRET: expected base64 of at least 32 bytes".into()))?;
    let data_keys: Vec<DataKey> = crypto::parse_data_keys(&pick(
        "OPENRUN_DATA_KEYS",
        &raw.openrun_data_keys,
        file.as_ref().map(|f| &f.data_keys),
    )?)
    .map_err(|e| ConfigError(format!("OPENRUN_DATA_KEYS: {e}")))?;
    let bidx = crypto::decode_key(&pick(
        "OPENRUN_BLIND_INDEX_KEY",
        &raw.openrun_blind_index_key,
        file.as_ref().map(|f| &f.blind_index_key),
    )?)
    .map_err(|e| ConfigError(format!("OPENRUN_BLIND_INDEX_KEY: {e}")))?;
    let keys = KeyRing::new(&data_keys, bidx.into())
        .map_err(|e| ConfigError(format!("OPENRUN_DATA_KEYS: {e}")))?;
    Ok(Secrets {
        jwt_secret: jwt_secret.into(),
        keys,
        source: match file {
            Some(_) => KeySource::File(raw.openrun_keys_file.clone()),
            None => KeySource::Environment,
        },
    })
}

fn is_secret(key: &str) -> bool {
    matches!(
        key,
        "REDIS_URL" | "SMTP_URL" | "JWT_SECRET" | "OPENRUN_DATA_KEYS" | "OPENRUN_BLIND_INDEX_KEY"
    )
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
        figment::error::Kind::InvalidType(..) | figment::error::Kind::InvalidValue(..)
            if key.as_deref().is_some_and(is_secret) =>
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

    fn secrets() -> Secrets {
        Config::local("sqlite://x.db").unwrap().secrets
    }

    #[test]
    fn secrets_come_from_variables_or_a_generated_file_and_errors_name_the_variable() {
        let dir = std::env::temp_dir().join(format!("openrun_keys_{}", uuid::Uuid::now_v7()));
        let file = dir.join("keys.toml");
        let raw_file = || raw(|r| r.openrun_keys_file = file.clone());
        let first = resolve_secrets(&raw_file()).unwrap();
        assert_eq!(first.source, KeySource::File(file.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The same keys on the next start.
        let again = resolve_secrets(&raw_file()).unwrap();
        let sealed = first.keys.encrypt("f", "x");
        assert_eq!(again.keys.decrypt("f", &sealed).unwrap(), "x");
        let e = resolve_secrets(&raw(|r| {
            r.openrun_keys_file = file.clone();
            r.jwt_secret = Some("c2hvcnQ=".into());
        }))
        .unwrap_err();
        assert!(e.to_string().starts_with("JWT_SECRET:"), "{e}");
        let e = resolve_secrets(&raw(|r| {
            r.openrun_keys_file = file.clone();
            r.openrun_data_keys = Some("k1:c2VjcmV0LXRvby1zaG9ydA==".into());
        }))
        .unwrap_err();
        assert!(e.to_string().starts_with("OPENRUN_DATA_KEYS:"), "{e}");
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
        let e =
            Config::validate(raw(|r| r.public_base_url = "ftp://x".into()), secrets()).unwrap_err();
        assert!(e.to_string().starts_with("PUBLIC_BASE_URL:"), "{e}");
        let e = Config::validate(
            raw(|r| r.trusted_proxies = "10.0.0.0/8, proxy".into()),
            secrets(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("TRUSTED_PROXIES:"), "{e}");
        let ok = Config::validate(
            raw(|r| r.trusted_proxies = "10.0.0.0/8, 192.0.2.7 ,2001:db8::/32".into()),
            secrets(),
        )
        .unwrap();
        assert_eq!(ok.trusted_proxies.len(), 3);
        let e = Config::validate(raw(|r| r.redis_url = Some("localhost".into())), secrets())
            .unwrap_err();
        assert!(e.to_string().starts_with("REDIS_URL:"), "{e}");
        let e =
            Config::validate(raw(|r| r.smtp_url = Some("http://x".into())), secrets()).unwrap_err();
        assert!(e.to_string().starts_with("SMTP_URL:"), "{e}");
        let e =
            Config::validate(raw(|r| r.login_per_account_per_minute = 0), secrets()).unwrap_err();
        assert!(
            e.to_string().starts_with("LOGIN_PER_ACCOUNT_PER_MINUTE:"),
            "{e}"
        );
    }

    fn raw(f: impl FnOnce(&mut Raw)) -> Raw {
        let mut raw = Raw::default();
        f(&mut raw);
        raw
    }

    /// The README's configuration table, the keys accepted from the environment and the
    /// struct they load into name the same variables.
    #[test]
    fn the_readme_names_every_accepted_variable_and_no_other() {
        let readme = include_str!("../README.md");
        let table: std::collections::BTreeSet<String> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`'))
            .map(|(var, _)| var.to_owned())
            .filter(|var| var.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        let mut accepted: std::collections::BTreeSet<String> =
            keys().iter().map(|k| k.to_ascii_uppercase()).collect();
        // Read by figment's caller and by tracing, not by `Raw`.
        accepted.extend([CONFIG_FILE_VAR.to_owned(), "RUST_LOG".to_owned()]);
        assert_eq!(table, accepted);
        // Every key loads: a value for it from the environment reaches the struct.
        let loaded: Raw = Figment::from(Serialized::defaults(Raw::default()))
            .merge(("http_max_concurrent_requests", 7))
            .extract()
            .unwrap();
        assert_eq!(loaded.http_max_concurrent_requests, 7);
    }

    #[test]
    fn defaults_are_the_embedded_shop() {
        let config = Config::validate(Raw::default(), secrets()).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8080");
        assert!(matches!(config.database, ConnectOptions::Sqlite(_)));
    }

    #[test]
    fn errors_name_the_variable() {
        let e =
            Config::validate(raw(|r| r.database_url = "mysq://x".into()), secrets()).unwrap_err();
        assert!(e.to_string().starts_with("DATABASE_URL:"), "{e}");
        let e = Config::validate(raw(|r| r.listen_addr = "nowhere".into()), secrets()).unwrap_err();
        assert!(e.to_string().starts_with("LISTEN_ADDR:"), "{e}");
        let e = Config::validate(raw(|r| r.nightly_at = "25:00".into()), secrets()).unwrap_err();
        assert!(e.to_string().starts_with("NIGHTLY_AT:"), "{e}");
        let e = Config::validate(raw(|r| r.database_max_connections = 0), secrets()).unwrap_err();
        assert!(
            e.to_string().starts_with("DATABASE_MAX_CONNECTIONS:"),
            "{e}"
        );
    }

    #[test]
    fn the_database_url_never_prints() {
        let config = Config::validate(
            raw(|r| {
                r.database_url = "mysql://shop:hunter2secret@localhost/db".into();
            }),
            secrets(),
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter2secret"));
        // Nor do the keys: Debug shows key ids only.
        let key = DataKey::generate("k9");
        let shown = format!(
            "{:?}",
            Secrets {
                keys: KeyRing::new(std::slice::from_ref(&key), crypto::random_bytes(32).into())
                    .unwrap(),
                ..config.secrets.clone()
            }
        );
        let setting = key.to_setting();
        let secret = setting.split_once(':').unwrap().1;
        assert!(shown.contains("k9") && !shown.contains(secret), "{shown}");
        let jwt = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            config.secrets.jwt_secret.expose_secret(),
        );
        assert!(!format!("{config:?}").contains(&jwt));
        assert!(!config.database_url_redacted().contains("hunter2secret"));
    }
}
