//! The event store: the append-only log every aggregate stream lives in.
//!
//! # Contract
//! - [`EventStore::append`] takes a stream, the version the caller expects it to be at, and the
//!   events of one command. They commit together or not at all; a version clash is
//!   [`EventStoreError::Conflict`].
//! - Every event gets a `global_position`. Positions are contiguous and become visible in
//!   position order, so a reader that follows them ([`EventStore::read_all`]) never skips a
//!   committed event and never sees one twice.
//! - An append may carry guarded counter moves ([`CounterMove`]): they change named counters
//!   in the same transaction, and one that would take its counter below its floor refuses
//!   that append alone ([`EventStoreError::GuardRefused`]). The store knows nothing of what a
//!   counter means; the order path uses them to keep the units sold within the supply.
//! - Concurrent appends are gathered into one transaction and one commit ("group commit",
//!   [`group_commit`]); each caller still gets its own result, and a conflicting append fails
//!   alone while the rest of its batch commits.
//!
//! # Layout
//! - [`model`]: the types of the contract (streams, expected versions, events, metadata).
//! - [`group_commit`]: the batching writer shared by both backends, and the pure batch planner.
//! - [`mysql`] and [`sqlite`]: the two backends.
//! - [`cqrs`]: the adapter that lets cqrs-es run its aggregates on this store.

pub mod cqrs;
pub mod group_commit;
pub mod model;
pub mod mysql;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

pub use model::{
    Appended, CounterMove, EventData, EventStoreError, ExpectedVersion, Metadata, RecordedEvent,
    StreamRef,
};

use crate::db::Database;

/// The contract of the event log, implemented for MySQL / MariaDB and for SQLite.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` if the stream is at `expected` and every counter move
    /// stays within its floor, moving the counters in the same transaction; returns the
    /// stream's new version and the global positions the events were given.
    async fn append_moving(
        &self,
        stream: StreamRef,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        metadata: Metadata,
        counters: Vec<CounterMove>,
    ) -> Result<Appended, EventStoreError>;

    /// Appends `events` to `stream` if the stream is at `expected`; returns the stream's new
    /// version and the global positions the events were given.
    async fn append(
        &self,
        stream: StreamRef,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        metadata: Metadata,
    ) -> Result<Appended, EventStoreError> {
        self.append_moving(stream, expected, events, metadata, Vec::new())
            .await
    }

    /// The committed values of the named guarded counters; a counter never moved is absent.
    async fn counters(&self, names: &[&str]) -> Result<HashMap<String, i64>, EventStoreError>;

    /// Events of one stream with `version >= from_version`, in version order, at most `limit`.
    async fn read_stream(
        &self,
        stream: &StreamRef,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError>;

    /// Events of the given streams with `global_position > after`, in position order, at most
    /// `limit` (one history across a few streams, paged without reading them whole).
    async fn read_streams(
        &self,
        streams: &[StreamRef],
        after: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError>;

    /// Events of every stream with `global_position > after`, in position order: at most
    /// `limit`, and no more once their stored payload and metadata reach `max_bytes` (always
    /// at least one event, however large). Rows are read as a stream, so a page of large
    /// events is never held twice.
    async fn read_all_bounded(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError>;

    /// Events of every stream with `global_position > after`, in position order, at most `limit`.
    async fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        self.read_all_bounded(after, limit, usize::MAX).await
    }

    /// The highest committed global position (0 for an empty log).
    async fn head_position(&self) -> Result<u64, EventStoreError>;

    /// A receiver that changes whenever this process commits new events; its value is the
    /// highest position committed here. Followers use it to wake up without polling.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Stops taking appends, finishes those already accepted, and waits for them to commit.
    async fn shutdown(&self);
}

/// An append whose transaction is still open: see `begin_append` on either backend.
pub struct OpenAppend<DB: sqlx::Database> {
    tx: sqlx::Transaction<'static, DB>,
    outcome: Appended,
}

impl<DB: sqlx::Database> OpenAppend<DB> {
    fn new(tx: sqlx::Transaction<'static, DB>, outcome: Appended) -> Self {
        Self { tx, outcome }
    }

    /// What the append will have done once committed.
    pub fn outcome(&self) -> &Appended {
        &self.outcome
    }

    /// Commits the append. A failure here is [`EventStoreError::OutcomeUnknown`]: the server
    /// may have committed before the answer was lost.
    pub async fn commit(self) -> Result<Appended, EventStoreError> {
        self.tx
            .commit()
            .await
            .map_err(|e| EventStoreError::OutcomeUnknown(Arc::new(e)))?;
        Ok(self.outcome)
    }
}

/// The event store as the source projections read from.
pub struct LogSource(pub Arc<dyn EventStore>);

#[async_trait]
impl openrun_projections::log::EventSource for LogSource {
    async fn read_all(
        &self,
        after: u64,
        batch: openrun_projections::log::Batch,
    ) -> Result<Vec<RecordedEvent>, openrun_projections::log::SourceError> {
        Ok(self
            .0
            .read_all_bounded(after, batch.events, batch.bytes)
            .await?)
    }

    async fn head_position(&self) -> Result<u64, openrun_projections::log::SourceError> {
        Ok(self.0.head_position().await?)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// Opens the event store that matches the database backend.
pub fn open(db: &Database, config: &group_commit::GroupCommitConfig) -> Arc<dyn EventStore> {
    match db {
        Database::MySql(pool) => Arc::new(mysql::MysqlEventStore::new(pool.clone(), config)),
        Database::Sqlite(pool) => Arc::new(sqlite::SqliteEventStore::new(pool.clone(), config)),
    }
}
