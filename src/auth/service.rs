//! Login, refresh with rotation and reuse detection, logout, the session list, password
//! change, and checking an access token on every request.
//!
//! The hot path ([`AuthService::authenticate`]) reads no database: the token's signature and
//! claims are checked in memory, and whether its session is still live comes from a small
//! in-memory cache in front of the token store (sessions ended by this process are known at
//! once; a session ended by another process is noticed within [`SESSION_CHECK_TTL`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::SecretString;
use serde::Serialize;
use utoipa::ToSchema;

use super::Identity;
use super::jwt::Jwt;
use super::ratelimit::{LimitError, Limiter, TooMany};
use super::tokens::{Refreshed, Session, TokenStore};
use crate::clock::SharedClock;
use crate::crypto::{random_token, token_hash};
use crate::db::Database;
use crate::members::repository;
use crate::members::{FieldError, Role, validation};
use crate::password;

/// How long a "session is live" answer is trusted before the token store is asked again.
pub const SESSION_CHECK_TTL: Duration = Duration::from_secs(5);
/// Longest device name kept.
pub const DEVICE_NAME_MAX: usize = 100;

/// The window of the failed-login budget (`FAILED_LOGINS_PER_ACCOUNT_PER_HOUR`).
pub const FAILURE_WINDOW: Duration = Duration::from_secs(3600);

/// What login and refresh return.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    /// The JWT to send as `Authorization: Bearer ...`.
    pub access_token: String,
    /// Single use: exchange it at `/v1/auth/refresh` for a new pair.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The device session both tokens belong to.
    pub session_id: String,
}

/// Why an authentication step failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown login id or wrong password (which one is not said).
    #[error("invalid login id or password")]
    InvalidCredentials,
    /// No valid access or refresh token.
    #[error("invalid or expired token")]
    InvalidToken,
    /// Rate limited.
    #[error("too many attempts")]
    TooMany(TooMany),
    /// No such session.
    #[error("no such session")]
    SessionNotFound,
    /// Another member's session.
    #[error("another member's session")]
    SessionForbidden,
    /// Field rules broken.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// Anything else (logged, never shown).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<TooMany> for AuthError {
    fn from(t: TooMany) -> Self {
        Self::TooMany(t)
    }
}

impl From<LimitError> for AuthError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::TooMany(t) => Self::TooMany(t),
            LimitError::Store(e) => Self::Internal(e),
        }
    }
}

/// Sessions and tokens.
pub struct AuthService {
    db: Database,
    jwt: Jwt,
    store: Arc<dyn TokenStore>,
    /// Rate limits of this process.
    pub limiter: Limiter,
    refresh_ttl: Duration,
    clock: SharedClock,
    /// Session liveness by session id: a live answer is trusted for [`SESSION_CHECK_TTL`], an
    /// ended one for the access-token lifetime (a token of it has expired by then).
    live: moka::sync::Cache<String, bool>,
}

/// How long each liveness answer is kept.
struct LivenessExpiry {
    ended_for: Duration,
}

impl moka::Expiry<String, bool> for LivenessExpiry {
    fn expire_after_create(&self, _: &String, live: &bool, _: Instant) -> Option<Duration> {
        Some(if *live {
            SESSION_CHECK_TTL
        } else {
            self.ended_for
        })
    }

    fn expire_after_update(
        &self,
        key: &String,
        live: &bool,
        at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, live, at)
    }
}

/// Most session answers kept in memory.
const MAX_CACHED_SESSIONS: u64 = 100_000;

impl AuthService {
    /// Wires the pieces together.
    pub fn new(
        db: Database,
        jwt: Jwt,
        store: Arc<dyn TokenStore>,
        limiter: Limiter,
        refresh_ttl: Duration,
        clock: SharedClock,
    ) -> Self {
        Self {
            db,
            store,
            limiter,
            refresh_ttl,
            clock,
            live: moka::sync::Cache::builder()
                .max_capacity(MAX_CACHED_SESSIONS)
                .expire_after(LivenessExpiry { ended_for: jwt.ttl })
                .build(),
            jwt,
        }
    }

    /// Checks the login id and password and opens a device session.
    pub async fn login(
        &self,
        login_id: &str,
        password: SecretString,
        device: Option<&str>,
        client: IpAddr,
    ) -> Result<TokenPair, AuthError> {
        // Only a well-formed login id keys the per-account limits: a body's arbitrary
        // string must not become a key the limiter keeps.
        let account = validation::login_id(login_id).ok();
        self.limiter.login(account.as_deref(), client).await?;
        if let Some(account) = &account {
            self.count_attempt(account).await?;
        }
        let member = match &account {
            Some(id) => repository::member_by_login_id(&self.db, id)
                .await
                .context("login")?,
            None => None,
        };
        let hash = member.as_ref().map(|m| m.password_hash.clone());
        if !password::verify(password, hash).await? {
            return Err(AuthError::InvalidCredentials);
        }
        if let Some(account) = &account {
            self.limiter.forgive_attempt(account).await?;
        }
        let member = member.ok_or(AuthError::InvalidCredentials)?;
        self.open_session(&member.id, role_of(&member.role)?, device)
            .await
    }

    /// Opens a device session for a member whose identity is already proven (by
    /// [`Self::login`]'s password check, or by a tool that prepares buyers for a drill or a
    /// test beside the server), with their current role.
    pub async fn open_session(
        &self,
        member_id: &str,
        role: Role,
        device: Option<&str>,
    ) -> Result<TokenPair, AuthError> {
        // Shown in the session list: no control or reordering characters (a name such as
        // "iPhone\u{202E}gnp.exe" would read as another), and not invisible.
        let device: String = device
            .map(|d| {
                d.chars()
                    .filter(|c| {
                        !c.is_control()
                            && !matches!(c, '\u{2028}' | '\u{2029}')
                            && !crate::members::validation::is_bidi_control(*c)
                    })
                    .take(DEVICE_NAME_MAX)
                    .collect::<String>()
            })
            .filter(|d| !d.chars().all(crate::members::validation::is_invisible))
            .map(|d| d.trim().to_owned())
            .unwrap_or_else(|| "unnamed device".to_owned());
        let now = self.clock.now();
        let session = Session {
            id: uuid::Uuid::now_v7().to_string(),
            member_id: member_id.to_owned(),
            device,
            created_at: now,
            last_used_at: now,
        };
        let secret = random_token();
        self.store
            .create(&session, &token_hash(&secret), self.refresh_ttl)
            .await?;
        self.pair(&session, role, &secret)
    }

    /// Exchanges a refresh token for a new pair; a rotated token ends its session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AuthError> {
        let (session_id, presented) = refresh_token
            .split_once('.')
            .ok_or(AuthError::InvalidToken)?;
        // The member (and so the role, read afresh: a member verified or promoted since
        // login gets it) is read before the token rotates, so that a failure here leaves the
        // presented token current and the client can retry.
        let Some(session) = self.store.session(session_id).await? else {
            return Err(AuthError::InvalidToken);
        };
        let member = repository::member_by_id(&self.db, &session.member_id)
            .await
            .context("refresh")?
            .ok_or(AuthError::InvalidToken)?;
        let role = role_of(&member.role)?;
        let secret = random_token();
        let outcome = self
            .store
            .rotate(
                session_id,
                &token_hash(presented),
                &token_hash(&secret),
                self.clock.now(),
                self.refresh_ttl,
            )
            .await?;
        match outcome {
            Refreshed::Rotated(session) => self.pair(&session, role, &secret),
            Refreshed::Reused { member_id } => {
                tracing::warn!(%member_id, session_id, "refresh token reused; session ended");
                self.mark_ended(&[session_id.to_owned()]);
                Err(AuthError::InvalidToken)
            }
            Refreshed::Unknown => Err(AuthError::InvalidToken),
        }
    }

    fn pair(&self, session: &Session, role: Role, secret: &str) -> Result<TokenPair, AuthError> {
        let access_token =
            self.jwt
                .issue(&session.member_id, &session.id, role, self.clock.now())?;
        self.remember(&session.id, true);
        Ok(TokenPair {
            access_token,
            refresh_token: format!("{}.{secret}", session.id),
            token_type: "Bearer",
            expires_in: self.jwt.ttl.as_secs(),
            session_id: session.id.clone(),
        })
    }

    /// The identity of a valid access token of a live session.
    pub async fn authenticate(&self, access_token: &str) -> Result<Identity, AuthError> {
        let claims = self
            .jwt
            .verify(access_token)
            .ok_or(AuthError::InvalidToken)?;
        let live = match self.live.get(&claims.sid) {
            Some(live) => live,
            None => {
                let live = self.store.is_active(&claims.sid).await?;
                self.remember(&claims.sid, live);
                live
            }
        };
        if !live {
            return Err(AuthError::InvalidToken);
        }
        Ok(Identity {
            member_id: claims.sub,
            session_id: claims.sid,
            role: claims.role,
        })
    }

    fn remember(&self, session_id: &str, live: bool) {
        self.live.insert(session_id.to_owned(), live);
    }

    fn mark_ended(&self, ids: &[String]) {
        for id in ids {
            self.remember(id, false);
        }
    }

    /// Counts a password attempt against the account's hourly budget of failures (shared by
    /// every process on the same Redis); refused when it is spent.
    async fn count_attempt(&self, account: &str) -> Result<(), AuthError> {
        self.limiter
            .count_attempt(account, self.limiter.max_failures(), FAILURE_WINDOW)
            .await?
            .map_err(|retry_after| AuthError::TooMany(TooMany { retry_after }))
    }

    /// Whether the token store answers, within a second (readiness).
    pub async fn ping(&self) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(1), self.store.ping())
            .await
            .map_err(|_| anyhow::anyhow!("the token store did not answer within a second"))?
    }

    /// Ends the caller's session.
    pub async fn logout(&self, who: &Identity) -> Result<(), AuthError> {
        self.end_session(who, &who.session_id).await
    }

    /// Ends every session of the caller.
    pub async fn logout_all(&self, who: &Identity) -> Result<(), AuthError> {
        let ended = self.store.end_all(&who.member_id, None).await?;
        self.mark_ended(&ended);
        self.mark_ended(std::slice::from_ref(&who.session_id));
        Ok(())
    }

    /// The caller's live sessions.
    pub async fn sessions(&self, who: &Identity) -> Result<Vec<Session>, AuthError> {
        Ok(self.store.sessions(&who.member_id).await?)
    }

    /// Ends one of the caller's sessions; another member's session is forbidden.
    pub async fn end_session(&self, who: &Identity, session_id: &str) -> Result<(), AuthError> {
        if !self.store.end(&who.member_id, session_id).await? {
            return Err(match self.store.session(session_id).await? {
                Some(_) => AuthError::SessionForbidden,
                None => AuthError::SessionNotFound,
            });
        }
        self.mark_ended(&[session_id.to_owned()]);
        Ok(())
    }

    /// Changes the caller's password after checking the current one, and ends every other
    /// session of the member. Wrong current passwords count towards the failed-login limit.
    pub async fn change_password(
        &self,
        who: &Identity,
        current: SecretString,
        new: SecretString,
    ) -> Result<(), AuthError> {
        use secrecy::ExposeSecret;
        let member = repository::member_by_id(&self.db, &who.member_id)
            .await
            .context("change password")?
            .ok_or(AuthError::InvalidToken)?;
        if let Err(message) = validation::password(new.expose_secret(), &member.login_id) {
            return Err(AuthError::Invalid(vec![FieldError::new(
                "new_password",
                message,
            )]));
        }
        // Wrong current passwords count as failed logins: a stolen access token must not
        // become a way to guess the password.
        self.limiter.password_check(&member.login_id).await?;
        self.count_attempt(&member.login_id).await?;
        if !password::verify(current, Some(member.password_hash)).await? {
            return Err(AuthError::Invalid(vec![FieldError::new(
                "current_password",
                "does not match",
            )]));
        }
        self.limiter.forgive_attempt(&member.login_id).await?;
        let hash = password::hash(new).await?;
        // The other sessions end first: should the store fail, the password is unchanged and
        // the request can simply be repeated; ending sessions twice is harmless.
        let ended = self
            .store
            .end_all(&member.id, Some(&who.session_id))
            .await?;
        self.mark_ended(&ended);
        repository::update_password(&self.db, &member.id, &hash, self.clock.now())
            .await
            .context("change password")?;
        Ok(())
    }
}

fn role_of(stored: &str) -> anyhow::Result<Role> {
    Role::parse(stored).with_context(|| format!("unknown stored role {stored:?}"))
}
