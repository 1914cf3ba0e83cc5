//! Building the application from its configuration, and running it until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::AuthService;
use crate::auth::jwt::Jwt;
use crate::auth::ratelimit::Limiter;
use crate::auth::tokens::{MemoryTokenStore, RedisTokenStore, TokenStore};
use crate::clock::SharedClock;
use crate::commands::Commands;
use crate::config::Config;
use crate::db::Database;
use crate::eventstore;
use crate::http::AppState;
use crate::members::Members;
use crate::projections::Projectors;
use crate::readiness::Readiness;
use crate::scheduler::{Jobs, Scheduler};
use crate::{http, telemetry};

/// A built application: connected, migrated, listening, not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    db: Database,
    events: Arc<dyn eventstore::EventStore>,
    projectors: Projectors,
    scheduler: Scheduler,
    catalog_follower: (
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ),
    /// The counter projector, the order sweeps and the outbox worker, stopped together.
    order_workers: (
        tokio::sync::watch::Sender<bool>,
        Vec<tokio::task::JoinHandle<()>>,
    ),
}

impl Application {
    /// Connects to the database, applies migrations, starts the event store and binds the
    /// listener. The error says which of these failed, with secrets hidden.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, crate::clock::system()).await
    }

    /// The same, reading the time from `clock` (a test's manual clock).
    pub async fn build_with_clock(config: &Config, clock: SharedClock) -> anyhow::Result<Self> {
        let db = connect(config).await?;
        crate::db::migrate(&db).await?;
        let events = eventstore::open(&db, &config.group_commit);
        let commands = Commands::new(Arc::clone(&events), Arc::clone(&clock));
        let listener = TcpListener::bind(config.http.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.http.listen_addr))?;
        let redis = redis_connection(config).await?;
        let (members, auth) =
            members_and_auth_on(config, &db, redis.clone(), Arc::clone(&clock)).await?;
        let cart: Arc<dyn crate::cart::CartStore> = match &redis {
            Some(conn) => Arc::new(crate::cart::redis::RedisCartStore::new(
                conn.clone(),
                &config.redis.key_prefix,
            )),
            None => Arc::new(crate::cart::sql::SqlCartStore::new(db.clone())),
        };
        let stock = stock_store(config, redis, Arc::clone(&clock)).await?;
        // Only now, with everything that can fail at start-up done, do the background workers
        // start: a start-up that fails holds no lease and no claim.
        let projectors = Projectors::start(&db, Arc::clone(&events)).await?;
        let scheduler = Scheduler::start(Jobs {
            commands: commands.clone(),
            db: db.clone(),
            events: Arc::clone(&events),
            stock: Some(Arc::clone(&stock)),
            nightly_at: config.scheduler.nightly_at,
            refund_within: config.orders.refund_settle_within,
            clock: Arc::clone(&clock),
        });
        let catalog = crate::catalog::LiveCatalog::new(
            commands.clone(),
            Arc::clone(&events),
            Arc::clone(&clock),
            config.catalog,
        );
        let (stop_catalog, catalog_stopped) = tokio::sync::watch::channel(false);
        let catalog_follower = (
            stop_catalog,
            tokio::spawn(Arc::clone(&catalog).follow(catalog_stopped)),
        );
        let readiness = Arc::new(Readiness::new(
            db.clone(),
            Arc::clone(&auth),
            Arc::clone(&catalog),
        ));
        let categories = Arc::new(crate::catalog::Categories::new(
            db.clone(),
            Arc::clone(&clock),
        ));
        let products = Arc::new(crate::catalog::Products::new(
            commands.clone(),
            Arc::clone(&events),
            Arc::clone(&catalog),
            Arc::clone(&categories),
            Arc::clone(&stock),
            db.clone(),
            Arc::clone(&clock),
        ));
        let wishlists = Arc::new(crate::catalog::wishlist::Wishlists::new(
            db.clone(),
            Arc::clone(&catalog),
            Arc::clone(&clock),
        ));
        let gateway: Arc<dyn crate::payment::PaymentGateway> = Arc::new(
            crate::payment::sandbox::SandboxGateway::new(db.clone(), Arc::clone(&clock)),
        );
        let orders = Arc::new(crate::orders::Orders::new(
            db.clone(),
            commands.clone(),
            Arc::clone(&catalog),
            Arc::clone(&stock),
            Arc::clone(&gateway),
            Arc::clone(&members),
            Arc::clone(&cart),
            Arc::clone(&clock),
            config.orders.policy,
        ));
        let outbox = Arc::new(crate::orders::outbox::OutboxWorker::new(
            db.clone(),
            commands.clone(),
            Arc::clone(&events),
            Arc::clone(&gateway),
            Arc::clone(&members),
            Arc::clone(&catalog),
        ));
        let lifecycle = Arc::new(crate::orders::lifecycle::Lifecycle::new(
            db.clone(),
            commands.clone(),
            Arc::clone(&members),
            Arc::clone(&outbox),
        ));
        let (stop_orders, orders_stopped) = tokio::sync::watch::channel(false);
        let projector = Arc::new(crate::stock::projector::CounterProjector::new(
            Arc::clone(&stock),
            Arc::clone(&events),
            commands.clone(),
        ));
        let sweeper = Arc::new(crate::orders::sweep::Sweeper::new(
            Arc::clone(&orders),
            Arc::clone(&stock),
            gateway,
            Arc::clone(&events),
            Arc::clone(&clock),
            config.http.limits.request_timeout * SWEEP_GRACE_DEADLINES,
        ));
        let order_workers = (
            stop_orders,
            vec![
                tokio::spawn(projector.follow(orders_stopped.clone())),
                tokio::spawn(sweeper.run(orders_stopped.clone())),
                tokio::spawn(outbox.run(orders_stopped)),
            ],
        );
        let state = AppState {
            orders,
            lifecycle,
            cart,
            stock,
            commands,
            categories,
            catalog,
            products,
            cursor_key: crate::catalog::cursor::CursorKey::derive(
                secrecy::ExposeSecret::expose_secret(&config.secrets.jwt_secret),
            ),
            views: product_view_cache(),
            wishlists,
            clock,
            metrics: telemetry::metrics(),
            members,
            auth,
            readiness,
            trusted_proxies: config.http.trusted_proxies.clone().into(),
            http: config.http.limits,
        };
        Ok(Self {
            listener,
            state,
            db,
            events,
            projectors,
            scheduler,
            catalog_follower,
            order_workers,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state, for tests and tools that run beside the server.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The database, for tests and tools that run beside the server (handlers reach it only
    /// through the services).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The event log, for tests and tools that read it beside the server.
    pub fn event_store(&self) -> &Arc<dyn eventstore::EventStore> {
        &self.events
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests and appends.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        tracing::info!(addr = %self.listener.local_addr()?, "serving");
        let app = http::router(self.state);
        http::server::serve(self.listener, app, state.http, shutdown)
            .await
            .context("HTTP server failed")?;
        self.scheduler.stop().await;
        self.projectors.stop().await;
        let (stop_orders, order_workers) = self.order_workers;
        // Ignored error: the workers stopped already.
        let _ = stop_orders.send(true);
        for worker in order_workers {
            if let Err(e) = worker.await {
                tracing::error!(error = %e, "an order worker failed");
            }
        }
        let (stop_catalog, catalog_follower) = self.catalog_follower;
        // Ignored error: the follower stopped already.
        let _ = stop_catalog.send(true);
        if let Err(e) = catalog_follower.await {
            tracing::error!(error = %e, "the live catalog follower failed");
        }
        self.events.shutdown().await;
        self.db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The order sweeps wait this many request deadlines before closing what a request left.
const SWEEP_GRACE_DEADLINES: u32 = 3;

/// The process's one Redis connection (sessions, limits and stock share it), when Redis is
/// configured.
async fn redis_connection(
    config: &Config,
) -> anyhow::Result<Option<redis::aio::ConnectionManager>> {
    use secrecy::ExposeSecret;
    match &config.redis.url {
        Some(url) => Ok(Some(
            crate::redis::connect_with(url.expose_secret(), config.redis.response_timeout).await?,
        )),
        None => Ok(None),
    }
}

/// The stock store: on Redis when connected (the store checks that Redis evicts nothing),
/// else in this process.
async fn stock_store(
    config: &Config,
    redis: Option<redis::aio::ConnectionManager>,
    clock: SharedClock,
) -> anyhow::Result<Arc<dyn crate::stock::StockStore>> {
    Ok(match redis_stock_store(config, redis).await? {
        Some(store) => store,
        None => Arc::new(crate::stock::memory::MemoryStockStore::new(clock)),
    })
}

/// The shop's stock store on Redis, when Redis is configured (for tools beside the server:
/// an in-process store lives in the serving process only).
pub async fn shared_stock_store(
    config: &Config,
) -> anyhow::Result<Option<Arc<dyn crate::stock::StockStore>>> {
    redis_stock_store(config, redis_connection(config).await?).await
}

async fn redis_stock_store(
    config: &Config,
    redis: Option<redis::aio::ConnectionManager>,
) -> anyhow::Result<Option<Arc<dyn crate::stock::StockStore>>> {
    Ok(match redis {
        Some(conn) => Some(Arc::new(
            crate::stock::redis::RedisStockStore::new(conn, &config.redis.key_prefix).await?,
        )),
        None => None,
    })
}

/// Bytes of rendered product views kept in memory.
const VIEW_CACHE_BYTES: u64 = 64 * 1024 * 1024;

fn product_view_cache() -> moka::sync::Cache<String, Arc<[u8]>> {
    moka::sync::Cache::builder()
        .weigher(|key: &String, value: &Arc<[u8]>| {
            u32::try_from(key.len() + value.len()).unwrap_or(u32::MAX)
        })
        .max_capacity(VIEW_CACHE_BYTES)
        .build()
}

/// The members and auth services on a connected database, with the configured token store
/// (Redis or in-process) and mailer (SMTP or outbox files).
pub async fn members_and_auth(
    config: &Config,
    db: &Database,
    clock: SharedClock,
) -> anyhow::Result<(Arc<Members>, Arc<AuthService>)> {
    let redis = redis_connection(config).await?;
    members_and_auth_on(config, db, redis, clock).await
}

async fn members_and_auth_on(
    config: &Config,
    db: &Database,
    redis: Option<redis::aio::ConnectionManager>,
    clock: SharedClock,
) -> anyhow::Result<(Arc<Members>, Arc<AuthService>)> {
    use crate::members::mirror::{AddressMirror, LocalAddressMirror, RedisAddressMirror};
    type Stores = (Arc<dyn TokenStore>, Limiter, Arc<dyn AddressMirror>);
    let (store, limiter, mirror): Stores = match redis {
        Some(conn) => {
            let prefix = &config.redis.key_prefix;
            (
                Arc::new(RedisTokenStore::new(conn.clone(), prefix)),
                Limiter::on_redis(&config.auth.rate_limits, conn.clone(), prefix),
                Arc::new(RedisAddressMirror::new(conn, prefix)),
            )
        }
        None => (
            Arc::new(MemoryTokenStore::default()),
            Limiter::new(&config.auth.rate_limits, clock.clone()),
            Arc::new(LocalAddressMirror::default()),
        ),
    };
    let members = Members::new(
        db.clone(),
        config.secrets.keys.clone(),
        crate::mail::from_config(&config.mail)?,
        config.mail.from.clone(),
        &config.members.public_base_url,
        config.members.verification_ttl,
        Arc::clone(&clock),
        mirror,
    )?;
    let auth = AuthService::new(
        db.clone(),
        Jwt::new(&config.secrets.jwt_secret, config.auth.access_token_ttl),
        store,
        limiter,
        config.auth.refresh_token_ttl,
        clock,
    );
    Ok((Arc::new(members), Arc::new(auth)))
}

/// Connects to the configured database; the error is one line naming the URL, password hidden.
pub async fn connect(config: &Config) -> anyhow::Result<Database> {
    crate::db::connect(
        &config.database.options,
        config.database.max_connections,
        config.database.connect_timeout,
    )
    .await
    .with_context(|| {
        format!(
            "cannot connect to the database at {}",
            config.database_url_redacted()
        )
    })
}

/// A future that completes on ctrl-c or SIGTERM. The handlers are registered here, before
/// the caller serves, so a signal sent as soon as the address is reported is never missed
/// (a lazily registered handler lets the default action kill the process instead).
#[cfg(unix)]
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for ctrl-c")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::info!("shutdown requested; finishing in-flight work");
    })
}

/// A future that completes on ctrl-c.
#[cfg(not(unix))]
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutdown requested; finishing in-flight work");
    })
}
