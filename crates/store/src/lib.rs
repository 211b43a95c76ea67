//! Persistence for Hawker: one [`Store`] with an embedded SQLite backend (the
//! default) and a PostgreSQL backend (for several nodes), each with its own
//! versioned migrations embedded in the binary.
//!
//! Every query is written once, with `$1` placeholders that both databases accept,
//! and runs on either backend through the macros in `db.rs` (statements built at
//! run time, such as multi-row inserts, number theirs with `db::Params`); dialect
//! differences live in the migrations. This crate knows nothing of HTTP, cookies or request
//! bodies: it stores and returns domain types.

mod accounts;
mod answer;
mod batcher;
mod catalog;
mod chat;
mod checkout;
mod db;
mod error;
mod holds;
mod idempotency;
mod inventory;
mod keys;
mod moderation;
mod orders;
mod origins;
mod payments;
mod recordings;
mod reservations;
mod rooms;
mod row;
mod sales;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;
mod throttles;

pub use accounts::NewUser;
pub use answer::{Answer, Refusal};
pub use catalog::{NewProduct, NewShop, NewVariant, ProductPatch, ShopPatch, VariantPatch};
pub use chat::{AuthoredChat, ChatRecord};
pub use checkout::{OrderKey, OrderOutcome, RegularLine, RegularOrder};
pub use db::{Backend, PoolStats, Store, StoreOptions};
pub use error::{Conflict, StoreError};
pub use holds::{Reservations, UnpaidCaps};
pub use idempotency::{KEY_LIFETIME, KeyState};
pub use inventory::{Claim, ClaimKey, ClaimOutcome, Inventory, StockObserver};
pub use keys::Earlier;
pub use orders::{Expired, OrderChange, OrderFilter, PAYMENT_HOLD_MS};
pub use origins::{Origin, OriginClaim};
pub use payments::{ABANDONED, Begun, ChargeAnswer, NewPayment, NewRefund, Recorded, RefundRecord};
pub use recordings::{ChatLine, PinSpan, Recording, RecordingProgress};
pub use rooms::{NewRoom, RoomFilter, RoomPatch};
pub use sales::{NewSale, SaleTally};
pub use stats::{RoomSample, RoomStats, StatsPoint};

/// A page of a list, newest first; `next` is the cursor for the page after it.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Where a list starts and how long it is. `after` is the last id of the previous page.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: u32,
}

impl PageRequest {
    pub const MAX_LIMIT: u32 = 100;

    /// The limit clamped to 1..=100, plus one row to learn whether a next page exists.
    fn fetch_limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, Self::MAX_LIMIT)) + 1
    }

    fn page<T>(&self, mut items: Vec<T>, id: impl Fn(&T) -> String) -> Page<T> {
        let limit = self.limit.clamp(1, Self::MAX_LIMIT) as usize;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(id)
        } else {
            None
        };
        Page { items, next }
    }

    /// The cursor as a bound for `id < $n`; with no cursor every id qualifies.
    fn before_id(&self) -> &str {
        // Ids are lower-case ASCII letters, digits and '_', all of which sort before '~'.
        self.after.as_deref().unwrap_or("~")
    }
}
