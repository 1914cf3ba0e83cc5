//! cqrs-es on our event store: [`CqrsEventRepository`] implements cqrs-es's
//! `PersistedEventRepository`, so `PersistedEventStore::new_event_store(repo)` gives a
//! `CqrsFramework` whose aggregates live in our log, with cqrs-es's upcasters applied on load.
//!
//! cqrs-es's aggregate type is our stream type and its sequence is our stream version. Its
//! string metadata map carries our [`Metadata`] under the keys of [`keys`]; other keys are not
//! stored. Snapshots are not supported: the aggregates here are short streams, rebuilt from
//! their events.

use std::collections::HashMap;
use std::sync::Arc;

use cqrs_es::Aggregate;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use serde_json::Value;

use super::EventStore;
use super::model::{
    EventData, EventStoreError, ExpectedVersion, Metadata, RecordedEvent, StreamRef,
};

/// Rows read per round trip when loading or streaming.
const PAGE: usize = 1000;

/// The metadata keys cqrs-es callers use to fill [`Metadata`].
pub mod keys {
    /// A UUID tying together everything one request caused.
    pub const CORRELATION_ID: &str = "correlation_id";
    /// A UUID of the message that caused the command.
    pub const CAUSATION_ID: &str = "causation_id";
    /// Who issued the command.
    pub const ACTOR: &str = "actor";
    /// The client's idempotency key.
    pub const IDEMPOTENCY_KEY: &str = "idempotency_key";
}

/// cqrs-es's event repository over an [`EventStore`].
#[derive(Clone)]
pub struct CqrsEventRepository {
    store: Arc<dyn EventStore>,
}

impl CqrsEventRepository {
    /// Wraps a store.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store }
    }

    async fn events_from<A: Aggregate>(
        &self,
        aggregate_id: &str,
        from_version: u64,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let stream = StreamRef::new(A::TYPE, aggregate_id);
        let mut events = Vec::new();
        let mut next = from_version;
        loop {
            let page = self
                .store
                .read_stream(&stream, next, PAGE)
                .await
                .map_err(to_persistence)?;
            let done = page.len() < PAGE;
            next = page.last().map_or(next, |e| e.version + 1);
            events.extend(page.into_iter().map(serialized));
            if done {
                return Ok(events);
            }
        }
    }
}

fn to_persistence(e: EventStoreError) -> PersistenceError {
    match e {
        EventStoreError::Conflict { .. } => PersistenceError::OptimisticLockError,
        EventStoreError::Database(e) => PersistenceError::ConnectionError(Box::new(e)),
        // Not a connection error, which callers take as "not written, retry": the append may
        // be in the log. The store's own error is kept so a caller can tell.
        e @ EventStoreError::OutcomeUnknown(_) => PersistenceError::UnknownError(Box::new(e)),
        EventStoreError::Corrupt { .. } => PersistenceError::DeserializationError(Box::new(e)),
        e => PersistenceError::UnknownError(Box::new(e)),
    }
}

fn serialized(event: RecordedEvent) -> SerializedEvent {
    let mut metadata = serde_json::Map::new();
    let m = event.metadata;
    let pairs = [
        (
            keys::CORRELATION_ID,
            m.correlation_id.map(|u| u.to_string()),
        ),
        (keys::CAUSATION_ID, m.causation_id.map(|u| u.to_string())),
        (keys::ACTOR, m.actor),
        (keys::IDEMPOTENCY_KEY, m.idempotency_key),
    ];
    for (key, value) in pairs {
        if let Some(value) = value {
            metadata.insert(key.to_owned(), Value::String(value));
        }
    }
    SerializedEvent {
        aggregate_id: event.stream_id,
        sequence: usize::try_from(event.version).unwrap_or(usize::MAX),
        aggregate_type: event.stream_type,
        event_type: event.event_type,
        event_version: event.event_version,
        payload: event.payload,
        metadata: Value::Object(metadata),
    }
}

/// Reads our metadata out of cqrs-es's string map (stored as a JSON object).
fn metadata_of(value: &Value) -> Result<Metadata, PersistenceError> {
    let map: HashMap<String, String> = serde_json::from_value(value.clone())?;
    let uuid = |key: &str| {
        map.get(key)
            .map(|s| s.parse())
            .transpose()
            .map_err(|e| PersistenceError::UnknownError(format!("metadata {key}: {e}").into()))
    };
    Ok(Metadata {
        correlation_id: uuid(keys::CORRELATION_ID)?,
        causation_id: uuid(keys::CAUSATION_ID)?,
        actor: map.get(keys::ACTOR).cloned(),
        idempotency_key: map.get(keys::IDEMPOTENCY_KEY).cloned(),
        hold_id: None,
    })
}

impl PersistedEventRepository for CqrsEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.events_from::<A>(aggregate_id, 1).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.events_from::<A>(aggregate_id, last_sequence as u64 + 1)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            return Err(PersistenceError::UnknownError(
                "snapshots are not supported: use PersistedEventStore::new_event_store".into(),
            ));
        }
        let Some(first) = events.first() else {
            return Ok(());
        };
        let stream = StreamRef::new(A::TYPE, &first.aggregate_id);
        let expected = ExpectedVersion::Exact(first.sequence.saturating_sub(1) as u64);
        let metadata = metadata_of(&first.metadata)?;
        let data = events
            .iter()
            .map(|e| EventData::json(&e.event_type, &e.event_version, &e.payload))
            .collect::<Result<Vec<_>, _>>()
            .map_err(to_persistence)?;
        self.store
            .append(stream, expected, data, metadata)
            .await
            .map(drop)
            .map_err(to_persistence)
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let events = self.events_from::<A>(aggregate_id, 1).await?;
        let (mut feed, stream) = ReplayStream::new(events.len().max(1));
        for event in events {
            feed.push(Ok(event)).await?;
        }
        Ok(stream)
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let (mut feed, stream) = ReplayStream::new(PAGE);
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            let mut after = 0;
            loop {
                let page = match store.read_all(after, PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = feed.push(Err(to_persistence(e))).await;
                        return;
                    }
                };
                let done = page.len() < PAGE;
                after = page.last().map_or(after, |e| e.global_position);
                for event in page.into_iter().filter(|e| e.stream_type == A::TYPE) {
                    if feed.push(Ok(serialized(event))).await.is_err() {
                        return;
                    }
                }
                if done {
                    return;
                }
            }
        });
        Ok(stream)
    }
}
