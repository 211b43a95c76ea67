//! One entry of a room's log: the frames its sequencer numbered in one flush,
//! as every node's viewers get them, and how far into the room's inputs the
//! sequencer had read. A line of JSON, then one frame per line (a frame is
//! JSON, which never holds a raw newline):
//!
//! ```text
//! {"seq":1764012345678004,"input":981}
//! {"type":"chat","seq":1764012345678003,...}
//! {"type":"likes","seq":1764012345678004,...}
//! ```
//!
//! `seq` is the last number given (a batch without frames says where the
//! numbering stands); `input` is the position of the last input read, so the
//! next sequencer starts after it and no input is applied twice. `refused`,
//! when there are any, are the sequencer's answers to chat messages it did not
//! number (too fast across the user's connections on every node): each an
//! `error` frame for one user's connections, wherever they are.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use domain::ids::UserId;

use crate::connection::FrameText;

#[derive(Debug, Clone)]
pub struct Batch {
    pub seq: u64,
    pub input: u64,
    pub frames: Vec<FrameText>,
    pub refused: Vec<Notice>,
}

/// A frame for one user's connections only, not numbered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub to: UserId,
    pub text: String,
}

#[derive(Serialize, Deserialize)]
struct Head {
    seq: u64,
    input: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    refused: Vec<Notice>,
}

impl Batch {
    pub fn encode(&self) -> Bytes {
        let size = 32 + self.frames.iter().map(|f| f.len() + 1).sum::<usize>();
        let mut out = BytesMut::with_capacity(size);
        let head = Head {
            seq: self.seq,
            input: self.input,
            refused: self.refused.clone(),
        };
        if let Ok(head) = serde_json::to_vec(&head) {
            out.put_slice(&head);
        }
        for frame in &self.frames {
            out.put_u8(b'\n');
            out.put_slice(frame.as_str().as_bytes());
        }
        out.freeze()
    }

    /// Reads a batch off the bus; the frames share the payload's bytes.
    pub fn decode(payload: &Bytes) -> Option<Self> {
        let mut lines = payload.split(|b| *b == b'\n');
        let head: Head = serde_json::from_slice(lines.next()?).ok()?;
        let mut frames = Vec::new();
        for line in lines {
            let start = line.as_ptr() as usize - payload.as_ptr() as usize;
            let frame = payload.slice(start..start + line.len());
            frames.push(FrameText::try_from(frame).ok()?);
        }
        Some(Self {
            seq: head.seq,
            input: head.input,
            frames,
            refused: head.refused,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_batch_reads_back_as_written() {
        let batch = Batch {
            seq: 12,
            input: 7,
            frames: vec![
                FrameText::from(r#"{"type":"unpin","seq":11}"#),
                FrameText::from(r#"{"type":"chat","seq":12,"data":{"text":"a\nb"}}"#),
            ],
            refused: vec![Notice {
                to: UserId::from_string("usr_1"),
                text: r#"{"type":"error","code":"rate_limited"}"#.into(),
            }],
        };
        let read = Batch::decode(&batch.encode()).unwrap();
        assert_eq!((read.seq, read.input), (12, 7));
        assert_eq!(read.frames, batch.frames);
        assert_eq!(read.refused, batch.refused);
        let empty = Batch::decode(
            &Batch {
                seq: 3,
                input: 0,
                frames: vec![],
                refused: vec![],
            }
            .encode(),
        )
        .unwrap();
        assert!(empty.frames.is_empty());
        assert!(Batch::decode(&Bytes::from_static(b"garbage")).is_none());
    }
}
