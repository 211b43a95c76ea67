//! Just enough of a WebSocket client (RFC 6455) for a benchmark's viewers: the
//! opening handshake, the server's unmasked frames read from a large buffer, a
//! masked text frame out, and a pong for every ping. Ten thousand viewers that
//! each decode every frame with a full client would measure the load generator
//! rather than the server; this one walks the frame headers in place and hands
//! out each payload without copying it.

use anyhow::{Context, bail};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// One frame from the server.
pub enum Frame {
    Text(Bytes),
    /// Anything else that is not a close (binary, pong, continuation).
    Other,
}

pub struct Socket {
    stream: TcpStream,
    buf: BytesMut,
}

impl Socket {
    /// Connects from 127.0.0.`source` to `addr` and opens a WebSocket on `path`,
    /// with `headers` (each a full `Name: value` line) in the request.
    pub async fn connect(
        source: u8,
        addr: std::net::SocketAddr,
        path: &str,
        headers: &[String],
    ) -> anyhow::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(n) = std::env::var("LG_RCVBUF").ok().and_then(|v| v.parse().ok()) {
            socket.set_recv_buffer_size(n)?;
        }
        socket.bind(std::net::SocketAddr::from(([127, 0, 0, source], 0)))?;
        let mut stream = socket.connect(addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: aGF3a2VyLWxvYWRnZW4hIQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let end = loop {
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("the server closed the connection during the handshake");
            }
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > 8192 {
                bail!("no end to the handshake's answer");
            }
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            let head = String::from_utf8_lossy(&buf[..end]);
            bail!(
                "the server refused the WebSocket: {}",
                head.lines().next().unwrap_or_default()
            );
        }
        buf.advance(end);
        Ok(Self { stream, buf })
    }

    /// Sends one masked text frame.
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        let frame = masked(TEXT, text.as_bytes());
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// The next frame, or `None` once the server closed. Pings are answered
    /// here and not returned.
    pub async fn next(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            if let Some((opcode, payload)) = self.parse()? {
                match opcode {
                    TEXT => return Ok(Some(Frame::Text(payload))),
                    CLOSE => return Ok(None),
                    PING => {
                        let pong = masked(PONG, &payload);
                        self.stream.write_all(&pong).await?;
                    }
                    _ => return Ok(Some(Frame::Other)),
                }
                continue;
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Takes one whole frame off the buffer, if one is there.
    fn parse(&mut self) -> anyhow::Result<Option<(u8, Bytes)>> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let opcode = b[0] & 0x0F;
        if b[1] & 0x80 != 0 {
            bail!("a server frame must not be masked");
        }
        let (len, header) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (usize::try_from(u64::from_be_bytes(n))?, 10)
            }
            126 | 127 => return Ok(None),
            n => (usize::from(n), 2),
        };
        if b.len() < header + len {
            return Ok(None);
        }
        self.buf.advance(header);
        Ok(Some((opcode, self.buf.split_to(len).freeze())))
    }
}

/// A final client frame: masked, as RFC 6455 requires of clients. The mask need
/// not be secret here (it guards proxies' caches, and there is no proxy).
fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(
        payload
            .iter()
            .zip(MASK.iter().cycle())
            .map(|(byte, mask)| byte ^ mask),
    );
    frame
}
