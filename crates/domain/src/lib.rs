//! Hawker's rules as pure code: money, accounts, the catalog, stock, rooms and
//! the room protocol ([`event`]).
//!
//! Every value type here is parsed, not validated: once an `Email`, a `Money` or a
//! `Handle` exists, it is valid. This crate performs no I/O (no clock reads besides
//! [`Timestamp::now`], no randomness, no storage) and depends on no other Hawker part.

pub mod account;
pub mod catalog;
pub mod event;
pub mod ids;
pub mod money;
pub mod net;
pub mod order;
pub mod room;
pub mod sale;
pub mod secret;
pub mod stock;
mod text;
mod timestamp;

pub use text::{ValidationError, short_text};
pub use timestamp::Timestamp;
