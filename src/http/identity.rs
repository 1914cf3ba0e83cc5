//! The authenticated caller at the HTTP edge, from `Authorization: Bearer <access token>`.
//! `Auth<R>` enforces the least role `R` a handler needs: no or an invalid token is 401, a
//! lower role 403. Ids and roles only ever come from here, never from a request body.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use super::problem::Problem;
use crate::auth::Identity;
use crate::members::Role;

/// The least role an endpoint needs.
pub trait MinRole: Send + Sync + 'static {
    /// The role.
    const ROLE: Role;
}

/// Any signed-in member, verified or not.
pub struct AnyRole;
/// A verified member (`basic`, `seller` or `admin`).
pub struct Basic;
/// A seller or an administrator.
pub struct Seller;
/// An administrator.
pub struct Admin;

impl MinRole for AnyRole {
    const ROLE: Role = Role::Unverified;
}
impl MinRole for Basic {
    const ROLE: Role = Role::Basic;
}
impl MinRole for Seller {
    const ROLE: Role = Role::Seller;
}
impl MinRole for Admin {
    const ROLE: Role = Role::Admin;
}

/// The caller, with at least role `R`.
pub struct Auth<R: MinRole = AnyRole>(pub Identity, pub PhantomData<R>);

impl<R: MinRole> FromRequestParts<AppState> for Auth<R> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme's name is case-insensitive (RFC 9110, section 11.1).
            .and_then(|v| {
                v.split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, token)| token)
            })
            .ok_or_else(Problem::unauthorized)?;
        let identity = state.auth.authenticate(token.trim()).await?;
        if identity.role < R::ROLE {
            return Err(Problem::forbidden(&format!(
                "this needs the role {} or higher",
                R::ROLE.as_str()
            )));
        }
        Ok(Self(identity, PhantomData))
    }
}

/// The caller when a token is sent, `None` when none is: for endpoints anyone may call whose
/// answer depends on who asks. A token that is sent but invalid is still 401.
pub struct MaybeAuth(pub Option<Identity>);

impl FromRequestParts<AppState> for MaybeAuth {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        if !parts.headers.contains_key(AUTHORIZATION) {
            return Ok(Self(None));
        }
        let Auth(identity, _) = Auth::<AnyRole>::from_request_parts(parts, state).await?;
        Ok(Self(Some(identity)))
    }
}
