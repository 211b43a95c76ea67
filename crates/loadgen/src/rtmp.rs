//! The load generator's own RTMP client, written apart from the server's RTMP
//! code (`media::rtmp`) so that a bug there cannot hide itself in the video
//! benchmark: it publishes as an encoder does and plays as a player does,
//! against Hawker and nginx-rtmp alike. Only what a client needs: the simple
//! handshake, AMF0 commands as bytes, chunks in both directions with extended
//! timestamps, set-chunk-size and acknowledgements.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HANDSHAKE: usize = 1536;
/// The chunk size this client sends with.
const CHUNK: usize = 4096;
/// The largest message it accepts.
const MAX_MESSAGE: usize = 16 << 20;
const EXTENDED: u32 = 0xFF_FFFF;

const SET_CHUNK_SIZE: u8 = 1;
const ACKNOWLEDGEMENT: u8 = 3;
const USER_CONTROL: u8 = 4;
const WINDOW: u8 = 5;
const AUDIO: u8 = 8;
/// The FLV (and RTMP) type of video tags.
pub const VIDEO: u8 = 9;
const SCRIPT: u8 = 18;
const COMMAND: u8 = 20;

/// One RTMP message: its type, stream, timestamp and payload.
struct Message {
    kind: u8,
    timestamp: u32,
    payload: Bytes,
}

/// What a chunk stream remembers from its last header.
#[derive(Default)]
struct ChunkStream {
    timestamp: u32,
    delta: u32,
    length: usize,
    kind: u8,
    extended: bool,
    partial: BytesMut,
}

/// A connection to `rtmp://{addr}/live`.
pub struct Client {
    socket: TcpStream,
    out: BytesMut,
    input: BytesMut,
    streams: HashMap<u32, ChunkStream>,
    chunk_in: usize,
    received: u64,
    acknowledged: u64,
    window: u64,
}

impl Client {
    /// Connects and publishes with `key`, once the server says it may.
    pub async fn publish(addr: SocketAddr, key: &str) -> anyhow::Result<Self> {
        let mut client = Self::connect(addr).await?;
        client.command(
            1,
            &[
                string("publish"),
                number(3.0),
                NULL,
                string(key),
                string("live"),
            ],
        );
        client.flush().await?;
        client.await_status("NetStream.Publish.Start").await?;
        Ok(client)
    }

    /// Connects and plays `name`; read it with [`Client::next_media`].
    pub async fn play(addr: SocketAddr, name: &str) -> anyhow::Result<Self> {
        let mut client = Self::connect(addr).await?;
        client.command(
            1,
            &[
                string("play"),
                number(3.0),
                NULL,
                string(name),
                number(-1000.0),
            ],
        );
        // Set Buffer Length (event 3) of 0 ms for stream 1: send at once.
        let mut buffer = vec![0, 3];
        buffer.extend_from_slice(&1u32.to_be_bytes());
        buffer.extend_from_slice(&0u32.to_be_bytes());
        client.send(2, USER_CONTROL, 0, 0, &buffer);
        client.flush().await?;
        client.await_status("NetStream.Play.Start").await?;
        Ok(client)
    }

    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let mut socket = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to rtmp://{addr}"))?;
        socket.set_nodelay(true)?;
        // C0 and C1 (version 3, zeros), then C2 echoes S1.
        let mut hello = vec![3u8];
        hello.resize(1 + HANDSHAKE, 0);
        socket.write_all(&hello).await?;
        let mut answer = vec![0u8; 1 + 2 * HANDSHAKE];
        socket.read_exact(&mut answer).await?;
        socket.write_all(&answer[1..=HANDSHAKE]).await?;
        let mut client = Self {
            socket,
            out: BytesMut::new(),
            input: BytesMut::with_capacity(64 * 1024),
            streams: HashMap::new(),
            chunk_in: 128,
            received: 0,
            acknowledged: 0,
            window: 0,
        };
        client.send(2, SET_CHUNK_SIZE, 0, 0, &(CHUNK as u32).to_be_bytes());
        let tc_url = format!("rtmp://{addr}/live");
        let mut connect = Vec::new();
        encode_string(&mut connect, "connect");
        encode_number(&mut connect, 1.0);
        connect.push(3);
        for (name, value) in [("app", "live"), ("type", "nonprivate"), ("tcUrl", &tc_url)] {
            connect.extend_from_slice(&(name.len() as u16).to_be_bytes());
            connect.extend_from_slice(name.as_bytes());
            encode_string(&mut connect, value);
        }
        connect.extend_from_slice(&[0, 0, 9]);
        client.send(3, COMMAND, 0, 0, &connect);
        client.command(0, &[string("createStream"), number(2.0), NULL]);
        Ok(client)
    }

    /// Queues one FLV tag (audio, video or script data) at `timestamp`.
    pub fn tag(&mut self, kind: u8, timestamp: u32, body: &[u8]) {
        let (csid, payload) = match kind {
            AUDIO => (4, body.to_vec()),
            VIDEO => (6, body.to_vec()),
            // onMetaData goes out as `@setDataFrame`, as encoders send it.
            _ => {
                let mut payload = Vec::with_capacity(body.len() + 16);
                encode_string(&mut payload, "@setDataFrame");
                payload.extend_from_slice(body);
                (5, payload)
            }
        };
        self.send(csid, kind, 1, timestamp, &payload);
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let out = self.out.split();
            self.socket.write_all(&out).await?;
        }
        Ok(())
    }

    /// The next audio or video message of a played stream: (FLV tag type,
    /// timestamp, body).
    pub async fn next_media(&mut self) -> anyhow::Result<(u8, u32, Bytes)> {
        loop {
            let message = self.next_message().await?;
            if matches!(message.kind, AUDIO | VIDEO) {
                return Ok((message.kind, message.timestamp, message.payload));
            }
        }
    }

    fn command(&mut self, stream: u32, values: &[Value<'_>]) {
        let mut payload = Vec::new();
        for value in values {
            match value {
                Value::String(s) => encode_string(&mut payload, s),
                Value::Number(n) => encode_number(&mut payload, *n),
                Value::Null => payload.push(5),
            }
        }
        self.send(3, COMMAND, stream, 0, &payload);
    }

    /// Writes a message as chunks: a full header, then continuation headers.
    fn send(&mut self, csid: u8, kind: u8, stream: u32, timestamp: u32, payload: &[u8]) {
        let extended = timestamp >= EXTENDED;
        let stamp = if extended { EXTENDED } else { timestamp };
        self.out.extend_from_slice(&[csid & 0x3f]);
        self.out.extend_from_slice(&stamp.to_be_bytes()[1..]);
        self.out
            .extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        self.out.extend_from_slice(&[kind]);
        self.out.extend_from_slice(&stream.to_le_bytes());
        if extended {
            self.out.extend_from_slice(&timestamp.to_be_bytes());
        }
        for (i, chunk) in payload.chunks(CHUNK).enumerate() {
            if i > 0 {
                self.out.extend_from_slice(&[0xc0 | (csid & 0x3f)]);
                if extended {
                    self.out.extend_from_slice(&timestamp.to_be_bytes());
                }
            }
            self.out.extend_from_slice(chunk);
        }
    }

    async fn await_status(&mut self, wanted: &str) -> anyhow::Result<()> {
        loop {
            let message = self.next_message().await?;
            if message.kind != COMMAND {
                continue;
            }
            let text = String::from_utf8_lossy(&message.payload);
            if text.contains(wanted) {
                return Ok(());
            }
            if text.contains("_error")
                || ["Failed", "BadName", "Rejected"]
                    .iter()
                    .any(|w| text.contains(w))
            {
                bail!("the server refused: {text}");
            }
        }
    }

    /// The next whole message, answering the server's control messages.
    async fn next_message(&mut self) -> anyhow::Result<Message> {
        loop {
            if let Some(message) = self.read_chunk()? {
                match message.kind {
                    SET_CHUNK_SIZE if message.payload.len() >= 4 => {
                        let size = (&message.payload[..]).get_u32() & 0x7fff_ffff;
                        self.chunk_in = usize::try_from(size).unwrap_or(CHUNK).max(1);
                    }
                    WINDOW if message.payload.len() >= 4 => {
                        self.window = u64::from((&message.payload[..]).get_u32());
                    }
                    _ => return Ok(message),
                }
                continue;
            }
            let n = self.socket.read_buf(&mut self.input).await?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.received += n as u64;
            if self.window > 0 && self.received - self.acknowledged >= self.window / 2 {
                self.acknowledged = self.received;
                let sequence = (self.received as u32).to_be_bytes();
                self.send(2, ACKNOWLEDGEMENT, 0, 0, &sequence);
                self.flush().await?;
            }
        }
    }

    /// Takes one chunk off the input if it is all there; returns the message
    /// it completes, if it does.
    fn read_chunk(&mut self) -> anyhow::Result<Option<Message>> {
        let input = &self.input[..];
        let Some(&first) = input.first() else {
            return Ok(None);
        };
        let format = first >> 6;
        let (csid, mut at) = match first & 0x3f {
            0 if input.len() >= 2 => (64 + u32::from(input[1]), 2),
            1 if input.len() >= 3 => (64 + u32::from(input[1]) + 256 * u32::from(input[2]), 3),
            0 | 1 => return Ok(None),
            id => (u32::from(id), 1),
        };
        let header = [11, 7, 3, 0][usize::from(format)];
        if input.len() < at + header {
            return Ok(None);
        }
        let field = |i: usize| {
            u32::from(input[i]) << 16 | u32::from(input[i + 1]) << 8 | u32::from(input[i + 2])
        };
        let previous = self.streams.get(&csid);
        let stamp = (format < 3).then(|| field(at));
        let extended = stamp.map_or(previous.is_some_and(|p| p.extended), |s| s == EXTENDED);
        let (length, kind) = if format < 2 {
            (usize::try_from(field(at + 3))?, Some(input[at + 6]))
        } else {
            (previous.map_or(0, |p| p.length), None)
        };
        at += header;
        let stamp = if extended && format < 3 {
            if input.len() < at + 4 {
                return Ok(None);
            }
            Some((&input[at..at + 4]).get_u32())
        } else {
            stamp
        };
        if extended {
            at += 4;
        }
        if length > MAX_MESSAGE {
            bail!("a message of {length} bytes");
        }
        let held = previous.map_or(0, |p| p.partial.len());
        let take = length.saturating_sub(held).min(self.chunk_in);
        if input.len() < at + take {
            return Ok(None);
        }
        let stream = self.streams.entry(csid).or_default();
        stream.extended = extended;
        stream.length = length;
        if let Some(kind) = kind {
            stream.kind = kind;
        }
        match (format, stamp) {
            (0, Some(stamp)) => {
                stream.timestamp = stamp;
                stream.delta = 0;
            }
            (_, Some(delta)) => {
                stream.delta = delta;
                stream.timestamp = stream.timestamp.wrapping_add(delta);
            }
            // A continuation, or a new message with the last delta.
            (_, None) if held == 0 => {
                stream.timestamp = stream.timestamp.wrapping_add(stream.delta)
            }
            (_, None) => {}
        }
        stream.partial.extend_from_slice(&self.input[at..at + take]);
        self.input.advance(at + take);
        Ok((stream.partial.len() == stream.length).then(|| Message {
            kind: stream.kind,
            timestamp: stream.timestamp,
            payload: stream.partial.split().freeze(),
        }))
    }
}

/// An AMF0 value of a command.
enum Value<'a> {
    String(&'a str),
    Number(f64),
    Null,
}

const NULL: Value<'static> = Value::Null;

fn string(s: &str) -> Value<'_> {
    Value::String(s)
}

fn number(n: f64) -> Value<'static> {
    Value::Number(n)
}

fn encode_string(out: &mut Vec<u8>, s: &str) {
    out.push(2);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn encode_number(out: &mut Vec<u8>, n: f64) {
    out.push(0);
    out.extend_from_slice(&n.to_be_bytes());
}

/// One tag of an FLV file.
pub struct FileTag {
    pub kind: u8,
    pub timestamp: u32,
    pub body: Bytes,
}

/// The tags of an FLV file, in order.
pub fn read_flv(mut file: Bytes) -> anyhow::Result<Vec<FileTag>> {
    if file.len() < 13 || &file[..3] != b"FLV" {
        bail!("not an FLV file");
    }
    let header = usize::try_from((&file[5..9]).get_u32())?;
    file.advance(header + 4);
    let mut tags = Vec::new();
    while file.len() >= 11 {
        let kind = file[0] & 0x1f;
        let size = usize::try_from(u32::from_be_bytes([0, file[1], file[2], file[3]]))?;
        let timestamp = u32::from_be_bytes([file[7], file[4], file[5], file[6]]);
        if file.len() < 11 + size + 4 {
            bail!("the FLV file ends inside a tag");
        }
        let body = file.slice(11..11 + size);
        file.advance(11 + size + 4);
        if matches!(kind, AUDIO | VIDEO | SCRIPT) {
            tags.push(FileTag {
                kind,
                timestamp,
                body,
            });
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A client whose input is what it would itself send.
    async fn looped(f: impl FnOnce(&mut Client)) -> Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut client = Client {
            socket,
            out: BytesMut::new(),
            input: BytesMut::new(),
            streams: HashMap::new(),
            chunk_in: CHUNK,
            received: 0,
            acknowledged: 0,
            window: 0,
        };
        f(&mut client);
        client.input = client.out.split();
        client
    }

    #[tokio::test]
    async fn chunks_read_back_as_the_messages_written() {
        let big: Vec<u8> = (0..CHUNK * 2 + 100).map(|i| i as u8).collect();
        let mut client = looped(|c| {
            c.tag(VIDEO, 40, &big);
            c.tag(AUDIO, 41, b"aac");
            c.tag(VIDEO, EXTENDED + 5, &big);
        })
        .await;
        let mut got = Vec::new();
        // Every chunk is whole; a continuation completes no message.
        while !client.input.is_empty() {
            if let Some(message) = client.read_chunk().unwrap() {
                got.push((message.kind, message.timestamp, message.payload));
            }
        }
        let got: Vec<_> = got.iter().map(|(k, t, p)| (*k, *t, p.len())).collect();
        assert_eq!(
            got,
            [
                (VIDEO, 40, big.len()),
                (AUDIO, 41, 3),
                (VIDEO, EXTENDED + 5, big.len())
            ]
        );
    }

    #[tokio::test]
    async fn a_chunk_not_yet_whole_waits_for_the_rest() {
        let mut client = looped(|c| c.tag(AUDIO, 7, b"abcdef")).await;
        let whole = client.input.split();
        client.input.extend_from_slice(&whole[..whole.len() - 2]);
        assert!(client.read_chunk().unwrap().is_none());
        client.input.extend_from_slice(&whole[whole.len() - 2..]);
        let message = client.read_chunk().unwrap().unwrap();
        assert_eq!(
            (message.timestamp, &message.payload[..]),
            (7, &b"abcdef"[..])
        );
    }

    #[test]
    fn an_flv_file_reads_as_its_tags() {
        let mut file = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        for (kind, stamp, body) in [(SCRIPT, 0u32, &b"meta"[..]), (VIDEO, 0x0102_0304, b"v")] {
            file.push(kind);
            file.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            file.extend_from_slice(&stamp.to_be_bytes()[1..]);
            file.push((stamp >> 24) as u8);
            file.extend_from_slice(&[0, 0, 0]);
            file.extend_from_slice(body);
            file.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        }
        let tags = read_flv(Bytes::from(file)).unwrap();
        let got: Vec<_> = tags
            .iter()
            .map(|t| (t.kind, t.timestamp, t.body.len()))
            .collect();
        assert_eq!(got, [(SCRIPT, 0, 4), (VIDEO, 0x0102_0304, 1)]);
    }
}
