//! The event log as projections see it: recorded events, and the source they are read from.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

/// Errors of an event source, boxed: the source lives in the service.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// How much one read of the log may return: at most `events` events, and no more events once
/// their stored payload and metadata reach `bytes` (always at least one event, however large).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Most events.
    pub events: usize,
    /// Most bytes of stored payload and metadata, give or take the last event.
    pub bytes: usize,
}

/// Where projections read events from: the event store, in position order.
#[async_trait]
pub trait EventSource: Send + Sync + 'static {
    /// Events with `global_position > after`, in position order, within `batch`.
    async fn read_all(&self, after: u64, batch: Batch) -> Result<Vec<RecordedEvent>, SourceError>;

    /// The highest committed position.
    async fn head_position(&self) -> Result<u64, SourceError>;

    /// Changes whenever this process commits events, so followers wake without polling.
    fn subscribe(&self) -> watch::Receiver<u64>;
}

/// Who caused an append and why: stored with every event of the append.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Ties together everything one outside request caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The message (request, event or scheduled item) that directly caused this append.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Who issued the command, for example `member:0190...` or `system:scheduler`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The client's `Idempotency-Key`, when the command came with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The hold of units in the stock store that this append settles (a downward stock
    /// adjustment holds what it takes, as an order does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<Uuid>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Position in the whole log, from 1, contiguous.
    pub global_position: u64,
    /// The aggregate type of the stream.
    pub stream_type: String,
    /// The aggregate id of the stream.
    pub stream_id: String,
    /// Version within the stream, from 1, contiguous.
    pub version: u64,
    /// Past-tense event name.
    pub event_type: String,
    /// Version of the payload's shape.
    pub event_version: String,
    /// The payload.
    pub payload: serde_json::Value,
    /// Who caused it and why.
    pub metadata: Metadata,
    /// When the event was committed.
    pub recorded_at: DateTime<Utc>,
}
