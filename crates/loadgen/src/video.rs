//! The video benchmark's clients: publishers that send a pre-encoded FLV clip
//! at its own pace (as `ffmpeg -re -c copy` would, so encoding costs nothing),
//! and players that read HTTP-FLV or RTMP. They work against Hawker and
//! against nginx-rtmp alike.
//!
//! Latency is measured end to end by frame: the publisher notes when it sent
//! the video frame stamped `t`, a player notes when the frame stamped `t`
//! arrived. Both run in this process, so one clock serves both.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio_util::sync::CancellationToken;

use crate::rtmp::{self, Client, FileTag};

/// When each video frame (by timestamp) was sent: a monotonic instant,
/// wall-clock milliseconds and its index in the clip (for players in other
/// processes, like a browser reading the frame number off the picture).
#[derive(Default)]
pub struct SendLog(Mutex<HashMap<u32, (Instant, u64, u64)>>);

impl SendLog {
    fn note(&self, timestamp: u32, index: u64) {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(timestamp, (Instant::now(), wall, index));
    }

    fn sent(&self, timestamp: u32) -> Option<Instant> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&timestamp)
            .map(|s| s.0)
    }

    /// `frame_index timestamp wall_ms` lines, for a player in another process.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        let log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines: Vec<_> = log.iter().map(|(t, (_, w, i))| (*i, *t, *w)).collect();
        lines.sort_unstable();
        let text: String = lines
            .iter()
            .map(|(i, t, w)| format!("{i} {t} {w}\n"))
            .collect();
        std::fs::write(path, text)
    }
}

pub fn read_clip(path: &std::path::Path) -> anyhow::Result<Vec<FileTag>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    rtmp::read_flv(Bytes::from(bytes))
}

/// Publishes `tags` once at their pace (the sequence headers and metadata
/// first, whatever their stamps), noting each video frame's send time.
pub async fn publish(
    addr: SocketAddr,
    key: &str,
    tags: &[FileTag],
    log: Option<Arc<SendLog>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut connection = Client::publish(addr, key)
        .await
        .with_context(|| format!("publishing to {addr}"))?;
    let started = tokio::time::Instant::now();
    let mut frames = 0u64;
    for tag in tags {
        let due = started + Duration::from_millis(u64::from(tag.timestamp));
        if due > tokio::time::Instant::now() {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep_until(due) => {}
            }
        }
        connection.tag(tag.kind, tag.timestamp, &tag.body);
        // Noted as it goes onto the socket, before a player can see it.
        if tag.kind == rtmp::VIDEO && tag.body.get(1) == Some(&1) {
            if let Some(log) = &log {
                log.note(tag.timestamp, frames);
            }
            frames += 1;
        }
        connection.flush().await?;
    }
    Ok(())
}

/// Where a player reads from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `http://host:port/live/{room}.flv`
    HttpFlv { addr: SocketAddr, path: String },
    /// `rtmp://host:port/live/{name}`
    Rtmp { addr: SocketAddr, name: String },
    /// `http://host:port/live/{room}/index.m3u8`: an LL-HLS player that
    /// follows the preload hints, part by part, as hls.js does at the live edge.
    LlHls { addr: SocketAddr, path: String },
}

impl Source {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if let Some(rest) = url.strip_prefix("http://") {
            let (host, path) = rest.split_once('/').context("no path in the URL")?;
            let addr = host.parse().context("the host must be IP:port")?;
            let path = format!("/{path}");
            if path.ends_with(".m3u8") {
                return Ok(Source::LlHls { addr, path });
            }
            return Ok(Source::HttpFlv { addr, path });
        }
        if let Some(rest) = url.strip_prefix("rtmp://") {
            let (host, path) = rest.split_once('/').context("no path in the URL")?;
            let name = path
                .strip_prefix("live/")
                .context("RTMP URLs look like rtmp://HOST:PORT/live/NAME")?;
            return Ok(Source::Rtmp {
                addr: host.parse().context("the host must be IP:port")?,
                name: name.to_owned(),
            });
        }
        bail!(
            "play URLs start with http:// (HTTP-FLV, or LL-HLS when they end in .m3u8) or rtmp://"
        )
    }
}

/// What players saw.
#[derive(Default)]
pub struct Watched {
    pub bytes: AtomicU64,
    pub video_frames: AtomicU64,
    pub ended: AtomicU64,
    pub latencies_ms: Mutex<Vec<f64>>,
}

/// One player: reads until `stop`; with `log`, notes each video frame's
/// latency. Connects from 127.0.0.`source`.
pub async fn play(
    source: Source,
    from: u8,
    log: Option<Arc<SendLog>>,
    watched: Arc<Watched>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut on_video = |timestamp: u32| {
        watched.video_frames.fetch_add(1, Ordering::Relaxed);
        if let Some(sent) = log.as_ref().and_then(|l| l.sent(timestamp)) {
            let ms = sent.elapsed().as_secs_f64() * 1000.0;
            watched
                .latencies_ms
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(ms);
        }
    };
    let result = match source {
        Source::HttpFlv { addr, path } => {
            let mut sender = http_connection(addr, from).await?;
            let request = hyper::Request::get(path)
                .header("host", addr.to_string())
                .body(Empty::<Bytes>::new())?;
            let response = sender.send_request(request).await?;
            if response.status() != 200 {
                bail!("HTTP-FLV answered {}", response.status());
            }
            let mut body = response.into_body();
            let mut tags = TagReader::default();
            loop {
                let frame = tokio::select! {
                    () = stop.cancelled() => break Ok(()),
                    frame = body.frame() => frame,
                };
                let Some(frame) = frame else { break Ok(()) };
                if let Ok(data) = frame?.into_data() {
                    watched
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    tags.push(&data, &mut on_video);
                }
            }
        }
        Source::LlHls { addr, path } => {
            let mut sender = http_connection(addr, from).await?;
            let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned();
            let mut playlist = path.clone();
            loop {
                let Some(text) = fetch(&mut sender, addr, &playlist, &stop).await? else {
                    break Ok(());
                };
                watched
                    .bytes
                    .fetch_add(text.len() as u64, Ordering::Relaxed);
                let hint = std::str::from_utf8(&text)?
                    .lines()
                    .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
                    .and_then(|rest| rest.split('"').next())
                    .context("the playlist has no part hint")?
                    .to_owned();
                // The hinted part: the request waits until it is complete.
                let Some(part) = fetch(&mut sender, addr, &format!("{dir}/{hint}"), &stop).await?
                else {
                    break Ok(());
                };
                watched
                    .bytes
                    .fetch_add(part.len() as u64, Ordering::Relaxed);
                watched.video_frames.fetch_add(1, Ordering::Relaxed);
                // Then the playlist that holds it, for the next hint.
                let (msn, index) = hint
                    .rsplit_once("/part")
                    .and_then(|(_, p)| p.strip_suffix(".m4s"))
                    .and_then(|p| p.split_once('.'))
                    .context("part URIs look like {stream}/part{msn}.{part}.m4s")?;
                playlist = format!("{path}?_HLS_msn={msn}&_HLS_part={index}");
            }
        }
        Source::Rtmp { addr, name } => {
            let mut connection = Client::play(addr, &name).await?;
            loop {
                let media = tokio::select! {
                    () = stop.cancelled() => break Ok(()),
                    media = connection.next_media() => media?,
                };
                let (kind, timestamp, body) = media;
                watched
                    .bytes
                    .fetch_add(body.len() as u64 + 11, Ordering::Relaxed);
                if kind == rtmp::VIDEO && body.get(1) == Some(&1) {
                    on_video(timestamp);
                }
            }
        }
    };
    if !stop.is_cancelled() {
        watched.ended.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// An HTTP/1.1 connection from 127.0.0.`from`, driven by a task of its own.
async fn http_connection(
    addr: SocketAddr,
    from: u8,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let socket = bound(addr, from)?.connect(addr).await?;
    socket.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(socket)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One GET on a kept-alive connection; the whole body, or `None` once `stop`.
async fn fetch(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Bytes>> {
    let request = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let answer = async {
        let response = sender.send_request(request).await?;
        if response.status() != 200 {
            bail!("{path} answered {}", response.status());
        }
        Ok(response.into_body().collect().await?.to_bytes())
    };
    tokio::select! {
        () = stop.cancelled() => Ok(None),
        body = answer => body.map(Some),
    }
}

fn bound(addr: SocketAddr, from: u8) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if addr.ip().is_loopback() {
        socket.bind(SocketAddr::from(([127, 0, 0, from], 0)))?;
    }
    Ok(socket)
}

/// Finds video frames in an FLV byte stream (header, then tags).
#[derive(Default)]
struct TagReader {
    buffer: Vec<u8>,
    header_done: bool,
}

impl TagReader {
    fn push(&mut self, data: &[u8], on_video: &mut impl FnMut(u32)) {
        self.buffer.extend_from_slice(data);
        let mut at = 0;
        if !self.header_done {
            if self.buffer.len() < 13 {
                return;
            }
            at = 13;
            self.header_done = true;
        }
        while self.buffer.len() >= at + 11 {
            let h = &self.buffer[at..at + 11];
            let size = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
            if self.buffer.len() < at + 11 + size + 4 {
                break;
            }
            let timestamp = u32::from(h[7]) << 24
                | u32::from(h[4]) << 16
                | u32::from(h[5]) << 8
                | u32::from(h[6]);
            if h[0] == rtmp::VIDEO && self.buffer.get(at + 12) == Some(&1) {
                on_video(timestamp);
            }
            at += 11 + size + 4;
        }
        self.buffer.drain(..at);
    }
}

/// CPU time a process has used, in seconds (user + system).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are fixed.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
