//! The catalog: categories, and the live catalog of products every process keeps in memory
//! (with its search index), which product views, listings and the order path read.

pub mod categories;
pub mod cursor;
pub mod instant;
pub mod live;
pub mod products;
pub mod search;
pub mod wishlist;

pub use categories::{Categories, Category, CategoryError};
pub use live::{CatalogSettings, LiveCatalog, LiveProduct, Viewer};
pub use products::{ProductFailure, Products};
