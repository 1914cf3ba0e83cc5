//! Group commit: many concurrent appends, one transaction and one commit.
//!
//! Callers put their append on a queue and wait on a one-shot reply. A small number of writer
//! tasks (one per backend connection that may write) each take everything queued, up to
//! [`GroupCommitConfig::max_batch_events`], and hand it to the backend as one batch. Under load
//! the queue fills while a batch commits, so batches grow with concurrency and the cost of the
//! commit (the fsync) is shared by all of them.
//!
//! Deciding which appends of a batch go through is pure and lives in [`plan`]: appends are
//! taken in arrival order, each is checked against the stream's version as left by the
//! appends before it, and a conflicting append is refused alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::model::{Appended, EventData, EventStoreError, ExpectedVersion, Metadata, StreamRef};

/// Tuning of the group-commit writer.
#[derive(Debug, Clone)]
pub struct GroupCommitConfig {
    /// Most events in one transaction.
    pub max_batch_events: usize,
    /// Writer tasks. With two, one batch is prepared and sent while the previous one is still
    /// waiting for its commit to reach the disk.
    pub writers: usize,
    /// Appends that may wait in the queue before callers are slowed down.
    pub queue_capacity: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 2000,
            writers: 2,
            queue_capacity: 16_384,
        }
    }
}

/// One caller's append, waiting in the queue.
pub(crate) struct PendingAppend {
    pub stream: StreamRef,
    pub expected: ExpectedVersion,
    pub events: Vec<EventData>,
    /// The metadata, already serialised to JSON.
    pub metadata: String,
    reply: oneshot::Sender<Result<Appended, EventStoreError>>,
}

impl PendingAppend {
    /// An append and the receiver its outcome will be sent to.
    pub(crate) fn new(
        stream: StreamRef,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        metadata: &Metadata,
    ) -> Result<(Self, oneshot::Receiver<Result<Appended, EventStoreError>>), EventStoreError> {
        stream.validate()?;
        if events.is_empty() {
            return Err(EventStoreError::InvalidInput(
                "an append needs at least one event".into(),
            ));
        }
        for event in &events {
            event.validate()?;
        }
        let metadata = serde_json::to_string(metadata)
            .map_err(|e| EventStoreError::InvalidInput(format!("metadata: {e}")))?;
        let (reply, answer) = oneshot::channel();
        let pending = Self {
            stream,
            expected,
            events,
            metadata,
            reply,
        };
        Ok((pending, answer))
    }
}

/// A row the backend is to insert.
pub(crate) struct PlannedRow<'a> {
    pub position: u64,
    pub stream: &'a StreamRef,
    pub version: u64,
    pub event: &'a EventData,
    pub metadata: &'a str,
}

/// What a batch will do: the rows to insert, each caller's outcome, and the new head position.
pub(crate) struct Plan<'a> {
    pub rows: Vec<PlannedRow<'a>>,
    pub outcomes: Vec<Result<Appended, EventStoreError>>,
    pub head: u64,
}

/// Plans a batch against the streams' current versions and the current head position.
/// `current` holds the version of every stream of the batch that exists; absent means 0.
pub(crate) fn plan<'a>(
    batch: &'a [PendingAppend],
    current: &HashMap<StreamRef, u64>,
    head: u64,
) -> Plan<'a> {
    let mut versions: HashMap<&StreamRef, u64> = HashMap::with_capacity(batch.len());
    let mut rows = Vec::with_capacity(batch.iter().map(|p| p.events.len()).sum());
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut position = head;
    for pending in batch {
        let version = versions
            .entry(&pending.stream)
            .or_insert_with(|| current.get(&pending.stream).copied().unwrap_or(0));
        if !pending.expected.admits(*version) {
            outcomes.push(Err(EventStoreError::Conflict {
                stream: pending.stream.clone(),
                expected: pending.expected,
                actual: *version,
            }));
            continue;
        }
        let first_position = position + 1;
        for event in &pending.events {
            position += 1;
            *version += 1;
            rows.push(PlannedRow {
                position,
                stream: &pending.stream,
                version: *version,
                event,
                metadata: &pending.metadata,
            });
        }
        outcomes.push(Ok(Appended {
            version: *version,
            positions: first_position..=position,
        }));
    }
    Plan {
        rows,
        outcomes,
        head: position,
    }
}

/// The streams whose current version a backend must read before planning a batch.
///
/// When `optimistic`, a stream whose first append in the batch expects it not to exist yet is
/// assumed new and not read: new streams (an order placed) are the common case, and the
/// unique key on `(stream_type, stream_id, version)` proves the assumption when the rows are
/// inserted. If it fails there, the backend rolls the inserts back and plans again with
/// `optimistic` false, reading every stream. Returns the streams and whether any was assumed.
pub(crate) fn streams_to_read(
    batch: &[PendingAppend],
    optimistic: bool,
) -> (Vec<&StreamRef>, bool) {
    let mut first: HashMap<&StreamRef, ExpectedVersion> = HashMap::with_capacity(batch.len());
    for pending in batch {
        first.entry(&pending.stream).or_insert(pending.expected);
    }
    let total = first.len();
    let mut streams: Vec<&StreamRef> = first
        .into_iter()
        .filter(|(_, expected)| !optimistic || *expected != ExpectedVersion::NO_STREAM)
        .map(|(stream, _)| stream)
        .collect();
    streams.sort_unstable();
    let assumed = streams.len() < total;
    (streams, assumed)
}

/// Splits `items` into runs whose lengths are powers of two, no longer than `max_len` and, past
/// the first item, no larger than `max_bytes` by `size`. Statements of these lengths are few
/// (log2(max_len) + 1), so each connection prepares them once and reuses them, instead of
/// preparing a new statement for every batch size.
pub(crate) fn pow2_chunks<'a, T>(
    items: &'a [T],
    max_len: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize + 'a,
) -> impl Iterator<Item = &'a [T]> + 'a {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut len = 1;
        let mut bytes = size(&rest[0]);
        while len * 2 <= rest.len().min(max_len) {
            let more: usize = rest[len..len * 2].iter().map(&size).sum();
            if bytes + more > max_bytes {
                break;
            }
            bytes += more;
            len *= 2;
        }
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        Some(chunk)
    })
}

/// A backend's half of group commit: write one batch in one transaction.
#[async_trait::async_trait]
pub(crate) trait BatchWriter: Send + Sync + 'static {
    /// Writes the batch and returns each append's outcome in batch order. An `Err` means the
    /// transaction failed as a whole and nothing was written.
    async fn write_batch(
        &self,
        batch: &[PendingAppend],
    ) -> Result<Vec<Result<Appended, EventStoreError>>, sqlx::Error>;
}

enum Msg {
    Append(PendingAppend),
    Close,
}

/// The queue in front of a [`BatchWriter`], and its writer tasks.
pub(crate) struct GroupCommitter {
    queue: mpsc::Sender<Msg>,
    head: Arc<watch::Sender<u64>>,
    writers: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl GroupCommitter {
    /// Starts the writer tasks. Must be called inside a tokio runtime.
    pub(crate) fn start<W: BatchWriter>(writer: Arc<W>, config: &GroupCommitConfig) -> Self {
        let (queue, rx) = mpsc::channel(config.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let head = Arc::new(watch::Sender::new(0));
        let max_batch = config.max_batch_events.max(1);
        let writers = (0..config.writers.max(1))
            .map(|_| {
                tokio::spawn(run_writer(
                    Arc::clone(&writer),
                    Arc::clone(&rx),
                    Arc::clone(&head),
                    max_batch,
                ))
            })
            .collect();
        Self {
            queue,
            head,
            writers: std::sync::Mutex::new(writers),
        }
    }

    pub(crate) async fn append(
        &self,
        stream: StreamRef,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        metadata: &Metadata,
    ) -> Result<Appended, EventStoreError> {
        let (pending, answer) = PendingAppend::new(stream, expected, events, metadata)?;
        self.queue
            .send(Msg::Append(pending))
            .await
            .map_err(|_| EventStoreError::ShuttingDown)?;
        answer.await.map_err(|_| EventStoreError::ShuttingDown)?
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Closes the queue, lets the writers commit what was accepted, and waits for them.
    pub(crate) async fn shutdown(&self) {
        // Ignored error: the writers are already gone.
        let _ = self.queue.send(Msg::Close).await;
        let writers = std::mem::take(
            &mut *self
                .writers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for writer in writers {
            if let Err(e) = writer.await {
                tracing::error!(error = %e, "event store writer task failed");
            }
        }
    }
}

async fn run_writer<W: BatchWriter>(
    writer: Arc<W>,
    rx: Arc<Mutex<mpsc::Receiver<Msg>>>,
    head: Arc<watch::Sender<u64>>,
    max_batch: usize,
) {
    while let Some(batch) = next_batch(&rx, max_batch).await {
        let started = Instant::now();
        let events: usize = batch.iter().map(|p| p.events.len()).sum();
        let result = writer.write_batch(&batch).await;
        metrics::histogram!("openrun_eventstore_batch_seconds").record(started.elapsed());
        metrics::histogram!("openrun_eventstore_batch_appends").record(batch.len() as f64);
        metrics::histogram!("openrun_eventstore_batch_events").record(events as f64);
        match result {
            Ok(outcomes) => {
                let mut highest = 0;
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    if let Ok(appended) = &outcome {
                        highest = highest.max(*appended.positions.end());
                    }
                    // Ignored error: the caller stopped waiting; the append is committed anyway.
                    let _ = pending.reply.send(outcome);
                }
                head.send_if_modified(|h| {
                    let moved = highest > *h;
                    *h = (*h).max(highest);
                    moved
                });
            }
            Err(e) => {
                tracing::error!(error = %e, appends = batch.len(), "event store batch failed");
                let e = EventStoreError::from(e);
                for pending in batch {
                    let _ = pending.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Waits for the next append, then takes whatever else is queued, up to `max_batch` events.
/// Returns `None` once the queue is closed and drained.
async fn next_batch(
    rx: &Mutex<mpsc::Receiver<Msg>>,
    max_batch: usize,
) -> Option<Vec<PendingAppend>> {
    let mut rx = rx.lock().await;
    let mut batch = Vec::new();
    let mut events = 0;
    loop {
        let msg = if batch.is_empty() {
            rx.recv().await?
        } else {
            match rx.try_recv() {
                Ok(msg) => msg,
                Err(_) => break,
            }
        };
        match msg {
            Msg::Append(pending) => {
                events += pending.events.len();
                batch.push(pending);
                if events >= max_batch {
                    break;
                }
            }
            // Stop taking new appends; what is already queued is still written.
            Msg::Close => rx.close(),
        }
    }
    Some(batch)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pending(stream: &str, expected: ExpectedVersion, n: usize) -> PendingAppend {
        let events = (0..n)
            .map(|i| EventData {
                event_type: "Happened".into(),
                event_version: "1.0".into(),
                payload: format!("{{\"i\":{i}}}"),
            })
            .collect();
        let stream = StreamRef::new("t", stream);
        PendingAppend::new(stream, expected, events, &Metadata::default())
            .unwrap()
            .0
    }

    #[test]
    fn chunks_are_powers_of_two_within_the_limits() {
        let items: Vec<usize> = vec![10; 1000];
        let lens: Vec<usize> = pow2_chunks(&items, 512, usize::MAX, |i| *i)
            .map(<[_]>::len)
            .collect();
        assert_eq!(lens, vec![512, 256, 128, 64, 32, 8]);
        let lens: Vec<usize> = pow2_chunks(&items, 512, 35, |i| *i)
            .map(<[_]>::len)
            .collect();
        assert!(lens.iter().all(|l| *l == 2));
        let big = vec![100usize, 1, 1];
        let lens: Vec<usize> = pow2_chunks(&big, 512, 50, |i| *i).map(<[_]>::len).collect();
        assert_eq!(
            lens,
            vec![1, 2],
            "an item larger than the limit still goes, alone"
        );
    }

    #[test]
    fn only_streams_not_expected_new_are_read_when_optimistic() {
        let batch = vec![
            pending("new", ExpectedVersion::NO_STREAM, 1),
            pending("new", ExpectedVersion::Exact(1), 1),
            pending("old", ExpectedVersion::Exact(4), 1),
            pending("any", ExpectedVersion::Any, 1),
        ];
        let (read, assumed) = streams_to_read(&batch, true);
        let ids: Vec<&str> = read.iter().map(|s| s.stream_id.as_str()).collect();
        assert_eq!((ids, assumed), (vec!["any", "old"], true));
        let (read, assumed) = streams_to_read(&batch, false);
        assert_eq!((read.len(), assumed), (3, false));
    }

    #[test]
    fn a_conflicting_append_fails_alone_and_the_rest_of_the_batch_goes_through() {
        let batch = vec![
            pending("a", ExpectedVersion::NO_STREAM, 2),
            pending("b", ExpectedVersion::Exact(3), 1),
            pending("a", ExpectedVersion::NO_STREAM, 1),
            pending("a", ExpectedVersion::Exact(2), 1),
            pending("c", ExpectedVersion::Any, 1),
        ];
        let current = HashMap::from([(StreamRef::new("t", "b"), 3), (StreamRef::new("t", "c"), 7)]);
        let plan = plan(&batch, &current, 10);
        assert_eq!(plan.head, 15);
        assert_eq!(plan.outcomes[0].clone().unwrap().positions, 11..=12);
        assert_eq!(plan.outcomes[1].clone().unwrap().version, 4);
        assert!(matches!(
            plan.outcomes[2],
            Err(EventStoreError::Conflict { actual: 2, .. })
        ));
        assert_eq!(plan.outcomes[3].clone().unwrap().version, 3);
        assert_eq!(plan.outcomes[4].clone().unwrap().version, 8);
        let positions: Vec<u64> = plan.rows.iter().map(|r| r.position).collect();
        assert_eq!(positions, vec![11, 12, 13, 14, 15]);
        let a_versions: Vec<u64> = plan
            .rows
            .iter()
            .filter(|r| r.stream.stream_id == "a")
            .map(|r| r.version)
            .collect();
        assert_eq!(a_versions, vec![1, 2, 3]);
    }
}
