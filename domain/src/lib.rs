#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

/// The cqrs-es `Aggregate` impl of an aggregate: a thin shim over its pure `decide` and
/// `apply` (in scope where the macro is used), with [`Stamped`] commands.
macro_rules! aggregate_shim {
    ($aggregate:ty, $type:literal, $command:ty, $event:ty, $error:ty) => {
        impl cqrs_es::Aggregate for $aggregate {
            const TYPE: &'static str = $type;
            type Command = $crate::Stamped<$command>;
            type Event = $event;
            type Error = $error;
            type Services = ();

            async fn handle(
                &mut self,
                command: Self::Command,
                _services: &Self::Services,
                sink: &cqrs_es::event_sink::EventSink<Self>,
            ) -> Result<(), Self::Error> {
                for event in decide(self, command.command, command.now)? {
                    sink.write(event, self).await;
                }
                Ok(())
            }

            fn apply(&mut self, event: Self::Event) {
                apply(self, &event);
            }
        }
    };
}

pub mod actor;
pub mod ids;
pub mod money;
pub mod order;
pub mod policy;
pub mod product;
mod stamped;
pub mod stock;

pub use actor::{Actor, Issuer, Role};
pub use ids::{CategoryId, MemberId, OrderId, ProductId, ScheduleId, VariantId};
pub use money::Money;
pub use policy::OrderPolicy;
pub use stamped::Stamped;

use cqrs_es::persist::EventUpcaster;

/// Every event upcaster of the domain, oldest first, for cqrs-es's
/// `PersistedEventStore::with_upcasters`.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    let mut upcasters = product::upcasters();
    upcasters.extend(order::upcasters());
    upcasters
}
