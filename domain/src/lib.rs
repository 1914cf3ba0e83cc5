#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod actor;
pub mod ids;
pub mod money;
pub mod order;
pub mod policy;
pub mod product;
mod stamped;
pub mod stock;

pub use actor::{Actor, Issuer, Role};
pub use ids::{CategoryId, MemberId, OrderId, ProductId, ScheduleId};
pub use money::Money;
pub use policy::OrderPolicy;
pub use stamped::Stamped;

use cqrs_es::persist::EventUpcaster;

/// Every event upcaster of the domain, oldest first, for cqrs-es's
/// `PersistedEventStore::with_upcasters`.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    product::upcasters()
}
