//! The RTMP chunk stream: messages cut into chunks of the peer's chunk size and
//! interleaved over chunk stream ids, each chunk with a compressed header.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// One whole RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub type_id: u8,
    pub stream_id: u32,
    pub timestamp: u32,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChunkError {
    #[error("a chunk continues chunk stream {0}, which never had a header")]
    NoHeader(u32),
    #[error("message of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams in use")]
    TooManyStreams,
    #[error("chunk size {0} is not allowed")]
    BadChunkSize(u32),
}

/// Chunk streams one connection may keep partial messages on.
const MAX_CHUNK_STREAMS: usize = 64;

#[derive(Default)]
struct ChunkStream {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    partial: BytesMut,
}

/// Turns bytes into messages. Holds at most one partial message per chunk
/// stream, each no longer than `max_message`.
pub struct ChunkReader {
    chunk_size: usize,
    max_message: usize,
    streams: HashMap<u32, ChunkStream>,
}

impl ChunkReader {
    pub fn new(max_message: usize) -> Self {
        Self {
            chunk_size: 128,
            max_message,
            streams: HashMap::new(),
        }
    }

    /// Applies the peer's Set Chunk Size.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if size == 0 || size > 0x7fff_ffff {
            return Err(ChunkError::BadChunkSize(size));
        }
        // No message is longer than 0xffffff bytes, so neither is a useful chunk.
        self.chunk_size = (size as usize).min(0xff_ffff);
        Ok(())
    }

    /// The longest message accepted from now on.
    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
    }

    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Drops the partial message of a chunk stream (Abort Message).
    pub fn abort(&mut self, csid: u32) {
        if let Some(stream) = self.streams.get_mut(&csid) {
            stream.partial.clear();
        }
    }

    /// Bytes of partial messages held.
    pub fn buffered(&self) -> usize {
        self.streams.values().map(|s| s.partial.len()).sum()
    }

    /// The next whole message, consuming its chunks from `input`; `None` when
    /// `input` ends before one is complete (what was read stays in `input`).
    pub fn read(&mut self, input: &mut BytesMut) -> Result<Option<Message>, ChunkError> {
        loop {
            let Some((header_len, csid, fmt)) = basic_header(input) else {
                return Ok(None);
            };
            let mut at = &input[header_len..];
            let message_header = match fmt {
                0 => 11,
                1 => 7,
                2 => 3,
                _ => 0,
            };
            if at.len() < message_header {
                return Ok(None);
            }
            if !self.streams.contains_key(&csid) {
                if fmt != 0 {
                    return Err(ChunkError::NoHeader(csid));
                }
                if self.streams.len() >= MAX_CHUNK_STREAMS {
                    return Err(ChunkError::TooManyStreams);
                }
            }
            let stream = self.streams.entry(csid).or_default();
            let starts_message = stream.partial.is_empty();
            // Work on copies until the whole chunk is known to be here.
            let (mut timestamp, mut delta, mut length, mut type_id, mut stream_id) = (
                stream.timestamp,
                stream.delta,
                stream.length,
                stream.type_id,
                stream.stream_id,
            );
            let mut field = 0u32;
            if fmt <= 2 {
                field = read_u24(&mut at);
            }
            if fmt <= 1 {
                length = read_u24(&mut at);
                type_id = at.get_u8();
            }
            if fmt == 0 {
                stream_id = at.get_u32_le();
            }
            let extended = if fmt <= 2 {
                field == 0xff_ffff
            } else {
                stream.extended
            };
            if extended {
                if at.len() < 4 {
                    return Ok(None);
                }
                let value = at.get_u32();
                if fmt <= 2 {
                    field = value;
                }
            }
            let length_usize = length as usize;
            if length_usize > self.max_message {
                return Err(ChunkError::TooLong(length_usize));
            }
            let already = if fmt == 3 && !starts_message {
                stream.partial.len()
            } else {
                0
            };
            let want = (length_usize.saturating_sub(already)).min(self.chunk_size);
            if at.len() < want {
                return Ok(None);
            }
            let consumed = input.len() - at.len();
            match fmt {
                0 => {
                    // As SRS and librtmp do: a type-3 chunk that starts a new
                    // message after a type-0 header repeats its timestamp field.
                    timestamp = field;
                    delta = field;
                }
                1 | 2 => {
                    delta = field;
                    timestamp = timestamp.wrapping_add(delta);
                }
                _ if starts_message => timestamp = timestamp.wrapping_add(delta),
                _ => {}
            }
            if fmt != 3 {
                // A new header starts a new message, whatever was partial.
                stream.partial.clear();
            }
            stream.timestamp = timestamp;
            stream.delta = delta;
            stream.length = length;
            stream.type_id = type_id;
            stream.stream_id = stream_id;
            stream.extended = extended;
            input.advance(consumed);
            stream.partial.extend_from_slice(&input[..want]);
            input.advance(want);
            if stream.partial.len() >= length_usize {
                let payload = stream.partial.split().freeze();
                return Ok(Some(Message {
                    type_id,
                    stream_id,
                    timestamp,
                    payload,
                }));
            }
        }
    }
}

fn read_u24(at: &mut &[u8]) -> u32 {
    let v = u32::from(at[0]) << 16 | u32::from(at[1]) << 8 | u32::from(at[2]);
    at.advance(3);
    v
}

/// (header length, chunk stream id, fmt), or `None` when not all here.
fn basic_header(input: &[u8]) -> Option<(usize, u32, u8)> {
    let first = *input.first()?;
    let fmt = first >> 6;
    match first & 0x3f {
        0 => Some((2, 64 + u32::from(*input.get(1)?), fmt)),
        1 => {
            let (a, b) = (*input.get(1)?, *input.get(2)?);
            Some((3, 64 + u32::from(a) + 256 * u32::from(b), fmt))
        }
        csid => Some((1, u32::from(csid), fmt)),
    }
}

/// Writes messages as chunks: a full header, then continuation chunks.
pub struct ChunkWriter {
    chunk_size: usize,
}

impl ChunkWriter {
    pub fn new() -> Self {
        Self { chunk_size: 128 }
    }

    /// The caller sends Set Chunk Size first, as a message of the old size.
    pub fn set_chunk_size(&mut self, size: usize) {
        self.chunk_size = size.max(1);
    }

    pub fn write(&self, csid: u8, message: &Message, out: &mut BytesMut) {
        let csid = csid & 0x3f;
        let extended = message.timestamp >= 0xff_ffff;
        out.put_u8(csid);
        let ts = if extended {
            0xff_ffff
        } else {
            message.timestamp
        };
        out.put_uint(u64::from(ts), 3);
        out.put_uint(message.payload.len() as u64, 3);
        out.put_u8(message.type_id);
        out.put_u32_le(message.stream_id);
        if extended {
            out.put_u32(message.timestamp);
        }
        for (i, chunk) in message.payload.chunks(self.chunk_size).enumerate() {
            if i > 0 {
                out.put_u8(0xc0 | csid);
                if extended {
                    out.put_u32(message.timestamp);
                }
            }
            out.extend_from_slice(chunk);
        }
    }
}

impl Default for ChunkWriter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(len: usize, timestamp: u32) -> Message {
        Message {
            type_id: 9,
            stream_id: 1,
            timestamp,
            payload: Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>()),
        }
    }

    #[test]
    fn messages_of_any_size_survive_chunking() {
        for (chunk_size, len, ts) in [(128, 0, 0), (128, 1000, 40), (4096, 5000, 0x0100_0000)] {
            let mut writer = ChunkWriter::new();
            writer.set_chunk_size(chunk_size);
            let mut reader = ChunkReader::new(1 << 20);
            reader
                .set_chunk_size(chunk_size as u32)
                .expect("a valid size");
            let sent = message(len, ts);
            let mut wire = BytesMut::new();
            writer.write(6, &sent, &mut wire);
            writer.write(6, &sent, &mut wire);
            assert_eq!(reader.read(&mut wire), Ok(Some(sent.clone())));
            assert_eq!(reader.read(&mut wire), Ok(Some(sent)));
            assert_eq!(reader.read(&mut wire), Ok(None));
        }
    }

    #[test]
    fn a_message_arriving_byte_by_byte_comes_out_once() {
        let mut writer = ChunkWriter::new();
        writer.set_chunk_size(100);
        let mut reader = ChunkReader::new(1 << 20);
        reader.set_chunk_size(100).expect("a valid size");
        let sent = message(450, 7);
        let mut wire = BytesMut::new();
        writer.write(4, &sent, &mut wire);
        let mut input = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire {
            input.put_u8(byte);
            if let Some(m) = reader.read(&mut input).expect("valid chunks") {
                got.push(m);
            }
        }
        assert_eq!(got, vec![sent]);
    }

    #[test]
    fn compressed_headers_carry_the_previous_fields() {
        // fmt 0 (ts 10, len 2, type 8), then fmt 2 (delta 20), then fmt 3.
        let mut input = BytesMut::from(
            &[
                0x04, 0, 0, 10, 0, 0, 2, 8, 1, 0, 0, 0, 0xaa, 0xbb, //
                0x84, 0, 0, 20, 0xcc, 0xdd, //
                0xc4, 0xee, 0xff,
            ][..],
        );
        let mut reader = ChunkReader::new(1024);
        let stamps: Vec<u32> = std::iter::from_fn(|| reader.read(&mut input).expect("valid"))
            .map(|m| m.timestamp)
            .collect();
        assert_eq!(stamps, vec![10, 30, 50]);
    }

    #[test]
    fn limits_hold() {
        let mut reader = ChunkReader::new(1000);
        let mut input = BytesMut::from(&[0x04, 0, 0, 0, 0, 0x10, 0, 9, 1, 0, 0, 0][..]);
        assert_eq!(reader.read(&mut input), Err(ChunkError::TooLong(4096)));
        let mut input = BytesMut::from(&[0xc5, 1, 2][..]);
        assert_eq!(reader.read(&mut input), Err(ChunkError::NoHeader(5)));
        assert_eq!(reader.set_chunk_size(0), Err(ChunkError::BadChunkSize(0)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut reader = ChunkReader::new(1 << 16);
            let mut input = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = reader.read(&mut input) {}
            prop_assert!(reader.buffered() <= 64 << 16);
        }
    }
}
