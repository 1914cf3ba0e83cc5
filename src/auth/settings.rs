//! The settings of logins and sessions: token lifetimes and rate limits.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ratelimit::RateLimits;
use crate::config::{ConfigError, secs};

/// As read (`*_TOKEN_TTL_SECS` and the rate limits).
#[derive(Serialize, Deserialize)]
pub(crate) struct RawSettings {
    pub(crate) access_token_ttl_secs: u64,
    pub(crate) refresh_token_ttl_secs: u64,
    pub(crate) login_per_account_per_minute: u32,
    pub(crate) login_per_address_per_minute: u32,
    pub(crate) failed_logins_per_account_per_hour: u32,
    pub(crate) signups_per_address_per_hour: u32,
    pub(crate) resends_per_address_per_hour: u32,
    pub(crate) resends_per_member_per_hour: u32,
    pub(crate) phone_changes_per_member_per_hour: u32,
    pub(crate) orders_per_member_per_minute: u32,
    pub(crate) orders_per_address_per_minute: u32,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            login_per_account_per_minute: 10,
            login_per_address_per_minute: 30,
            failed_logins_per_account_per_hour: 100,
            signups_per_address_per_hour: 20,
            resends_per_address_per_hour: 5,
            resends_per_member_per_hour: 3,
            phone_changes_per_member_per_hour: 5,
            orders_per_member_per_minute: 60,
            orders_per_address_per_minute: 6000,
        }
    }
}

/// Token lifetimes and rate limits.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Lifetime of an access token.
    pub access_token_ttl: Duration,
    /// Idle lifetime of a device session (each refresh extends it).
    pub refresh_token_ttl: Duration,
    /// Rate limits.
    pub rate_limits: RateLimits,
}

impl RawSettings {
    pub(crate) fn validate(self) -> Result<AuthSettings, ConfigError> {
        let rate = |var: &str, value: u32| {
            NonZeroU32::new(value).ok_or_else(|| ConfigError::new(var, "must be at least 1"))
        };
        Ok(AuthSettings {
            access_token_ttl: secs("ACCESS_TOKEN_TTL_SECS", self.access_token_ttl_secs, false)?,
            refresh_token_ttl: secs("REFRESH_TOKEN_TTL_SECS", self.refresh_token_ttl_secs, false)?,
            rate_limits: RateLimits {
                login_per_account_per_minute: rate(
                    "LOGIN_PER_ACCOUNT_PER_MINUTE",
                    self.login_per_account_per_minute,
                )?,
                login_per_address_per_minute: rate(
                    "LOGIN_PER_ADDRESS_PER_MINUTE",
                    self.login_per_address_per_minute,
                )?,
                failed_logins_per_account_per_hour: rate(
                    "FAILED_LOGINS_PER_ACCOUNT_PER_HOUR",
                    self.failed_logins_per_account_per_hour,
                )?,
                signups_per_address_per_hour: rate(
                    "SIGNUPS_PER_ADDRESS_PER_HOUR",
                    self.signups_per_address_per_hour,
                )?,
                resends_per_address_per_hour: rate(
                    "RESENDS_PER_ADDRESS_PER_HOUR",
                    self.resends_per_address_per_hour,
                )?,
                resends_per_member_per_hour: rate(
                    "RESENDS_PER_MEMBER_PER_HOUR",
                    self.resends_per_member_per_hour,
                )?,
                phone_changes_per_member_per_hour: rate(
                    "PHONE_CHANGES_PER_MEMBER_PER_HOUR",
                    self.phone_changes_per_member_per_hour,
                )?,
                orders_per_member_per_minute: rate(
                    "ORDERS_PER_MEMBER_PER_MINUTE",
                    self.orders_per_member_per_minute,
                )?,
                orders_per_address_per_minute: rate(
                    "ORDERS_PER_ADDRESS_PER_MINUTE",
                    self.orders_per_address_per_minute,
                )?,
            },
        })
    }
}
