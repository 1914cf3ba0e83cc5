//! The in-process stock store of the embedded default: the same rules as the Redis scripts,
//! under one lock, on the injected clock. It starts empty (the [`super::StoreState::Missing`]
//! state), so the counter projector builds it from the log at start-up.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use openrun_domain::{MemberId, OrderId, ProductId, VariantId};

use super::{
    Applied, CounterBatch, CounterChange, HoldLine, HoldOutcome, HoldRequest, Levels, RECORD_TTL,
    Recorded, Snapshot, StaleHold, StockStore, StockStoreError, StoreState, UnitsHeld, new_epoch,
    per_product,
};
use crate::clock::SharedClock;

/// Finished records kept before expired ones are swept out.
const PRUNE_EVERY: usize = 4096;

/// The in-process store.
pub struct MemoryStockStore {
    clock: SharedClock,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    meta: Option<Meta>,
    lease_until: Option<DateTime<Utc>>,
    available: HashMap<VariantId, i64>,
    bought: HashMap<(ProductId, MemberId), i64>,
    holds: HashMap<OrderId, Hold>,
    records: HashMap<OrderId, Record>,
    unit_holds: HashMap<uuid::Uuid, UnitHold>,
    finished: usize,
}

/// A downward adjustment's hold.
struct UnitHold {
    epoch: String,
    at: DateTime<Utc>,
    variant: VariantId,
    units: i64,
}

#[derive(Clone)]
enum Meta {
    Rebuilding { epoch: String },
    Ready { epoch: String, watermark: u64 },
}

struct Hold {
    epoch: String,
    at: DateTime<Utc>,
    buyer: MemberId,
    lines: Vec<HoldLine>,
}

struct Record {
    fingerprint: String,
    step: Step,
    expires: DateTime<Utc>,
}

enum Step {
    Held,
    Retry,
    Done(String),
}

impl MemoryStockStore {
    /// An empty store on `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn expiry(now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::from_std(RECORD_TTL).unwrap_or(chrono::Duration::days(1))
}

impl State {
    fn current_epoch(&self) -> Option<&str> {
        match &self.meta {
            Some(Meta::Ready { epoch, .. }) => Some(epoch),
            _ => None,
        }
    }

    /// Gives a hold's units back when it is of the current epoch, and forgets it.
    fn release(&mut self, order_id: OrderId) {
        let Some(hold) = self.holds.remove(&order_id) else {
            return;
        };
        if self.current_epoch() != Some(hold.epoch.as_str()) {
            return;
        }
        for line in &hold.lines {
            *self.available.entry(line.variant_id).or_default() += i64::from(line.quantity);
        }
        for (product, units) in per_product(&hold.lines) {
            *self.bought.entry((product, hold.buyer)).or_default() -= units;
        }
    }

    /// Gives an adjustment's hold back when it is of the current epoch, and forgets it.
    fn release_units(&mut self, hold_id: uuid::Uuid) {
        let Some(hold) = self.unit_holds.remove(&hold_id) else {
            return;
        };
        if self.current_epoch() == Some(hold.epoch.as_str()) {
            *self.available.entry(hold.variant).or_default() += hold.units;
        }
    }

    fn take(&mut self, buyer: MemberId, lines: &[HoldLine], sign: i64) {
        for line in lines {
            *self.available.entry(line.variant_id).or_default() -= sign * i64::from(line.quantity);
        }
        for (product, units) in per_product(lines) {
            *self.bought.entry((product, buyer)).or_default() += sign * units;
        }
    }
}

#[async_trait]
impl StockStore for MemoryStockStore {
    async fn hold(&self, request: &HoldRequest) -> Result<HoldOutcome, StockStoreError> {
        if request.from_cart.is_some() {
            // The order path reads the cart itself for a store that reads none.
            return Err(anyhow::anyhow!("the in-process stock store reads no carts").into());
        }
        let now = self.clock.now();
        let mut state = self.lock();
        if let Some(record) = state
            .records
            .get_mut(&request.order_id)
            .filter(|r| r.expires > now)
        {
            if record.fingerprint != request.fingerprint {
                return Ok(HoldOutcome::KeyReused);
            }
            if let Step::Done(answer) = &record.step {
                return Ok(HoldOutcome::Finished(answer.clone()));
            }
            let retry = matches!(record.step, Step::Retry);
            record.step = Step::Held;
            let Some(hold) = state.holds.get_mut(&request.order_id) else {
                return Ok(HoldOutcome::CheckLog);
            };
            if !retry {
                return Ok(HoldOutcome::InFlight);
            }
            // The hold is fresh again: the sweeps measure its age from this retry.
            hold.at = now;
            return Ok(HoldOutcome::Resumed {
                at: now,
                epoch: hold.epoch.clone(),
                lines: hold.lines.clone(),
            });
        }
        let Some(epoch) = state.current_epoch().map(str::to_owned) else {
            return Ok(HoldOutcome::Rebuilding);
        };
        let wanted = per_product(&request.lines);
        for terms in &request.terms {
            if terms.opens_at.is_some_and(|at| now < at)
                || terms.ends_at.is_some_and(|at| now >= at)
            {
                return Ok(HoldOutcome::NotOnSale {
                    product_id: terms.product_id,
                });
            }
            if let Some(limit) = terms.limit {
                let bought = state
                    .bought
                    .get(&(terms.product_id, request.buyer))
                    .copied()
                    .unwrap_or(0);
                let asked = wanted
                    .iter()
                    .find(|(p, _)| *p == terms.product_id)
                    .map_or(0, |(_, n)| *n);
                if bought + asked > i64::from(limit) {
                    return Ok(HoldOutcome::LimitReached {
                        product_id: terms.product_id,
                        limit,
                        bought: u32::try_from(bought.max(0)).unwrap_or(u32::MAX),
                    });
                }
            }
        }
        let short: Vec<(VariantId, i64)> = request
            .lines
            .iter()
            .map(|l| (l, state.available.get(&l.variant_id).copied().unwrap_or(0)))
            .filter(|(l, left)| *left < i64::from(l.quantity))
            .map(|(l, left)| (l.variant_id, left))
            .collect();
        if !short.is_empty() {
            return Ok(HoldOutcome::SoldOut { short });
        }
        state.take(request.buyer, &request.lines, 1);
        state.holds.insert(
            request.order_id,
            Hold {
                epoch: epoch.clone(),
                at: now,
                buyer: request.buyer,
                lines: request.lines.clone(),
            },
        );
        state.records.insert(
            request.order_id,
            Record {
                fingerprint: request.fingerprint.clone(),
                step: Step::Held,
                expires: expiry(now),
            },
        );
        Ok(HoldOutcome::Held {
            at: now,
            epoch,
            lines: request.lines.clone(),
        })
    }

    async fn record(&self, order_id: OrderId) -> Result<Option<Recorded>, StockStoreError> {
        let now = self.clock.now();
        Ok(self
            .lock()
            .records
            .get(&order_id)
            .filter(|r| r.expires > now)
            .map(|r| Recorded {
                fingerprint: r.fingerprint.clone(),
                answer: match &r.step {
                    Step::Done(answer) => Some(answer.clone()),
                    Step::Held | Step::Retry => None,
                },
            }))
    }

    async fn finish(&self, order_id: OrderId, answer: &str) -> Result<(), StockStoreError> {
        let now = self.clock.now();
        let mut state = self.lock();
        if let Some(record) = state.records.get_mut(&order_id) {
            record.step = Step::Done(answer.to_owned());
            record.expires = expiry(now);
        }
        state.finished += 1;
        if state.finished.is_multiple_of(PRUNE_EVERY) {
            state.records.retain(|_, r| r.expires > now);
        }
        Ok(())
    }

    async fn allow_retry(&self, order_id: OrderId) -> Result<(), StockStoreError> {
        // Only a record in flight whose hold is there: a finished one keeps its answer.
        let mut state = self.lock();
        let held = state.holds.contains_key(&order_id);
        if let Some(record) = state.records.get_mut(&order_id)
            && held
            && matches!(record.step, Step::Held)
        {
            record.step = Step::Retry;
        }
        Ok(())
    }

    async fn forget(&self, order_id: OrderId) -> Result<(), StockStoreError> {
        self.lock().records.remove(&order_id);
        Ok(())
    }

    async fn apply(&self, batch: &CounterBatch) -> Result<Applied, StockStoreError> {
        let mut state = self.lock();
        match &state.meta {
            Some(Meta::Ready { epoch, watermark })
                if *epoch == batch.epoch && *watermark == batch.after => {}
            _ => return Ok(Applied::Stale),
        }
        for change in &batch.changes {
            match change {
                CounterChange::Supply {
                    variant_id,
                    delta,
                    hold,
                } => {
                    if let Some(hold) = hold {
                        state.release_units(*hold);
                    }
                    *state.available.entry(*variant_id).or_default() += delta;
                }
                // Its hold gives back what it counted (of the current epoch only), and the
                // order takes what it sold: a hold of other lines leaves no counter wrong.
                CounterChange::Placed {
                    order_id,
                    buyer,
                    lines,
                } => {
                    state.release(*order_id);
                    state.take(*buyer, lines, 1);
                }
                CounterChange::Closed { order_id } => state.release(*order_id),
                CounterChange::GivenBack { buyer, lines } => state.take(*buyer, lines, -1),
            }
        }
        state.meta = Some(Meta::Ready {
            epoch: batch.epoch.clone(),
            watermark: batch.to,
        });
        Ok(Applied::Done)
    }

    async fn lead(
        &self,
        _owner: &str,
        _lease: std::time::Duration,
    ) -> Result<bool, StockStoreError> {
        // One process owns the store: its projector always leads.
        Ok(true)
    }

    async fn state(&self) -> Result<StoreState, StockStoreError> {
        Ok(match &self.lock().meta {
            None => StoreState::Missing,
            Some(Meta::Rebuilding { epoch }) => StoreState::Rebuilding {
                epoch: epoch.clone(),
            },
            Some(Meta::Ready { epoch, watermark }) => StoreState::Ready {
                epoch: epoch.clone(),
                watermark: *watermark,
            },
        })
    }

    async fn begin_rebuild(
        &self,
        lease: std::time::Duration,
    ) -> Result<Option<String>, StockStoreError> {
        let now = self.clock.now();
        let mut state = self.lock();
        if state.lease_until.is_some_and(|until| until > now) {
            return Ok(None);
        }
        let epoch = new_epoch();
        state.lease_until =
            Some(now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30)));
        state.meta = Some(Meta::Rebuilding {
            epoch: epoch.clone(),
        });
        Ok(Some(epoch))
    }

    async fn extend_rebuild(
        &self,
        epoch: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StockStoreError> {
        let now = self.clock.now();
        let mut state = self.lock();
        if !matches!(&state.meta, Some(Meta::Rebuilding { epoch: e }) if e == epoch) {
            return Ok(false);
        }
        state.lease_until =
            Some(now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30)));
        Ok(true)
    }

    async fn finish_rebuild(
        &self,
        epoch: &str,
        watermark: u64,
        levels: &Levels,
    ) -> Result<bool, StockStoreError> {
        let mut state = self.lock();
        if !matches!(&state.meta, Some(Meta::Rebuilding { epoch: e }) if e == epoch) {
            return Ok(false);
        }
        state.available = levels.available.iter().copied().collect();
        state.bought = levels
            .bought
            .iter()
            .map(|(p, m, n)| ((*p, *m), *n))
            .collect();
        state.meta = Some(Meta::Ready {
            epoch: epoch.to_owned(),
            watermark,
        });
        state.lease_until = None;
        Ok(true)
    }

    async fn stale_holds(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<StaleHold>, StockStoreError> {
        let state = self.lock();
        let mut stale: Vec<StaleHold> = state
            .holds
            .iter()
            .filter(|(_, h)| h.at < before)
            .map(|(order_id, h)| StaleHold {
                order_id: *order_id,
                at: h.at,
            })
            .collect();
        stale.sort_by_key(|h| (h.at, h.order_id.as_uuid()));
        stale.truncate(limit);
        Ok(stale)
    }

    async fn distrust(&self, epoch: &str) -> Result<(), StockStoreError> {
        let mut state = self.lock();
        let settled = state.holds.values().all(|h| h.epoch == epoch)
            && state.unit_holds.values().all(|h| h.epoch == epoch);
        if state.current_epoch() == Some(epoch) && settled {
            state.meta = None;
        }
        Ok(())
    }

    async fn hold_units(
        &self,
        hold_id: uuid::Uuid,
        variant: VariantId,
        units: i64,
    ) -> Result<UnitsHeld, StockStoreError> {
        let now = self.clock.now();
        let mut state = self.lock();
        let Some(epoch) = state.current_epoch().map(str::to_owned) else {
            return Ok(UnitsHeld::Rebuilding);
        };
        if state.unit_holds.contains_key(&hold_id) {
            return Ok(UnitsHeld::AlreadyHeld);
        }
        let left = state.available.get(&variant).copied().unwrap_or(0);
        if left < units {
            return Ok(UnitsHeld::Short { available: left });
        }
        *state.available.entry(variant).or_default() -= units;
        state.unit_holds.insert(
            hold_id,
            UnitHold {
                epoch,
                at: now,
                variant,
                units,
            },
        );
        Ok(UnitsHeld::Held)
    }

    async fn release_units(&self, hold_id: uuid::Uuid) -> Result<(), StockStoreError> {
        self.lock().release_units(hold_id);
        Ok(())
    }

    async fn stale_unit_holds(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<uuid::Uuid>, StockStoreError> {
        let state = self.lock();
        let mut stale: Vec<(DateTime<Utc>, uuid::Uuid)> = state
            .unit_holds
            .iter()
            .filter(|(_, h)| h.at < before)
            .map(|(id, h)| (h.at, *id))
            .collect();
        stale.sort();
        Ok(stale.into_iter().take(limit).map(|(_, id)| id).collect())
    }

    async fn snapshot(&self) -> Result<Option<Snapshot>, StockStoreError> {
        let state = self.lock();
        let Some(Meta::Ready { epoch, watermark }) = &state.meta else {
            return Ok(None);
        };
        let mut held: HashMap<VariantId, i64> = HashMap::new();
        for hold in state.holds.values().filter(|h| h.epoch == *epoch) {
            for line in &hold.lines {
                *held.entry(line.variant_id).or_default() += i64::from(line.quantity);
            }
        }
        for hold in state.unit_holds.values().filter(|h| h.epoch == *epoch) {
            *held.entry(hold.variant).or_default() += hold.units;
        }
        Ok(Some(Snapshot {
            watermark: *watermark,
            available: state.available.iter().map(|(v, n)| (*v, *n)).collect(),
            held: held.into_iter().collect(),
        }))
    }

    async fn release_leftover(
        &self,
        order_id: OrderId,
        position: u64,
    ) -> Result<bool, StockStoreError> {
        let mut state = self.lock();
        match &state.meta {
            Some(Meta::Ready { watermark, .. }) if *watermark >= position => {}
            _ => return Ok(false),
        }
        state.release(order_id);
        Ok(true)
    }

    async fn available(&self, variants: &[VariantId]) -> Result<Vec<i64>, StockStoreError> {
        let state = self.lock();
        Ok(variants
            .iter()
            .map(|v| state.available.get(v).copied().unwrap_or(0))
            .collect())
    }

    async fn now(&self) -> Result<DateTime<Utc>, StockStoreError> {
        Ok(self.clock.now())
    }
}
