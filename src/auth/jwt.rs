//! Access tokens: HS256 JWTs of 15 minutes with `typ: at+jwt` (RFC 9068), audience and expiry.
//! Verification allows HS256 only (so `none` and algorithm confusion are refused), checks the
//! header's `typ` (so no other JWT passes as an access token), `aud`, `iss` and `exp` with no
//! leeway.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};

use crate::members::Role;

/// The `typ` header of an access token.
pub const TYP: &str = "at+jwt";
/// The `aud` and `iss` of access tokens.
pub const AUDIENCE: &str = "openrun";

/// What an access token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The member id.
    pub sub: String,
    /// The device session id: a token dies with its session.
    pub sid: String,
    /// The member's role when the token was issued.
    pub role: Role,
    /// Audience.
    pub aud: String,
    /// Issuer.
    pub iss: String,
    /// Issued at (seconds).
    pub iat: i64,
    /// Expires at (seconds).
    pub exp: i64,
}

/// Issues and checks access tokens.
pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Lifetime of an access token.
    pub ttl: Duration,
}

impl Jwt {
    /// With the HS256 secret and token lifetime.
    pub fn new(secret: &SecretSlice<u8>, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret.expose_secret()),
            decoding: DecodingKey::from_secret(secret.expose_secret()),
            validation,
            ttl,
        }
    }

    /// A signed access token.
    pub fn issue(
        &self,
        member_id: &str,
        session_id: &str,
        role: Role,
        now: DateTime<Utc>,
    ) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(TYP.into());
        let claims = Claims {
            sub: member_id.into(),
            sid: session_id.into(),
            role,
            aud: AUDIENCE.into(),
            iss: AUDIENCE.into(),
            iat: now.timestamp(),
            exp: now.timestamp() + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
        };
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }

    /// The claims of a valid access token; `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::HS256 || header.typ.as_deref() != Some(TYP) {
            return None;
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
    }
}
