//! The stock aggregate: the supply of one variant (size) of a product. One `stock` stream per
//! variant, with the variant's id.
//!
//! It records supply only: units added by the seller and corrections. Units sold, released
//! and restocked are facts of the order streams (`OrderPlaced`, `OrderCancelled`,
//! `ReturnCompleted`); the stock projection derives what is available as
//! `supply - sold + released + restocked`. This aggregate therefore cannot stop a
//! correction from going below the units already sold; it guarantees that supply itself is
//! never negative, and the service checks availability against its stock projection.
//!
//! Rules: the owning seller or an admin ([`StockError::NotOwner`],
//! [`StockError::RoleNotAllowed`]); the owner comes in the command, filled by the service
//! from the product, never from a request body. `Add` takes a quantity above zero. `Adjust`
//! takes a non-zero signed delta and a non-blank reason (at most [`MAX_REASON_CHARS`]
//! characters), and may lower supply but never below zero.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::actor::{Actor, Denied, Role};
use crate::ids::MemberId;
use uuid::Uuid;

/// The longest adjustment reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// The version of every stock event.
pub const STOCK_EVENT_VERSION: &str = "1.0";

/// The stock aggregate: the product's supply. A stream with no events has a supply of 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    /// Units added, plus corrections; never negative.
    pub supply: i64,
    /// The change each request id made, as (delta, reason).
    pub requests: BTreeMap<Uuid, (i64, Option<String>)>,
}

/// A request to a stock stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StockCommand {
    /// Add units to the supply.
    Add {
        /// Who asks.
        actor: Actor,
        /// The product's seller, as the product aggregate knows it.
        owner: MemberId,
        /// How many units; above zero.
        quantity: i64,
        /// The request, for idempotent retries.
        request_id: Option<Uuid>,
    },
    /// Correct the supply by a signed delta.
    Adjust {
        /// Who asks.
        actor: Actor,
        /// The product's seller, as the product aggregate knows it.
        owner: MemberId,
        /// The correction; not zero.
        delta: i64,
        /// Why (shown in the product's history).
        reason: String,
        /// The request, for idempotent retries.
        request_id: Option<Uuid>,
    },
}

/// Something that happened to a product's supply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum StockEvent {
    /// Units were added.
    StockAdded {
        /// How many.
        quantity: i64,
        /// The supply after.
        supply: i64,
        /// The request that made it, if it named one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<Uuid>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The supply was corrected.
    StockAdjusted {
        /// The correction.
        delta: i64,
        /// Why.
        reason: String,
        /// The supply after.
        supply: i64,
        /// The request that made it, if it named one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<Uuid>,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for StockEvent {
    fn event_type(&self) -> String {
        match self {
            Self::StockAdded { .. } => "StockAdded",
            Self::StockAdjusted { .. } => "StockAdjusted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        STOCK_EVENT_VERSION.to_owned()
    }
}

/// A refused stock command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StockError {
    /// The actor's role may not change stock (a basic member acting as a seller).
    #[error("role {role} may not change stock")]
    RoleNotAllowed {
        /// The actor's role.
        role: Role,
    },
    /// A seller changing another seller's stock.
    #[error("not the product's seller")]
    NotOwner,
    /// `Add` with zero or fewer units.
    #[error("quantity must be above zero")]
    NonPositiveQuantity,
    /// `Adjust` by zero.
    #[error("an adjustment must change the supply")]
    ZeroAdjustment,
    /// `Adjust` with no reason.
    #[error("an adjustment needs a reason")]
    BlankReason,
    /// `Adjust` with a reason longer than the limit.
    #[error("reason longer than {max} characters")]
    ReasonTooLong {
        /// The limit, [`MAX_REASON_CHARS`].
        max: usize,
    },
    /// The supply would drop below zero.
    #[error("supply {supply} cannot change by {delta}: it would be negative")]
    SupplyWouldBeNegative {
        /// The current supply.
        supply: i64,
        /// The refused delta.
        delta: i64,
    },
    /// The supply would overflow.
    #[error("supply overflow")]
    SupplyOverflow,
    /// The request id was used for another change.
    #[error("this request id was used for another change")]
    RequestReused,
}

impl From<Denied> for StockError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::RoleNotAllowed { role } => Self::RoleNotAllowed { role },
            Denied::NotOwner => Self::NotOwner,
        }
    }
}

/// Decides what a command does to a product's supply at instant `now`.
///
/// # Errors
/// A [`StockError`] naming the broken rule.
pub fn decide(
    stock: &Stock,
    command: StockCommand,
    now: DateTime<Utc>,
) -> Result<Vec<StockEvent>, StockError> {
    match command {
        StockCommand::Add {
            actor,
            owner,
            quantity,
            request_id,
        } => {
            actor.owner_or_admin(owner)?;
            if quantity <= 0 {
                return Err(StockError::NonPositiveQuantity);
            }
            if replayed(stock, request_id, quantity, None)? {
                return Ok(vec![]);
            }
            let supply = stock
                .supply
                .checked_add(quantity)
                .ok_or(StockError::SupplyOverflow)?;
            Ok(vec![StockEvent::StockAdded {
                quantity,
                supply,
                request_id,
                at: now,
            }])
        }
        StockCommand::Adjust {
            actor,
            owner,
            delta,
            reason,
            request_id,
        } => {
            actor.owner_or_admin(owner)?;
            if delta == 0 {
                return Err(StockError::ZeroAdjustment);
            }
            let reason = reason.trim();
            if reason.is_empty() {
                return Err(StockError::BlankReason);
            }
            if reason.chars().count() > MAX_REASON_CHARS {
                return Err(StockError::ReasonTooLong {
                    max: MAX_REASON_CHARS,
                });
            }
            if replayed(stock, request_id, delta, Some(reason))? {
                return Ok(vec![]);
            }
            let supply = stock
                .supply
                .checked_add(delta)
                .ok_or(StockError::SupplyOverflow)?;
            if supply < 0 {
                return Err(StockError::SupplyWouldBeNegative {
                    supply: stock.supply,
                    delta,
                });
            }
            Ok(vec![StockEvent::StockAdjusted {
                delta,
                reason: reason.to_owned(),
                supply,
                request_id,
                at: now,
            }])
        }
    }
}

/// Whether `request_id` already made this change (`true`: accept with no event); another
/// change under it is refused.
fn replayed(
    stock: &Stock,
    request_id: Option<Uuid>,
    delta: i64,
    reason: Option<&str>,
) -> Result<bool, StockError> {
    let Some(made) = request_id.and_then(|id| stock.requests.get(&id)) else {
        return Ok(false);
    };
    if made.0 == delta && made.1.as_deref() == reason {
        Ok(true)
    } else {
        Err(StockError::RequestReused)
    }
}

/// Folds one event into the stock: the event's `supply` is the supply after it.
pub fn apply(stock: &mut Stock, event: &StockEvent) {
    let (supply, request_id, change) = match event {
        StockEvent::StockAdded {
            supply,
            request_id,
            quantity,
            ..
        } => (*supply, request_id, (*quantity, None)),
        StockEvent::StockAdjusted {
            supply,
            request_id,
            delta,
            reason,
            ..
        } => (*supply, request_id, (*delta, Some(reason.clone()))),
    };
    stock.supply = supply;
    if let Some(id) = request_id {
        stock.requests.insert(*id, change);
    }
}

aggregate_shim!(Stock, "stock", StockCommand, StockEvent, StockError);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use uuid::Uuid;

    use super::{Stock, StockCommand, StockError, StockEvent, apply, decide};
    use crate::actor::{Actor, Role};
    use crate::ids::MemberId;

    const SELLER: MemberId = MemberId::from_uuid(Uuid::from_u128(1));
    const OTHER: MemberId = MemberId::from_uuid(Uuid::from_u128(2));

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 9, 0, 0).unwrap()
    }

    fn seller() -> Actor {
        Actor::new(SELLER, Role::Seller)
    }

    fn given(events: &[StockEvent]) -> Stock {
        let mut stock = Stock::default();
        for event in events {
            apply(&mut stock, event);
        }
        stock
    }

    fn added(quantity: i64, supply: i64) -> StockEvent {
        StockEvent::StockAdded {
            quantity,
            supply,
            at: now(),
            request_id: None,
        }
    }

    fn add(actor: Actor, quantity: i64) -> StockCommand {
        StockCommand::Add {
            actor,
            owner: SELLER,
            quantity,
            request_id: None,
        }
    }

    fn adjust(actor: Actor, delta: i64, reason: &str) -> StockCommand {
        StockCommand::Adjust {
            actor,
            owner: SELLER,
            delta,
            reason: reason.to_owned(),
            request_id: None,
        }
    }

    #[test]
    fn owner_adds_stock() {
        let stock = given(&[added(10, 10)]);
        assert_eq!(
            decide(&stock, add(seller(), 5), now()),
            Ok(vec![added(5, 15)])
        );
    }

    #[test]
    fn admin_adds_stock_to_any_product() {
        let admin = Actor::new(OTHER, Role::Admin);
        assert_eq!(
            decide(&Stock::default(), add(admin, 3), now()),
            Ok(vec![added(3, 3)])
        );
    }

    #[test]
    fn add_refuses_zero_or_negative_quantity() {
        for quantity in [0, -4] {
            assert_eq!(
                decide(&Stock::default(), add(seller(), quantity), now()),
                Err(StockError::NonPositiveQuantity)
            );
        }
    }

    #[test]
    fn add_refuses_overflow() {
        let stock = given(&[added(i64::MAX, i64::MAX)]);
        assert_eq!(
            decide(&stock, add(seller(), 1), now()),
            Err(StockError::SupplyOverflow)
        );
    }

    #[test]
    fn other_seller_and_basic_member_are_refused() {
        let other_seller = Actor::new(OTHER, Role::Seller);
        let basic = Actor::new(SELLER, Role::Basic);
        for command in [add(other_seller, 1), adjust(other_seller, 1, "count")] {
            assert_eq!(
                decide(&Stock::default(), command, now()),
                Err(StockError::NotOwner)
            );
        }
        for command in [add(basic, 1), adjust(basic, 1, "count")] {
            assert_eq!(
                decide(&Stock::default(), command, now()),
                Err(StockError::RoleNotAllowed { role: Role::Basic })
            );
        }
    }

    #[test]
    fn adjust_lowers_supply_down_to_zero() {
        let stock = given(&[added(10, 10)]);
        assert_eq!(
            decide(
                &stock,
                adjust(seller(), -10, "  damaged in storage "),
                now()
            ),
            Ok(vec![StockEvent::StockAdjusted {
                delta: -10,
                reason: "damaged in storage".to_owned(),
                supply: 0,
                at: now(),
                request_id: None,
            }])
        );
    }

    #[test]
    fn adjust_raises_supply() {
        let stock = given(&[added(10, 10)]);
        let events = decide(&stock, adjust(seller(), 2, "recount"), now()).unwrap();
        assert_eq!(given(&[added(10, 10), events[0].clone()]).supply, 12);
    }

    #[test]
    fn adjust_never_below_zero() {
        let stock = given(&[added(10, 10)]);
        assert_eq!(
            decide(&stock, adjust(seller(), -11, "recount"), now()),
            Err(StockError::SupplyWouldBeNegative {
                supply: 10,
                delta: -11
            })
        );
    }

    #[test]
    fn adjust_refuses_zero_delta_and_bad_reasons() {
        let stock = given(&[added(10, 10)]);
        assert_eq!(
            decide(&stock, adjust(seller(), 0, "recount"), now()),
            Err(StockError::ZeroAdjustment)
        );
        assert_eq!(
            decide(&stock, adjust(seller(), -1, " \t"), now()),
            Err(StockError::BlankReason)
        );
        assert_eq!(
            decide(&stock, adjust(seller(), -1, &"x".repeat(501)), now()),
            Err(StockError::ReasonTooLong { max: 500 })
        );
    }

    #[test]
    fn adjust_refuses_overflow() {
        let stock = given(&[added(i64::MAX, i64::MAX)]);
        assert_eq!(
            decide(&stock, adjust(seller(), 1, "recount"), now()),
            Err(StockError::SupplyOverflow)
        );
    }

    #[test]
    fn the_aggregate_shim_matches_decide() {
        use cqrs_es::test::TestFramework;

        use crate::Stamped;

        TestFramework::<Stock>::with(())
            .given(vec![added(10, 10)])
            .when(Stamped::new(add(seller(), 5), now()))
            .then_expect_events(vec![added(5, 15)]);
        TestFramework::<Stock>::with(())
            .given(vec![added(10, 10)])
            .when(Stamped::new(adjust(seller(), -11, "recount"), now()))
            .then_expect_error(StockError::SupplyWouldBeNegative {
                supply: 10,
                delta: -11,
            });
    }

    #[test]
    fn a_retried_request_adds_once_and_a_reused_id_is_refused() {
        let id = Some(Uuid::from_u128(7));
        let with = |quantity| StockCommand::Add {
            actor: seller(),
            owner: SELLER,
            quantity,
            request_id: id,
        };
        let mut stock = Stock::default();
        let first = decide(&stock, with(5), now()).unwrap();
        assert_eq!(first.len(), 1);
        apply(&mut stock, &first[0]);
        assert_eq!(stock.supply, 5);
        assert_eq!(
            decide(&stock, with(5), now()),
            Ok(vec![]),
            "a retry is a no-op"
        );
        assert_eq!(
            decide(&stock, with(6), now()),
            Err(StockError::RequestReused)
        );
        let adjust = StockCommand::Adjust {
            actor: seller(),
            owner: SELLER,
            delta: 5,
            reason: "recount".to_owned(),
            request_id: id,
        };
        assert_eq!(
            decide(&stock, adjust, now()),
            Err(StockError::RequestReused)
        );
    }
}
