//! The sandbox gateway: test cards that succeed (`tok_visa`), are declined (`tok_declined`)
//! or fail at the gateway (`tok_gateway_error`: no answer, nothing charged). Its ledger is two
//! tables of the shop's database (`sandbox_charges`, `sandbox_refunds`); a charge is answered
//! once its row is committed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use openrun_domain::{Money, OrderId};
use sqlx::Row;
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
}

impl SandboxGateway {
    /// The gateway on `db` (migrated).
    pub fn new(db: Database, clock: SharedClock) -> Self {
        Self { db, clock }
    }

    async fn recorded(
        &self,
        order_id: &str,
    ) -> anyhow::Result<Option<(i64, String, String, String)>> {
        let sql = "SELECT amount, token, status, reference FROM sandbox_charges WHERE order_id = ?";
        Ok(with_pool!(&self.db, pool => sqlx::query_as(sql)
            .bind(order_id)
            .fetch_optional(pool)
            .await)?)
    }
}

impl SandboxGateway {
    /// Counts another charge call for an order charged (or declined) before, and reads what
    /// the first one recorded.
    async fn called_again(
        &self,
        order_id: &str,
    ) -> anyhow::Result<Option<(i64, String, String, String)>> {
        let sql = "UPDATE sandbox_charges SET calls = calls + 1 WHERE order_id = ?";
        with_pool!(&self.db, pool => sqlx::query(sql).bind(order_id).execute(pool).await.map(drop))?;
        self.recorded(order_id).await
    }
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[async_trait]
impl PaymentGateway for SandboxGateway {
    async fn charge(&self, order_id: OrderId, amount: Money, token: &str) -> ChargeOutcome {
        if token == TOKEN_GATEWAY_ERROR {
            return ChargeOutcome::Unknown("the sandbox gateway failed (tok_gateway_error)".into());
        }
        let id = order_id.to_string();
        let (status, reference) = if token == TOKEN_OK {
            ("charged", format!("ch_{}", order_id.as_uuid().simple()))
        } else {
            ("declined", String::new())
        };
        let sql = "INSERT INTO sandbox_charges \
                   (order_id, amount, token, status, reference, created_at) \
                   VALUES (?, ?, ?, ?, ?, ?)";
        let now = self.clock.now();
        let inserted = with_pool!(&self.db, pool => sqlx::query(sql)
            .bind(&id)
            .bind(amount.minor())
            .bind(token)
            .bind(status)
            .bind(&reference)
            .bind(now)
            .execute(pool)
            .await
            .map(drop));
        let (recorded_amount, recorded_token, status, reference) = match inserted {
            Ok(()) => (
                amount.minor(),
                token.to_owned(),
                status.to_owned(),
                reference,
            ),
            Err(e) if unique_violation(&e) => match self.called_again(&id).await {
                Ok(Some(row)) => row,
                Ok(None) => return ChargeOutcome::Unknown("the charge vanished".into()),
                Err(e) => return ChargeOutcome::Unknown(format!("{e:#}")),
            },
            // The row may have committed before the answer was lost.
            Err(e) => return ChargeOutcome::Unknown(e.to_string()),
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
