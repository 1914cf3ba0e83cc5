//! Order summaries: one row per placed order with its buyer, status, total and place in the
//! log, so that a member lists their orders newest first without reading the log.
//! Streams closed without an order (declined, voided) have no row.

use async_trait::async_trait;
use serde_json::Value;

use crate::log::RecordedEvent;
use crate::store::{Arg, Pool, Tables, Tx, Writer, to_i64};
use crate::{Projection, Written, write_all};

/// The status an order event moves an order to, if any (`OrderPlaced`: `prepared`).
pub fn status_after(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "OrderPlaced" => "prepared",
        "OrderShipped" => "in_delivery",
        "OrderDelivered" => "delivered",
        "OrderCancelled" => "cancelled",
        "ReturnRequested" => "return_requested",
        "ReturnPickedUp" => "in_return",
        "ReturnCompleted" => "return_completed",
        _ => return None,
    })
}

/// The `orders` projection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Orders;

/// Its table.
pub const TABLE: &str = "order_summaries";

#[async_trait]
impl Projection for Orders {
    fn name(&self) -> &'static str {
        "orders"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[TABLE]
    }

    async fn create_tables(&self, pool: &Pool, tables: &Tables) -> anyhow::Result<()> {
        let table = tables.name(TABLE);
        let text = if pool.is_sqlite() {
            "TEXT"
        } else {
            "VARCHAR(64) CHARACTER SET ascii"
        };
        // The unique key (buyer, position) is the index a member's listing reads in order.
        pool.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                order_id {text} NOT NULL PRIMARY KEY,
                buyer_id {text} NOT NULL,
                status {text} NOT NULL,
                total BIGINT NOT NULL,
                line_count BIGINT NOT NULL,
                placed_at {text} NOT NULL,
                position BIGINT NOT NULL,
                UNIQUE (buyer_id, position)
            )"
        ))
        .await?;
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
impl Written for Orders {
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
        if event.event_type == "OrderPlaced" {
            let text = |key: &str| {
                data.get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let total = data.get("total").and_then(Value::as_i64).unwrap_or(0);
            let lines = data
                .get("lines")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let head = format!(
                "INSERT INTO {table} (order_id, buyer_id, status, total, line_count, placed_at, \
                 position) VALUES"
            );
            let args = vec![
                Arg::S(event.stream_id.clone()),
                Arg::S(text("buyer_id")),
                Arg::I(total),
                Arg::I(i64::try_from(lines).unwrap_or(i64::MAX)),
                Arg::S(text("at")),
                Arg::I(to_i64(event.global_position)),
            ];
            w.insert(&head, "(?, ?, 'prepared', ?, ?, ?, ?)", "", args)
                .await?;
            return Ok(());
        }
        let Some(status) = status_after(&event.event_type) else {
            return Ok(());
        };
        let sql = format!("UPDATE {table} SET status = ? WHERE order_id = ?");
        w.run(
            &sql,
            &[Arg::S(status.into()), Arg::S(event.stream_id.clone())],
        )
        .await?;
        Ok(())
    }
}
