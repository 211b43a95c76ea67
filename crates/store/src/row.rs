//! Reading columns the same way from SQLite and PostgreSQL rows.

use sqlx::Row;

use crate::error::{Result, StoreError};

pub(crate) trait Get {
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
}

macro_rules! impl_get {
    ($row:ty) => {
        impl Get for $row {
            fn text(&self, col: &str) -> Result<String> {
                self.try_get(col).map_err(StoreError::from)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>> {
                self.try_get(col).map_err(StoreError::from)
            }
            fn int(&self, col: &str) -> Result<i64> {
                self.try_get(col).map_err(StoreError::from)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>> {
                self.try_get(col).map_err(StoreError::from)
            }
        }
    };
}

impl_get!(sqlx::sqlite::SqliteRow);
impl_get!(sqlx::postgres::PgRow);

/// A stored value that no longer parses as its domain type.
pub(crate) fn corrupt(what: &str, value: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {value}"))
}

pub(crate) fn count<R: Get>(r: &R) -> Result<i64> {
    r.int("n")
}
