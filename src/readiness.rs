//! Readiness: whether this process can serve, by asking what it depends on.

use std::sync::Arc;

use crate::auth::AuthService;
use crate::catalog::LiveCatalog;
use crate::db::Database;

/// Why the process is not ready, in words a load balancer's operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// The database does not answer.
    #[error("the database is unreachable")]
    Database,
    /// The session store (Redis) does not answer.
    #[error("the session store (Redis) is unreachable")]
    TokenStore,
    /// Migrations embedded in this build are not applied.
    #[error("{0} database migrations are not applied")]
    Migrations(usize),
    /// The migration table cannot be read.
    #[error("the migration state cannot be read")]
    MigrationState,
    /// The live catalog has not yet applied the log up to the head it read at start-up.
    #[error("the live catalog is still catching up with the log")]
    Catalog,
}

/// Checks the database, its migrations and the token store.
pub struct Readiness {
    db: Database,
    auth: Arc<AuthService>,
    catalog: Arc<LiveCatalog>,
}

impl Readiness {
    /// Readiness of the service on `db` with the token store of `auth`.
    pub fn new(db: Database, auth: Arc<AuthService>, catalog: Arc<LiveCatalog>) -> Self {
        Self { db, auth, catalog }
    }

    /// Ready, or the first thing that is not; causes are logged here, once.
    pub async fn check(&self) -> Result<(), NotReady> {
        if !self.catalog.is_ready() {
            return Err(NotReady::Catalog);
        }
        if let Err(e) = self.db.ping().await {
            tracing::warn!(error = %e, "readiness: database unreachable");
            return Err(NotReady::Database);
        }
        if let Err(e) = self.auth.ping().await {
            tracing::warn!(
                error = format!("{e:#}"),
                "readiness: token store unreachable"
            );
            return Err(NotReady::TokenStore);
        }
        match crate::db::pending_migrations(&self.db).await {
            Ok(0) => Ok(()),
            Ok(n) => Err(NotReady::Migrations(n)),
            Err(e) => {
                tracing::warn!(error = %e, "readiness: cannot read migrations");
                Err(NotReady::MigrationState)
            }
        }
    }
}
