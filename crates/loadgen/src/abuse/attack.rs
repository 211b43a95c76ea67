//! The attackers of `bench/abuse`, each a loop that starts again when the
//! server closes it, until told to stop:
//! - 2,000 RTMP connections from 20 addresses that handshake and then ping
//!   every 2 ms, never publishing, each connecting again a second after it
//!   is closed;
//! - AMF bombs: a command of 60,000 null markers before publishing, and 8 MiB
//!   of them as metadata after publishing to a room of the attacker's own;
//! - a slowloris swarm of 800 connections from 4 addresses, each sending a
//!   header byte every 500 ms, again 100 ms after it is dropped;
//! - a WebSocket flood: 4 addresses opening sockets to the room, 150 at a time
//!   each, holding what they get and trying again a second after a refusal;
//! - a sign-up flood: 4 addresses signing up accounts, 8 at a time each, 100
//!   ms after each answer: up to 320 a second, each an Argon2id hash (19 MiB,
//!   tens of milliseconds of a core) were it not refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub(crate) struct Targets {
    pub base: String,
    pub http: SocketAddr,
    pub rtmp: SocketAddr,
    pub room: String,
    pub bomb_key: String,
}

/// What the attackers did and what the server answered.
#[derive(Default, Serialize)]
pub struct Counts {
    /// RTMP connections opened by the junk clients (the server closed each).
    pub rtmp_connections: u64,
    pub amf_bombs: u64,
    pub slowloris_connections: u64,
    /// Slowloris connections the server closed (header deadline or 429).
    pub slowloris_dropped: u64,
    pub websockets_opened: u64,
    /// WebSockets refused: closed with 1013 or answered 429.
    pub websockets_refused: u64,
    pub sign_ups_created: u64,
    pub sign_ups_refused: u64,
}

#[derive(Default)]
struct Tally {
    rtmp_connections: AtomicU64,
    amf_bombs: AtomicU64,
    slowloris_connections: AtomicU64,
    slowloris_dropped: AtomicU64,
    websockets_opened: AtomicU64,
    websockets_refused: AtomicU64,
    sign_ups_created: AtomicU64,
    sign_ups_refused: AtomicU64,
}

pub(crate) struct Attack {
    tasks: JoinSet<()>,
    tally: Arc<Tally>,
}

impl Attack {
    /// Waits for every attacker to stop; what they counted.
    pub async fn finish(mut self) -> Counts {
        while self.tasks.join_next().await.is_some() {}
        let t = &self.tally;
        Counts {
            rtmp_connections: t.rtmp_connections.load(Relaxed),
            amf_bombs: t.amf_bombs.load(Relaxed),
            slowloris_connections: t.slowloris_connections.load(Relaxed),
            slowloris_dropped: t.slowloris_dropped.load(Relaxed),
            websockets_opened: t.websockets_opened.load(Relaxed),
            websockets_refused: t.websockets_refused.load(Relaxed),
            sign_ups_created: t.sign_ups_created.load(Relaxed),
            sign_ups_refused: t.sign_ups_refused.load(Relaxed),
        }
    }
}

/// The kinds of attack, as `--attacks` names them.
pub const KINDS: [&str; 5] = ["rtmp", "bombs", "slowloris", "websockets", "sign-ups"];

/// Starts the attackers of the `kinds` named; they stop once `stop` is
/// cancelled.
pub(crate) fn start(targets: Targets, kinds: &[String], stop: CancellationToken) -> Attack {
    let on = |kind: &str| kinds.iter().any(|k| k == kind);
    let targets = Arc::new(targets);
    let tally = Arc::new(Tally::default());
    let mut tasks = JoinSet::new();
    let (second, tenth) = (Duration::from_secs(1), Duration::from_millis(100));
    // One client per source address, kept alive, as a flooding script has.
    let clients: Vec<reqwest::Client> = (0..=255).map(super::client_from).collect();
    let one = |source: u8, worker: u32| Attacker {
        targets: targets.clone(),
        tally: tally.clone(),
        stop: stop.clone(),
        http: clients[usize::from(source)].clone(),
        source,
        worker,
    };
    for i in (0..2000u32).filter(|_| on("rtmp")) {
        tasks.spawn(again(one(100 + (i % 20) as u8, i), second, junk_rtmp));
    }
    if on("bombs") {
        tasks.spawn(again(one(150, 0), tenth, bomb_before_publish));
        tasks.spawn(again(one(151, 0), tenth, bomb_after_publish));
    }
    for i in (0..800u32).filter(|_| on("slowloris")) {
        tasks.spawn(again(one(120 + (i % 4) as u8, i), tenth, slowloris));
    }
    for i in (0..600u32).filter(|_| on("websockets")) {
        tasks.spawn(again(one(130 + (i % 4) as u8, i), second, websocket));
    }
    for i in (0..32u32).filter(|_| on("sign-ups")) {
        tasks.spawn(again(one(140 + (i % 4) as u8, i), tenth, sign_up));
    }
    Attack { tasks, tally }
}

/// One attacker: what it attacks, where it counts, when it stops, the
/// address it comes from and its number among its kind.
#[derive(Clone)]
struct Attacker {
    targets: Arc<Targets>,
    tally: Arc<Tally>,
    stop: CancellationToken,
    /// An HTTP client whose connections come from `source`.
    http: reqwest::Client,
    source: u8,
    worker: u32,
}

/// Runs `attempt` over and over, `pause` apart, until the attacker's stop.
async fn again<F, Fut>(a: Attacker, pause: Duration, attempt: F)
where
    F: Fn(Attacker) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let stop = a.stop.clone();
    for n in 0u64.. {
        if stop.is_cancelled() {
            return;
        }
        let mut this = a.clone();
        // A new number each time, for what must differ (a sign-up's email).
        this.worker = a.worker.wrapping_mul(1_000_003).wrapping_add(n as u32);
        tokio::select! {
            () = stop.cancelled() => return,
            () = attempt(this) => {}
        }
        tokio::time::sleep(pause).await;
    }
}

async fn connect_from(source: u8, to: SocketAddr) -> Option<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket
        .bind(SocketAddr::new(IpAddr::from([127, 0, 0, source]), 0))
        .ok()?;
    socket.connect(to).await.ok()
}

/// C0 + C1 + C2 of a plain handshake.
fn handshake() -> Vec<u8> {
    let mut bytes = vec![3u8];
    bytes.extend_from_slice(&[0u8; 1536 * 2]);
    bytes
}

/// Reads until the server closes.
async fn until_closed(mut read: impl AsyncReadExt + Unpin) {
    let mut sink = vec![0u8; 4096];
    while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
}

async fn junk_rtmp(a: Attacker) {
    let Some(socket) = connect_from(a.source, a.targets.rtmp).await else {
        return;
    };
    a.tally.rtmp_connections.fetch_add(1, Relaxed);
    let (read, mut write) = socket.into_split();
    if write.write_all(&handshake()).await.is_err() {
        return;
    }
    // A ping request: answered and otherwise ignored.
    const PING: [u8; 18] = [0x02, 0, 0, 0, 0, 0, 6, 4, 0, 0, 0, 0, 0, 6, 0, 0, 0, 1];
    let chatter = async {
        let mut every = tokio::time::interval(Duration::from_millis(2));
        while !a.stop.is_cancelled() {
            every.tick().await;
            if write.write_all(&PING).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = chatter => {}
        () = until_closed(read) => {}
    }
}

/// An RTMP chunk (csid 3, stream 0) carrying `payload` as one AMF0 command,
/// in 128-byte chunks.
fn command_chunks(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x03, 0, 0, 0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[20, 0, 0, 0, 0]);
    for (i, chunk) in payload.chunks(128).enumerate() {
        if i > 0 {
            out.push(0xc3);
        }
        out.extend_from_slice(chunk);
    }
    out
}

async fn bomb_before_publish(a: Attacker) {
    let Some(mut socket) = connect_from(a.source, a.targets.rtmp).await else {
        return;
    };
    let mut wire = handshake();
    wire.extend_from_slice(&command_chunks(&[0x05; 60_000]));
    if socket.write_all(&wire).await.is_ok() {
        a.tally.amf_bombs.fetch_add(1, Relaxed);
        until_closed(socket).await;
    }
}

async fn bomb_after_publish(a: Attacker) {
    let Ok(mut bomber) = crate::rtmp::Client::publish(a.targets.rtmp, &a.targets.bomb_key).await
    else {
        return;
    };
    bomber.tag(18, 0, &vec![0x05u8; (8 << 20) - 64]);
    if bomber.flush().await.is_ok() {
        a.tally.amf_bombs.fetch_add(1, Relaxed);
        while bomber.next_media().await.is_ok() {}
    }
}

async fn slowloris(a: Attacker) {
    let Some(socket) = connect_from(a.source, a.targets.http).await else {
        return;
    };
    a.tally.slowloris_connections.fetch_add(1, Relaxed);
    let (read, mut write) = socket.into_split();
    let dribble = async {
        if write
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .is_err()
        {
            return;
        }
        let mut every = tokio::time::interval(Duration::from_millis(500));
        while !a.stop.is_cancelled() {
            every.tick().await;
            if write.write_all(b"x").await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = dribble => {}
        () = until_closed(read) => {
            a.tally.slowloris_dropped.fetch_add(1, Relaxed);
        }
    }
}

async fn websocket(a: Attacker) {
    let path = format!("/api/v1/rooms/{}/ws", a.targets.room);
    let Ok(mut socket) = crate::ws::Socket::connect(a.source, a.targets.http, &path, &[]).await
    else {
        a.tally.websockets_refused.fetch_add(1, Relaxed);
        return;
    };
    a.tally.websockets_opened.fetch_add(1, Relaxed);
    // An admitted socket gets its snapshot; a refused one its close.
    if !matches!(socket.next().await, Ok(Some(_))) {
        a.tally.websockets_refused.fetch_add(1, Relaxed);
        return;
    }
    while matches!(socket.next().await, Ok(Some(_))) {}
}

async fn sign_up(a: Attacker) {
    let email = format!("flood-{}-{}@abuse.example", std::process::id(), a.worker);
    let body = json!({"email": email, "password": "flood-password", "display_name": "Flood"});
    let url = format!("{}/api/v1/users", a.targets.base);
    match a.http.post(url).json(&body).send().await {
        Ok(res) if res.status().as_u16() == 201 => {
            a.tally.sign_ups_created.fetch_add(1, Relaxed);
        }
        Ok(_) => {
            a.tally.sign_ups_refused.fetch_add(1, Relaxed);
        }
        Err(_) => {}
    }
}
