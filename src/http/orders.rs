//! `/v1/orders`: placing an order (verified members, with an `Idempotency-Key`) and reading
//! one's own orders.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use openrun_domain::{OrderId, ProductId, VariantId};
use serde::Deserialize;
use tracing::Instrument;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::extract::{AppJson, AppPath, ClientAddr, IdempotencyKey};
use super::identity::{Auth, Basic};
use super::problem::{Problem, SoldOutLine, catalogue};
use super::products::actor;
use crate::members::FieldError;
use crate::orders::lifecycle::{
    LifecycleError, OrderDetail, SellerFilter, SellerOrder, TimelineEntry,
};
use crate::orders::{Answer, NewLine, NewOrder, OrderFailure, OrderView};

impl From<LifecycleError> for Problem {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::NotFound => Problem::not_found(),
            LifecycleError::WrongStatus(detail) => {
                Problem::of(catalogue::ORDER_STATUS).with_detail(detail)
            }
            LifecycleError::WindowClosed(detail) => {
                Problem::of(catalogue::ORDER_WINDOW_CLOSED).with_detail(detail)
            }
            LifecycleError::Invalid { field, message } => {
                Problem::invalid(vec![FieldError::new(field, message)])
            }
            LifecycleError::Conflict => Problem::of(catalogue::CONFLICT)
                .with_detail("the order changed while this request was decided; send it again"),
            LifecycleError::OutcomeUnknown => Problem::of(catalogue::OUTCOME_UNKNOWN).with_detail(
                "the change may have been recorded: read the order to learn whether it was",
            ),
            LifecycleError::Recorded(cause) => {
                tracing::warn!(
                    error = format!("{cause:#}"),
                    "an order changed but could not be read back"
                );
                let mut problem = Problem::of(catalogue::RECORDED)
                    .with_detail("the change is recorded; read the order in a moment to see it");
                problem.retry_after = Some(1);
                problem
            }
            LifecycleError::Unavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "an order request failed");
                Problem::unavailable(
                    "nothing was changed; send it again",
                    std::time::Duration::from_secs(1),
                )
            }
        }
    }
}

impl From<OrderFailure> for Problem {
    fn from(e: OrderFailure) -> Self {
        let message = e.to_string();
        match e {
            OrderFailure::Invalid { field, message } => {
                Problem::invalid(vec![FieldError::new(&field, message)])
            }
            OrderFailure::NotOnSale { .. } => {
                Problem::of(catalogue::NOT_ON_SALE).with_detail(message)
            }
            OrderFailure::LimitReached { bought, .. } => Problem::of(catalogue::PURCHASE_LIMIT)
                .with_detail(format!(
                    "{message}; {bought} bought or being bought already"
                )),
            OrderFailure::SoldOut { short } => {
                let mut problem = Problem::of(catalogue::SOLD_OUT)
                    .with_detail("fewer units are left than the order asks for; nothing was held");
                problem.sold_out = Some(Box::new(
                    short
                        .into_iter()
                        .map(|(product, variant, available)| SoldOutLine {
                            product_id: product.as_uuid(),
                            variant_id: variant.as_uuid(),
                            available,
                        })
                        .collect(),
                ));
                problem
            }
            OrderFailure::InFlight => Problem::of(catalogue::ORDER_IN_FLIGHT)
                .with_detail("a request with this Idempotency-Key is placing the order now"),
            OrderFailure::KeyReused => Problem::of(catalogue::IDEMPOTENCY_KEY_REUSED)
                .with_detail("this Idempotency-Key was used for another order"),
            OrderFailure::GatewayFailed(cause) => {
                tracing::warn!(error = cause, "the payment gateway failed");
                Problem::of(catalogue::PAYMENT_GATEWAY).with_detail(
                    "the payment gateway did not answer; send the same request again with the \
                     same Idempotency-Key (it is never charged twice)",
                )
            }
            OrderFailure::Closed => Problem::of(catalogue::ORDER_CLOSED).with_detail(
                "this order was closed without being placed and nothing stays charged; \
                 send it again with a new Idempotency-Key",
            ),
            OrderFailure::Unavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "an order could not be placed");
                Problem::unavailable(
                    "the order was not placed; send it again with the same Idempotency-Key",
                    std::time::Duration::from_secs(1),
                )
            }
            OrderFailure::OutcomeUnknown => Problem::of(catalogue::OUTCOME_UNKNOWN).with_detail(
                "the order may have been placed: send the same request again with the same \
                 Idempotency-Key to learn which",
            ),
        }
    }
}

/// One line of an order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    /// The product.
    pub product_id: Uuid,
    /// One of its variants (sizes).
    pub variant_id: Uuid,
    /// 1 to 99 units.
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: i64,
}

/// How the order is paid.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    /// `sandbox`.
    #[schema(pattern = "^sandbox$")]
    pub method: String,
    /// A card token: `tok_visa`, `tok_declined` or `tok_gateway_error` in the sandbox.
    #[schema(pattern = "^tok_(visa|declined|gateway_error)$")]
    pub token: String,
}

/// A new order: its `lines`, or the variants of the caller's cart to order
/// (`cart_variant_ids`, each with the quantity the cart holds); exactly one of the two.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrderBody {
    /// 1 to 20 lines, each variant once.
    #[schema(min_items = 1, max_items = 20)]
    pub lines: Option<Vec<LineBody>>,
    /// 1 to 20 variants of the caller's cart, each once: ordered with their cart quantities,
    /// and taken out of the cart once the order is placed.
    #[schema(min_items = 1, max_items = 20)]
    pub cart_variant_ids: Option<Vec<Uuid>>,
    /// One of the caller's addresses.
    pub address_id: Uuid,
    /// The payment.
    pub payment: PaymentBody,
}

const REPLAYED: &str = "idempotent-replayed";

fn answer(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, Json(answer.body)).into_response();
    if status.is_client_error() || status.is_server_error() {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
    }
    if answer.replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// Places an order for the caller (never a buyer named in the body), paid at once. The
/// `Idempotency-Key` makes it safe to send again: the same key and body answer what the first
/// request did (`Idempotent-Replayed: true`), another body is 422, and while the first is in
/// flight 409. Sold out, not on sale and the purchase limit are 409 with their own types.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,128}$", description = "Required: 1 to 128 visible ASCII characters; one key per order")),
    request_body = NewOrderBody,
    responses(
        (status = 201, body = OrderView, headers(("Idempotent-Replayed" = String, description = "true when a retry got the first answer"))),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 402, body = Problem, description = "The card was declined; nothing was charged"),
        (status = 403, body = Problem),
        (status = 409, body = Problem, description = "Sold out, not on sale, the purchase limit, in flight, or closed"),
        (status = 422, body = Problem), (status = 429, body = Problem),
        (status = 500, body = Problem, description = "The outcome is unknown: send it again with the same key"),
        (status = 502, body = Problem, description = "The payment gateway failed: send it again with the same key"),
        (status = 503, body = Problem, description = "Not placed: send it again with the same key")))]
pub async fn place_order(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Basic>,
    ClientAddr(client): ClientAddr,
    IdempotencyKey(key): IdempotencyKey,
    AppJson(body): AppJson<NewOrderBody>,
) -> Result<Response, Problem> {
    let step = std::time::Instant::now();
    let limited = state.auth.limiter.order(&identity.member_id, client).await;
    metrics::histogram!("openrun_order_step_seconds", "step" => "rate_limit")
        .record(step.elapsed());
    limited?;
    let Some(key) = key else {
        return Err(Problem::of(catalogue::IDEMPOTENCY_KEY_REQUIRED)
            .with_detail("send an Idempotency-Key, so that a retry never places a second order"));
    };
    let order = new_order(body)?;
    let actor = actor(&identity)?;
    // The order is placed in a task of its own, never cut off half-way: past the hard
    // deadline the client is told the outcome is unknown (its retry with the same key is
    // answered "in flight" until the task ends, then what it did), and the sweeps' grace
    // period is a few such deadlines.
    let orders = std::sync::Arc::clone(&state.orders);
    let placing = tokio::spawn(
        async move { orders.place(actor, &key, order).await }.instrument(tracing::Span::current()),
    );
    match tokio::time::timeout(state.http.request_timeout, placing).await {
        Ok(Ok(placed)) => Ok(answer(placed?)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "placing an order failed half-way");
            Err(OrderFailure::OutcomeUnknown.into())
        }
        Err(_) => {
            tracing::warn!("an order passed its deadline; it is still being placed");
            Err(OrderFailure::OutcomeUnknown.into())
        }
    }
}

fn new_order(body: NewOrderBody) -> Result<NewOrder, Problem> {
    let (lines, from_cart) = match (body.lines, body.cart_variant_ids) {
        (Some(lines), None) => (lines, false),
        (None, Some(variants)) => {
            let max = openrun_domain::order::MAX_LINES;
            if variants.is_empty() || variants.len() > max {
                return Err(Problem::invalid(vec![FieldError::new(
                    "cart_variant_ids",
                    format!("1 to {max} variants"),
                )]));
            }
            for (i, variant) in variants.iter().enumerate() {
                if variants[..i].contains(variant) {
                    return Err(Problem::invalid(vec![FieldError::new(
                        &format!("cart_variant_ids[{i}]"),
                        "a variant named twice",
                    )]));
                }
            }
            let lines = variants
                .into_iter()
                .map(|variant| NewLine {
                    // The product and quantity come from the cart.
                    product_id: ProductId::from_uuid(Uuid::nil()),
                    variant_id: VariantId::from_uuid(variant),
                    quantity: 0,
                })
                .collect();
            return Ok(NewOrder {
                lines,
                address_id: body.address_id,
                method: body.payment.method,
                token: body.payment.token,
                from_cart: true,
            });
        }
        _ => {
            return Err(Problem::invalid(vec![FieldError::new(
                "lines",
                "send either lines or cart_variant_ids",
            )]));
        }
    };
    let lines = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let quantity = u32::try_from(l.quantity)
                .ok()
                .filter(|q| (1..=openrun_domain::order::MAX_QUANTITY_PER_LINE).contains(q))
                .ok_or_else(|| {
                    Problem::invalid(vec![FieldError::new(
                        &format!("lines[{i}].quantity"),
                        "1 to 99",
                    )])
                })?;
            Ok(NewLine {
                product_id: ProductId::from_uuid(l.product_id),
                variant_id: VariantId::from_uuid(l.variant_id),
                quantity,
            })
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    Ok(NewOrder {
        lines,
        address_id: body.address_id,
        method: body.payment.method,
        token: body.payment.token,
        from_cart,
    })
}

/// A page of orders.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct OrderList {
    /// The orders, newest first.
    pub items: Vec<crate::orders::OrderSummary>,
    /// The page (from 1).
    pub page: u32,
    /// Orders per page.
    pub size: u32,
    /// All of the caller's orders.
    pub total: u64,
}

/// Paging of a list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The page, from 1 (default 1).
    #[param(minimum = 1, maximum = 100000)]
    pub page: Option<u32>,
    /// Orders per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub size: Option<u32>,
}

/// The caller's orders, newest first. The list follows the log: an order placed a moment ago
/// may be missing for that moment (`GET /v1/orders/{id}` has it at once).
#[utoipa::path(get, path = "/v1/orders", tag = "orders", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = OrderList), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem),
    (status = 422, body = Problem, description = "A page or size out of range")))]
pub async fn list_orders(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Basic>,
    super::extract::AppQuery(query): super::extract::AppQuery<PageQuery>,
) -> Result<Json<OrderList>, Problem> {
    let (page, size) = paging(query.page, query.size)?;
    let buyer = actor(&identity)?.member_id;
    let (items, total) = state.orders.list(buyer, page, size).await?;
    Ok(Json(OrderList {
        items,
        page,
        size,
        total,
    }))
}

/// One of the caller's orders with its story: every step and when, its refunds and their
/// state, the windows still open, and the shipping address it was sealed with (shown to the
/// buyer only). An admin may read any order; another member's order is not found.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderDetail), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    (status = 503, body = Problem)))]
pub async fn get_order(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Basic>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<OrderDetail>, Problem> {
    state
        .lifecycle
        .view(&actor(&identity)?, OrderId::from_uuid(id))
        .await?
        .map(Json)
        .ok_or_else(Problem::not_found)
}

/// The order's timeline: every event of its stream, oldest first, without the sealed
/// address.
#[utoipa::path(get, path = "/v1/orders/{id}/events", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<TimelineEntry>), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    (status = 503, body = Problem)))]
pub async fn order_events(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Basic>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Vec<TimelineEntry>>, Problem> {
    state
        .lifecycle
        .timeline(&actor(&identity)?, OrderId::from_uuid(id))
        .await?
        .map(Json)
        .ok_or_else(Problem::not_found)
}

/// Cancels one of the caller's orders while it is `prepared` and inside its cancel window:
/// its units go back on sale at once and the whole amount is refunded (the refund is recorded
/// first, then paid back; the answer shows whether it is settled yet). An admin may cancel
/// any order. A cancel racing the shipping step has one winner: the loser gets 409.
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderDetail), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    (status = 409, body = Problem, description = "Not prepared any more (shipped, cancelled...), or the window closed"),
    (status = 500, body = Problem, description = "The outcome is unknown: read the order"),
    (status = 503, body = Problem)))]
pub async fn cancel_order(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Basic>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<OrderDetail>, Problem> {
    let actor = actor(&identity)?;
    Ok(Json(
        state
            .lifecycle
            .cancel(actor, OrderId::from_uuid(id))
            .await?,
    ))
}

/// Why the buyer returns an order.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnBody {
    /// At most 1000 characters.
    #[schema(max_length = 1000)]
    pub reason: Option<String>,
}

/// Asks to return one of the caller's orders while it is `delivered` and inside its return
/// window. The goods are picked up and, once the return completes, restocked and refunded,
/// each step on its configured timing. The body is optional.
#[utoipa::path(post, path = "/v1/orders/{id}/return", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body(content = Option<ReturnBody>, description = "Optional: no body, or `null`, is no reason"),
    responses((status = 200, body = OrderDetail), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    (status = 409, body = Problem, description = "Not delivered (yet, or any more), or the window closed"),
    (status = 422, body = Problem), (status = 500, body = Problem, description = "The outcome is unknown: read the order"),
    (status = 503, body = Problem)))]
pub async fn return_order(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Basic>,
    AppPath(id): AppPath<Uuid>,
    body: Option<AppJson<Option<ReturnBody>>>,
) -> Result<Json<OrderDetail>, Problem> {
    let actor = actor(&identity)?;
    let reason = body.and_then(|AppJson(b)| b).and_then(|b| b.reason);
    Ok(Json(
        state
            .lifecycle
            .request_return(actor, OrderId::from_uuid(id), reason)
            .await?,
    ))
}

/// Which of the seller's orders to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SellerOrderQuery {
    /// Only orders of this product.
    pub product_id: Option<Uuid>,
    /// Only orders in this status.
    #[param(
        pattern = "^(prepared|in_delivery|delivered|cancelled|return_requested|in_return|return_completed)$"
    )]
    pub status: Option<String>,
    /// The page, from 1 (default 1).
    #[param(minimum = 1, maximum = 100000)]
    pub page: Option<u32>,
    /// Rows per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub size: Option<u32>,
}

/// A page of a seller's orders.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct SellerOrderList {
    /// One row per order and product, newest first.
    pub items: Vec<SellerOrder>,
    /// The page (from 1).
    pub page: u32,
    /// Rows per page.
    pub size: u32,
    /// All matching rows.
    pub total: u64,
}

/// The orders of the caller's own products, one row per order and product, newest first,
/// without any of the buyer's personal data. The list follows the log: an order placed a
/// moment ago may be missing for that moment.
#[utoipa::path(get, path = "/v1/seller/orders", tag = "orders", security(("bearer" = [])),
    params(SellerOrderQuery),
    responses((status = 200, body = SellerOrderList), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem),
    (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn seller_orders(
    State(state): State<AppState>,
    Auth(identity, _): Auth<super::identity::Seller>,
    super::extract::AppQuery(query): super::extract::AppQuery<SellerOrderQuery>,
) -> Result<Json<SellerOrderList>, Problem> {
    let (page, size) = paging(query.page, query.size)?;
    if let Some(status) = &query.status
        && serde_json::from_value::<openrun_domain::order::OrderStatus>(status.as_str().into())
            .is_err()
    {
        return Err(Problem::invalid(vec![FieldError::new(
            "status",
            "one of prepared, in_delivery, delivered, cancelled, return_requested, in_return, return_completed",
        )]));
    }
    let filter = SellerFilter {
        product_id: query.product_id.map(ProductId::from_uuid),
        status: query.status,
    };
    let seller = actor(&identity)?.member_id;
    let (items, total) = state
        .lifecycle
        .seller_orders(seller, &filter, page, size)
        .await?;
    Ok(Json(SellerOrderList {
        items,
        page,
        size,
        total,
    }))
}

/// The page and size of a list, checked.
fn paging(page: Option<u32>, size: Option<u32>) -> Result<(u32, u32), Problem> {
    let (page, size) = (page.unwrap_or(1), size.unwrap_or(20));
    if !(1..=100_000).contains(&page) {
        return Err(Problem::invalid(vec![FieldError::new(
            "page",
            "1 to 100000",
        )]));
    }
    if !(1..=100).contains(&size) {
        return Err(Problem::invalid(vec![FieldError::new("size", "1 to 100")]));
    }
    Ok((page, size))
}

/// The order routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place_order, list_orders))
        .routes(routes!(get_order))
        .routes(routes!(order_events))
        .routes(routes!(cancel_order))
        .routes(routes!(return_order))
        .routes(routes!(seller_orders))
}
