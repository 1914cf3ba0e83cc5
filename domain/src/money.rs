//! Money as integer minor units (cents, won, yen...), never floating point.
//!
//! The shop runs in one currency, so no currency code is carried. Arithmetic is checked: an
//! overflow is a refused command, never a wrapped total.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount in minor units. Serializes as a bare JSON integer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    /// Nothing.
    pub const ZERO: Self = Self(0);

    /// An amount of `minor` units.
    pub const fn from_minor(minor: i64) -> Self {
        Self(minor)
    }

    /// The amount in minor units.
    pub const fn minor(self) -> i64 {
        self.0
    }

    /// Whether the amount is above zero.
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// `self + other`, or `None` on overflow.
    pub const fn checked_add(self, other: Self) -> Option<Self> {
        match self.0.checked_add(other.0) {
            Some(sum) => Some(Self(sum)),
            None => None,
        }
    }

    /// `self * quantity`, or `None` on overflow.
    pub const fn checked_mul(self, quantity: u32) -> Option<Self> {
        match self.0.checked_mul(quantity as i64) {
            Some(product) => Some(Self(product)),
            None => None,
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} minor units", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Money;

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(
            Money::from_minor(250).checked_mul(4),
            Some(Money::from_minor(1000))
        );
        assert_eq!(Money::from_minor(i64::MAX).checked_mul(2), None);
        assert_eq!(
            Money::from_minor(i64::MAX).checked_add(Money::from_minor(1)),
            None
        );
        assert!(!Money::ZERO.is_positive());
    }
}
