//! The sandbox gateway: test cards that succeed (`tok_visa`), are declined (`tok_declined`)
//! or fail at the gateway (`tok_gateway_error`: no answer, nothing charged). Its ledger is two
//! tables of the shop's database (`sandbox_charges`, `sandbox_refunds`); a charge is answered
//! once its row is committed, through a group commit of its own: the charges of many orders
//! at once share one transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use openrun_domain::{Money, OrderId};
use sqlx::Row;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{Charge, ChargeOutcome, GatewayError, PaymentGateway, RefundOutcome};
use crate::clock::SharedClock;
use crate::db::{Database, with_pool};

/// A card that is charged.
pub const TOKEN_OK: &str = "tok_visa";
/// A card that is declined.
pub const TOKEN_DECLINED: &str = "tok_declined";
/// A card whose charge fails at the gateway.
pub const TOKEN_GATEWAY_ERROR: &str = "tok_gateway_error";
/// Every token the sandbox knows.
pub const TOKENS: [&str; 3] = [TOKEN_OK, TOKEN_DECLINED, TOKEN_GATEWAY_ERROR];

/// The sandbox gateway on the shop's database.
pub struct SandboxGateway {
    db: Database,
    clock: SharedClock,
    charges: mpsc::Sender<Pending>,
    batches: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
}

/// Charges written in one transaction at most.
const CHARGE_BATCH: usize = 256;

/// A charge waiting for the ledger's writer.
struct Pending {
    order_id: String,
    amount: i64,
    token: String,
    status: &'static str,
    reference: String,
    at: DateTime<Utc>,
    /// The row as recorded (this charge's, or the first one's for the order).
    reply: oneshot::Sender<anyhow::Result<Recorded>>,
}

/// A ledger row: amount, token, status, reference.
type Recorded = (i64, String, String, String);

impl SandboxGateway {
    /// The gateway on `db` (migrated), with its ledger's writer on this runtime.
    pub fn new(db: Database, clock: SharedClock) -> Self {
        let (charges, queue) = mpsc::channel(CHARGE_BATCH * 16);
        let batches = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write_charges(
            db.clone(),
            queue,
            Arc::clone(&batches),
            Arc::clone(&in_flight),
        ));
        Self {
            db,
            clock,
            charges,
            batches,
            in_flight,
        }
    }

    /// Transactions the ledger's writer has begun.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::SeqCst)
    }

    /// Charges handed to the writer and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// The ledger's group commit: every charge waiting is written in one transaction (a charge of
/// an order charged before counts one more call and keeps the first row), and each is
/// answered with its order's row once the transaction committed. A failed batch answers
/// every charge in it with the error: the commit may have happened, so each is unknown.
async fn write_charges(
    db: Database,
    mut queue: mpsc::Receiver<Pending>,
    batches: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(CHARGE_BATCH);
    while queue.recv_many(&mut batch, CHARGE_BATCH).await > 0 {
        batches.fetch_add(1, Ordering::SeqCst);
        metrics::histogram!("openrun_sandbox_charge_batch").record(batch.len() as f64);
        match commit_charges(&db, &batch).await {
            Ok(rows) => {
                for pending in batch.drain(..) {
                    let row = rows
                        .get(&pending.order_id)
                        .cloned()
                        .ok_or_else(|| anyhow::anyhow!("the charge is not in the ledger"));
                    // Ignored error: the caller stopped waiting.
                    let _ = pending.reply.send(row);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) => {
                let cause = format!("{e:#}");
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(anyhow::anyhow!("{cause}")));
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }
}

/// One transaction of charges: inserted (or counted again), then read back.
async fn commit_charges(
    db: &Database,
    batch: &[Pending],
) -> anyhow::Result<std::collections::HashMap<String, Recorded>> {
    fn insert<'a, DB: sqlx::Database>(
        batch: &'a [Pending],
        on_duplicate: &str,
    ) -> sqlx::QueryBuilder<'a, DB>
    where
        &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        DateTime<Utc>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    {
        let mut query = sqlx::QueryBuilder::<DB>::new(
            "INSERT INTO sandbox_charges (order_id, amount, token, status, reference, created_at) ",
        );
        query.push_values(batch, |mut row, p| {
            row.push_bind(p.order_id.as_str())
                .push_bind(p.amount)
                .push_bind(p.token.as_str())
                .push_bind(p.status)
                .push_bind(p.reference.as_str())
                .push_bind(p.at);
        });
        query.push(on_duplicate);
        query
    }
    fn select<'a, DB: sqlx::Database>(batch: &'a [Pending]) -> sqlx::QueryBuilder<'a, DB>
    where
        &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    {
        let mut query = sqlx::QueryBuilder::<DB>::new(
            "SELECT order_id, amount, token, status, reference FROM sandbox_charges \
             WHERE order_id IN (",
        );
        let mut ids = query.separated(", ");
        for pending in batch {
            ids.push_bind(pending.order_id.as_str());
        }
        query.push(")");
        query
    }
    // A charge of an order charged before counts one more call and keeps the first row.
    let on_duplicate = if db.is_sqlite() {
        " ON CONFLICT (order_id) DO UPDATE SET calls = calls + 1"
    } else {
        " ON DUPLICATE KEY UPDATE calls = calls + 1"
    };
    let rows: Vec<(String, i64, String, String, String)> = with_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        insert(batch, on_duplicate).build().execute(&mut *tx).await?;
        let rows = select(batch).build_query_as().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows
    });
    Ok(rows
        .into_iter()
        .map(|(order, amount, token, status, reference)| {
            (order, (amount, token, status, reference))
        })
        .collect())
}

#[async_trait]
impl PaymentGateway for SandboxGateway {
    async fn charge(&self, order_id: OrderId, amount: Money, token: &str) -> ChargeOutcome {
        if token == TOKEN_GATEWAY_ERROR {
            return ChargeOutcome::Unknown("the sandbox gateway failed (tok_gateway_error)".into());
        }
        let (status, reference) = if token == TOKEN_OK {
            ("charged", format!("ch_{}", order_id.as_uuid().simple()))
        } else {
            ("declined", String::new())
        };
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            order_id: order_id.to_string(),
            amount: amount.minor(),
            token: token.to_owned(),
            status,
            reference,
            at: self.clock.now(),
            reply,
        };
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.charges.send(pending).await.is_err() {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return ChargeOutcome::Unknown("the sandbox ledger's writer stopped".into());
        }
        let (recorded_amount, recorded_token, status, reference) = match answer.await {
            Ok(Ok(row)) => row,
            // The batch may have committed before its answer was lost.
            Ok(Err(e)) => return ChargeOutcome::Unknown(format!("{e:#}")),
            Err(_) => return ChargeOutcome::Unknown("the sandbox ledger's writer stopped".into()),
        };
        if recorded_amount != amount.minor() || recorded_token != token {
            return ChargeOutcome::Mismatch;
        }
        match status.as_str() {
            "charged" => ChargeOutcome::Charged { reference },
            _ => ChargeOutcome::Declined {
                reason: "the card was declined".into(),
            },
        }
    }

    async fn refund(
        &self,
        refund_id: Uuid,
        order_id: OrderId,
    ) -> Result<RefundOutcome, GatewayError> {
        let (refund, order) = (refund_id.to_string(), order_id.to_string());
        let now = self.clock.now();
        let outcome: anyhow::Result<RefundOutcome> = with_pool!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            // The whole charge, once: a charge refunded before (under this id or another)
            // has nothing left, and the update's condition keeps any refund within the
            // charge. A write first, so that SQLite takes its write lock at once (a read
            // first would have to upgrade its lock, and fail while another writer holds it).
            let moved = sqlx::query(
                "UPDATE sandbox_charges SET refunded = amount \
                 WHERE order_id = ? AND status = 'charged' AND refunded = 0",
            )
            .bind(&order)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 0 {
                let done: Option<i64> =
                    sqlx::query_scalar("SELECT amount FROM sandbox_refunds WHERE refund_id = ?")
                        .bind(&refund)
                        .fetch_optional(&mut *tx)
                        .await?;
                return Ok(match done {
                    Some(amount) => RefundOutcome::Refunded { amount: Money::from_minor(amount) },
                    None => RefundOutcome::NothingCharged,
                });
            }
            let amount: i64 =
                sqlx::query_scalar("SELECT amount FROM sandbox_charges WHERE order_id = ?")
                    .bind(&order)
                    .fetch_one(&mut *tx)
                    .await?;
            sqlx::query(
                "INSERT INTO sandbox_refunds (refund_id, order_id, amount, created_at) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(&refund)
            .bind(&order)
            .bind(amount)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(RefundOutcome::Refunded { amount: Money::from_minor(amount) })
        }
        .await);
        Ok(outcome?)
    }

    async fn charge_of(&self, order_id: OrderId) -> Result<Option<Charge>, GatewayError> {
        let sql = "SELECT order_id, amount, reference, refunded, created_at FROM sandbox_charges \
                   WHERE order_id = ? AND status = 'charged'";
        let id = order_id.to_string();
        let rows = with_pool!(&self.db, pool => {
            sqlx::query(sql).bind(&id).fetch_all(pool).await.map_err(anyhow::Error::from).and_then(|rows| {
                rows.iter().map(charge_row).collect::<anyhow::Result<Vec<_>>>()
            })
        })?;
        Ok(rows.into_iter().next())
    }

    async fn unsettled(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Charge>, GatewayError> {
        let sql = "SELECT order_id, amount, reference, refunded, created_at FROM sandbox_charges \
                   WHERE status = 'charged' AND settled = FALSE AND refunded = 0 \
                   AND created_at < ? ORDER BY created_at LIMIT ?";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = with_pool!(&self.db, pool => {
            sqlx::query(sql).bind(before).bind(limit).fetch_all(pool).await.map_err(anyhow::Error::from).and_then(|rows| {
                rows.iter().map(charge_row).collect::<anyhow::Result<Vec<_>>>()
            })
        })?;
        Ok(rows)
    }

    async fn settle(&self, order_id: OrderId) -> Result<(), GatewayError> {
        let sql = "UPDATE sandbox_charges SET settled = TRUE WHERE order_id = ?";
        let id = order_id.to_string();
        with_pool!(&self.db, pool => sqlx::query(sql).bind(&id).execute(pool).await.map(drop))
            .map_err(anyhow::Error::from)?;
        Ok(())
    }
}

fn charge_row<R: Row>(row: &R) -> anyhow::Result<Charge>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    let order: String = row.try_get("order_id")?;
    Ok(Charge {
        order_id: OrderId::from_uuid(order.parse()?),
        amount: Money::from_minor(row.try_get("amount")?),
        reference: row.try_get("reference")?,
        refunded: Money::from_minor(row.try_get("refunded")?),
        at: row.try_get("created_at")?,
    })
}
