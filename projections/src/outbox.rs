//! The outbox: work the log asks of the world outside, one row per piece of work, done by a
//! worker of the service after the fact and never on the order path.
//!
//! | event | row |
//! |---|---|
//! | `OrderPlaced` | `order_mail/<order>`: the buyer's confirmation e-mail |
//! | `OrderRefunded` | `refund/<refund id>`: pay the refund back through the gateway |
//! | `RefundSettled` | that refund row done |
//!
//! A row is `pending` until its worker finishes it (`done`); a failed attempt moves its
//! `next_attempt_at` on. A refund is done when the log says it was paid (`RefundSettled`), so
//! a rebuild derives it; an e-mail is done only in this table (sending one is not an event),
//! which a rebuild carries over. Instants are microseconds since the Unix epoch.

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::log::RecordedEvent;
use crate::store::{Arg, Pool, Tables, Tx, Writer, keep_existing, to_i64};
use crate::{Projection, Written, write_all};

/// The `outbox` projection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outbox;

/// Its table.
pub const TABLE: &str = "outbox";

/// The kind of a confirmation e-mail row.
pub const ORDER_MAIL: &str = "order_mail";
/// The kind of a refund row.
pub const REFUND: &str = "refund";

/// The refund id an `OrderRefunded` payload names (a 1.0 payload names none: its id is
/// derived from the order and the cause, as the order's fold does).
pub fn refund_id_of(order_id: &str, data: &Value) -> Option<uuid::Uuid> {
    let named = data
        .get("refund_id")
        .and_then(Value::as_str)
        .map_or(Some(uuid::Uuid::nil()), |s| s.parse::<uuid::Uuid>().ok())?;
    let order = openrun_domain::OrderId::from_uuid(order_id.parse().ok()?);
    let cause = serde_json::from_value(data.get("cause")?.clone()).ok()?;
    Some(openrun_domain::order::named_or_derived_refund_id(
        named, order, cause,
    ))
}

#[async_trait]
impl Projection for Outbox {
    fn name(&self) -> &'static str {
        "outbox"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[TABLE]
    }

    async fn create_tables(&self, pool: &Pool, tables: &Tables) -> anyhow::Result<()> {
        let table = tables.name(TABLE);
        let key = if pool.is_sqlite() {
            "TEXT"
        } else {
            "VARCHAR(120) CHARACTER SET ascii COLLATE ascii_bin"
        };
        let short = if pool.is_sqlite() {
            "TEXT"
        } else {
            "VARCHAR(32) CHARACTER SET ascii"
        };
        // (status, next_attempt_at, id) is the index the worker reads due rows by.
        pool.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id {key} NOT NULL PRIMARY KEY,
                kind {short} NOT NULL,
                order_id {key} NOT NULL,
                detail TEXT NOT NULL,
                status {short} NOT NULL,
                position BIGINT NOT NULL,
                recorded_at BIGINT NOT NULL,
                next_attempt_at BIGINT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT,
                done_at BIGINT,
                UNIQUE (status, next_attempt_at, id)
            )"
        ))
        .await?;
        Ok(())
    }

    fn holds_state_outside_the_log(&self) -> bool {
        true
    }

    /// What the worker wrote: which rows are done (the e-mails sent), attempts, backoff and
    /// last errors. Rows only `from` has (events after the rebuild's last batch) are copied
    /// whole, so that no e-mail sent is pending again.
    async fn carry_over(&self, tx: &mut Tx, from: &Tables, into: &Tables) -> anyhow::Result<()> {
        let (from, into) = (from.name(TABLE), into.name(TABLE));
        const COLUMNS: &str = "id, kind, order_id, detail, status, position, recorded_at, \
                               next_attempt_at, attempts, last_error, done_at";
        let keep = keep_existing(matches!(tx, Tx::Sqlite(_)), &format!("{into}.id"));
        tx.execute(&format!(
            "INSERT INTO {into} ({COLUMNS}) SELECT {COLUMNS} FROM {from} WHERE 1 = 1 {keep}"
        ))
        .await?;
        let copy = [
            "status",
            "next_attempt_at",
            "attempts",
            "last_error",
            "done_at",
        ];
        let update = if matches!(tx, Tx::Sqlite(_)) {
            let set: Vec<String> = copy.iter().map(|c| format!("{c} = f.{c}")).collect();
            format!(
                "UPDATE {into} SET {} FROM {from} AS f WHERE {into}.id = f.id AND {into}.status = 'pending'",
                set.join(", ")
            )
        } else {
            let set: Vec<String> = copy.iter().map(|c| format!("i.{c} = f.{c}")).collect();
            format!(
                "UPDATE {into} AS i JOIN {from} AS f ON i.id = f.id SET {} WHERE i.status = 'pending'",
                set.join(", ")
            )
        };
        tx.execute(&update).await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut Tx,
        tables: &Tables,
        event: &RecordedEvent,
    ) -> anyhow::Result<()> {
        write_all(self, tx, tables, std::slice::from_ref(event)).await
    }

    async fn apply_batch(
        &self,
        tx: &mut Tx,
        tables: &Tables,
        events: &[RecordedEvent],
    ) -> anyhow::Result<()> {
        write_all(self, tx, tables, events).await
    }
}

#[async_trait]
impl Written for Outbox {
    async fn write(
        &self,
        w: &mut Writer<'_>,
        tables: &Tables,
        event: &RecordedEvent,
    ) -> anyhow::Result<()> {
        if event.stream_type != "order" {
            return Ok(());
        }
        let table = tables.name(TABLE);
        let data = event.payload.get("data").unwrap_or(&Value::Null);
        let recorded_at = event.recorded_at.timestamp_micros();
        let keep = keep_existing(w.sqlite(), "id");
        let insert = format!(
            "INSERT INTO {table} (id, kind, order_id, detail, status, position, recorded_at, \
             next_attempt_at) VALUES"
        );
        const ROW: &str = "(?, ?, ?, ?, 'pending', ?, ?, 0)";
        let position = to_i64(event.global_position);
        match event.event_type.as_str() {
            "OrderPlaced" => {
                let detail = json!({
                    "buyer_id": data.get("buyer_id"),
                    "lines": data.get("lines"),
                    "total": data.get("total"),
                });
                let args = vec![
                    Arg::S(format!("{ORDER_MAIL}/{}", event.stream_id)),
                    Arg::S(ORDER_MAIL.into()),
                    Arg::S(event.stream_id.clone()),
                    Arg::S(detail.to_string()),
                    Arg::I(position),
                    Arg::I(recorded_at),
                ];
                w.insert(&insert, ROW, &keep, args).await?;
            }
            "OrderRefunded" => {
                // A refund that names no id on a stream that is no order id cannot be paid
                // by id: left to the audit (it reports it unpaid), not a halt of the outbox.
                let Some(refund_id) = refund_id_of(&event.stream_id, data) else {
                    return Ok(());
                };
                let detail = json!({ "refund_id": refund_id, "amount": data.get("amount") });
                let args = vec![
                    Arg::S(format!("{REFUND}/{refund_id}")),
                    Arg::S(REFUND.into()),
                    Arg::S(event.stream_id.clone()),
                    Arg::S(detail.to_string()),
                    Arg::I(position),
                    Arg::I(recorded_at),
                ];
                w.insert(&insert, ROW, &keep, args).await?;
            }
            "RefundSettled" => {
                let Some(refund_id) = data.get("refund_id").and_then(Value::as_str) else {
                    return Ok(());
                };
                let sql = format!(
                    "UPDATE {table} SET status = 'done', done_at = ? WHERE id = ? AND status = 'pending'"
                );
                w.run(
                    &sql,
                    &[Arg::I(recorded_at), Arg::S(format!("{REFUND}/{refund_id}"))],
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
