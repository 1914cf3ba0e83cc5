//! Operator commands that read the log: `replay` (a stream as a timeline), `audit` (the
//! invariants re-derived from the log alone) and projection `status` / `rebuild`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use openrun_projections::rebuild;
use serde_json::Value;

use crate::db::{Database, with_pool};
use crate::eventstore::{EventStore, LogSource, RecordedEvent, StreamRef};
use crate::projections;

/// Events read per round trip.
const PAGE: usize = 1000;
/// Longest summary of an event's fields in the timeline.
const SUMMARY_CHARS: usize = 120;

/// Every event of `stream`, in version order.
pub async fn stream_events(
    events: &dyn EventStore,
    stream: &StreamRef,
) -> anyhow::Result<Vec<RecordedEvent>> {
    let mut all: Vec<RecordedEvent> = Vec::new();
    loop {
        let from = all.last().map_or(1, |e| e.version + 1);
        let page = events.read_stream(stream, from, PAGE).await?;
        let done = page.len() < PAGE;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

/// Writes `stream` as a timeline, one line per event: time, version, event, actor, key fields.
pub fn write_timeline(
    out: &mut impl Write,
    stream: &StreamRef,
    events: &[RecordedEvent],
) -> std::io::Result<()> {
    writeln!(out, "{stream}  ({} events)", events.len())?;
    for e in events {
        writeln!(
            out,
            "{}  v{:<3} {:<32} {:<44} {}",
            e.recorded_at.format("%Y-%m-%d %H:%M:%S%.3fZ"),
            e.version,
            format!("{} {}", e.event_type, e.event_version),
            e.metadata
                .actor
                .as_deref()
                .unwrap_or("-")
                .escape_debug()
                .to_string(),
            summary(&e.payload, &e.stream_id),
        )?;
    }
    Ok(())
}

/// The scalar fields of an event's data as `key=value`, arrays as their length. Left out: the
/// instant `at` (the line starts with the time), the stream's own id, empty texts, the
/// request fingerprint, and sealed or personal fields (anything about an address).
fn summary(payload: &Value, stream_id: &str) -> String {
    let data = payload.get("data").unwrap_or(payload);
    let Some(fields) = data.as_object() else {
        return String::new();
    };
    let mut out = String::new();
    for (key, value) in fields {
        // An opaque request fingerprint and empty texts tell an operator nothing.
        if key == "at"
            || key == "fingerprint"
            || key.contains("address")
            || value
                .as_str()
                .is_some_and(|v| v.is_empty() || v == stream_id)
        {
            continue;
        }
        let shown = match value {
            // Escaped: a text a client wrote (a description, a reason) must not move the
            // cursor, colour the terminal or forge a line of the timeline.
            Value::String(s) => s.escape_debug().to_string(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(items) => format!("[{}]", items.len()),
            Value::Object(_) | Value::Null => continue,
        };
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&format!("{key}={shown}"));
    }
    if out.chars().count() > SUMMARY_CHARS {
        out = out.chars().take(SUMMARY_CHARS - 1).collect::<String>() + "…";
    }
    out
}

/// One check of the audit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// The violations found; empty when the check passed.
    pub violations: Vec<String>,
}

/// Re-derives the invariants from the log and the payment ledger, and checks the stock
/// store's counters against the log when one is given. A refund not paid back within
/// `refund_within` of being recorded is a violation.
pub async fn audit(
    db: &Database,
    events: &dyn EventStore,
    stock: Option<&dyn crate::stock::StockStore>,
    refund_within: Duration,
) -> anyhow::Result<Vec<Check>> {
    // Checkpoints first, then the head: a projection that keeps up with live traffic is
    // always at or behind a head read after its checkpoint.
    let statuses = projections::status(db, events).await?;
    let head = events.head_position().await?;
    let mut checks = vec![
        Check {
            name: "global positions are contiguous from 1",
            violations: positions(db).await?,
        },
        Check {
            name: "stream versions are contiguous from 1",
            violations: versions(db).await?,
        },
    ];
    let mut behind = Vec::new();
    for status in statuses {
        if status.checkpoint > head {
            behind.push(format!(
                "{} is at {} past the head {head}",
                status.name, status.checkpoint
            ));
        }
    }
    checks.push(Check {
        name: "every projection checkpoint is at or behind the head",
        violations: behind,
    });
    checks.push(Check {
        name: "every due scheduled transition has fired",
        violations: overdue(db).await?,
    });
    let sales = Sales::fold(events, head).await?;
    checks.push(Check {
        name: "no variant sold beyond its supply at any point of the log",
        violations: sales.oversold.clone(),
    });
    checks.push(Check {
        name: "the guarded units counters equal the log",
        violations: sales.counters(events).await?,
    });
    checks.push(Check {
        name: "every charge belongs to a placed order or is refunded, and no refund is more than its order's",
        violations: sales.charges(db).await?,
    });
    checks.push(Check {
        name: "every refund is paid back once, in full, within the bound",
        violations: sales.refunds(db, refund_within).await?,
    });
    checks.push(Check {
        name: "stock is given back exactly once per cancel or completed return, every unit of the order",
        violations: sales.given_back.clone(),
    });
    if let Some(stock) = stock {
        checks.push(Check {
            name: "the stock store's counters equal the log, with the holds in flight",
            violations: stock_counters(events, stock).await?,
        });
    }
    Ok(checks)
}

/// The stock store's units left plus what its holds take, per variant, against the log
/// folded up to the store's watermark (read with its counters in one step).
async fn stock_counters(
    events: &dyn EventStore,
    stock: &dyn crate::stock::StockStore,
) -> anyhow::Result<Vec<String>> {
    let Some(snapshot) = stock.snapshot().await? else {
        return Ok(vec![
            "the stock store has no counters now (lost, or being rebuilt from the log)".into(),
        ]);
    };
    let sales = Sales::fold(events, snapshot.watermark).await?;
    let mut stored: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for (variant, units) in snapshot.available.iter().chain(&snapshot.held) {
        *stored.entry(variant.to_string()).or_default() += units;
    }
    let mut variants: Vec<&String> = stored.keys().chain(sales.units.keys()).collect();
    variants.sort();
    variants.dedup();
    let mut violations = Vec::new();
    for variant in variants {
        let counted = stored.get(variant).copied().unwrap_or(0);
        let folded = sales.units.get(variant).copied().unwrap_or(0);
        if counted != folded && violations.len() < 20 {
            violations.push(format!(
                "variant {variant}: the store has {counted} left or held, the log up to {} says {folded}",
                snapshot.watermark
            ));
        }
    }
    Ok(violations)
}

/// What the log says of stock and orders, folded in position order up to a head.
#[derive(Default)]
struct Sales {
    /// Units left to sell per variant: supply, less units sold, plus units given back.
    units: std::collections::HashMap<String, i64>,
    /// Each moment a variant went below zero.
    oversold: Vec<String>,
    /// Orders placed.
    placed: std::collections::HashSet<String>,
    /// Order streams closed without an order.
    closed: std::collections::HashSet<String>,
    /// Refunds recorded per order (owed, paid back or not).
    refunded: std::collections::HashMap<String, i64>,
    /// Refunds paid back per order, as the log records them settled.
    settled: std::collections::HashMap<String, i64>,
    /// Every refund the log records, by id.
    refunds: std::collections::HashMap<uuid::Uuid, RefundFacts>,
    /// Units each placed order took, until they are given back (then removed).
    taken: std::collections::HashMap<String, u64>,
    /// Orders whose units were given back.
    returned: std::collections::HashSet<String>,
    /// Units given back twice, or other than the order took.
    given_back: Vec<String>,
    /// Settlements of refunds the log never recorded.
    stray: Vec<String>,
}

/// What the log says of one refund.
struct RefundFacts {
    order: String,
    amount: i64,
    /// When the log recorded it (the log's clock, not the deciding service's).
    at: chrono::DateTime<chrono::Utc>,
    /// Each settlement recorded: its amount.
    settlements: Vec<i64>,
}

/// A charge younger than this may belong to an order being placed now.
const CHARGE_IN_FLIGHT_SECS: i64 = 300;

impl Sales {
    async fn fold(events: &dyn EventStore, head: u64) -> anyhow::Result<Self> {
        use openrun_domain::order::OrderEvent;
        use openrun_domain::stock::StockEvent;
        let upcasters = openrun_domain::upcasters();
        let mut sales = Self::default();
        let mut after = 0;
        while after < head {
            let page = events.read_all_bounded(after, PAGE, 8 << 20).await?;
            let Some(last) = page.last().map(|e| e.global_position) else {
                break;
            };
            after = last;
            for recorded in page.into_iter().take_while(|e| e.global_position <= head) {
                let (position, id) = (recorded.global_position, recorded.stream_id.clone());
                let recorded_at = recorded.recorded_at;
                match recorded.stream_type.as_str() {
                    "stock" => {
                        let delta = match decode::<StockEvent>(&upcasters, recorded)? {
                            StockEvent::StockAdded { quantity, .. } => quantity,
                            StockEvent::StockAdjusted { delta, .. } => delta,
                        };
                        sales.units_moved(&id, delta, position);
                    }
                    "order" => match decode::<OrderEvent>(&upcasters, recorded)? {
                        OrderEvent::OrderPlaced { lines, .. } => {
                            let mut units = 0;
                            for line in lines {
                                let variant = line.variant_id.to_string();
                                sales.units_moved(&variant, -i64::from(line.quantity), position);
                                units += u64::from(line.quantity);
                            }
                            sales.taken.insert(id.clone(), units);
                            sales.placed.insert(id);
                        }
                        OrderEvent::OrderCancelled {
                            released: lines, ..
                        }
                        | OrderEvent::ReturnCompleted {
                            restocked: lines, ..
                        } => {
                            let mut units = 0;
                            for line in lines {
                                let variant = line.variant_id.to_string();
                                sales.units_moved(&variant, i64::from(line.quantity), position);
                                units += u64::from(line.quantity);
                            }
                            sales.units_given_back(&id, units, position);
                        }
                        OrderEvent::OrderDeclined { .. } | OrderEvent::OrderVoided { .. } => {
                            sales.closed.insert(id);
                        }
                        OrderEvent::OrderRefunded {
                            refund_id,
                            cause,
                            amount,
                            ..
                        } => {
                            let refund_id = match id.parse() {
                                Ok(order) if refund_id.is_nil() => {
                                    openrun_domain::order::refund_id(
                                        openrun_domain::OrderId::from_uuid(order),
                                        cause,
                                    )
                                }
                                _ => refund_id,
                            };
                            *sales.refunded.entry(id.clone()).or_default() += amount.minor();
                            sales.refunds.insert(
                                refund_id,
                                RefundFacts {
                                    order: id,
                                    amount: amount.minor(),
                                    at: recorded_at,
                                    settlements: Vec::new(),
                                },
                            );
                        }
                        OrderEvent::RefundSettled {
                            refund_id, amount, ..
                        } => {
                            *sales.settled.entry(id.clone()).or_default() += amount.minor();
                            match sales.refunds.get_mut(&refund_id) {
                                Some(facts) => facts.settlements.push(amount.minor()),
                                None => sales.stray.push(format!(
                                    "order {id}: refund {refund_id} settled but never recorded"
                                )),
                            }
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Ok(sales)
    }

    fn units_given_back(&mut self, order: &str, units: u64, position: u64) {
        let problem = if !self.returned.insert(order.to_owned()) {
            Some(format!(
                "order {order} gave its units back again at position {position}"
            ))
        } else {
            match self.taken.remove(order) {
                Some(taken) if taken == units => None,
                Some(taken) => Some(format!(
                    "order {order} took {taken} units and gave {units} back at position {position}"
                )),
                None => Some(format!(
                    "order {order} gave {units} units back at position {position} but was never placed"
                )),
            }
        };
        if let Some(problem) = problem
            && self.given_back.len() < 20
        {
            self.given_back.push(problem);
        }
    }

    /// Every refund the log records against its settlements and the gateway's ledger: paid
    /// back within `within` of being recorded, settled once and in full, and the ledger
    /// holding one refund per order whose amount the log settled.
    async fn refunds(&self, db: &Database, within: Duration) -> anyhow::Result<Vec<String>> {
        let now = chrono::Utc::now();
        let within = chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
        let mut violations = Vec::new();
        let mut push = |v: String| {
            if violations.len() < 20 {
                violations.push(v);
            }
        };
        for stray in &self.stray {
            push(stray.clone());
        }
        let mut ids: Vec<&uuid::Uuid> = self.refunds.keys().collect();
        ids.sort();
        for id in ids {
            let facts = &self.refunds[id];
            match facts.settlements.as_slice() {
                [] if now - facts.at > within => push(format!(
                    "refund {id} of order {} ({}) recorded at {} is not paid back",
                    facts.order,
                    facts.amount,
                    facts.at.to_rfc3339()
                )),
                [] => {}
                [paid] if *paid == facts.amount => {}
                [paid] => push(format!(
                    "refund {id} of order {}: {paid} paid back of {} owed",
                    facts.order, facts.amount
                )),
                many => push(format!(
                    "refund {id} of order {} is settled {} times",
                    facts.order,
                    many.len()
                )),
            }
        }
        let sql = "SELECT order_id, CAST(COUNT(*) AS SIGNED), CAST(SUM(amount) AS SIGNED) \
                   FROM sandbox_refunds GROUP BY order_id HAVING COUNT(*) > 1 LIMIT 20";
        let twice: Vec<(String, i64, i64)> = match db {
            Database::MySql(pool) => sqlx::query_as(sql).fetch_all(pool).await?,
            Database::Sqlite(pool) => {
                sqlx::query_as(&sql.replace("AS SIGNED", "AS INTEGER"))
                    .fetch_all(pool)
                    .await?
            }
        };
        for (order, count, amount) in twice {
            push(format!(
                "order {order} was refunded {count} times by the gateway ({amount} in all)"
            ));
        }
        Ok(violations)
    }

    fn units_moved(&mut self, variant: &str, delta: i64, position: u64) {
        let units = self.units.entry(variant.to_owned()).or_default();
        *units += delta;
        if *units < 0 && self.oversold.len() < 20 {
            self.oversold.push(format!(
                "variant {variant} is {} units short at position {position}",
                -*units
            ));
        }
    }

    /// The log's guarded counters against the fold.
    async fn counters(&self, events: &dyn EventStore) -> anyhow::Result<Vec<String>> {
        let names: Vec<String> = self
            .units
            .keys()
            .map(crate::commands::units_counter)
            .collect();
        let mut violations = Vec::new();
        for chunk in names.chunks(256) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let stored = events.counters(&refs).await?;
            for name in chunk {
                let variant = name.trim_start_matches("stock/");
                let folded = self.units.get(variant).copied().unwrap_or(0);
                let counted = stored.get(name).copied().unwrap_or(0);
                if folded != counted && violations.len() < 20 {
                    violations.push(format!("{name} is {counted}, the log says {folded}"));
                }
            }
        }
        Ok(violations)
    }

    /// The payment ledger against the fold: a charge with no placed order is refunded in
    /// full (once it is no longer in flight), a placed order's charge is refunded only as
    /// far as its stream records refunds.
    async fn charges(&self, db: &Database) -> anyhow::Result<Vec<String>> {
        let sql = "SELECT order_id, amount, refunded, created_at FROM sandbox_charges \
                   WHERE status = 'charged'";
        let rows: Vec<(String, i64, i64, chrono::DateTime<chrono::Utc>)> =
            with_pool!(db, pool => sqlx::query_as(sql).fetch_all(pool).await?);
        let in_flight = chrono::Utc::now() - chrono::Duration::seconds(CHARGE_IN_FLIGHT_SECS);
        let mut violations = Vec::new();
        for (order, amount, refunded, at) in rows {
            let problem = if refunded > amount {
                Some(format!(
                    "order {order}: refunded {refunded} of a charge of {amount}"
                ))
            } else if self.placed.contains(&order) {
                // Between the log's settlement (paid back for sure) and what it owes: a refund
                // the gateway paid a moment before its settlement was appended is in between.
                let owed = self.refunded.get(&order).copied().unwrap_or(0);
                let settled = self.settled.get(&order).copied().unwrap_or(0);
                (refunded < settled || refunded > owed).then(|| {
                    format!(
                        "order {order}: the gateway refunded {refunded}, its stream owes {owed} and records {settled} paid back"
                    )
                })
            } else if refunded != amount && (self.closed.contains(&order) || at < in_flight) {
                Some(format!(
                    "order {order} was never placed but {} of its charge of {amount} is kept",
                    amount - refunded
                ))
            } else {
                None
            };
            if let Some(problem) = problem
                && violations.len() < 20
            {
                violations.push(problem);
            }
        }
        Ok(violations)
    }
}

/// One recorded event through the domain's upcasters.
fn decode<E: serde::de::DeserializeOwned>(
    upcasters: &[Box<dyn cqrs_es::persist::EventUpcaster>],
    recorded: RecordedEvent,
) -> anyhow::Result<E> {
    let position = recorded.global_position;
    let mut event = cqrs_es::persist::SerializedEvent {
        aggregate_id: recorded.stream_id,
        sequence: 0,
        aggregate_type: recorded.stream_type,
        event_type: recorded.event_type,
        event_version: recorded.event_version,
        payload: recorded.payload,
        metadata: Value::Null,
    };
    for upcaster in upcasters {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            event = upcaster.upcast(event);
        }
    }
    serde_json::from_value(event.payload)
        .with_context(|| format!("the event at position {position} does not fold"))
}

async fn positions(db: &Database) -> anyhow::Result<Vec<String>> {
    const SQL: &str = "SELECT COUNT(*), CAST(COALESCE(MIN(global_position), 1) AS SIGNED), \
                       CAST(COALESCE(MAX(global_position), 0) AS SIGNED) FROM events";
    let (count, min, max): (i64, i64, i64) = match db {
        Database::MySql(pool) => sqlx::query_as(SQL).fetch_one(pool).await?,
        Database::Sqlite(pool) => {
            sqlx::query_as(&SQL.replace("AS SIGNED", "AS INTEGER"))
                .fetch_one(pool)
                .await?
        }
    };
    Ok(if count == max && (count == 0 || min == 1) {
        vec![]
    } else {
        vec![format!("{count} events span positions {min}..={max}")]
    })
}

async fn versions(db: &Database) -> anyhow::Result<Vec<String>> {
    const SQL: &str = "SELECT stream_type, stream_id, CAST(COUNT(*) AS SIGNED), CAST(MAX(version) AS SIGNED) \
                       FROM events GROUP BY stream_type, stream_id \
                       HAVING COUNT(*) <> MAX(version) OR MIN(version) <> 1 LIMIT 20";
    let rows: Vec<(Vec<u8>, Vec<u8>, i64, i64)> = match db {
        Database::MySql(pool) => sqlx::query_as(SQL).fetch_all(pool).await?,
        Database::Sqlite(pool) => {
            let sql = SQL.replace("AS SIGNED", "AS INTEGER").replace(
                "stream_type, stream_id,",
                "CAST(stream_type AS BLOB), CAST(stream_id AS BLOB),",
            );
            sqlx::query_as(&sql).fetch_all(pool).await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(t, id, count, max)| {
            format!(
                "{}/{} has {count} events up to version {max}",
                String::from_utf8_lossy(&t),
                String::from_utf8_lossy(&id)
            )
        })
        .collect())
}

/// Scheduled transitions more than [`OVERDUE_GRACE_SECS`] past due and still not fired: rows
/// still pending, and claims that expired that long ago (their process died and no other
/// took them over). A row a live process is firing now is not overdue.
async fn overdue(db: &Database) -> anyhow::Result<Vec<String>> {
    let sql = format!(
        "SELECT CAST(id AS CHAR), due_at, attempts, last_error FROM {} \
         WHERE due_at < ? AND (status = 'pending' OR (status = 'claimed' AND next_attempt_at < ?)) \
         ORDER BY due_at LIMIT 20",
        openrun_projections::schedule::TABLE
    );
    // The database's clock, as the scheduler's claims and their expiry use it.
    let cutoff =
        openrun_projections::store::database_now(db).await? - OVERDUE_GRACE_SECS * 1_000_000;
    let rows: Vec<(String, i64, i32, Option<String>)> = with_pool!(db, pool => {
        sqlx::query_as(&sql).bind(cutoff).bind(cutoff).fetch_all(pool).await?
    });
    Ok(rows
        .into_iter()
        .map(|(id, due, attempts, error)| {
            let due = chrono::DateTime::from_timestamp_micros(due)
                .map_or_else(|| due.to_string(), |d| d.to_rfc3339());
            format!(
                "{id} was due at {due}; {attempts} attempts; last error: {}",
                error.as_deref().unwrap_or("-")
            )
        })
        .collect())
}

/// How late a transition may be before the audit calls it a violation.
const OVERDUE_GRACE_SECS: i64 = 60;

/// Writes the audit report; true when every check passed.
pub fn write_report(out: &mut impl Write, checks: &[Check]) -> std::io::Result<bool> {
    for check in checks {
        let verdict = if check.violations.is_empty() {
            "ok  "
        } else {
            "FAIL"
        };
        writeln!(out, "{verdict} {}", check.name)?;
        for violation in &check.violations {
            writeln!(out, "       {violation}")?;
        }
    }
    Ok(checks.iter().all(|c| c.violations.is_empty()))
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy)]
pub struct Rebuilt {
    /// The position the rebuilt projection is at.
    pub position: u64,
    /// How long the replay and swap took.
    pub elapsed: Duration,
}

/// Rebuilds the projection `name` from zero with a progress bar, and swaps it in.
pub async fn rebuild(
    db: &Database,
    events: Arc<dyn EventStore>,
    name: &str,
) -> anyhow::Result<Rebuilt> {
    let Some(projection) = projections::find(name) else {
        let known: Vec<&str> = projections::registry().iter().map(|p| p.name()).collect();
        bail!("no projection called {name:?}; known: {}", known.join(", "));
    };
    let head = events.head_position().await?;
    let bar = ProgressBar::new(head).with_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:40}] {pos}/{len} events, {per_sec}, eta {eta}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    bar.set_prefix(name.to_owned());
    openrun_projections::runner::install(db, projection.as_ref()).await?;
    let owner = format!("rebuild-{}", uuid::Uuid::now_v7().simple());
    let source = LogSource(events);
    let started = std::time::Instant::now();
    let progress = |at: u64, head: u64| {
        bar.set_length(head);
        bar.set_position(at);
    };
    let position = rebuild::rebuild(
        db,
        &source,
        projection,
        &owner,
        Duration::from_secs(5),
        &progress,
    )
    .await?;
    bar.finish_and_clear();
    Ok(Rebuilt {
        position,
        elapsed: started.elapsed(),
    })
}
