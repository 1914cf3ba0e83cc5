//! `/v1/cart`: the caller's cart (verified members). Only the caller's own: no path or body
//! names a member.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use openrun_domain::product::ProductStatus;
use openrun_domain::{ProductId, VariantId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::extract::{AppJson, AppPath};
use super::identity::{Auth, Basic};
use super::problem::{Problem, catalogue};
use super::products::{CURRENCY, actor, caller};
use crate::cart::{CartLine, MAX_LINES, MAX_QUANTITY, Put};
use crate::members::FieldError;

/// A line of the cart as it is now.
#[derive(Debug, Serialize, ToSchema)]
pub struct CartItem {
    /// The product.
    pub product_id: Uuid,
    /// The variant (size).
    pub variant_id: Uuid,
    /// The product's name (empty when the caller can no longer see it).
    pub name: String,
    /// The variant's label.
    pub label: String,
    /// Units, 1 to 99.
    pub quantity: u32,
    /// The unit price now, in whole `currency` units.
    pub unit_price: i64,
    /// `unit_price * quantity`.
    pub line_total: i64,
    /// The product's status now (`unavailable` when the caller can no longer see it).
    pub status: String,
    /// Whether the variant is sold out.
    pub sold_out: bool,
    /// Whether the line can be ordered now: on sale, still sold, not sold out.
    pub orderable: bool,
}

/// The cart.
#[derive(Debug, Serialize, ToSchema)]
pub struct CartView {
    /// The lines, in the order they were first put.
    pub items: Vec<CartItem>,
    /// The sum of the lines that can be ordered now.
    pub total: i64,
    /// Always `KRW`.
    pub currency: &'static str,
}

/// How many units of a variant the cart holds.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CartItemBody {
    /// 1 to 99.
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: i64,
}

fn unavailable(cause: anyhow::Error) -> Problem {
    tracing::warn!(error = format!("{cause:#}"), "the cart store failed");
    Problem::unavailable(
        "the cart cannot be used now; nothing was changed",
        std::time::Duration::from_secs(1),
    )
}

async fn view(state: &AppState, identity: &crate::auth::Identity) -> Result<CartView, Problem> {
    let member = actor(identity)?.member_id;
    let now = state.clock.now();
    let lines = state.cart.lines(member, now).await.map_err(unavailable)?;
    let viewer = caller(identity);
    let mut items = Vec::with_capacity(lines.len());
    let mut total = 0i64;
    for line in lines {
        let product = state
            .catalog
            .product(line.product_id)
            .filter(|p| state.catalog.visible(p, &viewer, now));
        let item = match product {
            Some(product) => {
                let status = product.status_at(now);
                let variant = product.state.variant(line.variant_id);
                let sold_out = product.level(line.variant_id).available() <= 0;
                let sold = variant.is_some_and(|v| !v.retired) && !product.state.deleted;
                let price = product.state.price.minor();
                let line_total = price.saturating_mul(i64::from(line.quantity));
                let orderable = sold && !sold_out && status == ProductStatus::OnSale;
                if orderable {
                    total = total.saturating_add(line_total);
                }
                CartItem {
                    product_id: line.product_id.as_uuid(),
                    variant_id: line.variant_id.as_uuid(),
                    name: product.state.name.clone(),
                    label: variant.map(|v| v.label.clone()).unwrap_or_default(),
                    quantity: line.quantity,
                    unit_price: price,
                    line_total,
                    status: status.to_string(),
                    sold_out,
                    orderable,
                }
            }
            None => CartItem {
                product_id: line.product_id.as_uuid(),
                variant_id: line.variant_id.as_uuid(),
                name: String::new(),
                label: String::new(),
                quantity: line.quantity,
                unit_price: 0,
                line_total: 0,
                status: "unavailable".into(),
                sold_out: false,
                orderable: false,
            },
        };
        items.push(item);
    }
    Ok(CartView {
        items,
        total,
        currency: CURRENCY,
    })
}

/// The caller's cart, each line with its current price, status and availability. A cart
/// expires 14 days after its last change.
#[utoipa::path(get, path = "/v1/cart", tag = "cart", security(("bearer" = [])),
    responses((status = 200, body = CartView), (status = 401, body = Problem),
    (status = 403, body = Problem), (status = 503, body = Problem)))]
pub async fn get_cart(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Basic>,
) -> Result<Json<CartView>, Problem> {
    Ok(Json(view(&state, &identity).await?))
}

/// Puts a variant in the caller's cart with this quantity (replacing the quantity it had).
/// Only a product waiting or on sale, a variant still sold; at most 50 lines.
#[utoipa::path(put, path = "/v1/cart/items/{variant_id}", tag = "cart", security(("bearer" = [])),
    params(("variant_id" = Uuid, Path)),
    request_body = CartItemBody,
    responses((status = 200, body = CartView), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    (status = 409, body = Problem, description = "Not waiting or on sale, or the cart is full"),
    (status = 413, body = Problem), (status = 415, body = Problem),
    (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn put_item(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Basic>,
    AppPath(variant_id): AppPath<Uuid>,
    AppJson(body): AppJson<CartItemBody>,
) -> Result<Json<CartView>, Problem> {
    let quantity = u32::try_from(body.quantity)
        .ok()
        .filter(|q| (1..=MAX_QUANTITY).contains(q))
        .ok_or_else(|| Problem::invalid(vec![FieldError::new("quantity", "1 to 99")]))?;
    let member = actor(&identity)?.member_id;
    let now = state.clock.now();
    let variant = VariantId::from_uuid(variant_id);
    let viewer = caller(&identity);
    let product = state
        .catalog
        .product_of_variant(variant)
        .filter(|p| state.catalog.visible(p, &viewer, now) && !p.state.deleted)
        .filter(|p| p.state.variant(variant).is_some_and(|v| !v.retired))
        .ok_or_else(Problem::not_found)?;
    let status = product.status_at(now);
    if !matches!(status, ProductStatus::Waiting | ProductStatus::OnSale) {
        return Err(Problem::of(catalogue::NOT_ON_SALE).with_detail(format!(
            "the product is {status}: only a product waiting or on sale goes in a cart"
        )));
    }
    let line = CartLine {
        product_id: ProductId::from_uuid(product.state.product_id.as_uuid()),
        variant_id: variant,
        quantity,
    };
    match state
        .cart
        .put(member, line, now)
        .await
        .map_err(unavailable)?
    {
        Put::Done => Ok(Json(view(&state, &identity).await?)),
        Put::Full => Err(Problem::of(catalogue::CART_FULL).with_detail(format!(
            "a cart holds at most {MAX_LINES} lines; take one out first"
        ))),
    }
}

/// Takes a variant out of the caller's cart (nothing happens when it is not there).
#[utoipa::path(delete, path = "/v1/cart/items/{variant_id}", tag = "cart", security(("bearer" = [])),
    params(("variant_id" = Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
    (status = 403, body = Problem), (status = 503, body = Problem)))]
pub async fn delete_item(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Basic>,
    AppPath(variant_id): AppPath<Uuid>,
) -> Result<StatusCode, Problem> {
    let member = actor(&identity)?.member_id;
    state
        .cart
        .remove(
            member,
            &[VariantId::from_uuid(variant_id)],
            state.clock.now(),
        )
        .await
        .map_err(unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The cart routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_cart))
        .routes(routes!(put_item, delete_item))
}
