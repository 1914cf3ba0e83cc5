//! The HTTP API (DESIGN.md section 8). Each resource module owns its handlers; this module
//! assembles them into one router with the OpenAPI document, Swagger UI and the middleware
//! every request passes through (request id, span, metrics).

pub mod health;
pub mod observability;
pub mod problem;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderName;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::startup::AppState;
use problem::Problem;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(title = "openrun", description = "Order and inventory core of a limited-drop shop."),
    tags((name = "operations", description = "Health, readiness and metrics"))
)]
struct ApiDoc;

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let (api_routes, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(observability::metrics))
        .split_for_parts();
    api_routes
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
        // A route layer, so that the route template (MatchedPath) is known when it runs.
        .route_layer(axum::middleware::from_fn(observability::record))
        .fallback(|| async { Problem::not_found() })
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// One span per request: method, path (never the query, which may carry tokens), request id.
fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
    )
}
