//! An RTMP client: it publishes as an encoder does, for the demo (which loops a
//! clip into its room through the real ingest) and the video benchmark, and
//! plays as a player does, to measure other RTMP servers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::amf::{self, Amf};
use crate::flv::{self, FileTag};
use crate::rtmp::chunk::{ChunkReader, ChunkWriter, Message};

const HANDSHAKE_SIZE: usize = 1536;
const CHUNK_SIZE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("the server sent what RTMP does not allow: {0}")]
    Protocol(String),
}

/// A connection that is publishing.
pub struct Connection {
    socket: TcpStream,
    writer: ChunkWriter,
    out: BytesMut,
    reader: ChunkReader,
    input: BytesMut,
    received: u64,
    acknowledged: u64,
    /// The server's acknowledgement window.
    window: u32,
}

impl Connection {
    /// Connects to `rtmp://{addr}/live` and publishes with `key`.
    pub async fn publish(addr: SocketAddr, key: &str) -> Result<Self, PublishError> {
        let mut connection = Self::connect(addr).await?;
        connection.command(
            1,
            &[
                Amf::string("publish"),
                Amf::Number(3.0),
                Amf::Null,
                Amf::string(key),
                Amf::string("live"),
            ],
        );
        connection.flush().await?;
        connection.await_status("NetStream.Publish.Start").await?;
        Ok(connection)
    }

    /// Connects to `rtmp://{addr}/live` and plays `name`; read the media with
    /// [`Connection::next_media`].
    pub async fn play(addr: SocketAddr, name: &str) -> Result<Self, PublishError> {
        let mut connection = Self::connect(addr).await?;
        connection.command(
            1,
            &[
                Amf::string("play"),
                Amf::Number(3.0),
                Amf::Null,
                Amf::string(name),
                Amf::Number(-1000.0),
            ],
        );
        // A buffer length of 0 ms on the play stream: send at once.
        let mut buffer = vec![0, 3];
        buffer.extend_from_slice(&1u32.to_be_bytes());
        buffer.extend_from_slice(&0u32.to_be_bytes());
        connection.send(2, 4, 0, 0, buffer.into());
        connection.flush().await?;
        connection.await_status("NetStream.Play.Start").await?;
        Ok(connection)
    }

    async fn connect(addr: SocketAddr) -> Result<Self, PublishError> {
        let mut socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let mut hello = vec![3u8];
        hello.extend_from_slice(&[0u8; HANDSHAKE_SIZE]);
        socket.write_all(&hello).await?;
        let mut s0s1s2 = vec![0u8; 1 + 2 * HANDSHAKE_SIZE];
        socket.read_exact(&mut s0s1s2).await?;
        socket.write_all(&s0s1s2[1..=HANDSHAKE_SIZE]).await?;

        let mut connection = Self {
            socket,
            writer: ChunkWriter::new(),
            out: BytesMut::new(),
            reader: ChunkReader::new(16 << 20),
            input: BytesMut::with_capacity(64 * 1024),
            received: 0,
            acknowledged: 0,
            window: 0,
        };
        connection.send(
            2,
            1,
            0,
            0,
            Bytes::copy_from_slice(&(CHUNK_SIZE as u32).to_be_bytes()),
        );
        connection.writer.set_chunk_size(CHUNK_SIZE);
        connection.command(
            0,
            &[
                Amf::string("connect"),
                Amf::Number(1.0),
                Amf::object(&[
                    ("app", Amf::string(crate::rtmp::APP)),
                    ("type", Amf::string("nonprivate")),
                    ("tcUrl", Amf::string(&format!("rtmp://{addr}/live"))),
                ]),
            ],
        );
        connection.command(
            0,
            &[Amf::string("createStream"), Amf::Number(2.0), Amf::Null],
        );
        Ok(connection)
    }

    /// The next message from the server, answering its control messages.
    async fn next_message(&mut self) -> Result<Message, PublishError> {
        loop {
            if let Some(message) = self
                .reader
                .read(&mut self.input)
                .map_err(|e| PublishError::Protocol(e.to_string()))?
            {
                let p = &message.payload;
                match message.type_id {
                    1 if p.len() >= 4 => self
                        .reader
                        .set_chunk_size(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
                        .map_err(|e| PublishError::Protocol(e.to_string()))?,
                    5 if p.len() >= 4 => self.window = u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
                    _ => {}
                }
                return Ok(message);
            }
            let n = self.socket.read_buf(&mut self.input).await?;
            if n == 0 {
                return Err(PublishError::Refused("connection closed".into()));
            }
            self.received += n as u64;
            if self.window > 0 && self.received - self.acknowledged >= u64::from(self.window / 2) {
                self.acknowledged = self.received;
                let sequence = (self.received as u32).to_be_bytes();
                self.send(2, 3, 0, 0, Bytes::copy_from_slice(&sequence));
                self.flush().await?;
            }
        }
    }

    /// The next audio or video message of a played stream: (FLV tag type,
    /// timestamp, body).
    pub async fn next_media(&mut self) -> Result<(u8, u32, Bytes), PublishError> {
        loop {
            let message = self.next_message().await?;
            if matches!(message.type_id, flv::TAG_AUDIO | flv::TAG_VIDEO) {
                return Ok((message.type_id, message.timestamp, message.payload));
            }
        }
    }

    async fn await_status(&mut self, wanted: &str) -> Result<(), PublishError> {
        loop {
            let message = self.next_message().await?;
            if message.type_id != 20 {
                continue;
            }
            let values = amf::decode_all(&message.payload)
                .map_err(|e| PublishError::Protocol(e.to_string()))?;
            let code = values
                .get(3)
                .and_then(|info| info.get("code"))
                .and_then(Amf::as_str)
                .unwrap_or_default();
            match values.first().and_then(Amf::as_str) {
                Some("onStatus") if code == wanted => return Ok(()),
                Some("onStatus")
                    if code.contains("Failed")
                        || code.contains("BadName")
                        || code.contains("Rejected") =>
                {
                    return Err(PublishError::Refused(code.to_owned()));
                }
                Some("_error") => return Err(PublishError::Refused(code.to_owned())),
                _ => {}
            }
        }
    }

    fn command(&mut self, stream_id: u32, values: &[Amf]) {
        let mut payload = Vec::new();
        amf::encode_all(values, &mut payload);
        self.send(3, 20, stream_id, 0, payload.into());
    }

    fn send(&mut self, csid: u8, type_id: u8, stream_id: u32, timestamp: u32, payload: Bytes) {
        let message = Message {
            type_id,
            stream_id,
            timestamp,
            payload,
        };
        self.writer.write(csid, &message, &mut self.out);
    }

    /// Queues one FLV tag at `timestamp`.
    pub fn tag(&mut self, kind: u8, timestamp: u32, body: Bytes) {
        let body = if kind == flv::TAG_SCRIPT {
            // onMetaData goes out as `@setDataFrame`, as encoders send it.
            let mut payload = Vec::new();
            amf::encode(&Amf::string("@setDataFrame"), &mut payload);
            payload.extend_from_slice(&body);
            Bytes::from(payload)
        } else {
            body
        };
        let csid = match kind {
            flv::TAG_AUDIO => 4,
            flv::TAG_VIDEO => 6,
            _ => 5,
        };
        self.send(csid, kind, 1, timestamp, body);
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let out = self.out.split();
            self.socket.write_all(&out).await?;
        }
        Ok(())
    }
}

/// Publishes `tags` (an FLV file's) at their pace, looping with timestamps
/// that keep growing, until `stop`. Sequence headers go out once.
///
/// A clip's audio does not tile its video: 4 s of video hold 172.27 AAC
/// frames, and the clip's audio starts later than its video. Looped as the
/// file has them, the audio would come short of the video by a fraction of a
/// frame at every round, and a player's buffer would get a hole once the
/// muxer gave up following the audio's own clock. So the audio frames are
/// sent on one clock of their own, each exactly one frame after the last,
/// the clip's frames over and over, while the video loops on the video's.
pub async fn loop_clip(
    addr: SocketAddr,
    key: &str,
    tags: &[FileTag],
    stop: CancellationToken,
) -> Result<(), PublishError> {
    let mut connection = Connection::publish(addr, key).await?;
    let (headers, video, audio): (Vec<_>, Vec<_>, Vec<_>) = {
        let headers = tags
            .iter()
            .filter(|t| is_sequence_header(t) || t.kind == flv::TAG_SCRIPT);
        let video = tags
            .iter()
            .filter(|t| t.kind == flv::TAG_VIDEO && !is_sequence_header(t));
        let audio = tags
            .iter()
            .filter(|t| t.kind == flv::TAG_AUDIO && !is_sequence_header(t));
        (headers.collect(), video.collect(), audio.collect())
    };
    // One round lasts as long as its video.
    let span = video.iter().map(|t| t.timestamp).max().unwrap_or(0) + 33;
    let frame_ms = audio_frame_ms(tags);
    let audio_start = audio.first().map_or(0.0, |t| f64::from(t.timestamp));
    for tag in &headers {
        connection.tag(tag.kind, 0, tag.body.clone());
    }
    let started = tokio::time::Instant::now();
    let (mut round, mut v, mut a) = (0u64, 0usize, 0u64);
    loop {
        let video_at = video
            .get(v)
            .map(|t| u64::from(t.timestamp) + round * u64::from(span));
        let audio_at =
            (!audio.is_empty()).then(|| (audio_start + a as f64 * frame_ms).round() as u64);
        let (at, kind, body) = match (video_at, audio_at) {
            (Some(vt), Some(at)) if at < vt => {
                let body = audio[(a % audio.len() as u64) as usize].body.clone();
                a += 1;
                (at, flv::TAG_AUDIO, body)
            }
            (Some(vt), _) => {
                let body = video[v].body.clone();
                v += 1;
                if v == video.len() {
                    (v, round) = (0, round + 1);
                }
                (vt, flv::TAG_VIDEO, body)
            }
            (None, Some(at)) => {
                let body = audio[(a % audio.len() as u64) as usize].body.clone();
                a += 1;
                (at, flv::TAG_AUDIO, body)
            }
            (None, None) => return Ok(()),
        };
        let due = started + Duration::from_millis(at);
        if due > tokio::time::Instant::now() {
            connection.flush().await?;
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep_until(due) => {}
            }
        }
        connection.tag(kind, at as u32, body);
    }
}

/// How long one of the clip's AAC frames lasts (1024 samples), in ms.
fn audio_frame_ms(tags: &[FileTag]) -> f64 {
    let rate = tags
        .iter()
        .filter(|t| t.kind == flv::TAG_AUDIO && is_sequence_header(t))
        .find_map(|t| match flv::parse_audio(&t.body) {
            Ok(flv::AudioTag::Config(config)) => Some(config.sample_rate),
            _ => None,
        })
        .unwrap_or(44_100);
    1024.0 * 1000.0 / f64::from(rate.max(1))
}

fn is_sequence_header(tag: &FileTag) -> bool {
    match tag.kind {
        flv::TAG_VIDEO => tag.body.get(1) == Some(&0),
        flv::TAG_AUDIO => {
            tag.body.first().map(|b| b >> 4) == Some(10) && tag.body.get(1) == Some(&0)
        }
        _ => false,
    }
}
