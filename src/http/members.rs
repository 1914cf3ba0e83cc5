//! `/v1/members` and `/v1/admin/members`: sign-up, verification, the caller's profile,
//! password and addresses, and role grants. Thin: each handler extracts, calls
//! [`crate::members::Members`] (or the auth service), and answers.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{AppJson, AppPath, AppQuery, ClientAddr};
use super::identity::{Admin, Auth, Basic};
use super::problem::{Problem, catalogue};
use crate::members::service::{
    Address, AddressInput, Profile, ProfilePatch, RoleChanged, SignUp, SignedUp,
};
use crate::members::{MAX_ADDRESSES, MemberError, Role};

impl From<MemberError> for Problem {
    fn from(e: MemberError) -> Self {
        use MemberError as E;
        match e {
            E::Invalid(errors) => Problem::invalid(errors),
            E::Duplicate(errors) => Problem::of(catalogue::DUPLICATE).with_errors(errors),
            E::NotFound => Problem::not_found(),
            E::Forbidden => Problem::forbidden("this address belongs to another member"),
            E::AddressLimit => Problem::of(catalogue::ADDRESS_LIMIT)
                .with_detail(format!("a member keeps at most {MAX_ADDRESSES} addresses")),
            E::TokenUsed => Problem::of(catalogue::VERIFICATION_LINK_USED)
                .with_detail("this verification link was used already; sign in to continue"),
            E::TokenExpired => Problem::of(catalogue::VERIFICATION_LINK_EXPIRED)
                .with_detail("this verification link has expired; sign in and ask for a new one"),
            E::TokenUnknown => Problem::of(catalogue::VERIFICATION_LINK_UNKNOWN)
                .with_detail("this verification link is not valid"),
            E::RoleNotRaised => Problem::of(catalogue::ROLE_NOT_RAISED)
                .with_detail("the member has a higher role; roles are granted, never lowered"),
            E::AlreadyVerified => Problem::of(catalogue::ALREADY_VERIFIED),
            E::Unavailable(cause) => {
                tracing::warn!(
                    error = format!("{cause:#}"),
                    "a member change could not be made"
                );
                Problem::unavailable(
                    "nothing was changed; send the request again",
                    std::time::Duration::from_secs(1),
                )
            }
            E::Internal(cause) => Problem::internal(&cause),
        }
    }
}

/// The query of the verification link.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// The token from the e-mail.
    pub token: String,
}

/// The outcome of a verification.
#[derive(Debug, Serialize, ToSchema)]
pub struct Verified {
    /// Always `verified`.
    pub status: &'static str,
    /// The member's new role.
    pub role: Role,
}

/// The password change body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordChange {
    /// The password now.
    #[schema(value_type = String, format = Password)]
    pub current_password: SecretString,
    /// The new password (same rules as at sign-up).
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
}

/// A role grant.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RoleGrant {
    /// `basic` (verifies the member by hand), `seller` or `admin`.
    pub role: Role,
}

/// A list of addresses.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddressList {
    /// The addresses, oldest first.
    pub items: Vec<Address>,
}

/// Signs up a member, who starts `unverified`, and e-mails a verification link. Rate limited
/// per client address. Any id or role in the body is ignored.
#[utoipa::path(post, path = "/v1/members", tag = "members", request_body = SignUp, responses(
    (status = 201, body = SignedUp), (status = 409, body = Problem, description = "Login id, e-mail or phone taken"),
    (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn sign_up(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    AppJson(body): AppJson<SignUp>,
) -> Result<(StatusCode, Json<SignedUp>), Problem> {
    state.auth.limiter.sign_up(client).await?;
    Ok((
        StatusCode::CREATED,
        Json(state.members.sign_up(body).await?),
    ))
}

/// The target of the e-mailed link: a good token makes the member `basic`, once.
#[utoipa::path(get, path = "/v1/members/verify", tag = "members", params(VerifyQuery), responses(
    (status = 200, body = Verified), (status = 404, body = Problem), (status = 410, body = Problem, description = "Used or expired")))]
pub async fn verify(
    State(state): State<AppState>,
    AppQuery(query): AppQuery<VerifyQuery>,
) -> Result<Json<Verified>, Problem> {
    let role = state.members.verify(&query.token).await?;
    Ok(Json(Verified {
        status: "verified",
        role,
    }))
}

/// Sends the caller a new verification link (unverified members only; rate limited).
#[utoipa::path(post, path = "/v1/members/verification-email", tag = "members", security(("bearer" = [])),
    responses((status = 202), (status = 401, body = Problem), (status = 409, body = Problem), (status = 429, body = Problem)))]
pub async fn resend_verification(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Auth(me, _): Auth,
) -> Result<StatusCode, Problem> {
    state
        .auth
        .limiter
        .resend(&me.member_id.to_string(), client)
        .await?;
    state.members.resend_verification(&me.member_id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// The caller's profile, decrypted.
#[utoipa::path(get, path = "/v1/members/me", tag = "members", security(("bearer" = [])),
    responses((status = 200, body = Profile), (status = 401, body = Problem)))]
pub async fn me(
    State(state): State<AppState>,
    Auth(me, _): Auth,
) -> Result<Json<Profile>, Problem> {
    Ok(Json(state.members.me(&me.member_id).await?))
}

/// Changes the caller's name and/or phone. A phone change tells whether the number is taken,
/// so it is rate limited per member and per client address.
#[utoipa::path(patch, path = "/v1/members/me", tag = "members", security(("bearer" = [])), request_body = ProfilePatch,
    responses((status = 200, body = Profile), (status = 401, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn update_me(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Auth(me, _): Auth,
    AppJson(patch): AppJson<ProfilePatch>,
) -> Result<Json<Profile>, Problem> {
    if patch.phone.is_some() {
        let member = me.member_id.to_string();
        state.auth.limiter.phone_change(&member, client).await?;
    }
    Ok(Json(state.members.update_me(&me.member_id, patch).await?))
}

/// Changes the caller's password (the current one is required) and ends every other session.
#[utoipa::path(put, path = "/v1/members/me/password", tag = "members", security(("bearer" = [])), request_body = PasswordChange,
    responses((status = 204), (status = 401, body = Problem), (status = 422, body = Problem),
        (status = 429, body = Problem, description = "Too many attempts at the current password")))]
pub async fn change_password(
    State(state): State<AppState>,
    Auth(me, _): Auth,
    AppJson(body): AppJson<PasswordChange>,
) -> Result<StatusCode, Problem> {
    let (current, new) = (body.current_password, body.new_password);
    state.auth.change_password(&me, current, new).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's shipping addresses (verified members).
#[utoipa::path(get, path = "/v1/members/me/addresses", tag = "members", security(("bearer" = [])),
    responses((status = 200, body = AddressList), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list_addresses(
    State(state): State<AppState>,
    Auth(me, _): Auth<Basic>,
) -> Result<Json<AddressList>, Problem> {
    let items = state.members.addresses(&me.member_id).await?;
    Ok(Json(AddressList { items }))
}

/// Adds a shipping address; at most 5, enforced without a race.
#[utoipa::path(post, path = "/v1/members/me/addresses", tag = "members", security(("bearer" = [])), request_body = AddressInput,
    responses((status = 201, body = Address), (status = 409, body = Problem, description = "Already 5 addresses"), (status = 422, body = Problem)))]
pub async fn add_address(
    State(state): State<AppState>,
    Auth(me, _): Auth<Basic>,
    AppJson(body): AppJson<AddressInput>,
) -> Result<(StatusCode, Json<Address>), Problem> {
    let address = state.members.add_address(&me.member_id, body).await?;
    Ok((StatusCode::CREATED, Json(address)))
}

/// One of the caller's addresses (another member's is not found).
#[utoipa::path(get, path = "/v1/members/me/addresses/{id}", tag = "members", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Address), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_address(
    State(state): State<AppState>,
    Auth(me, _): Auth<Basic>,
    AppPath(id): AppPath<String>,
) -> Result<Json<Address>, Problem> {
    Ok(Json(state.members.get_address(&me.member_id, &id).await?))
}

/// Replaces one of the caller's addresses.
#[utoipa::path(put, path = "/v1/members/me/addresses/{id}", tag = "members", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = AddressInput,
    responses((status = 200, body = Address), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_address(
    State(state): State<AppState>,
    Auth(me, _): Auth<Basic>,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<AddressInput>,
) -> Result<Json<Address>, Problem> {
    let address = state
        .members
        .update_address(&me.member_id, &id, body)
        .await?;
    Ok(Json(address))
}

/// Deletes one of the caller's addresses.
#[utoipa::path(delete, path = "/v1/members/me/addresses/{id}", tag = "members", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_address(
    State(state): State<AppState>,
    Auth(me, _): Auth<Basic>,
    AppPath(id): AppPath<String>,
) -> Result<StatusCode, Problem> {
    state.members.delete_address(&me.member_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An admin grants a role: `basic` (verifies a member by hand), `seller` or `admin`. It shows in the member's access tokens from
/// their next refresh. Only raises (a grant below the member's role is 409): a lower role in a
/// not yet refreshed token is harmless.
#[utoipa::path(put, path = "/v1/admin/members/{id}/role", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = RoleGrant,
    responses((status = 200, body = RoleChanged), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem, description = "The member holds a higher role"), (status = 422, body = Problem, description = "Only basic, seller or admin can be granted")))]
pub async fn set_role(
    State(state): State<AppState>,
    Auth(_admin, _): Auth<Admin>,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<RoleGrant>,
) -> Result<Json<RoleChanged>, Problem> {
    Ok(Json(state.members.set_role(&id, body.role).await?))
}

/// The member routes: sign-up, verification, profile, addresses and roles.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(verify))
        .routes(routes!(resend_verification))
        .routes(routes!(me, update_me))
        .routes(routes!(change_password))
        .routes(routes!(list_addresses, add_address))
        .routes(routes!(get_address, update_address, delete_address))
        .routes(routes!(set_role))
}
