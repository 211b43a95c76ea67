/// Which uniqueness rule a write broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    Email,
    Handle,
    Sku,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0:?} is already taken")]
    Conflict(Conflict),
    #[error("stock on hand is {on_hand}; the change would take it below zero")]
    InsufficientStock { on_hand: i64 },
    #[error("the record is not in the state this change needs")]
    WrongState,
    #[error("{0}")]
    Order(domain::order::OrderError),
    #[error("image {0} was not uploaded to this shop")]
    UnknownImage(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
    #[error("the inventory batcher stopped before answering")]
    Interrupted,
    /// Another request wrote one of a batch's Idempotency-Keys after the batch
    /// found it free; the batch is rolled back and served again.
    #[error("an idempotency key was taken by another request meanwhile")]
    KeyRace,
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Maps a unique-constraint violation to the conflict the caller knows it means.
    pub(crate) fn unique(conflict: Conflict) -> impl FnOnce(StoreError) -> StoreError {
        move |e| match e {
            StoreError::Database(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                StoreError::Conflict(conflict)
            }
            other => other,
        }
    }

    /// True when the database could not be reached or answered with an I/O error.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed,
            )
            | StoreError::Interrupted => true,
            StoreError::Shared(inner) => inner.is_unavailable(),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
