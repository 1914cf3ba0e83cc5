//! Product events: what happened to a product, in the past tense.
//!
//! Stored as adjacently tagged JSON, `{"type": "ProductPriceChanged", "data": {...}}`, where
//! `type` equals [`DomainEvent::event_type`]. The shapes are pinned by the golden files in
//! `domain/tests/golden/product/`.

use std::fmt;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::status::ProductStatus;
use crate::actor::Actor;
use crate::ids::{CategoryId, MemberId, ProductId, ScheduleId, VariantId};
use crate::money::Money;

/// The current version of `ProductRegistered`: 2.0 added `description` (1.0 had none), 3.0
/// added `variants` and `purchase_limit` (2.0 products had one implicit variant, no limit).
pub const PRODUCT_REGISTERED_VERSION: &str = "3.0";

/// The label of the one variant of a product registered without sizes.
pub const DEFAULT_VARIANT_LABEL: &str = "default";

/// A variant as registered or added: its id (also its stock stream's) and its option label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewVariant {
    /// The variant, supplied by the service.
    pub variant_id: VariantId,
    /// Its option label, trimmed ("270", "M").
    pub label: String,
}

/// The id of the one implicit variant of a product registered before variants existed
/// (`ProductRegistered` 2.0 and older): derived from the product id, so every replay agrees.
pub fn implicit_variant_id(product_id: ProductId) -> VariantId {
    VariantId::from_uuid(uuid::Uuid::new_v5(
        &product_id.as_uuid(),
        b"openrun:default-variant",
    ))
}

/// The version of every other product event.
pub const PRODUCT_EVENT_VERSION: &str = "1.0";

/// The kinds of product image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageKind {
    /// A thumbnail shown in lists and at the top of the product page.
    Thumbnail,
    /// An image in the product description.
    Detail,
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Thumbnail => "thumbnail",
            Self::Detail => "detail",
        })
    }
}

/// Why a due scheduled change did not change the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// The product already had the target status.
    AlreadyInStatus,
    /// The status graph has no move from the status the product had when it fired.
    TransitionNotAllowed {
        /// The product's status at that moment.
        from: ProductStatus,
    },
    /// An admin suspended the product and the schedule was made by its seller.
    SuspendedByAdmin,
}

/// Something that happened to a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
#[allow(
    clippy::large_enum_variant,
    reason = "events are moved rarely; boxing would only complicate matching"
)]
pub enum ProductEvent {
    /// A seller registered a product; it starts `not_published`, with no images.
    /// Version 2.0 (1.0 lacked `description`; see [`upcasters`]).
    ProductRegistered {
        /// The product (also the stream id).
        product_id: ProductId,
        /// The seller who owns it.
        seller_id: MemberId,
        /// Its category.
        category_id: CategoryId,
        /// Its name, trimmed.
        name: String,
        /// Its description (may be empty).
        description: String,
        /// Its unit price.
        price: Money,
        /// Its variants, 1 to [`super::MAX_VARIANTS`] (3.0).
        variants: Vec<NewVariant>,
        /// How many units one member may buy across its variants; `null` for no limit (3.0).
        purchase_limit: Option<u32>,
        /// When it was registered.
        at: DateTime<Utc>,
    },
    /// The purchase limit per member changed (`null`: no limit).
    ProductPurchaseLimitChanged {
        /// The limit before.
        from: Option<u32>,
        /// The limit after.
        to: Option<u32>,
    },
    /// A variant was added; its stock starts at zero.
    VariantAdded {
        /// The variant, with its label.
        #[serde(flatten)]
        variant: NewVariant,
    },
    /// A variant was retired: still shown in orders that hold it, no longer sold.
    VariantRetired {
        /// The variant.
        variant_id: VariantId,
    },
    /// Name, description or category changed; a field is `null` when it did not change.
    ProductDetailsChanged {
        /// The new category, if it changed.
        category_id: Option<CategoryId>,
        /// The new name, if it changed.
        name: Option<String>,
        /// The new description, if it changed.
        description: Option<String>,
    },
    /// The unit price changed. Orders already placed keep the price they were placed at.
    ProductPriceChanged {
        /// The previous price.
        from: Money,
        /// The new price.
        to: Money,
    },
    /// The lifecycle status changed, by hand (`schedule_id` is `null`) or by a scheduled
    /// change firing. Every pending schedule due at or before the cut-off (this change's
    /// instant when by hand, the fired schedule's due instant otherwise) is superseded.
    ProductStatusChanged {
        /// The status before.
        from: ProductStatus,
        /// The status after.
        to: ProductStatus,
        /// Who asked for it (for a schedule: who scheduled it).
        by: Actor,
        /// The schedule that fired, if any.
        schedule_id: Option<ScheduleId>,
        /// Why, when given (an admin's suspension states one); absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// When it changed.
        at: DateTime<Utc>,
    },
    /// A status change was scheduled for a future instant.
    StatusChangeScheduled {
        /// The schedule, supplied by the service.
        schedule_id: ScheduleId,
        /// The target status.
        to: ProductStatus,
        /// When it becomes due.
        due_at: DateTime<Utc>,
        /// Who scheduled it; their rights apply when it fires.
        by: Actor,
    },
    /// A pending scheduled change was cancelled (by hand, or because the product was
    /// deleted).
    ScheduledStatusChangeCancelled {
        /// The schedule.
        schedule_id: ScheduleId,
        /// Who cancelled it.
        by: Actor,
    },
    /// A due scheduled change fired but could not apply; it is closed.
    ScheduledStatusChangeSkipped {
        /// The schedule.
        schedule_id: ScheduleId,
        /// Why it did not apply.
        reason: SkipReason,
        /// When it fired.
        at: DateTime<Utc>,
    },
    /// A new, complete image set was published; older versions may be purged.
    ProductImagesPublished {
        /// The new version, one more than the previous (the first set is version 1).
        image_version: u32,
        /// Object-store keys of the thumbnails, in display order.
        thumbnails: Vec<String>,
        /// Object-store keys of the detail images, in display order.
        details: Vec<String>,
    },
    /// The product was soft-deleted: hidden and not buyable from now on.
    ProductDeleted {
        /// Who deleted it.
        by: Actor,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ProductEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ProductRegistered { .. } => "ProductRegistered",
            Self::ProductDetailsChanged { .. } => "ProductDetailsChanged",
            Self::ProductPriceChanged { .. } => "ProductPriceChanged",
            Self::ProductStatusChanged { .. } => "ProductStatusChanged",
            Self::StatusChangeScheduled { .. } => "StatusChangeScheduled",
            Self::ScheduledStatusChangeCancelled { .. } => "ScheduledStatusChangeCancelled",
            Self::ScheduledStatusChangeSkipped { .. } => "ScheduledStatusChangeSkipped",
            Self::ProductImagesPublished { .. } => "ProductImagesPublished",
            Self::ProductDeleted { .. } => "ProductDeleted",
            Self::ProductPurchaseLimitChanged { .. } => "ProductPurchaseLimitChanged",
            Self::VariantAdded { .. } => "VariantAdded",
            Self::VariantRetired { .. } => "VariantRetired",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            Self::ProductRegistered { .. } => PRODUCT_REGISTERED_VERSION,
            _ => PRODUCT_EVENT_VERSION,
        }
        .to_owned()
    }
}

/// Upgrades a `ProductRegistered` 1.0 payload to 2.0: adds an empty `description`.
/// Payloads that already have one are left alone.
pub fn upcast_product_registered_v1(mut payload: Value) -> Value {
    if let Some(data) = payload.get_mut("data").and_then(Value::as_object_mut) {
        data.entry("description")
            .or_insert_with(|| Value::String(String::new()));
    }
    payload
}

/// Upgrades a `ProductRegistered` 2.0 payload to 3.0: one implicit variant (id from
/// [`implicit_variant_id`], label [`DEFAULT_VARIANT_LABEL`]) and no purchase limit.
pub fn upcast_product_registered_v2(mut payload: Value) -> Value {
    let Some(data) = payload.get_mut("data").and_then(Value::as_object_mut) else {
        return payload;
    };
    let product_id = data
        .get("product_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<uuid::Uuid>().ok())
        .map(ProductId::from_uuid);
    if let (Some(product_id), false) = (product_id, data.contains_key("variants")) {
        data.insert(
            "variants".to_owned(),
            serde_json::json!([{
                "variant_id": implicit_variant_id(product_id),
                "label": DEFAULT_VARIANT_LABEL,
            }]),
        );
    }
    data.entry("purchase_limit").or_insert(Value::Null);
    payload
}

/// The upcasters for product events, oldest first, ready for cqrs-es's
/// `PersistedEventStore::with_upcasters`.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![
        Box::new(SemanticVersionEventUpcaster::new(
            "ProductRegistered",
            "2.0",
            Box::new(upcast_product_registered_v1),
        )),
        Box::new(SemanticVersionEventUpcaster::new(
            "ProductRegistered",
            PRODUCT_REGISTERED_VERSION,
            Box::new(upcast_product_registered_v2),
        )),
    ]
}
