//! The product aggregate's state, rebuilt from its events.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::ProductError;
use super::event::SkipReason;
use super::status::ProductStatus;
use crate::actor::Actor;
use crate::ids::{CategoryId, MemberId, ProductId, ScheduleId};
use crate::money::Money;

/// The product aggregate: nothing until `ProductRegistered`, then its state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// `None` until the product is registered.
    pub state: Option<ProductState>,
}

/// A registered product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductState {
    /// The product.
    pub product_id: ProductId,
    /// The owning seller.
    pub seller_id: MemberId,
    /// Its category.
    pub category_id: CategoryId,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its current unit price.
    pub price: Money,
    /// Its lifecycle status.
    pub status: ProductStatus,
    /// Present exactly while `status` is `suspended`.
    pub suspension: Option<Suspension>,
    /// The current image set's version; 0 until the first set is published.
    pub image_version: u32,
    /// Soft-deleted: hidden and not buyable, for good.
    pub deleted: bool,
    /// Every schedule ever made on this product, so that a late or repeated firing of a
    /// closed one is recognised as a no-op rather than an unknown id.
    pub schedules: BTreeMap<ScheduleId, Schedule>,
}

/// How a product got suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    /// The status held before; the only status a resume may go to.
    pub resume_to: ProductStatus,
    /// Whether an admin suspended it; if so only an admin may resume it.
    pub by_admin: bool,
}

/// A scheduled status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// The target status.
    pub to: ProductStatus,
    /// When it becomes due.
    pub due_at: DateTime<Utc>,
    /// Who scheduled it.
    pub by: Actor,
    /// What became of it.
    pub state: ScheduleState,
}

/// What became of a scheduled change. Every state but `pending` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleState {
    /// Waiting for its instant.
    Pending,
    /// Fired and changed the status.
    Fired,
    /// Fired but could not apply (see [`SkipReason`]).
    Skipped,
    /// Cancelled by hand or by deletion.
    Cancelled,
    /// A later status change overtook it before it fired.
    Superseded,
}

impl fmt::Display for ScheduleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pending => "pending",
            Self::Fired => "fired",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
            Self::Superseded => "superseded",
        })
    }
}

/// Why a status move is refused; becomes a [`ProductError`] for a command, a [`SkipReason`]
/// for a scheduled change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    AlreadyInStatus,
    NotAllowed,
    SuspendedByAdmin,
}

impl ProductState {
    /// Checks the move `self.status -> to` for an actor who is (`by_admin`) or is not an
    /// admin: an edge of the graph, or the resume of a suspension to the status held before
    /// it (an admin's suspension being lifted by an admin only).
    ///
    /// # Errors
    /// `AlreadyInStatus`, `SuspendedByAdmin` or `TransitionNotAllowed`.
    pub fn check_transition(&self, to: ProductStatus, by_admin: bool) -> Result<(), ProductError> {
        self.refusal(to, by_admin).map_err(|refusal| match refusal {
            Refusal::AlreadyInStatus => ProductError::AlreadyInStatus { status: to },
            Refusal::SuspendedByAdmin => ProductError::SuspendedByAdmin,
            Refusal::NotAllowed => ProductError::TransitionNotAllowed {
                from: self.status,
                to,
            },
        })
    }

    pub(crate) fn skip_reason(&self, to: ProductStatus, by_admin: bool) -> Option<SkipReason> {
        self.refusal(to, by_admin)
            .err()
            .map(|refusal| match refusal {
                Refusal::AlreadyInStatus => SkipReason::AlreadyInStatus,
                Refusal::SuspendedByAdmin => SkipReason::SuspendedByAdmin,
                Refusal::NotAllowed => SkipReason::TransitionNotAllowed { from: self.status },
            })
    }

    fn refusal(&self, to: ProductStatus, by_admin: bool) -> Result<(), Refusal> {
        if self.status == to {
            return Err(Refusal::AlreadyInStatus);
        }
        if self.status != ProductStatus::Suspended {
            return if self.status.has_edge_to(to) {
                Ok(())
            } else {
                Err(Refusal::NotAllowed)
            };
        }
        match self.suspension {
            Some(s) if s.by_admin && !by_admin => Err(Refusal::SuspendedByAdmin),
            Some(s) if s.resume_to == to => Ok(()),
            _ => Err(Refusal::NotAllowed),
        }
    }

    /// The pending schedules, by id.
    pub fn pending_schedules(&self) -> impl Iterator<Item = (&ScheduleId, &Schedule)> {
        self.schedules
            .iter()
            .filter(|(_, s)| s.state == ScheduleState::Pending)
    }
}
