//! `/v1/wishlist`: the caller's wishlist (verified members).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use openrun_domain::product::ProductStatus;
use openrun_domain::{MemberId, ProductId};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::extract::AppPath;
use super::identity::{Auth, Basic};
use super::problem::{Problem, catalogue};
use super::products::{CURRENCY, actor, caller};
use crate::catalog::wishlist::WishlistError;

impl From<WishlistError> for Problem {
    fn from(e: WishlistError) -> Self {
        match e {
            WishlistError::NotFound => Problem::not_found(),
            WishlistError::Full => Problem::of(catalogue::WISHLIST_FULL).with_detail(e.to_string()),
            WishlistError::Internal(cause) => Problem::internal(&cause),
        }
    }
}

/// A wished-for product as it is now.
#[derive(Debug, Serialize, ToSchema)]
pub struct WishlistEntry {
    /// The product.
    pub product_id: Uuid,
    /// Its name.
    pub name: String,
    /// The status in effect now.
    pub status: ProductStatus,
    /// Unit price in whole `currency` units.
    pub price: i64,
    /// Always `KRW`.
    pub currency: &'static str,
    /// When a pending schedule puts it on sale.
    pub opens_at: Option<DateTime<Utc>>,
    /// When it was added.
    pub added_at: DateTime<Utc>,
}

/// The wishlist.
#[derive(Debug, Serialize, ToSchema)]
pub struct WishlistView {
    /// Most recently added first; products the caller can no longer see are left out.
    pub items: Vec<WishlistEntry>,
    /// How many there are (at most 200).
    pub count: usize,
}

fn member(identity: &crate::auth::Identity) -> Result<MemberId, Problem> {
    Ok(actor(identity)?.member_id)
}

/// The caller's wishlist, each product with its current status, price and `opens_at`.
#[utoipa::path(get, path = "/v1/wishlist", tag = "catalog", security(("bearer" = [])),
    responses((status = 200, body = WishlistView), (status = 401, body = Problem),
    (status = 403, body = Problem)))]
pub async fn get_wishlist(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Basic>,
) -> Result<Json<WishlistView>, Problem> {
    let now = state.clock.now();
    let entries = state
        .wishlists
        .list(member(&identity)?, &caller(&identity))
        .await?;
    let items: Vec<WishlistEntry> = entries
        .into_iter()
        .map(|(p, added_at)| WishlistEntry {
            product_id: p.state.product_id.as_uuid(),
            name: p.state.name.clone(),
            status: p.status_at(now),
            price: p.state.price.minor(),
            currency: CURRENCY,
            opens_at: p.state.next_instant_of(ProductStatus::OnSale, now),
            added_at,
        })
        .collect();
    Ok(Json(WishlistView {
        count: items.len(),
        items,
    }))
}

/// Adds a product the caller can see; adding it twice keeps one entry. At most 200.
#[utoipa::path(put, path = "/v1/wishlist/{product_id}", tag = "catalog",
    security(("bearer" = [])), params(("product_id" = Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
    (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn add_to_wishlist(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Basic>,
    AppPath(product_id): AppPath<Uuid>,
) -> Result<StatusCode, Problem> {
    let product = ProductId::from_uuid(product_id);
    state
        .wishlists
        .add(member(&identity)?, &caller(&identity), product)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a product; 204 whether or not it was there.
#[utoipa::path(delete, path = "/v1/wishlist/{product_id}", tag = "catalog",
    security(("bearer" = [])), params(("product_id" = Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
    (status = 403, body = Problem)))]
pub async fn remove_from_wishlist(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Basic>,
    AppPath(product_id): AppPath<Uuid>,
) -> Result<StatusCode, Problem> {
    let product = ProductId::from_uuid(product_id);
    state.wishlists.remove(member(&identity)?, product).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The wishlist routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_wishlist))
        .routes(routes!(add_to_wishlist, remove_from_wishlist))
}
