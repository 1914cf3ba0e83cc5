//! The members capability's settings: where verification links point and how long they live.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, secs};

/// As read (`PUBLIC_BASE_URL`, `VERIFICATION_TTL_SECS`).
#[derive(Serialize, Deserialize)]
pub(crate) struct RawSettings {
    pub(crate) public_base_url: String,
    pub(crate) verification_ttl_secs: u64,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            public_base_url: "http://127.0.0.1:8080".into(),
            verification_ttl_secs: 24 * 3600,
        }
    }
}

/// Where verification links point and how long they live.
#[derive(Debug, Clone)]
pub struct MemberSettings {
    /// The public base URL of the service, for links in e-mails.
    pub public_base_url: url::Url,
    /// Lifetime of an e-mail verification link.
    pub verification_ttl: Duration,
}

impl RawSettings {
    pub(crate) fn validate(self) -> Result<MemberSettings, ConfigError> {
        let public_base_url = url::Url::parse(self.public_base_url.trim_end_matches('/'))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ConfigError::new(
                    "PUBLIC_BASE_URL",
                    "expected an http(s) URL such as https://shop.example",
                )
            })?;
        Ok(MemberSettings {
            public_base_url,
            verification_ttl: secs("VERIFICATION_TTL_SECS", self.verification_ttl_secs, true)?,
        })
    }
}
