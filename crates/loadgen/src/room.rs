//! The room benchmark: `viewers` WebSocket connections in one room, `chatters`
//! signed-in accounts that chat at `rate` messages a second in all, and the
//! figures: connections held, events delivered a second, delivery latency (from
//! the chatter's send to a viewer's receive), server memory per idle viewer, and
//! what happens to viewers that stop reading.
//!
//! Viewers connect from 127.0.0.2, 127.0.0.3, ... so that the ephemeral port
//! range of one address pair is no limit. They speak WebSocket through
//! [`crate::ws`], which walks frames in place: every viewer counts its frames;
//! one in [`SAMPLE`] also reads each chat message's send time to measure latency
//! (decoding every frame on every viewer would measure the load generator, not
//! the server).
//!
//! The same scenario runs against a Pusher-compatible server (sockudo) as the
//! peer: its viewers subscribe to one public channel, and the messages, with the
//! same send times in them, are published through its signed HTTP API, since a
//! Pusher channel has no chat of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::created;
use crate::ws;

/// One viewer in this many measures latency.
pub const SAMPLE: usize = 20;

/// What the scenario does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub base: String,
    pub viewers: usize,
    pub chatters: usize,
    /// Chat messages a second, over all chatters.
    pub rate: f64,
    pub seconds: u64,
    /// Viewers (in hundredths) that stop reading once chat starts.
    pub stalled_percent: usize,
    /// Source addresses to spread viewers over (127.0.0.2 onwards).
    pub sources: u8,
    /// The server's process id, to read its memory.
    pub server_pid: Option<u32>,
    /// Run against a Pusher-compatible server instead of Hawker.
    pub pusher: Option<Pusher>,
    pub quiet: bool,
}

/// A Pusher-compatible server's app credentials.
#[derive(Debug, Clone)]
pub struct Pusher {
    pub app_id: String,
    pub key: String,
    pub secret: String,
}

/// What the run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    pub viewers: usize,
    pub held: usize,
    pub chat_sent: u64,
    pub delivered_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub rss_per_idle_viewer_kib: Option<f64>,
    pub stalled: usize,
    /// Hawker's counters; a peer has none to read.
    pub stalled_cut_off: Option<f64>,
    pub dropped_per_stalled: Option<f64>,
}

struct Shared {
    start: Instant,
    frames: AtomicU64,
    chatting: AtomicBool,
    done: AtomicBool,
    open: AtomicUsize,
    latencies_us: Mutex<Vec<u64>>,
}

/// Where the viewers connect, and what they send first.
struct Target {
    addr: std::net::SocketAddr,
    path: String,
    /// A frame sent right after the handshake (Pusher's subscribe).
    hello: Option<String>,
}

/// The Pusher channel the peer's viewers subscribe to.
const CHANNEL: &str = "room-bench";

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
}

/// A counter from the server's `/metrics`.
pub(crate) async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let Ok(res) = http.get(format!("{base}/metrics")).send().await else {
        return 0.0;
    };
    let text = res.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// How the messages get into the room.
enum Talk {
    /// Signed-in Hawker accounts chatting over the room's WebSocket.
    Chat { url: String, tokens: Vec<String> },
    /// Events published through a Pusher server's HTTP API.
    Publish { base: String, pusher: Pusher },
}

/// Signs up a seller, opens a shop and a room, and signs up the chatters:
/// the room's id and the chatters' tokens.
pub(crate) async fn hawker_room(
    http: &reqwest::Client,
    base: &str,
    chatters: usize,
    say: &impl Fn(String),
) -> anyhow::Result<(String, Vec<String>)> {
    let run_id = std::process::id();
    let seller = created(http, format!("{base}/api/v1/users"), None, json!({
        "email": format!("room-seller-{run_id}@loadgen.example"), "password": "loadgen-password", "display_name": "Seller"})).await?;
    let token = seller["token"].as_str().unwrap_or_default().to_owned();
    let handle = format!("room-{run_id}");
    created(
        http,
        format!("{base}/api/v1/shops"),
        Some(&token),
        json!({"handle": handle, "name": "Room bench", "currency": "EUR"}),
    )
    .await?;
    let room = created(
        http,
        format!("{base}/api/v1/shops/{handle}/rooms"),
        Some(&token),
        json!({"title": "Bench"}),
    )
    .await?;
    let room = room["room"]["id"].as_str().unwrap_or_default().to_owned();
    say(format!("signing up {chatters} chatters"));
    let mut tokens = Vec::new();
    for i in 0..chatters {
        let v = created(http, format!("{base}/api/v1/users"), None, json!({
            "email": format!("chatter-{run_id}-{i}@loadgen.example"), "password": "loadgen-password", "display_name": format!("Chatter {i}")})).await?;
        tokens.push(v["token"].as_str().unwrap_or_default().to_owned());
    }
    Ok((room, tokens))
}

/// Runs the scenario and returns its figures.
pub async fn run(plan: Plan) -> anyhow::Result<Figures> {
    let base = plan.base.trim_end_matches('/').to_owned();
    let addr: std::net::SocketAddr = base
        .strip_prefix("http://")
        .context("plain http:// only")?
        .parse()
        .context("the URL's host must be an IP address and port")?;
    let http = reqwest::Client::new();
    let say = |line: String| {
        if !plan.quiet {
            eprintln!("{line}");
        }
    };
    let (target, talk) = match &plan.pusher {
        None => {
            let (room, tokens) = hawker_room(&http, &base, plan.chatters, &say).await?;
            let path = format!("/api/v1/rooms/{room}/ws");
            let url = format!("{}{path}", base.replacen("http", "ws", 1));
            let talk = Talk::Chat { url, tokens };
            let target = Target {
                addr,
                path,
                hello: None,
            };
            (target, talk)
        }
        Some(pusher) => {
            let target = Target {
                addr,
                path: format!(
                    "/app/{}?protocol=7&client=hawker-loadgen&version=1.0",
                    pusher.key
                ),
                hello: Some(
                    json!({"event": "pusher:subscribe", "data": {"channel": CHANNEL}}).to_string(),
                ),
            };
            let talk = Talk::Publish {
                base: base.clone(),
                pusher: pusher.clone(),
            };
            (target, talk)
        }
    };
    let target = Arc::new(target);

    let shared = Arc::new(Shared {
        start: Instant::now(),
        frames: AtomicU64::new(0),
        chatting: AtomicBool::new(false),
        done: AtomicBool::new(false),
        open: AtomicUsize::new(0),
        latencies_us: Mutex::new(Vec::new()),
    });
    // The first viewer opens the room on the server, so the baseline below
    // holds the room and measures what each further viewer costs.
    let mut viewers = tokio::task::JoinSet::new();
    viewers.spawn(viewer(target.clone(), 1, 1, shared.clone(), false));
    while shared.open.load(Ordering::Relaxed) < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = plan.server_pid.and_then(crate::video::rss_kib);
    say(format!("opening {} viewers", plan.viewers));
    let stalled_every = if plan.stalled_percent == 0 {
        usize::MAX
    } else {
        100 / plan.stalled_percent.min(100)
    };
    let mut stalled = 0;
    for i in 1..plan.viewers {
        let stall = i % stalled_every == stalled_every - 1;
        stalled += usize::from(stall);
        let source = 2 + (i % usize::from(plan.sources.max(1))) as u8;
        viewers.spawn(viewer(target.clone(), source, i, shared.clone(), stall));
        // At most 256 handshakes at a time.
        if i.is_multiple_of(256) {
            while shared_open(&shared) < i {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if !plan.quiet && i.is_multiple_of(2048) {
                eprintln!("  {i} viewers connected");
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared_open(&shared) < plan.viewers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held_idle = shared_open(&shared);
    let rss_per_idle_viewer_kib =
        match (rss_before, plan.server_pid.and_then(crate::video::rss_kib)) {
            (Some(before), Some(after)) if held_idle > 1 => Some(
                ((after.saturating_sub(before)) as f64 / (held_idle - 1) as f64 * 10.0).round()
                    / 10.0,
            ),
            _ => None,
        };
    say(format!(
        "{held_idle} viewers connected; chat at {} messages/s from {} chatters for {} s",
        plan.rate, plan.chatters, plan.seconds
    ));

    let counters = plan.pusher.is_none();
    let dropped_before = metric(&http, &base, "live_dropped_frames_total").await;
    let cut_before = metric(&http, &base, "live_slow_disconnects_total").await;
    shared.chatting.store(true, Ordering::Relaxed);
    let sent = Arc::new(AtomicU64::new(0));
    let mut talkers = tokio::task::JoinSet::new();
    let senders = plan.chatters.max(1);
    let period = Duration::from_secs_f64(senders as f64 / plan.rate.max(0.001));
    let talk = Arc::new(talk);
    for i in 0..senders {
        let (talk, shared, sent) = (talk.clone(), shared.clone(), sent.clone());
        let offset = period.mul_f64(i as f64 / senders as f64);
        talkers.spawn(chatter(talk, i, period, offset, shared, sent));
    }
    let frames_at_start = shared.frames.load(Ordering::Relaxed);
    let window_start = Instant::now();
    for s in 0..plan.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !plan.quiet {
            let frames = shared.frames.load(Ordering::Relaxed) - frames_at_start;
            eprintln!(
                "  {}s: {} viewers open, {:.0} frames/s",
                s + 1,
                shared_open(&shared),
                frames as f64 / window_start.elapsed().as_secs_f64()
            );
        }
    }
    let delivered = shared.frames.load(Ordering::Relaxed) - frames_at_start;
    let window = window_start.elapsed().as_secs_f64();
    // Counted before the viewers are told to stop, which they do at once.
    let held = shared_open(&shared);
    shared.done.store(true, Ordering::Relaxed);
    talkers.abort_all();
    let dropped = metric(&http, &base, "live_dropped_frames_total").await - dropped_before;
    let cut = metric(&http, &base, "live_slow_disconnects_total").await - cut_before;
    viewers.abort_all();
    let mut latencies = std::mem::take(
        &mut *shared
            .latencies_us
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    latencies.sort_unstable();
    let pick = |p: f64| {
        crate::percentile(&latencies, p).map_or(0.0, |us| (us as f64 / 100.0).round() / 10.0)
    };
    Ok(Figures {
        viewers: plan.viewers,
        held,
        chat_sent: sent.load(Ordering::Relaxed),
        delivered_per_s: (delivered as f64 / window).round(),
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        max_ms: pick(1.0),
        rss_per_idle_viewer_kib,
        stalled,
        stalled_cut_off: counters.then_some(cut),
        dropped_per_stalled: counters.then(|| {
            if stalled > 0 {
                (dropped / stalled as f64).round()
            } else {
                0.0
            }
        }),
    })
}

fn shared_open(shared: &Shared) -> usize {
    shared.open.load(Ordering::Relaxed)
}

/// The send time a chat message carries ("t:" and microseconds since the
/// start), wherever it is in the frame: Pusher escapes it inside a string.
fn sent_at(frame: &[u8]) -> Option<u64> {
    number_after(frame, b"t:")
}

/// The number written right after the first `tag` in a frame.
pub(crate) fn number_after(frame: &[u8], tag: &[u8]) -> Option<u64> {
    let at = frame.windows(tag.len()).position(|w| w == tag)? + tag.len();
    let digits = frame[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut n = 0u64;
    let mut any = false;
    for d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(n)
}

/// One viewer: connects from 127.0.0.`source`, counts every frame, and (one
/// in [`SAMPLE`]) measures each chat message's latency. A stalled viewer stops
/// reading when chat starts.
async fn viewer(
    target: Arc<Target>,
    source: u8,
    index: usize,
    shared: Arc<Shared>,
    stall: bool,
) -> anyhow::Result<()> {
    let mut ws = ws::Socket::connect(source, target.addr, &target.path, &[]).await?;
    if let Some(hello) = &target.hello {
        ws.send_text(hello).await?;
    }
    shared.open.fetch_add(1, Ordering::Relaxed);
    let measure = index.is_multiple_of(SAMPLE);
    let mut samples = Vec::new();
    loop {
        if stall && shared.chatting.load(Ordering::Relaxed) {
            // Holds the socket, reads nothing.
            while !shared.done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            break;
        }
        let Ok(Some(frame)) = ws.next().await else {
            break;
        };
        if let ws::Frame::Text(text) = frame {
            shared.frames.fetch_add(1, Ordering::Relaxed);
            if measure && let Some(sent) = sent_at(&text) {
                let now = shared.start.elapsed().as_micros() as u64;
                samples.push(now.saturating_sub(sent));
                if samples.len() >= 16 {
                    shared
                        .latencies_us
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .append(&mut samples);
                }
            }
        }
        if shared.done.load(Ordering::Relaxed) {
            break;
        }
    }
    shared
        .latencies_us
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .append(&mut samples);
    shared.open.fetch_sub(1, Ordering::Relaxed);
    Ok(())
}

/// One chatter: says "t:<microseconds since the start>" every `period`, in
/// the room's chat or through the peer's publishing API.
async fn chatter(
    talk: Arc<Talk>,
    index: usize,
    period: Duration,
    offset: Duration,
    shared: Arc<Shared>,
    sent: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    match &*talk {
        Talk::Chat { url, tokens } => {
            let mut request = url.as_str().into_client_request()?;
            let token = tokens.get(index).context("a chatter without an account")?;
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
            let (ws, _) =
                tokio_tungstenite::connect_async_with_config(request, Some(config()), true).await?;
            let (mut tx, mut rx) = ws.split();
            // Reads (and drops) what the room sends, so the chatter is not a slow reader.
            tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
            loop {
                tick.tick().await;
                let text = format!("t:{}", shared.start.elapsed().as_micros());
                tx.send(Message::Text(
                    json!({"type": "chat", "text": text}).to_string().into(),
                ))
                .await?;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        Talk::Publish { base, pusher } => {
            let http = reqwest::Client::new();
            loop {
                tick.tick().await;
                let text = format!("t:{}", shared.start.elapsed().as_micros());
                let data = json!({"text": text, "user": {"name": format!("Chatter {index}")}});
                let body = json!({"name": "chat", "channels": [CHANNEL], "data": data.to_string()})
                    .to_string();
                let url = pusher_url(base, pusher, &body)?;
                let res = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                if res.status().is_success() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The signed URL of a Pusher HTTP API publish (`POST /apps/{id}/events`):
/// HMAC-SHA256 with the app's secret over the method, path and sorted query,
/// which carries the body's MD5.
fn pusher_url(base: &str, pusher: &Pusher, body: &str) -> anyhow::Result<String> {
    let path = format!("/apps/{}/events", pusher.app_id);
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body_md5 = hex(&md5::compute(body.as_bytes()).0);
    let query = format!(
        "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}",
        pusher.key
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(pusher.secret.as_bytes())?;
    mac.update(format!("POST\n{path}\n{query}").as_bytes());
    let signature = hex(&mac.finalize().into_bytes());
    Ok(format!("{base}{path}?{query}&auth_signature={signature}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn send_times_are_found_plain_or_escaped() {
        assert_eq!(sent_at(br#"{"data":{"text":"t:1234"}}"#), Some(1234));
        assert_eq!(sent_at(br#"{"data":"{\"text\":\"t:98\"}"}"#), Some(98));
        assert_eq!(sent_at(br#"{"type":"likes"}"#), None);
    }
}
