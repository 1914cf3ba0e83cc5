//! The stream index: one row per stream with its version, event count and first and last
//! positions. Used by `openrun projections status`, by the audit, and as the projection the
//! rebuild is proven on.

use async_trait::async_trait;

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
        let table = tables.name(TABLE);
        let (version, position) = (to_i64(event.version), to_i64(event.global_position));
        match tx {
            Tx::MySql(tx) => {
                let sql = format!(
                    "INSERT INTO {table} (stream_type, stream_id, version, event_count, first_position, \
                     last_position, last_event_type) VALUES (?, ?, ?, 1, ?, ?, ?) \
                     ON DUPLICATE KEY UPDATE version = VALUES(version), event_count = event_count + 1, \
                     last_position = VALUES(last_position), last_event_type = VALUES(last_event_type)"
                );
                sqlx::query(&sql)
                    .bind(&event.stream_type)
                    .bind(&event.stream_id)
                    .bind(version)
                    .bind(position)
                    .bind(position)
                    .bind(&event.event_type)
                    .execute(&mut **tx)
                    .await?;
            }
            Tx::Sqlite(tx) => {
                let sql = format!(
                    "INSERT INTO {table} (stream_type, stream_id, version, event_count, first_position, \
                     last_position, last_event_type) VALUES (?1, ?2, ?3, 1, ?4, ?4, ?5) \
                     ON CONFLICT (stream_type, stream_id) DO UPDATE SET version = excluded.version, \
                     event_count = event_count + 1, last_position = excluded.last_position, \
                     last_event_type = excluded.last_event_type"
                );
                sqlx::query(&sql)
                    .bind(&event.stream_type)
                    .bind(&event.stream_id)
                    .bind(version)
                    .bind(position)
                    .bind(&event.event_type)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(())
    }
}
