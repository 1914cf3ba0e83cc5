//! The stream index: one row per stream with its version, event count and first and last
//! positions. Used by `openrun projections status`, by the audit, and as the projection the
//! rebuild is proven on.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::QueryBuilder;

use crate::Projection;
use crate::log::RecordedEvent;
use crate::store::{Pool, Tables, Tx, to_i64};

/// The `streams` projection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Streams;

/// Its table.
pub const TABLE: &str = "streams";

#[async_trait]
impl Projection for Streams {
    fn name(&self) -> &'static str {
        "streams"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[TABLE]
    }

    async fn create_tables(&self, pool: &Pool, tables: &Tables) -> anyhow::Result<()> {
        let table = tables.name(TABLE);
        let text = if pool.is_sqlite() {
            "TEXT"
        } else {
            "VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin"
        };
        pool.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                stream_type {text} NOT NULL,
                stream_id {text} NOT NULL,
                version BIGINT NOT NULL,
                event_count BIGINT NOT NULL,
                first_position BIGINT NOT NULL,
                last_position BIGINT NOT NULL,
                last_event_type {text} NOT NULL,
                PRIMARY KEY (stream_type, stream_id)
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
        self.apply_batch(tx, tables, std::slice::from_ref(event))
            .await
    }

    /// Folds the batch into one row per stream and writes them with multi-row upserts: a
    /// round trip per [`UPSERT_ROWS`] streams instead of one per event.
    async fn apply_batch(
        &self,
        tx: &mut Tx,
        tables: &Tables,
        events: &[RecordedEvent],
    ) -> anyhow::Result<()> {
        let table = tables.name(TABLE);
        let rows = fold(events);
        for chunk in rows.chunks(UPSERT_ROWS) {
            match tx {
                Tx::MySql(tx) => {
                    upsert::<sqlx::MySql>(
                        &table,
                        chunk,
                        "ON DUPLICATE KEY UPDATE version = VALUES(version), \
                         event_count = event_count + VALUES(event_count), \
                         last_position = VALUES(last_position), \
                         last_event_type = VALUES(last_event_type)",
                    )
                    .build()
                    .execute(&mut **tx)
                    .await?;
                }
                Tx::Sqlite(tx) => {
                    upsert::<sqlx::Sqlite>(
                        &table,
                        chunk,
                        "ON CONFLICT (stream_type, stream_id) DO UPDATE SET \
                         version = excluded.version, \
                         event_count = event_count + excluded.event_count, \
                         last_position = excluded.last_position, \
                         last_event_type = excluded.last_event_type",
                    )
                    .build()
                    .execute(&mut **tx)
                    .await?;
                }
            }
        }
        Ok(())
    }
}

/// Streams per upsert statement (7 parameters each).
const UPSERT_ROWS: usize = 256;

/// What a batch does to one stream's row.
struct Folded<'a> {
    stream_type: &'a str,
    stream_id: &'a str,
    version: i64,
    count: i64,
    first_position: i64,
    last_position: i64,
    last_event_type: &'a str,
}

/// One row per stream of the batch, in order of first appearance.
fn fold(events: &[RecordedEvent]) -> Vec<Folded<'_>> {
    let mut rows: Vec<Folded<'_>> = Vec::new();
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    for event in events {
        let key = (event.stream_type.as_str(), event.stream_id.as_str());
        let (version, position) = (to_i64(event.version), to_i64(event.global_position));
        match index.get(&key) {
            Some(&i) => {
                let row = &mut rows[i];
                row.version = version;
                row.count += 1;
                row.last_position = position;
                row.last_event_type = &event.event_type;
            }
            None => {
                index.insert(key, rows.len());
                rows.push(Folded {
                    stream_type: key.0,
                    stream_id: key.1,
                    version,
                    count: 1,
                    first_position: position,
                    last_position: position,
                    last_event_type: &event.event_type,
                });
            }
        }
    }
    rows
}

fn upsert<'a, DB>(table: &str, rows: &'a [Folded<'a>], on_conflict: &str) -> QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new(format!(
        "INSERT INTO {table} (stream_type, stream_id, version, event_count, first_position, \
         last_position, last_event_type) "
    ));
    query.push_values(rows, |mut b, row| {
        b.push_bind(row.stream_type)
            .push_bind(row.stream_id)
            .push_bind(row.version)
            .push_bind(row.count)
            .push_bind(row.first_position)
            .push_bind(row.last_position)
            .push_bind(row.last_event_type);
    });
    query.push(" ").push(on_conflict);
    query
}
