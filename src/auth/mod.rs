//! Who is calling: logins (passwords are checked by [`crate::password`]), access tokens, device sessions with rotating refresh tokens, the
//! [`tokens::TokenStore`] behind them, rate limits, and the [`extract::Auth`] extractor that
//! enforces roles on every endpoint.

pub mod extract;
pub mod jwt;
pub mod ratelimit;
pub mod service;
pub mod tokens;

pub use extract::{Admin, AnyRole, Auth, Basic, Identity};
pub use service::{AuthError, AuthService, TokenPair};
