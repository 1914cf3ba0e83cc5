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
use crate::orders::{Answer, NewLine, NewOrder, OrderFailure, OrderView};

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

/// A new order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrderBody {
    /// 1 to 20 lines, each variant once.
    #[schema(min_items = 1, max_items = 20)]
    pub lines: Vec<LineBody>,
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
    state
        .auth
        .limiter
        .order(&identity.member_id, client)
        .await?;
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
    let lines = body
        .lines
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
    let page = query.page.unwrap_or(1);
    let size = query.size.unwrap_or(20);
    if !(1..=100_000).contains(&page) {
        return Err(Problem::invalid(vec![FieldError::new(
            "page",
            "1 to 100000",
        )]));
    }
    if !(1..=100).contains(&size) {
        return Err(Problem::invalid(vec![FieldError::new("size", "1 to 100")]));
    }
    let buyer = actor(&identity)?.member_id;
    let (items, total) = state.orders.list(buyer, page, size).await?;
    Ok(Json(OrderList {
        items,
        page,
        size,
        total,
    }))
}

/// One of the caller's orders (an admin may read any).
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderView), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_order(
    State(state): State<AppState>,
    Auth(identity, _): Auth<Basic>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<OrderView>, Problem> {
    state
        .orders
        .get(&actor(&identity)?, OrderId::from_uuid(id))
        .await?
        .map(Json)
        .ok_or_else(Problem::not_found)
}

/// The order routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place_order, list_orders))
        .routes(routes!(get_order))
}
