//! Members: sign-up and e-mail verification, the profile, shipping addresses and roles. Plain
//! tables rather than event streams, so personal data stays erasable; every piece of personal
//! data is encrypted (see [`crate::crypto`]) before it reaches a table.

pub mod repository;
pub mod service;
pub mod validation;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use service::{MemberError, Members};
pub use validation::FieldError;

/// Most shipping addresses a member may keep.
pub const MAX_ADDRESSES: i64 = 5;

/// What a member may do. Ordered: each role may do what the roles before it may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Signed up, e-mail not verified yet: may manage the account, not shop.
    Unverified,
    /// Verified: may shop.
    Basic,
    /// May sell.
    Seller,
    /// May grant roles.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Self::Unverified, Self::Basic, Self::Seller, Self::Admin];

    /// The stored and serialised name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unverified => "unverified",
            Self::Basic => "basic",
            Self::Seller => "seller",
            Self::Admin => "admin",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unverified" => Self::Unverified,
            "basic" => Self::Basic,
            "seller" => Self::Seller,
            "admin" => Self::Admin,
            _ => return None,
        })
    }
}
