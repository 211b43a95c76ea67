//! An RTMP publishing session as a pure state machine: bytes from the encoder go
//! in, bytes for the encoder and [`Event`]s come out. No sockets here; the
//! listener in [`crate::ingest`] does the I/O and answers [`Event::Publish`].
//!
//! What OBS, ffmpeg and mobile encoders send: the plain handshake (a client
//! that offers the digest handshake falls back when the server's version bytes
//! are zero, as librtmp does), then `connect`, `releaseStream`, `FCPublish`,
//! `createStream`, `publish`, `@setDataFrame`, media, and `FCUnpublish` /
//! `deleteStream` at the end.

pub mod chunk;

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::amf::{self, Amf, AmfError};
use chunk::{ChunkError, ChunkReader, ChunkWriter, Message};

/// The application name in `rtmp://HOST:1935/live/{stream_key}`.
pub const APP: &str = "live";

const HANDSHAKE_SIZE: usize = 1536;
/// The chunk size this server writes with.
const OUT_CHUNK_SIZE: usize = 4096;
/// The acknowledgement window asked of the encoder and offered to it.
const WINDOW: u32 = 2_500_000;
/// The smallest acknowledgement window an encoder may ask of the server: a
/// window of one byte would have it write an acknowledgement per byte read.
const MIN_PEER_WINDOW: u32 = 64 * 1024;
/// Messages a connection may send before it publishes: OBS and ffmpeg send
/// about ten (chunk size, window, connect, releaseStream, FCPublish,
/// createStream, publish); a client that keeps talking without publishing is
/// closed rather than answered until the publish deadline.
const MAX_MESSAGES_BEFORE_PUBLISH: u32 = 100;

const CONTROL_CSID: u8 = 2;
const COMMAND_CSID: u8 = 3;
const STATUS_CSID: u8 = 5;
/// The one message stream a publisher gets from `createStream`.
const PUBLISH_STREAM: u32 = 1;

mod message_type {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const ACKNOWLEDGEMENT: u8 = 3;
    pub const USER_CONTROL: u8 = 4;
    pub const WINDOW_ACK_SIZE: u8 = 5;
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const DATA_AMF3: u8 = 15;
    pub const COMMAND_AMF3: u8 = 17;
    pub const DATA_AMF0: u8 = 18;
    pub const COMMAND_AMF0: u8 = 20;
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SessionError {
    #[error("RTMP version {0} is not supported (plain RTMP is version 3)")]
    Version(u8),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("a command did not parse: {0}")]
    Amf(#[from] AmfError),
    #[error("a {0} message is too short")]
    Short(&'static str),
    #[error("application {0:?} does not exist; publish to rtmp://HOST:1935/live/STREAM_KEY")]
    UnknownApp(String),
    #[error("more than {MAX_MESSAGES_BEFORE_PUBLISH} messages before publishing")]
    Chatter,
}

/// What one RTMP connection may cost the server, and how many there may be.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The longest message accepted once publishing (a keyframe must fit).
    pub max_message: usize,
    /// The longest message accepted before: commands are a few hundred bytes.
    pub max_message_before_publish: usize,
    /// AMF values one command or data message may decode into.
    pub max_amf_values: usize,
    /// A connection must have published this long after it was accepted.
    pub publish_timeout: Duration,
    /// A publisher that sends nothing for this long is disconnected.
    pub idle_timeout: Duration,
    /// Open connections, in all.
    pub max_connections: usize,
    /// Open connections from one address.
    pub max_connections_per_address: usize,
    /// Bytes for the encoder the socket has not taken; past it, the
    /// connection is closed (the encoder stopped reading).
    pub max_pending_output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: 8 * 1024 * 1024,
            max_message_before_publish: 64 * 1024,
            max_amf_values: crate::amf::MAX_VALUES,
            publish_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            max_connections: 1000,
            max_connections_per_address: 10,
            max_pending_output: 1024 * 1024,
        }
    }
}

/// What the encoder did that the server must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The encoder asks to publish with this stream key; answer with
    /// [`Session::accept_publish`] or [`Session::reject_publish`].
    Publish { key: String },
    /// `onMetaData`, re-encoded as FLV carries it (name and object).
    Metadata(Bytes),
    /// An FLV audio tag body.
    Audio { timestamp: u32, body: Bytes },
    /// An FLV video tag body.
    Video { timestamp: u32, body: Bytes },
    /// The encoder stopped publishing (the connection may stay open).
    Unpublish,
}

enum Phase {
    /// Waiting for C0 and C1.
    Hello,
    /// S0, S1 and S2 are out; waiting for C2.
    Echo,
    Chunks,
}

pub struct Session {
    phase: Phase,
    reader: ChunkReader,
    writer: ChunkWriter,
    out: BytesMut,
    received: u64,
    acknowledged: u64,
    peer_window: u32,
    connected: bool,
    /// The transaction of a `publish` waiting for an answer.
    pending_publish: Option<f64>,
    publishing: bool,
    /// The longest message once publishing.
    max_message: usize,
    max_amf_values: usize,
    /// Messages read before publishing.
    messages: u32,
}

impl Session {
    /// Until it publishes, the session accepts messages of at most
    /// `limits.max_message_before_publish` bytes; then of `limits.max_message`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            phase: Phase::Hello,
            reader: ChunkReader::new(limits.max_message_before_publish),
            max_message: limits.max_message,
            max_amf_values: limits.max_amf_values,
            messages: 0,
            writer: ChunkWriter::new(),
            out: BytesMut::new(),
            received: 0,
            acknowledged: 0,
            peer_window: 0,
            connected: false,
            pending_publish: None,
            publishing: false,
        }
    }

    pub fn is_publishing(&self) -> bool {
        self.publishing
    }

    /// Bytes held for partial messages.
    pub fn buffered(&self) -> usize {
        self.reader.buffered()
    }

    /// The longest message accepted now.
    pub fn max_message(&self) -> usize {
        self.reader.max_message()
    }

    /// Bytes to send to the encoder, if any.
    pub fn output(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// The next event from `input`, consuming what it used; `None` when more
    /// bytes are needed.
    pub fn next_event(&mut self, input: &mut BytesMut) -> Result<Option<Event>, SessionError> {
        loop {
            let before = input.len();
            let step = self.step(input);
            self.received += (before - input.len()) as u64;
            if self.peer_window > 0
                && self.received - self.acknowledged >= u64::from(self.peer_window)
            {
                self.acknowledged = self.received;
                self.control(
                    message_type::ACKNOWLEDGEMENT,
                    &(self.received as u32).to_be_bytes(),
                );
            }
            match step? {
                Step::Event(event) => return Ok(Some(event)),
                Step::More => return Ok(None),
                Step::Continue => {}
            }
        }
    }

    fn step(&mut self, input: &mut BytesMut) -> Result<Step, SessionError> {
        match self.phase {
            Phase::Hello => {
                if input.len() < 1 + HANDSHAKE_SIZE {
                    return Ok(Step::More);
                }
                let version = input[0];
                if version != 3 {
                    return Err(SessionError::Version(version));
                }
                let c1 = input.split_to(1 + HANDSHAKE_SIZE).split_off(1);
                self.out.put_u8(3);
                // S1: our time, zero version bytes (so digest-handshake clients
                // fall back to the plain one), then bytes the client echoes.
                self.out.put_u32(0);
                self.out.put_u32(0);
                let mut seed = 0x9e37_79b9u32;
                for _ in 0..(HANDSHAKE_SIZE - 8) {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    self.out.put_u8((seed >> 16) as u8);
                }
                self.out.extend_from_slice(&c1);
                self.phase = Phase::Echo;
                Ok(Step::Continue)
            }
            Phase::Echo => {
                if input.len() < HANDSHAKE_SIZE {
                    return Ok(Step::More);
                }
                input.advance(HANDSHAKE_SIZE);
                self.phase = Phase::Chunks;
                Ok(Step::Continue)
            }
            Phase::Chunks => match self.reader.read(input)? {
                None => Ok(Step::More),
                Some(message) => self.on_message(message),
            },
        }
    }

    fn on_message(&mut self, message: Message) -> Result<Step, SessionError> {
        use message_type as t;
        if !self.publishing {
            self.messages += 1;
            if self.messages > MAX_MESSAGES_BEFORE_PUBLISH {
                return Err(SessionError::Chatter);
            }
        }
        let mut payload = message.payload.clone();
        match message.type_id {
            t::SET_CHUNK_SIZE => {
                let size = read_u32(&mut payload, "Set Chunk Size")?;
                self.reader.set_chunk_size(size & 0x7fff_ffff)?;
            }
            t::ABORT => {
                let csid = read_u32(&mut payload, "Abort")?;
                self.reader.abort(csid);
            }
            t::WINDOW_ACK_SIZE => {
                let window = read_u32(&mut payload, "Window Acknowledgement Size")?;
                self.peer_window = window.max(MIN_PEER_WINDOW);
            }
            // A ping request (6) is answered with a ping response (7).
            t::USER_CONTROL if payload.len() >= 6 && payload[..2] == [0, 6] => {
                let mut pong = vec![0, 7];
                pong.extend_from_slice(&payload[2..6]);
                self.control(t::USER_CONTROL, &pong);
            }
            t::ACKNOWLEDGEMENT | t::SET_PEER_BANDWIDTH => {}
            t::COMMAND_AMF0 | t::COMMAND_AMF3 => {
                if message.type_id == t::COMMAND_AMF3 && !payload.is_empty() {
                    payload.advance(1);
                }
                let values = amf::decode_at_most(&payload, self.max_amf_values)?;
                return self.on_command(&values);
            }
            t::DATA_AMF0 | t::DATA_AMF3 if self.publishing => {
                if message.type_id == t::DATA_AMF3 && !payload.is_empty() {
                    payload.advance(1);
                }
                let values = amf::decode_at_most(&payload, self.max_amf_values)?;
                let mut values = values.iter();
                let mut name = values.next();
                if name.and_then(Amf::as_str) == Some("@setDataFrame") {
                    name = values.next();
                }
                if name.and_then(Amf::as_str) == Some("onMetaData")
                    && let Some(object) = values.next()
                {
                    let mut body = Vec::new();
                    amf::encode_all(&[Amf::string("onMetaData"), object.clone()], &mut body);
                    return Ok(Step::Event(Event::Metadata(body.into())));
                }
            }
            t::AUDIO if self.publishing => {
                return Ok(Step::Event(Event::Audio {
                    timestamp: message.timestamp,
                    body: payload,
                }));
            }
            t::VIDEO if self.publishing => {
                return Ok(Step::Event(Event::Video {
                    timestamp: message.timestamp,
                    body: payload,
                }));
            }
            _ => {}
        }
        Ok(Step::Continue)
    }

    fn on_command(&mut self, values: &[Amf]) -> Result<Step, SessionError> {
        let name = values.first().and_then(Amf::as_str).unwrap_or_default();
        let txn = values.get(1).and_then(Amf::as_number).unwrap_or(0.0);
        match name {
            "connect" => {
                let app = values
                    .get(2)
                    .and_then(|o| o.get("app"))
                    .and_then(Amf::as_str)
                    .unwrap_or_default();
                if app.trim_end_matches('/') != APP {
                    self.command(
                        0,
                        &[
                            Amf::string("_error"),
                            Amf::Number(txn),
                            Amf::Null,
                            status("error", "NetConnection.Connect.Rejected", "unknown app"),
                        ],
                    );
                    return Err(SessionError::UnknownApp(app.chars().take(64).collect()));
                }
                self.control(message_type::WINDOW_ACK_SIZE, &WINDOW.to_be_bytes());
                let mut bandwidth = WINDOW.to_be_bytes().to_vec();
                bandwidth.push(2);
                self.control(message_type::SET_PEER_BANDWIDTH, &bandwidth);
                self.control(
                    message_type::SET_CHUNK_SIZE,
                    &(OUT_CHUNK_SIZE as u32).to_be_bytes(),
                );
                self.writer.set_chunk_size(OUT_CHUNK_SIZE);
                self.command(
                    0,
                    &[
                        Amf::string("_result"),
                        Amf::Number(txn),
                        Amf::object(&[
                            ("fmsVer", Amf::string("FMS/3,0,1,123")),
                            ("capabilities", Amf::Number(31.0)),
                        ]),
                        Amf::object(&[
                            ("level", Amf::string("status")),
                            ("code", Amf::string("NetConnection.Connect.Success")),
                            ("description", Amf::string("Connection succeeded.")),
                            ("objectEncoding", Amf::Number(0.0)),
                        ]),
                    ],
                );
                self.connected = true;
            }
            "releaseStream" | "FCPublish" if txn != 0.0 => {
                self.command(
                    0,
                    &[
                        Amf::string("_result"),
                        Amf::Number(txn),
                        Amf::Null,
                        Amf::Undefined,
                    ],
                );
            }
            "createStream" => {
                self.command(
                    0,
                    &[
                        Amf::string("_result"),
                        Amf::Number(txn),
                        Amf::Null,
                        Amf::Number(f64::from(PUBLISH_STREAM)),
                    ],
                );
            }
            "publish" if self.connected && !self.publishing => {
                let name = values.get(3).and_then(Amf::as_str).unwrap_or_default();
                let key = name.split('?').next().unwrap_or_default().to_owned();
                self.pending_publish = Some(txn);
                return Ok(Step::Event(Event::Publish { key }));
            }
            "FCUnpublish" | "deleteStream" | "closeStream" if self.publishing => {
                self.publishing = false;
                return Ok(Step::Event(Event::Unpublish));
            }
            "play" => {
                self.on_status(
                    "error",
                    "NetStream.Play.Failed",
                    "Hawker plays over HTTP: /live/{room}.flv or /live/{room}/index.m3u8",
                );
            }
            _ => {}
        }
        Ok(Step::Continue)
    }

    /// Tells the encoder to start sending media.
    pub fn accept_publish(&mut self) {
        if self.pending_publish.take().is_some() {
            // Stream Begin for the publishing stream.
            let mut begin = vec![0, 0];
            begin.extend_from_slice(&PUBLISH_STREAM.to_be_bytes());
            self.control(message_type::USER_CONTROL, &begin);
            self.on_status("status", "NetStream.Publish.Start", "Publishing.");
            self.publishing = true;
            self.reader.set_max_message(self.max_message);
        }
    }

    /// Tells the encoder it may not publish; the caller then closes.
    pub fn reject_publish(&mut self, code: &str, description: &str) {
        if self.pending_publish.take().is_some() {
            self.on_status("error", code, description);
        }
    }

    fn on_status(&mut self, level: &str, code: &str, description: &str) {
        let mut payload = Vec::new();
        amf::encode_all(
            &[
                Amf::string("onStatus"),
                Amf::Number(0.0),
                Amf::Null,
                status(level, code, description),
            ],
            &mut payload,
        );
        self.send(
            STATUS_CSID,
            message_type::COMMAND_AMF0,
            PUBLISH_STREAM,
            payload,
        );
    }

    fn command(&mut self, stream_id: u32, values: &[Amf]) {
        let mut payload = Vec::new();
        amf::encode_all(values, &mut payload);
        self.send(COMMAND_CSID, message_type::COMMAND_AMF0, stream_id, payload);
    }

    fn control(&mut self, type_id: u8, payload: &[u8]) {
        self.send(CONTROL_CSID, type_id, 0, payload.to_vec());
    }

    fn send(&mut self, csid: u8, type_id: u8, stream_id: u32, payload: Vec<u8>) {
        let message = Message {
            type_id,
            stream_id,
            timestamp: 0,
            payload: payload.into(),
        };
        self.writer.write(csid, &message, &mut self.out);
    }
}

enum Step {
    Event(Event),
    More,
    Continue,
}

fn status(level: &str, code: &str, description: &str) -> Amf {
    Amf::object(&[
        ("level", Amf::string(level)),
        ("code", Amf::string(code)),
        ("description", Amf::string(description)),
    ])
}

fn read_u32(payload: &mut Bytes, what: &'static str) -> Result<u32, SessionError> {
    if payload.len() < 4 {
        return Err(SessionError::Short(what));
    }
    Ok(payload.get_u32())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What an encoder sends, chunked as it would be.
    struct Encoder {
        writer: ChunkWriter,
        wire: BytesMut,
    }

    impl Encoder {
        fn new() -> Self {
            let mut wire = BytesMut::new();
            wire.put_u8(3);
            wire.extend_from_slice(&[7u8; HANDSHAKE_SIZE]);
            wire.extend_from_slice(&[8u8; HANDSHAKE_SIZE]);
            Self {
                writer: ChunkWriter::new(),
                wire,
            }
        }

        fn command(&mut self, stream_id: u32, values: &[Amf]) {
            let mut payload = Vec::new();
            amf::encode_all(values, &mut payload);
            self.message(message_type::COMMAND_AMF0, stream_id, 0, payload);
        }

        fn message(&mut self, type_id: u8, stream_id: u32, timestamp: u32, payload: Vec<u8>) {
            let message = Message {
                type_id,
                stream_id,
                timestamp,
                payload: payload.into(),
            };
            self.writer.write(4, &message, &mut self.wire);
        }
    }

    fn events(session: &mut Session, wire: &mut BytesMut) -> Result<Vec<Event>, SessionError> {
        let mut events = Vec::new();
        while let Some(event) = session.next_event(wire)? {
            events.push(event);
        }
        Ok(events)
    }

    fn connect(app: &str) -> Encoder {
        let mut encoder = Encoder::new();
        encoder.command(
            0,
            &[
                Amf::string("connect"),
                Amf::Number(1.0),
                Amf::object(&[("app", Amf::string(app))]),
            ],
        );
        encoder
    }

    #[test]
    fn an_encoder_publishes_then_sends_media() {
        let mut encoder = connect("live");
        encoder.command(
            0,
            &[Amf::string("createStream"), Amf::Number(2.0), Amf::Null],
        );
        encoder.command(
            1,
            &[
                Amf::string("publish"),
                Amf::Number(3.0),
                Amf::Null,
                Amf::string("live_abc?token=x"),
                Amf::string("live"),
            ],
        );
        let mut session = Session::new(&Limits::default());
        let got = events(&mut session, &mut encoder.wire).expect("valid");
        assert_eq!(
            got,
            vec![Event::Publish {
                key: "live_abc".into()
            }]
        );
        let reply = session.output().expect("handshake and replies");
        assert_eq!(reply[0], 3);
        assert_eq!(
            &reply[1 + HANDSHAKE_SIZE..1 + 2 * HANDSHAKE_SIZE],
            &[7u8; HANDSHAKE_SIZE]
        );
        session.accept_publish();
        assert!(session.is_publishing());

        let mut encoder = Encoder {
            writer: ChunkWriter::new(),
            wire: BytesMut::new(),
        };
        encoder.message(message_type::VIDEO, 1, 40, vec![0x17, 0, 0, 0, 0]);
        let mut metadata = Vec::new();
        amf::encode_all(
            &[
                Amf::string("@setDataFrame"),
                Amf::string("onMetaData"),
                Amf::EcmaArray(vec![("width".into(), Amf::Number(640.0))]),
            ],
            &mut metadata,
        );
        encoder.message(message_type::DATA_AMF0, 1, 0, metadata);
        encoder.command(
            1,
            &[Amf::string("deleteStream"), Amf::Number(4.0), Amf::Null],
        );
        let got = events(&mut session, &mut encoder.wire).expect("valid");
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            Event::Video {
                timestamp: 40,
                body: Bytes::from_static(&[0x17, 0, 0, 0, 0])
            }
        );
        let Event::Metadata(body) = &got[1] else {
            panic!("metadata expected, got {:?}", got[1]);
        };
        let values = amf::decode_all(body).expect("valid AMF");
        assert_eq!(values[0], Amf::string("onMetaData"));
        assert_eq!(got[2], Event::Unpublish);
    }

    #[test]
    fn media_before_publishing_is_ignored() {
        let mut encoder = connect("live");
        encoder.message(message_type::VIDEO, 1, 0, vec![0x17, 0]);
        let mut session = Session::new(&Limits::default());
        assert_eq!(events(&mut session, &mut encoder.wire), Ok(vec![]));
    }

    #[test]
    fn another_app_is_refused() {
        let mut encoder = connect("vod");
        let mut session = Session::new(&Limits::default());
        assert_eq!(
            events(&mut session, &mut encoder.wire),
            Err(SessionError::UnknownApp("vod".into()))
        );
    }

    #[test]
    fn a_wrong_version_is_refused() {
        let mut wire = BytesMut::from(&[6u8; 1 + HANDSHAKE_SIZE][..]);
        let mut session = Session::new(&Limits::default());
        assert_eq!(
            events(&mut session, &mut wire),
            Err(SessionError::Version(6))
        );
    }

    #[test]
    fn a_long_message_before_publishing_is_refused() {
        let mut encoder = connect("live");
        encoder.message(message_type::DATA_AMF0, 0, 0, vec![0x05; 100_000]);
        let mut session = Session::new(&Limits::default());
        assert_eq!(
            events(&mut session, &mut encoder.wire),
            Err(SessionError::Chunk(ChunkError::TooLong(100_000)))
        );
    }

    #[test]
    fn an_amf_bomb_is_refused_at_the_value_budget() {
        let mut encoder = connect("live");
        encoder.message(message_type::COMMAND_AMF0, 0, 0, vec![0x05; 60_000]);
        let mut session = Session::new(&Limits::default());
        assert_eq!(
            events(&mut session, &mut encoder.wire),
            Err(SessionError::Amf(AmfError::TooMany(amf::MAX_VALUES)))
        );
    }

    #[test]
    fn a_tiny_acknowledgement_window_is_raised() {
        let mut encoder = connect("live");
        encoder.message(
            message_type::WINDOW_ACK_SIZE,
            0,
            0,
            1u32.to_be_bytes().to_vec(),
        );
        for _ in 0..90 {
            encoder.message(message_type::ACKNOWLEDGEMENT, 0, 0, vec![0; 4]);
        }
        let mut session = Session::new(&Limits::default());
        events(&mut session, &mut encoder.wire).expect("valid");
        let out = session.output().expect("replies");
        // The handshake and the answer to `connect`, with no acknowledgement
        // per message read.
        assert!(out.len() < 2 * HANDSHAKE_SIZE + 1024, "{} bytes", out.len());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_after_the_handshake_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096)
        ) {
            let mut encoder = connect("live");
            encoder.wire.extend_from_slice(&bytes);
            let mut session = Session::new(&Limits::default());
            let _ = events(&mut session, &mut encoder.wire);
            prop_assert!(session.buffered() <= 64 * session.max_message());
        }
    }
}
