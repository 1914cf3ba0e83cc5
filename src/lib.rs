//! openrun: the order and inventory core of a limited-drop ("open run") online shop.
//!
//! Commands are decided by the pure aggregates of `openrun-domain` and recorded as events in
//! an append-only log ([`eventstore`]); read models and timed transitions follow that log.
//!
//! # Layout
//! - [`config`]: settings from the environment, validated at start-up.
//! - [`catalog`]: categories (products, schedules and stock build on it).
//! - [`members`]: sign-up, verification, profile, addresses, roles.
//! - [`password`]: argon2id hashing, below both members and auth.
//! - [`auth`]: logins, access tokens, device sessions, rate limits, the role extractor.
//! - [`crypto`]: encryption of personal data and its blind index, key rotation.
//! - [`mail`]: outgoing e-mail (SMTP or `.eml` files).
//! - [`db`]: the MySQL / MariaDB or SQLite pool and the embedded migrations.
//! - [`eventstore`]: the event log, with group commit, on both backends.
//! - [`commands`]: the command path (load, decide, append): the only writer of aggregate
//!   streams.
//! - [`clock`]: the injected clock (system in production, manual in tests).
//! - [`http`]: the HTTP API, one module per resource.
//! - [`projections`]: the read models this service runs (machinery in `openrun-projections`).
//! - [`orders`]: placing orders on the hot path, the sweeps, reading orders back.
//! - [`payment`]: the payment gateway trait and the sandbox gateway.
//! - [`cart`]: members' carts (Redis, or the database).
//! - [`ops`]: operator commands: replay a stream, audit the log, projection status and rebuild.
//! - [`redis`]: the shared Redis connection and key naming (prefix, hash tags).
//! - [`scheduler`]: fires due timed transitions of the durable schedule.
//! - [`startup`]: building and running the application.
//! - [`stock`]: the hot stock store (Redis or in-process): holds, idempotency records, the
//!   counter projector.
//! - [`cli`]: the `openrun` command line.
//! - [`telemetry`]: tracing and metrics.

pub mod auth;
pub mod cart;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod db;
pub mod drill;
pub mod eventstore;
pub mod http;
pub mod mail;
pub mod members;
pub mod ops;
pub mod orders;
pub mod password;
pub mod payment;
pub mod projections;
pub mod readiness;
pub mod redis;
pub mod scheduler;
pub mod startup;
pub mod stock;
pub mod telemetry;
