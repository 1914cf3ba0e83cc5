//! The product decisions and the fold of product events into state.

use chrono::{DateTime, Utc};

use super::command::ProductCommand;
use super::error::ProductError;
use super::event::{ImageKind, ProductEvent};
use super::state::{Product, ProductState, Schedule, ScheduleState, Suspension};
use super::status::ProductStatus;
use super::{
    MAX_DESCRIPTION_CHARS, MAX_IMAGES_PER_KIND, MAX_NAME_CHARS, MAX_PENDING_SCHEDULES, MAX_PRICE,
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
            Ok(events)
        }
        ProductCommand::ChangeStatus { actor, to } => {
            authorize(state, &actor)?;
            state.check_transition(to, actor.is_admin())?;
            Ok(vec![ProductEvent::ProductStatusChanged {
                from: state.status,
                to,
                by: actor,
                schedule_id: None,
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
            if state.pending_schedules().count() >= MAX_PENDING_SCHEDULES {
                return Err(ProductError::TooManySchedules {
                    max: MAX_PENDING_SCHEDULES,
                });
            }
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
        ProductEvent::ProductStatusChanged {
            from,
            to,
            by,
            schedule_id,
            at,
        } => {
            state.suspension = (*to == ProductStatus::Suspended).then_some(Suspension {
                resume_to: *from,
                by_admin: by.is_admin(),
            });
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
