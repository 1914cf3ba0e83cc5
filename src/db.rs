//! The database connection: MySQL / MariaDB in production, SQLite for the embedded default.
//!
//! The backend is chosen by the scheme of `DATABASE_URL`. Migrations for both live in
//! `migrations/` and are embedded in the binary.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::Executor;
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("migrations/mysql");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a SQLite connection waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection pool on one of the two backends: MySQL 8+ / MariaDB 10.6+, or SQLite in WAL
/// mode. The projections crate's pool, so that the service and its read models share one.
pub use openrun_projections::store::Pool as Database;

/// Runs `$body` with `$pool` bound to the concrete pool of either backend (the queries are
/// the same text; only the driver differs). Exported for the integration tests, which check
/// what the tables hold.
#[doc(hidden)]
#[macro_export]
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Database::MySql($pool) => $body,
            $crate::db::Database::Sqlite($pool) => $body,
        }
    };
}
pub use crate::with_pool;

/// Makes the SQLite file readable by its owner only (0600), creating it empty if missing, so
/// that SQLite, which gives the WAL and shared-memory files the database file's permissions,
/// creates those private too. Files left readable by an older version are tightened too.
fn private_file(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if path.as_os_str().is_empty() || path == std::path::Path::new(":memory:") {
            return Ok(());
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Parsed connection options, checked at start-up before anything connects.
#[derive(Clone)]
pub enum ConnectOptions {
    /// `mysql://` or `mariadb://`.
    MySql(MySqlConnectOptions),
    /// `sqlite:`.
    Sqlite(SqliteConnectOptions),
}

/// Shows the backend only: the options hold the password.
impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MySql(_) => f.write_str("MySql(..)"),
            Self::Sqlite(o) => write!(f, "Sqlite({})", o.get_filename().display()),
        }
    }
}

impl ConnectOptions {
    /// Parses a database URL. The error never repeats the URL, which may hold a password.
    pub fn parse(url: &str) -> Result<Self, String> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("mysql" | "mariadb") => {
                let parsed = url::Url::parse(url).map_err(|e| format!("not a valid URL ({e})"))?;
                if parsed.host_str().is_none_or(str::is_empty) {
                    return Err("a MySQL URL needs a host".into());
                }
                let options = MySqlConnectOptions::from_str(&url.replacen("mariadb:", "mysql:", 1))
                    .map_err(|_| "not a valid MySQL URL".to_string())?;
                Ok(Self::MySql(options))
            }
            Some("sqlite") => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|_| "not a valid SQLite URL".to_string())?;
                Ok(Self::Sqlite(options))
            }
            _ => Err("expected mysql://user:password@host:port/database or sqlite://path".into()),
        }
    }
}

/// The URL with its password replaced by `***`, safe to print.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Ignored error: only URLs that cannot carry a password refuse one.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparseable URL>".into(),
    }
}

/// Connects, waiting at most `connect_timeout` for the first connection.
pub async fn connect(
    options: &ConnectOptions,
    max_connections: u32,
    connect_timeout: Duration,
) -> Result<Database, sqlx::Error> {
    match options {
        ConnectOptions::MySql(options) => {
            let pool = MySqlPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(connect_timeout)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // Each statement sees what committed before it: the writer's
                        // version check must see every batch committed before its lock.
                        conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                            .await?;
                        Ok(())
                    })
                })
                .connect_with(options.clone())
                .await?;
            Ok(Database::MySql(pool))
        }
        ConnectOptions::Sqlite(options) => {
            if let Some(parent) = options.get_filename().parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)?;
            }
            private_file(options.get_filename())?;
            let options = options
                .clone()
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: an acknowledged append survives a power cut, not just a crash.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(connect_timeout)
                .connect_with(options)
                .await?;
            Ok(Database::Sqlite(pool))
        }
    }
}

fn migrator(db: &Database) -> &'static Migrator {
    match db {
        Database::MySql(_) => &MYSQL_MIGRATIONS,
        Database::Sqlite(_) => &SQLITE_MIGRATIONS,
    }
}

/// Applies the embedded migrations that have not run yet.
pub async fn migrate(db: &Database) -> anyhow::Result<()> {
    match db {
        Database::MySql(pool) => MYSQL_MIGRATIONS.run(pool).await,
        Database::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
    }
    .context("applying database migrations")
}

/// How many embedded migrations have not been applied successfully.
pub async fn pending_migrations(db: &Database) -> Result<usize, sqlx::Error> {
    const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success";
    let applied: Vec<i64> =
        with_pool!(db, pool => sqlx::query_scalar(APPLIED).fetch_all(pool).await).or_else(|e| {
            match &e {
                // No migration table yet: nothing applied.
                sqlx::Error::Database(d) if d.message().contains("_sqlx_migrations") => Ok(vec![]),
                _ => Err(e),
            }
        })?;
    Ok(migrator(db)
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .count())
}

/// The database settings as read (`DATABASE_*`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct RawSettings {
    pub(crate) database_url: String,
    pub(crate) database_max_connections: u32,
    pub(crate) database_connect_timeout_secs: u64,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            database_url: "sqlite://data/openrun.db".into(),
            database_max_connections: 32,
            database_connect_timeout_secs: 5,
        }
    }
}

/// Which database, and how the pool reaches it.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// The database URL; holds the password, so it is kept secret.
    pub url: secrecy::SecretString,
    /// Parsed from `url`.
    pub options: ConnectOptions,
    /// Connection pool size.
    pub max_connections: u32,
    /// How long start-up waits for the database.
    pub connect_timeout: std::time::Duration,
}

impl DatabaseSettings {
    /// The URL with its password hidden, for messages.
    pub fn url_redacted(&self) -> String {
        use secrecy::ExposeSecret;
        redact(self.url.expose_secret())
    }
}

impl RawSettings {
    pub(crate) fn validate(self) -> Result<DatabaseSettings, crate::config::ConfigError> {
        use crate::config::ConfigError;
        let options = ConnectOptions::parse(&self.database_url)
            .map_err(|e| ConfigError::new("DATABASE_URL", e))?;
        if self.database_max_connections == 0 {
            return Err(ConfigError::new(
                "DATABASE_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        Ok(DatabaseSettings {
            url: self.database_url.into(),
            options,
            max_connections: self.database_max_connections,
            connect_timeout: std::time::Duration::from_secs(self.database_connect_timeout_secs),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("mysql://shop:s3cret@db.internal:3306/openrun"),
            "mysql://shop:***@db.internal:3306/openrun"
        );
        assert_eq!(
            redact("mysql://root@127.0.0.1/x"),
            "mysql://root@127.0.0.1/x"
        );
    }

    #[test]
    fn parse_names_no_secret_and_knows_both_backends() {
        assert!(matches!(
            ConnectOptions::parse("mysql://u:p@localhost:3306/db").unwrap(),
            ConnectOptions::MySql(_)
        ));
        assert!(matches!(
            ConnectOptions::parse("sqlite://data/x.db").unwrap(),
            ConnectOptions::Sqlite(_)
        ));
        let err = ConnectOptions::parse("mysql://u:topsecret@:99999/db").unwrap_err();
        assert!(!err.contains("topsecret"), "{err}");
        assert!(ConnectOptions::parse("postgres://x").is_err());
        assert!(ConnectOptions::parse("nonsense").is_err());
    }
}
