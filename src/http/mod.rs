//! The HTTP API. Each resource module owns its handlers; this module
//! assembles them into one router with the OpenAPI document, Swagger UI and the middleware
//! every request passes through (request id, span, metrics).

pub mod auth;
pub mod cart;
pub mod catalog;
pub mod extract;
pub mod health;
pub mod identity;
pub mod members;
pub mod observability;
pub mod openapi;
pub mod orders;
pub mod problem;
pub mod products;
pub mod server;
pub mod settings;
pub mod state;
pub mod wishlist;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderName;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use problem::{Problem, catalogue};
pub use state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(title = "openrun", description = "Order and inventory core of a limited-drop shop."),
    tags(
        (name = "operations", description = "Health, readiness and metrics"),
        (name = "members", description = "Sign-up, verification, profile and addresses"),
        (name = "auth", description = "Login, tokens and device sessions"),
        (name = "catalog", description = "Categories and products"),
        (name = "orders", description = "Placing and reading orders"),
        (name = "admin", description = "Administration")
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the member endpoints name.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let (api_routes, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(members::routes())
        .merge(auth::routes())
        .merge(catalog::routes())
        .merge(products::routes())
        .merge(wishlist::routes())
        .merge(orders::routes())
        .merge(cart::routes())
        .split_for_parts();
    let routes = api_routes
        .merge(
            SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", openapi::exact(&api)),
        )
        // A route layer, so that the route template (MatchedPath) is known when it runs.
        .route_layer(axum::middleware::from_fn(observability::record))
        .fallback(|| async { Problem::not_found() })
        .method_not_allowed_fallback(|| async {
            Problem::of(catalogue::METHOD_NOT_ALLOWED)
                .with_detail("this path does not accept that method")
        });
    // Inside the request-id and trace layers: a refusal there carries a request id too.
    server::with_limits(routes, state.http)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::map_request(drop_unusable_request_id))
        .layer(axum::middleware::map_response(no_store))
        .with_state(state)
}

/// Longest request id taken from a caller.
const MAX_REQUEST_ID_LEN: usize = 64;

/// A caller's `X-Request-Id` is kept only when it is short and plain (letters, digits, `-`,
/// `_`, `.`); otherwise it is dropped and a new one is made, so no caller writes quotes, line
/// breaks or kilobytes into a log line.
async fn drop_unusable_request_id(mut request: Request) -> Request {
    let usable = |v: &axum::http::HeaderValue| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let headers = request.headers_mut();
    if headers.get_all(&REQUEST_ID).iter().count() > 1
        || headers.get(&REQUEST_ID).is_some_and(|v| !usable(v))
    {
        headers.remove(&REQUEST_ID);
    }
    request
}

/// API answers are about one member (profiles, tokens, orders): no cache may keep them
/// (RFC 6749 section 5.1 asks it of token responses).
async fn no_store(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(axum::http::HeaderValue::from_static("no-store"));
    // No browser guesses another type than the one sent.
    headers.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// One span per request: method, path (never the query, which may carry tokens; quoted and
/// escaped), request id.
fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        // Debug-quoted: a path is the caller's text, and quotes or braces in it must not
        // forge fields of the line.
        path = ?request.uri().path(),
        request_id = %request_id,
    )
}
