//! The order timing policy, as data.
//!
//! Every automatic order step fires a configurable duration after the previous one, and the
//! buyer's cancel and return windows are durations too. Each defaults to 24 hours, as in the
//! old system. The policy in force when an order is placed is copied into its `OrderPlaced`
//! event, so an order keeps the windows it was sold with even if the configuration changes
//! later, and replay never depends on the current configuration.
//!
//! Durations serialize as whole seconds under `*_secs` keys (for example
//! `"cancel_window_secs": 86400`); a missing key takes its default.

use chrono::Duration;
use serde::{Deserialize, Serialize};

/// The longest duration a policy accepts: a year. Keeps instant arithmetic far from overflow.
pub const MAX_POLICY_DURATION: Duration = Duration::days(366);

/// The default of every policy duration.
pub const DEFAULT_STEP: Duration = Duration::hours(24);

/// Timing rules of the order lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OrderPolicy {
    /// How long after placing an order the buyer (or an admin) may cancel it.
    #[serde(rename = "cancel_window_secs", with = "seconds")]
    pub cancel_window: Duration,
    /// How long after placing an order it ships (`prepared` -> `in_delivery`).
    #[serde(rename = "ship_after_secs", with = "seconds")]
    pub ship_after: Duration,
    /// How long after shipping it is delivered (`in_delivery` -> `delivered`).
    #[serde(rename = "deliver_after_secs", with = "seconds")]
    pub deliver_after: Duration,
    /// How long after delivery the buyer may request a return.
    #[serde(rename = "return_window_secs", with = "seconds")]
    pub return_window: Duration,
    /// How long after a return request the goods are picked up (`return_requested` ->
    /// `in_return`).
    #[serde(rename = "return_pickup_after_secs", with = "seconds")]
    pub return_pickup_after: Duration,
    /// How long after pick-up the return completes and is refunded (`in_return` ->
    /// `return_completed`).
    #[serde(rename = "return_complete_after_secs", with = "seconds")]
    pub return_complete_after: Duration,
}

impl Default for OrderPolicy {
    fn default() -> Self {
        Self {
            cancel_window: DEFAULT_STEP,
            ship_after: DEFAULT_STEP,
            deliver_after: DEFAULT_STEP,
            return_window: DEFAULT_STEP,
            return_pickup_after: DEFAULT_STEP,
            return_complete_after: DEFAULT_STEP,
        }
    }
}

impl OrderPolicy {
    /// Checks that every duration lies in `0..=MAX_POLICY_DURATION`.
    ///
    /// # Errors
    /// The JSON name of the first field out of range.
    pub fn validate(&self) -> Result<(), &'static str> {
        let fields = [
            ("cancel_window_secs", self.cancel_window),
            ("ship_after_secs", self.ship_after),
            ("deliver_after_secs", self.deliver_after),
            ("return_window_secs", self.return_window),
            ("return_pickup_after_secs", self.return_pickup_after),
            ("return_complete_after_secs", self.return_complete_after),
        ];
        for (name, duration) in fields {
            if duration < Duration::zero() || duration > MAX_POLICY_DURATION {
                return Err(name);
            }
        }
        Ok(())
    }
}

/// Serde for a `chrono::Duration` as whole seconds (sub-second parts are dropped).
mod seconds {
    use chrono::Duration;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(duration.num_seconds())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = i64::deserialize(d)?;
        Duration::try_seconds(secs).ok_or_else(|| D::Error::custom("duration out of range"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::Duration;

    use super::OrderPolicy;

    #[test]
    fn defaults_to_a_day_each_and_reads_partial_config() {
        let policy: OrderPolicy = serde_json::from_str(r#"{"ship_after_secs": 60}"#).unwrap();
        assert_eq!(policy.ship_after, Duration::minutes(1));
        assert_eq!(policy.cancel_window, Duration::hours(24));
        assert_eq!(policy.return_complete_after, Duration::hours(24));
        let json = serde_json::to_value(OrderPolicy::default()).unwrap();
        assert_eq!(json["return_window_secs"], 86_400);
    }

    #[test]
    fn validate_rejects_negative_and_huge_durations() {
        assert_eq!(OrderPolicy::default().validate(), Ok(()));
        let negative = OrderPolicy {
            deliver_after: Duration::seconds(-1),
            ..OrderPolicy::default()
        };
        assert_eq!(negative.validate(), Err("deliver_after_secs"));
        let huge = OrderPolicy {
            return_window: Duration::days(400),
            ..OrderPolicy::default()
        };
        assert_eq!(huge.validate(), Err("return_window_secs"));
    }
}
