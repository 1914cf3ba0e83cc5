//! The event store on MySQL / MariaDB (InnoDB).
//!
//! # Why readers never skip an event
//! `AUTO_INCREMENT` hands out ids when a row is inserted, not when it commits, so with plain
//! auto-increment positions a transaction that took position 10 may commit after one that took
//! 11, and a reader that already moved past 11 would never see 10. Here every append
//! transaction first locks the single `event_head` row (`SELECT ... FOR UPDATE`) and takes its
//! positions from it. The lock is held until commit, so positions are handed out in commit
//! order, are contiguous (a rolled-back batch never moved the head), and a reader that follows
//! `global_position` sees them in order. This serialises commits across every service process,
//! which group commit makes cheap: one lock and one fsync per batch of up to
//! [`GroupCommitConfig::max_batch_events`] events.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{NaiveDateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::mysql::MySqlRow;
use sqlx::{MySql, MySqlPool, QueryBuilder, Row, Transaction};
use tokio::sync::watch;

use super::group_commit::{
    self, BatchFailure, BatchWriter, GroupCommitConfig, GroupCommitter, PendingAppend, PlannedRow,
};
use super::model::{
    Appended, CounterMove, EventData, EventStoreError, ExpectedVersion, Metadata, RecordedEvent,
    StoredRow, StreamRef,
};
use super::{EventStore, OpenAppend};

/// Most rows per multi-row INSERT statement (9 placeholders each, well under MySQL's 65,535).
const INSERT_CHUNK_ROWS: usize = 512;
/// Bytes of payload per INSERT statement, to stay well under the default 16 MiB packet.
const INSERT_CHUNK_BYTES: usize = 4 << 20;
/// Most streams per version look-up statement.
const VERSION_QUERY_STREAMS: usize = 256;

const SELECT_COLUMNS: &str = "SELECT global_position, stream_type, stream_id, version, \
     event_type, event_version, payload, metadata, recorded_at FROM events";

/// The MySQL / MariaDB event store.
pub struct MysqlEventStore {
    pool: MySqlPool,
    committer: GroupCommitter,
}

impl MysqlEventStore {
    /// Starts the group-commit writers on `pool`. Must be called inside a tokio runtime.
    pub fn new(pool: MySqlPool, config: &GroupCommitConfig) -> Self {
        let writer = Arc::new(MysqlWriter { pool: pool.clone() });
        Self {
            pool,
            committer: GroupCommitter::start(writer, config),
        }
    }

    /// Appends taken onto the group-commit queue since the store started: each of them is
    /// written (or refused with its own error), even when a shutdown begins meanwhile.
    pub fn accepted_appends(&self) -> u64 {
        self.committer.accepted()
    }

    /// Batches the writers have taken off the queue so far: a test's way to know that the
    /// appends it made are in a batch rather than still queued.
    pub fn batches_begun(&self) -> u64 {
        self.committer.batches()
    }

    /// Whether a shutdown has closed the queue and is waiting for the writers to commit what
    /// they accepted.
    pub fn shutdown_begun(&self) -> bool {
        self.committer.closing()
    }

    /// Runs one append in a transaction the caller commits or drops. While it is open it holds
    /// the commit-order lock, so every other append waits for it. Meant for tests and tools
    /// that need to hold a position open; services use [`EventStore::append`].
    pub async fn begin_append(
        &self,
        stream: StreamRef,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        metadata: &Metadata,
        counters: Vec<CounterMove>,
    ) -> Result<OpenAppend<MySql>, EventStoreError> {
        let (pending, _answer) = PendingAppend::new(stream, expected, events, metadata, counters)?;
        let mut tx = self.pool.begin().await?;
        let outcome = write_in(&mut tx, std::slice::from_ref(&pending))
            .await?
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(EventStoreError::InvalidInput("empty append".into())))?;
        Ok(OpenAppend::new(tx, outcome))
    }
}

struct MysqlWriter {
    pool: MySqlPool,
}

#[async_trait]
impl BatchWriter for MysqlWriter {
    async fn write_batch(
        &self,
        batch: &[PendingAppend],
    ) -> Result<Vec<Result<Appended, EventStoreError>>, BatchFailure> {
        let mut tx = self.pool.begin().await?;
        let outcomes = write_in(&mut tx, batch).await?;
        tx.commit().await.map_err(BatchFailure::AtCommit)?;
        Ok(outcomes)
    }
}

/// Locks the head, checks versions, inserts the planned rows and moves the head, all inside
/// `tx`. Nothing is visible to others until the caller commits.
async fn write_in(
    tx: &mut Transaction<'static, MySql>,
    batch: &[PendingAppend],
) -> Result<Vec<Result<Appended, EventStoreError>>, sqlx::Error> {
    let head: u64 = sqlx::query_scalar("SELECT position FROM event_head WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut **tx)
        .await?;
    let recorded_at = Utc::now().naive_utc();
    let counters = read_counters(tx, &group_commit::counters_to_read(batch)).await?;
    let mut optimistic = true;
    loop {
        let (streams, assumed) = group_commit::streams_to_read(batch, optimistic);
        let current = current_versions(tx, &streams).await?;
        let plan = group_commit::plan(batch, &current, &counters, head);
        if plan.rows.is_empty() {
            return Ok(plan.outcomes);
        }
        let size = |row: &PlannedRow<'_>| row.event.payload.len() + row.metadata.len();
        let chunks: Vec<_> =
            group_commit::pow2_chunks(&plan.rows, INSERT_CHUNK_ROWS, INSERT_CHUNK_BYTES, size)
                .collect();
        // A failed statement leaves nothing behind; only a later one failing must undo the
        // earlier ones.
        let savepoint = assumed && chunks.len() > 1;
        if savepoint {
            sqlx::query("SAVEPOINT optimistic")
                .execute(&mut **tx)
                .await?;
        }
        match insert(tx, &chunks, recorded_at).await {
            Ok(()) => {
                write_counters(tx, &plan.counters).await?;
                sqlx::query("UPDATE event_head SET position = ? WHERE id = 1")
                    .bind(plan.head)
                    .execute(&mut **tx)
                    .await?;
                return Ok(plan.outcomes);
            }
            // A stream assumed new exists: plan again, reading every stream's version.
            Err(sqlx::Error::Database(e)) if assumed && e.is_unique_violation() => {
                if savepoint {
                    sqlx::query("ROLLBACK TO SAVEPOINT optimistic")
                        .execute(&mut **tx)
                        .await?;
                }
                optimistic = false;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The stored values of `names` (a counter never moved has no row).
async fn read_counters(
    tx: &mut Transaction<'static, MySql>,
    names: &[&str],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut values = HashMap::with_capacity(names.len());
    for chunk in group_commit::pow2_chunks(names, VERSION_QUERY_STREAMS, usize::MAX, |_| 1) {
        let mut query =
            QueryBuilder::<MySql>::new("SELECT name, value FROM event_counters WHERE name IN (");
        let mut list = query.separated(", ");
        for name in chunk {
            list.push_bind(*name);
        }
        query.push(")");
        for row in query.build().fetch_all(&mut **tx).await? {
            values.insert(text(&row, 0)?, row.try_get::<i64, _>(1)?);
        }
    }
    Ok(values)
}

/// Stores the counters' new values, in name order (the caller holds the commit-order lock).
async fn write_counters(
    tx: &mut Transaction<'static, MySql>,
    counters: &[(&str, i64)],
) -> Result<(), sqlx::Error> {
    for chunk in group_commit::pow2_chunks(counters, INSERT_CHUNK_ROWS, usize::MAX, |_| 1) {
        let mut query = QueryBuilder::<MySql>::new("INSERT INTO event_counters (name, value) ");
        query.push_values(chunk, |mut b, (name, value)| {
            b.push_bind(*name).push_bind(*value);
        });
        query.push(" ON DUPLICATE KEY UPDATE value = VALUES(value)");
        query.build().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn current_versions(
    tx: &mut Transaction<'static, MySql>,
    streams: &[&StreamRef],
) -> Result<HashMap<StreamRef, u64>, sqlx::Error> {
    let mut current = HashMap::new();
    for chunk in group_commit::pow2_chunks(streams, VERSION_QUERY_STREAMS, usize::MAX, |_| 1) {
        let mut query = QueryBuilder::<MySql>::new(
            "SELECT stream_type, stream_id, MAX(version) FROM events WHERE ",
        );
        for (i, stream) in chunk.iter().enumerate() {
            if i > 0 {
                query.push(" OR ");
            }
            query
                .push("(stream_type = ")
                .push_bind(stream.stream_type.as_str())
                .push(" AND stream_id = ")
                .push_bind(stream.stream_id.as_str())
                .push(")");
        }
        query.push(" GROUP BY stream_type, stream_id");
        for row in query.build().fetch_all(&mut **tx).await? {
            let stream = StreamRef::new(text(&row, 0)?, text(&row, 1)?);
            current.insert(stream, row.try_get::<u64, _>(2)?);
        }
    }
    Ok(current)
}

async fn insert(
    tx: &mut Transaction<'static, MySql>,
    chunks: &[&[PlannedRow<'_>]],
    recorded_at: NaiveDateTime,
) -> Result<(), sqlx::Error> {
    for chunk in chunks {
        insert_chunk(tx, chunk, recorded_at).await?;
    }
    Ok(())
}

async fn insert_chunk(
    tx: &mut Transaction<'static, MySql>,
    rows: &[PlannedRow<'_>],
    recorded_at: NaiveDateTime,
) -> Result<(), sqlx::Error> {
    let mut query = QueryBuilder::<MySql>::new(
        "INSERT INTO events (global_position, stream_type, stream_id, version, event_type, \
         event_version, payload, metadata, recorded_at) ",
    );
    query.push_values(rows, |mut b, row| {
        b.push_bind(row.position)
            .push_bind(row.stream.stream_type.as_str())
            .push_bind(row.stream.stream_id.as_str())
            .push_bind(row.version)
            .push_bind(row.event.event_type.as_str())
            .push_bind(row.event.event_version.as_str())
            .push_bind(row.event.payload.as_str())
            .push_bind(row.metadata)
            .push_bind(recorded_at);
    });
    query.build().execute(&mut **tx).await?;
    Ok(())
}

/// Reads a text column. The event columns use binary collations (`ascii_bin`, `utf8mb4_bin`)
/// for exact, byte-wise comparison, and MySQL reports those as binary; the bytes are UTF-8.
fn text(row: &MySqlRow, index: usize) -> Result<String, sqlx::Error> {
    String::from_utf8(row.try_get::<Vec<u8>, _>(index)?).map_err(|e| sqlx::Error::ColumnDecode {
        index: index.to_string(),
        source: Box::new(e),
    })
}

fn decode(row: &MySqlRow) -> Result<RecordedEvent, EventStoreError> {
    stored(row)?.try_into()
}

fn stored(row: &MySqlRow) -> Result<StoredRow, EventStoreError> {
    Ok(StoredRow {
        global_position: row.try_get(0)?,
        stream_type: text(row, 1)?,
        stream_id: text(row, 2)?,
        version: row.try_get(3)?,
        event_type: text(row, 4)?,
        event_version: text(row, 5)?,
        payload: text(row, 6)?,
        metadata: text(row, 7)?,
        recorded_at: row.try_get::<NaiveDateTime, _>(8)?.and_utc(),
    })
}

#[async_trait]
impl EventStore for MysqlEventStore {
    async fn append_moving(
        &self,
        stream: StreamRef,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        metadata: Metadata,
        counters: Vec<CounterMove>,
    ) -> Result<Appended, EventStoreError> {
        self.committer
            .append(stream, expected, events, &metadata, counters)
            .await
    }

    async fn counters(&self, names: &[&str]) -> Result<HashMap<String, i64>, EventStoreError> {
        let mut tx = self.pool.begin().await?;
        let values = read_counters(&mut tx, names).await?;
        tx.commit().await?;
        Ok(values)
    }

    async fn read_stream(
        &self,
        stream: &StreamRef,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        let sql = format!(
            "{SELECT_COLUMNS} WHERE stream_type = ? AND stream_id = ? AND version >= ? \
             ORDER BY version LIMIT ?"
        );
        sqlx::query(&sql)
            .bind(&stream.stream_type)
            .bind(&stream.stream_id)
            .bind(from_version)
            .bind(limit as u64)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    async fn read_streams(
        &self,
        streams: &[StreamRef],
        after: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        if streams.is_empty() || streams.len() > VERSION_QUERY_STREAMS {
            return Err(EventStoreError::InvalidInput(format!(
                "read 1 to {VERSION_QUERY_STREAMS} streams at once"
            )));
        }
        let mut query = QueryBuilder::<MySql>::new(format!("{SELECT_COLUMNS} WHERE ("));
        for (i, stream) in streams.iter().enumerate() {
            if i > 0 {
                query.push(" OR ");
            }
            query
                .push("(stream_type = ")
                .push_bind(stream.stream_type.as_str())
                .push(" AND stream_id = ")
                .push_bind(stream.stream_id.as_str())
                .push(")");
        }
        query
            .push(") AND global_position > ")
            .push_bind(after)
            .push(" ORDER BY global_position LIMIT ")
            .push_bind(limit as u64);
        query
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    async fn read_all_bounded(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        let sql =
            format!("{SELECT_COLUMNS} WHERE global_position > ? ORDER BY global_position LIMIT ?");
        let mut rows = sqlx::query(&sql)
            .bind(after)
            .bind(limit as u64)
            .fetch(&self.pool);
        let mut page = Vec::new();
        let mut bytes = 0usize;
        while bytes < max_bytes
            && let Some(row) = rows.try_next().await?
        {
            let stored = stored(&row)?;
            bytes = bytes.saturating_add(stored.size());
            page.push(stored.try_into()?);
        }
        Ok(page)
    }

    async fn head_position(&self) -> Result<u64, EventStoreError> {
        Ok(
            sqlx::query_scalar("SELECT position FROM event_head WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.committer.subscribe()
    }

    async fn shutdown(&self) {
        self.committer.shutdown().await;
    }
}
