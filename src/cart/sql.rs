//! Carts in the shop's database, when it runs without Redis: they survive a restart.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use openrun_domain::{MemberId, ProductId, VariantId};

use super::{CartLine, CartStore, MAX_LINES, Put, expired};
use crate::db::{Database, with_pool};

/// The database cart store.
pub struct SqlCartStore {
    db: Database,
}

impl SqlCartStore {
    /// Carts in `db` (its migrations made the tables).
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

#[async_trait]
impl CartStore for SqlCartStore {
    async fn lines(&self, member: MemberId, now: DateTime<Utc>) -> anyhow::Result<Vec<CartLine>> {
        let member = member.to_string();
        let (at, rows): (Option<i64>, Vec<(String, String, i64)>) = with_pool!(&self.db, pool => {
            let at = sqlx::query_scalar("SELECT updated_at FROM carts WHERE member_id = ?")
                .bind(&member)
                .fetch_optional(pool)
                .await?;
            let rows = sqlx::query_as(
                "SELECT product_id, variant_id, quantity FROM cart_items WHERE member_id = ? \
                 ORDER BY seq, variant_id",
            )
            .bind(&member)
            .fetch_all(pool)
            .await?;
            (at, rows)
        });
        if at.is_none_or(|at| expired(at, now)) {
            return Ok(Vec::new());
        }
        Ok(rows
            .into_iter()
            .filter_map(|(product, variant, quantity)| {
                Some(CartLine {
                    product_id: ProductId::from_uuid(product.parse().ok()?),
                    variant_id: VariantId::from_uuid(variant.parse().ok()?),
                    quantity: u32::try_from(quantity).ok()?,
                })
            })
            .collect())
    }

    async fn put(
        &self,
        member: MemberId,
        line: CartLine,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Put> {
        let member = member.to_string();
        let (variant, product) = (line.variant_id.to_string(), line.product_id.to_string());
        let now_ms = now.timestamp_millis();
        let put = with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            // The cart's row first: it locks the cart (SQLite's write lock, a row lock on
            // MySQL), so that two puts never both see room for the fiftieth line.
            let (upsert, read) = if matches!(self.db, Database::Sqlite(_)) {
                (
                    "INSERT INTO carts (member_id, updated_at) VALUES (?, ?) \
                     ON CONFLICT(member_id) DO NOTHING",
                    "SELECT updated_at FROM carts WHERE member_id = ?",
                )
            } else {
                (
                    "INSERT INTO carts (member_id, updated_at) VALUES (?, ?) \
                     ON DUPLICATE KEY UPDATE member_id = member_id",
                    "SELECT updated_at FROM carts WHERE member_id = ? FOR UPDATE",
                )
            };
            sqlx::query(upsert).bind(&member).bind(now_ms).execute(&mut *tx).await?;
            let at: Option<i64> = sqlx::query_scalar(read)
                .bind(&member)
                .fetch_optional(&mut *tx)
                .await?;
            if at.is_some_and(|at| expired(at, now)) {
                sqlx::query("DELETE FROM cart_items WHERE member_id = ?")
                    .bind(&member)
                    .execute(&mut *tx)
                    .await?;
            }
            let there: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM cart_items WHERE member_id = ? AND variant_id = ?",
            )
            .bind(&member)
            .bind(&variant)
            .fetch_one(&mut *tx)
            .await?;
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cart_items WHERE member_id = ?")
                .bind(&member)
                .fetch_one(&mut *tx)
                .await?;
            if there == 0 && count >= MAX_LINES as i64 {
                tx.rollback().await?;
                return Ok(Put::Full);
            }
            if there == 0 {
                sqlx::query(
                    "INSERT INTO cart_items (member_id, variant_id, product_id, quantity, seq) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(&member)
                .bind(&variant)
                .bind(&product)
                .bind(i64::from(line.quantity))
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            } else {
                sqlx::query(
                    "UPDATE cart_items SET quantity = ?, product_id = ? WHERE member_id = ? AND variant_id = ?",
                )
                .bind(i64::from(line.quantity))
                .bind(&product)
                .bind(&member)
                .bind(&variant)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("UPDATE carts SET updated_at = ? WHERE member_id = ?")
                .bind(now_ms)
                .bind(&member)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Put::Done
        });
        Ok(put)
    }

    async fn claim(
        &self,
        member: MemberId,
        lines: &[CartLine],
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let member = member.to_string();
        let claimed = with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            // A write first: it locks the cart (SQLite's write lock at once, rather than a
            // read lock that would have to be upgraded under another claim; the row on
            // MySQL), so that claims of one cart take turns.
            sqlx::query("UPDATE carts SET updated_at = updated_at WHERE member_id = ?")
                .bind(&member)
                .execute(&mut *tx)
                .await?;
            let at: Option<i64> = sqlx::query_scalar("SELECT updated_at FROM carts WHERE member_id = ?")
                .bind(&member)
                .fetch_optional(&mut *tx)
                .await?;
            let mut all = at.is_some_and(|at| !expired(at, now));
            for line in lines {
                if !all {
                    break;
                }
                let taken = sqlx::query(
                    "DELETE FROM cart_items WHERE member_id = ? AND variant_id = ? \
                     AND product_id = ? AND quantity = ?",
                )
                .bind(&member)
                .bind(line.variant_id.to_string())
                .bind(line.product_id.to_string())
                .bind(i64::from(line.quantity))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                all = taken == 1;
            }
            if all {
                sqlx::query("UPDATE carts SET updated_at = ? WHERE member_id = ?")
                    .bind(now.timestamp_millis())
                    .bind(&member)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            } else {
                // At once: a rollback left to the drop would keep the rows locked until the
                // connection is used again.
                tx.rollback().await?;
            }
            all
        });
        Ok(claimed)
    }

    async fn take_out(
        &self,
        member: MemberId,
        pairs: &[(VariantId, Option<u32>)],
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let member = member.to_string();
        with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let mut removed = 0;
            for (variant, quantity) in pairs {
                let sql = if quantity.is_some() {
                    "DELETE FROM cart_items WHERE member_id = ? AND variant_id = ? AND quantity = ?"
                } else {
                    "DELETE FROM cart_items WHERE member_id = ? AND variant_id = ?"
                };
                let mut query = sqlx::query(sql).bind(&member).bind(variant.to_string());
                if let Some(quantity) = quantity {
                    query = query.bind(i64::from(*quantity));
                }
                removed += query.execute(&mut *tx).await?.rows_affected();
            }
            if removed > 0 {
                sqlx::query("UPDATE carts SET updated_at = ? WHERE member_id = ?")
                    .bind(now.timestamp_millis())
                    .bind(&member)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
