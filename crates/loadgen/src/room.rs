//! The room benchmark: `viewers` WebSocket connections in one room, `chatters`
//! signed-in accounts that chat at `rate` messages a second in all, and the
//! figures: connections held, events delivered a second, delivery latency (from
//! the chatter's send to a viewer's receive), server memory per idle viewer, and
//! what happens to viewers that stop reading.
//!
//! Viewers connect from 127.0.0.2, 127.0.0.3, ... so that the ephemeral port
//! range of one address pair is no limit. Every viewer counts its frames; one in
//! [`SAMPLE`] also reads each chat message's send time to measure latency (parsing
//! every frame on every viewer would measure the load generator, not Hawker).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::created;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

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
    pub quiet: bool,
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
    pub stalled_cut_off: f64,
    pub dropped_per_stalled: f64,
}

struct Shared {
    start: Instant,
    frames: AtomicU64,
    chatting: AtomicBool,
    done: AtomicBool,
    open: AtomicUsize,
    latencies_us: Mutex<Vec<u64>>,
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
}

/// A counter from the server's `/metrics`.
async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
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

/// Runs the scenario and returns its figures.
pub async fn run(plan: Plan) -> anyhow::Result<Figures> {
    let base = plan.base.trim_end_matches('/').to_owned();
    let ws_base = base.replacen("http", "ws", 1);
    let addr = base
        .strip_prefix("http://")
        .context("plain http:// only")?
        .to_owned();
    let http = reqwest::Client::new();
    let say = |line: String| {
        if !plan.quiet {
            eprintln!("{line}");
        }
    };
    let run_id = std::process::id();
    let seller = created(&http, format!("{base}/api/v1/users"), None, json!({
        "email": format!("room-seller-{run_id}@loadgen.example"), "password": "loadgen-password", "display_name": "Seller"})).await?;
    let token = seller["token"].as_str().unwrap_or_default().to_owned();
    let handle = format!("room-{run_id}");
    created(
        &http,
        format!("{base}/api/v1/shops"),
        Some(&token),
        json!({"handle": handle, "name": "Room bench", "currency": "EUR"}),
    )
    .await?;
    let room = created(
        &http,
        format!("{base}/api/v1/shops/{handle}/rooms"),
        Some(&token),
        json!({"title": "Bench"}),
    )
    .await?;
    let room = room["room"]["id"].as_str().unwrap_or_default().to_owned();
    say(format!("signing up {} chatters", plan.chatters));
    let mut chatters = Vec::new();
    for i in 0..plan.chatters {
        let v = created(&http, format!("{base}/api/v1/users"), None, json!({
            "email": format!("chatter-{run_id}-{i}@loadgen.example"), "password": "loadgen-password", "display_name": format!("Chatter {i}")})).await?;
        chatters.push(v["token"].as_str().unwrap_or_default().to_owned());
    }

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
    let url = format!("{ws_base}/api/v1/rooms/{room}/ws");
    let mut viewers = tokio::task::JoinSet::new();
    viewers.spawn(viewer(
        url.clone(),
        addr.clone(),
        1,
        1,
        shared.clone(),
        false,
    ));
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
        let (url, addr, mine) = (url.clone(), addr.clone(), shared.clone());
        viewers.spawn(viewer(url, addr, source, i, mine, stall));
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

    let dropped_before = metric(&http, &base, "live_dropped_frames_total").await;
    let cut_before = metric(&http, &base, "live_slow_disconnects_total").await;
    shared.chatting.store(true, Ordering::Relaxed);
    let sent = Arc::new(AtomicU64::new(0));
    let mut talkers = tokio::task::JoinSet::new();
    let period = Duration::from_secs_f64(plan.chatters.max(1) as f64 / plan.rate.max(0.001));
    for (i, token) in chatters.into_iter().enumerate() {
        let (url, shared, sent) = (url.clone(), shared.clone(), sent.clone());
        let offset = period.mul_f64(i as f64 / plan.chatters.max(1) as f64);
        talkers.spawn(chatter(url, token, period, offset, shared, sent));
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
    shared.done.store(true, Ordering::Relaxed);
    talkers.abort_all();
    let held = shared_open(&shared);
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
        stalled_cut_off: cut,
        dropped_per_stalled: if stalled > 0 {
            (dropped / stalled as f64).round()
        } else {
            0.0
        },
    })
}

fn shared_open(shared: &Shared) -> usize {
    shared.open.load(Ordering::Relaxed)
}

/// One viewer: connects from 127.0.0.`source`, counts every frame, and (one
/// in [`SAMPLE`]) measures each chat message's latency. A stalled viewer stops
/// reading when chat starts.
async fn viewer(
    url: String,
    addr: String,
    source: u8,
    index: usize,
    shared: Arc<Shared>,
    stall: bool,
) -> anyhow::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, source], 0)))?;
    let stream = socket.connect(addr.parse()?).await?;
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(
        url.into_client_request()?,
        stream,
        Some(config()),
    )
    .await?;
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
        let Some(frame) = ws.next().await else { break };
        let Ok(frame) = frame else { break };
        if let Message::Text(text) = frame {
            shared.frames.fetch_add(1, Ordering::Relaxed);
            if measure
                && let Some(sent) = text
                    .as_str()
                    .find("\"t:")
                    .and_then(|at| text.as_str()[at + 3..].split('"').next())
                    .and_then(|us| us.parse::<u64>().ok())
            {
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

/// One chatter: says "t:<microseconds since the start>" every `period`.
async fn chatter(
    url: String,
    token: String,
    period: Duration,
    offset: Duration,
    shared: Arc<Shared>,
    sent: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config()), false).await?;
    let (mut tx, mut rx) = ws.split();
    // Reads (and drops) what the room sends, so the chatter is not a slow reader.
    tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
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
