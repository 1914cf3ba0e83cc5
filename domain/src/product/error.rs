//! Why a product command is refused.

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::event::ImageKind;
use super::state::ScheduleState;
use super::status::ProductStatus;
use crate::actor::{Denied, Role};
use crate::ids::ScheduleId;
use crate::money::Money;

/// A refused product command. Each variant is a stable, documented outcome the HTTP layer
/// maps to one problem type.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProductError {
    /// The product stream has no `ProductRegistered` event.
    #[error("product not found")]
    NotRegistered,
    /// `Register` on a stream that already holds a product.
    #[error("product already registered")]
    AlreadyRegistered,
    /// The product was deleted; only scheduled changes still fire (as no-ops).
    #[error("product deleted")]
    Deleted,
    /// The actor's role may not issue this command (a basic member acting as a seller, a
    /// non-admin firing a schedule...).
    #[error("role {role} may not do this")]
    RoleNotAllowed {
        /// The actor's role.
        role: Role,
    },
    /// A seller acting on another seller's product.
    #[error("not the product's seller")]
    NotOwner,
    /// The name is empty or only white space.
    #[error("name must not be blank")]
    BlankName,
    /// The name is longer than the limit.
    #[error("name longer than {max} characters")]
    NameTooLong {
        /// The limit, [`super::MAX_NAME_CHARS`].
        max: usize,
    },
    /// The description is longer than the limit.
    #[error("description longer than {max} characters")]
    DescriptionTooLong {
        /// The limit, [`super::MAX_DESCRIPTION_CHARS`].
        max: usize,
    },
    /// The price is zero or negative.
    #[error("price must be above zero")]
    NonPositivePrice,
    /// The price is above the limit.
    #[error("price above {max}")]
    PriceTooHigh {
        /// The limit, [`super::MAX_PRICE`].
        max: Money,
    },
    /// The product already has the requested status.
    #[error("product is already {status}")]
    AlreadyInStatus {
        /// The current status.
        status: ProductStatus,
    },
    /// The status graph has no such move.
    #[error("cannot move a product from {from} to {to}")]
    TransitionNotAllowed {
        /// The current status.
        from: ProductStatus,
        /// The requested status.
        to: ProductStatus,
    },
    /// An admin suspended the product; only an admin may lift the suspension.
    #[error("suspended by an admin; only an admin may resume it")]
    SuspendedByAdmin,
    /// A scheduled change must be due strictly after the moment it is made.
    #[error("a scheduled change must be in the future")]
    ScheduleNotInFuture,
    /// The schedule id is already used on this product.
    #[error("schedule {schedule_id} already exists")]
    DuplicateSchedule {
        /// The id.
        schedule_id: ScheduleId,
    },
    /// Too many pending schedules on this product.
    #[error("at most {max} pending scheduled changes per product")]
    TooManySchedules {
        /// The limit, [`super::MAX_PENDING_SCHEDULES`].
        max: usize,
    },
    /// No schedule with that id on this product.
    #[error("schedule {schedule_id} not found")]
    ScheduleNotFound {
        /// The id.
        schedule_id: ScheduleId,
    },
    /// Cancelling a schedule that already fired, was skipped, cancelled or superseded.
    #[error("schedule {schedule_id} is no longer pending ({state})")]
    ScheduleNotPending {
        /// The id.
        schedule_id: ScheduleId,
        /// What became of it.
        state: ScheduleState,
    },
    /// Cancelling a schedule whose instant has passed: every process shows it in effect
    /// already, so undoing it would take back what buyers saw.
    #[error("schedule {schedule_id} took effect at {due_at}")]
    ScheduleDue {
        /// The id.
        schedule_id: ScheduleId,
        /// Its instant.
        due_at: DateTime<Utc>,
    },
    /// Firing a schedule before its instant.
    #[error("schedule is not due before {due_at}")]
    ScheduleNotDue {
        /// When it becomes due.
        due_at: DateTime<Utc>,
    },
    /// An image set needs at least one thumbnail.
    #[error("at least one thumbnail is required")]
    NoThumbnail,
    /// Too many images of one kind.
    #[error("at most {max} {kind} images")]
    TooManyImages {
        /// Which kind.
        kind: ImageKind,
        /// The limit, [`super::MAX_IMAGES_PER_KIND`].
        max: usize,
    },
    /// A product needs at least one variant.
    #[error("a product needs at least one variant")]
    NoVariants,
    /// Too many variants.
    #[error("at most {max} variants")]
    TooManyVariants {
        /// The limit, [`super::MAX_VARIANTS`].
        max: usize,
    },
    /// A variant label is empty.
    #[error("variant labels must not be blank")]
    BlankVariantLabel,
    /// A variant label is longer than the limit.
    #[error("variant label longer than {max} characters")]
    VariantLabelTooLong {
        /// The limit, [`super::MAX_LABEL_CHARS`].
        max: usize,
    },
    /// Two variants with one label (ignoring case).
    #[error("variant label {label} is used twice")]
    DuplicateVariantLabel {
        /// The label.
        label: String,
    },
    /// A variant id is used already.
    #[error("variant id used already")]
    DuplicateVariantId,
    /// No such variant on this product.
    #[error("variant not found")]
    VariantNotFound,
    /// The variant is retired already.
    #[error("variant already retired")]
    VariantAlreadyRetired,
    /// The last variant still sold cannot be retired.
    #[error("the last variant still sold cannot be retired")]
    LastVariant,
    /// A purchase limit of 0 or above the highest.
    #[error("purchase limit must be between 1 and {max}")]
    PurchaseLimitOutOfRange {
        /// The limit, [`super::MAX_PURCHASE_LIMIT`].
        max: u32,
    },
    /// A reason longer than the limit.
    #[error("reason longer than {max} characters")]
    ReasonTooLong {
        /// The limit, [`super::MAX_REASON_CHARS`].
        max: usize,
    },
    /// A scheduled instant with a fraction of a second.
    #[error("a scheduled change is made in whole seconds")]
    ScheduleNotWholeSeconds,
    /// A scheduled instant too close to now.
    #[error("a scheduled change must be at least {min_lead_secs} s ahead")]
    ScheduleTooSoon {
        /// The least lead, [`super::SCHEDULE_MIN_LEAD`].
        min_lead_secs: i64,
    },
    /// Another pending schedule of the product has this instant.
    #[error("another scheduled change is pending at {due_at}")]
    ScheduleClash {
        /// The instant.
        due_at: DateTime<Utc>,
    },
    /// The status graph would skip this schedule on the product's planned path.
    #[error("the product would be {from} at that instant, and cannot move to {to}")]
    ScheduleNeverApplies {
        /// The status on the planned path just before the instant.
        from: ProductStatus,
        /// The requested status.
        to: ProductStatus,
    },
    /// The schedule would make a later pending one inapplicable.
    #[error("that change would make the pending schedule {schedule_id} impossible")]
    ScheduleBreaksAnother {
        /// The schedule that would be skipped.
        schedule_id: ScheduleId,
    },
    /// A drop opens within the freeze window: schedules, price, limit and variants hold.
    #[error("the product opens for sale at {opens_at}; it is frozen until then")]
    Frozen {
        /// The pending on_sale instant.
        opens_at: DateTime<Utc>,
    },
    /// An image key is empty.
    #[error("image keys must not be blank")]
    BlankImageKey,
    /// An admin scheduled this change; only an admin may cancel it.
    #[error("an admin scheduled this change; only an admin may cancel it")]
    ScheduledByAdmin,
}

impl From<Denied> for ProductError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::RoleNotAllowed { role } => Self::RoleNotAllowed { role },
            Denied::NotOwner => Self::NotOwner,
        }
    }
}
