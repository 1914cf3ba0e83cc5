//! The product aggregate's state, rebuilt from its events.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::ProductError;
use super::event::SkipReason;
use super::status::ProductStatus;
use crate::actor::Actor;
use crate::ids::{CategoryId, MemberId, ProductId, ScheduleId, VariantId};
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
    /// Its variants, in the order they were made (retired ones included).
    pub variants: Vec<Variant>,
    /// Units one member may buy across the variants; `None`: no limit.
    pub purchase_limit: Option<u32>,
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

/// One variant (size) of a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// The variant, also its stock stream's id.
    pub variant_id: VariantId,
    /// Its option label.
    pub label: String,
    /// No longer sold.
    pub retired: bool,
}

/// How a product got suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    /// The status held before; the only status a resume may go to.
    pub resume_to: ProductStatus,
    /// Whether an admin suspended it; if so only an admin may resume it.
    pub by_admin: bool,
}

impl Suspension {
    /// The suspension a move to `suspended` from `from` leaves: a suspension of a suspended
    /// product (an admin taking over the seller's) keeps the status to resume to.
    pub(crate) fn after(previous: Option<Self>, from: ProductStatus, by_admin: bool) -> Self {
        match previous {
            Some(previous) if from == ProductStatus::Suspended => Self {
                resume_to: previous.resume_to,
                by_admin: previous.by_admin || by_admin,
            },
            _ => Self {
                resume_to: from,
                by_admin,
            },
        }
    }
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
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
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

/// Whether the move `status -> to` is refused, for a product whose suspension (present while
/// `status` is `suspended`) is `suspension`: all the graph needs to know of a product.
fn refusal(
    status: ProductStatus,
    suspension: Option<Suspension>,
    to: ProductStatus,
    by_admin: bool,
) -> Result<(), Refusal> {
    if status == to {
        // An admin takes over a suspension its seller made: only an admin resumes it then.
        let taken_over =
            to == ProductStatus::Suspended && by_admin && suspension.is_some_and(|s| !s.by_admin);
        return if taken_over {
            Ok(())
        } else {
            Err(Refusal::AlreadyInStatus)
        };
    }
    if status != ProductStatus::Suspended {
        return if status.has_edge_to(to) {
            Ok(())
        } else {
            Err(Refusal::NotAllowed)
        };
    }
    match suspension {
        Some(s) if s.by_admin && !by_admin => Err(Refusal::SuspendedByAdmin),
        Some(s) if s.resume_to == to => Ok(()),
        _ => Err(Refusal::NotAllowed),
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
        refusal(self.status, self.suspension, to, by_admin)
    }

    /// The variant `id`, if the product has it.
    pub fn variant(&self, id: VariantId) -> Option<&Variant> {
        self.variants.iter().find(|v| v.variant_id == id)
    }

    /// The status in effect at `now`: the recorded status with every pending schedule due
    /// by `now` applied in order (those the graph refuses are skipped, as the scheduler
    /// would skip them). A storefront shows this, so a drop opens on its instant even if the
    /// scheduler fires a moment late.
    pub fn status_at(&self, now: DateTime<Utc>) -> ProductStatus {
        self.planned()
            .take_while(|(due, _, _)| *due <= now)
            .filter_map(|(_, _, applied)| applied)
            .last()
            .unwrap_or(self.status)
    }

    /// The pending schedules in due order, each with the status it would set on the
    /// product's planned path (`None`: the graph would skip it).
    pub fn planned(
        &self,
    ) -> impl Iterator<Item = (DateTime<Utc>, ScheduleId, Option<ProductStatus>)> + '_ {
        let mut pending: Vec<_> = self.pending_schedules().collect();
        pending.sort_by_key(|(id, s)| (s.due_at, **id));
        // Only the status and the suspension move along the path.
        let (mut status, mut suspension) = (self.status, self.suspension);
        pending.into_iter().map(move |(id, s)| {
            let applied = refusal(status, suspension, s.to, s.by.is_admin()).is_ok();
            if applied {
                suspension = (s.to == ProductStatus::Suspended)
                    .then(|| Suspension::after(suspension, status, s.by.is_admin()));
                status = s.to;
            }
            (s.due_at, *id, applied.then_some(s.to))
        })
    }

    /// The next pending instant at which the planned path moves to `to`, after `now`.
    pub fn next_instant_of(&self, to: ProductStatus, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.planned()
            .filter(|(due, _, applied)| *due > now && *applied == Some(to))
            .map(|(due, _, _)| due)
            .next()
    }

    /// The pending schedules, by id.
    pub fn pending_schedules(&self) -> impl Iterator<Item = (&ScheduleId, &Schedule)> {
        self.schedules
            .iter()
            .filter(|(_, s)| s.state == ScheduleState::Pending)
    }
}
