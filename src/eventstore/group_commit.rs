//! Group commit: many concurrent appends, one transaction and one commit.
//!
//! Callers put their append on a queue and wait on a one-shot reply. A small number of writer
//! tasks (one per backend connection that may write) each take everything queued, up to
//! [`GroupCommitConfig::max_batch_events`], and hand it to the backend as one batch. Under load
//! the queue fills while a batch commits, so batches grow with concurrency and the cost of the
//! commit (the fsync) is shared by all of them.
//!
//! Deciding which appends of a batch go through is pure and lives in [`plan`]: appends are
//! taken in arrival order, each is checked against the stream's version and the guarded
//! counters as left by the appends before it, and a conflicting append, or one that would
//! take a counter below its floor, is refused alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::model::{
    Appended, CounterMove, EventData, EventStoreError, ExpectedVersion, MAX_APPEND_COUNTER_MOVES,
    MAX_APPEND_EVENTS, MAX_METADATA_BYTES, Metadata, StreamRef,
};

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
    /// Most bytes of payload and metadata in one transaction (a batch of large events stays
    /// far below the server's packet limit and this process's memory). A single append larger
    /// than this is still written, alone.
    pub max_batch_bytes: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 2000,
            writers: 2,
            queue_capacity: 16_384,
            max_batch_bytes: 8 << 20,
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
    /// The guarded counters the append moves.
    pub counters: Vec<CounterMove>,
    reply: oneshot::Sender<Result<Appended, EventStoreError>>,
}

impl PendingAppend {
    /// An append and the receiver its outcome will be sent to.
    pub(crate) fn new(
        stream: StreamRef,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        metadata: &Metadata,
        counters: Vec<CounterMove>,
    ) -> Result<(Self, oneshot::Receiver<Result<Appended, EventStoreError>>), EventStoreError> {
        stream.validate()?;
        if events.is_empty() || events.len() > MAX_APPEND_EVENTS {
            return Err(EventStoreError::InvalidInput(format!(
                "an append needs 1 to {MAX_APPEND_EVENTS} events"
            )));
        }
        for event in &events {
            event.validate()?;
        }
        if counters.len() > MAX_APPEND_COUNTER_MOVES {
            return Err(EventStoreError::InvalidInput(format!(
                "an append moves at most {MAX_APPEND_COUNTER_MOVES} counters"
            )));
        }
        for counter in &counters {
            counter.validate()?;
        }
        let metadata = serde_json::to_string(metadata)
            .map_err(|e| EventStoreError::InvalidInput(format!("metadata: {e}")))?;
        if metadata.len() > MAX_METADATA_BYTES {
            return Err(EventStoreError::InvalidInput(format!(
                "the metadata must be at most {MAX_METADATA_BYTES} bytes of JSON"
            )));
        }
        let (reply, answer) = oneshot::channel();
        let pending = Self {
            stream,
            expected,
            events,
            metadata,
            counters,
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

/// What a batch will do: the rows to insert, each caller's outcome, the new head position, and
/// the new value of every counter the accepted appends moved (sorted by name).
pub(crate) struct Plan<'a> {
    pub rows: Vec<PlannedRow<'a>>,
    pub outcomes: Vec<Result<Appended, EventStoreError>>,
    pub head: u64,
    pub counters: Vec<(&'a str, i64)>,
}

/// Plans a batch against the streams' current versions, the counters' current values and the
/// current head position. `current` holds the version of every stream of the batch that
/// exists, `counters` the value of every counter of the batch that exists; absent means 0.
pub(crate) fn plan<'a>(
    batch: &'a [PendingAppend],
    current: &HashMap<StreamRef, u64>,
    counters: &HashMap<String, i64>,
    head: u64,
) -> Plan<'a> {
    let mut versions: HashMap<&StreamRef, u64> = HashMap::with_capacity(batch.len());
    let mut values: HashMap<&str, i64> = HashMap::new();
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
        let moved = match move_counters(&pending.counters, &values, counters) {
            Ok(moved) => moved,
            Err(refused) => {
                outcomes.push(Err(refused));
                continue;
            }
        };
        values.extend(moved);
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
    let mut counters: Vec<(&str, i64)> = values.into_iter().collect();
    counters.sort_unstable();
    Plan {
        rows,
        outcomes,
        head: position,
        counters,
    }
}

/// The values `moves` leave, applied in order to the counters as the earlier appends of the
/// batch left them (`values`) or as stored (`stored`); or why the append must be refused.
fn move_counters<'a>(
    moves: &'a [CounterMove],
    values: &HashMap<&'a str, i64>,
    stored: &HashMap<String, i64>,
) -> Result<HashMap<&'a str, i64>, EventStoreError> {
    let mut moved: HashMap<&str, i64> = HashMap::with_capacity(moves.len());
    for m in moves {
        let name = m.counter.as_str();
        let value = moved
            .get(name)
            .or_else(|| values.get(name))
            .or_else(|| stored.get(name))
            .copied()
            .unwrap_or(0);
        let refused = || EventStoreError::GuardRefused {
            counter: m.counter.clone(),
            value,
            delta: m.delta,
        };
        let next = value.checked_add(m.delta).ok_or_else(refused)?;
        if m.floor.is_some_and(|floor| next < floor) {
            return Err(refused());
        }
        moved.insert(name, next);
    }
    Ok(moved)
}

/// The counters a backend must read before planning a batch, sorted and without repeats.
pub(crate) fn counters_to_read(batch: &[PendingAppend]) -> Vec<&str> {
    let mut names: Vec<&str> = batch
        .iter()
        .flat_map(|p| p.counters.iter().map(|m| m.counter.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
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

/// Why a batch's transaction failed.
#[derive(Debug)]
pub(crate) enum BatchFailure {
    /// Before the commit was sent: nothing was written.
    Before(sqlx::Error),
    /// While committing: the batch may or may not have been written.
    AtCommit(sqlx::Error),
}

impl From<sqlx::Error> for BatchFailure {
    fn from(e: sqlx::Error) -> Self {
        Self::Before(e)
    }
}

/// A backend's half of group commit: write one batch in one transaction.
#[async_trait::async_trait]
pub(crate) trait BatchWriter: Send + Sync + 'static {
    /// Writes the batch and returns each append's outcome in batch order. An `Err` means the
    /// transaction failed as a whole, and says whether anything may have been written.
    async fn write_batch(
        &self,
        batch: &[PendingAppend],
    ) -> Result<Vec<Result<Appended, EventStoreError>>, BatchFailure>;
}

enum Msg {
    Append(PendingAppend),
    Close,
}

/// The queue in front of a [`BatchWriter`], and its writer tasks.
pub(crate) struct GroupCommitter {
    queue: mpsc::Sender<Msg>,
    accepted: std::sync::atomic::AtomicU64,
    /// Set once a shutdown has closed the queue and waits for the writers.
    closing: std::sync::atomic::AtomicBool,
    /// Batches the writers have taken off the queue so far.
    batches: Arc<std::sync::atomic::AtomicU64>,
    head: Arc<watch::Sender<u64>>,
    writers: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl GroupCommitter {
    /// Starts the writer tasks. Must be called inside a tokio runtime.
    pub(crate) fn start<W: BatchWriter>(writer: Arc<W>, config: &GroupCommitConfig) -> Self {
        let (queue, rx) = mpsc::channel(config.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(Queue { rx, carry: None }));
        let head = Arc::new(watch::Sender::new(0));
        let max_batch = Limits {
            events: config.max_batch_events.max(1),
            bytes: config.max_batch_bytes.max(1),
        };
        let batches = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writers = (0..config.writers.max(1))
            .map(|_| {
                tokio::spawn(run_writer(
                    Arc::clone(&writer),
                    Arc::clone(&rx),
                    Arc::clone(&head),
                    Arc::clone(&batches),
                    max_batch,
                ))
            })
            .collect();
        Self {
            queue,
            accepted: std::sync::atomic::AtomicU64::new(0),
            closing: std::sync::atomic::AtomicBool::new(false),
            batches,
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
        counters: Vec<CounterMove>,
    ) -> Result<Appended, EventStoreError> {
        let (pending, answer) = PendingAppend::new(stream, expected, events, metadata, counters)?;
        self.queue
            .send(Msg::Append(pending))
            .await
            .map_err(|_| EventStoreError::ShuttingDown)?;
        self.accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Once accepted, the append may be in a batch that committed: a writer that went away
        // without answering leaves the outcome unknown, never "not written".
        answer
            .await
            .map_err(|_| EventStoreError::OutcomeUnknown(Arc::new(sqlx::Error::WorkerCrashed)))?
    }

    /// Appends taken onto the queue so far (each will be written, even across a shutdown).
    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Batches taken off the queue by the writers so far (each is being or was written).
    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether a shutdown has closed the queue (it then waits for the writers).
    pub(crate) fn closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Closes the queue, lets the writers commit what was accepted, and waits for them.
    pub(crate) async fn shutdown(&self) {
        // Ignored error: the writers are already gone.
        let _ = self.queue.send(Msg::Close).await;
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
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
    rx: Arc<Mutex<Queue>>,
    head: Arc<watch::Sender<u64>>,
    batches: Arc<std::sync::atomic::AtomicU64>,
    max_batch: Limits,
) {
    while let Some(batch) = next_batch(&rx, max_batch).await {
        batches.fetch_add(1, std::sync::atomic::Ordering::Release);
        let started = Instant::now();
        let events: usize = batch.iter().map(|p| p.events.len()).sum();
        let result = writer.write_batch(&batch).await;
        metrics::histogram!("openrun_eventstore_batch_seconds").record(started.elapsed());
        metrics::histogram!("openrun_eventstore_batch_appends").record(batch.len() as f64);
        metrics::histogram!("openrun_eventstore_batch_events").record(events as f64);
        match result {
            Ok(outcomes) => reply(&head, batch, outcomes),
            // The server refused a statement (not the connection failing): nothing was
            // written, and one append may be the cause, so each is written on its own and
            // only the culprit fails.
            Err(BatchFailure::Before(sqlx::Error::Database(e)))
                if batch.len() > 1 && caused_by_data(e.as_ref()) =>
            {
                tracing::warn!(error = %e, appends = batch.len(),
                    "event store batch refused; writing its appends one by one");
                for pending in batch {
                    let outcome = match writer.write_batch(std::slice::from_ref(&pending)).await {
                        Ok(mut outcomes) => outcomes.pop().unwrap_or_else(|| {
                            Err(EventStoreError::InvalidInput("empty append".into()))
                        }),
                        Err(failure) => Err(failed(failure, 1)),
                    };
                    reply(&head, vec![pending], vec![outcome]);
                }
            }
            Err(failure) => {
                let e = failed(failure, batch.len());
                for pending in batch {
                    let _ = pending.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Whether the server refused a statement because of the data in it (too long, out of range,
/// not valid for its column), which one append's input may cause; not a lock wait, deadlock
/// or read-only server, which would fail every append again.
fn caused_by_data(e: &dyn sqlx::error::DatabaseError) -> bool {
    use sqlx::error::ErrorKind;
    if let Some(mysql) = e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        // Null, out of range, truncated, bad string, too long, bad JSON, check failed.
        return matches!(
            mysql.number(),
            1048 | 1264 | 1292 | 1366 | 1406 | 3140 | 4025
        );
    }
    matches!(
        e.kind(),
        ErrorKind::NotNullViolation | ErrorKind::CheckViolation
    ) || e.code().as_deref() == Some("18") // SQLITE_TOOBIG
}

/// Sends each caller its outcome and moves the head past what was written.
fn reply(
    head: &watch::Sender<u64>,
    batch: Vec<PendingAppend>,
    outcomes: Vec<Result<Appended, EventStoreError>>,
) {
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

/// Logs a failed batch and turns the failure into what its callers are told.
fn failed(failure: BatchFailure, appends: usize) -> EventStoreError {
    match failure {
        BatchFailure::Before(e) => {
            tracing::error!(error = %e, appends, "event store batch failed");
            EventStoreError::from(e)
        }
        BatchFailure::AtCommit(e) => {
            tracing::error!(error = %e, appends, "event store commit failed; outcome unknown");
            EventStoreError::OutcomeUnknown(Arc::new(e))
        }
    }
}

/// The bounds of one batch.
#[derive(Debug, Clone, Copy)]
struct Limits {
    events: usize,
    bytes: usize,
}

/// The queue as the writers share it, with the append that did not fit the last batch.
struct Queue {
    rx: mpsc::Receiver<Msg>,
    carry: Option<PendingAppend>,
}

impl PendingAppend {
    /// Bytes this append puts in a transaction (payloads and metadata).
    fn bytes(&self) -> usize {
        self.metadata.len() + self.events.iter().map(|e| e.payload.len()).sum::<usize>()
    }
}

/// Waits for the next append, then takes whatever else is queued, up to `max` events and
/// bytes (an append that would pass either bound waits for the next batch, unless it is the
/// batch's first). Returns `None` once the queue is closed and drained.
async fn next_batch(queue: &Mutex<Queue>, max: Limits) -> Option<Vec<PendingAppend>> {
    let mut queue = queue.lock().await;
    let mut batch: Vec<PendingAppend> = Vec::new();
    let (mut events, mut bytes) = (0, 0);
    loop {
        let pending = if let Some(carried) = queue.carry.take() {
            carried
        } else {
            let msg = if batch.is_empty() {
                queue.rx.recv().await?
            } else {
                match queue.rx.try_recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                }
            };
            match msg {
                Msg::Append(pending) => pending,
                // Stop taking new appends; what is already queued is still written.
                Msg::Close => {
                    queue.rx.close();
                    continue;
                }
            }
        };
        let (more_events, more_bytes) = (pending.events.len(), pending.bytes());
        if !batch.is_empty()
            && (events + more_events > max.events || bytes + more_bytes > max.bytes)
        {
            queue.carry = Some(pending);
            break;
        }
        events += more_events;
        bytes += more_bytes;
        batch.push(pending);
        if events >= max.events || bytes >= max.bytes {
            break;
        }
    }
    Some(batch)
}

/// The group-commit settings as read (`EVENT_BATCH_MAX`, `EVENT_WRITERS`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct RawSettings {
    pub(crate) event_batch_max: usize,
    pub(crate) event_writers: usize,
}

impl Default for RawSettings {
    fn default() -> Self {
        let tuned = GroupCommitConfig::default();
        Self {
            event_batch_max: tuned.max_batch_events,
            event_writers: tuned.writers,
        }
    }
}

impl RawSettings {
    pub(crate) fn validate(self) -> Result<GroupCommitConfig, crate::config::ConfigError> {
        if self.event_batch_max == 0 || self.event_writers == 0 {
            return Err(crate::config::ConfigError::new(
                "EVENT_BATCH_MAX and EVENT_WRITERS",
                "must be at least 1",
            ));
        }
        Ok(GroupCommitConfig {
            max_batch_events: self.event_batch_max,
            writers: self.event_writers,
            ..GroupCommitConfig::default()
        })
    }
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
        PendingAppend::new(stream, expected, events, &Metadata::default(), Vec::new())
            .unwrap()
            .0
    }

    fn moving(stream: &str, counters: Vec<CounterMove>) -> PendingAppend {
        let mut append = pending(stream, ExpectedVersion::Any, 1);
        append.counters = counters;
        append
    }

    /// Batches are bounded by bytes as well as by events: an append that would pass either
    /// bound waits for the next batch; one larger than the bound goes alone.
    #[tokio::test]
    async fn batches_are_bounded_by_bytes_and_by_events() {
        let (tx, rx) = mpsc::channel(64);
        let queue = Mutex::new(Queue { rx, carry: None });
        let one = pending("a", ExpectedVersion::Any, 1).bytes();
        for (i, n) in [1, 1, 1, 40, 1, 1].into_iter().enumerate() {
            let append = pending(&format!("s{i}"), ExpectedVersion::Any, n);
            tx.send(Msg::Append(append)).await.unwrap();
        }
        drop(tx);
        // Room for three one-event appends by bytes, at most ten events.
        let max = Limits {
            events: 10,
            bytes: 3 * one + one / 2,
        };
        let mut sizes = Vec::new();
        while let Some(batch) = next_batch(&queue, max).await {
            assert!(
                batch.len() == 1
                    || batch.iter().map(PendingAppend::bytes).sum::<usize>() <= max.bytes,
                "a batch of several appends passed the byte bound"
            );
            sizes.push(batch.iter().map(|p| p.events.len()).collect::<Vec<_>>());
        }
        assert_eq!(sizes, [vec![1, 1, 1], vec![40], vec![1, 1]]);
    }

    /// A server-side refusal, as the database would report it: caused by the data (a check
    /// failed) or not (a lock wait timed out).
    #[derive(Debug)]
    struct Refused(bool);

    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("refused")
        }
    }

    impl std::error::Error for Refused {}

    impl sqlx::error::DatabaseError for Refused {
        fn message(&self) -> &str {
            "refused"
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            if self.0 {
                sqlx::error::ErrorKind::CheckViolation
            } else {
                sqlx::error::ErrorKind::Other
            }
        }
    }

    /// A writer that holds batches with the stream `gate` until released, refuses any batch
    /// holding the stream `poison` (or `lost`, at commit), and records each batch's size.
    struct FakeWriter {
        gate: tokio::sync::Semaphore,
        sizes: std::sync::Mutex<Vec<usize>>,
        next: std::sync::atomic::AtomicU64,
    }

    impl Default for FakeWriter {
        fn default() -> Self {
            Self {
                gate: tokio::sync::Semaphore::new(0),
                sizes: std::sync::Mutex::default(),
                next: std::sync::atomic::AtomicU64::default(),
            }
        }
    }

    #[async_trait::async_trait]
    impl BatchWriter for FakeWriter {
        async fn write_batch(
            &self,
            batch: &[PendingAppend],
        ) -> Result<Vec<Result<Appended, EventStoreError>>, BatchFailure> {
            self.sizes.lock().unwrap().push(batch.len());
            let has = |id: &str| batch.iter().any(|p| p.stream.stream_id == id);
            if has("gate") {
                self.gate.acquire().await.unwrap().forget();
            }
            if has("poison") || has("locked") {
                let by_data = has("poison");
                return Err(BatchFailure::Before(sqlx::Error::Database(Box::new(
                    Refused(by_data),
                ))));
            }
            if has("lost") {
                return Err(BatchFailure::AtCommit(sqlx::Error::PoolClosed));
            }
            Ok(batch
                .iter()
                .map(|_| {
                    let at = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    Ok(Appended {
                        version: 1,
                        positions: at..=at,
                    })
                })
                .collect())
        }
    }

    async fn append_to(committer: &GroupCommitter, id: &str) -> Result<Appended, EventStoreError> {
        let events = vec![EventData {
            event_type: "Happened".into(),
            event_version: "1.0".into(),
            payload: "{}".into(),
        }];
        committer
            .append(
                StreamRef::new("t", id),
                ExpectedVersion::NO_STREAM,
                events,
                &Metadata::default(),
                Vec::new(),
            )
            .await
    }

    #[tokio::test]
    async fn an_append_the_server_refuses_fails_alone_and_a_lost_commit_is_unknown() {
        let writer = Arc::new(FakeWriter::default());
        let config = GroupCommitConfig {
            writers: 1,
            ..GroupCommitConfig::default()
        };
        let committer = Arc::new(GroupCommitter::start(Arc::clone(&writer), &config));
        let gate = tokio::spawn({
            let committer = Arc::clone(&committer);
            async move { append_to(&committer, "gate").await }
        });
        let queued = |n: usize| committer.queue.max_capacity() - committer.queue.capacity() == n;
        while writer.sizes.lock().unwrap().is_empty() || !queued(0) {
            tokio::task::yield_now().await;
        }
        let others: Vec<_> = ["a", "b", "poison", "c", "d"]
            .into_iter()
            .map(|id| {
                let committer = Arc::clone(&committer);
                tokio::spawn(async move { append_to(&committer, id).await })
            })
            .collect();
        while !queued(5) {
            tokio::task::yield_now().await;
        }
        writer.gate.add_permits(1);
        assert!(gate.await.unwrap().is_ok());
        let outcomes: Vec<_> = futures_util::future::join_all(others)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert!(matches!(outcomes[2], Err(EventStoreError::Database(_))));
        for i in [0, 1, 3, 4] {
            assert!(outcomes[i].is_ok(), "{i}: {:?}", outcomes[i]);
        }
        assert_eq!(*writer.sizes.lock().unwrap(), vec![1, 5, 1, 1, 1, 1, 1]);

        // A refusal that is not the data's doing (a lock wait timed out) would only repeat
        // for each append: the batch fails as one.
        writer.sizes.lock().unwrap().clear();
        let gate = tokio::spawn({
            let committer = Arc::clone(&committer);
            async move { append_to(&committer, "gate").await }
        });
        while writer.sizes.lock().unwrap().is_empty() || !queued(0) {
            tokio::task::yield_now().await;
        }
        let others: Vec<_> = ["e", "locked", "f"]
            .into_iter()
            .map(|id| {
                let committer = Arc::clone(&committer);
                tokio::spawn(async move { append_to(&committer, id).await })
            })
            .collect();
        while !queued(3) {
            tokio::task::yield_now().await;
        }
        writer.gate.add_permits(1);
        assert!(gate.await.unwrap().is_ok());
        for outcome in futures_util::future::join_all(others).await {
            assert!(matches!(
                outcome.unwrap(),
                Err(EventStoreError::Database(_))
            ));
        }
        assert_eq!(*writer.sizes.lock().unwrap(), vec![1, 3]);

        // A commit that fails on the wire is not "nothing written": it is unknown.
        assert!(matches!(
            append_to(&committer, "lost").await,
            Err(EventStoreError::OutcomeUnknown(_))
        ));
        committer.shutdown().await;
    }

    #[test]
    fn payloads_must_be_json_and_appends_bounded() {
        // JSON text from elsewhere is checked when the event is made, the rest on append.
        let event = |payload: String| EventData::from_json_text("Happened", "1.0", payload);
        let new = |events: Vec<Result<EventData, EventStoreError>>, metadata: &Metadata| {
            PendingAppend::new(
                StreamRef::new("t", "s"),
                ExpectedVersion::Any,
                events.into_iter().collect::<Result<_, _>>()?,
                metadata,
                Vec::new(),
            )
            .map(drop)
        };
        let plain = Metadata::default();
        let invalid = |r: Result<(), EventStoreError>| {
            assert!(matches!(r, Err(EventStoreError::InvalidInput(_))), "{r:?}");
        };
        assert!(new(vec![event("{\"a\":1}".into())], &plain).is_ok());
        invalid(new(vec![event("{not json".into())], &plain));
        invalid(new(vec![event(String::new())], &plain));
        // What a lighter check would let through and every reader would then refuse.
        invalid(new(vec![event(r#"{"a":"\udc00"}"#.into())], &plain));
        invalid(new(vec![event(r#"{"a":1e400}"#.into())], &plain));
        invalid(new(vec![event("[".repeat(200) + &"]".repeat(200))], &plain));
        let big = format!("\"{}\"", "x".repeat(super::super::model::MAX_PAYLOAD_BYTES));
        invalid(new(vec![event(big)], &plain));
        invalid(new(vec![], &plain));
        let many = (0..=MAX_APPEND_EVENTS)
            .map(|_| event("{}".into()))
            .collect();
        invalid(new(many, &plain));
        let long_key = Metadata {
            idempotency_key: Some("k".repeat(MAX_METADATA_BYTES)),
            ..Metadata::default()
        };
        invalid(new(vec![event("{}".into())], &long_key));
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
        let plan = plan(&batch, &current, &HashMap::new(), 10);
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

    #[test]
    fn an_append_that_would_cross_a_floor_fails_alone_and_moves_nothing() {
        let take = |n: i64| CounterMove::new("units", -n).at_least(0);
        let batch = vec![
            moving("a", vec![take(3)]),
            // Two moves of one append: the second would cross, so neither happens.
            moving("b", vec![CounterMove::new("other", 5), take(2)]),
            moving("c", vec![take(1)]),
            // Unchecked moves go through whatever the value.
            moving("d", vec![CounterMove::new("units", -10)]),
            moving("e", vec![take(1)]),
            moving("f", vec![CounterMove::new("units", i64::MIN)]),
        ];
        let stored = HashMap::from([("units".to_string(), 4)]);
        let plan = plan(&batch, &HashMap::new(), &stored, 0);
        let refused: Vec<bool> = plan.outcomes.iter().map(Result::is_err).collect();
        assert_eq!(refused, [false, true, false, false, true, true]);
        assert!(matches!(
            &plan.outcomes[1],
            Err(EventStoreError::GuardRefused { counter, value: 1, delta: -2 }) if counter == "units"
        ));
        assert!(matches!(
            &plan.outcomes[4],
            Err(EventStoreError::GuardRefused { value: -10, .. })
        ));
        assert_eq!(plan.counters, vec![("units", -10)], "`other` never moved");
        assert_eq!(plan.rows.len(), 3);
        assert_eq!(plan.head, 3);
        assert_eq!(counters_to_read(&batch), vec!["other", "units"]);
    }

    #[test]
    fn counter_moves_are_bounded_and_named_like_streams() {
        let with = |counters: Vec<CounterMove>| {
            PendingAppend::new(
                StreamRef::new("t", "s"),
                ExpectedVersion::Any,
                vec![EventData::json("Happened", "1.0", &1).unwrap()],
                &Metadata::default(),
                counters,
            )
            .map(drop)
        };
        assert!(with(vec![CounterMove::new("stock/v1", 1)]).is_ok());
        for bad in [String::new(), "a b".into(), "x".repeat(129), "é".into()] {
            assert!(matches!(
                with(vec![CounterMove::new(bad, 1)]),
                Err(EventStoreError::InvalidInput(_))
            ));
        }
        let many = (0..=MAX_APPEND_COUNTER_MOVES)
            .map(|i| CounterMove::new(format!("c{i}"), 1))
            .collect();
        assert!(matches!(with(many), Err(EventStoreError::InvalidInput(_))));
    }
}
