//! Who is calling: logins (passwords are checked by [`crate::password`]), access tokens,
//! device sessions with rotating refresh tokens, the [`tokens::TokenStore`] behind them, and
//! rate limits. The extractor that enforces roles on
//! every endpoint lives at the HTTP edge (`http::identity`).

pub mod jwt;
pub mod ratelimit;
pub mod service;
pub mod settings;
pub mod tokens;

pub use service::{AuthError, AuthService, TokenPair};
pub use settings::AuthSettings;

use crate::members::Role;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The member id (the token's `sub`).
    pub member_id: String,
    /// The device session of the token.
    pub session_id: String,
    /// The role at issue time.
    pub role: Role,
}
