//! The command path: load an aggregate from its stream, decide, append. It is the only way an
//! aggregate stream (product, stock, order) is written; every command of the service, from an
//! HTTP handler or from the scheduler, goes through here.
//!
//! A command's decision instant comes from the injected [`Clock`](crate::clock::Clock). What a
//! command returns tells the truth about the log:
//! - [`Committed`]: the events it appended, the stream's new version and their global
//!   positions (a handler answers with them; an idempotent replay can return them).
//! - [`CommandError::Rejected`]: the domain refused; nothing was written.
//! - [`CommandError::Conflict`]: the stream was not where the command expected; nothing was
//!   written. A create ([`Commands::create`]) is never retried: the caller reads the stream to
//!   learn what won. An update is decided again a few times first.
//! - [`CommandError::OutcomeUnknown`]: the commit was lost on the wire; the events may or may
//!   not be in the log. The caller must read the stream before it releases or retries anything.
//! - [`CommandError::Store`]: the store failed before anything could be written.
//!
//! Events are read back through the domain's upcasters, so an old event shape folds like the
//! current one.

use std::ops::RangeInclusive;
use std::sync::Arc;

use cqrs_es::DomainEvent;
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use openrun_domain::order::{Order, OrderCommand, OrderError, OrderEvent};
use openrun_domain::product::{Product, ProductCommand, ProductError, ProductEvent};
use openrun_domain::stock::{Stock, StockCommand, StockError, StockEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::SharedClock;
use crate::eventstore::{
    CounterMove, EventData, EventStore, EventStoreError, ExpectedVersion, Metadata, RecordedEvent,
    StreamRef,
};

/// Times an update is decided again after its stream moved under it.
pub const CONFLICT_RETRIES: usize = 5;

/// Events read per round trip when loading a stream.
const PAGE: usize = 1000;

/// An aggregate as the command path drives it: a pure decision over its state, and the fold of
/// its events. Implemented for the domain's aggregates by delegating to their `decide` and
/// `apply`.
pub trait Decider: Default + Send + Sync + 'static {
    /// The stream type, for example `order`.
    const TYPE: &'static str;
    /// What it is asked to do.
    type Command: Clone + Send;
    /// What it records.
    type Event: DomainEvent + Serialize + DeserializeOwned + Clone + Send;
    /// Why it refuses.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The events `command` yields at `now`, or why it is refused.
    fn decide(
        &self,
        command: Self::Command,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state.
    fn fold(&mut self, event: &Self::Event);

    /// The guarded counters the events of stream `id` move, appended with them.
    fn counter_moves(id: &str, events: &[Self::Event]) -> Vec<CounterMove>;
}

/// The guarded counter of a variant's units left to sell in the log: supply minus units
/// sold plus units given back. Orders take from it at or above 0, so the log itself refuses
/// an oversell whatever the hot stock store said.
pub fn units_counter(variant: impl std::fmt::Display) -> String {
    format!("stock/{variant}")
}

fn no_counter_moves<E>(_: &str, _: &[E]) -> Vec<CounterMove> {
    Vec::new()
}

/// A stock stream (one per variant) moves its variant's units: additions freely, downward
/// adjustments only while units are left.
fn stock_counter_moves(id: &str, events: &[StockEvent]) -> Vec<CounterMove> {
    events
        .iter()
        .map(|event| match event {
            StockEvent::StockAdded { quantity, .. } => {
                CounterMove::new(units_counter(id), *quantity)
            }
            StockEvent::StockAdjusted { delta, .. } if *delta < 0 => {
                CounterMove::new(units_counter(id), *delta).at_least(0)
            }
            StockEvent::StockAdjusted { delta, .. } => CounterMove::new(units_counter(id), *delta),
        })
        .collect()
}

/// An order takes its lines' units, never below 0; a cancel or a completed return gives them
/// back.
fn order_counter_moves(_: &str, events: &[OrderEvent]) -> Vec<CounterMove> {
    let mut moves = Vec::new();
    for event in events {
        match event {
            OrderEvent::OrderPlaced { lines, .. } => moves.extend(lines.iter().map(|l| {
                CounterMove::new(units_counter(l.variant_id), -i64::from(l.quantity)).at_least(0)
            })),
            OrderEvent::OrderCancelled {
                released: lines, ..
            }
            | OrderEvent::ReturnCompleted {
                restocked: lines, ..
            } => moves.extend(
                lines
                    .iter()
                    .map(|l| CounterMove::new(units_counter(l.variant_id), i64::from(l.quantity))),
            ),
            _ => {}
        }
    }
    moves
}

macro_rules! decider {
    ($aggregate:ty, $module:ident, $command:ty, $event:ty, $error:ty, $moves:expr) => {
        impl Decider for $aggregate {
            const TYPE: &'static str = <$aggregate as cqrs_es::Aggregate>::TYPE;
            type Command = $command;
            type Event = $event;
            type Error = $error;

            fn decide(
                &self,
                command: Self::Command,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<Self::Event>, Self::Error> {
                openrun_domain::$module::decide(self, command, now)
            }

            fn fold(&mut self, event: &Self::Event) {
                openrun_domain::$module::apply(self, event);
            }

            fn counter_moves(id: &str, events: &[Self::Event]) -> Vec<CounterMove> {
                $moves(id, events)
            }
        }
    };
}

decider!(
    Product,
    product,
    ProductCommand,
    ProductEvent,
    ProductError,
    no_counter_moves
);
decider!(
    Order,
    order,
    OrderCommand,
    OrderEvent,
    OrderError,
    order_counter_moves
);
decider!(
    Stock,
    stock,
    StockCommand,
    StockEvent,
    StockError,
    stock_counter_moves
);

/// What a command committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed<E> {
    /// The stream written.
    pub stream: StreamRef,
    /// The events appended, in order (empty when the decision changed nothing).
    pub events: Vec<E>,
    /// The stream's version after the command.
    pub version: u64,
    /// The global positions of the appended events (`None` when nothing was appended).
    pub positions: Option<RangeInclusive<u64>>,
}

/// Why a command did not commit. Each variant keeps its meaning for the caller: only
/// [`CommandError::OutcomeUnknown`] may have written anything.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The domain refused the command; nothing was written.
    #[error(transparent)]
    Rejected(E),
    /// The stream was not at the version the command was decided against; nothing was
    /// written. Read the stream to learn what is there.
    #[error("{stream} is at version {actual}: the command was decided against another version")]
    Conflict {
        /// The stream.
        stream: StreamRef,
        /// Its version when the append was refused.
        actual: u64,
    },
    /// The commit was lost: the events may or may not be in the log. Read the stream before
    /// acting on either outcome.
    #[error("the outcome of the command is unknown: {0}")]
    OutcomeUnknown(#[source] EventStoreError),
    /// A guarded counter the events move would have crossed its floor (fewer units left in
    /// the log than the command takes); nothing was written.
    #[error("counter {counter} is at {value}: not enough left")]
    GuardRefused {
        /// The counter.
        counter: String,
        /// Its value.
        value: i64,
    },
    /// The store failed before anything was written (database down, shutting down, corrupt
    /// stream, malformed input).
    #[error("the command could not be run: {0}")]
    Store(#[source] EventStoreError),
}

impl<E: std::error::Error + 'static> CommandError<E> {
    /// True when the command may have been written despite the error.
    pub fn maybe_written(&self) -> bool {
        matches!(self, Self::OutcomeUnknown(_))
    }

    fn from_store(e: EventStoreError) -> Self {
        match e {
            EventStoreError::Conflict { stream, actual, .. } => Self::Conflict { stream, actual },
            e @ EventStoreError::OutcomeUnknown(_) => Self::OutcomeUnknown(e),
            EventStoreError::GuardRefused { counter, value, .. } => {
                Self::GuardRefused { counter, value }
            }
            e => Self::Store(e),
        }
    }
}

/// An aggregate as loaded from its stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The folded state.
    pub state: A,
    /// The stream's version (0 when it does not exist).
    pub version: u64,
}

/// Executes domain commands against the log.
#[derive(Clone)]
pub struct Commands {
    events: Arc<dyn EventStore>,
    clock: SharedClock,
    upcasters: Arc<[Box<dyn EventUpcaster>]>,
}

impl Commands {
    /// The command path over `events`, deciding at the instants `clock` gives.
    pub fn new(events: Arc<dyn EventStore>, clock: SharedClock) -> Self {
        Self {
            events,
            clock,
            upcasters: openrun_domain::upcasters().into(),
        }
    }

    /// Runs a command on the product stream `id`.
    pub async fn product(
        &self,
        id: &str,
        command: ProductCommand,
        metadata: Metadata,
    ) -> Result<Committed<ProductEvent>, CommandError<ProductError>> {
        self.execute::<Product>(id, command, metadata).await
    }

    /// Runs a command on the stock stream `id` (one per variant).
    pub async fn stock(
        &self,
        id: &str,
        command: StockCommand,
        metadata: Metadata,
    ) -> Result<Committed<StockEvent>, CommandError<StockError>> {
        self.execute::<Stock>(id, command, metadata).await
    }

    /// Runs a command on the order stream `id`.
    pub async fn order(
        &self,
        id: &str,
        command: OrderCommand,
        metadata: Metadata,
    ) -> Result<Committed<OrderEvent>, CommandError<OrderError>> {
        self.execute::<Order>(id, command, metadata).await
    }

    /// Loads, decides and appends at the loaded version; when the stream moved in between,
    /// decides again against the newer state, at most [`CONFLICT_RETRIES`] times.
    pub async fn execute<A: Decider>(
        &self,
        id: &str,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>> {
        let mut attempt = 0;
        loop {
            let loaded = self.load::<A>(id).await?;
            let result = self
                .decide_and_append(
                    id,
                    &loaded.state,
                    loaded.version,
                    command.clone(),
                    &metadata,
                )
                .await;
            match result {
                Err(CommandError::Conflict { .. }) if attempt < CONFLICT_RETRIES => attempt += 1,
                result => return result,
            }
        }
    }

    /// Runs a command only if the stream `id` is at version `expected` (an HTTP `If-Match`):
    /// decided against that version and appended at it, never decided again. A stream
    /// elsewhere, before or during the command, is [`CommandError::Conflict`] with nothing
    /// written, so a client retrying with a stale version cannot apply a change twice.
    pub async fn execute_at<A: Decider>(
        &self,
        id: &str,
        expected: u64,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>> {
        let loaded = self.load::<A>(id).await?;
        if loaded.version != expected {
            return Err(CommandError::Conflict {
                stream: StreamRef::new(A::TYPE, id),
                actual: loaded.version,
            });
        }
        self.decide_and_append(id, &loaded.state, expected, command, &metadata)
            .await
    }

    /// Creates the stream `id`: decides against the empty state and appends at expected
    /// version 0 without reading the log. The store's unique key proves the stream is new; if
    /// it is not, the result is [`CommandError::Conflict`], never retried: read the stream
    /// ([`Commands::load`]) to learn what won.
    pub async fn create<A: Decider>(
        &self,
        id: &str,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>> {
        self.decide_and_append(id, &A::default(), 0, command, &metadata)
            .await
    }

    /// The aggregate's state and version, folded from its stream through the upcasters.
    pub async fn load<A: Decider>(&self, id: &str) -> Result<Loaded<A>, CommandError<A::Error>> {
        let stream = StreamRef::new(A::TYPE, id);
        let mut loaded = Loaded {
            state: A::default(),
            version: 0,
        };
        loop {
            let page = self
                .events
                .read_stream(&stream, loaded.version + 1, PAGE)
                .await
                .map_err(CommandError::Store)?;
            let done = page.len() < PAGE;
            for recorded in page {
                loaded.version = recorded.version;
                let event = self.decode::<A>(recorded).map_err(CommandError::Store)?;
                loaded.state.fold(&event);
            }
            if done {
                return Ok(loaded);
            }
        }
    }

    async fn decide_and_append<A: Decider>(
        &self,
        id: &str,
        state: &A,
        version: u64,
        command: A::Command,
        metadata: &Metadata,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>> {
        let stream = StreamRef::new(A::TYPE, id);
        let events = state
            .decide(command, self.clock.now())
            .map_err(CommandError::Rejected)?;
        if events.is_empty() {
            return Ok(Committed {
                stream,
                events,
                version,
                positions: None,
            });
        }
        let data = events
            .iter()
            .map(|e| EventData::json(e.event_type(), e.event_version(), e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CommandError::Store)?;
        let appended = self
            .events
            .append_moving(
                stream.clone(),
                ExpectedVersion::Exact(version),
                data,
                metadata.clone(),
                A::counter_moves(id, &events),
            )
            .await
            .map_err(CommandError::from_store)?;
        Ok(Committed {
            stream,
            events,
            version: appended.version,
            positions: Some(appended.positions),
        })
    }

    /// The log the commands run on, for reads beside them.
    pub fn events(&self) -> &Arc<dyn EventStore> {
        &self.events
    }

    /// One recorded event of an `A` stream, through the upcasters: how every reader of the
    /// log (the command path, the live catalog) folds old event shapes like current ones.
    pub fn decode<A: Decider>(&self, recorded: RecordedEvent) -> Result<A::Event, EventStoreError> {
        let position = recorded.global_position;
        let mut event = SerializedEvent {
            aggregate_id: recorded.stream_id,
            sequence: usize::try_from(recorded.version).unwrap_or(usize::MAX),
            aggregate_type: recorded.stream_type,
            event_type: recorded.event_type,
            event_version: recorded.event_version,
            payload: recorded.payload,
            metadata: serde_json::Value::Null,
        };
        for upcaster in self.upcasters.iter() {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                event = upcaster.upcast(event);
            }
        }
        serde_json::from_value(event.payload).map_err(|e| EventStoreError::Corrupt {
            position,
            reason: format!("{} does not fold: {e}", A::TYPE),
        })
    }
}
