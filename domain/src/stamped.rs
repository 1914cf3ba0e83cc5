//! The command envelope that carries the decision instant.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A command with the instant it is decided at. cqrs-es hands an aggregate only the
/// command, and the domain never reads a clock, so the service stamps each command with
/// `now` before sending it; this is the `Command` type of every aggregate here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped<C> {
    /// The command.
    pub command: C,
    /// The instant the decision is made at.
    pub now: DateTime<Utc>,
}

impl<C> Stamped<C> {
    /// Stamps `command` with `now`.
    pub const fn new(command: C, now: DateTime<Utc>) -> Self {
        Self { command, now }
    }
}
