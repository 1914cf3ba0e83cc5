//! The order lifecycle's settings: the timings of every step and window, and how soon a
//! refund must be paid back.

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, secs};

/// As read (`ORDER_*_SECS`, `REFUND_SETTLE_WITHIN_SECS`).
#[derive(Serialize, Deserialize)]
pub(crate) struct RawSettings {
    pub(crate) order_cancel_window_secs: u64,
    pub(crate) order_ship_after_secs: u64,
    pub(crate) order_deliver_after_secs: u64,
    pub(crate) order_return_window_secs: u64,
    pub(crate) order_return_pickup_after_secs: u64,
    pub(crate) order_return_complete_after_secs: u64,
    pub(crate) refund_settle_within_secs: u64,
}

const DAY: u64 = 24 * 3600;

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            order_cancel_window_secs: DAY,
            order_ship_after_secs: DAY,
            order_deliver_after_secs: DAY,
            order_return_window_secs: DAY,
            order_return_pickup_after_secs: DAY,
            order_return_complete_after_secs: DAY,
            refund_settle_within_secs: 600,
        }
    }
}

/// The order lifecycle's settings.
#[derive(Debug, Clone, Copy)]
pub struct OrderSettings {
    /// The timing policy new orders are sold under (each order keeps its own).
    pub policy: openrun_domain::OrderPolicy,
    /// A refund not paid back this long after it was recorded fails the audit.
    pub refund_settle_within: std::time::Duration,
}

impl Default for OrderSettings {
    fn default() -> Self {
        // The defaults are valid.
        RawSettings::default()
            .validate()
            .unwrap_or_else(|_| unreachable!("the default order settings are valid"))
    }
}

impl RawSettings {
    pub(crate) fn validate(self) -> Result<OrderSettings, ConfigError> {
        let max = openrun_domain::policy::MAX_POLICY_DURATION;
        let duration = |var: &str, value: u64| {
            let d = secs(var, value, true)?;
            chrono::Duration::from_std(d)
                .ok()
                .filter(|d| *d <= max)
                .ok_or_else(|| {
                    ConfigError::new(var, format!("at most {} seconds", max.num_seconds()))
                })
        };
        let policy = openrun_domain::OrderPolicy {
            cancel_window: duration("ORDER_CANCEL_WINDOW_SECS", self.order_cancel_window_secs)?,
            ship_after: duration("ORDER_SHIP_AFTER_SECS", self.order_ship_after_secs)?,
            deliver_after: duration("ORDER_DELIVER_AFTER_SECS", self.order_deliver_after_secs)?,
            return_window: duration("ORDER_RETURN_WINDOW_SECS", self.order_return_window_secs)?,
            return_pickup_after: duration(
                "ORDER_RETURN_PICKUP_AFTER_SECS",
                self.order_return_pickup_after_secs,
            )?,
            return_complete_after: duration(
                "ORDER_RETURN_COMPLETE_AFTER_SECS",
                self.order_return_complete_after_secs,
            )?,
        };
        Ok(OrderSettings {
            policy,
            refund_settle_within: secs(
                "REFUND_SETTLE_WITHIN_SECS",
                self.refund_settle_within_secs,
                false,
            )?,
        })
    }
}
