//! The member use cases: sign-up, e-mail verification and resend, the profile, addresses,
//! roles, the first admin, and re-encryption under a new key. Personal data is encrypted here,
//! before the repository sees it, and decrypted only for the member it belongs to.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Role;
use super::repository::{self, AddressRow, MemberRow, TokenUse, Unique, WriteError};
use super::validation::{self, FieldError};
use crate::clock::SharedClock;
use crate::crypto::{KeyRing, random_token, token_hash};
use crate::db::Database;
use crate::mail::{self, Mailer};

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
}

const NAME: &str = "member.name";
const EMAIL: &str = "member.email";
const PHONE: &str = "member.phone";
const LINE1: &str = "address.line1";
const LINE2: &str = "address.line2";
const POSTAL: &str = "address.postal_code";

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
    pub fn new(
        db: Database,
        keys: KeyRing,
        mailer: Arc<dyn Mailer>,
        from: Mailbox,
        public_base_url: &url::Url,
        verification_ttl: Duration,
        clock: SharedClock,
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
        })
    }

    fn address_row(
        &self,
        member_id: &str,
        id: String,
        input: &AddressInput,
        is_default: bool,
        prefix: &str,
        errors: &mut Vec<FieldError>,
    ) -> Option<AddressRow> {
        let line1 = collect(
            errors,
            &format!("{prefix}line1"),
            validation::address_line(&input.line1, true),
        );
        let line2 = collect(
            errors,
            &format!("{prefix}line2"),
            validation::address_line(&input.line2, false),
        );
        let postal = match &input.postal_code {
            Some(p) => collect(
                errors,
                &format!("{prefix}postal_code"),
                validation::postal_code(p),
            )
            .map(Some),
            None => Some(None),
        };
        Some(AddressRow {
            id,
            member_id: member_id.into(),
            line1_enc: self.keys.encrypt(LINE1, &line1?),
            line2_enc: self.keys.encrypt(LINE2, &line2?),
            postal_code_enc: postal?.map(|p| self.keys.encrypt(POSTAL, &p)),
            is_default,
            created_at: self.clock.now(),
        })
    }

    /// Signs a member up as `unverified` and e-mails the verification link.
    pub async fn sign_up(&self, input: SignUp) -> Result<SignedUp, MemberError> {
        let mut errors = Vec::new();
        let login_id = collect(
            &mut errors,
            "login_id",
            validation::login_id(&input.login_id),
        );
        collect(
            &mut errors,
            "password",
            validation::password(input.password.expose_secret(), &input.login_id),
        );
        let name = collect(&mut errors, "name", validation::name(&input.name));
        let phone = collect(&mut errors, "phone", validation::phone(&input.phone));
        let email = collect(&mut errors, "email", validation::email(&input.email));
        let id = uuid::Uuid::now_v7().to_string();
        let address = self.address_row(
            &id,
            uuid::Uuid::now_v7().to_string(),
            &input.address,
            true,
            "address.",
            &mut errors,
        );
        let (Some(login_id), Some(name), Some(phone), Some(email), Some(address), true) =
            (login_id, name, phone, email, address, errors.is_empty())
        else {
            return Err(MemberError::Invalid(errors));
        };
        let email_bidx = self
            .keys
            .blind_index("email", &validation::email_key(&email));
        let phone_bidx = self
            .keys
            .blind_index("phone", &validation::phone_key(&phone));
        let taken = repository::taken(&self.db, &login_id, &email_bidx, &phone_bidx).await?;
        if !taken.is_empty() {
            return Err(duplicate(&taken));
        }
        let now = self.clock.now();
        let row = MemberRow {
            id: id.clone(),
            login_id: login_id.clone(),
            password_hash: crate::password::hash(input.password).await?,
            role: Role::Unverified.as_str().into(),
            name_enc: self.keys.encrypt(NAME, &name),
            email_enc: self.keys.encrypt(EMAIL, &email),
            email_bidx,
            phone_enc: Some(self.keys.encrypt(PHONE, &phone)),
            phone_bidx: Some(phone_bidx),
            created_at: now,
        };
        match repository::insert_member(&self.db, &row, Some(&address)).await {
            Ok(()) => {}
            Err(WriteError::Duplicate(field)) => return Err(duplicate(&[field])),
            Err(WriteError::Db(e)) => return Err(e.into()),
        }
        // The member exists now; a mail failure is logged and the member can ask again.
        if let Err(e) = self.send_verification(&id, &email).await {
            tracing::error!(member_id = %id, error = format!("{e:#}"), "verification e-mail not sent");
        }
        Ok(SignedUp {
            id,
            login_id,
            role: Role::Unverified,
        })
    }

    async fn send_verification(&self, member_id: &str, email: &str) -> anyhow::Result<()> {
        let token = random_token();
        let ttl = chrono::Duration::from_std(self.verification_ttl).context("ttl")?;
        let now = self.clock.now();
        repository::insert_verification_token(
            &self.db,
            &token_hash(&token),
            member_id,
            now,
            now + ttl,
        )
        .await
        .context("storing the verification token")?;
        let mut link = self.verify_url.clone();
        link.query_pairs_mut().append_pair("token", &token);
        let message = mail::verification_message(&self.from, email, link.as_str())?;
        self.mailer.send(message).await
    }

    /// Follows a verification link: a good token makes an unverified member `basic`, once.
    /// Returns the member's role after it.
    pub async fn verify(&self, token: &str) -> Result<Role, MemberError> {
        match repository::use_verification_token(&self.db, &token_hash(token), self.clock.now())
            .await?
        {
            TokenUse::Verified(id) => {
                let member = self.member(&id).await?;
                Ok(Role::parse(&member.role).context("stored role")?)
            }
            TokenUse::Used => Err(MemberError::TokenUsed),
            TokenUse::Expired => Err(MemberError::TokenExpired),
            TokenUse::Unknown => Err(MemberError::TokenUnknown),
        }
    }

    async fn member(&self, id: &str) -> Result<MemberRow, MemberError> {
        repository::member_by_id(&self.db, id)
            .await?
            .ok_or(MemberError::NotFound)
    }

    /// Sends a new verification link to an unverified member.
    pub async fn resend_verification(&self, member_id: &str) -> Result<(), MemberError> {
        let member = self.member(member_id).await?;
        if member.role != Role::Unverified.as_str() {
            return Err(MemberError::AlreadyVerified);
        }
        let email = self.decrypt(EMAIL, &member.email_enc)?;
        self.send_verification(member_id, &email).await?;
        Ok(())
    }

    fn decrypt(&self, field: &str, stored: &str) -> Result<String, MemberError> {
        self.keys
            .decrypt(field, stored)
            .with_context(|| format!("decrypting {field}"))
            .map_err(MemberError::Internal)
    }

    fn profile(&self, m: MemberRow) -> Result<Profile, MemberError> {
        Ok(Profile {
            name: self.decrypt(NAME, &m.name_enc)?,
            email: self.decrypt(EMAIL, &m.email_enc)?,
            phone: m
                .phone_enc
                .as_deref()
                .map(|p| self.decrypt(PHONE, p))
                .transpose()?,
            role: Role::parse(&m.role).context("stored role")?,
            id: m.id,
            login_id: m.login_id,
            created_at: m.created_at,
        })
    }

    /// The member's own profile.
    pub async fn me(&self, member_id: &str) -> Result<Profile, MemberError> {
        let member = self.member(member_id).await?;
        self.profile(member)
    }

    /// Changes the name and/or phone.
    pub async fn update_me(
        &self,
        member_id: &str,
        patch: ProfilePatch,
    ) -> Result<Profile, MemberError> {
        let mut errors = Vec::new();
        let name = patch
            .name
            .map(|n| collect(&mut errors, "name", validation::name(&n)));
        let phone = patch
            .phone
            .map(|p| collect(&mut errors, "phone", validation::phone(&p)));
        if !errors.is_empty() {
            return Err(MemberError::Invalid(errors));
        }
        let name_enc = name.flatten().map(|n| self.keys.encrypt(NAME, &n));
        let phone = phone.flatten().map(|p| {
            (
                self.keys.encrypt(PHONE, &p),
                self.keys.blind_index("phone", &validation::phone_key(&p)),
            )
        });
        let phone_ref = phone.as_ref().map(|(e, b)| (e.as_str(), b.as_str()));
        match repository::update_profile(
            &self.db,
            member_id,
            name_enc.as_deref(),
            phone_ref,
            self.clock.now(),
        )
        .await
        {
            Ok(true) => self.me(member_id).await,
            Ok(false) => Err(MemberError::NotFound),
            Err(WriteError::Duplicate(field)) => Err(duplicate(&[field])),
            Err(WriteError::Db(e)) => Err(e.into()),
        }
    }

    fn address(&self, row: AddressRow) -> Result<Address, MemberError> {
        Ok(Address {
            line1: self.decrypt(LINE1, &row.line1_enc)?,
            line2: self.decrypt(LINE2, &row.line2_enc)?,
            postal_code: row
                .postal_code_enc
                .as_deref()
                .map(|p| self.decrypt(POSTAL, p))
                .transpose()?,
            id: row.id,
            is_default: row.is_default,
            created_at: row.created_at,
        })
    }

    /// The member's addresses.
    pub async fn addresses(&self, member_id: &str) -> Result<Vec<Address>, MemberError> {
        repository::addresses(&self.db, member_id)
            .await?
            .into_iter()
            .map(|r| self.address(r))
            .collect()
    }

    /// One of the member's addresses.
    pub async fn get_address(&self, member_id: &str, id: &str) -> Result<Address, MemberError> {
        match repository::address(&self.db, member_id, id).await? {
            Some(row) => self.address(row),
            None => Err(self.not_theirs(id).await),
        }
    }

    /// Why the member has no address `id`: it belongs to someone else (403) or does not
    /// exist (404).
    async fn not_theirs(&self, id: &str) -> MemberError {
        match repository::address_exists(&self.db, id).await {
            Ok(true) => MemberError::Forbidden,
            Ok(false) => MemberError::NotFound,
            Err(e) => e.into(),
        }
    }

    /// Adds an address, at most [`super::MAX_ADDRESSES`].
    pub async fn add_address(
        &self,
        member_id: &str,
        input: AddressInput,
    ) -> Result<Address, MemberError> {
        let mut errors = Vec::new();
        let is_default = input.is_default.unwrap_or(false);
        let id = uuid::Uuid::now_v7().to_string();
        let Some(mut row) = self.address_row(member_id, id, &input, is_default, "", &mut errors)
        else {
            return Err(MemberError::Invalid(errors));
        };
        if !repository::add_address(&self.db, &mut row).await? {
            return Err(MemberError::AddressLimit);
        }
        self.address(row)
    }

    /// Replaces one of the member's addresses.
    pub async fn update_address(
        &self,
        member_id: &str,
        id: &str,
        input: AddressInput,
    ) -> Result<Address, MemberError> {
        let mut errors = Vec::new();
        let Some(current) = repository::address(&self.db, member_id, id).await? else {
            return Err(self.not_theirs(id).await);
        };
        let is_default = input.is_default.unwrap_or(current.is_default);
        let Some(mut row) =
            self.address_row(member_id, id.into(), &input, is_default, "", &mut errors)
        else {
            return Err(MemberError::Invalid(errors));
        };
        row.created_at = current.created_at;
        if !repository::update_address(&self.db, &mut row).await? {
            return Err(self.not_theirs(id).await);
        }
        self.address(row)
    }

    /// Deletes one of the member's addresses.
    pub async fn delete_address(&self, member_id: &str, id: &str) -> Result<(), MemberError> {
        if repository::delete_address(&self.db, member_id, id).await? {
            Ok(())
        } else {
            Err(self.not_theirs(id).await)
        }
    }

    /// Grants `seller` or `admin`.
    pub async fn set_role(&self, member_id: &str, role: Role) -> Result<RoleChanged, MemberError> {
        if role < Role::Seller {
            return Err(MemberError::Invalid(vec![FieldError::new(
                "role",
                "must be seller or admin",
            )]));
        }
        // Only ever raised: a grant never demotes (an admin's live tokens would keep the
        // higher role until they expire).
        let lower: Vec<&str> = Role::ALL
            .iter()
            .filter(|r| **r < role)
            .map(|r| r.as_str())
            .collect();
        if !repository::raise_role(&self.db, member_id, role.as_str(), &lower, self.clock.now())
            .await?
        {
            let member = repository::member_by_id(&self.db, member_id)
                .await?
                .ok_or(MemberError::NotFound)?;
            if member.role != role.as_str() {
                return Err(MemberError::RoleNotRaised);
            }
        }
        Ok(RoleChanged {
            id: member_id.into(),
            role,
        })
    }

    /// Creates a verified admin (the `openrun admin create` command).
    pub async fn create_admin(
        &self,
        login_id: &str,
        email: &str,
        password: SecretString,
    ) -> Result<String, MemberError> {
        let mut errors = Vec::new();
        let login = collect(&mut errors, "login_id", validation::login_id(login_id));
        collect(
            &mut errors,
            "password",
            validation::password(password.expose_secret(), login_id),
        );
        let email = collect(&mut errors, "email", validation::email(email));
        let (Some(login), Some(email), true) = (login, email, errors.is_empty()) else {
            return Err(MemberError::Invalid(errors));
        };
        let email_bidx = self
            .keys
            .blind_index("email", &validation::email_key(&email));
        let taken = repository::taken(&self.db, &login, &email_bidx, "").await?;
        if !taken.is_empty() {
            return Err(duplicate(&taken));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let row = MemberRow {
            id: id.clone(),
            password_hash: crate::password::hash(password).await?,
            role: Role::Admin.as_str().into(),
            name_enc: self.keys.encrypt(NAME, &login),
            login_id: login,
            email_enc: self.keys.encrypt(EMAIL, &email),
            email_bidx,
            phone_enc: None,
            phone_bidx: None,
            created_at: self.clock.now(),
        };
        match repository::insert_member(&self.db, &row, None).await {
            Ok(()) => Ok(id),
            Err(WriteError::Duplicate(field)) => Err(duplicate(&[field])),
            Err(WriteError::Db(e)) => Err(e.into()),
        }
    }

    /// Re-encrypts every value not under the current key (`openrun keys rotate`).
    pub async fn reencrypt_all(&self) -> Result<Reencrypted, MemberError> {
        let mut done = Reencrypted::default();
        let keys = &self.keys;
        let again = |field: &str, v: &str| keys.reencrypt(field, v).context("re-encrypting");
        for mut m in repository::all_members(&self.db).await? {
            let stale = keys.is_stale(&m.name_enc)
                || keys.is_stale(&m.email_enc)
                || m.phone_enc.as_deref().is_some_and(|p| keys.is_stale(p));
            if stale {
                m.name_enc = again(NAME, &m.name_enc)?;
                m.email_enc = again(EMAIL, &m.email_enc)?;
                m.phone_enc = m
                    .phone_enc
                    .as_deref()
                    .map(|p| again(PHONE, p))
                    .transpose()?;
                repository::rewrite_member_ciphertexts(&self.db, &m).await?;
                done.members += 1;
            }
        }
        for mut a in repository::all_addresses(&self.db).await? {
            let stale = keys.is_stale(&a.line1_enc)
                || keys.is_stale(&a.line2_enc)
                || a.postal_code_enc
                    .as_deref()
                    .is_some_and(|p| keys.is_stale(p));
            if stale {
                a.line1_enc = again(LINE1, &a.line1_enc)?;
                a.line2_enc = again(LINE2, &a.line2_enc)?;
                a.postal_code_enc = a
                    .postal_code_enc
                    .as_deref()
                    .map(|p| again(POSTAL, p))
                    .transpose()?;
                repository::rewrite_address_ciphertexts(&self.db, &a).await?;
                done.addresses += 1;
            }
        }
        Ok(done)
    }
}
