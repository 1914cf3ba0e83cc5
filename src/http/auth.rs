//! `/v1/auth`: login, refresh, logout and device sessions. Thin: each handler extracts, calls
//! [`crate::auth::AuthService`], and answers.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{AppJson, AppPath, ClientAddr};
use super::identity::Auth;
use super::problem::{Problem, catalogue};
use crate::auth::ratelimit::LimitError;
use crate::auth::tokens::Session;
use crate::auth::{AuthError, TokenPair};

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidCredentials => Problem::of(catalogue::INVALID_CREDENTIALS)
                .with_detail("the login id or the password is wrong"),
            AuthError::InvalidToken => Problem::of(catalogue::INVALID_TOKEN)
                .with_detail("the token is invalid, expired or its session has ended"),
            AuthError::TooMany(t) => Problem::too_many(t.retry_after),
            AuthError::SessionNotFound => Problem::not_found(),
            AuthError::SessionForbidden => {
                Problem::forbidden("this session belongs to another member")
            }
            AuthError::Invalid(errors) => Problem::invalid(errors),
            AuthError::Internal(cause) => Problem::internal(&cause),
        }
    }
}

impl From<LimitError> for Problem {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::TooMany(t) => Problem::too_many(t.retry_after),
            // Nothing was done: the request may be sent again in a moment.
            LimitError::Store(cause) => {
                tracing::warn!(
                    error = format!("{cause:#}"),
                    "the rate limits could not be checked"
                );
                Problem::unavailable(
                    "the request could not be checked against its rate limits; send it again",
                    std::time::Duration::from_secs(1),
                )
            }
        }
    }
}

/// The login body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Login {
    /// The login id.
    pub login_id: String,
    /// The password.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// A name for the device session, shown in the session list.
    pub device_name: Option<String>,
}

/// The refresh body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Refresh {
    /// The refresh token of the last login or refresh (single use).
    pub refresh_token: String,
}

/// One device session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The session id.
    pub id: String,
    /// The device name given at login.
    pub device: String,
    /// When the member logged in on it.
    pub created_at: DateTime<Utc>,
    /// When it last refreshed.
    pub last_used_at: DateTime<Utc>,
    /// The session of the calling token.
    pub current: bool,
}

impl SessionView {
    fn of(s: Session, current: &str) -> Self {
        Self {
            current: s.id == current,
            id: s.id,
            device: s.device,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
        }
    }
}

/// The caller's sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    /// Oldest first.
    pub items: Vec<SessionView>,
}

/// Logs in and opens a device session. Rate limited per account and per client address;
/// at most 100 failed logins per account per hour.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = Login, responses(
    (status = 200, body = TokenPair), (status = 401, body = Problem), (status = 429, body = Problem)))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    AppJson(body): AppJson<Login>,
) -> Result<Json<TokenPair>, Problem> {
    let device = body.device_name.as_deref();
    let pair = state
        .auth
        .login(&body.login_id, body.password, device, client)
        .await?;
    Ok(Json(pair))
}

/// Exchanges a refresh token for a new pair. The old token dies; presenting it again ends
/// the whole session.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = Refresh, responses(
    (status = 200, body = TokenPair), (status = 401, body = Problem)))]
pub async fn refresh(
    State(state): State<AppState>,
    AppJson(body): AppJson<Refresh>,
) -> Result<Json<TokenPair>, Problem> {
    Ok(Json(state.auth.refresh(&body.refresh_token).await?))
}

/// Ends the caller's session.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = Problem)))]
pub async fn logout(
    State(state): State<AppState>,
    Auth(me, _): Auth,
) -> Result<StatusCode, Problem> {
    state.auth.logout(&me).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of the caller.
#[utoipa::path(post, path = "/v1/auth/logout-all", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = Problem)))]
pub async fn logout_all(
    State(state): State<AppState>,
    Auth(me, _): Auth,
) -> Result<StatusCode, Problem> {
    state.auth.logout_all(&me).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's device sessions.
#[utoipa::path(get, path = "/v1/auth/sessions", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = SessionList), (status = 401, body = Problem)))]
pub async fn sessions(
    State(state): State<AppState>,
    Auth(me, _): Auth,
) -> Result<Json<SessionList>, Problem> {
    let sessions = state.auth.sessions(&me).await?.into_iter();
    let items = sessions
        .map(|s| SessionView::of(s, &me.session_id))
        .collect();
    Ok(Json(SessionList { items }))
}

/// Ends one of the caller's sessions (another member's session is not found).
#[utoipa::path(delete, path = "/v1/auth/sessions/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn end_session(
    State(state): State<AppState>,
    Auth(me, _): Auth,
    AppPath(id): AppPath<String>,
) -> Result<StatusCode, Problem> {
    state.auth.end_session(&me, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The session routes: login, refresh, logout and the device sessions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(logout_all))
        .routes(routes!(sessions))
        .routes(routes!(end_session))
}
