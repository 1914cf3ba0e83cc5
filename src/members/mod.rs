//! Members: sign-up and e-mail verification, the profile, shipping addresses and roles. Plain
//! tables rather than event streams, so personal data stays erasable; every piece of personal
//! data is encrypted (see [`crate::crypto`]) before it reaches a table.

pub mod mirror;
pub mod repository;
pub mod service;
pub mod settings;
pub mod validation;

pub use service::{AddressSnapshot, MemberError, Members};
pub use settings::MemberSettings;
pub use validation::FieldError;

/// Most shipping addresses a member may keep.
pub const MAX_ADDRESSES: i64 = 5;

/// What a member may do: the domain's roles, which commands carry.
pub use openrun_domain::Role;
