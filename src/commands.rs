//! The command path: load an aggregate from its stream, decide, append. Every command of the
//! service, from an HTTP handler or from the scheduler, goes through here.
//!
//! It runs cqrs-es's `CqrsFramework` over our event store (with the domain's upcasters), and
//! retries a command whose stream moved between load and append (a version conflict) a few
//! times, deciding again against the newer state.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework};
use openrun_domain::Stamped;
use openrun_domain::order::{Order, OrderCommand};
use openrun_domain::product::{Product, ProductCommand};

use crate::eventstore::EventStore;
use crate::eventstore::cqrs::CqrsEventRepository;

/// Times a command is decided again after a version conflict.
const CONFLICT_RETRIES: usize = 5;

type Framework<A> = CqrsFramework<A, PersistedEventStore<CqrsEventRepository, A>>;

/// Executes domain commands against the log.
pub struct Commands {
    products: Framework<Product>,
    orders: Framework<Order>,
}

fn framework<A: Aggregate<Services = ()>>(events: &Arc<dyn EventStore>) -> Framework<A> {
    let store = PersistedEventStore::new_event_store(CqrsEventRepository::new(Arc::clone(events)))
        .with_upcasters(openrun_domain::upcasters());
    CqrsFramework::new(store, vec![], ())
}

impl Commands {
    /// The command path over `events`.
    pub fn new(events: &Arc<dyn EventStore>) -> Self {
        Self {
            products: framework(events),
            orders: framework(events),
        }
    }

    /// Runs a product command, decided now.
    pub async fn product(
        &self,
        product_id: &str,
        command: ProductCommand,
        metadata: HashMap<String, String>,
    ) -> Result<(), AggregateError<openrun_domain::product::ProductError>> {
        execute(&self.products, product_id, command, metadata).await
    }

    /// Runs an order command, decided now.
    pub async fn order(
        &self,
        order_id: &str,
        command: OrderCommand,
        metadata: HashMap<String, String>,
    ) -> Result<(), AggregateError<openrun_domain::order::OrderError>> {
        execute(&self.orders, order_id, command, metadata).await
    }
}

async fn execute<A, C>(
    framework: &Framework<A>,
    id: &str,
    command: C,
    metadata: HashMap<String, String>,
) -> Result<(), AggregateError<A::Error>>
where
    A: Aggregate<Command = Stamped<C>, Services = ()>,
    C: Clone,
{
    let mut attempt = 0;
    loop {
        let stamped = Stamped::new(command.clone(), Utc::now());
        match framework
            .execute_with_metadata(id, stamped, metadata.clone())
            .await
        {
            Err(AggregateError::AggregateConflict) if attempt < CONFLICT_RETRIES => attempt += 1,
            result => return result,
        }
    }
}
