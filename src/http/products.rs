//! `/v1/products`: products with their variants, status, schedules, stock and history.
//! Sellers create and manage their own; admins manage all; anyone browses what is visible.
//! Prices are whole KRW (no minor unit), and every view says so.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use openrun_domain::product::{ProductCommand, ProductError, ProductStatus, ScheduleState};
use openrun_domain::stock::StockError;
use openrun_domain::{Actor, CategoryId, MemberId, ProductId, ScheduleId, VariantId};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::extract::{AppJson, AppPath, AppQuery, IdempotencyKey, IfMatch};
use super::identity::{Admin, Auth, MaybeAuth, Seller};
use super::problem::{Problem, catalogue};
use crate::auth::Identity;
use crate::catalog::live::{Filter, Level, LiveProduct, Viewer};
use crate::catalog::products::{DetailsChange, Guard, NewProduct, SupplyChange, Written};
use crate::catalog::search::Query;
use crate::catalog::{ProductFailure, instant};
use crate::members::FieldError;

/// The currency of every price.
pub const CURRENCY: &str = "KRW";
/// Default page size.
const DEFAULT_PAGE: usize = 20;
/// Largest page size.
const MAX_PAGE: usize = 100;

/// A page size asked for: 1 to [`MAX_PAGE`], `default` when not given.
fn page_size(asked: Option<usize>, default: usize) -> Result<usize, Problem> {
    let size = asked.unwrap_or(default);
    if !(1..=MAX_PAGE).contains(&size) {
        return Err(Problem::of(catalogue::INVALID_QUERY)
            .with_detail(format!("size must be 1 to {MAX_PAGE}")));
    }
    Ok(size)
}

fn field(name: &str, message: impl Into<String>) -> Problem {
    Problem::invalid(vec![FieldError::new(name, message)])
}

impl From<ProductError> for Problem {
    fn from(e: ProductError) -> Self {
        use ProductError as E;
        let message = e.to_string();
        match e {
            E::NotRegistered | E::ScheduleNotFound { .. } | E::VariantNotFound => {
                Problem::not_found()
            }
            E::Deleted => Problem::of(catalogue::PRODUCT_DELETED).with_detail(message),
            E::RoleNotAllowed { .. } | E::NotOwner => Problem::forbidden(&message),
            E::BlankName | E::NameTooLong { .. } => field("name", message),
            E::DescriptionTooLong { .. } => field("description", message),
            E::NonPositivePrice | E::PriceTooHigh { .. } => field("price", message),
            E::NoVariants
            | E::TooManyVariants { .. }
            | E::BlankVariantLabel
            | E::VariantLabelTooLong { .. }
            | E::DuplicateVariantLabel { .. } => field("variants", message),
            E::PurchaseLimitOutOfRange { .. } => field("purchase_limit", message),
            E::ReasonTooLong { .. } => field("reason", message),
            E::ScheduleNotInFuture | E::ScheduleNotWholeSeconds | E::ScheduleTooSoon { .. } => {
                field("at", message)
            }
            E::NoThumbnail | E::TooManyImages { .. } | E::BlankImageKey => field("images", message),
            E::ScheduledByAdmin => Problem::forbidden(&message),
            E::AlreadyInStatus { .. } | E::TransitionNotAllowed { .. } | E::SuspendedByAdmin => {
                Problem::of(catalogue::TRANSITION_NOT_ALLOWED).with_detail(message)
            }
            E::ScheduleClash { .. }
            | E::ScheduleNeverApplies { .. }
            | E::ScheduleBreaksAnother { .. }
            | E::TooManySchedules { .. }
            | E::DuplicateSchedule { .. }
            | E::ScheduleNotDue { .. } => {
                Problem::of(catalogue::SCHEDULE_REFUSED).with_detail(message)
            }
            E::ScheduleNotPending { .. } | E::ScheduleDue { .. } => {
                Problem::of(catalogue::SCHEDULE_CLOSED).with_detail(message)
            }
            E::Frozen { .. } => Problem::of(catalogue::FROZEN).with_detail(message),
            E::DuplicateVariantId | E::VariantAlreadyRetired | E::LastVariant => {
                Problem::of(catalogue::VARIANT_CONFLICT).with_detail(message)
            }
            E::AlreadyRegistered => Problem::of(catalogue::CONFLICT).with_detail(message),
        }
    }
}

impl From<StockError> for Problem {
    fn from(e: StockError) -> Self {
        use StockError as E;
        let message = e.to_string();
        match e {
            E::RoleNotAllowed { .. } | E::NotOwner => Problem::forbidden(&message),
            E::NonPositiveQuantity => field("add", message),
            E::ZeroAdjustment => field("adjust", message),
            E::BlankReason | E::ReasonTooLong { .. } => field("reason", message),
            E::RequestReused => Problem::of(catalogue::IDEMPOTENCY_KEY_REUSED).with_detail(
                "this Idempotency-Key was used for another change of this variant's supply",
            ),
            _ => Problem::of(catalogue::SUPPLY_CONFLICT).with_detail(message),
        }
    }
}

impl From<ProductFailure> for Problem {
    fn from(e: ProductFailure) -> Self {
        match e {
            ProductFailure::Refused(e) => e.into(),
            ProductFailure::StockRefused(e) => e.into(),
            ProductFailure::NotFound => Problem::not_found(),
            ProductFailure::Invalid {
                field: name,
                message,
            } => field(name, message),
            ProductFailure::UnknownCategory => field("category_id", "no such category"),
            ProductFailure::ArchivedCategory => field(
                "category_id",
                "the category is archived and takes no new products",
            ),
            ProductFailure::SellerSuspended => Problem::of(catalogue::SELLER_SUSPENDED)
                .with_detail("an admin suspended this seller"),
            ProductFailure::KeyReused => Problem::of(catalogue::IDEMPOTENCY_KEY_REUSED)
                .with_detail("this Idempotency-Key was used for a different request"),
            ProductFailure::PreconditionFailed { actual } => {
                Problem::of(catalogue::PRECONDITION_FAILED)
                    .with_detail(format!("the stock stream is at version {actual}"))
            }
            ProductFailure::Conflict => Problem::of(catalogue::CONFLICT)
                .with_detail("the product kept changing; read it and try again"),
            ProductFailure::InFlight => Problem::of(catalogue::CONFLICT).with_detail(
                "a request with this Idempotency-Key is making the change now; send it again \
                 in a moment",
            ),
            ProductFailure::OutcomeUnknown => Problem::of(catalogue::OUTCOME_UNKNOWN).with_detail(
                "the change may have been recorded: read the resource before sending it again",
            ),
            ProductFailure::NotEnoughLeft { available } => Problem::of(catalogue::SUPPLY_CONFLICT)
                .with_detail(format!(
                    "only {available} units are left to sell; the adjustment would take more"
                )),
            ProductFailure::Incomplete(cause) => {
                tracing::error!(error = format!("{cause:#}"), "a change was stored in part");
                Problem::unavailable(
                    "only part of the change is stored; send the same request again to complete it",
                    std::time::Duration::from_secs(1),
                )
            }
            ProductFailure::Recorded { version, cause } => {
                tracing::error!(
                    error = format!("{cause:#}"),
                    version,
                    "a recorded change could not be read back"
                );
                Problem::of(catalogue::RECORDED).with_detail(format!(
                    "the change was recorded (the stream is at version {version}) but could not \
                     be read back: read the resource instead of sending the change again"
                ))
            }
            ProductFailure::Unavailable(cause) => {
                tracing::error!(error = format!("{cause:#}"), "product store unavailable");
                Problem::unavailable(
                    "the store is unavailable; nothing was changed",
                    std::time::Duration::from_secs(1),
                )
            }
        }
    }
}

/// The caller as the domain sees them.
pub(super) fn actor(identity: &Identity) -> Result<Actor, Problem> {
    let id = Uuid::parse_str(&identity.member_id).map_err(|_| Problem::unauthorized())?;
    Ok(Actor::new(MemberId::from_uuid(id), identity.role))
}

/// What a signed-in caller is to the catalog.
pub fn caller(identity: &Identity) -> Viewer {
    viewer(Some(identity))
}

fn viewer(identity: Option<&Identity>) -> Viewer {
    let Some(identity) = identity else {
        return Viewer::Public(None);
    };
    let id = Uuid::parse_str(&identity.member_id)
        .ok()
        .map(MemberId::from_uuid);
    match (identity.role, id) {
        (crate::members::Role::Admin, _) => Viewer::Admin,
        (crate::members::Role::Seller, Some(id)) => Viewer::Seller(id),
        (_, id) => Viewer::Public(id),
    }
}

/// One size (or the single default option) of a product.
#[derive(Debug, Serialize, ToSchema)]
pub struct VariantView {
    /// Its id.
    pub variant_id: Uuid,
    /// Its option label, for example "270".
    pub label: String,
    /// No units left to sell.
    pub sold_out: bool,
    /// No longer sold (shown to its seller and admins only).
    pub retired: bool,
}

/// A product.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    /// Its id.
    pub product_id: Uuid,
    /// The seller who owns it.
    pub seller_id: Uuid,
    /// Its category.
    pub category_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Unit price in whole `currency` units.
    pub price: i64,
    /// Always `KRW`.
    pub currency: &'static str,
    /// The status in effect now.
    pub status: ProductStatus,
    /// Units one member may buy across its variants; `null` for no limit.
    pub purchase_limit: Option<u32>,
    /// Its sizes.
    pub variants: Vec<VariantView>,
    /// When a pending schedule puts it on sale.
    pub opens_at: Option<DateTime<Utc>>,
    /// When a pending schedule ends its sale.
    pub ends_at: Option<DateTime<Utc>>,
    /// Deleted by its seller or an admin (still shown to its buyers).
    pub deleted: bool,
    /// Its stream's version.
    pub version: u64,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

fn sold_out(product: &LiveProduct, variant: VariantId) -> bool {
    product.level(variant).available() <= 0
}

fn product_view(product: &LiveProduct, viewer: &Viewer, now: DateTime<Utc>) -> ProductView {
    let full = viewer.class(product) != "public";
    let s = &product.state;
    ProductView {
        product_id: s.product_id.as_uuid(),
        seller_id: s.seller_id.as_uuid(),
        category_id: s.category_id.as_uuid(),
        name: s.name.clone(),
        description: s.description.clone(),
        price: s.price.minor(),
        currency: CURRENCY,
        status: product.status_at(now),
        purchase_limit: s.purchase_limit,
        variants: s
            .variants
            .iter()
            .filter(|v| full || !v.retired)
            .map(|v| VariantView {
                variant_id: v.variant_id.as_uuid(),
                label: v.label.clone(),
                sold_out: v.retired || sold_out(product, v.variant_id),
                retired: v.retired,
            })
            .collect(),
        opens_at: s.next_instant_of(ProductStatus::OnSale, now),
        ends_at: s.next_instant_of(ProductStatus::Ended, now),
        deleted: s.deleted,
        version: product.version,
        created_at: product.created_at,
        updated_at: product.updated_at,
    }
}

/// The ETag of a view: it changes with what the view shows (the product's events, which
/// variants are sold out, the status in effect, so at a drop's instant) and the viewer's
/// class, and with nothing else: it does not tell how many orders were placed.
fn etag(product: &LiveProduct, viewer: &Viewer, now: DateTime<Utc>) -> String {
    format!(
        "\"{}-{}-{}-{}\"",
        product.version,
        product.status_at(now).as_str(),
        viewer.class(product),
        product.sold_out_flags()
    )
}

/// A view written by a command: `201`/`200` with the stream version as `ETag`.
fn written(status: StatusCode, w: &Written, viewer: &Viewer, now: DateTime<Utc>) -> Response {
    let mut response = (status, Json(product_view(&w.product, viewer, now))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", w.version)) {
        response.headers_mut().insert("x-stream-version", v);
    }
    if w.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// A new product.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProductBody {
    /// A category that takes products.
    pub category_id: Uuid,
    /// 1 to 200 characters.
    pub name: String,
    /// Up to 20,000 characters.
    #[serde(default)]
    pub description: String,
    /// Unit price in whole KRW, 1 to 1,000,000,000,000.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub price: i64,
    /// Option labels (sizes), 1 to 50, unique ignoring case; leave out for one default
    /// variant.
    #[serde(default)]
    pub variants: Vec<String>,
    /// Units one member may buy across the variants, 1 to 100; leave out for no limit.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub purchase_limit: Option<u32>,
}

/// Registers a product for the calling seller (never one named in the body). With an
/// `Idempotency-Key`, a retry answers with the product the first request made.
#[utoipa::path(post, path = "/v1/products", tag = "catalog", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,128}$", description = "Makes a retry safe: 1 to 128 visible ASCII characters")),
    request_body = NewProductBody, responses((status = 201, body = ProductView,
    headers(("Idempotent-Replayed" = String, description = "true when a retry with the same Idempotency-Key got the first answer"), ("x-stream-version" = String, description = "The product stream's version after the change, quoted"))),
    (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
    (status = 422, body = Problem)))]
pub async fn create_product(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Seller>,
    IdempotencyKey(key): IdempotencyKey,
    AppJson(body): AppJson<NewProductBody>,
) -> Result<Response, Problem> {
    let new = NewProduct {
        category_id: CategoryId::from_uuid(body.category_id),
        name: body.name,
        description: body.description,
        price: body.price,
        variants: body.variants,
        purchase_limit: body.purchase_limit,
    };
    let w = state
        .products
        .create(actor(&identity)?, key.as_deref(), new)
        .await?;
    Ok(written(
        StatusCode::CREATED,
        &w,
        &viewer(Some(&identity)),
        state.clock.now(),
    ))
}

/// A listing's query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only products in this status now.
    pub status: Option<ProductStatus>,
    /// Only products of this category.
    pub category_id: Option<Uuid>,
    /// Only products of this seller.
    pub seller_id: Option<Uuid>,
    /// Only products whose name or description contains this (2 to 50 characters).
    #[param(min_length = 2, max_length = 50)]
    pub q: Option<String>,
    /// Products per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub size: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A product in a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductSummary {
    /// Its id.
    pub product_id: Uuid,
    /// Its seller.
    pub seller_id: Uuid,
    /// Its category.
    pub category_id: Uuid,
    /// Its name.
    pub name: String,
    /// Unit price in whole `currency` units.
    pub price: i64,
    /// Always `KRW`.
    pub currency: &'static str,
    /// The status in effect now.
    pub status: ProductStatus,
    /// When a pending schedule puts it on sale.
    pub opens_at: Option<DateTime<Utc>>,
    /// When a pending schedule ends its sale.
    pub ends_at: Option<DateTime<Utc>>,
    /// Every variant sold out.
    pub sold_out: bool,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

/// One page of products, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductPage {
    /// The products.
    pub items: Vec<ProductSummary>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
    /// Products matching, counted up to 10,000.
    pub total: usize,
    /// False when more than 10,000 match (then `total` is 10,000).
    pub total_exact: bool,
}

fn summary(product: &LiveProduct, now: DateTime<Utc>) -> ProductSummary {
    let s = &product.state;
    ProductSummary {
        product_id: s.product_id.as_uuid(),
        seller_id: s.seller_id.as_uuid(),
        category_id: s.category_id.as_uuid(),
        name: s.name.clone(),
        price: s.price.minor(),
        currency: CURRENCY,
        status: product.status_at(now),
        opens_at: s.next_instant_of(ProductStatus::OnSale, now),
        ends_at: s.next_instant_of(ProductStatus::Ended, now),
        sold_out: s
            .variants
            .iter()
            .all(|v| v.retired || sold_out(product, v.variant_id)),
        created_at: product.created_at,
    }
}

fn filter(query: &ListQuery) -> Result<(Filter, usize, String), Problem> {
    let size = page_size(query.size, DEFAULT_PAGE)?;
    let q = match &query.q {
        Some(q) => Some(
            Query::parse(q)
                .map_err(|e| Problem::of(catalogue::INVALID_QUERY).with_detail(e.to_string()))?,
        ),
        None => None,
    };
    let bound = format!(
        "{:?}|{:?}|{:?}|{}",
        query.status,
        query.category_id,
        query.seller_id,
        q.as_ref().map_or("", |q| q.text())
    );
    let filter = Filter {
        status: query.status,
        category_id: query.category_id.map(CategoryId::from_uuid),
        seller_id: query.seller_id.map(MemberId::from_uuid),
        q,
    };
    Ok((filter, size, bound))
}

/// Lists products newest first. Visitors and buyers see waiting, on-sale and ended products;
/// a seller also sees all of their own; an admin sees all. Pages follow a keyset cursor, so
/// status changes during a drop neither repeat nor skip a product.
#[utoipa::path(get, path = "/v1/products", tag = "catalog", params(ListQuery),
    responses((status = 200, body = ProductPage), (status = 400, body = Problem),
    (status = 401, body = Problem)))]
pub async fn list_products(
    State(state): State<AppState>,
    MaybeAuth(identity): MaybeAuth,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<ProductPage>, Problem> {
    let (filter, size, bound) = filter(&query)?;
    let after = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(state.cursor_key.open(c, &bound).ok_or_else(|| {
            Problem::of(catalogue::INVALID_CURSOR)
                .with_detail("the cursor is not one this listing gave out")
        })?),
        None => None,
    };
    let now = state.clock.now();
    let page = state
        .catalog
        .list(&viewer(identity.as_ref()), &filter, after, size, now);
    Ok(Json(ProductPage {
        items: page.items.iter().map(|p| summary(p, now)).collect(),
        next_cursor: page.next.map(|at| state.cursor_key.seal(at, &bound)),
        total: page.total,
        total_exact: page.total_exact,
    }))
}

/// The product `id` if `viewer` may see it now.
fn visible(state: &AppState, id: Uuid, viewer: &Viewer) -> Result<Arc<LiveProduct>, Problem> {
    state
        .catalog
        .product(ProductId::from_uuid(id))
        .filter(|p| state.catalog.visible(p, viewer, state.clock.now()))
        .ok_or_else(Problem::not_found)
}

/// The product `id` if `viewer` is its seller or an admin: 404 if they cannot see it, 403 if
/// they can but it is not theirs.
fn owned(state: &AppState, id: Uuid, viewer: &Viewer) -> Result<Arc<LiveProduct>, Problem> {
    let product = visible(state, id, viewer)?;
    if viewer.class(&product) == "public" {
        return Err(Problem::forbidden(
            "only the product's seller or an admin may",
        ));
    }
    Ok(product)
}

/// A product, if the caller may see it (a hidden one is 404, never 304). Answers carry an
/// `ETag` that differs per viewer class and changes when the status in effect changes at a
/// drop's instant; `If-None-Match` with it is 304.
#[utoipa::path(get, path = "/v1/products/{id}", tag = "catalog",
    params(("id" = Uuid, Path)), responses((status = 200, body = ProductView),
    (status = 304, description = "Unchanged"), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get_product(
    State(state): State<AppState>,
    MaybeAuth(identity): MaybeAuth,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let viewer = viewer(identity.as_ref());
    let product = visible(&state, id, &viewer)?;
    let now = state.clock.now();
    let tag = etag(&product, &viewer, now);
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == tag);
    let body = if unchanged {
        None
    } else {
        Some(state.views.get_with(format!("{id}:{tag}"), || {
            Arc::from(serde_json::to_vec(&product_view(&product, &viewer, now)).unwrap_or_default())
        }))
    };
    Ok(cached_response(&tag, body))
}

fn cached_response(tag: &str, body: Option<Arc<[u8]>>) -> Response {
    let mut response = match body {
        None => StatusCode::NOT_MODIFIED.into_response(),
        Some(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body.to_vec(),
        )
            .into_response(),
    };
    let headers = response.headers_mut();
    if let Ok(tag) = HeaderValue::from_str(tag) {
        headers.insert(header::ETAG, tag);
    }
    headers.insert(header::VARY, HeaderValue::from_static("Authorization"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    response
}

/// `null` and absent differ: `purchase_limit: null` removes the limit.
fn double_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

/// A change of a product; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductChangeBody {
    /// Another category (one that takes products).
    pub category_id: Option<Uuid>,
    /// Another name.
    pub name: Option<String>,
    /// Another description.
    pub description: Option<String>,
    /// Another unit price in whole KRW (refused in the freeze window before a drop).
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub price: Option<i64>,
    /// Another purchase limit, or `null` for none (refused in the freeze window).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub purchase_limit: Option<Option<u32>>,
}

/// Changes details, price or purchase limit (the seller who owns it, or an admin).
#[utoipa::path(patch, path = "/v1/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = ProductChangeBody,
    responses((status = 200, body = ProductView), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn change_product(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Seller>,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<ProductChangeBody>,
) -> Result<Response, Problem> {
    let change = DetailsChange {
        category_id: body.category_id.map(CategoryId::from_uuid),
        name: body.name,
        description: body.description,
        price: body.price,
        purchase_limit: body.purchase_limit,
    };
    let product = ProductId::from_uuid(id);
    let w = state
        .products
        .change_details(actor(&identity)?, product, change)
        .await?;
    Ok(written(
        StatusCode::OK,
        &w,
        &viewer(Some(&identity)),
        state.clock.now(),
    ))
}

/// Deletes a product (soft): hidden and not buyable for good, still shown to its buyers; its
/// pending schedules are cancelled.
#[utoipa::path(delete, path = "/v1/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 204), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    (status = 409, body = Problem)))]
pub async fn delete_product(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Seller>,
    AppPath(id): AppPath<Uuid>,
) -> Result<StatusCode, Problem> {
    let actor = actor(&identity)?;
    let command = ProductCommand::Delete { actor };
    state
        .products
        .run(actor, ProductId::from_uuid(id), command, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A status change now.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    /// The status to move to.
    pub status: ProductStatus,
    /// Why (shown in the product's history), up to 500 characters.
    pub reason: Option<String>,
}

/// Moves a product to another status now, along the status graph. An admin suspends a
/// product this way, with a reason (required) shown in its history; only an admin lifts
/// that.
#[utoipa::path(put, path = "/v1/products/{id}/status", tag = "catalog",
    security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = StatusBody,
    responses((status = 200, body = ProductView), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn change_status(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Seller>,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<StatusBody>,
) -> Result<Response, Problem> {
    let actor = actor(&identity)?;
    crate::catalog::products::check_reason(body.reason.as_deref())?;
    let blank = body.reason.as_deref().is_none_or(|r| r.trim().is_empty());
    if actor.is_admin() && body.status == ProductStatus::Suspended && blank {
        return Err(field("reason", "an admin's suspension says why"));
    }
    let command = ProductCommand::ChangeStatus {
        actor,
        to: body.status,
        reason: body.reason,
    };
    let w = state
        .products
        .run(actor, ProductId::from_uuid(id), command, None)
        .await?;
    Ok(written(
        StatusCode::OK,
        &w,
        &viewer(Some(&identity)),
        state.clock.now(),
    ))
}

/// A new variant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVariantBody {
    /// Its option label, 1 to 30 characters, unique on the product ignoring case.
    pub label: String,
}

/// Adds a variant (a size) with its own stock (refused in the freeze window before a drop).
#[utoipa::path(post, path = "/v1/products/{id}/variants", tag = "catalog",
    security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = NewVariantBody,
    responses((status = 201, body = ProductView), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn add_variant(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Seller>,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<NewVariantBody>,
) -> Result<Response, Problem> {
    let product = ProductId::from_uuid(id);
    let (w, _) = state
        .products
        .add_variant(actor(&identity)?, product, body.label)
        .await?;
    Ok(written(
        StatusCode::CREATED,
        &w,
        &viewer(Some(&identity)),
        state.clock.now(),
    ))
}

/// Retires a variant: it is no longer sold; the last one still sold cannot be retired.
#[utoipa::path(delete, path = "/v1/products/{id}/variants/{variant_id}", tag = "catalog",
    security(("bearer" = [])), params(("id" = Uuid, Path), ("variant_id" = Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
    (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn retire_variant(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Seller>,
    AppPath((id, variant_id)): AppPath<(Uuid, Uuid)>,
) -> Result<StatusCode, Problem> {
    let actor = actor(&identity)?;
    let command = ProductCommand::RetireVariant {
        actor,
        variant_id: VariantId::from_uuid(variant_id),
    };
    state
        .products
        .run(actor, ProductId::from_uuid(id), command, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A change of a variant's supply: exactly one of `add` and `adjust`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SupplyBody {
    /// Units received (above zero).
    pub add: Option<i64>,
    /// A correction, up or down (not zero); needs `reason`.
    pub adjust: Option<i64>,
    /// Why the supply is adjusted.
    pub reason: Option<String>,
}

/// A variant's stock.
#[derive(Debug, Serialize, ToSchema)]
pub struct VariantStock {
    /// The variant.
    pub variant_id: Uuid,
    /// Its label.
    pub label: String,
    /// No longer sold.
    pub retired: bool,
    /// Units supplied.
    pub supply: i64,
    /// Units sold, net of those given back.
    pub sold: i64,
    /// Units left to sell.
    pub available: i64,
    /// The stock stream's version, for `If-Match`.
    pub version: u64,
}

fn variant_stock(product: &LiveProduct, variant: VariantId, level: Level) -> VariantStock {
    let v = product.state.variant(variant);
    VariantStock {
        variant_id: variant.as_uuid(),
        label: v.map(|v| v.label.clone()).unwrap_or_default(),
        retired: v.is_some_and(|v| v.retired),
        supply: level.supply,
        sold: level.sold,
        available: level.available(),
        version: level.version,
    }
}

fn supply_change(body: SupplyBody) -> Result<SupplyChange, Problem> {
    match (body.add, body.adjust, body.reason) {
        (Some(n), None, None) => Ok(SupplyChange::Add(n)),
        (None, Some(delta), Some(reason)) => Ok(SupplyChange::Adjust { delta, reason }),
        (None, Some(_), None) => Err(field("reason", "an adjustment needs a reason")),
        _ => Err(field(
            "add",
            "send either {\"add\": n} or {\"adjust\": n, \"reason\": \"...\"}",
        )),
    }
}

/// Adds to or adjusts one variant's supply (its seller or an admin). It needs `If-Match`
/// (the stock stream's version; 412 when it moved) or an `Idempotency-Key` (applied once),
/// so that a retry never changes the supply twice; with neither, 428.
#[utoipa::path(post, path = "/v1/products/{id}/variants/{variant_id}/stock", tag = "catalog",
    security(("bearer" = [])), params(("id" = Uuid, Path), ("variant_id" = Uuid, Path),
    ("If-Match" = Option<String>, Header, pattern = "^\"[0-9]{1,19}\"$", description = "The stock stream version the change is for, as an ETag such as \"3\""), ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,128}$", description = "Makes a retry safe: 1 to 128 visible ASCII characters")),
    request_body = SupplyBody, responses((status = 200, body = VariantStock,
    headers(("Idempotent-Replayed" = String, description = "true when a retry with the same Idempotency-Key got the first answer"), ("ETag" = String, description = "The stock stream's version, for If-Match"))),
    (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
    (status = 404, body = Problem), (status = 409, body = Problem), (status = 412, body = Problem),
    (status = 422, body = Problem), (status = 428, body = Problem)))]
pub async fn change_supply(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Seller>,
    AppPath((id, variant_id)): AppPath<(Uuid, Uuid)>,
    IfMatch(if_match): IfMatch,
    IdempotencyKey(key): IdempotencyKey,
    AppJson(body): AppJson<SupplyBody>,
) -> Result<Response, Problem> {
    let guard = Guard {
        version: if_match,
        key: key.as_deref(),
    };
    if guard == Guard::default() {
        return Err(Problem::of(catalogue::PRECONDITION_REQUIRED).with_detail(
            "send If-Match (the stock stream's version) or an Idempotency-Key, \
                 so that a retry cannot change the supply twice",
        ));
    }
    let (product, variant) = (ProductId::from_uuid(id), VariantId::from_uuid(variant_id));
    let (product, level, replayed) = state
        .products
        .change_supply(
            actor(&identity)?,
            product,
            variant,
            supply_change(body)?,
            guard,
        )
        .await?;
    let mut response = Json(variant_stock(&product, variant, level)).into_response();
    if let Ok(tag) = HeaderValue::from_str(&format!("\"{}\"", level.version)) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A product's stock.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockView {
    /// Per variant.
    pub items: Vec<VariantStock>,
}

/// Supply, units sold and units available per variant (its seller or an admin).
#[utoipa::path(get, path = "/v1/products/{id}/stock", tag = "catalog", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = StockView),
    (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
    (status = 404, body = Problem)))]
pub async fn get_stock(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Seller>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<StockView>, Problem> {
    let product = owned(&state, id, &viewer(Some(&identity)))?;
    let items = product
        .state
        .variants
        .iter()
        .map(|v| variant_stock(&product, v.variant_id, product.level(v.variant_id)))
        .collect();
    Ok(Json(StockView { items }))
}

/// A scheduled status change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewScheduleBody {
    /// The status to move to.
    pub status: ProductStatus,
    /// When, in RFC 3339 with an offset and whole seconds, at least 10 s ahead.
    pub at: String,
}

/// A scheduled status change.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    /// Its id.
    pub schedule_id: Uuid,
    /// The status it moves to.
    pub status: ProductStatus,
    /// When.
    pub at: DateTime<Utc>,
    /// pending, fired, skipped, cancelled or superseded.
    pub state: ScheduleState,
}

/// A product's schedules.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    /// Soonest first.
    pub items: Vec<ScheduleView>,
}

fn schedule_view(product: &LiveProduct, id: ScheduleId) -> Option<ScheduleView> {
    let s = product.state.schedules.get(&id)?;
    Some(ScheduleView {
        schedule_id: id.as_uuid(),
        status: s.to,
        at: s.due_at,
        state: s.state,
    })
}

/// Schedules a status change (its seller or an admin): refused when another is pending at
/// the same instant, when the status graph could never apply it from the product's planned
/// path, and in the freeze window before a drop. With an `Idempotency-Key`, a retry answers
/// with the schedule the first request made.
#[utoipa::path(post, path = "/v1/products/{id}/schedules", tag = "catalog",
    security(("bearer" = [])), params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,128}$", description = "Makes a retry safe: 1 to 128 visible ASCII characters")),
    request_body = NewScheduleBody, responses((status = 201, body = ScheduleView,
    headers(("Idempotent-Replayed" = String, description = "true when a retry with the same Idempotency-Key got the first answer"))),
    (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
    (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_schedule(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Seller>,
    AppPath(id): AppPath<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
    AppJson(body): AppJson<NewScheduleBody>,
) -> Result<Response, Problem> {
    let at = instant::parse(&body.at).map_err(|e| field("at", e.to_string()))?;
    let (w, schedule) = state
        .products
        .schedule(
            actor(&identity)?,
            ProductId::from_uuid(id),
            body.status,
            at,
            key.as_deref(),
        )
        .await?;
    let view = schedule_view(&w.product, schedule).ok_or_else(Problem::not_found)?;
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    if w.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A product's schedules, pending and closed (its seller or an admin).
#[utoipa::path(get, path = "/v1/products/{id}/schedules", tag = "catalog",
    security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = ScheduleList), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn list_schedules(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Seller>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<ScheduleList>, Problem> {
    let product = owned(&state, id, &viewer(Some(&identity)))?;
    let mut items: Vec<ScheduleView> = product
        .state
        .schedules
        .keys()
        .filter_map(|id| schedule_view(&product, *id))
        .collect();
    items.sort_by_key(|s| (s.at, s.schedule_id));
    Ok(Json(ScheduleList { items }))
}

/// Cancels a pending schedule (its seller or an admin); after it fired, 409.
#[utoipa::path(delete, path = "/v1/products/{id}/schedules/{schedule_id}", tag = "catalog",
    security(("bearer" = [])), params(("id" = Uuid, Path), ("schedule_id" = Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
    (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel_schedule(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Seller>,
    AppPath((id, schedule_id)): AppPath<(Uuid, Uuid)>,
) -> Result<StatusCode, Problem> {
    let actor = actor(&identity)?;
    let command = ProductCommand::CancelScheduledStatusChange {
        actor,
        schedule_id: ScheduleId::from_uuid(schedule_id),
    };
    state
        .products
        .run(actor, ProductId::from_uuid(id), command, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The history's query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only events after this log position (the `next_after` of the previous page).
    pub after: Option<u64>,
    /// Events per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub size: Option<usize>,
}

/// One recorded event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// Its position in the log.
    pub position: u64,
    /// `product` or `stock` (one stream per variant).
    pub stream_type: String,
    /// The product or variant id.
    pub stream_id: String,
    /// Its version in its stream.
    pub version: u64,
    /// What happened, for example `ProductStatusChanged`.
    pub event_type: String,
    /// The event as recorded.
    pub data: serde_json::Value,
    /// Who caused it: a member id, or `system:scheduler` for a scheduled change.
    pub actor: Option<String>,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A page of history.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// Oldest first.
    pub items: Vec<EventView>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next_after: Option<u64>,
}

/// The product's lifecycle and its variants' stock movements in log order (its seller or an
/// admin), paginated by log position.
#[utoipa::path(get, path = "/v1/products/{id}/events", tag = "catalog",
    security(("bearer" = [])), params(("id" = Uuid, Path), HistoryQuery),
    responses((status = 200, body = EventPage), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn product_events(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Seller>,
    AppPath(id): AppPath<Uuid>,
    AppQuery(query): AppQuery<HistoryQuery>,
) -> Result<Json<EventPage>, Problem> {
    let size = page_size(query.size, 50)?;
    let product = owned(&state, id, &viewer(Some(&identity)))?;
    let events = state
        .products
        .history(&product, query.after.unwrap_or(0), size + 1)
        .await?;
    Ok(Json(event_page(events, size)))
}

fn event_page(mut events: Vec<crate::eventstore::RecordedEvent>, size: usize) -> EventPage {
    let more = events.len() > size;
    events.truncate(size);
    EventPage {
        next_after: more
            .then(|| events.last().map(|e| e.global_position))
            .flatten(),
        items: events
            .into_iter()
            .map(|e| EventView {
                position: e.global_position,
                stream_type: e.stream_type,
                stream_id: e.stream_id,
                version: e.version,
                event_type: e.event_type,
                data: e.payload,
                actor: e.metadata.actor,
                recorded_at: e.recorded_at,
            })
            .collect(),
    }
}

/// Why a seller is suspended.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspensionBody {
    /// Shown in each suspended product's history, 1 to 500 characters.
    pub reason: String,
}

/// What a seller's suspension did.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuspensionView {
    /// Products suspended by it.
    pub products_suspended: usize,
}

/// Suspends a seller (admins only): their commands are refused, and their products are
/// suspended with the reason.
#[utoipa::path(put, path = "/v1/admin/sellers/{member_id}/suspension", tag = "admin",
    security(("bearer" = [])), params(("member_id" = Uuid, Path)), request_body = SuspensionBody,
    responses((status = 200, body = SuspensionView), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    (status = 409, body = Problem, description = "A product changed concurrently; send it again"),
    (status = 422, body = Problem),
    (status = 503, body = Problem, description = "Stored in part; send it again to complete it")))]
pub async fn suspend_seller(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Admin>,
    AppPath(member_id): AppPath<Uuid>,
    AppJson(body): AppJson<SuspensionBody>,
) -> Result<Json<SuspensionView>, Problem> {
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > openrun_domain::product::MAX_REASON_CHARS {
        return Err(field("reason", "1 to 500 characters"));
    }
    crate::catalog::products::check_reason(Some(reason))?;
    match state.members.me(&member_id.to_string()).await {
        Ok(p) if p.role == crate::members::Role::Seller => {}
        Ok(_) => return Err(field("member_id", "only a seller can be suspended")),
        Err(crate::members::MemberError::NotFound) => return Err(Problem::not_found()),
        Err(e) => return Err(e.into()),
    }
    let seller = MemberId::from_uuid(member_id);
    let products_suspended = state
        .products
        .suspend_seller(actor(&identity)?, seller, reason)
        .await?;
    Ok(Json(SuspensionView { products_suspended }))
}

/// Lifts a seller's suspension (admins only): they may act again; their products stay
/// suspended until an admin resumes each.
#[utoipa::path(delete, path = "/v1/admin/sellers/{member_id}/suspension", tag = "admin",
    security(("bearer" = [])), params(("member_id" = Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
    (status = 403, body = Problem)))]
pub async fn lift_seller_suspension(
    State(state): State<AppState>,
    _admin: Auth<Admin>,
    AppPath(member_id): AppPath<Uuid>,
) -> Result<StatusCode, Problem> {
    state
        .products
        .lift_seller_suspension(MemberId::from_uuid(member_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The product routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, change_product, delete_product))
        .routes(routes!(change_status))
        .routes(routes!(add_variant))
        .routes(routes!(retire_variant))
        .routes(routes!(change_supply))
        .routes(routes!(get_stock))
        .routes(routes!(create_schedule, list_schedules))
        .routes(routes!(cancel_schedule))
        .routes(routes!(product_events))
        .routes(routes!(suspend_seller, lift_seller_suspension))
}
