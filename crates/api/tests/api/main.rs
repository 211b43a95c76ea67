//! HTTP API tests: each starts the real server on port 0 with a fresh database.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

mod abuse;
mod accounts;
mod bad_input;
mod catalog;
mod checkout;
mod helpers;
mod images;
mod live;
mod money;
mod ops;
mod pages;
mod payments;
mod rooms;
mod selling;
mod video;
