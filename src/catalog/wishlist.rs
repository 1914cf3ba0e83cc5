//! Each member's wishlist: products they want to hear about. One row per product (no
//! duplicates), at most [`MAX_VISIBLE`] rows; products that became hidden drop out of the view
//! and its count, and come back if they reappear. A hidden entry still takes its row, so that
//! one reappearing never takes the list past the bound (nor do hide-and-add cycles grow it).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use openrun_domain::{MemberId, ProductId};

use super::live::{LiveCatalog, LiveProduct, Viewer};
use crate::clock::SharedClock;
use crate::db::{Database, with_pool};

/// Most entries a member sees (and may have visible at once).
pub const MAX_VISIBLE: usize = 200;

/// Why a wishlist change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WishlistError {
    /// No product the member can see has this id.
    #[error("no such product")]
    NotFound,
    /// [`MAX_VISIBLE`] visible entries already.
    #[error("the wishlist holds {MAX_VISIBLE} products already")]
    Full,
    /// The database failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for WishlistError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

/// The wishlists.
pub struct Wishlists {
    db: Database,
    catalog: Arc<LiveCatalog>,
    clock: SharedClock,
}

impl Wishlists {
    /// Wishlists stored in `db`, shown through `catalog`.
    pub fn new(db: Database, catalog: Arc<LiveCatalog>, clock: SharedClock) -> Self {
        Self { db, catalog, clock }
    }

    /// Rows of `member`, hidden products included.
    async fn count_rows(&self, member: &str) -> Result<usize, WishlistError> {
        let sql = "SELECT COUNT(*) FROM wishlist WHERE member_id = ?";
        let rows: i64 = with_pool!(&self.db, pool => sqlx::query_scalar(sql)
            .bind(member)
            .fetch_one(pool)
            .await)?;
        Ok(usize::try_from(rows).unwrap_or(usize::MAX))
    }

    /// The entries `viewer` (the member `member`) can see, most recently added first.
    pub async fn list(
        &self,
        member: MemberId,
        viewer: &Viewer,
    ) -> Result<Vec<(Arc<LiveProduct>, DateTime<Utc>)>, WishlistError> {
        let id = member.to_string();
        let sql = "SELECT product_id, added_at FROM wishlist WHERE member_id = ? \
                   ORDER BY added_at DESC, product_id";
        let rows: Vec<(String, DateTime<Utc>)> =
            with_pool!(&self.db, pool => sqlx::query_as(sql).bind(&id).fetch_all(pool).await)?;
        let now = self.clock.now();
        Ok(rows
            .into_iter()
            .filter_map(|(product, at)| {
                let id = product.parse::<uuid::Uuid>().ok()?;
                let product = self.catalog.product(ProductId::from_uuid(id))?;
                self.catalog
                    .visible(&product, viewer, now)
                    .then_some((product, at))
            })
            .take(MAX_VISIBLE)
            .collect())
    }

    /// Adds `product`; adding it again changes nothing.
    pub async fn add(
        &self,
        member: MemberId,
        viewer: &Viewer,
        product: ProductId,
    ) -> Result<(), WishlistError> {
        let now = self.clock.now();
        self.catalog
            .product(product)
            .filter(|p| self.catalog.visible(p, viewer, now))
            .ok_or(WishlistError::NotFound)?;
        let (member, product) = (member.to_string(), product.to_string());
        if self.count_rows(&member).await? >= MAX_VISIBLE {
            // Full, unless it is there already: adding it again changes nothing.
            let sql = "SELECT COUNT(*) FROM wishlist WHERE member_id = ? AND product_id = ?";
            let there: i64 = with_pool!(&self.db, pool => sqlx::query_scalar(sql)
                .bind(&member)
                .bind(&product)
                .fetch_one(pool)
                .await)?;
            return if there > 0 {
                Ok(())
            } else {
                Err(WishlistError::Full)
            };
        }
        let sql = "INSERT INTO wishlist (member_id, product_id, added_at) VALUES (?, ?, ?)";
        let inserted = with_pool!(&self.db, pool => sqlx::query(sql)
            .bind(&member)
            .bind(&product)
            .bind(now)
            .execute(pool)
            .await
            .map(drop));
        match inserted {
            // There already (hidden when listed, or added by a concurrent request).
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(()),
            other => other?,
        }
        // Concurrent adds each saw room: counted again after the insert, the one past the
        // limit takes its entry back (two may both do so; the list never exceeds it).
        if self.count_rows(&member).await? > MAX_VISIBLE {
            let parsed = product
                .parse::<uuid::Uuid>()
                .map_err(|e| anyhow::anyhow!(e))?;
            let member = member
                .parse::<uuid::Uuid>()
                .map_err(|e| anyhow::anyhow!(e))?;
            self.remove(MemberId::from_uuid(member), ProductId::from_uuid(parsed))
                .await?;
            return Err(WishlistError::Full);
        }
        Ok(())
    }

    /// Removes `product`, whether or not it was there.
    pub async fn remove(&self, member: MemberId, product: ProductId) -> Result<(), WishlistError> {
        let (member, product) = (member.to_string(), product.to_string());
        let sql = "DELETE FROM wishlist WHERE member_id = ? AND product_id = ?";
        with_pool!(&self.db, pool => sqlx::query(sql)
            .bind(&member)
            .bind(&product)
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }
}
