//! The stock store on Redis: one Lua script per step (`lua/*.lua`, each with `common.lua`
//! in front), run with EVALSHA on the shared connection manager.
//!
//! # Keys
//! Every key starts with `{prefix}{stock}:`, one hash tag, so that a script touching several
//! products runs on one Redis Cluster slot and stays all-or-nothing:
//! - `meta`: the sentinel, a hash {state (`rebuilding` | `ready`), epoch, watermark}; gone
//!   means the data was lost.
//! - `avail`: units left per variant (hash field = variant id).
//! - `bought`: units held or bought per `product:member`.
//! - `h:{order}`: an order's hold {epoch, at, buyer, lines}; `holds`: the holds by time.
//! - `i:{order}`: the idempotency record {fp, step (`held` | `retry` | `done`), answer}.
//! - `u:{hold}`: a downward adjustment's hold {epoch, at, variant, units}; `uholds`: those
//!   holds by time.
//! - `projector`: the counter projector's lease; `lease`: the rebuild's lease; `next:{epoch}:avail|bought`: a rebuild's counters.
//!
//! Redis must not evict these keys: the store refuses to start unless `maxmemory-policy` is
//! `noeviction`.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use openrun_domain::{OrderId, ProductId, VariantId};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::{
    Applied, CounterBatch, CounterChange, HoldLine, HoldOutcome, HoldRequest, Levels, RECORD_TTL,
    Recorded, Snapshot, StaleHold, StockStore, StockStoreError, StoreState, UnitsHeld, new_epoch,
    per_product,
};
use crate::redis::Keys;

const COMMON: &str = include_str!("lua/common.lua");

/// Fields per HSET of a rebuild's counters.
const REBUILD_CHUNK: usize = 1000;

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{COMMON}\n{body}"))
}

/// The base of every key of the stock store under `prefix` (one Redis Cluster slot); carts
/// live under it too, so that the hold script reads them.
pub fn base_of(prefix: &str) -> String {
    Keys::new(prefix).tagged("stock", "")
}

/// The Redis store.
pub struct RedisStockStore {
    conn: ConnectionManager,
    base: String,
    hold: redis::Script,
    apply: redis::Script,
    begin_rebuild: redis::Script,
    finish_rebuild: redis::Script,
    release_leftover: redis::Script,
    hold_units: redis::Script,
    release_units: redis::Script,
    snapshot: redis::Script,
    distrust: redis::Script,
}

impl RedisStockStore {
    /// The store on an open connection, keys under `prefix`. Fails unless Redis keeps every
    /// key (`maxmemory-policy noeviction`): an evicted counter would sell what is not there.
    pub async fn new(conn: ConnectionManager, prefix: &str) -> anyhow::Result<Self> {
        let policy: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut conn.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot read Redis's maxmemory-policy: {e}"))?;
        if policy.get(1).map(String::as_str) != Some("noeviction") {
            anyhow::bail!(
                "Redis's maxmemory-policy is {:?}; the stock store needs noeviction",
                policy.get(1)
            );
        }
        Ok(Self {
            conn,
            base: base_of(prefix),
            hold: script(include_str!("lua/hold.lua")),
            apply: script(include_str!("lua/apply.lua")),
            begin_rebuild: script(include_str!("lua/begin_rebuild.lua")),
            finish_rebuild: script(include_str!("lua/finish_rebuild.lua")),
            release_leftover: script(include_str!("lua/release_leftover.lua")),
            hold_units: script(include_str!("lua/hold_units.lua")),
            release_units: script(include_str!("lua/release_units.lua")),
            snapshot: script(include_str!("lua/snapshot.lua")),
            distrust: script(include_str!("lua/distrust.lua")),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Members of the sorted set `name` (holds by the time they were taken) taken before
    /// `before`, oldest first, at most `limit`, with their times in milliseconds.
    async fn taken_before(
        &self,
        name: &str,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, f64)>, StockStoreError> {
        Ok(redis::cmd("ZRANGE")
            .arg(self.key(name))
            .arg("-inf")
            .arg(format!("({}", before.timestamp_millis()))
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await
            .map_err(anyhow::Error::from)?)
    }
}

fn millis(at: DateTime<Utc>) -> String {
    at.timestamp_millis().to_string()
}

fn instant(millis: &str) -> anyhow::Result<DateTime<Utc>> {
    let ms: i64 = millis.parse()?;
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| anyhow::anyhow!("not an instant: {ms}"))
}

fn parse<T: std::str::FromStr>(text: Option<&String>) -> anyhow::Result<T> {
    text.and_then(|t| t.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unexpected answer from the stock script: {text:?}"))
}

/// A hold's lines as the scripts store them: `variant:product:quantity;...`.
fn held_lines(text: &str) -> anyhow::Result<Vec<HoldLine>> {
    text.split(';')
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut parts = line.split(':');
            let mut next = || {
                parts
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("a held line {line:?}"))
            };
            let variant = VariantId::from_uuid(next()?.parse()?);
            let product = ProductId::from_uuid(next()?.parse()?);
            Ok(HoldLine {
                product_id: product,
                variant_id: variant,
                quantity: next()?.parse()?,
            })
        })
        .collect()
}

fn push_lines(invocation: &mut redis::ScriptInvocation<'_>, lines: &[HoldLine]) {
    invocation.arg(lines.len());
    for line in lines {
        invocation
            .arg(line.variant_id.to_string())
            .arg(line.product_id.to_string())
            .arg(line.quantity);
    }
}

#[async_trait]
impl StockStore for RedisStockStore {
    async fn hold(&self, request: &HoldRequest) -> Result<HoldOutcome, StockStoreError> {
        let mut invocation = self.hold.key(&self.base);
        invocation
            .arg(request.order_id.to_string())
            .arg(request.buyer.to_string())
            .arg(&request.fingerprint)
            .arg(RECORD_TTL.as_secs());
        push_lines(&mut invocation, &request.lines);
        let asked = per_product(&request.lines);
        invocation.arg(request.terms.len());
        for terms in &request.terms {
            let units = asked
                .iter()
                .find(|(p, _)| *p == terms.product_id)
                .map_or(0, |(_, n)| *n);
            invocation
                .arg(terms.product_id.to_string())
                .arg(terms.opens_at.map(millis).unwrap_or_default())
                .arg(terms.ends_at.map(millis).unwrap_or_default())
                .arg(terms.limit.map(|l| l.to_string()).unwrap_or_default())
                .arg(units);
        }
        invocation
            .arg(
                request
                    .from_cart
                    .map(|now| now.timestamp_millis().to_string())
                    .unwrap_or_default(),
            )
            .arg(crate::cart::CART_TTL.num_milliseconds());
        let answer: Vec<String> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(anyhow::Error::from)?;
        let id = |text: Option<&String>| -> anyhow::Result<uuid::Uuid> { parse(text) };
        Ok(match answer.first().map(String::as_str) {
            Some("held") => HoldOutcome::Held {
                at: instant(answer.get(1).map_or("", String::as_str))?,
                epoch: answer.get(2).cloned().unwrap_or_default(),
                lines: held_lines(answer.get(3).map_or("", String::as_str))?,
            },
            Some("resumed") => HoldOutcome::Resumed {
                at: instant(answer.get(1).map_or("", String::as_str))?,
                epoch: answer.get(2).cloned().unwrap_or_default(),
                lines: held_lines(answer.get(3).map_or("", String::as_str))?,
            },
            Some("not_in_cart") => HoldOutcome::NotInCart {
                variant_id: VariantId::from_uuid(id(answer.get(1))?),
            },
            Some("in_flight") => HoldOutcome::InFlight,
            Some("check_log") => HoldOutcome::CheckLog,
            Some("finished") => HoldOutcome::Finished(answer.get(1).cloned().unwrap_or_default()),
            Some("key_reused") => HoldOutcome::KeyReused,
            Some("rebuilding") => HoldOutcome::Rebuilding,
            Some("not_on_sale") => HoldOutcome::NotOnSale {
                product_id: ProductId::from_uuid(id(answer.get(1))?),
            },
            Some("limit") => HoldOutcome::LimitReached {
                product_id: ProductId::from_uuid(id(answer.get(1))?),
                limit: parse(answer.get(2))?,
                bought: parse::<i64>(answer.get(3))?
                    .max(0)
                    .try_into()
                    .unwrap_or(u32::MAX),
            },
            Some("sold_out") => HoldOutcome::SoldOut {
                short: answer[1..]
                    .chunks(2)
                    .map(|pair| Ok((VariantId::from_uuid(id(pair.first())?), parse(pair.get(1))?)))
                    .collect::<anyhow::Result<_>>()?,
            },
            other => {
                return Err(
                    anyhow::anyhow!("unexpected answer from the hold script: {other:?}").into(),
                );
            }
        })
    }

    async fn record(&self, order_id: OrderId) -> Result<Option<Recorded>, StockStoreError> {
        let (fingerprint, step, answer): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(self.key(&format!("i:{order_id}")))
                .arg("fp")
                .arg("step")
                .arg("answer")
                .query_async(&mut self.conn())
                .await
                .map_err(anyhow::Error::from)?;
        Ok(fingerprint.map(|fingerprint| Recorded {
            fingerprint,
            answer: answer.filter(|_| step.as_deref() == Some("done")),
        }))
    }

    async fn finish(&self, order_id: OrderId, answer: &str) -> Result<(), StockStoreError> {
        // Only an existing record (a flush may have taken it): one without the request's
        // fingerprint would answer nobody.
        let _: i64 = redis::Script::new(
            "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
             redis.call('HSET', KEYS[1], 'step', 'done', 'answer', ARGV[1]) \
             return redis.call('EXPIRE', KEYS[1], ARGV[2])",
        )
        .key(self.key(&format!("i:{order_id}")))
        .arg(answer)
        .arg(RECORD_TTL.as_secs())
        .invoke_async(&mut self.conn())
        .await
        .map_err(anyhow::Error::from)?;
        Ok(())
    }

    async fn allow_retry(&self, order_id: OrderId) -> Result<(), StockStoreError> {
        // Only a record in flight whose hold is there: a finished one keeps its answer, and
        // one that expired stays gone.
        let _: i64 = redis::Script::new(
            "if redis.call('HGET', KEYS[1], 'step') ~= 'held' \
               or redis.call('EXISTS', KEYS[2]) == 0 then return 0 end \
             return redis.call('HSET', KEYS[1], 'step', 'retry')",
        )
        .key(self.key(&format!("i:{order_id}")))
        .key(self.key(&format!("h:{order_id}")))
        .invoke_async(&mut self.conn())
        .await
        .map_err(anyhow::Error::from)?;
        Ok(())
    }

    async fn forget(&self, order_id: OrderId) -> Result<(), StockStoreError> {
        let _: () = self
            .conn()
            .del(self.key(&format!("i:{order_id}")))
            .await
            .map_err(anyhow::Error::from)?;
        Ok(())
    }

    async fn apply(&self, batch: &CounterBatch) -> Result<Applied, StockStoreError> {
        let mut invocation = self.apply.key(&self.base);
        invocation.arg(&batch.epoch).arg(batch.after).arg(batch.to);
        for change in &batch.changes {
            match change {
                CounterChange::Supply {
                    variant_id,
                    delta,
                    hold,
                } => {
                    invocation
                        .arg("S")
                        .arg(variant_id.to_string())
                        .arg(*delta)
                        .arg(hold.map(|h| h.to_string()).unwrap_or_default());
                }
                CounterChange::Placed {
                    order_id,
                    buyer,
                    lines,
                } => {
                    invocation
                        .arg("P")
                        .arg(order_id.to_string())
                        .arg(buyer.to_string());
                    push_lines(&mut invocation, lines);
                }
                CounterChange::Closed { order_id } => {
                    invocation.arg("C").arg(order_id.to_string());
                }
                CounterChange::GivenBack { buyer, lines } => {
                    invocation.arg("G").arg(buyer.to_string());
                    push_lines(&mut invocation, lines);
                }
            }
        }
        let answer: String = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(anyhow::Error::from)?;
        Ok(if answer == "done" {
            Applied::Done
        } else {
            Applied::Stale
        })
    }

    async fn lead(&self, owner: &str, lease: std::time::Duration) -> Result<bool, StockStoreError> {
        let led: i64 = redis::Script::new(
            "local current = redis.call('GET', KEYS[1]) \
             if current and current ~= ARGV[1] then return 0 end \
             redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
             return 1",
        )
        .key(self.key("projector"))
        .arg(owner)
        .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1))
        .invoke_async(&mut self.conn())
        .await
        .map_err(anyhow::Error::from)?;
        Ok(led == 1)
    }

    async fn state(&self) -> Result<StoreState, StockStoreError> {
        let meta: (Option<String>, Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.key("meta"))
            .arg("state")
            .arg("epoch")
            .arg("watermark")
            .query_async(&mut self.conn())
            .await
            .map_err(anyhow::Error::from)?;
        Ok(match meta {
            (Some(state), Some(epoch), Some(watermark)) if state == "ready" => StoreState::Ready {
                epoch,
                watermark: parse(Some(&watermark))?,
            },
            (Some(state), Some(epoch), _) if state == "rebuilding" => {
                StoreState::Rebuilding { epoch }
            }
            _ => StoreState::Missing,
        })
    }

    async fn begin_rebuild(
        &self,
        lease: std::time::Duration,
    ) -> Result<Option<String>, StockStoreError> {
        let epoch = new_epoch();
        let begun: i64 = self
            .begin_rebuild
            .key(&self.base)
            .arg(&epoch)
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async(&mut self.conn())
            .await
            .map_err(anyhow::Error::from)?;
        Ok((begun == 1).then_some(epoch))
    }

    async fn extend_rebuild(
        &self,
        epoch: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StockStoreError> {
        let extended: i64 = redis::Script::new(
            "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end \
             return redis.call('PEXPIRE', KEYS[1], ARGV[2])",
        )
        .key(self.key("lease"))
        .arg(epoch)
        .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1))
        .invoke_async(&mut self.conn())
        .await
        .map_err(anyhow::Error::from)?;
        Ok(extended == 1)
    }

    async fn finish_rebuild(
        &self,
        epoch: &str,
        watermark: u64,
        levels: &Levels,
    ) -> Result<bool, StockStoreError> {
        let avail = self.key(&format!("next:{epoch}:avail"));
        let bought = self.key(&format!("next:{epoch}:bought"));
        for chunk in levels.available.chunks(REBUILD_CHUNK) {
            let fields: Vec<(String, i64)> =
                chunk.iter().map(|(v, n)| (v.to_string(), *n)).collect();
            let _: () = self
                .conn()
                .hset_multiple(&avail, &fields)
                .await
                .map_err(anyhow::Error::from)?;
        }
        for chunk in levels.bought.chunks(REBUILD_CHUNK) {
            let fields: Vec<(String, i64)> = chunk
                .iter()
                .map(|(p, m, n)| (format!("{p}:{m}"), *n))
                .collect();
            let _: () = self
                .conn()
                .hset_multiple(&bought, &fields)
                .await
                .map_err(anyhow::Error::from)?;
        }
        let done: i64 = self
            .finish_rebuild
            .key(&self.base)
            .arg(epoch)
            .arg(watermark)
            .invoke_async(&mut self.conn())
            .await
            .map_err(anyhow::Error::from)?;
        if done != 1 {
            let _: () = self
                .conn()
                .del(&[avail, bought])
                .await
                .map_err(anyhow::Error::from)?;
        }
        Ok(done == 1)
    }

    async fn stale_holds(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<StaleHold>, StockStoreError> {
        self.taken_before("holds", before, limit)
            .await?
            .into_iter()
            .map(|(order, at)| {
                Ok(StaleHold {
                    order_id: OrderId::from_uuid(order.parse().map_err(anyhow::Error::from)?),
                    #[allow(clippy::cast_possible_truncation, reason = "milliseconds since 1970")]
                    at: instant(&(at as i64).to_string())?,
                })
            })
            .collect()
    }

    async fn release_leftover(
        &self,
        order_id: OrderId,
        position: u64,
    ) -> Result<bool, StockStoreError> {
        let released: i64 = self
            .release_leftover
            .key(&self.base)
            .arg(order_id.to_string())
            .arg(position)
            .invoke_async(&mut self.conn())
            .await
            .map_err(anyhow::Error::from)?;
        Ok(released == 1)
    }

    async fn distrust(&self, epoch: &str) -> Result<(), StockStoreError> {
        let _: i64 = self
            .distrust
            .key(&self.base)
            .arg(epoch)
            .invoke_async(&mut self.conn())
            .await
            .map_err(anyhow::Error::from)?;
        Ok(())
    }

    async fn hold_units(
        &self,
        hold_id: uuid::Uuid,
        variant: VariantId,
        units: i64,
    ) -> Result<UnitsHeld, StockStoreError> {
        let answer: Vec<String> = self
            .hold_units
            .key(&self.base)
            .arg(hold_id.to_string())
            .arg(variant.to_string())
            .arg(units)
            .invoke_async(&mut self.conn())
            .await
            .map_err(anyhow::Error::from)?;
        Ok(match answer.first().map(String::as_str) {
            Some("held") => UnitsHeld::Held,
            Some("already_held") => UnitsHeld::AlreadyHeld,
            Some("short") => UnitsHeld::Short {
                available: parse(answer.get(1))?,
            },
            Some("rebuilding") => UnitsHeld::Rebuilding,
            other => {
                return Err(anyhow::anyhow!(
                    "unexpected answer from the adjustment hold script: {other:?}"
                )
                .into());
            }
        })
    }

    async fn release_units(&self, hold_id: uuid::Uuid) -> Result<(), StockStoreError> {
        let _: i64 = self
            .release_units
            .key(&self.base)
            .arg(hold_id.to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(anyhow::Error::from)?;
        Ok(())
    }

    async fn stale_unit_holds(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<uuid::Uuid>, StockStoreError> {
        self.taken_before("uholds", before, limit)
            .await?
            .iter()
            .map(|(id, _)| Ok(id.parse().map_err(anyhow::Error::from)?))
            .collect()
    }

    async fn snapshot(&self) -> Result<Option<Snapshot>, StockStoreError> {
        let (ready, watermark, available, held): (i64, u64, Vec<String>, Vec<String>) = self
            .snapshot
            .key(&self.base)
            .invoke_async(&mut self.conn())
            .await
            .map_err(anyhow::Error::from)?;
        if ready == 0 {
            return Ok(None);
        }
        let pairs = |flat: Vec<String>| -> anyhow::Result<Vec<(VariantId, i64)>> {
            flat.chunks(2)
                .map(|pair| {
                    Ok((
                        VariantId::from_uuid(parse(pair.first())?),
                        parse(pair.get(1))?,
                    ))
                })
                .collect()
        };
        Ok(Some(Snapshot {
            watermark,
            available: pairs(available)?,
            held: pairs(held)?,
        }))
    }

    async fn available(&self, variants: &[VariantId]) -> Result<Vec<i64>, StockStoreError> {
        if variants.is_empty() {
            return Ok(Vec::new());
        }
        let mut command = redis::cmd("HMGET");
        command.arg(self.key("avail"));
        for variant in variants {
            command.arg(variant.to_string());
        }
        let values: Vec<Option<i64>> = command
            .query_async(&mut self.conn())
            .await
            .map_err(anyhow::Error::from)?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }

    async fn now(&self) -> Result<DateTime<Utc>, StockStoreError> {
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut self.conn())
            .await
            .map_err(anyhow::Error::from)?;
        Ok(Utc
            .timestamp_opt(secs, u32::try_from(micros * 1000).unwrap_or(0))
            .single()
            .unwrap_or_default())
    }
}
