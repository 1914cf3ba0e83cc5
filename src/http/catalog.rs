//! `/v1/categories`: the product categories. Anyone lists them; admins create and archive.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{AppJson, AppPath, AppQuery};
use super::identity::{Admin, Auth, MaybeAuth};
use super::problem::{Problem, catalogue};
use crate::catalog::{Category, CategoryError};
use crate::members::FieldError;

impl From<CategoryError> for Problem {
    fn from(e: CategoryError) -> Self {
        match e {
            CategoryError::InvalidName(message) => {
                Problem::invalid(vec![FieldError::new("name", message)])
            }
            CategoryError::Duplicate => {
                Problem::of(catalogue::DUPLICATE).with_errors(vec![FieldError::new(
                    "name",
                    "a category with this name exists",
                )])
            }
            CategoryError::NotFound => Problem::not_found(),
            CategoryError::AlreadyArchived => Problem::of(catalogue::CATEGORY_ARCHIVED)
                .with_detail("the category is archived already"),
            CategoryError::Internal(cause) => Problem::internal(&cause),
        }
    }
}

/// A new category.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCategory {
    /// Its name: 1 to 50 characters, unique ignoring case and Unicode compatibility forms.
    pub name: String,
}

/// The list's query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Include archived categories too (ignored unless the caller is an admin).
    #[serde(default)]
    pub include_archived: bool,
}

/// The categories.
#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryList {
    /// Oldest first.
    pub items: Vec<Category>,
}

/// Lists the categories that take products (anyone).
#[utoipa::path(get, path = "/v1/categories", tag = "catalog", params(ListQuery), responses(
    (status = 200, body = CategoryList), (status = 400, body = Problem),
    (status = 401, body = Problem, description = "A token was sent and is not valid")))]
pub async fn list_categories(
    State(state): State<AppState>,
    MaybeAuth(identity): MaybeAuth,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<CategoryList>, Problem> {
    // Archived categories hold nothing a visitor can buy; admins may list them too.
    let admin = identity.is_some_and(|i| i.role == crate::members::Role::Admin);
    let items = state
        .categories
        .list(query.include_archived && admin)
        .await?;
    Ok(Json(CategoryList { items }))
}

/// Creates a category (admins only); the creator and time are recorded.
#[utoipa::path(post, path = "/v1/categories", tag = "catalog", security(("bearer" = [])),
    request_body = NewCategory, responses((status = 201, body = Category),
    (status = 401, body = Problem), (status = 403, body = Problem),
    (status = 409, body = Problem, description = "The name is taken"), (status = 422, body = Problem)))]
pub async fn create_category(
    State(state): State<AppState>,
    Auth(admin, _): Auth<Admin>,
    AppJson(body): AppJson<NewCategory>,
) -> Result<(StatusCode, Json<Category>), Problem> {
    let category = state
        .categories
        .create(&admin.member_id, &body.name)
        .await?;
    Ok((StatusCode::CREATED, Json(category)))
}

/// Archives a category (admins only): it takes no new products; who and when are recorded.
/// A category that still holds products (not deleted) cannot be archived.
#[utoipa::path(delete, path = "/v1/categories/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), responses((status = 204), (status = 400, body = Problem),
    (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    (status = 409, body = Problem, description = "Archived already, or holds products"),
    (status = 503, body = Problem, description = "The catalog is catching up; nothing was changed")))]
pub async fn archive_category(
    State(state): State<AppState>,
    Auth(admin, _): Auth<Admin>,
    AppPath(id): AppPath<uuid::Uuid>,
) -> Result<StatusCode, Problem> {
    let category = openrun_domain::CategoryId::from_uuid(id);
    state
        .categories
        .archive(&admin.member_id, &id.to_string())
        .await?;
    // Archived first, so no create that checks from now on puts a product in it; then every
    // product registered so far, by any process, is looked at. A catalog that cannot catch
    // up cannot tell: the archive is undone.
    let caught_up = state
        .catalog
        .catch_up_to_head(std::time::Duration::from_secs(2))
        .await;
    if !matches!(caught_up, Ok(true)) {
        if let Err(e) = &caught_up {
            tracing::error!(error = format!("{e:#}"), "the live catalog cannot catch up");
        }
        state.categories.unarchive(&id.to_string()).await?;
        return Err(Problem::unavailable(
            "the catalog is catching up; nothing was changed",
            std::time::Duration::from_secs(1),
        ));
    }
    if state.catalog.has_products_in(category) {
        state.categories.unarchive(&id.to_string()).await?;
        return Err(Problem::of(catalogue::CATEGORY_IN_USE)
            .with_detail("the category holds products; move or delete them first"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The catalog routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_categories, create_category))
        .routes(routes!(archive_category))
}
