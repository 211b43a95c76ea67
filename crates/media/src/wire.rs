//! The bytes a stream's origin sends the nodes that pull it (its edges): a
//! sequence of frames, each `[kind: u8][length: u32][payload]`. The first is a
//! [`Frame::Start`], a checkpoint of the origin's stream (its LL-HLS muxer
//! whole, and what a new HTTP-FLV viewer needs) taken just before a keyframe
//! that began a segment; then every tag the origin took since, and what it
//! takes from then on. An edge that applies them in order to the checkpoint
//! makes what the origin makes, byte for byte: the same parts, segments and
//! playlists under the same names, on every node.
//!
//! Pure: bytes in, values out, `None` for anything malformed.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One frame of a stream's feed.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// The stream as it stood (see [`crate::Stream`]'s checkpoint).
    Start(Bytes),
    /// An audio or video tag at its output timestamp, seen at `wall_ms`.
    Tag {
        kind: u8,
        timestamp: u32,
        wall_ms: i64,
        body: Bytes,
    },
    Metadata(Bytes),
    /// The encoder went away; the stream waits for it.
    Pause,
    /// The stream is over.
    End,
}

const START: u8 = 1;
const TAG: u8 = 2;
const METADATA: u8 = 3;
const PAUSE: u8 = 4;
const END: u8 = 5;

/// The longest frame an edge accepts (a checkpoint holds a window of
/// segments).
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

impl Frame {
    pub fn encode(&self, out: &mut BytesMut) {
        let (kind, payload) = match self {
            Self::Start(state) => (START, state.clone()),
            Self::Tag {
                kind,
                timestamp,
                wall_ms,
                body,
            } => {
                let mut w = Writer::default();
                w.u8(*kind);
                w.u32(*timestamp);
                w.i64(*wall_ms);
                w.raw(body);
                (TAG, w.finish())
            }
            Self::Metadata(body) => (METADATA, body.clone()),
            Self::Pause => (PAUSE, Bytes::new()),
            Self::End => (END, Bytes::new()),
        };
        out.put_u8(kind);
        out.put_u32(payload.len() as u32);
        out.put_slice(&payload);
    }

    /// The first whole frame of `input`, taken off it; `Ok(None)` until one
    /// is whole, `Err` for one that cannot be.
    pub fn decode(input: &mut BytesMut) -> Result<Option<Self>, BadFrame> {
        if input.len() < 5 {
            return Ok(None);
        }
        let kind = input[0];
        let len = u32::from_be_bytes([input[1], input[2], input[3], input[4]]) as usize;
        if len > MAX_FRAME {
            return Err(BadFrame("a frame longer than allowed"));
        }
        if input.len() < 5 + len {
            return Ok(None);
        }
        input.advance(5);
        let payload = input.split_to(len).freeze();
        let frame = match kind {
            START => Self::Start(payload),
            TAG => {
                let mut r = Reader::new(payload);
                let (kind, timestamp, wall_ms) = (r.u8(), r.u32(), r.i64());
                match (kind, timestamp, wall_ms) {
                    (Some(kind), Some(timestamp), Some(wall_ms)) => Self::Tag {
                        kind,
                        timestamp,
                        wall_ms,
                        body: r.rest(),
                    },
                    _ => return Err(BadFrame("a tag cut short")),
                }
            }
            METADATA => Self::Metadata(payload),
            PAUSE => Self::Pause,
            END => Self::End,
            _ => return Err(BadFrame("an unknown frame")),
        };
        Ok(Some(frame))
    }
}

/// A feed that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("a stream feed that does not parse: {0}")]
pub struct BadFrame(pub(crate) &'static str);

/// Writes values in the feed's encoding (big-endian, lengths before bytes).
#[derive(Default)]
pub(crate) struct Writer(BytesMut);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.put_u8(v);
    }
    pub fn bool(&mut self, v: bool) {
        self.0.put_u8(u8::from(v));
    }
    pub fn u32(&mut self, v: u32) {
        self.0.put_u32(v);
    }
    pub fn u64(&mut self, v: u64) {
        self.0.put_u64(v);
    }
    pub fn i64(&mut self, v: i64) {
        self.0.put_i64(v);
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.0.put_u32(v.len() as u32);
        self.0.put_slice(v);
    }
    pub fn opt_bytes(&mut self, v: Option<&Bytes>) {
        self.bool(v.is_some());
        if let Some(v) = v {
            self.bytes(v);
        }
    }
    pub fn opt_i64(&mut self, v: Option<i64>) {
        self.bool(v.is_some());
        if let Some(v) = v {
            self.i64(v);
        }
    }
    fn raw(&mut self, v: &[u8]) {
        self.0.put_slice(v);
    }
    pub fn finish(self) -> Bytes {
        self.0.freeze()
    }
}

/// Reads what a [`Writer`] wrote; `None` once the input runs short.
pub(crate) struct Reader(Bytes);

impl Reader {
    pub fn new(input: Bytes) -> Self {
        Self(input)
    }
    pub fn u8(&mut self) -> Option<u8> {
        (self.0.remaining() >= 1).then(|| self.0.get_u8())
    }
    pub fn bool(&mut self) -> Option<bool> {
        self.u8().map(|v| v != 0)
    }
    pub fn u32(&mut self) -> Option<u32> {
        (self.0.remaining() >= 4).then(|| self.0.get_u32())
    }
    pub fn u64(&mut self) -> Option<u64> {
        (self.0.remaining() >= 8).then(|| self.0.get_u64())
    }
    pub fn i64(&mut self) -> Option<i64> {
        (self.0.remaining() >= 8).then(|| self.0.get_i64())
    }
    pub fn bytes(&mut self) -> Option<Bytes> {
        let len = self.u32()? as usize;
        (self.0.remaining() >= len).then(|| self.0.split_to(len))
    }
    pub fn opt_bytes(&mut self) -> Option<Option<Bytes>> {
        if self.bool()? {
            self.bytes().map(Some)
        } else {
            Some(None)
        }
    }
    pub fn opt_i64(&mut self) -> Option<Option<i64>> {
        if self.bool()? {
            self.i64().map(Some)
        } else {
            Some(None)
        }
    }
    /// A count of items that each take at least `min` bytes, refused when
    /// the input cannot hold that many (a lying count allocates nothing).
    pub fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.saturating_mul(min.max(1)) <= self.0.remaining()).then_some(n)
    }
    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_back_as_they_went_whole_or_not_at_all() {
        let frames = [
            Frame::Start(Bytes::from_static(b"state")),
            Frame::Tag {
                kind: 9,
                timestamp: 40,
                wall_ms: 1_700_000_000_000,
                body: Bytes::from_static(&[0x17, 1, 0, 0, 0, 5]),
            },
            Frame::Metadata(Bytes::from_static(b"meta")),
            Frame::Pause,
            Frame::End,
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        let whole = wire.clone();
        // Fed a byte at a time, each frame comes out once it is whole.
        let mut input = BytesMut::new();
        let mut out = Vec::new();
        for b in whole.iter() {
            input.put_u8(*b);
            while let Some(f) = Frame::decode(&mut input).expect("valid") {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
        let mut bad = BytesMut::from(&[9u8, 0, 0, 0, 0][..]);
        assert!(Frame::decode(&mut bad).is_err());
        let mut huge = BytesMut::from(&[1u8, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(Frame::decode(&mut huge).is_err());
    }
}
