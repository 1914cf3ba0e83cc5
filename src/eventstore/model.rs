//! The types of the event store contract.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use openrun_projections::log::{Metadata, RecordedEvent};

/// Longest accepted stream type, in bytes (the column is `VARCHAR(64)`).
pub const MAX_STREAM_TYPE_LEN: usize = 64;
/// Longest accepted stream id, in bytes (the column is `VARCHAR(128)`).
pub const MAX_STREAM_ID_LEN: usize = 128;
/// Longest accepted event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;
/// Longest accepted event version, in bytes.
pub const MAX_EVENT_VERSION_LEN: usize = 16;
/// Largest accepted event payload, in bytes of JSON text (well under MySQL's default 16 MiB
/// packet; an event is a fact, not a file).
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Largest accepted metadata, in bytes of JSON text (the MySQL column is `TEXT`, 64 KiB).
pub const MAX_METADATA_BYTES: usize = 16 << 10;
/// Most events in one append (one append is one transaction holding the commit-order lock).
pub const MAX_APPEND_EVENTS: usize = 1000;
/// Longest accepted guarded counter name, in bytes (the column is `VARCHAR(128)`).
pub const MAX_COUNTER_NAME_LEN: usize = 128;
/// Most counter moves one append may carry (an order of at most this many lines).
pub const MAX_APPEND_COUNTER_MOVES: usize = 64;

/// One stream: an aggregate type (`order`, `product`, ...) and the aggregate's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamRef {
    /// The aggregate type, for example `order`.
    pub stream_type: String,
    /// The aggregate id within its type.
    pub stream_id: String,
}

impl StreamRef {
    /// A stream reference from its two parts.
    pub fn new(stream_type: impl Into<String>, stream_id: impl Into<String>) -> Self {
        Self {
            stream_type: stream_type.into(),
            stream_id: stream_id.into(),
        }
    }

    /// Parses `type/id`, the form the CLI uses.
    pub fn parse(s: &str) -> Option<Self> {
        let (stream_type, stream_id) = s.split_once('/')?;
        (!stream_type.is_empty() && !stream_id.is_empty())
            .then(|| Self::new(stream_type, stream_id))
    }

    pub(crate) fn validate(&self) -> Result<(), EventStoreError> {
        check_token("stream type", &self.stream_type, MAX_STREAM_TYPE_LEN)?;
        check_token("stream id", &self.stream_id, MAX_STREAM_ID_LEN)
    }
}

impl fmt::Display for StreamRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stream_type, self.stream_id)
    }
}

/// Stream names are stored as ASCII (compact keys, byte-wise comparison on every backend).
fn check_token(what: &str, value: &str, max: usize) -> Result<(), EventStoreError> {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(EventStoreError::InvalidInput(format!(
            "{what} must be 1 to {max} printable ASCII characters"
        )));
    }
    Ok(())
}

/// The version a stream must be at for an append to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version (no concurrency check).
    Any,
    /// The stream must be at exactly this version; `Exact(0)` means it must not exist yet.
    Exact(u64),
}

impl ExpectedVersion {
    /// The stream must not exist yet.
    pub const NO_STREAM: Self = Self::Exact(0);

    pub(crate) fn admits(self, actual: u64) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(v) => v == actual,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// An event to append: its type, the version of its shape, and its JSON payload. The payload
/// is JSON by construction (every reader parses it: one unparsable payload would stop every
/// projection there), so appends need not check it again.
#[derive(Debug, Clone, PartialEq)]
pub struct EventData {
    /// Past-tense name, for example `OrderPlaced`.
    pub event_type: String,
    /// The version of the payload's shape, for upcasting (for example `1.0`).
    pub event_version: String,
    /// The payload, already serialised to JSON text by the caller's task.
    pub(crate) payload: String,
}

impl EventData {
    /// An event whose payload is JSON text from elsewhere: refused unless it parses as the
    /// readers parse it (not a lighter check that lets through what they refuse, such as
    /// lone surrogates or numbers out of range).
    pub fn from_json_text(
        event_type: impl Into<String>,
        event_version: impl Into<String>,
        payload: String,
    ) -> Result<Self, EventStoreError> {
        serde_json::from_str::<serde_json::Value>(&payload)
            .map_err(|e| EventStoreError::InvalidInput(format!("the payload is not JSON: {e}")))?;
        Ok(Self {
            event_type: event_type.into(),
            event_version: event_version.into(),
            payload,
        })
    }

    /// The payload's JSON text.
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// Serialises `payload` to JSON.
    pub fn json<T: Serialize>(
        event_type: impl Into<String>,
        event_version: impl Into<String>,
        payload: &T,
    ) -> Result<Self, EventStoreError> {
        Ok(Self {
            event_type: event_type.into(),
            event_version: event_version.into(),
            payload: serde_json::to_string(payload)
                .map_err(|e| EventStoreError::InvalidInput(format!("payload: {e}")))?,
        })
    }

    pub(crate) fn validate(&self) -> Result<(), EventStoreError> {
        check_token("event type", &self.event_type, MAX_EVENT_TYPE_LEN)?;
        check_token("event version", &self.event_version, MAX_EVENT_VERSION_LEN)?;
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(EventStoreError::InvalidInput(format!(
                "an event payload must be at most {MAX_PAYLOAD_BYTES} bytes"
            )));
        }
        Ok(())
    }
}

/// A move of a guarded counter that an append carries: the counter's value changes by `delta`
/// in the same transaction as the append's events, and when a `floor` is set the append is
/// refused (alone, with [`EventStoreError::GuardRefused`]) if the value would fall below it.
///
/// The store knows nothing of what a counter means; the callers give the names. A counter that
/// was never moved is 0. Every mover runs under the commit-order lock, so the check and the
/// move are one step however many processes append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterMove {
    /// The counter's name: 1 to [`MAX_COUNTER_NAME_LEN`] printable ASCII characters.
    pub counter: String,
    /// How much the value changes.
    pub delta: i64,
    /// The lowest value the move may leave; `None` moves it unchecked.
    pub floor: Option<i64>,
}

impl CounterMove {
    /// An unchecked move of `counter` by `delta`.
    pub fn new(counter: impl Into<String>, delta: i64) -> Self {
        Self {
            counter: counter.into(),
            delta,
            floor: None,
        }
    }

    /// The same move, refused when it would leave the counter below `floor`.
    #[must_use]
    pub fn at_least(self, floor: i64) -> Self {
        Self {
            floor: Some(floor),
            ..self
        }
    }

    pub(crate) fn validate(&self) -> Result<(), EventStoreError> {
        check_token("counter name", &self.counter, MAX_COUNTER_NAME_LEN)
    }
}

/// What a successful append returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The stream's version after the append (the version of its last event).
    pub version: u64,
    /// The global positions given to the appended events, in order.
    pub positions: RangeInclusive<u64>,
}

/// Why an event store call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EventStoreError {
    /// The stream was not at the expected version; nothing was written.
    #[error("version conflict on {stream}: expected {expected}, stream is at {actual}")]
    Conflict {
        /// The stream.
        stream: StreamRef,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// Where the stream actually was.
        actual: u64,
    },
    /// The call itself was malformed (empty append, bad names); nothing was written.
    #[error("invalid event store input: {0}")]
    InvalidInput(String),
    /// A counter move the append carried would have left its counter below its floor (or
    /// outside a 64-bit integer); nothing was written.
    #[error("counter {counter} is at {value}; moving it by {delta} would cross its floor")]
    GuardRefused {
        /// The counter.
        counter: String,
        /// Its value before this append.
        value: i64,
        /// The refused move.
        delta: i64,
    },
    /// The store is shutting down and takes no more appends.
    #[error("the event store is shutting down")]
    ShuttingDown,
    /// A stored row could not be read back.
    #[error("corrupt stored event at position {position}: {reason}")]
    Corrupt {
        /// Global position of the row.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// The database failed before the append could commit; nothing was written, and the
    /// append may be retried with the same expected version.
    #[error("event store database error: {0}")]
    Database(Arc<sqlx::Error>),
    /// The connection failed while the append was committing: it may or may not have been
    /// written. Read the stream to find out before acting on either (never release what the
    /// append would have taken on the assumption that it failed).
    #[error("the outcome of the append is unknown: {0}")]
    OutcomeUnknown(Arc<sqlx::Error>),
}

impl From<sqlx::Error> for EventStoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(Arc::new(e))
    }
}

/// A stored row as both backends read it, before its JSON columns are parsed.
pub(crate) struct StoredRow {
    pub global_position: u64,
    pub stream_type: String,
    pub stream_id: String,
    pub version: u64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
}

impl StoredRow {
    /// The bytes of its stored payload and metadata: what bounds a page of the log.
    pub fn size(&self) -> usize {
        self.payload.len() + self.metadata.len()
    }
}

impl TryFrom<StoredRow> for RecordedEvent {
    type Error = EventStoreError;

    fn try_from(row: StoredRow) -> Result<Self, Self::Error> {
        let corrupt = |reason: String| EventStoreError::Corrupt {
            position: row.global_position,
            reason,
        };
        let payload =
            serde_json::from_str(&row.payload).map_err(|e| corrupt(format!("payload: {e}")))?;
        let metadata =
            serde_json::from_str(&row.metadata).map_err(|e| corrupt(format!("metadata: {e}")))?;
        Ok(Self {
            global_position: row.global_position,
            stream_type: row.stream_type,
            stream_id: row.stream_id,
            version: row.version,
            event_type: row.event_type,
            event_version: row.event_version,
            payload,
            metadata,
            recorded_at: row.recorded_at,
        })
    }
}
