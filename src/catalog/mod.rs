//! The catalog: categories now; products, schedules, stock and browsing build on it.

pub mod categories;
pub mod instant;

pub use categories::{Categories, Category, CategoryError};
