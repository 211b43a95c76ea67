//! Video: RTMP ingest from OBS and ffmpeg, LL-HLS and HTTP-FLV out, and
//! recordings. No transcoding: what the encoder sends is repackaged.
//!
//! How video flows: an encoder connects to the RTMP listener ([`ingest`]); its
//! [`rtmp::Session`] (a pure state machine) turns bytes into commands and FLV
//! tags; the stream key is checked against the store; the room's [`Stream`]
//! parses each tag ([`flv`]), keeps the current GOP for new HTTP-FLV viewers,
//! fans the tag out to them, and cuts the frames into LL-HLS parts and segments
//! ([`hls`], [`fmp4`]). Completed segments go to the [`record`]er. Starting and
//! stopping a stream moves the room between scheduled and live and publishes
//! `stream.live` / `stream.ended` on the bus.
//!
//! The parsers ([`amf`], [`rtmp::chunk`], [`flv`]) and muxers take bytes and
//! give values or errors, never panics; only [`ingest`] and [`record`] do I/O.
//! HTTP belongs to the api crate, which serves what [`Stream`] hands it.

pub mod amf;
pub mod client;
pub mod edge;
pub mod flv;
pub mod fmp4;
pub mod hls;
pub mod ingest;
pub mod origin;
pub mod record;
pub mod rtmp;
pub mod stream;
pub mod wire;

pub use stream::{
    Media, Publisher, Refused, Settings, Stream, StreamStats, TooFar, flv_path, hls_path,
};
