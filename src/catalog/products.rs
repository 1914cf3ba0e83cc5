//! Products: what sellers and admins do to them, through the Product and Stock aggregates
//! and [`Commands`]; what anyone reads, from the [`LiveCatalog`].
//!
//! Every write waits (briefly) until this process's live catalog has applied it, so the
//! answer and the next read of the same process show the change; the answer carries the
//! stream's version either way, so a client of another process can wait for it.
//!
//! Ids a retry must find again are derived, never drawn: a product created with an
//! `Idempotency-Key` is UUIDv5(seller, key), its variants UUIDv5(product, their index); a
//! schedule made with a key is UUIDv5(product, key); a stock change made with a key carries
//! request id UUIDv5(variant, key), which the Stock aggregate applies once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use openrun_domain::product::{
    NewVariant, Product, ProductCommand, ProductError, ProductEvent, ProductStatus,
};
use openrun_domain::stock::{Stock, StockCommand, StockError};
use openrun_domain::{Actor, CategoryId, MemberId, Money, ProductId, ScheduleId, VariantId};
use uuid::Uuid;

use super::live::{Level, LiveCatalog, LiveProduct, Viewer};
use super::{Categories, CategoryError};
use crate::clock::SharedClock;
use crate::commands::{CommandError, Commands, Committed};
use crate::db::{Database, with_pool};
use crate::eventstore::{EventStore, Metadata, RecordedEvent, StreamRef};
use crate::stock::{StockStore, UnitsHeld};

/// How long a write waits for the live catalog of its own process to apply it.
const READ_YOUR_WRITE: Duration = Duration::from_secs(2);

/// Why a product operation did not happen. Only [`ProductFailure::OutcomeUnknown`] may have
/// written anything.
#[derive(Debug, thiserror::Error)]
pub enum ProductFailure {
    /// The Product aggregate refused; nothing was written.
    #[error(transparent)]
    Refused(ProductError),
    /// The Stock aggregate refused; nothing was written.
    #[error(transparent)]
    StockRefused(StockError),
    /// No such product (or variant, or schedule) that the caller may see.
    #[error("not found")]
    NotFound,
    /// A text field holds characters no product text may hold.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The category named does not exist.
    #[error("no such category")]
    UnknownCategory,
    /// The category named is archived and takes no new products.
    #[error("the category is archived")]
    ArchivedCategory,
    /// The seller is suspended by an admin.
    #[error("the seller is suspended")]
    SellerSuspended,
    /// The `Idempotency-Key` was used before for a different request.
    #[error("the idempotency key was used for a different request")]
    KeyReused,
    /// `If-Match` named another version than the stream's.
    #[error("the stream is at version {actual}")]
    PreconditionFailed {
        /// The stream's version.
        actual: u64,
    },
    /// The stream kept moving under the command; nothing was written.
    #[error("changed concurrently")]
    Conflict,
    /// Another request with the same key is making this change now: send it again.
    #[error("a request with the same key is in flight")]
    InFlight,
    /// The commit was lost: the change may or may not be in the log.
    #[error("the outcome is unknown")]
    OutcomeUnknown,
    /// The store could not be reached; nothing was written.
    #[error("the store is unavailable: {0}")]
    Unavailable(anyhow::Error),
    /// A downward adjustment would take more units than are left to sell (units sold are
    /// not the seller's to take back); nothing was written.
    #[error("only {available} units are left to sell")]
    NotEnoughLeft {
        /// Units left to sell, as the log counts them.
        available: i64,
    },
    /// Part of the change is stored; sending the same request again completes it.
    #[error("only part of the change is stored: {0}")]
    Incomplete(anyhow::Error),
    /// The change was committed (the stream is at `version`), but reading it back for the
    /// answer failed: the client must read, not send it again.
    #[error("recorded at version {version}, but the answer could not be read: {cause}")]
    Recorded {
        /// The stream's version after the change.
        version: u64,
        /// Why it could not be read back.
        cause: anyhow::Error,
    },
}

impl ProductFailure {
    /// What a failure to read back a committed change becomes: never "nothing was written".
    fn recorded(version: u64, e: Self) -> Self {
        match e {
            Self::Unavailable(cause) => Self::Recorded { version, cause },
            e => Self::Recorded {
                version,
                cause: anyhow::anyhow!("{e}"),
            },
        }
    }

    fn from_command<E: std::error::Error + Send + Sync + 'static>(
        e: CommandError<E>,
        refused: impl FnOnce(E) -> Self,
        if_match: bool,
    ) -> Self {
        match e {
            CommandError::Rejected(e) => refused(e),
            CommandError::Conflict { actual, .. } if if_match => {
                Self::PreconditionFailed { actual }
            }
            CommandError::Conflict { .. } => Self::Conflict,
            CommandError::OutcomeUnknown(_) => Self::OutcomeUnknown,
            CommandError::GuardRefused { value, .. } => Self::NotEnoughLeft { available: value },
            CommandError::Store(e) => Self::Unavailable(e.into()),
        }
    }

    fn product(e: CommandError<ProductError>) -> Self {
        Self::from_command(e, Self::Refused, false)
    }
}

/// A new product as a seller describes it.
#[derive(Debug, Clone)]
pub struct NewProduct {
    /// Its category (one that takes products).
    pub category_id: CategoryId,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its unit price in KRW.
    pub price: i64,
    /// Its option labels ("250", "260"); none for a product without sizes.
    pub variants: Vec<String>,
    /// Units one member may buy across its variants.
    pub purchase_limit: Option<u32>,
}

/// A change of a product's details; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct DetailsChange {
    /// Another category.
    pub category_id: Option<CategoryId>,
    /// Another name.
    pub name: Option<String>,
    /// Another description.
    pub description: Option<String>,
    /// Another price in KRW.
    pub price: Option<i64>,
    /// Another purchase limit (`Some(None)` removes it).
    pub purchase_limit: Option<Option<u32>>,
}

/// A change of a variant's supply.
#[derive(Debug, Clone)]
pub enum SupplyChange {
    /// Units received.
    Add(i64),
    /// A correction, up or down, with why.
    Adjust {
        /// Units, positive or negative.
        delta: i64,
        /// Why.
        reason: String,
    },
}

/// How a stock change is made safe to retry: either or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Guard<'a> {
    /// Only at this version of the variant's stock stream (`If-Match`).
    pub version: Option<u64>,
    /// Once per key (`Idempotency-Key`).
    pub key: Option<&'a str>,
}

/// What a write left behind.
#[derive(Debug, Clone)]
pub struct Written {
    /// The product as this process's live catalog has it after the write (or as its stream
    /// says, when the catalog has not applied the write in time).
    pub product: Arc<LiveProduct>,
    /// The written stream's version.
    pub version: u64,
    /// The answer to a request made before with the same key: nothing was written now.
    pub replayed: bool,
}

impl Written {
    fn replayed(self) -> Self {
        Self {
            replayed: true,
            ..self
        }
    }
}

/// Products: the commands and the reads of the catalog.
pub struct Products {
    commands: Commands,
    events: Arc<dyn EventStore>,
    catalog: Arc<LiveCatalog>,
    categories: Arc<Categories>,
    stock: Arc<dyn StockStore>,
    db: Database,
    clock: SharedClock,
}

fn member_id(actor: &Actor) -> String {
    actor.member_id.to_string()
}

fn metadata(actor: &Actor, key: Option<&str>) -> Metadata {
    Metadata {
        actor: Some(member_id(actor)),
        idempotency_key: key.map(str::to_owned),
        ..Metadata::default()
    }
}

fn text(
    field: &'static str,
    value: &str,
    check: fn(&str) -> Result<(), String>,
) -> Result<(), ProductFailure> {
    check(value).map_err(|message| ProductFailure::Invalid { field, message })
}

fn one_line(value: &str) -> Result<(), String> {
    crate::members::validation::one_line(value, false)
}

fn label(value: &str) -> Result<(), String> {
    crate::members::validation::one_line(value, true)
}

/// The characters product texts may hold, beyond the domain's rules of length and blankness.
fn check_texts(
    name: Option<&str>,
    description: Option<&str>,
    labels: &[String],
) -> Result<(), ProductFailure> {
    if let Some(name) = name {
        text("name", name, one_line)?;
    }
    if let Some(description) = description {
        text(
            "description",
            description,
            crate::members::validation::multi_line,
        )?;
    }
    let mut keys = std::collections::HashSet::with_capacity(labels.len());
    for l in labels {
        text("variants", l, label)?;
        if !keys.insert(crate::catalog::categories::name_key(l)) {
            return Err(ProductFailure::Invalid {
                field: "variants",
                message: "two labels read the same once normalised".into(),
            });
        }
    }
    Ok(())
}

/// A reason (of a status change or a suspension): one line.
pub fn check_reason(reason: Option<&str>) -> Result<(), ProductFailure> {
    reason.map_or(Ok(()), |r| text("reason", r, one_line))
}

impl Products {
    /// The product service.
    pub fn new(
        commands: Commands,
        events: Arc<dyn EventStore>,
        catalog: Arc<LiveCatalog>,
        categories: Arc<Categories>,
        stock: Arc<dyn StockStore>,
        db: Database,
        clock: SharedClock,
    ) -> Self {
        Self {
            commands,
            events,
            catalog,
            categories,
            stock,
            db,
            clock,
        }
    }

    /// Registers a product for `actor` (a seller; the owner is always the caller). With a
    /// key, a retry of the same request answers with the product it made; the same key for
    /// another request is [`ProductFailure::KeyReused`].
    pub async fn create(
        &self,
        actor: Actor,
        key: Option<&str>,
        new: NewProduct,
    ) -> Result<Written, ProductFailure> {
        check_texts(Some(&new.name), Some(&new.description), &new.variants)?;
        self.check_seller(&actor).await?;
        self.check_category(new.category_id).await?;
        let product_id = ProductId::from_uuid(match key {
            Some(key) => Uuid::new_v5(&actor.member_id.as_uuid(), key.as_bytes()),
            None => Uuid::now_v7(),
        });
        let variants = if new.variants.is_empty() {
            vec![NewVariant {
                variant_id: openrun_domain::product::implicit_variant_id(product_id),
                label: openrun_domain::product::DEFAULT_VARIANT_LABEL.to_owned(),
            }]
        } else {
            new.variants
                .iter()
                .enumerate()
                .map(|(i, label)| NewVariant {
                    variant_id: VariantId::from_uuid(Uuid::new_v5(
                        &product_id.as_uuid(),
                        format!("variant:{i}").as_bytes(),
                    )),
                    label: label.clone(),
                })
                .collect()
        };
        let command = ProductCommand::Register {
            actor,
            product_id,
            category_id: new.category_id,
            name: new.name.clone(),
            description: new.description.clone(),
            price: Money::from_minor(new.price),
            variants: variants.clone(),
            purchase_limit: new.purchase_limit,
        };
        let id = product_id.to_string();
        match self
            .commands
            .create::<Product>(&id, command, metadata(&actor, key))
            .await
        {
            Ok(committed) => self.written(product_id, &committed).await,
            Err(CommandError::Conflict { .. }) => {
                // The key made this product before: the same request gets the same answer,
                // whatever changed since.
                let first = self.registration(&id).await?;
                let same = matches!(&first, Some(ProductEvent::ProductRegistered {
                    seller_id, category_id, name, description, price, variants: made,
                    purchase_limit, ..
                }) if *seller_id == actor.member_id
                    && *category_id == new.category_id
                    && name.as_str() == new.name.trim()
                    && *description == new.description
                    && *price == Money::from_minor(new.price)
                    && *purchase_limit == new.purchase_limit
                    && made.len() == variants.len()
                    && made.iter().zip(&variants).all(|(a, b)| {
                        a.variant_id == b.variant_id && a.label == b.label.trim()
                    }));
                if !same {
                    return Err(ProductFailure::KeyReused);
                }
                self.replay(product_id).await
            }
            Err(e) => Err(ProductFailure::product(e)),
        }
    }

    /// Changes details, price or purchase limit (the owner or an admin).
    pub async fn change_details(
        &self,
        actor: Actor,
        product_id: ProductId,
        change: DetailsChange,
    ) -> Result<Written, ProductFailure> {
        check_texts(change.name.as_deref(), change.description.as_deref(), &[])?;
        if let Some(category) = change.category_id {
            self.check_category(category).await?;
        }
        let command = ProductCommand::ChangeDetails {
            actor,
            category_id: change.category_id,
            name: change.name,
            description: change.description,
            price: change.price.map(Money::from_minor),
            purchase_limit: change.purchase_limit,
        };
        self.run(actor, product_id, command, None).await
    }

    /// Runs any other product command for `actor` (status, variants, schedules, delete).
    pub async fn run(
        &self,
        actor: Actor,
        product_id: ProductId,
        command: ProductCommand,
        key: Option<&str>,
    ) -> Result<Written, ProductFailure> {
        self.check_seller(&actor).await?;
        self.not_hidden_from(&actor, product_id)?;
        let committed = self
            .commands
            .product(&product_id.to_string(), command, metadata(&actor, key))
            .await
            .map_err(|e| match ProductFailure::product(e) {
                // Another seller's product this catalog does not show them (not applied yet,
                // or hidden): not found, as it would be once applied.
                ProductFailure::Refused(ProductError::NotOwner)
                    if self.not_hidden_from(&actor, product_id).is_err()
                        || self.catalog.product(product_id).is_none() =>
                {
                    ProductFailure::NotFound
                }
                e => e,
            })?;
        self.written(product_id, &committed).await
    }

    /// Adds a variant with a new id.
    pub async fn add_variant(
        &self,
        actor: Actor,
        product_id: ProductId,
        label: String,
    ) -> Result<(Written, VariantId), ProductFailure> {
        text("label", &label, self::label)?;
        let key = crate::catalog::categories::name_key(&label);
        if let Some(product) = self.catalog.product(product_id)
            && product
                .state
                .variants
                .iter()
                .any(|v| !v.retired && crate::catalog::categories::name_key(&v.label) == key)
        {
            return Err(ProductFailure::Invalid {
                field: "label",
                message: "another variant's label reads the same once normalised".into(),
            });
        }
        let variant_id = VariantId::from_uuid(Uuid::now_v7());
        let command = ProductCommand::AddVariant {
            actor,
            variant: NewVariant { variant_id, label },
        };
        Ok((
            self.run(actor, product_id, command, None).await?,
            variant_id,
        ))
    }

    /// Schedules a status change; with a key, a retry finds the schedule it made.
    pub async fn schedule(
        &self,
        actor: Actor,
        product_id: ProductId,
        to: ProductStatus,
        due_at: DateTime<Utc>,
        key: Option<&str>,
    ) -> Result<(Written, ScheduleId), ProductFailure> {
        let schedule_id = ScheduleId::from_uuid(match key {
            Some(key) => Uuid::new_v5(&product_id.as_uuid(), format!("schedule:{key}").as_bytes()),
            None => Uuid::now_v7(),
        });
        let command = ProductCommand::ScheduleStatusChange {
            actor,
            schedule_id,
            to,
            due_at,
        };
        match self.run(actor, product_id, command, key).await {
            Err(ProductFailure::Refused(ProductError::DuplicateSchedule { .. })) => {
                // Read from the stream, not this process's catalog: the first request may
                // have been answered by another process.
                let loaded = self
                    .commands
                    .load::<Product>(&product_id.to_string())
                    .await
                    .map_err(ProductFailure::product)?;
                let same = loaded
                    .state
                    .state
                    .as_ref()
                    .and_then(|s| s.schedules.get(&schedule_id))
                    .is_some_and(|s| s.to == to && s.due_at == due_at);
                if !same {
                    return Err(ProductFailure::KeyReused);
                }
                Ok((self.replay(product_id).await?, schedule_id))
            }
            other => Ok((other?, schedule_id)),
        }
    }

    /// Holds the units a downward adjustment takes, as an order holds its lines, so that no
    /// order in flight is left holding units the seller took away: refused when fewer are
    /// left to sell. Only for the product's seller or an admin (anyone else is refused by the
    /// stock aggregate, and must neither take units off sale for a moment nor learn how many
    /// are left). When fewer are left, a request that could not take them anyway is answered
    /// as such: a replay of a request already applied goes on (it writes nothing), and a
    /// stale `If-Match` is 412.
    async fn hold_units(
        &self,
        actor: &Actor,
        variant_id: VariantId,
        units: i64,
        request_id: Option<Uuid>,
        guard: Guard<'_>,
        product: &LiveProduct,
    ) -> Result<Option<Uuid>, ProductFailure> {
        if !actor.is_admin() && actor.member_id != product.state.seller_id {
            return Ok(None);
        }
        // One hold per keyed request: a retry while the first is still at work finds it.
        let hold = request_id.map_or_else(Uuid::now_v7, |id| Uuid::new_v5(&id, b"hold"));
        let unavailable = |e: crate::stock::StockStoreError| ProductFailure::Unavailable(e.into());
        match self
            .stock
            .hold_units(hold, variant_id, units)
            .await
            .map_err(unavailable)?
        {
            UnitsHeld::Held => Ok(Some(hold)),
            UnitsHeld::AlreadyHeld => Err(ProductFailure::InFlight),
            UnitsHeld::Rebuilding => Err(ProductFailure::Unavailable(anyhow::anyhow!(
                "the stock counters are being rebuilt"
            ))),
            UnitsHeld::Short { available } => {
                if request_id.is_some() || guard.version.is_some() {
                    let stream = variant_id.to_string();
                    let loaded = self.commands.load::<Stock>(&stream).await.map_err(|e| {
                        ProductFailure::from_command(e, ProductFailure::StockRefused, false)
                    })?;
                    if guard.version.is_some_and(|v| v != loaded.version) {
                        return Err(ProductFailure::PreconditionFailed {
                            actual: loaded.version,
                        });
                    }
                    if request_id.is_some_and(|id| loaded.state.requests.contains_key(&id)) {
                        return Ok(None);
                    }
                }
                Err(ProductFailure::NotEnoughLeft {
                    available: available.max(0),
                })
            }
        }
    }

    /// Changes the supply of one variant of the product (its owner or an admin); says whether
    /// the answer replays an earlier request with the same key (nothing appended).
    pub async fn change_supply(
        &self,
        actor: Actor,
        product_id: ProductId,
        variant_id: VariantId,
        change: SupplyChange,
        guard: Guard<'_>,
    ) -> Result<(Arc<LiveProduct>, Level, bool), ProductFailure> {
        self.check_seller(&actor).await?;
        self.not_hidden_from(&actor, product_id)?;
        let product = self
            .catalog
            .product(product_id)
            .ok_or(ProductFailure::NotFound)?;
        let Some(variant) = product.state.variant(variant_id) else {
            return Err(ProductFailure::NotFound);
        };
        if product.state.deleted {
            return Err(ProductFailure::Refused(ProductError::Deleted));
        }
        let owner = product.state.seller_id;
        match &change {
            SupplyChange::Adjust { reason, .. } => check_reason(Some(reason))?,
            // A retired size is no longer sold: nothing is added to it (taking units back
            // out stays possible). Said only to who may change it; others learn the refusal
            // of the stock aggregate.
            SupplyChange::Add(_)
                if variant.retired && (actor.is_admin() || actor.member_id == owner) =>
            {
                return Err(ProductFailure::Refused(ProductError::VariantAlreadyRetired));
            }
            SupplyChange::Add(_) => {}
        }
        // One caller's key is not another's: an admin reusing a seller's key makes a change
        // of its own.
        let request_id = guard.key.map(|key| {
            Uuid::new_v5(
                &variant_id.as_uuid(),
                format!("{}:{key}", actor.member_id).as_bytes(),
            )
        });
        let command = match change {
            SupplyChange::Add(quantity) => StockCommand::Add {
                actor,
                owner,
                quantity,
                request_id,
            },
            SupplyChange::Adjust { delta, reason } => StockCommand::Adjust {
                actor,
                owner,
                delta,
                reason,
                request_id,
            },
        };
        let stream = variant_id.to_string();
        let mut meta = metadata(&actor, guard.key);
        meta.hold_id = match &command {
            StockCommand::Adjust { delta, .. } if *delta < 0 => {
                let units = delta.checked_neg().ok_or(ProductFailure::Invalid {
                    field: "adjust",
                    message: "out of range".into(),
                })?;
                self.hold_units(&actor, variant_id, units, request_id, guard, &product)
                    .await?
            }
            _ => None,
        };
        let hold = meta.hold_id;
        let result = match guard.version {
            Some(expected) => {
                self.commands
                    .execute_at::<Stock>(&stream, expected, command, meta)
                    .await
            }
            None => self.commands.stock(&stream, command, meta).await,
        };
        if let Some(hold) = hold {
            // The counter projector releases a hold whose change is (or may be) in the log;
            // one whose change was not written, or wrote nothing (a replay), goes back now.
            let taken = match &result {
                Ok(committed) => committed.positions.is_some(),
                Err(e) => e.maybe_written(),
            };
            if !taken && let Err(e) = self.stock.release_units(hold).await {
                tracing::warn!(error = %e, "an adjustment's hold is left to the sweep");
            }
        }
        let committed = result.map_err(|e| {
            ProductFailure::from_command(e, ProductFailure::StockRefused, guard.version.is_some())
        })?;
        if let Some(positions) = &committed.positions {
            self.catalog
                .wait_for(*positions.end(), READ_YOUR_WRITE)
                .await;
        }
        let product = self
            .catalog
            .product(product_id)
            .ok_or(ProductFailure::NotFound)?;
        let mut level = product.level(variant_id);
        // The catalog may not have applied it yet (the wait is bounded): the command knows.
        // A replay appends nothing and may come before the first request's write reached
        // this catalog; a wait may time out: then the stream tells the supply.
        if level.version < committed.version {
            let loaded = self.commands.load::<Stock>(&stream).await.map_err(|e| {
                let e = ProductFailure::from_command(e, ProductFailure::StockRefused, false);
                ProductFailure::recorded(committed.version, e)
            })?;
            level.supply = loaded.state.supply;
            level.version = loaded.version;
        }
        Ok((product, level, committed.positions.is_none()))
    }

    /// The product's events and its variants' stock events, in log order, after position
    /// `after`, at most `size`.
    pub async fn history(
        &self,
        product: &LiveProduct,
        after: u64,
        size: usize,
    ) -> Result<Vec<RecordedEvent>, ProductFailure> {
        let mut streams = vec![StreamRef::new(
            "product",
            product.state.product_id.to_string(),
        )];
        streams.extend(
            product
                .state
                .variants
                .iter()
                .map(|v| StreamRef::new("stock", v.variant_id.to_string())),
        );
        self.events
            .read_streams(&streams, after, size)
            .await
            .map_err(|e| ProductFailure::Unavailable(e.into()))
    }

    /// Suspends a seller (an admin): their commands are refused from now on, and each of
    /// their products that is not deleted or suspended already is suspended with `reason`.
    pub async fn suspend_seller(
        &self,
        admin: Actor,
        seller: MemberId,
        reason: &str,
    ) -> Result<usize, ProductFailure> {
        let now = self.clock.now();
        let (seller_id, admin_id) = (seller.to_string(), member_id(&admin));
        with_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO seller_suspensions (member_id, suspended_by, suspended_at, reason) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(&seller_id)
            .bind(&admin_id)
            .bind(now)
            .bind(reason)
            .execute(pool)
            .await
            .map(drop)
        })
        .or_else(|e| match &e {
            // Suspended already: the products are suspended again below all the same.
            sqlx::Error::Database(db) if db.is_unique_violation() => Ok(()),
            _ => Err(ProductFailure::Unavailable(e.into())),
        })?;
        // Every product registered so far, whichever process registered it. The suspension
        // is stored already: a catalog that cannot catch up is "send it again", not "nothing
        // was changed" (a second request suspends what the first did not).
        match self.catalog.catch_up_to_head(READ_YOUR_WRITE).await {
            Ok(true) => {}
            Ok(false) => return Err(ProductFailure::Incomplete(anyhow::anyhow!("catalog lag"))),
            Err(e) => return Err(ProductFailure::Incomplete(e)),
        }
        let mut suspended = 0;
        for product in self.catalog.products_of(seller) {
            // A product its seller suspended is taken over, so that only an admin resumes it.
            let by_admin = product.state.suspension.is_some_and(|s| s.by_admin);
            if product.state.deleted || by_admin {
                continue;
            }
            let command = ProductCommand::ChangeStatus {
                actor: admin,
                to: ProductStatus::Suspended,
                reason: Some(reason.to_owned()),
            };
            match self
                .run(admin, product.state.product_id, command, None)
                .await
            {
                Ok(_)
                | Err(ProductFailure::Refused(
                    ProductError::AlreadyInStatus { .. } | ProductError::Deleted,
                )) => suspended += 1,
                // The suspension and some products are stored: never "nothing was written".
                Err(ProductFailure::Unavailable(e)) => return Err(ProductFailure::Incomplete(e)),
                Err(e) => return Err(e),
            }
        }
        Ok(suspended)
    }

    /// Lifts a seller's suspension: they may act again; their products stay suspended until
    /// an admin resumes each.
    pub async fn lift_seller_suspension(&self, seller: MemberId) -> Result<(), ProductFailure> {
        let seller_id = seller.to_string();
        with_pool!(&self.db, pool => {
            sqlx::query("DELETE FROM seller_suspensions WHERE member_id = ?")
                .bind(&seller_id)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(|e| ProductFailure::Unavailable(e.into()))?;
        Ok(())
    }

    async fn check_seller(&self, actor: &Actor) -> Result<(), ProductFailure> {
        if actor.is_admin() {
            return Ok(());
        }
        let id = member_id(actor);
        let suspended: Option<(String,)> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT member_id FROM seller_suspensions WHERE member_id = ?")
                .bind(&id)
                .fetch_optional(pool)
                .await
        })
        .map_err(|e| ProductFailure::Unavailable(e.into()))?;
        if suspended.is_some() {
            return Err(ProductFailure::SellerSuspended);
        }
        Ok(())
    }

    async fn check_category(&self, id: CategoryId) -> Result<(), ProductFailure> {
        match self.categories.get(&id.to_string()).await {
            Ok(c) if c.archived_at.is_some() => Err(ProductFailure::ArchivedCategory),
            Ok(_) => Ok(()),
            Err(CategoryError::NotFound) => Err(ProductFailure::UnknownCategory),
            Err(e) => Err(ProductFailure::Unavailable(e.into())),
        }
    }

    async fn written<E>(
        &self,
        product_id: ProductId,
        committed: &Committed<E>,
    ) -> Result<Written, ProductFailure> {
        let position = committed.positions.as_ref().map_or(0, |p| *p.end());
        let caught_up = self.catalog.wait_for(position, READ_YOUR_WRITE).await;
        let version = committed.version;
        let mut written = self
            .answer(product_id, caught_up, Some(version))
            .await
            .map_err(|e| ProductFailure::recorded(version, e))?;
        written.version = version;
        Ok(written)
    }

    /// The answer to a request made before with the same key: the product as it is now.
    async fn replay(&self, product_id: ProductId) -> Result<Written, ProductFailure> {
        let caught_up = self
            .catalog
            .catch_up_to_head(READ_YOUR_WRITE)
            .await
            .map_err(ProductFailure::Unavailable)?;
        Ok(self.answer(product_id, caught_up, None).await?.replayed())
    }

    /// The product as this process's catalog has it when it `caught_up` with the write (or
    /// has the written `version`), else as its stream says: a committed write is never
    /// answered "not found".
    async fn answer(
        &self,
        product_id: ProductId,
        caught_up: bool,
        version: Option<u64>,
    ) -> Result<Written, ProductFailure> {
        if let Some(product) = self.catalog.product(product_id)
            && (caught_up || version.is_some_and(|v| product.version >= v))
        {
            let version = product.version;
            return Ok(Written {
                product,
                version,
                replayed: false,
            });
        }
        let loaded = self
            .commands
            .load::<Product>(&product_id.to_string())
            .await
            .map_err(ProductFailure::product)?;
        let state = loaded.state.state.ok_or(ProductFailure::NotFound)?;
        Ok(Written {
            product: Arc::new(LiveProduct::from_stream(
                state,
                loaded.version,
                self.clock.now(),
            )),
            version: loaded.version,
            replayed: false,
        })
    }

    /// The `ProductRegistered` of the stream `id`, through the upcasters.
    async fn registration(&self, id: &str) -> Result<Option<ProductEvent>, ProductFailure> {
        let first = self
            .events
            .read_stream(&StreamRef::new("product", id), 1, 1)
            .await
            .map_err(|e| ProductFailure::Unavailable(e.into()))?;
        match first.into_iter().next() {
            Some(recorded) => self
                .commands
                .decode::<Product>(recorded)
                .map(Some)
                .map_err(|e| ProductFailure::Unavailable(e.into())),
            None => Ok(None),
        }
    }

    /// A product the actor may not see is not found, whatever they may do to it: a seller
    /// learns nothing of another seller's unpublished products.
    fn not_hidden_from(&self, actor: &Actor, product_id: ProductId) -> Result<(), ProductFailure> {
        match self.catalog.product(product_id) {
            Some(p)
                if !self
                    .catalog
                    .visible(&p, &Viewer::of(actor), self.clock.now()) =>
            {
                Err(ProductFailure::NotFound)
            }
            _ => Ok(()),
        }
    }
}
