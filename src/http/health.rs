//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::problem::{Problem, catalogue};

/// The body of a healthy answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// The process is up and serving HTTP. Touches nothing else.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers, every embedded migration is applied, and the token store (Redis,
/// when configured) answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready to serve", body = Health),
    (status = 503, description = "Database or Redis unreachable, or migrations pending", body = Problem,
        content_type = "application/problem+json")))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, Problem> {
    let unavailable = |detail: &str| Problem::of(catalogue::NOT_READY).with_detail(detail);
    if let Err(e) = state.db.ping().await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return Err(unavailable("the database is unreachable"));
    }
    if let Err(e) = state.auth.ping().await {
        tracing::warn!(
            error = format!("{e:#}"),
            "readiness: token store unreachable"
        );
        return Err(unavailable("the session store (Redis) is unreachable"));
    }
    match crate::db::pending_migrations(&state.db).await {
        Ok(0) => Ok(Json(Health { status: "ready" })),
        Ok(n) => Err(unavailable(&format!(
            "{n} database migrations are not applied"
        ))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: cannot read migrations");
            Err(unavailable("the migration state cannot be read"))
        }
    }
}

/// The operations routes: health, readiness and metrics.
pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(healthz))
        .routes(utoipa_axum::routes!(readyz))
        .routes(utoipa_axum::routes!(super::observability::metrics))
}
