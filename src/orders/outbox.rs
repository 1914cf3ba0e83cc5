//! The outbox worker: pays refunds back and sends order confirmations, from the rows the
//! `outbox` projection keeps ([`openrun_projections::outbox`]), never on the order path.
//!
//! A refund is paid once whatever crashes: `OrderRefunded` is in the log before any money
//! moves; the gateway refunds once per refund id (a second call answers what the first did);
//! `RefundSettled` records the payment, and settling again appends nothing. A crash between
//! any two of these steps leaves the row pending, and the next attempt finishes it. The
//! cancel handler pays inline for latency through [`OutboxWorker::pay_refund`], the same
//! steps, and the row is closed by the `RefundSettled` it appends.
//!
//! A confirmation is sent at least once: a crash after the mail server took it and before
//! the row was marked sends it again. A failure (the mail server is down) is retried with a
//! growing backoff. One process works the outbox at a time (a lease in the database).

use std::sync::Arc;
use std::time::Duration;

use openrun_domain::order::OrderCommand;
use openrun_domain::{Issuer, OrderId, ProductId};
use openrun_projections::outbox::{ORDER_MAIL, REFUND, TABLE};
use openrun_projections::store::{self as pstore};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use crate::catalog::live::LiveCatalog;
use crate::commands::{CommandError, Commands};
use crate::db::{Database, with_pool};
use crate::eventstore::{EventStore, Metadata};
use crate::members::Members;
use crate::payment::{PaymentGateway, RefundOutcome};

/// The lease of the process working the outbox.
const LEASE: &str = "outbox-worker";
/// How long the lease lasts unless renewed.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the worker looks for due rows when nothing wakes it.
const TICK: Duration = Duration::from_millis(500);
/// Rows worked per round.
const BATCH: i64 = 100;
/// After a round that found rows, how long to let more gather before the next.
const GATHER: Duration = Duration::from_millis(250);
/// A confirmation of an order older than this is not sent (the outbox of a shop that had
/// orders before it existed, or a rebuilt one, would otherwise mail every past buyer).
const CONFIRM_WITHIN_US: i64 = 24 * 3600 * 1_000_000;

/// A due row: id, kind, order, detail, attempts, when its event was recorded (µs).
type DueRow = (String, String, String, String, i32, i64);

/// The outbox worker.
pub struct OutboxWorker {
    db: Database,
    commands: Commands,
    events: Arc<dyn EventStore>,
    gateway: Arc<dyn PaymentGateway>,
    members: Arc<Members>,
    catalog: Arc<LiveCatalog>,
    owner: String,
}

impl OutboxWorker {
    /// The worker.
    pub fn new(
        db: Database,
        commands: Commands,
        events: Arc<dyn EventStore>,
        gateway: Arc<dyn PaymentGateway>,
        members: Arc<Members>,
        catalog: Arc<LiveCatalog>,
    ) -> Self {
        Self {
            db,
            commands,
            events,
            gateway,
            members,
            catalog,
            owner: format!("{}-{}", std::process::id(), Uuid::now_v7().simple()),
        }
    }

    /// Works the outbox until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut appended = self.events.subscribe();
        // Woken by this process's appends while the log is open; by the tick otherwise.
        let mut notified = true;
        // A dropped sender is a stop too (the application went away).
        while !*stop.borrow() && stop.has_changed().is_ok() {
            match self.round().await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(0) => {}
                // Rows came in: let more gather (a drop's confirmations in a few rounds,
                // leaving the cores to the orders meanwhile).
                Ok(_) => tokio::select! {
                    changed = stop.changed() => if changed.is_err() { break },
                    () = tokio::time::sleep(GATHER) => continue,
                },
                Err(e) => tracing::warn!(error = format!("{e:#}"), "an outbox round failed"),
            }
            tokio::select! {
                // A dropped sender is a stop too (the application went away).
                changed = stop.changed() => if changed.is_err() { break },
                changed = appended.changed(), if notified => notified = changed.is_ok(),
                () = tokio::time::sleep(TICK) => {}
            }
        }
        // Ignored error: the lease lapses by itself.
        let _ = pstore::release_lease(&self.db, LEASE, &self.owner).await;
    }

    /// Works the due rows once, if this process holds the lease, in the log's order; how
    /// many it tried.
    pub async fn round(&self) -> anyhow::Result<usize> {
        if !pstore::acquire_lease(&self.db, LEASE, &self.owner, LEASE_TTL).await? {
            return Ok(0);
        }
        let now = pstore::database_now(&self.db).await?;
        let sql = format!(
            // Binary-collated keys read back as text (MySQL reports them as binary).
            "SELECT CAST(id AS CHAR), kind, CAST(order_id AS CHAR), detail, attempts, recorded_at FROM {TABLE} \
             WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, position LIMIT ?"
        );
        let due: Vec<DueRow> = with_pool!(&self.db, pool => {
            sqlx::query_as(&sql).bind(now).bind(BATCH).fetch_all(pool).await?
        });
        let count = due.len();
        let mut renewed = std::time::Instant::now();
        // Rows done are marked together (a crash before that works them again: a refund is
        // idempotent, a confirmation may arrive twice): whenever the lease is renewed, at
        // the end of the round, and before any error goes up.
        let mut done = Vec::new();
        let worked: anyhow::Result<()> = async {
            for (id, kind, order, detail, attempts, recorded_at) in due {
                // Each row is worked only while this process still holds the lease, renewed
                // once a third of it has passed: a slow row (a mail server taking its time)
                // must not let another process work the same, and a fast one costs no write.
                if renewed.elapsed() >= LEASE_TTL / 3 {
                    self.mark_done(&done, now).await?;
                    done.clear();
                    if !pstore::acquire_lease(&self.db, LEASE, &self.owner, LEASE_TTL).await? {
                        break;
                    }
                    renewed = std::time::Instant::now();
                }
                let outcome = if kind == ORDER_MAIL && recorded_at < now - CONFIRM_WITHIN_US {
                    Ok(())
                } else {
                    self.work(&kind, &order, &detail).await
                };
                match outcome {
                    Ok(()) => done.push(id),
                    Err(error) => self.failed(&id, attempts, &error).await?,
                }
            }
            Ok(())
        }
        .await;
        self.mark_done(&done, now).await?;
        worked?;
        Ok(count)
    }

    async fn work(&self, kind: &str, order: &str, detail: &str) -> Result<(), String> {
        let order_id = order
            .parse()
            .map(OrderId::from_uuid)
            .map_err(|_| "the row names no order".to_owned())?;
        let detail: Value = serde_json::from_str(detail).map_err(|e| e.to_string())?;
        match kind {
            REFUND => {
                let refund_id = detail
                    .get("refund_id")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
                    .ok_or("the row names no refund")?;
                self.pay_refund(order_id, refund_id).await
            }
            ORDER_MAIL => self.confirm(order_id, &detail).await,
            other => Err(format!("unknown outbox kind {other}")),
        }
    }

    /// Pays `refund_id` of `order_id` back through the gateway and records it settled. Safe
    /// to call any number of times, from anywhere: the gateway refunds once per refund id and
    /// the log records one settlement.
    pub async fn pay_refund(&self, order_id: OrderId, refund_id: Uuid) -> Result<(), String> {
        let amount = match self.gateway.refund(refund_id, order_id).await {
            Ok(RefundOutcome::Refunded { amount }) => amount,
            Ok(RefundOutcome::NothingCharged) => {
                return Err("the gateway holds no charge of this order to refund".into());
            }
            Err(e) => return Err(e.to_string()),
        };
        metrics::counter!("openrun_refunds_paid_total").increment(1);
        let metadata = Metadata {
            actor: Some("system:refunds".to_owned()),
            causation_id: Some(refund_id),
            ..Metadata::default()
        };
        let command = OrderCommand::SettleRefund {
            issuer: Issuer::System,
            refund_id,
            amount,
        };
        match self
            .commands
            .order(&order_id.to_string(), command, metadata)
            .await
        {
            Ok(_) => Ok(()),
            // A lost commit is tried again: settling twice appends nothing.
            Err(CommandError::Rejected(e)) => Err(format!("the order refused the settlement: {e}")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn confirm(&self, order_id: OrderId, detail: &Value) -> Result<(), String> {
        let buyer = detail
            .get("buyer_id")
            .and_then(Value::as_str)
            .ok_or("the row names no buyer")?;
        let lines: Vec<String> = detail
            .get("lines")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|line| self.describe(line))
            .collect();
        let total = detail.get("total").and_then(Value::as_i64).unwrap_or(0);
        let total = format!("{total} {}", super::CURRENCY);
        // The mail server's words may quote the address: only that it failed is kept.
        match self
            .members
            .send_order_confirmation(buyer, &order_id.to_string(), &lines, &total)
            .await
        {
            // An erased account has no address to write to: nothing is left to do.
            Ok(()) | Err(crate::members::MemberError::NotFound) => Ok(()),
            Err(_) => Err("the confirmation could not be sent".to_owned()),
        }
    }

    /// One line of a confirmation: units, the product's name and size, and the amount.
    fn describe(&self, line: &Value) -> String {
        let id = |key: &str| {
            line.get(key)
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Uuid>().ok())
        };
        let quantity = line.get("quantity").and_then(Value::as_i64).unwrap_or(0);
        let amount = line.get("line_total").and_then(Value::as_i64).unwrap_or(0);
        let product = id("product_id").and_then(|p| self.catalog.product(ProductId::from_uuid(p)));
        let name = product.as_ref().map_or_else(
            || "a product".to_owned(),
            |p| {
                let size = p
                    .state
                    .variants
                    .iter()
                    .find(|v| Some(v.variant_id.as_uuid()) == id("variant_id"))
                    .map(|v| v.label.clone())
                    .filter(|l| !l.is_empty());
                match size {
                    Some(size) => format!("{} ({size})", p.state.name),
                    None => p.state.name.clone(),
                }
            },
        );
        format!("{quantity} x {name}: {amount} {}", super::CURRENCY)
    }

    async fn mark_done(&self, ids: &[String], now: i64) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let marks = vec!["?"; ids.len()].join(", ");
        let sql = format!(
            "UPDATE {TABLE} SET status = 'done', done_at = ? WHERE status = 'pending' AND id IN ({marks})"
        );
        with_pool!(&self.db, pool => {
            let mut query = sqlx::query(&sql).bind(now);
            for id in ids {
                query = query.bind(id);
            }
            query.execute(pool).await.map(drop)?
        });
        Ok(())
    }

    async fn failed(&self, id: &str, attempts: i32, error: &str) -> anyhow::Result<()> {
        let now = pstore::database_now(&self.db).await?;
        tracing::warn!(row = id, attempts, error = %error, "an outbox row failed; it will be tried again");
        let backoff = (1i64 << attempts.clamp(0, 9)).min(300) * 1_000_000;
        let sql = format!(
            "UPDATE {TABLE} SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? \
             WHERE id = ? AND status = 'pending'"
        );
        with_pool!(&self.db, pool => {
            sqlx::query(&sql).bind(error).bind(now + backoff).bind(id).execute(pool).await.map(drop)?
        });
        Ok(())
    }
}
