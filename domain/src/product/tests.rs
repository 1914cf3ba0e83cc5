//! Given/when/then tests of every product command: each acceptance and each rejection.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

use super::{
    ImageKind, Product, ProductCommand, ProductError, ProductEvent, ProductStatus, ScheduleState,
    SkipReason, apply, decide,
};
use crate::actor::{Actor, Issuer, Role};
use crate::ids::{CategoryId, MemberId, ProductId, ScheduleId};
use crate::money::Money;

use ProductStatus::{Ended, NotPublished, OnSale, Suspended, Waiting};

const SELLER: MemberId = MemberId::from_uuid(Uuid::from_u128(0x51));
const OTHER_SELLER: MemberId = MemberId::from_uuid(Uuid::from_u128(0x52));
const ADMIN: MemberId = MemberId::from_uuid(Uuid::from_u128(0xad));
const PRODUCT: ProductId = ProductId::from_uuid(Uuid::from_u128(0x100));
const CATEGORY: CategoryId = CategoryId::from_uuid(Uuid::from_u128(0xc1));
const CATEGORY_2: CategoryId = CategoryId::from_uuid(Uuid::from_u128(0xc2));
const S1: ScheduleId = ScheduleId::from_uuid(Uuid::from_u128(0x5c1));
const S2: ScheduleId = ScheduleId::from_uuid(Uuid::from_u128(0x5c2));

/// `h` hours after a fixed origin.
fn t(h: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap() + Duration::hours(h)
}

fn seller() -> Actor {
    Actor::new(SELLER, Role::Seller)
}

fn other_seller() -> Actor {
    Actor::new(OTHER_SELLER, Role::Seller)
}

fn admin() -> Actor {
    Actor::new(ADMIN, Role::Admin)
}

/// The owner's id, but the role of a basic member (e.g. a seller who lost the role).
fn basic_owner() -> Actor {
    Actor::new(SELLER, Role::Basic)
}

fn registered() -> ProductEvent {
    ProductEvent::ProductRegistered {
        product_id: PRODUCT,
        seller_id: SELLER,
        category_id: CATEGORY,
        name: "Limited sneaker".to_owned(),
        description: "Only 100 pairs".to_owned(),
        price: Money::from_minor(129_000),
        at: t(0),
        variants: vec![openrun_domain_variant()],
        purchase_limit: None,
    }
}

fn changed(from: ProductStatus, to: ProductStatus, by: Actor, at: i64) -> ProductEvent {
    ProductEvent::ProductStatusChanged {
        from,
        to,
        by,
        schedule_id: None,
        at: t(at),
        reason: None,
    }
}

fn scheduled(schedule_id: ScheduleId, to: ProductStatus, due: i64, by: Actor) -> ProductEvent {
    ProductEvent::StatusChangeScheduled {
        schedule_id,
        to,
        due_at: t(due),
        by,
    }
}

fn deleted() -> ProductEvent {
    ProductEvent::ProductDeleted {
        by: seller(),
        at: t(1),
    }
}

fn given(events: &[ProductEvent]) -> Product {
    let mut product = Product::default();
    for event in events {
        apply(&mut product, event);
    }
    product
}

/// A registered product brought to `status` by its seller.
fn given_status(status: ProductStatus) -> Vec<ProductEvent> {
    let mut events = vec![registered()];
    let path: &[ProductStatus] = match status {
        NotPublished => &[],
        Waiting => &[Waiting],
        OnSale => &[OnSale],
        Ended => &[OnSale, Ended],
        Suspended => &[Suspended],
    };
    let mut from = NotPublished;
    for (i, to) in path.iter().enumerate() {
        events.push(changed(from, *to, seller(), i64::try_from(i).unwrap() + 1));
        from = *to;
    }
    events
}

fn status_of(product: &Product) -> ProductStatus {
    product.state.as_ref().unwrap().status
}

fn register(actor: Actor) -> ProductCommand {
    ProductCommand::Register {
        actor,
        product_id: PRODUCT,
        category_id: CATEGORY,
        name: "  Limited sneaker ".to_owned(),
        description: "Only 100 pairs".to_owned(),
        price: Money::from_minor(129_000),
        variants: vec![openrun_domain_variant()],
        purchase_limit: None,
    }
}

fn register_with(name: &str, description: &str, price: i64) -> ProductCommand {
    ProductCommand::Register {
        actor: seller(),
        product_id: PRODUCT,
        category_id: CATEGORY,
        name: name.to_owned(),
        description: description.to_owned(),
        price: Money::from_minor(price),
        variants: vec![openrun_domain_variant()],
        purchase_limit: None,
    }
}

fn change_status(actor: Actor, to: ProductStatus) -> ProductCommand {
    ProductCommand::ChangeStatus {
        actor,
        to,
        reason: None,
    }
}

fn schedule(actor: Actor, schedule_id: ScheduleId, to: ProductStatus, due: i64) -> ProductCommand {
    ProductCommand::ScheduleStatusChange {
        actor,
        schedule_id,
        to,
        due_at: t(due),
    }
}

fn fire(schedule_id: ScheduleId) -> ProductCommand {
    ProductCommand::FireScheduledStatusChange {
        issuer: Issuer::System,
        schedule_id,
    }
}

fn details(actor: Actor) -> ProductCommand {
    ProductCommand::ChangeDetails {
        actor,
        category_id: None,
        name: Some("Limited sneaker, second run".to_owned()),
        description: None,
        price: None,
        purchase_limit: None,
    }
}

fn images(actor: Actor, thumbnails: usize, details: usize) -> ProductCommand {
    ProductCommand::PublishImages {
        actor,
        thumbnails: (0..thumbnails).map(|i| format!("img/t{i}")).collect(),
        details: (0..details).map(|i| format!("img/d{i}")).collect(),
    }
}

/// Every command a member can send to an existing product, issued by `actor`.
fn member_commands(actor: Actor) -> Vec<ProductCommand> {
    vec![
        details(actor),
        change_status(actor, Waiting),
        schedule(actor, S2, OnSale, 30),
        ProductCommand::CancelScheduledStatusChange {
            actor,
            schedule_id: S1,
        },
        images(actor, 1, 0),
        ProductCommand::Delete { actor },
    ]
}

// ---- register ----

#[test]
fn seller_registers_a_product_with_a_trimmed_name() {
    assert_eq!(
        decide(&Product::default(), register(seller()), t(0)),
        Ok(vec![registered()])
    );
    let product = given(&[registered()]);
    let state = product.state.unwrap();
    assert_eq!(state.status, NotPublished);
    assert_eq!(state.image_version, 0);
    assert!(!state.deleted);
}

#[test]
fn only_sellers_register() {
    for role in [Role::Unverified, Role::Basic, Role::Admin] {
        assert_eq!(
            decide(
                &Product::default(),
                register(Actor::new(SELLER, role)),
                t(0)
            ),
            Err(ProductError::RoleNotAllowed { role })
        );
    }
}

#[test]
fn register_twice_is_refused() {
    assert_eq!(
        decide(&given(&[registered()]), register(seller()), t(1)),
        Err(ProductError::AlreadyRegistered)
    );
}

#[test]
fn register_validates_name_description_and_price() {
    let empty = Product::default();
    let cases = [
        (register_with(" \t", "", 1), ProductError::BlankName),
        (
            register_with(&"n".repeat(201), "", 1),
            ProductError::NameTooLong { max: 200 },
        ),
        (
            register_with("ok", &"d".repeat(20_001), 1),
            ProductError::DescriptionTooLong { max: 20_000 },
        ),
        (register_with("ok", "", 0), ProductError::NonPositivePrice),
        (register_with("ok", "", -5), ProductError::NonPositivePrice),
        (
            register_with("ok", "", 1_000_000_000_001),
            ProductError::PriceTooHigh {
                max: Money::from_minor(1_000_000_000_000),
            },
        ),
    ];
    for (command, error) in cases {
        assert_eq!(decide(&empty, command, t(0)), Err(error));
    }
}

#[test]
fn register_accepts_the_limits() {
    let events = decide(
        &Product::default(),
        register_with(&"名".repeat(200), "", 1_000_000_000_000),
        t(0),
    )
    .unwrap();
    assert_eq!(events.len(), 1);
}

#[test]
fn commands_on_an_unregistered_product_are_refused() {
    for command in member_commands(seller()).into_iter().chain([fire(S1)]) {
        assert_eq!(
            decide(&Product::default(), command, t(1)),
            Err(ProductError::NotRegistered)
        );
    }
}

// ---- ownership, for every member command ----

#[test]
fn another_seller_is_refused() {
    let product = given(&[registered(), scheduled(S1, Waiting, 10, seller())]);
    for command in member_commands(other_seller()) {
        assert_eq!(decide(&product, command, t(1)), Err(ProductError::NotOwner));
    }
}

#[test]
fn a_basic_member_acting_as_seller_is_refused() {
    let product = given(&[registered(), scheduled(S1, Waiting, 10, seller())]);
    for role in [Role::Basic, Role::Unverified] {
        for command in member_commands(Actor::new(SELLER, role)) {
            assert_eq!(
                decide(&product, command, t(1)),
                Err(ProductError::RoleNotAllowed { role })
            );
        }
    }
    assert_eq!(
        decide(&product, details(basic_owner()), t(1)),
        Err(ProductError::RoleNotAllowed { role: Role::Basic })
    );
}

#[test]
fn member_commands_on_a_deleted_product_are_refused() {
    let product = given(&[
        registered(),
        scheduled(S1, Waiting, 10, seller()),
        deleted(),
    ]);
    for actor in [seller(), admin()] {
        for command in member_commands(actor) {
            assert_eq!(decide(&product, command, t(2)), Err(ProductError::Deleted));
        }
    }
}

// ---- change details ----

#[test]
fn owner_changes_name_and_price() {
    let command = ProductCommand::ChangeDetails {
        actor: seller(),
        category_id: Some(CATEGORY),
        name: Some(" New name ".to_owned()),
        description: Some("Only 100 pairs".to_owned()),
        price: Some(Money::from_minor(99_000)),
        purchase_limit: None,
    };
    let events = decide(&given(&[registered()]), command, t(1)).unwrap();
    assert_eq!(
        events,
        vec![
            ProductEvent::ProductDetailsChanged {
                category_id: None,
                name: Some("New name".to_owned()),
                description: None,
            },
            ProductEvent::ProductPriceChanged {
                from: Money::from_minor(129_000),
                to: Money::from_minor(99_000),
            },
        ]
    );
    let mut product = given(&[registered()]);
    for event in &events {
        apply(&mut product, event);
    }
    let state = product.state.unwrap();
    assert_eq!(state.name, "New name");
    assert_eq!(state.price, Money::from_minor(99_000));
}

#[test]
fn admin_changes_category_and_description() {
    let command = ProductCommand::ChangeDetails {
        actor: admin(),
        category_id: Some(CATEGORY_2),
        name: None,
        description: Some(String::new()),
        price: None,
        purchase_limit: None,
    };
    assert_eq!(
        decide(&given(&[registered()]), command, t(1)),
        Ok(vec![ProductEvent::ProductDetailsChanged {
            category_id: Some(CATEGORY_2),
            name: None,
            description: Some(String::new()),
        }])
    );
}

#[test]
fn changing_nothing_emits_nothing() {
    let command = ProductCommand::ChangeDetails {
        actor: seller(),
        category_id: Some(CATEGORY),
        name: Some("Limited sneaker".to_owned()),
        description: None,
        price: Some(Money::from_minor(129_000)),
        purchase_limit: None,
    };
    assert_eq!(decide(&given(&[registered()]), command, t(1)), Ok(vec![]));
}

#[test]
fn change_details_validates_like_register() {
    let product = given(&[registered()]);
    let with = |name: Option<&str>, price: Option<i64>| ProductCommand::ChangeDetails {
        actor: seller(),
        category_id: None,
        name: name.map(str::to_owned),
        description: None,
        price: price.map(Money::from_minor),
        purchase_limit: None,
    };
    assert_eq!(
        decide(&product, with(Some(""), None), t(1)),
        Err(ProductError::BlankName)
    );
    assert_eq!(
        decide(&product, with(None, Some(0)), t(1)),
        Err(ProductError::NonPositivePrice)
    );
    let long_description = ProductCommand::ChangeDetails {
        actor: seller(),
        category_id: None,
        name: None,
        description: Some("d".repeat(20_001)),
        price: None,
        purchase_limit: None,
    };
    assert_eq!(
        decide(&product, long_description, t(1)),
        Err(ProductError::DescriptionTooLong { max: 20_000 })
    );
}

// ---- change status ----

#[test]
fn status_graph_is_exactly_the_documented_one() {
    let allowed = [
        (NotPublished, Waiting),
        (NotPublished, OnSale),
        (NotPublished, Suspended),
        (Waiting, NotPublished),
        (Waiting, OnSale),
        (Waiting, Suspended),
        (OnSale, Ended),
        (OnSale, Suspended),
        (Ended, OnSale),
        (Ended, Waiting),
        (Ended, Suspended),
    ];
    for from in ProductStatus::ALL {
        let product = given(&given_status(from));
        assert_eq!(status_of(&product), from);
        for to in ProductStatus::ALL {
            let result = decide(&product, change_status(seller(), to), t(20));
            let expected = if from == to {
                Err(ProductError::AlreadyInStatus { status: to })
            } else if allowed.contains(&(from, to)) || (from == Suspended && to == NotPublished) {
                // Suspended from not_published resumes to not_published.
                Ok(vec![changed(from, to, seller(), 20)])
            } else {
                Err(ProductError::TransitionNotAllowed { from, to })
            };
            assert_eq!(result, expected, "{from} -> {to}");
        }
    }
}

#[test]
fn a_suspension_resumes_only_to_the_status_it_interrupted() {
    let events = [
        given_status(OnSale),
        vec![changed(OnSale, Suspended, seller(), 5)],
    ]
    .concat();
    let product = given(&events);
    assert_eq!(
        product
            .state
            .as_ref()
            .unwrap()
            .suspension
            .unwrap()
            .resume_to,
        OnSale
    );
    assert_eq!(
        decide(&product, change_status(seller(), Ended), t(6)),
        Err(ProductError::TransitionNotAllowed {
            from: Suspended,
            to: Ended
        })
    );
    assert_eq!(
        decide(&product, change_status(seller(), OnSale), t(6)),
        Ok(vec![changed(Suspended, OnSale, seller(), 6)])
    );
}

#[test]
fn only_an_admin_lifts_an_admin_suspension() {
    let events = [
        given_status(OnSale),
        vec![changed(OnSale, Suspended, admin(), 5)],
    ]
    .concat();
    let product = given(&events);
    assert_eq!(
        decide(&product, change_status(seller(), OnSale), t(6)),
        Err(ProductError::SuspendedByAdmin)
    );
    assert_eq!(
        decide(&product, change_status(admin(), OnSale), t(6)),
        Ok(vec![changed(Suspended, OnSale, admin(), 6)])
    );
}

#[test]
fn an_admin_takes_over_a_seller_s_suspension_and_only_an_admin_lifts_it() {
    let events = [
        given_status(OnSale),
        vec![changed(OnSale, Suspended, seller(), 5)],
    ]
    .concat();
    let product = given(&events);
    assert_eq!(
        decide(&product, change_status(seller(), Suspended), t(6)),
        Err(ProductError::AlreadyInStatus { status: Suspended })
    );
    let taken = decide(&product, change_status(admin(), Suspended), t(6)).unwrap();
    assert_eq!(taken, vec![changed(Suspended, Suspended, admin(), 6)]);
    let product = given(&[events, taken].concat());
    let suspension = product.state.as_ref().unwrap().suspension.unwrap();
    assert_eq!((suspension.resume_to, suspension.by_admin), (OnSale, true));
    assert_eq!(
        decide(&product, change_status(admin(), Suspended), t(7)),
        Err(ProductError::AlreadyInStatus { status: Suspended })
    );
    assert_eq!(
        decide(&product, change_status(seller(), OnSale), t(7)),
        Err(ProductError::SuspendedByAdmin)
    );
    assert_eq!(
        decide(&product, change_status(admin(), OnSale), t(7)),
        Ok(vec![changed(Suspended, OnSale, admin(), 7)])
    );
}

#[test]
fn an_admin_lifts_a_seller_suspension() {
    let events = [
        given_status(Waiting),
        vec![changed(Waiting, Suspended, seller(), 5)],
    ]
    .concat();
    assert_eq!(
        decide(&given(&events), change_status(admin(), Waiting), t(6)),
        Ok(vec![changed(Suspended, Waiting, admin(), 6)])
    );
}

// ---- schedule ----

#[test]
fn owner_schedules_a_status_change() {
    let product = given(&[registered()]);
    assert_eq!(
        decide(&product, schedule(seller(), S1, OnSale, 10), t(1)),
        Ok(vec![scheduled(S1, OnSale, 10, seller())])
    );
    let product = given(&[registered(), scheduled(S1, OnSale, 10, seller())]);
    let state = product.state.unwrap();
    assert_eq!(state.schedules[&S1].state, ScheduleState::Pending);
}

#[test]
fn a_schedule_must_be_in_the_future() {
    let product = given(&[registered()]);
    for due in [0, 1] {
        assert_eq!(
            decide(&product, schedule(admin(), S1, OnSale, due), t(1)),
            Err(ProductError::ScheduleNotInFuture)
        );
    }
}

#[test]
fn schedule_ids_are_unique_even_once_closed() {
    let product = given(&[
        registered(),
        scheduled(S1, OnSale, 10, seller()),
        ProductEvent::ScheduledStatusChangeCancelled {
            schedule_id: S1,
            by: seller(),
        },
    ]);
    assert_eq!(
        decide(&product, schedule(seller(), S1, Waiting, 12), t(1)),
        Err(ProductError::DuplicateSchedule { schedule_id: S1 })
    );
}

#[test]
fn pending_schedules_are_limited() {
    let mut events = vec![registered()];
    for i in 0..20_u128 {
        events.push(scheduled(
            ScheduleId::from_uuid(Uuid::from_u128(0x1000 + i)),
            OnSale,
            10,
            seller(),
        ));
    }
    assert_eq!(
        decide(&given(&events), schedule(seller(), S1, OnSale, 11), t(1)),
        Err(ProductError::TooManySchedules { max: 20 })
    );
}

// ---- cancel schedule ----

#[test]
fn owner_cancels_a_pending_schedule() {
    let product = given(&[registered(), scheduled(S1, OnSale, 10, seller())]);
    let cancel = ProductCommand::CancelScheduledStatusChange {
        actor: admin(),
        schedule_id: S1,
    };
    assert_eq!(
        decide(&product, cancel, t(2)),
        Ok(vec![ProductEvent::ScheduledStatusChangeCancelled {
            schedule_id: S1,
            by: admin(),
        }])
    );
}

#[test]
fn only_an_admin_cancels_what_an_admin_scheduled() {
    let product = given(&[registered(), scheduled(S1, Suspended, 10, admin())]);
    let cancel = |actor| ProductCommand::CancelScheduledStatusChange {
        actor,
        schedule_id: S1,
    };
    assert_eq!(
        decide(&product, cancel(seller()), t(2)),
        Err(ProductError::ScheduledByAdmin)
    );
    assert!(decide(&product, cancel(admin()), t(2)).is_ok());
}

#[test]
fn cancelling_an_unknown_or_closed_schedule_is_refused() {
    let cancel = |schedule_id| ProductCommand::CancelScheduledStatusChange {
        actor: seller(),
        schedule_id,
    };
    let product = given(&[registered()]);
    assert_eq!(
        decide(&product, cancel(S1), t(2)),
        Err(ProductError::ScheduleNotFound { schedule_id: S1 })
    );
    let product = given(&[
        registered(),
        scheduled(S1, Waiting, 10, seller()),
        ProductEvent::ScheduledStatusChangeCancelled {
            schedule_id: S1,
            by: seller(),
        },
    ]);
    assert_eq!(
        decide(&product, cancel(S1), t(2)),
        Err(ProductError::ScheduleNotPending {
            schedule_id: S1,
            state: ScheduleState::Cancelled
        })
    );
    // Due but not fired yet: every process shows it in effect already.
    let product = given(&[registered(), scheduled(S1, Waiting, 10, seller())]);
    for at in [10, 11] {
        assert_eq!(
            decide(&product, cancel(S1), t(at)),
            Err(ProductError::ScheduleDue {
                schedule_id: S1,
                due_at: t(10)
            })
        );
    }
}

// ---- fire schedule ----

#[test]
fn a_due_schedule_fires_with_its_authors_rights() {
    let product = given(&[registered(), scheduled(S1, Waiting, 10, seller())]);
    let expected = ProductEvent::ProductStatusChanged {
        from: NotPublished,
        to: Waiting,
        by: seller(),
        schedule_id: Some(S1),
        at: t(10),
        reason: None,
    };
    assert_eq!(
        decide(&product, fire(S1), t(10)),
        Ok(vec![expected.clone()])
    );
    let admin_fire = ProductCommand::FireScheduledStatusChange {
        issuer: Issuer::Member(admin()),
        schedule_id: S1,
    };
    assert_eq!(
        decide(&product, admin_fire, t(10)),
        Ok(vec![expected.clone()])
    );
    let product = given(&[registered(), scheduled(S1, Waiting, 10, seller()), expected]);
    assert_eq!(status_of(&product), Waiting);
    assert_eq!(
        product.state.as_ref().unwrap().schedules[&S1].state,
        ScheduleState::Fired
    );
    // Firing again (a retried scheduler) is a no-op.
    assert_eq!(decide(&product, fire(S1), t(11)), Ok(vec![]));
}

#[test]
fn firing_early_is_refused() {
    let product = given(&[registered(), scheduled(S1, Waiting, 10, seller())]);
    assert_eq!(
        decide(&product, fire(S1), t(9)),
        Err(ProductError::ScheduleNotDue { due_at: t(10) })
    );
}

#[test]
fn only_the_system_or_an_admin_fires() {
    let product = given(&[registered(), scheduled(S1, Waiting, 10, seller())]);
    for actor in [seller(), basic_owner()] {
        let command = ProductCommand::FireScheduledStatusChange {
            issuer: Issuer::Member(actor),
            schedule_id: S1,
        };
        assert_eq!(
            decide(&product, command, t(10)),
            Err(ProductError::RoleNotAllowed { role: actor.role })
        );
    }
}

#[test]
fn firing_an_unknown_schedule_is_refused() {
    assert_eq!(
        decide(&given(&[registered()]), fire(S1), t(10)),
        Err(ProductError::ScheduleNotFound { schedule_id: S1 })
    );
}

#[test]
fn a_cancelled_schedule_fires_as_a_no_op() {
    let product = given(&[
        registered(),
        scheduled(S1, Waiting, 10, seller()),
        ProductEvent::ScheduledStatusChangeCancelled {
            schedule_id: S1,
            by: seller(),
        },
    ]);
    assert_eq!(decide(&product, fire(S1), t(10)), Ok(vec![]));
}

#[test]
fn a_change_by_hand_supersedes_overdue_schedules_only() {
    let product = given(&[
        registered(),
        scheduled(S1, Waiting, 10, seller()),
        scheduled(S2, Ended, 30, seller()),
        changed(NotPublished, OnSale, seller(), 11),
    ]);
    let state = product.state.as_ref().unwrap();
    assert_eq!(state.schedules[&S1].state, ScheduleState::Superseded);
    assert_eq!(state.schedules[&S2].state, ScheduleState::Pending);
    assert_eq!(decide(&product, fire(S1), t(12)), Ok(vec![]));
}

#[test]
fn due_schedules_end_in_the_same_status_whatever_order_they_fire_in() {
    let base = vec![
        registered(),
        scheduled(S1, Waiting, 10, seller()),
        scheduled(S2, OnSale, 11, seller()),
    ];
    let run = |order: [ScheduleId; 2]| {
        let mut product = given(&base);
        for id in order {
            for event in decide(&product, fire(id), t(12)).unwrap() {
                apply(&mut product, &event);
            }
        }
        status_of(&product)
    };
    assert_eq!(run([S1, S2]), OnSale);
    assert_eq!(run([S2, S1]), OnSale);
}

#[test]
fn a_due_schedule_that_no_longer_applies_is_skipped_and_closed() {
    let cases = [
        (
            given_status(NotPublished),
            Ended,
            seller(),
            SkipReason::TransitionNotAllowed { from: NotPublished },
        ),
        (
            given_status(OnSale),
            OnSale,
            seller(),
            SkipReason::AlreadyInStatus,
        ),
        (
            [
                given_status(OnSale),
                vec![changed(OnSale, Suspended, admin(), 5)],
            ]
            .concat(),
            OnSale,
            seller(),
            SkipReason::SuspendedByAdmin,
        ),
    ];
    for (mut events, to, by, reason) in cases {
        events.push(scheduled(S1, to, 10, by));
        let product = given(&events);
        let skipped = ProductEvent::ScheduledStatusChangeSkipped {
            schedule_id: S1,
            reason,
            at: t(10),
        };
        assert_eq!(decide(&product, fire(S1), t(10)), Ok(vec![skipped.clone()]));
        events.push(skipped);
        let product = given(&events);
        assert_eq!(
            product.state.as_ref().unwrap().schedules[&S1].state,
            ScheduleState::Skipped
        );
        assert_eq!(decide(&product, fire(S1), t(11)), Ok(vec![]));
    }
}

#[test]
fn an_admin_schedule_lifts_an_admin_suspension() {
    let events = [
        given_status(OnSale),
        vec![
            changed(OnSale, Suspended, admin(), 5),
            scheduled(S1, OnSale, 10, admin()),
        ],
    ]
    .concat();
    assert_eq!(
        decide(&given(&events), fire(S1), t(10)),
        Ok(vec![ProductEvent::ProductStatusChanged {
            from: Suspended,
            to: OnSale,
            by: admin(),
            schedule_id: Some(S1),
            at: t(10),
            reason: None,
        }])
    );
}

// ---- images ----

#[test]
fn owner_publishes_image_versions() {
    let product = given(&[registered()]);
    let first = decide(&product, images(seller(), 2, 1), t(1)).unwrap();
    assert_eq!(
        first,
        vec![ProductEvent::ProductImagesPublished {
            image_version: 1,
            thumbnails: vec!["img/t0".to_owned(), "img/t1".to_owned()],
            details: vec!["img/d0".to_owned()],
        }]
    );
    let product = given(&[registered(), first[0].clone()]);
    assert_eq!(
        decide(&product, images(admin(), 5, 5), t(2)),
        Ok(vec![ProductEvent::ProductImagesPublished {
            image_version: 2,
            thumbnails: (0..5).map(|i| format!("img/t{i}")).collect(),
            details: (0..5).map(|i| format!("img/d{i}")).collect(),
        }])
    );
}

#[test]
fn image_sets_are_validated() {
    let product = given(&[registered()]);
    assert_eq!(
        decide(&product, images(seller(), 0, 1), t(1)),
        Err(ProductError::NoThumbnail)
    );
    assert_eq!(
        decide(&product, images(seller(), 6, 0), t(1)),
        Err(ProductError::TooManyImages {
            kind: ImageKind::Thumbnail,
            max: 5
        })
    );
    assert_eq!(
        decide(&product, images(seller(), 1, 6), t(1)),
        Err(ProductError::TooManyImages {
            kind: ImageKind::Detail,
            max: 5
        })
    );
    let blank = ProductCommand::PublishImages {
        actor: seller(),
        thumbnails: vec!["img/t0".to_owned()],
        details: vec![" ".to_owned()],
    };
    assert_eq!(
        decide(&product, blank, t(1)),
        Err(ProductError::BlankImageKey)
    );
}

// ---- delete ----

#[test]
fn delete_cancels_pending_schedules_then_deletes() {
    let product = given(&[
        registered(),
        scheduled(S1, Waiting, 10, seller()),
        scheduled(S2, OnSale, 20, seller()),
        ProductEvent::ProductStatusChanged {
            from: NotPublished,
            to: Waiting,
            by: seller(),
            schedule_id: Some(S1),
            at: t(10),
            reason: None,
        },
    ]);
    let events = decide(&product, ProductCommand::Delete { actor: admin() }, t(12)).unwrap();
    assert_eq!(
        events,
        vec![
            ProductEvent::ScheduledStatusChangeCancelled {
                schedule_id: S2,
                by: admin(),
            },
            ProductEvent::ProductDeleted {
                by: admin(),
                at: t(12),
            },
        ]
    );
    let mut product = product;
    for event in &events {
        apply(&mut product, event);
    }
    assert!(product.state.as_ref().unwrap().deleted);
    // The scheduler may still fire S2: nothing happens.
    assert_eq!(decide(&product, fire(S2), t(20)), Ok(vec![]));
}

#[test]
fn owner_deletes_a_product_without_schedules() {
    assert_eq!(
        decide(
            &given(&[registered()]),
            ProductCommand::Delete { actor: seller() },
            t(1)
        ),
        Ok(vec![deleted()])
    );
}

// ---- the cqrs-es shim ----

#[test]
fn the_aggregate_shim_matches_decide() {
    use cqrs_es::test::TestFramework;

    use crate::Stamped;

    TestFramework::<Product>::with(())
        .given(vec![registered()])
        .when(Stamped::new(change_status(seller(), Waiting), t(3)))
        .then_expect_events(vec![changed(NotPublished, Waiting, seller(), 3)]);
    TestFramework::<Product>::with(())
        .given(vec![registered()])
        .when(Stamped::new(change_status(other_seller(), Waiting), t(3)))
        .then_expect_error(ProductError::NotOwner);
    TestFramework::<Product>::with(())
        .given_no_previous_events()
        .when(Stamped::new(register(seller()), t(0)))
        .then_expect_events(vec![registered()]);
}

fn openrun_domain_variant() -> crate::product::NewVariant {
    crate::product::NewVariant {
        variant_id: crate::VariantId::from_uuid(uuid::Uuid::from_u128(
            0x0197_5a00_0000_7000_8000_0000_0000_0270,
        )),
        label: "270".to_owned(),
    }
}

// ---- variants, purchase limit, schedule rules (catalog) ----

fn variant(n: u128, label: &str) -> crate::product::NewVariant {
    crate::product::NewVariant {
        variant_id: crate::VariantId::from_uuid(Uuid::from_u128(0x7000 + n)),
        label: label.to_owned(),
    }
}

fn register_variants(variants: Vec<crate::product::NewVariant>) -> ProductCommand {
    ProductCommand::Register {
        actor: seller(),
        product_id: PRODUCT,
        category_id: CATEGORY,
        name: "Sneaker".to_owned(),
        description: String::new(),
        price: Money::from_minor(1000),
        variants,
        purchase_limit: Some(2),
    }
}

#[test]
fn register_validates_variants_and_the_purchase_limit() {
    let none = decide(&Product::default(), register_variants(vec![]), t(0));
    assert_eq!(none, Err(ProductError::NoVariants));
    let many = (0..51)
        .map(|i| variant(i, &format!("{}", 200 + i)))
        .collect();
    assert_eq!(
        decide(&Product::default(), register_variants(many), t(0)),
        Err(ProductError::TooManyVariants { max: 50 })
    );
    let fifty = (0..50)
        .map(|i| variant(i, &format!("{}", 200 + i)))
        .collect();
    assert!(decide(&Product::default(), register_variants(fifty), t(0)).is_ok());
    assert_eq!(
        decide(
            &Product::default(),
            register_variants(vec![variant(1, "m"), variant(2, " M ")]),
            t(0)
        ),
        Err(ProductError::DuplicateVariantLabel {
            label: "M".to_owned()
        })
    );
    assert_eq!(
        decide(
            &Product::default(),
            register_variants(vec![variant(1, "  ")]),
            t(0)
        ),
        Err(ProductError::BlankVariantLabel)
    );
    assert_eq!(
        decide(
            &Product::default(),
            register_variants(vec![variant(1, "a"), variant(1, "b")]),
            t(0)
        ),
        Err(ProductError::DuplicateVariantId)
    );
    let mut zero = register_variants(vec![variant(1, "a")]);
    if let ProductCommand::Register { purchase_limit, .. } = &mut zero {
        *purchase_limit = Some(0);
    }
    assert_eq!(
        decide(&Product::default(), zero, t(0)),
        Err(ProductError::PurchaseLimitOutOfRange { max: 100 })
    );
}

#[test]
fn variants_are_added_and_retired_but_one_stays() {
    let product = given(&[registered()]);
    let add = ProductCommand::AddVariant {
        actor: seller(),
        variant: variant(9, "280"),
    };
    let added = decide(&product, add.clone(), t(1)).unwrap();
    assert_eq!(
        added,
        vec![ProductEvent::VariantAdded {
            variant: variant(9, "280")
        }]
    );
    let mut product = product;
    apply(&mut product, &added[0]);
    assert_eq!(
        decide(&product, add, t(1)),
        Err(ProductError::DuplicateVariantId)
    );
    let retire = |id| ProductCommand::RetireVariant {
        actor: seller(),
        variant_id: id,
    };
    let first = openrun_domain_variant().variant_id;
    let retired = decide(&product, retire(first), t(1)).unwrap();
    apply(&mut product, &retired[0]);
    assert!(
        product
            .state
            .as_ref()
            .unwrap()
            .variant(first)
            .unwrap()
            .retired
    );
    assert_eq!(
        decide(&product, retire(first), t(1)),
        Err(ProductError::VariantAlreadyRetired)
    );
    assert_eq!(
        decide(&product, retire(variant(9, "").variant_id), t(1)),
        Err(ProductError::LastVariant)
    );
    assert_eq!(
        decide(
            &product,
            ProductCommand::AddVariant {
                actor: other_seller(),
                variant: variant(10, "290"),
            },
            t(1)
        ),
        Err(ProductError::NotOwner)
    );
}

#[test]
fn the_purchase_limit_changes_with_its_own_event() {
    let product = given(&[registered()]);
    let change = |limit| ProductCommand::ChangeDetails {
        actor: seller(),
        category_id: None,
        name: None,
        description: None,
        price: None,
        purchase_limit: Some(limit),
    };
    assert_eq!(
        decide(&product, change(Some(1)), t(1)),
        Ok(vec![ProductEvent::ProductPurchaseLimitChanged {
            from: None,
            to: Some(1)
        }])
    );
    assert_eq!(decide(&product, change(None), t(1)), Ok(vec![]));
    assert_eq!(
        decide(&product, change(Some(101)), t(1)),
        Err(ProductError::PurchaseLimitOutOfRange { max: 100 })
    );
}

#[test]
fn schedules_are_whole_seconds_ahead_by_the_lead_and_never_at_one_instant() {
    let product = given(&[registered()]);
    let at = |d: DateTime<Utc>, id| ProductCommand::ScheduleStatusChange {
        actor: seller(),
        schedule_id: id,
        to: Waiting,
        due_at: d,
    };
    assert_eq!(
        decide(&product, at(t(1) + Duration::milliseconds(500), S1), t(0)),
        Err(ProductError::ScheduleNotWholeSeconds)
    );
    assert_eq!(
        decide(&product, at(t(0) + Duration::seconds(9), S1), t(0)),
        Err(ProductError::ScheduleTooSoon { min_lead_secs: 10 })
    );
    assert!(decide(&product, at(t(0) + Duration::seconds(10), S1), t(0)).is_ok());
    let product = given(&[registered(), scheduled(S1, Waiting, 2, seller())]);
    let clash = ProductCommand::ScheduleStatusChange {
        actor: seller(),
        schedule_id: S2,
        to: OnSale,
        due_at: t(2),
    };
    assert_eq!(
        decide(&product, clash, t(0)),
        Err(ProductError::ScheduleClash { due_at: t(2) })
    );
}

#[test]
fn a_schedule_the_planned_path_could_never_apply_is_refused() {
    // not_published -> ended is no edge: refused at creation, not skipped at the instant.
    let product = given(&[registered()]);
    assert_eq!(
        decide(&product, schedule(seller(), S1, Ended, 3), t(0)),
        Err(ProductError::ScheduleNeverApplies {
            from: NotPublished,
            to: Ended
        })
    );
    // After a pending on_sale at 2, ended at 3 is on the path.
    let product = given(&[registered(), scheduled(S1, OnSale, 2, seller())]);
    assert!(decide(&product, schedule(seller(), S2, Ended, 3), t(0)).is_ok());
    // A waiting at 1 is fine, and waiting twice is not.
    let product = given(&[registered(), scheduled(S1, Waiting, 2, seller())]);
    assert_eq!(
        decide(&product, schedule(seller(), S2, Waiting, 3), t(0)),
        Err(ProductError::ScheduleNeverApplies {
            from: Waiting,
            to: Waiting
        })
    );
    // Inserting ended before a pending on_sale of an on_sale product... would break nothing
    // it may not: on_sale at 2 after a not_published at 1 is fine, but a new ended before a
    // pending ended makes that one impossible.
    let product = given(&[
        registered(),
        changed(NotPublished, OnSale, seller(), 0),
        scheduled(S1, Ended, 5, seller()),
    ]);
    let s3 = ScheduleId::from_uuid(Uuid::from_u128(0x5c3));
    assert_eq!(
        decide(&product, schedule(seller(), s3, Ended, 3), t(0)),
        Err(ProductError::ScheduleBreaksAnother { schedule_id: S1 })
    );
}

#[test]
fn the_freeze_window_before_an_opening_holds_price_limit_schedules_and_variants() {
    let due = t(2);
    let product = given(&[
        registered(),
        changed(NotPublished, Waiting, seller(), 0),
        scheduled(S1, OnSale, 2, seller()),
    ]);
    let inside = due - Duration::seconds(5);
    let outside = due - Duration::seconds(6);
    let frozen = Err(ProductError::Frozen { opens_at: due });
    let price = ProductCommand::ChangeDetails {
        actor: seller(),
        category_id: None,
        name: None,
        description: None,
        price: Some(Money::from_minor(1)),
        purchase_limit: None,
    };
    let limit = ProductCommand::ChangeDetails {
        actor: seller(),
        category_id: None,
        name: None,
        description: None,
        price: None,
        purchase_limit: Some(Some(1)),
    };
    let cancel = ProductCommand::CancelScheduledStatusChange {
        actor: seller(),
        schedule_id: S1,
    };
    let add = ProductCommand::AddVariant {
        actor: seller(),
        variant: variant(9, "280"),
    };
    let now_on_sale = change_status(seller(), OnSale);
    let now_suspended = change_status(seller(), Suspended);
    let delete = ProductCommand::Delete { actor: seller() };
    for command in [
        price,
        limit,
        cancel,
        add,
        now_on_sale,
        now_suspended,
        delete,
    ] {
        assert!(decide(&product, command.clone(), outside).is_ok());
        assert_eq!(decide(&product, command.clone(), inside), frozen);
        // Past its instant but not fired yet: still frozen.
        assert_eq!(
            decide(&product, command, due + Duration::seconds(1)),
            frozen
        );
    }
    // An admin's moderation still acts inside it.
    assert!(decide(&product, change_status(admin(), Suspended), inside).is_ok());
    assert!(decide(&product, ProductCommand::Delete { actor: admin() }, inside).is_ok());
    // The name may still change, and the status in effect is on_sale from the instant.
    assert!(decide(&product, details(seller()), inside).is_ok());
    let state = product.state.as_ref().unwrap();
    assert_eq!(state.status_at(due - Duration::seconds(1)), Waiting);
    assert_eq!(state.status_at(due), OnSale);
    assert_eq!(state.next_instant_of(OnSale, t(0)), Some(due));
    assert_eq!(state.next_instant_of(OnSale, due), None);
}

#[test]
fn an_admin_suspension_carries_its_reason() {
    let product = given(&given_status(OnSale));
    let suspend = ProductCommand::ChangeStatus {
        actor: admin(),
        to: Suspended,
        reason: Some("  counterfeit report  ".to_owned()),
    };
    let events = decide(&product, suspend, t(5)).unwrap();
    let ProductEvent::ProductStatusChanged { reason, .. } = &events[0] else {
        panic!("{events:?}");
    };
    assert_eq!(reason.as_deref(), Some("counterfeit report"));
}
