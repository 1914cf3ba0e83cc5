//! What happens to an order once it is placed: the buyer's views of it, cancelling and
//! returning it, and the seller's view of the orders of their products.
//!
//! Cancel and return go through the command path like every other command: the order's
//! stream decides (who asks, its status, the windows), and a cancel racing the scheduler's
//! shipping step has one winner by the stream's version; the loser is decided again against
//! the winner's state and refused. A cancel appends `OrderCancelled` (its units go back
//! through the counter projector) and `OrderRefunded` in one append; the refund is then paid
//! inline for latency ([`super::outbox::OutboxWorker::pay_refund`]) and, if that fails, by the
//! outbox worker.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use openrun_domain::order::{Order, OrderCommand, OrderError, OrderEvent, OrderState};
use openrun_domain::{Actor, MemberId, OrderId, ProductId};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::outbox::OutboxWorker;
use super::{CURRENCY, OrderView};
use crate::commands::{CommandError, Commands};
use crate::db::{Database, with_pool};
use crate::eventstore::{Metadata, RecordedEvent, StreamRef};
use crate::members::{AddressSnapshot, Members};

/// How long a cancel waits for its refund to be paid inline before leaving it to the worker.
const INLINE_REFUND: Duration = Duration::from_secs(3);

/// Why a lifecycle request was refused.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// No such order for this caller (another member's order is not found either).
    #[error("order not found")]
    NotFound,
    /// The order's status does not allow this (already cancelled, shipped, ...).
    #[error("{0}")]
    WrongStatus(String),
    /// The window closed.
    #[error("{0}")]
    WindowClosed(String),
    /// Bad input.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The order kept changing under the request; nothing was written.
    #[error("the order changed concurrently")]
    Conflict,
    /// The commit was lost: the change may or may not be recorded.
    #[error("the outcome is unknown")]
    OutcomeUnknown,
    /// The log or the database cannot be used now; nothing was written.
    #[error("unavailable: {0}")]
    Unavailable(anyhow::Error),
    /// The change is recorded, but the order could not be read back to show it.
    #[error("recorded, not readable now: {0}")]
    Recorded(anyhow::Error),
}

/// A step of an order's life.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepView {
    /// The status it moved to.
    pub status: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A refund of an order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RefundView {
    /// The refund.
    pub id: Uuid,
    /// `cancellation` or `return`.
    pub cause: String,
    /// The amount, in KRW.
    pub amount: i64,
    /// `pending` (owed, being paid back) or `settled` (paid back).
    pub state: &'static str,
    /// When it was recorded.
    pub requested_at: DateTime<Utc>,
    /// When it was paid back.
    pub settled_at: Option<DateTime<Utc>>,
}

/// An order with its whole story, as its buyer (or an admin) sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderDetail {
    /// The order itself.
    #[serde(flatten)]
    pub order: OrderView,
    /// Every status it went through, oldest first, from `prepared`.
    pub steps: Vec<StepView>,
    /// Its refunds (at most one).
    pub refunds: Vec<RefundView>,
    /// Until when the buyer may cancel it (while `prepared`).
    pub cancellable_until: Option<DateTime<Utc>>,
    /// Until when the buyer may ask to return it (while `delivered`).
    pub returnable_until: Option<DateTime<Utc>>,
    /// The shipping address as the order sealed it: shown to the buyer only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<AddressSnapshot>,
    /// The stream's version: what `GET /v1/orders/{id}/events` lists up to.
    pub version: u64,
}

/// One event of an order's timeline.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// Its version in the order's stream, from 1.
    pub version: u64,
    /// The event, for example `OrderPlaced`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Who caused it: `buyer`, `staff` or `system:<job>` (an admin reads the log's own
    /// words: a member's id), when recorded.
    pub actor: Option<String>,
    /// What it says, without the sealed address.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// An order of a seller's product, without the buyer's personal data.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SellerOrder {
    /// The order.
    pub order_id: Uuid,
    /// The seller's product in it.
    pub product_id: Uuid,
    /// The order's status.
    pub status: String,
    /// Units of the product in the order.
    pub quantity: i64,
    /// What they cost, in KRW.
    pub amount: i64,
    /// Always `KRW`.
    pub currency: &'static str,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
}

/// Which of a seller's orders to list.
#[derive(Debug, Clone, Default)]
pub struct SellerFilter {
    /// Only this product.
    pub product_id: Option<ProductId>,
    /// Only orders in this status.
    pub status: Option<String>,
}

/// The order lifecycle service.
pub struct Lifecycle {
    db: Database,
    commands: Commands,
    members: Arc<Members>,
    outbox: Arc<OutboxWorker>,
}

impl Lifecycle {
    /// The service.
    pub fn new(
        db: Database,
        commands: Commands,
        members: Arc<Members>,
        outbox: Arc<OutboxWorker>,
    ) -> Self {
        Self {
            db,
            commands,
            members,
            outbox,
        }
    }

    /// Cancels the order `id` for `actor` (its buyer, or an admin): its units go back and it
    /// is refunded.
    pub async fn cancel(&self, actor: Actor, id: OrderId) -> Result<OrderDetail, LifecycleError> {
        let committed = self.run(actor, id, OrderCommand::Cancel { actor }).await?;
        for event in &committed {
            if let OrderEvent::OrderRefunded { refund_id, .. } = event {
                self.pay_inline(id, *refund_id).await;
            }
        }
        self.view_after_change(&actor, id).await
    }

    /// The order just changed, read back: a failure to read it now is not "nothing changed".
    async fn view_after_change(
        &self,
        actor: &Actor,
        id: OrderId,
    ) -> Result<OrderDetail, LifecycleError> {
        match self.view(actor, id).await {
            Ok(Some(detail)) => Ok(detail),
            Ok(None) => Err(LifecycleError::Recorded(anyhow::anyhow!(
                "the order changed is not visible to its caller"
            ))),
            Err(LifecycleError::Unavailable(e)) => Err(LifecycleError::Recorded(e)),
            Err(e) => Err(e),
        }
    }

    /// Asks to return the order `id` (its buyer only), with an optional reason.
    pub async fn request_return(
        &self,
        actor: Actor,
        id: OrderId,
        reason: Option<String>,
    ) -> Result<OrderDetail, LifecycleError> {
        self.run(actor, id, OrderCommand::RequestReturn { actor, reason })
            .await?;
        self.view_after_change(&actor, id).await
    }

    async fn pay_inline(&self, id: OrderId, refund_id: Uuid) {
        match tokio::time::timeout(INLINE_REFUND, self.outbox.pay_refund(id, refund_id)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(order = %id, error = %error, "a refund was not paid inline; the outbox pays it");
            }
            Err(_) => {
                tracing::warn!(order = %id, "a refund took too long inline; the outbox pays it")
            }
        }
    }

    async fn run(
        &self,
        actor: Actor,
        id: OrderId,
        command: OrderCommand,
    ) -> Result<Vec<OrderEvent>, LifecycleError> {
        // A member who is not the buyer learns nothing of the order: the same answer as none.
        let metadata = Metadata {
            // As every member's command records its actor: the member id.
            actor: Some(actor.member_id.to_string()),
            ..Metadata::default()
        };
        match self
            .commands
            .order(&id.to_string(), command, metadata)
            .await
        {
            Ok(committed) => Ok(committed.events),
            Err(CommandError::Rejected(e)) => Err(match e {
                OrderError::NotPlaced | OrderError::Closed | OrderError::NotBuyer => {
                    LifecycleError::NotFound
                }
                OrderError::RoleNotAllowed { .. } => LifecycleError::NotFound,
                e @ (OrderError::CannotCancel { .. } | OrderError::CannotRequestReturn { .. }) => {
                    LifecycleError::WrongStatus(e.to_string())
                }
                e @ (OrderError::CancelWindowClosed { .. }
                | OrderError::ReturnWindowClosed { .. }) => {
                    LifecycleError::WindowClosed(e.to_string())
                }
                e @ OrderError::ReasonTooLong { .. } => LifecycleError::Invalid {
                    field: "reason",
                    message: e.to_string(),
                },
                e => LifecycleError::Unavailable(anyhow::anyhow!("unexpected refusal: {e}")),
            }),
            Err(CommandError::Conflict { .. }) => Err(LifecycleError::Conflict),
            Err(e) if e.maybe_written() => Err(LifecycleError::OutcomeUnknown),
            Err(e) => Err(LifecycleError::Unavailable(anyhow::anyhow!("{e}"))),
        }
    }

    /// The order's events, read through the upcasters.
    async fn stream(
        &self,
        id: OrderId,
    ) -> Result<Vec<(RecordedEvent, OrderEvent)>, LifecycleError> {
        let stream = StreamRef::new("order", id.to_string());
        let recorded = crate::ops::stream_events(self.commands.events().as_ref(), &stream)
            .await
            .map_err(LifecycleError::Unavailable)?;
        recorded
            .into_iter()
            .map(|recorded| {
                let event = self
                    .commands
                    .decode::<Order>(recorded.clone())
                    .map_err(|e| LifecycleError::Unavailable(e.into()))?;
                Ok((recorded, event))
            })
            .collect()
    }

    /// The order `id` with its story, if `actor` may see it: its buyer, or an admin (who is
    /// not shown the address).
    pub async fn view(
        &self,
        actor: &Actor,
        id: OrderId,
    ) -> Result<Option<OrderDetail>, LifecycleError> {
        let events = self.stream(id).await?;
        let mut order = Order::default();
        let mut steps = Vec::new();
        let mut sealed = None;
        for (_, event) in &events {
            openrun_domain::order::apply(&mut order, event);
            if let OrderEvent::OrderPlaced {
                shipping_address, ..
            } = event
            {
                sealed = Some(shipping_address.0.clone());
            }
            if let (Some(state), Some(at)) = (&order.state, step_at(event)) {
                steps.push(StepView {
                    status: state.status.to_string(),
                    at,
                });
            }
        }
        let Some(state) = order.state.filter(|s| may_see(actor, s)) else {
            return Ok(None);
        };
        let shipping_address = match sealed {
            Some(sealed) if actor.member_id == state.buyer_id => Some(
                self.members
                    .open_address(&sealed)
                    .map_err(|e| LifecycleError::Unavailable(anyhow::anyhow!("{e}")))?,
            ),
            _ => None,
        };
        Ok(Some(detail(
            &state,
            steps,
            shipping_address,
            events.len() as u64,
        )))
    }

    /// The order's events as a timeline, if `actor` may see the order.
    pub async fn timeline(
        &self,
        actor: &Actor,
        id: OrderId,
    ) -> Result<Option<Vec<TimelineEntry>>, LifecycleError> {
        let events = self.stream(id).await?;
        let mut order = Order::default();
        for (_, event) in &events {
            openrun_domain::order::apply(&mut order, event);
        }
        let Some(state) = order.state.filter(|s| may_see(actor, s)) else {
            return Ok(None);
        };
        let buyer = state.buyer_id.to_string();
        // The buyer is told who acted as `buyer`, `staff` or the system, never a staff
        // member's id; an admin sees the log's own words.
        let who = |recorded: Option<String>| match recorded {
            _ if actor.is_admin() => recorded,
            Some(a) if a == buyer => Some("buyer".to_owned()),
            Some(a) if a.starts_with("system:") => Some(a),
            Some(_) => Some("staff".to_owned()),
            None => None,
        };
        Ok(Some(
            events
                .into_iter()
                .map(|(recorded, _)| {
                    let mut data = recorded.payload.get("data").cloned().unwrap_or(Value::Null);
                    if let Some(map) = data.as_object_mut() {
                        map.remove("shipping_address");
                        map.remove("fingerprint");
                        if !actor.is_admin() {
                            map.remove("by");
                        }
                    }
                    TimelineEntry {
                        version: recorded.version,
                        kind: recorded.event_type,
                        recorded_at: recorded.recorded_at,
                        actor: who(recorded.metadata.actor),
                        data,
                    }
                })
                .collect(),
        ))
    }

    /// A page of the orders of `seller`'s products, newest first, and how many there are.
    pub async fn seller_orders(
        &self,
        seller: MemberId,
        filter: &SellerFilter,
        page: u32,
        size: u32,
    ) -> Result<(Vec<SellerOrder>, u64), LifecycleError> {
        use openrun_projections::seller_orders::TABLE;
        let mut conditions = String::from("seller_id = ?");
        let mut binds = vec![seller.to_string()];
        if let Some(product) = filter.product_id {
            conditions.push_str(" AND product_id = ?");
            binds.push(product.to_string());
        }
        if let Some(status) = &filter.status {
            conditions.push_str(" AND status = ?");
            binds.push(status.clone());
        }
        let offset = i64::from(page.saturating_sub(1)) * i64::from(size);
        let sql = format!(
            "SELECT order_id, product_id, status, quantity, amount, placed_at FROM {TABLE} \
             WHERE {conditions} ORDER BY position DESC, product_id LIMIT ? OFFSET ?"
        );
        let count = format!("SELECT COUNT(*) FROM {TABLE} WHERE {conditions}");
        let unavailable = |e: sqlx::Error| LifecycleError::Unavailable(e.into());
        type Row = (String, String, String, i64, i64, String);
        // The page and the count from one snapshot: a row committed between the two reads
        // must not show as a total with no item.
        let (rows, total): (Vec<Row>, i64) = with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await.map_err(unavailable)?;
            let mut query = sqlx::query_as(&sql);
            for bind in &binds {
                query = query.bind(bind);
            }
            let rows = query
                .bind(i64::from(size))
                .bind(offset)
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?;
            let mut counting = sqlx::query_scalar(&count);
            for bind in &binds {
                counting = counting.bind(bind);
            }
            let total = counting.fetch_one(&mut *tx).await.map_err(unavailable)?;
            tx.rollback().await.map_err(unavailable)?;
            (rows, total)
        });
        let items = rows
            .into_iter()
            .filter_map(|(order, product, status, quantity, amount, at)| {
                Some(SellerOrder {
                    order_id: order.parse().ok()?,
                    product_id: product.parse().ok()?,
                    status,
                    quantity,
                    amount,
                    currency: CURRENCY,
                    placed_at: at.parse().ok()?,
                })
            })
            .collect();
        Ok((items, u64::try_from(total).unwrap_or(0)))
    }
}

fn may_see(actor: &Actor, state: &OrderState) -> bool {
    actor.is_admin() || actor.member_id == state.buyer_id
}

/// When an event moved the order to a new status.
fn step_at(event: &OrderEvent) -> Option<DateTime<Utc>> {
    match event {
        OrderEvent::OrderPlaced { at, .. }
        | OrderEvent::OrderShipped { at }
        | OrderEvent::OrderDelivered { at }
        | OrderEvent::OrderCancelled { at, .. }
        | OrderEvent::ReturnRequested { at, .. }
        | OrderEvent::ReturnPickedUp { at }
        | OrderEvent::ReturnCompleted { at, .. } => Some(*at),
        _ => None,
    }
}

fn detail(
    state: &OrderState,
    steps: Vec<StepView>,
    shipping_address: Option<AddressSnapshot>,
    version: u64,
) -> OrderDetail {
    use openrun_domain::order::OrderStatus;
    let after = |at: DateTime<Utc>, window: chrono::Duration| at.checked_add_signed(window);
    OrderDetail {
        order: OrderView::of(state),
        steps,
        refunds: state
            .refunds
            .iter()
            .map(|r| RefundView {
                id: r.refund_id,
                cause: r.cause.as_str().to_owned(),
                amount: r.amount.minor(),
                state: if r.settled_at.is_some() {
                    "settled"
                } else {
                    "pending"
                },
                requested_at: r.at,
                settled_at: r.settled_at,
            })
            .collect(),
        cancellable_until: (state.status == OrderStatus::Prepared)
            .then(|| after(state.placed_at, state.policy.cancel_window))
            .flatten(),
        returnable_until: match (state.status, state.delivered_at) {
            (OrderStatus::Delivered, Some(at)) => after(at, state.policy.return_window),
            _ => None,
        },
        shipping_address,
        version,
    }
}
