//! Carts: per member, the variants they mean to buy and how many, behind the [`CartStore`]
//! trait. With Redis a cart is a hash under the stock store's keys, so that the order path's
//! hold script reads a cart order's lines itself (no round trip of its own); without Redis it
//! is two tables of the shop's database (it survives a restart). Both are exercised by one
//! conformance suite (`tests/it/cartstore.rs`).
//!
//! A cart expires [`CART_TTL`] after its last change, by the service's clock (so a test can
//! move it on); Redis also drops the key a little after that. At most [`MAX_LINES`] lines of
//! 1 to [`MAX_QUANTITY`] units each.
//!
//! # Layout
//! - [`redis`]: the Redis store. [`sql`]: the database store.

pub mod redis;
pub mod sql;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use openrun_domain::{MemberId, ProductId, VariantId};

/// A cart expires this long after its last change.
pub const CART_TTL: chrono::Duration = chrono::Duration::days(14);
/// The most lines a cart holds.
pub const MAX_LINES: usize = 50;
/// The most units of one line: what one order line may take.
pub const MAX_QUANTITY: u32 = openrun_domain::order::MAX_QUANTITY_PER_LINE;

/// Whether a cart last changed at `at` (ms since the epoch) has expired at `now`.
pub(crate) fn expired(at: i64, now: DateTime<Utc>) -> bool {
    at + CART_TTL.num_milliseconds() <= now.timestamp_millis()
}

/// One line of a cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CartLine {
    /// The product.
    pub product_id: ProductId,
    /// The variant (size).
    pub variant_id: VariantId,
    /// Units, 1 to [`MAX_QUANTITY`].
    pub quantity: u32,
}

/// What putting a line did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The line is in the cart with its new quantity.
    Done,
    /// The cart has [`MAX_LINES`] lines already and this variant is not one of them.
    Full,
}

/// A store of carts.
#[async_trait]
pub trait CartStore: Send + Sync + 'static {
    /// The member's lines, in the order they were first put (an expired cart is empty).
    async fn lines(&self, member: MemberId, now: DateTime<Utc>) -> anyhow::Result<Vec<CartLine>>;

    /// Puts a line (replacing the variant's quantity), unless the cart is full.
    async fn put(
        &self,
        member: MemberId,
        line: CartLine,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Put>;

    /// Takes each variant out of the member's cart when its quantity is the one named, or
    /// whatever it is when none is named (variants not in the cart are ignored).
    async fn take_out(
        &self,
        member: MemberId,
        pairs: &[(VariantId, Option<u32>)],
        now: DateTime<Utc>,
    ) -> anyhow::Result<()>;

    /// Takes `variants` out of the member's cart (those not in it are ignored).
    async fn remove(
        &self,
        member: MemberId,
        variants: &[VariantId],
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let pairs: Vec<(VariantId, Option<u32>)> = variants.iter().map(|v| (*v, None)).collect();
        self.take_out(member, &pairs, now).await
    }

    /// Takes out the lines an order is about to hold, all or none: true when every line was
    /// in the cart with that quantity (and is out now), false (nothing changed) otherwise.
    /// Two orders of one cart line can so never both go ahead.
    async fn claim(
        &self,
        member: MemberId,
        lines: &[CartLine],
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool>;

    /// Whether the stock store's hold reads this store's carts itself (Redis): then an
    /// order from the cart sends only the variants, and the hold takes the quantities.
    fn read_by_hold(&self) -> bool {
        false
    }
}
