//! image2model-store

mod rows;
pub mod sqlite;

pub use sqlite::SqliteJobStore;
