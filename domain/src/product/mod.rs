//! The product aggregate: details, price, lifecycle status, scheduled status changes and
//! image versions. One `product` stream per product.
//!
//! # Status graph
//!
//! ```text
//! not_published -> waiting -> on_sale -> ended    the main line
//! not_published -> on_sale                        publish and open at once
//! waiting -> not_published                        withdraw an announcement
//! ended -> on_sale                                reopen (for example after a restock)
//! ended -> waiting                                announce a re-run
//! any status but suspended -> suspended           take down (hidden, not buyable)
//! suspended -> the status held before             resume
//! ```
//!
//! Allowed moves, exhaustively (every other move is refused with
//! [`ProductError::TransitionNotAllowed`], a move to the current status with
//! [`ProductError::AlreadyInStatus`]):
//!
//! | from | to |
//! |---|---|
//! | not_published | waiting, on_sale, suspended |
//! | waiting | not_published, on_sale, suspended |
//! | on_sale | ended, suspended |
//! | ended | on_sale, waiting, suspended |
//! | suspended | only the status held before the suspension |
//!
//! An admin's suspension can only be lifted by an admin ([`ProductError::SuspendedByAdmin`]);
//! a seller may suspend and resume their own product. To pause a sale, suspend it; to end a
//! suspended sale, resume it and end it.
//!
//! # Rules
//!
//! - Register: sellers only; name not blank (trimmed, at most [`MAX_NAME_CHARS`]
//!   characters), description at most [`MAX_DESCRIPTION_CHARS`], price in
//!   `1..=`[`MAX_PRICE`]. Every other command: the owning seller or an admin; a seller on
//!   someone else's product gets [`ProductError::NotOwner`], a basic member
//!   [`ProductError::RoleNotAllowed`].
//! - Details and price change by `ChangeDetails` (one `ProductDetailsChanged` and/or one
//!   `ProductPriceChanged`; values equal to the current ones are not changes).
//! - Scheduled changes: due strictly in the future, at most [`MAX_PENDING_SCHEDULES`]
//!   pending. Firing (by the scheduler) before the due instant is
//!   [`ProductError::ScheduleNotDue`]; firing a cancelled, superseded, skipped or already
//!   fired schedule is a no-op (no events). A due schedule whose move is refused at that
//!   moment emits `ScheduledStatusChangeSkipped` with the reason, so it is closed and the
//!   seller can see why. A schedule carries its author's rights.
//! - Superseding makes the outcome independent of the order in which a late scheduler fires
//!   due schedules (the old system applied concurrent reservations in any order): a status
//!   change supersedes every pending schedule due at or before its cut-off, which is the
//!   change's instant for a change by hand and the fired schedule's due instant otherwise.
//! - Variants: 1 to [`MAX_VARIANTS`], labels trimmed, not blank, at most
//!   [`MAX_LABEL_CHARS`], unique ignoring case; a retired variant is not sold and the last
//!   active variant cannot be retired. Purchase limit: `1..=`[`MAX_PURCHASE_LIMIT`] or none.
//! - Schedules are made in whole seconds, at least [`SCHEDULE_MIN_LEAD`] ahead, never at
//!   the instant of another pending one, and only if the status graph applies them on the
//!   product's planned path (its status, then its pending schedules in order) without making
//!   a later pending one inapplicable. Within [`FREEZE_WINDOW`] before a pending `on_sale`
//!   instant, schedules, price, purchase limit and variants are frozen
//!   ([`ProductError::Frozen`]).
//! - Delete is soft: the product is hidden and not buyable for good; its pending schedules
//!   are cancelled (one `ScheduledStatusChangeCancelled` each, then `ProductDeleted`), and
//!   every later member command is [`ProductError::Deleted`].
//! - Images: a complete new set per version (1 to [`MAX_IMAGES_PER_KIND`] thumbnails, up to
//!   as many detail images); versions count from 1.

mod command;
mod decide;
mod error;
mod event;
mod state;
mod status;
#[cfg(test)]
mod tests;

pub use command::ProductCommand;
pub use decide::{apply, decide};
pub use error::ProductError;
pub use event::{
    DEFAULT_VARIANT_LABEL, ImageKind, NewVariant, PRODUCT_EVENT_VERSION,
    PRODUCT_REGISTERED_VERSION, ProductEvent, SkipReason, implicit_variant_id,
    upcast_product_registered_v1, upcast_product_registered_v2, upcasters,
};
pub use state::{Product, ProductState, Schedule, ScheduleState, Suspension, Variant};
pub use status::ProductStatus;

use crate::money::Money;

/// The longest product name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// The longest product description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 20_000;
/// The highest unit price (keeps order totals far from overflow).
pub const MAX_PRICE: Money = Money::from_minor(1_000_000_000_000);
/// The most pending scheduled changes one product may have.
pub const MAX_PENDING_SCHEDULES: usize = 20;
/// The most images of each kind in one image set.
pub const MAX_IMAGES_PER_KIND: usize = 5;
/// The most variants (sizes) of one product, retired ones included.
pub const MAX_VARIANTS: usize = 50;
/// The longest variant label, in characters.
pub const MAX_LABEL_CHARS: usize = 30;
/// The highest purchase limit per member.
pub const MAX_PURCHASE_LIMIT: u32 = 100;
/// The longest reason given with a status change, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// How far ahead of its instant a scheduled change must be made, at least.
pub const SCHEDULE_MIN_LEAD: chrono::Duration = chrono::Duration::seconds(10);
/// Before a pending `on_sale` instant, the product is frozen for this long: no schedule is
/// made or cancelled and neither price nor purchase limit nor variants change, so that no
/// process opens or prices a drop with stale data. At least the live catalog's lag bound.
pub const FREEZE_WINDOW: chrono::Duration = chrono::Duration::seconds(5);

aggregate_shim!(
    Product,
    "product",
    ProductCommand,
    ProductEvent,
    ProductError
);
