//! Seller order views: one row per order and product, under the product's seller, so that a
//! seller lists the orders of their own products (filtered by product and status, newest
//! first) without reading the log and without the buyer's personal data, which never enters
//! this table.
//!
//! | event | rows |
//! |---|---|
//! | `ProductRegistered` | `seller_products`: the product's seller |
//! | `OrderPlaced` | one `seller_orders` row per product of the order: units, amount, `prepared` |
//! | `OrderShipped` ... `ReturnCompleted` | every row of the order takes the new status |

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use crate::log::RecordedEvent;
use crate::store::{Arg, Pool, Tables, Tx, Writer, keep_existing, to_i64};
use crate::{Projection, Written, write_all};

/// The `seller_orders` projection.
#[derive(Debug, Default, Clone, Copy)]
pub struct SellerOrders;

/// The rows sellers read.
pub const TABLE: &str = "seller_orders";
/// Each product's seller.
pub const PRODUCTS_TABLE: &str = "seller_products";

#[async_trait]
impl Projection for SellerOrders {
    fn name(&self) -> &'static str {
        "seller_orders"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[PRODUCTS_TABLE, TABLE]
    }

    async fn create_tables(&self, pool: &Pool, tables: &Tables) -> anyhow::Result<()> {
        let (orders, products) = (tables.name(TABLE), tables.name(PRODUCTS_TABLE));
        let text = if pool.is_sqlite() {
            "TEXT"
        } else {
            "VARCHAR(64) CHARACTER SET ascii"
        };
        pool.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {products} (
                product_id {text} NOT NULL PRIMARY KEY,
                seller_id {text} NOT NULL
            )"
        ))
        .await?;
        // (seller, position, product) is the index a seller's listing reads newest first.
        pool.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {orders} (
                order_id {text} NOT NULL,
                product_id {text} NOT NULL,
                seller_id {text} NOT NULL,
                status {text} NOT NULL,
                quantity BIGINT NOT NULL,
                amount BIGINT NOT NULL,
                placed_at {text} NOT NULL,
                position BIGINT NOT NULL,
                PRIMARY KEY (order_id, product_id),
                UNIQUE (seller_id, position, product_id)
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
impl Written for SellerOrders {
    async fn write(
        &self,
        w: &mut Writer<'_>,
        tables: &Tables,
        event: &RecordedEvent,
    ) -> anyhow::Result<()> {
        let (orders, products) = (tables.name(TABLE), tables.name(PRODUCTS_TABLE));
        let data = event.payload.get("data").unwrap_or(&Value::Null);
        let text = |key: &str| {
            data.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match (event.stream_type.as_str(), event.event_type.as_str()) {
            ("product", "ProductRegistered") => {
                let keep = keep_existing(w.sqlite(), "seller_id");
                let head = format!("INSERT INTO {products} (product_id, seller_id) VALUES");
                let args = vec![Arg::S(event.stream_id.clone()), Arg::S(text("seller_id"))];
                w.insert(&head, "(?, ?)", &keep, args).await?;
                // A look-up of this batch that found no such product is out of date now.
                w.known.remove(&event.stream_id);
            }
            ("order", "OrderPlaced") => {
                // Units and amount per product, in the order's line order.
                let mut per_product: BTreeMap<String, (i64, i64)> = BTreeMap::new();
                for line in data
                    .get("lines")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let product = line
                        .get("product_id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let entry = per_product.entry(product).or_default();
                    entry.0 += line.get("quantity").and_then(Value::as_i64).unwrap_or(0);
                    entry.1 += line.get("line_total").and_then(Value::as_i64).unwrap_or(0);
                }
                let keep = keep_existing(w.sqlite(), "seller_id");
                let head = format!(
                    "INSERT INTO {orders} (order_id, product_id, seller_id, status, quantity, \
                     amount, placed_at, position) VALUES"
                );
                for (product, (quantity, amount)) in per_product {
                    // The product's registration came earlier in the log, so its seller is
                    // known (looked up once a batch); a product it does not know gets no row.
                    let seller = match w.known.get(&product) {
                        Some(seller) => seller.clone(),
                        None => {
                            let sql =
                                format!("SELECT seller_id FROM {products} WHERE product_id = ?");
                            let seller = w.text(&sql, &[Arg::S(product.clone())]).await?;
                            w.known.insert(product.clone(), seller.clone());
                            seller
                        }
                    };
                    let Some(seller) = seller else { continue };
                    let args = vec![
                        Arg::S(event.stream_id.clone()),
                        Arg::S(product),
                        Arg::S(seller),
                        Arg::I(quantity),
                        Arg::I(amount),
                        Arg::S(text("at")),
                        Arg::I(to_i64(event.global_position)),
                    ];
                    w.insert(&head, "(?, ?, ?, 'prepared', ?, ?, ?, ?)", &keep, args)
                        .await?;
                }
            }
            ("order", event_type) => {
                if let Some(status) = crate::orders::status_after(event_type) {
                    let sql = format!("UPDATE {orders} SET status = ? WHERE order_id = ?");
                    w.run(
                        &sql,
                        &[Arg::S(status.into()), Arg::S(event.stream_id.clone())],
                    )
                    .await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
