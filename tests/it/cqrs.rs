//! cqrs-es running its aggregates, upcasters and framework on our event store.

use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, SemanticVersionEventUpcaster,
    SerializedEvent,
};
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, DomainEvent};
use openrun::eventstore::cqrs::{CqrsEventRepository, keys};
use openrun::eventstore::{EventData, ExpectedVersion, Metadata, StreamRef};
use serde::{Deserialize, Serialize};

use crate::helpers::{Backend, StoreFixture, on_both_backends};

on_both_backends!(
    the_framework_executes_commands_on_our_store,
    a_stale_sequence_is_an_optimistic_lock_error,
    upcasters_apply_to_events_loaded_from_our_store,
);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    total: i64,
}

#[derive(Debug)]
enum CounterCommand {
    Add(i64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Added { by: i64 },
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        "Added".into()
    }
    fn event_version(&self) -> String {
        "2.0".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = Refused;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Refused> {
        let CounterCommand::Add(by) = command;
        if by == 0 {
            return Err(Refused);
        }
        sink.write(CounterEvent::Added { by }, self).await;
        Ok(())
    }

    fn apply(&mut self, event: CounterEvent) {
        let CounterEvent::Added { by } = event;
        self.total += by;
    }
}

async fn the_framework_executes_commands_on_our_store(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let store = PersistedEventStore::<_, Counter>::new_event_store(CqrsEventRepository::new(
        f.events.clone(),
    ));
    let cqrs = CqrsFramework::new(store, vec![], ());
    let correlation = uuid::Uuid::now_v7();
    let metadata = HashMap::from([
        (keys::CORRELATION_ID.to_string(), correlation.to_string()),
        (keys::ACTOR.to_string(), "member:42".to_string()),
    ]);
    cqrs.execute_with_metadata("c1", CounterCommand::Add(5), metadata.clone())
        .await
        .unwrap();
    cqrs.execute_with_metadata("c1", CounterCommand::Add(-2), metadata)
        .await
        .unwrap();
    assert!(matches!(
        cqrs.execute("c1", CounterCommand::Add(0)).await,
        Err(AggregateError::UserError(Refused))
    ));
    let stored = f
        .events
        .read_stream(&StreamRef::new("counter", "c1"), 1, 10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].version, 2);
    assert_eq!(stored[1].event_type, "Added");
    assert_eq!(stored[1].payload, serde_json::json!({"Added": {"by": -2}}));
    assert_eq!(stored[0].metadata.correlation_id, Some(correlation));
    assert_eq!(stored[0].metadata.actor.as_deref(), Some("member:42"));
    let repo = CqrsEventRepository::new(f.events.clone());
    let loaded = repo.get_events::<Counter>("c1").await.unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[0].metadata["actor"], "member:42");
}

async fn a_stale_sequence_is_an_optimistic_lock_error(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    let repo = CqrsEventRepository::new(f.events.clone());
    let event = |sequence| SerializedEvent {
        aggregate_id: "c1".into(),
        sequence,
        aggregate_type: "counter".into(),
        event_type: "Added".into(),
        event_version: "2.0".into(),
        payload: serde_json::json!({"Added": {"by": 1}}),
        metadata: serde_json::json!({}),
    };
    repo.persist::<Counter>(&[event(1), event(2)], None)
        .await
        .unwrap();
    let err = repo
        .persist::<Counter>(&[event(2)], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PersistenceError::OptimisticLockError),
        "{err:?}"
    );
    repo.persist::<Counter>(&[event(3)], None).await.unwrap();
}

async fn upcasters_apply_to_events_loaded_from_our_store(backend: Backend) {
    let f = StoreFixture::new(backend).await;
    // An event stored in its old 1.0 shape, which called the field `amount`.
    let old =
        EventData::json("Added", "1.0", &serde_json::json!({"Added": {"amount": 7}})).unwrap();
    f.events
        .append(
            StreamRef::new("counter", "c1"),
            ExpectedVersion::NO_STREAM,
            vec![old],
            Metadata::default(),
        )
        .await
        .unwrap();
    let upcaster = SemanticVersionEventUpcaster::new(
        "Added",
        "2.0",
        Box::new(|mut payload| {
            let amount = payload["Added"]["amount"].take();
            serde_json::json!({"Added": {"by": amount}})
        }),
    );
    let store = PersistedEventStore::<_, Counter>::new_event_store(CqrsEventRepository::new(
        f.events.clone(),
    ))
    .with_upcasters(vec![Box::new(upcaster)]);
    let cqrs = CqrsFramework::new(store, vec![], ());
    cqrs.execute("c1", CounterCommand::Add(3)).await.unwrap();
    let stored = f
        .events
        .read_stream(&StreamRef::new("counter", "c1"), 1, 10)
        .await
        .unwrap();
    assert_eq!(
        stored.len(),
        2,
        "the aggregate loaded the upcast event and appended at version 2"
    );
    // Load once more through the framework's store and check the folded state.
    let store = PersistedEventStore::<_, Counter>::new_event_store(CqrsEventRepository::new(
        f.events.clone(),
    ))
    .with_upcasters(vec![Box::new(SemanticVersionEventUpcaster::new(
        "Added",
        "2.0",
        Box::new(|mut payload| {
            let amount = payload["Added"]["amount"].take();
            serde_json::json!({"Added": {"by": amount}})
        }),
    ))]);
    let context = cqrs_es::EventStore::load_aggregate(&store, "c1")
        .await
        .unwrap();
    assert_eq!(context.aggregate.total, 10);
}
