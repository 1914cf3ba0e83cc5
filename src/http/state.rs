//! What every request handler can reach: the services of each capability, built at start-up
//! ([`crate::startup`]) and shared by the router.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::AuthService;
use crate::catalog::cursor::CursorKey;
use crate::catalog::{Categories, LiveCatalog, Products};
use crate::clock::SharedClock;
use crate::commands::Commands;
use crate::members::Members;
use crate::readiness::Readiness;

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The command path: the only writer of aggregate streams.
    pub commands: Commands,
    /// Where the service reads the time.
    pub clock: SharedClock,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Members: sign-up, profile, addresses, roles.
    pub members: Arc<Members>,
    /// Product categories.
    pub categories: Arc<Categories>,
    /// Every product as the log says, in memory: views, listings, search, the order path.
    pub catalog: Arc<LiveCatalog>,
    /// Product commands and reads.
    pub products: Arc<Products>,
    /// Placing and reading orders.
    pub orders: Arc<crate::orders::Orders>,
    /// Members' carts.
    pub cart: Arc<dyn crate::cart::CartStore>,
    /// After the order: views, timeline, cancel, return, the seller's orders.
    pub lifecycle: Arc<crate::orders::lifecycle::Lifecycle>,
    /// The hot stock store (holds, idempotency records).
    pub stock: Arc<dyn crate::stock::StockStore>,
    /// Members' wishlists.
    pub wishlists: Arc<crate::catalog::wishlist::Wishlists>,
    /// Signs listing cursors.
    pub cursor_key: CursorKey,
    /// Rendered product views by product and ETag, bounded by their size in bytes.
    pub views: moka::sync::Cache<String, Arc<[u8]>>,
    /// Logins, tokens, sessions, rate limits.
    pub auth: Arc<AuthService>,
    /// Whether the process can serve (`/readyz`).
    pub readiness: Arc<Readiness>,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
    /// Timeouts and the bound on concurrent requests.
    pub http: super::settings::HttpLimits,
}
