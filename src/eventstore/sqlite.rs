//! The event store on SQLite, the embedded default.
//!
//! SQLite lets one transaction write at a time. Each batch runs in `BEGIN IMMEDIATE`, which
//! takes the write lock before reading the head, so positions are assigned and committed in
//! order even when several processes share the file.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use tokio::sync::watch;

use super::group_commit::{
    self, BatchFailure, BatchWriter, GroupCommitConfig, GroupCommitter, PendingAppend, PlannedRow,
};
use super::model::{
    Appended, CounterMove, EventData, EventStoreError, ExpectedVersion, Metadata, RecordedEvent,
    StoredRow, StreamRef,
};
use super::{EventStore, OpenAppend};

/// Most rows per multi-row INSERT (9 variables each, under SQLite's 32,766).
const INSERT_CHUNK_ROWS: usize = 512;
/// Most streams per version look-up statement (2 variables each).
const VERSION_QUERY_STREAMS: usize = 256;

const SELECT_COLUMNS: &str = "SELECT global_position, stream_type, stream_id, version, \
     event_type, event_version, payload, metadata, recorded_at FROM events";

/// The SQLite event store.
pub struct SqliteEventStore {
    pool: SqlitePool,
    committer: GroupCommitter,
}

impl SqliteEventStore {
    /// Starts the group-commit writer on `pool`. SQLite has a single writer, so one writer
    /// task is started whatever `config.writers` says. Must be called inside a tokio runtime.
    pub fn new(pool: SqlitePool, config: &GroupCommitConfig) -> Self {
        let writer = Arc::new(SqliteWriter { pool: pool.clone() });
        let config = GroupCommitConfig {
            writers: 1,
            ..config.clone()
        };
        Self {
            pool,
            committer: GroupCommitter::start(writer, &config),
        }
    }
}

impl SqliteEventStore {
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
    /// SQLite's write lock, so every other append waits for it. Meant for tests and tools
    /// that need to hold a position open; services use [`EventStore::append`].
    pub async fn begin_append(
        &self,
        stream: StreamRef,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        metadata: &Metadata,
        counters: Vec<CounterMove>,
    ) -> Result<OpenAppend<Sqlite>, EventStoreError> {
        let (pending, _answer) = PendingAppend::new(stream, expected, events, metadata, counters)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let outcome = write_in(&mut tx, std::slice::from_ref(&pending))
            .await?
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(EventStoreError::InvalidInput("empty append".into())))?;
        Ok(OpenAppend::new(tx, outcome))
    }
}

struct SqliteWriter {
    pool: SqlitePool,
}

#[async_trait]
impl BatchWriter for SqliteWriter {
    async fn write_batch(
        &self,
        batch: &[PendingAppend],
    ) -> Result<Vec<Result<Appended, EventStoreError>>, BatchFailure> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let outcomes = write_in(&mut tx, batch).await?;
        tx.commit().await.map_err(BatchFailure::AtCommit)?;
        Ok(outcomes)
    }
}

/// Checks versions and inserts the planned rows inside `tx`, which holds the write lock.
async fn write_in(
    tx: &mut Transaction<'static, Sqlite>,
    batch: &[PendingAppend],
) -> Result<Vec<Result<Appended, EventStoreError>>, sqlx::Error> {
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
        .fetch_one(&mut **tx)
        .await?;
    let recorded_at = Utc::now();
    let counters = read_counters(tx, &group_commit::counters_to_read(batch)).await?;
    let mut optimistic = true;
    loop {
        let (streams, assumed) = group_commit::streams_to_read(batch, optimistic);
        let current = current_versions(tx, &streams).await?;
        let plan = group_commit::plan(batch, &current, &counters, to_u64(head));
        if plan.rows.is_empty() {
            return Ok(plan.outcomes);
        }
        let size = |_: &PlannedRow<'_>| 1;
        let chunks: Vec<_> =
            group_commit::pow2_chunks(&plan.rows, INSERT_CHUNK_ROWS, usize::MAX, size).collect();
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
    tx: &mut Transaction<'static, Sqlite>,
    names: &[&str],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut values = HashMap::with_capacity(names.len());
    for chunk in group_commit::pow2_chunks(names, VERSION_QUERY_STREAMS, usize::MAX, |_| 1) {
        let mut query =
            QueryBuilder::<Sqlite>::new("SELECT name, value FROM event_counters WHERE name IN (");
        let mut list = query.separated(", ");
        for name in chunk {
            list.push_bind(*name);
        }
        query.push(")");
        for row in query.build().fetch_all(&mut **tx).await? {
            values.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
        }
    }
    Ok(values)
}

/// Stores the counters' new values (the caller holds the write lock).
async fn write_counters(
    tx: &mut Transaction<'static, Sqlite>,
    counters: &[(&str, i64)],
) -> Result<(), sqlx::Error> {
    for chunk in group_commit::pow2_chunks(counters, INSERT_CHUNK_ROWS, usize::MAX, |_| 1) {
        let mut query = QueryBuilder::<Sqlite>::new("INSERT INTO event_counters (name, value) ");
        query.push_values(chunk, |mut b, (name, value)| {
            b.push_bind(*name).push_bind(*value);
        });
        query.push(" ON CONFLICT (name) DO UPDATE SET value = excluded.value");
        query.build().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn current_versions(
    tx: &mut Transaction<'static, Sqlite>,
    streams: &[&StreamRef],
) -> Result<HashMap<StreamRef, u64>, sqlx::Error> {
    let mut current = HashMap::new();
    for chunk in group_commit::pow2_chunks(streams, VERSION_QUERY_STREAMS, usize::MAX, |_| 1) {
        let mut query = QueryBuilder::<Sqlite>::new(
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
            let stream = StreamRef::new(row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?);
            current.insert(stream, to_u64(row.try_get::<i64, _>(2)?));
        }
    }
    Ok(current)
}

async fn insert(
    tx: &mut Transaction<'static, Sqlite>,
    chunks: &[&[PlannedRow<'_>]],
    recorded_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    for chunk in chunks {
        insert_chunk(tx, chunk, recorded_at).await?;
    }
    Ok(())
}

async fn insert_chunk(
    tx: &mut Transaction<'static, Sqlite>,
    rows: &[PlannedRow<'_>],
    recorded_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut query = QueryBuilder::<Sqlite>::new(
        "INSERT INTO events (global_position, stream_type, stream_id, version, event_type, \
         event_version, payload, metadata, recorded_at) ",
    );
    query.push_values(rows, |mut b, row| {
        b.push_bind(to_i64(row.position))
            .push_bind(row.stream.stream_type.as_str())
            .push_bind(row.stream.stream_id.as_str())
            .push_bind(to_i64(row.version))
            .push_bind(row.event.event_type.as_str())
            .push_bind(row.event.event_version.as_str())
            .push_bind(row.event.payload.as_str())
            .push_bind(row.metadata)
            .push_bind(recorded_at);
    });
    query.build().execute(&mut **tx).await?;
    Ok(())
}

/// SQLite integers are signed; positions and versions never reach 2^63.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn decode(row: &SqliteRow) -> Result<RecordedEvent, EventStoreError> {
    stored(row)?.try_into()
}

fn stored(row: &SqliteRow) -> Result<StoredRow, EventStoreError> {
    Ok(StoredRow {
        global_position: to_u64(row.try_get(0)?),
        stream_type: row.try_get(1)?,
        stream_id: row.try_get(2)?,
        version: to_u64(row.try_get(3)?),
        event_type: row.try_get(4)?,
        event_version: row.try_get(5)?,
        payload: row.try_get(6)?,
        metadata: row.try_get(7)?,
        recorded_at: row.try_get(8)?,
    })
}

#[async_trait]
impl EventStore for SqliteEventStore {
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
            .bind(to_i64(from_version))
            .bind(to_i64(limit as u64))
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
        let mut query = QueryBuilder::<Sqlite>::new(format!("{SELECT_COLUMNS} WHERE ("));
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
            .push_bind(to_i64(after))
            .push(" ORDER BY global_position LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
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
            .bind(to_i64(after))
            .bind(to_i64(limit as u64))
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
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(head))
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.committer.subscribe()
    }

    async fn shutdown(&self) {
        self.committer.shutdown().await;
    }
}
