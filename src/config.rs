//! Configuration, read from environment variables and optionally a TOML file, validated at
//! start-up. Every error names the variable at fault; secrets never print.
//!
//! Each capability owns its settings: the raw form as read, with its defaults, and the
//! validated struct (`http::settings`, `db`, `eventstore::group_commit`, `scheduler`,
//! `telemetry`, `redis`, `mail`, `auth::settings`, `members::settings`, `orders::settings`). [`Config`] is their
//! sum; the secrets are resolved here. Every variable, its default and its meaning are in the
//! README's configuration table; a test checks that the table, the accepted keys and the
//! loaded struct agree.

use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretSlice;
use serde::{Deserialize, Serialize};

use crate::auth::AuthSettings;
use crate::crypto::keyfile::KeyFile;
use crate::crypto::{self, DataKey, KeyRing};
use crate::db::DatabaseSettings;
use crate::eventstore::group_commit::GroupCommitConfig;
use crate::http::settings::HttpSettings;
use crate::mail::MailConfig;
use crate::members::MemberSettings;
use crate::redis::RedisSettings;
use crate::scheduler::SchedulerSettings;
pub use crate::telemetry::LogFormat;

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

/// Every capability's settings as read, before validation: one flat set of variables.
/// Serialised flat (the defaults, and the accepted keys); read section by section
/// ([`Raw::extract`]), so that an error names its variable.
#[derive(Serialize, Default)]
struct Raw {
    #[serde(flatten)]
    http: crate::http::settings::RawSettings,
    #[serde(flatten)]
    database: crate::db::RawSettings,
    #[serde(flatten)]
    group_commit: crate::eventstore::group_commit::RawSettings,
    #[serde(flatten)]
    scheduler: crate::scheduler::RawSettings,
    #[serde(flatten)]
    catalog: crate::catalog::live::RawSettings,
    #[serde(flatten)]
    telemetry: crate::telemetry::RawSettings,
    #[serde(flatten)]
    redis: crate::redis::RawSettings,
    #[serde(flatten)]
    mail: crate::mail::RawSettings,
    #[serde(flatten)]
    auth: crate::auth::settings::RawSettings,
    #[serde(flatten)]
    members: crate::members::settings::RawSettings,
    #[serde(flatten)]
    orders: crate::orders::settings::RawSettings,
    #[serde(flatten)]
    secrets: RawSecrets,
}

impl Raw {
    /// Each capability's section from the same sources.
    fn extract(figment: &Figment) -> Result<Self, ConfigError> {
        Self::sections(figment).map_err(|e| ConfigError(describe(*e)))
    }

    fn sections(figment: &Figment) -> Result<Self, Box<figment::Error>> {
        Ok(Self {
            http: figment.extract().map_err(Box::new)?,
            database: figment.extract().map_err(Box::new)?,
            group_commit: figment.extract().map_err(Box::new)?,
            scheduler: figment.extract().map_err(Box::new)?,
            catalog: figment.extract().map_err(Box::new)?,
            telemetry: figment.extract().map_err(Box::new)?,
            redis: figment.extract().map_err(Box::new)?,
            mail: figment.extract().map_err(Box::new)?,
            auth: figment.extract().map_err(Box::new)?,
            members: figment.extract().map_err(Box::new)?,
            orders: figment.extract().map_err(Box::new)?,
            secrets: figment.extract().map_err(Box::new)?,
        })
    }
}

/// The secrets as read. They are in the clear here, so this has no `Debug`.
#[derive(Serialize, Deserialize)]
struct RawSecrets {
    jwt_secret: Option<String>,
    openrun_data_keys: Option<String>,
    openrun_blind_index_key: Option<String>,
    openrun_keys_file: PathBuf,
}

impl Default for RawSecrets {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            openrun_data_keys: None,
            openrun_blind_index_key: None,
            openrun_keys_file: "data/keys.toml".into(),
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

/// Validated configuration: each capability's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTP edge: listener, trusted proxies, timeouts, the bound on concurrent requests.
    pub http: HttpSettings,
    /// The database and its pool.
    pub database: DatabaseSettings,
    /// Group-commit tuning of the event store.
    pub group_commit: GroupCommitConfig,
    /// The scheduler's nightly time.
    pub scheduler: SchedulerSettings,
    /// The live catalog's lag bound.
    pub catalog: crate::catalog::CatalogSettings,
    /// Log output format.
    pub log_format: LogFormat,
    /// Redis for sessions, refresh tokens and rate limits; in-process without it.
    pub redis: RedisSettings,
    /// E-mail delivery.
    pub mail: MailConfig,
    /// Token lifetimes and rate limits.
    pub auth: AuthSettings,
    /// Verification links.
    pub members: MemberSettings,
    /// The order lifecycle's timings and the refund bound.
    pub orders: crate::orders::settings::OrderSettings,
    /// Signing and encryption keys.
    pub secrets: Secrets,
}

/// A configuration error, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// `var: message`.
    pub(crate) fn new(var: &str, message: impl std::fmt::Display) -> Self {
        Self(format!("{var}: {message}"))
    }
}

/// `value` seconds of the variable `var`; zero only where `zero_ok`.
pub(crate) fn secs(var: &str, value: u64, zero_ok: bool) -> Result<Duration, ConfigError> {
    if value == 0 && !zero_ok {
        Err(ConfigError::new(var, "must be at least 1"))
    } else {
        Ok(Duration::from_secs(value))
    }
}

impl Config {
    /// Reads the process environment (and the file `OPENRUN_CONFIG` names, if any).
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Raw::default()));
        if let Some(file) = std::env::var_os(CONFIG_FILE_VAR) {
            let file = PathBuf::from(file);
            if !file.is_file() {
                return Err(ConfigError::new(
                    CONFIG_FILE_VAR,
                    format!("no such file: {}", file.display()),
                ));
            }
            figment = figment.merge(Toml::file(file));
        }
        let figment =
            figment.merge(Env::raw().only(&keys().iter().map(String::as_str).collect::<Vec<_>>()));
        let raw = Raw::extract(&figment)?;
        let secrets = resolve_secrets(&raw.secrets)?;
        Self::validate(raw, secrets)
    }

    /// The defaults with another database, listening on an ephemeral loopback port: for tests
    /// and tools that start the application in-process.
    /// Its secrets are random and live in memory only.
    pub fn local(database_url: &str) -> Result<Self, ConfigError> {
        let mut raw = Raw::default();
        raw.http.listen_addr = "127.0.0.1:0".into();
        raw.database.database_url = database_url.into();
        Self::validate(
            raw,
            Secrets {
                jwt_secret: crypto::random_bytes(crypto::KEY_LEN).into(),
                keys: KeyRing::generate(),
                source: KeySource::Ephemeral,
            },
        )
    }

    fn validate(raw: Raw, secrets: Secrets) -> Result<Self, ConfigError> {
        Ok(Self {
            http: raw.http.validate()?,
            database: raw.database.validate()?,
            group_commit: raw.group_commit.validate()?,
            scheduler: raw.scheduler.validate()?,
            catalog: raw.catalog.validate()?,
            log_format: raw.telemetry.log_format,
            redis: raw.redis.validate()?,
            mail: raw.mail.validate()?,
            auth: raw.auth.validate()?,
            members: raw.members.validate()?,
            orders: raw.orders.validate()?,
            secrets,
        })
    }

    /// The database URL with its password hidden, for messages.
    pub fn database_url_redacted(&self) -> String {
        self.database.url_redacted()
    }
}

/// The secrets from their variables, each unset one from the key file (created if missing).
fn resolve_secrets(raw: &RawSecrets) -> Result<Secrets, ConfigError> {
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
    use secrecy::ExposeSecret;

    use super::*;

    fn secrets() -> Secrets {
        Config::local("sqlite://x.db").unwrap().secrets
    }

    #[test]
    fn secrets_come_from_variables_or_a_generated_file_and_errors_name_the_variable() {
        let dir = std::env::temp_dir().join(format!("openrun_keys_{}", uuid::Uuid::now_v7()));
        let file = dir.join("keys.toml");
        let raw_file = || raw(|r| r.secrets.openrun_keys_file = file.clone());
        let first = resolve_secrets(&raw_file().secrets).unwrap();
        assert_eq!(first.source, KeySource::File(file.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The same keys on the next start.
        let again = resolve_secrets(&raw_file().secrets).unwrap();
        let sealed = first.keys.encrypt("f", "x");
        assert_eq!(again.keys.decrypt("f", &sealed).unwrap(), "x");
        let e = resolve_secrets(
            &raw(|r| {
                r.secrets.openrun_keys_file = file.clone();
                r.secrets.jwt_secret = Some("c2hvcnQ=".into());
            })
            .secrets,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("JWT_SECRET:"), "{e}");
        let e = resolve_secrets(
            &raw(|r| {
                r.secrets.openrun_keys_file = file.clone();
                r.secrets.openrun_data_keys = Some("k1:c2VjcmV0LXRvby1zaG9ydA==".into());
            })
            .secrets,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("OPENRUN_DATA_KEYS:"), "{e}");
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
        let e = Config::validate(
            raw(|r| r.members.public_base_url = "ftp://x".into()),
            secrets(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("PUBLIC_BASE_URL:"), "{e}");
        let e = Config::validate(
            raw(|r| r.http.trusted_proxies = "10.0.0.0/8, proxy".into()),
            secrets(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("TRUSTED_PROXIES:"), "{e}");
        let ok = Config::validate(
            raw(|r| r.http.trusted_proxies = "10.0.0.0/8, 192.0.2.7 ,2001:db8::/32".into()),
            secrets(),
        )
        .unwrap();
        assert_eq!(ok.http.trusted_proxies.len(), 3);
        let e = Config::validate(
            raw(|r| r.redis.redis_url = Some("localhost".into())),
            secrets(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("REDIS_URL:"), "{e}");
        let e = Config::validate(
            raw(|r| r.mail.smtp_url = Some("http://x".into())),
            secrets(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("SMTP_URL:"), "{e}");
        let e = Config::validate(raw(|r| r.auth.login_per_account_per_minute = 0), secrets())
            .unwrap_err();
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
        let defaults = serde_json::to_value(Raw::default()).unwrap();
        let mut changed = 0;
        for key in keys() {
            // A value for the key, different from its default, must reach the loaded struct.
            let value = match &defaults[&key] {
                serde_json::Value::Number(n) => serde_json::json!(n.as_u64().unwrap() + 1),
                serde_json::Value::String(s) if key == "log_format" => {
                    serde_json::json!(if s == "text" { "json" } else { "text" })
                }
                _ => serde_json::json!("changed"),
            };
            let figment = Figment::from(Serialized::defaults(Raw::default()))
                .merge(Serialized::default(&key, value.clone()));
            let loaded = serde_json::to_value(Raw::extract(&figment).unwrap()).unwrap();
            assert_eq!(loaded[&key], value, "{key} does not load");
            changed += 1;
        }
        assert_eq!(changed, keys().len());
    }

    #[test]
    fn defaults_are_the_embedded_shop() {
        let config = Config::validate(Raw::default(), secrets()).unwrap();
        assert_eq!(config.http.listen_addr.to_string(), "127.0.0.1:8080");
        assert!(matches!(
            config.database.options,
            crate::db::ConnectOptions::Sqlite(_)
        ));
    }

    #[test]
    fn errors_name_the_variable() {
        let e = Config::validate(
            raw(|r| r.database.database_url = "mysq://x".into()),
            secrets(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("DATABASE_URL:"), "{e}");
        let e = Config::validate(raw(|r| r.http.listen_addr = "nowhere".into()), secrets())
            .unwrap_err();
        assert!(e.to_string().starts_with("LISTEN_ADDR:"), "{e}");
        let e = Config::validate(raw(|r| r.scheduler.nightly_at = "25:00".into()), secrets())
            .unwrap_err();
        assert!(e.to_string().starts_with("NIGHTLY_AT:"), "{e}");
        let e = Config::validate(raw(|r| r.database.database_max_connections = 0), secrets())
            .unwrap_err();
        assert!(
            e.to_string().starts_with("DATABASE_MAX_CONNECTIONS:"),
            "{e}"
        );
    }

    #[test]
    fn the_database_url_never_prints() {
        let config = Config::validate(
            raw(|r| {
                r.database.database_url = "mysql://shop:hunter2secret@localhost/db".into();
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
