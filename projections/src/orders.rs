//! Order summaries: one row per placed order with its buyer, status, total and place in the
//! log, so that a member lists their orders newest first without reading the log.
//! Streams closed without an order (declined, voided) have no row.

use async_trait::async_trait;
use serde_json::Value;

use crate::Projection;
use crate::log::RecordedEvent;
use crate::store::{Pool, Tables, Tx, to_i64};

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
        if event.stream_type != "order" {
            return Ok(());
        }
        let table = tables.name(TABLE);
        let data = event.payload.get("data").unwrap_or(&Value::Null);
        if event.event_type == "OrderPlaced" {
            let text = |key: &str| data.get(key).and_then(Value::as_str).unwrap_or_default();
            let total = data.get("total").and_then(Value::as_i64).unwrap_or(0);
            let lines = data
                .get("lines")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let sql = format!(
                "INSERT INTO {table} (order_id, buyer_id, status, total, line_count, placed_at, \
                 position) VALUES (?, ?, 'prepared', ?, ?, ?, ?)"
            );
            let line_count = i64::try_from(lines).unwrap_or(i64::MAX);
            let position = to_i64(event.global_position);
            match tx {
                Tx::MySql(tx) => {
                    sqlx::query(&sql)
                        .bind(&event.stream_id)
                        .bind(text("buyer_id"))
                        .bind(total)
                        .bind(line_count)
                        .bind(text("at"))
                        .bind(position)
                        .execute(&mut **tx)
                        .await?;
                }
                Tx::Sqlite(tx) => {
                    sqlx::query(&sql)
                        .bind(&event.stream_id)
                        .bind(text("buyer_id"))
                        .bind(total)
                        .bind(line_count)
                        .bind(text("at"))
                        .bind(position)
                        .execute(&mut **tx)
                        .await?;
                }
            }
            return Ok(());
        }
        let Some(status) = status_after(&event.event_type) else {
            return Ok(());
        };
        let sql = format!("UPDATE {table} SET status = ? WHERE order_id = ?");
        match tx {
            Tx::MySql(tx) => {
                sqlx::query(&sql)
                    .bind(status)
                    .bind(&event.stream_id)
                    .execute(&mut **tx)
                    .await?;
            }
            Tx::Sqlite(tx) => {
                sqlx::query(&sql)
                    .bind(status)
                    .bind(&event.stream_id)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(())
    }
}
