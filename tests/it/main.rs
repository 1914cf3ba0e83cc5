//! Integration tests: the real application and the real backends (MariaDB on 127.0.0.1:3306,
//! SQLite files), every test in a fresh database of its own. One binary, a module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod addressmirror;
mod api;
mod apidoc;
mod auth;
mod cart;
mod catalog;
mod cli;
mod commands;
mod cqrs;
mod drill;
mod eventstore;
mod hardening;
mod helpers;
mod lifecycle;
mod mail;
mod members;
mod ops;
mod orders;
mod payment;
mod products;
mod projections;
mod ratelimit;
mod scheduler;
mod stockstore;
mod tokenstore;
