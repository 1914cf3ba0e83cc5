//! Carts in Redis: one hash per member under the stock store's keys (the same Redis Cluster
//! slot), which the hold script reads for an order from the cart.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use openrun_domain::{MemberId, ProductId, VariantId};
use redis::aio::ConnectionManager;

use super::{CART_TTL, CartLine, CartStore, MAX_LINES, Put};

/// The Redis cart store.
pub struct RedisCartStore {
    conn: ConnectionManager,
    base: String,
    put: redis::Script,
    remove: redis::Script,
    claim: redis::Script,
}

impl RedisCartStore {
    /// Carts under `prefix`, beside the stock store's keys.
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            base: crate::stock::redis::base_of(prefix),
            put: redis::Script::new(include_str!("lua/put.lua")),
            remove: redis::Script::new(include_str!("lua/remove.lua")),
            claim: redis::Script::new(include_str!("lua/claim.lua")),
        }
    }

    fn key(&self, member: MemberId) -> String {
        format!("{}cart:{member}", self.base)
    }
}

fn ttl_ms() -> i64 {
    CART_TTL.num_milliseconds()
}

#[async_trait]
impl CartStore for RedisCartStore {
    async fn lines(&self, member: MemberId, now: DateTime<Utc>) -> anyhow::Result<Vec<CartLine>> {
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.key(member))
            .query_async(&mut self.conn.clone())
            .await?;
        let at = fields
            .iter()
            .find(|(f, _)| f == "at")
            .and_then(|(_, v)| v.parse::<i64>().ok());
        if at.is_none_or(|at| super::expired(at, now)) {
            return Ok(Vec::new());
        }
        let mut lines: Vec<(u64, CartLine)> = fields
            .iter()
            .filter_map(|(field, value)| {
                let variant = field.strip_prefix("v:")?.parse().ok()?;
                let mut parts = value.split(':');
                let product = parts.next()?.parse().ok()?;
                let quantity = parts.next()?.parse().ok()?;
                let order = parts.next()?.parse().ok()?;
                Some((
                    order,
                    CartLine {
                        product_id: ProductId::from_uuid(product),
                        variant_id: VariantId::from_uuid(variant),
                        quantity,
                    },
                ))
            })
            .collect();
        lines.sort_by_key(|(order, _)| *order);
        Ok(lines.into_iter().map(|(_, line)| line).collect())
    }

    async fn put(
        &self,
        member: MemberId,
        line: CartLine,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Put> {
        let answer: String = self
            .put
            .key(self.key(member))
            .arg(now.timestamp_millis())
            .arg(ttl_ms())
            .arg(line.variant_id.to_string())
            .arg(line.product_id.to_string())
            .arg(line.quantity)
            .arg(MAX_LINES)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(if answer == "full" {
            Put::Full
        } else {
            Put::Done
        })
    }

    fn read_by_hold(&self) -> bool {
        true
    }

    async fn claim(
        &self,
        member: MemberId,
        lines: &[CartLine],
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let mut invocation = self.claim.key(self.key(member));
        invocation.arg(now.timestamp_millis()).arg(ttl_ms());
        for line in lines {
            invocation
                .arg(line.variant_id.to_string())
                .arg(line.product_id.to_string())
                .arg(line.quantity);
        }
        let claimed: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(claimed == 1)
    }

    async fn take_out(
        &self,
        member: MemberId,
        pairs: &[(VariantId, Option<u32>)],
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mut invocation = self.remove.key(self.key(member));
        invocation.arg(now.timestamp_millis()).arg(ttl_ms());
        for (variant, quantity) in pairs {
            invocation
                .arg(variant.to_string())
                .arg(quantity.map(|q| q.to_string()).unwrap_or_default());
        }
        let _removed: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(())
    }
}
