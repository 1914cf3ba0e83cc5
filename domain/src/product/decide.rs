//! The product decisions and the fold of product events into state.

use chrono::{DateTime, Utc};

use super::command::ProductCommand;
use super::error::ProductError;
use super::event::{ImageKind, NewVariant, ProductEvent};
use super::state::{Product, ProductState, Schedule, ScheduleState, Suspension, Variant};
use super::status::ProductStatus;
use super::{
    FREEZE_WINDOW, MAX_DESCRIPTION_CHARS, MAX_IMAGES_PER_KIND, MAX_LABEL_CHARS, MAX_NAME_CHARS,
    MAX_PENDING_SCHEDULES, MAX_PRICE, MAX_PURCHASE_LIMIT, MAX_REASON_CHARS, MAX_VARIANTS,
    SCHEDULE_MIN_LEAD,
};
use crate::actor::{Actor, Role};
use crate::ids::ScheduleId;
use crate::money::Money;

/// Decides what a command does to a product at instant `now`: the events to append, or why
/// it is refused. Pure: no I/O, no clock.
///
/// # Errors
/// A [`ProductError`] naming the broken rule.
pub fn decide(
    product: &Product,
    command: ProductCommand,
    now: DateTime<Utc>,
) -> Result<Vec<ProductEvent>, ProductError> {
    let ProductCommand::Register {
        actor,
        product_id,
        category_id,
        name,
        description,
        price,
        variants,
        purchase_limit,
    } = command
    else {
        let state = product.state.as_ref().ok_or(ProductError::NotRegistered)?;
        return decide_registered(state, command, now);
    };
    if actor.role != Role::Seller {
        return Err(ProductError::RoleNotAllowed { role: actor.role });
    }
    if product.state.is_some() {
        return Err(ProductError::AlreadyRegistered);
    }
    Ok(vec![ProductEvent::ProductRegistered {
        product_id,
        seller_id: actor.member_id,
        category_id,
        name: valid_name(&name)?,
        description: valid_description(description)?,
        price: valid_price(price)?,
        variants: valid_variants(variants)?,
        purchase_limit: valid_limit(purchase_limit)?,
        at: now,
    }])
}

fn decide_registered(
    state: &ProductState,
    command: ProductCommand,
    now: DateTime<Utc>,
) -> Result<Vec<ProductEvent>, ProductError> {
    match command {
        ProductCommand::Register { .. } => Err(ProductError::AlreadyRegistered),
        ProductCommand::ChangeDetails {
            actor,
            category_id,
            name,
            description,
            price,
            purchase_limit,
        } => {
            authorize(state, &actor)?;
            let category_id = category_id.filter(|c| *c != state.category_id);
            let name = name
                .map(|n| valid_name(&n))
                .transpose()?
                .filter(|n| *n != state.name);
            let description = description
                .map(valid_description)
                .transpose()?
                .filter(|d| *d != state.description);
            let price = price
                .map(valid_price)
                .transpose()?
                .filter(|p| *p != state.price);
            let purchase_limit = purchase_limit
                .map(valid_limit)
                .transpose()?
                .filter(|l| *l != state.purchase_limit);
            if price.is_some() || purchase_limit.is_some() {
                not_frozen(state, now)?;
            }
            let mut events = Vec::new();
            if category_id.is_some() || name.is_some() || description.is_some() {
                events.push(ProductEvent::ProductDetailsChanged {
                    category_id,
                    name,
                    description,
                });
            }
            if let Some(to) = price {
                events.push(ProductEvent::ProductPriceChanged {
                    from: state.price,
                    to,
                });
            }
            if let Some(to) = purchase_limit {
                events.push(ProductEvent::ProductPurchaseLimitChanged {
                    from: state.purchase_limit,
                    to,
                });
            }
            Ok(events)
        }
        ProductCommand::AddVariant { actor, variant } => {
            authorize(state, &actor)?;
            not_frozen(state, now)?;
            if state.variants.len() >= MAX_VARIANTS {
                return Err(ProductError::TooManyVariants { max: MAX_VARIANTS });
            }
            let label = valid_label(&variant.label)?;
            if state.variant(variant.variant_id).is_some() {
                return Err(ProductError::DuplicateVariantId);
            }
            if state.variants.iter().any(|v| same_label(&v.label, &label)) {
                return Err(ProductError::DuplicateVariantLabel { label });
            }
            Ok(vec![ProductEvent::VariantAdded {
                variant: NewVariant {
                    variant_id: variant.variant_id,
                    label,
                },
            }])
        }
        ProductCommand::RetireVariant { actor, variant_id } => {
            authorize(state, &actor)?;
            not_frozen(state, now)?;
            let variant = state
                .variant(variant_id)
                .ok_or(ProductError::VariantNotFound)?;
            if variant.retired {
                return Err(ProductError::VariantAlreadyRetired);
            }
            if state.variants.iter().filter(|v| !v.retired).count() <= 1 {
                return Err(ProductError::LastVariant);
            }
            Ok(vec![ProductEvent::VariantRetired { variant_id }])
        }
        ProductCommand::ChangeStatus { actor, to, reason } => {
            authorize(state, &actor)?;
            // Within the freeze before an opening no seller moves the status (nodes must
            // agree on what opens); an admin's moderation still may.
            if !actor.is_admin() {
                not_frozen(state, now)?;
            }
            state.check_transition(to, actor.is_admin())?;
            Ok(vec![ProductEvent::ProductStatusChanged {
                from: state.status,
                to,
                by: actor,
                schedule_id: None,
                reason: valid_reason(reason)?,
                at: now,
            }])
        }
        ProductCommand::ScheduleStatusChange {
            actor,
            schedule_id,
            to,
            due_at,
        } => {
            authorize(state, &actor)?;
            if state.schedules.contains_key(&schedule_id) {
                return Err(ProductError::DuplicateSchedule { schedule_id });
            }
            if due_at <= now {
                return Err(ProductError::ScheduleNotInFuture);
            }
            if due_at.timestamp_subsec_nanos() != 0 {
                return Err(ProductError::ScheduleNotWholeSeconds);
            }
            if due_at < now + SCHEDULE_MIN_LEAD {
                return Err(ProductError::ScheduleTooSoon {
                    min_lead_secs: SCHEDULE_MIN_LEAD.num_seconds(),
                });
            }
            if state.pending_schedules().count() >= MAX_PENDING_SCHEDULES {
                return Err(ProductError::TooManySchedules {
                    max: MAX_PENDING_SCHEDULES,
                });
            }
            if state.pending_schedules().any(|(_, s)| s.due_at == due_at) {
                return Err(ProductError::ScheduleClash { due_at });
            }
            not_frozen(state, now)?;
            check_planned_path(state, schedule_id, to, due_at, actor)?;
            Ok(vec![ProductEvent::StatusChangeScheduled {
                schedule_id,
                to,
                due_at,
                by: actor,
            }])
        }
        ProductCommand::CancelScheduledStatusChange { actor, schedule_id } => {
            authorize(state, &actor)?;
            let schedule = find_schedule(state, schedule_id)?;
            if schedule.state != ScheduleState::Pending {
                return Err(ProductError::ScheduleNotPending {
                    schedule_id,
                    state: schedule.state,
                });
            }
            // A moderation step an admin planned is not the seller's to undo.
            if schedule.by.is_admin() && !actor.is_admin() {
                return Err(ProductError::ScheduledByAdmin);
            }
            not_frozen(state, now)?;
            if now >= schedule.due_at {
                return Err(ProductError::ScheduleDue {
                    schedule_id,
                    due_at: schedule.due_at,
                });
            }
            Ok(vec![ProductEvent::ScheduledStatusChangeCancelled {
                schedule_id,
                by: actor,
            }])
        }
        ProductCommand::FireScheduledStatusChange {
            issuer,
            schedule_id,
        } => {
            issuer.system_or_admin()?;
            let schedule = find_schedule(state, schedule_id)?;
            if schedule.state != ScheduleState::Pending || state.deleted {
                return Ok(Vec::new());
            }
            if now < schedule.due_at {
                return Err(ProductError::ScheduleNotDue {
                    due_at: schedule.due_at,
                });
            }
            let by_admin = schedule.by.is_admin();
            Ok(vec![match state.skip_reason(schedule.to, by_admin) {
                None => ProductEvent::ProductStatusChanged {
                    from: state.status,
                    to: schedule.to,
                    by: schedule.by,
                    schedule_id: Some(schedule_id),
                    reason: None,
                    at: now,
                },
                Some(reason) => ProductEvent::ScheduledStatusChangeSkipped {
                    schedule_id,
                    reason,
                    at: now,
                },
            }])
        }
        ProductCommand::PublishImages {
            actor,
            thumbnails,
            details,
        } => {
            authorize(state, &actor)?;
            if thumbnails.is_empty() {
                return Err(ProductError::NoThumbnail);
            }
            for (kind, keys) in [
                (ImageKind::Thumbnail, &thumbnails),
                (ImageKind::Detail, &details),
            ] {
                if keys.len() > MAX_IMAGES_PER_KIND {
                    return Err(ProductError::TooManyImages {
                        kind,
                        max: MAX_IMAGES_PER_KIND,
                    });
                }
                if keys.iter().any(|k| k.trim().is_empty()) {
                    return Err(ProductError::BlankImageKey);
                }
            }
            Ok(vec![ProductEvent::ProductImagesPublished {
                image_version: state.image_version.saturating_add(1),
                thumbnails,
                details,
            }])
        }
        ProductCommand::Delete { actor } => {
            authorize(state, &actor)?;
            if !actor.is_admin() {
                not_frozen(state, now)?;
            }
            let mut events: Vec<_> = state
                .pending_schedules()
                .map(|(id, _)| ProductEvent::ScheduledStatusChangeCancelled {
                    schedule_id: *id,
                    by: actor,
                })
                .collect();
            events.push(ProductEvent::ProductDeleted { by: actor, at: now });
            Ok(events)
        }
    }
}

/// Owner seller or admin, on a product that is not deleted.
fn authorize(state: &ProductState, actor: &Actor) -> Result<(), ProductError> {
    actor.owner_or_admin(state.seller_id)?;
    if state.deleted {
        return Err(ProductError::Deleted);
    }
    Ok(())
}

/// Refuses while a pending `on_sale` instant is less than [`FREEZE_WINDOW`] away (or past
/// and not fired yet).
fn not_frozen(state: &ProductState, now: DateTime<Utc>) -> Result<(), ProductError> {
    let opening = state
        .pending_schedules()
        .filter(|(_, s)| s.to == ProductStatus::OnSale && now >= s.due_at - FREEZE_WINDOW)
        .map(|(_, s)| s.due_at)
        .min();
    match opening {
        Some(opens_at) => Err(ProductError::Frozen { opens_at }),
        None => Ok(()),
    }
}

/// Refuses a schedule that the status graph would skip on the product's planned path, or
/// that would make a later pending schedule be skipped.
fn check_planned_path(
    state: &ProductState,
    schedule_id: ScheduleId,
    to: ProductStatus,
    due_at: DateTime<Utc>,
    by: Actor,
) -> Result<(), ProductError> {
    let skipped = |s: &ProductState| -> Vec<ScheduleId> {
        s.planned()
            .filter(|(_, _, applied)| applied.is_none())
            .map(|(_, id, _)| id)
            .collect()
    };
    let before = skipped(state);
    let mut planned = state.clone();
    planned.schedules.insert(
        schedule_id,
        Schedule {
            to,
            due_at,
            by,
            state: ScheduleState::Pending,
        },
    );
    let after = skipped(&planned);
    if after.contains(&schedule_id) {
        let from = planned
            .planned()
            .take_while(|(_, id, _)| *id != schedule_id)
            .filter_map(|(_, _, applied)| applied)
            .last()
            .unwrap_or(state.status);
        return Err(ProductError::ScheduleNeverApplies { from, to });
    }
    if let Some(broken) = after.into_iter().find(|id| !before.contains(id)) {
        return Err(ProductError::ScheduleBreaksAnother {
            schedule_id: broken,
        });
    }
    Ok(())
}

fn find_schedule(state: &ProductState, schedule_id: ScheduleId) -> Result<&Schedule, ProductError> {
    state
        .schedules
        .get(&schedule_id)
        .ok_or(ProductError::ScheduleNotFound { schedule_id })
}

fn valid_name(name: &str) -> Result<String, ProductError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ProductError::BlankName);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ProductError::NameTooLong {
            max: MAX_NAME_CHARS,
        });
    }
    Ok(name.to_owned())
}

fn valid_description(description: String) -> Result<String, ProductError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ProductError::DescriptionTooLong {
            max: MAX_DESCRIPTION_CHARS,
        });
    }
    Ok(description)
}

fn valid_label(label: &str) -> Result<String, ProductError> {
    let label = label.trim();
    if label.is_empty() {
        return Err(ProductError::BlankVariantLabel);
    }
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(ProductError::VariantLabelTooLong {
            max: MAX_LABEL_CHARS,
        });
    }
    Ok(label.to_owned())
}

fn same_label(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

fn valid_variants(variants: Vec<NewVariant>) -> Result<Vec<NewVariant>, ProductError> {
    if variants.is_empty() {
        return Err(ProductError::NoVariants);
    }
    if variants.len() > MAX_VARIANTS {
        return Err(ProductError::TooManyVariants { max: MAX_VARIANTS });
    }
    let mut valid: Vec<NewVariant> = Vec::with_capacity(variants.len());
    for variant in variants {
        let label = valid_label(&variant.label)?;
        if valid.iter().any(|v| v.variant_id == variant.variant_id) {
            return Err(ProductError::DuplicateVariantId);
        }
        if valid.iter().any(|v| same_label(&v.label, &label)) {
            return Err(ProductError::DuplicateVariantLabel { label });
        }
        valid.push(NewVariant {
            variant_id: variant.variant_id,
            label,
        });
    }
    Ok(valid)
}

fn valid_limit(limit: Option<u32>) -> Result<Option<u32>, ProductError> {
    match limit {
        Some(n) if n == 0 || n > MAX_PURCHASE_LIMIT => Err(ProductError::PurchaseLimitOutOfRange {
            max: MAX_PURCHASE_LIMIT,
        }),
        limit => Ok(limit),
    }
}

fn valid_reason(reason: Option<String>) -> Result<Option<String>, ProductError> {
    let Some(reason) = reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
    else {
        return Ok(None);
    };
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ProductError::ReasonTooLong {
            max: MAX_REASON_CHARS,
        });
    }
    Ok(Some(reason))
}

fn valid_price(price: Money) -> Result<Money, ProductError> {
    if !price.is_positive() {
        return Err(ProductError::NonPositivePrice);
    }
    if price > MAX_PRICE {
        return Err(ProductError::PriceTooHigh { max: MAX_PRICE });
    }
    Ok(price)
}

/// Folds one event into the product. Never fails: an event that does not fit the state
/// (which a correct stream never holds) is ignored.
pub fn apply(product: &mut Product, event: &ProductEvent) {
    if let ProductEvent::ProductRegistered {
        product_id,
        seller_id,
        category_id,
        name,
        description,
        price,
        variants,
        purchase_limit,
        at: _,
    } = event
    {
        product.state = Some(ProductState {
            product_id: *product_id,
            seller_id: *seller_id,
            category_id: *category_id,
            name: name.clone(),
            description: description.clone(),
            price: *price,
            variants: variants
                .iter()
                .map(|v| Variant {
                    variant_id: v.variant_id,
                    label: v.label.clone(),
                    retired: false,
                })
                .collect(),
            purchase_limit: *purchase_limit,
            status: ProductStatus::NotPublished,
            suspension: None,
            image_version: 0,
            deleted: false,
            schedules: Default::default(),
        });
        return;
    }
    let Some(state) = product.state.as_mut() else {
        return;
    };
    match event {
        ProductEvent::ProductRegistered { .. } => {}
        ProductEvent::ProductDetailsChanged {
            category_id,
            name,
            description,
        } => {
            if let Some(category_id) = category_id {
                state.category_id = *category_id;
            }
            if let Some(name) = name {
                state.name.clone_from(name);
            }
            if let Some(description) = description {
                state.description.clone_from(description);
            }
        }
        ProductEvent::ProductPriceChanged { to, .. } => state.price = *to,
        ProductEvent::ProductPurchaseLimitChanged { to, .. } => state.purchase_limit = *to,
        ProductEvent::VariantAdded { variant } => state.variants.push(Variant {
            variant_id: variant.variant_id,
            label: variant.label.clone(),
            retired: false,
        }),
        ProductEvent::VariantRetired { variant_id } => {
            if let Some(v) = state
                .variants
                .iter_mut()
                .find(|v| v.variant_id == *variant_id)
            {
                v.retired = true;
            }
        }
        ProductEvent::ProductStatusChanged {
            from,
            to,
            by,
            schedule_id,
            at,
            ..
        } => {
            state.suspension = (*to == ProductStatus::Suspended)
                .then(|| Suspension::after(state.suspension, *from, by.is_admin()));
            state.status = *to;
            let cutoff = match schedule_id.and_then(|id| state.schedules.get_mut(&id)) {
                Some(fired) => {
                    fired.state = ScheduleState::Fired;
                    fired.due_at
                }
                None => *at,
            };
            for schedule in state.schedules.values_mut() {
                if schedule.state == ScheduleState::Pending && schedule.due_at <= cutoff {
                    schedule.state = ScheduleState::Superseded;
                }
            }
        }
        ProductEvent::StatusChangeScheduled {
            schedule_id,
            to,
            due_at,
            by,
        } => {
            state.schedules.insert(
                *schedule_id,
                Schedule {
                    to: *to,
                    due_at: *due_at,
                    by: *by,
                    state: ScheduleState::Pending,
                },
            );
        }
        ProductEvent::ScheduledStatusChangeCancelled { schedule_id, .. } => {
            close(state, *schedule_id, ScheduleState::Cancelled);
        }
        ProductEvent::ScheduledStatusChangeSkipped { schedule_id, .. } => {
            close(state, *schedule_id, ScheduleState::Skipped);
        }
        ProductEvent::ProductImagesPublished { image_version, .. } => {
            state.image_version = *image_version;
        }
        ProductEvent::ProductDeleted { .. } => state.deleted = true,
    }
}

fn close(state: &mut ProductState, schedule_id: ScheduleId, to: ScheduleState) {
    if let Some(schedule) = state.schedules.get_mut(&schedule_id) {
        schedule.state = to;
    }
}
