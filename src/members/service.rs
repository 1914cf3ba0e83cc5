//! The members capability: its errors, inputs and views, and the shared pieces of its use
//! cases, which live by job in the submodules: `signup` (sign-up, verification, resend),
//! `profile`, `addresses` and `admin` (roles, the first admin, re-encryption).
//! Personal data is encrypted here, before the repository sees it, and decrypted only for
//! the member it belongs to.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Role;
use super::mirror::{AddressMirror, Mirrored};
use super::repository::{self, AddressRow, MemberRow, TokenUse, Unique, WriteError};
use super::validation::{self, FieldError};
use crate::clock::SharedClock;
use crate::crypto::{KeyRing, random_token, token_hash};
use crate::db::Database;
use crate::mail::{self, Mailer};

mod addresses;
pub use addresses::AddressSnapshot;
mod admin;
mod profile;
mod signup;

/// Why a member use case failed.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// Field rules broken (422).
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// Login id, e-mail or phone taken (409).
    #[error("already taken")]
    Duplicate(Vec<FieldError>),
    /// No such member or address (404).
    #[error("not found")]
    NotFound,
    /// The address belongs to another member (403).
    #[error("another member's address")]
    Forbidden,
    /// Already [`super::MAX_ADDRESSES`] addresses (409).
    #[error("address limit reached")]
    AddressLimit,
    /// Verification token used before (410).
    #[error("verification link already used")]
    TokenUsed,
    /// Verification token past its expiry (410).
    #[error("verification link expired")]
    TokenExpired,
    /// No such verification token (404).
    #[error("unknown verification link")]
    TokenUnknown,
    /// A grant that would lower the member's role (409).
    #[error("the member has a higher role")]
    RoleNotRaised,
    /// The member is verified already (409).
    #[error("already verified")]
    AlreadyVerified,
    /// A store the change depends on could not be reached; nothing was changed (503).
    #[error("unavailable: {0}")]
    Unavailable(anyhow::Error),
    /// Anything else (logged, never shown).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for MemberError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("member tables"))
    }
}

/// A shipping address as sent by a client.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct AddressInput {
    /// Street address.
    pub line1: String,
    /// Apartment, floor, etc.
    #[serde(default)]
    pub line2: String,
    /// 5-digit postal code.
    pub postal_code: Option<String>,
    /// Make it the default (the first address always is).
    pub is_default: Option<bool>,
}

/// The sign-up body. Any other field (an id, a role) is ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SignUp {
    /// 5 to 25 ASCII letters and digits, at least one letter.
    pub login_id: String,
    /// 10 to 128 characters, not a common password, not the login id.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// The member's name.
    pub name: String,
    /// Korean mobile number, `010-1234-5678`.
    pub phone: String,
    /// E-mail address; a verification link is sent to it.
    pub email: String,
    /// The first shipping address.
    pub address: AddressInput,
}

/// A new member.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedUp {
    /// The member id.
    pub id: String,
    /// The login id (lower case).
    pub login_id: String,
    /// `unverified` until the e-mail link is followed.
    pub role: Role,
}

/// The caller's profile, decrypted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Profile {
    /// The member id.
    pub id: String,
    /// The login id.
    pub login_id: String,
    /// Name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// Mobile number.
    pub phone: Option<String>,
    /// Role.
    pub role: Role,
    /// Sign-up time.
    pub created_at: DateTime<Utc>,
}

/// Changes to the profile; absent fields stay.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ProfilePatch {
    /// New name.
    pub name: Option<String>,
    /// New mobile number.
    pub phone: Option<String>,
}

/// A stored address, decrypted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Address {
    /// The address id.
    pub id: String,
    /// Street address.
    pub line1: String,
    /// Apartment, floor, etc.
    pub line2: String,
    /// Postal code.
    pub postal_code: Option<String>,
    /// The default shipping address.
    pub is_default: bool,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// A member's role after a change.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleChanged {
    /// The member id.
    pub id: String,
    /// The new role.
    pub role: Role,
}

/// How many rows `keys rotate` rewrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reencrypted {
    /// Members re-encrypted.
    pub members: usize,
    /// Addresses re-encrypted.
    pub addresses: usize,
}

/// The members capability.
pub struct Members {
    db: Database,
    keys: KeyRing,
    mailer: Arc<dyn Mailer>,
    from: Mailbox,
    verify_url: url::Url,
    verification_ttl: Duration,
    clock: SharedClock,
    mirror: Arc<dyn AddressMirror>,
}

const NAME: &str = "member.name";
const EMAIL: &str = "member.email";
const PHONE: &str = "member.phone";
const LINE1: &str = "address.line1";
const LINE2: &str = "address.line2";
const POSTAL: &str = "address.postal_code";
/// The field an order's sealed shipping address is encrypted under.
pub const ORDER_ADDRESS: &str = "order.shipping_address";

fn collect<T>(errors: &mut Vec<FieldError>, field: &str, r: Result<T, String>) -> Option<T> {
    r.map_err(|m| errors.push(FieldError::new(field, m))).ok()
}

fn duplicate(fields: &[Unique]) -> MemberError {
    MemberError::Duplicate(
        fields
            .iter()
            .map(|f| match f {
                Unique::LoginId => FieldError::new("login_id", "is taken"),
                Unique::Email => FieldError::new("email", "is registered already"),
                Unique::Phone => FieldError::new("phone", "is registered already"),
            })
            .collect(),
    )
}

impl Members {
    /// Wires the pieces together; `public_base_url` is where the verification link points.
    #[allow(
        clippy::too_many_arguments,
        reason = "each is a piece the service needs, built once at start-up; the mirror must \
                  be chosen with the deployment (one in process would serve stale addresses \
                  beside other processes)"
    )]
    pub fn new(
        db: Database,
        keys: KeyRing,
        mailer: Arc<dyn Mailer>,
        from: Mailbox,
        public_base_url: &url::Url,
        verification_ttl: Duration,
        clock: SharedClock,
        mirror: Arc<dyn AddressMirror>,
    ) -> anyhow::Result<Self> {
        // Relative to the base's path, so a service under https://shop.example/api works.
        let mut base = public_base_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let verify_url = base.join("v1/members/verify").context("PUBLIC_BASE_URL")?;
        Ok(Self {
            db,
            keys,
            mailer,
            from,
            verify_url,
            verification_ttl,
            clock,
            mirror,
        })
    }

    async fn member(&self, id: &str) -> Result<MemberRow, MemberError> {
        repository::member_by_id(&self.db, id)
            .await?
            .ok_or(MemberError::NotFound)
    }

    fn decrypt(&self, field: &str, stored: &str) -> Result<String, MemberError> {
        self.keys
            .decrypt(field, stored)
            .with_context(|| format!("decrypting {field}"))
            .map_err(MemberError::Internal)
    }
}
