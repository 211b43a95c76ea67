//! `bench/abuse`: a legitimate show measured calm and then under attack, on
//! one server with its default limits. The show: an encoder publishing (the
//! script runs ffmpeg), viewers on the room's WebSocket, chat, a flash sale
//! bought through at a steady pace, and an HTTP-FLV viewer counting frames.
//! The attack ([`attack`]): junk RTMP connections that never publish, AMF
//! bombs, a slowloris swarm, a WebSocket flood and a sign-up flood, each from
//! a few addresses.
//!
//! Source addresses: the show's accounts sign up and buy from 127.0.0.30-89 (a few
//! each, under the sign-up limit), its viewers watch from 127.0.0.10-19 (at
//! most the per-address WebSocket limit each); the attackers use 127.0.0.100
//! and above.

mod attack;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::ws::{Frame, Socket};
use crate::{created, percentile};

pub use attack::KINDS as ATTACKS;

pub struct Plan {
    pub base: String,
    pub rtmp: SocketAddr,
    /// The room's stream key comes from here: the script publishes to it.
    pub key_file: std::path::PathBuf,
    pub viewers: usize,
    /// Chat messages a second, over all chatters.
    pub chat_rate: f64,
    /// Flash-sale taps a second.
    pub tap_rate: f64,
    pub seconds: u64,
    pub server_pid: Option<u32>,
    /// Which attacks run ([`attack::KINDS`]).
    pub attacks: Vec<String>,
}

#[derive(Serialize)]
pub struct Figures {
    pub bench: &'static str,
    pub viewers: usize,
    pub chat_rate: f64,
    pub seconds: u64,
    pub attacks: Vec<String>,
    pub fps_calm: f64,
    pub fps_attacked: f64,
    pub chat_p99_ms_calm: Option<f64>,
    pub chat_p99_ms_attacked: Option<f64>,
    pub chat_samples_calm: usize,
    pub chat_samples_attacked: usize,
    pub purchase_p99_ms_calm: Option<f64>,
    pub purchase_p99_ms_attacked: Option<f64>,
    pub purchases_calm: usize,
    pub purchases_attacked: usize,
    pub rss_mib_calm: Option<f64>,
    pub rss_mib_attacked: Option<f64>,
    pub server_cpu_pct_calm: Option<f64>,
    pub server_cpu_pct_attacked: Option<f64>,
    pub attack: attack::Counts,
}

/// What one phase of the show measured.
#[derive(Default)]
struct Phase {
    chat_ms: Vec<f64>,
    purchase_ms: Vec<f64>,
    frames: u64,
    /// The server's CPU over the phase, in percent of one core.
    cpu_pct: Option<f64>,
}

/// What the show's clients record as they go, read out per phase.
#[derive(Default)]
struct Show {
    chat_ms: Mutex<Vec<f64>>,
    purchase_ms: Mutex<Vec<f64>>,
    frames: AtomicU64,
}

impl Show {
    async fn take(&self) -> Phase {
        Phase {
            chat_ms: std::mem::take(&mut *self.chat_ms.lock().await),
            purchase_ms: std::mem::take(&mut *self.purchase_ms.lock().await),
            frames: self.frames.swap(0, Relaxed),
            cpu_pct: None,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An HTTP client whose connections come from 127.0.0.`source`; a request
/// may take 30 s, a body read may pause for as long.
pub(crate) fn client_from(source: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, source]))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// The show's accounts, signed up a few per address.
async fn sign_up(base: &str, n: usize, tag: &str) -> anyhow::Result<Vec<String>> {
    let clients: Vec<reqwest::Client> = (30..90).map(client_from).collect();
    let run = std::process::id();
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let client = &clients[(i + tag.len()) % clients.len()];
        let body = json!({"email": format!("{tag}-{run}-{i}@abuse.example"), "password": "bench-password", "display_name": format!("{tag} {i}")});
        let v = created(client, format!("{base}/api/v1/users"), None, body).await?;
        tokens.push(v["token"].as_str().unwrap_or_default().to_owned());
    }
    Ok(tokens)
}

/// The seller's shop, product, room (its stream key written to `key_file`)
/// and a flash sale for `taps` buyers: (room, sale, a second room's key).
async fn set_up(plan: &Plan, taps: usize) -> anyhow::Result<(String, String, String)> {
    let base = &plan.base;
    let http = client_from(29);
    let seller = sign_up(base, 1, "seller").await?.remove(0);
    let shop = format!("abuse-{}", std::process::id());
    created(
        &http,
        format!("{base}/api/v1/shops"),
        Some(&seller),
        json!({"handle": shop, "name": "Abuse bench", "currency": "EUR"}),
    )
    .await?;
    let product = created(
        &http,
        format!("{base}/api/v1/shops/{shop}/products"),
        Some(&seller),
        json!({
        "title": "Hot item", "status": "active",
        "variants": [{"sku": "HOT", "price": {"amount": 1999, "currency": "EUR"}, "stock": taps}]}),
    )
    .await?;
    let room = created(
        &http,
        format!("{base}/api/v1/shops/{shop}/rooms"),
        Some(&seller),
        json!({"title": "The show"}),
    )
    .await?;
    std::fs::write(
        &plan.key_file,
        room["stream_key"].as_str().unwrap_or_default(),
    )?;
    let room_id = room["room"]["id"].as_str().unwrap_or_default().to_owned();
    let sale = created(
        &http,
        format!("{base}/api/v1/rooms/{room_id}/sales"),
        Some(&seller),
        json!({
        "variant_id": product["variants"][0]["id"], "price": {"amount": 999, "currency": "EUR"},
        "quantity": taps, "per_buyer_limit": 1, "duration_seconds": 3600}),
    )
    .await?;
    let other = created(
        &http,
        format!("{base}/api/v1/shops/{shop}/rooms"),
        Some(&seller),
        json!({"title": "The bomb's"}),
    )
    .await?;
    Ok((
        room_id,
        sale["id"].as_str().unwrap_or_default().to_owned(),
        other["stream_key"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// One viewer of the room; one in 20 times the chat.
async fn viewer(
    addr: SocketAddr,
    source: u8,
    room: String,
    measures: bool,
    show: Arc<Show>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut socket =
        Socket::connect(source, addr, &format!("/api/v1/rooms/{room}/ws"), &[]).await?;
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            frame = socket.next() => frame?,
        };
        match frame {
            None => anyhow::bail!("the server closed a viewer"),
            Some(Frame::Text(text)) if measures => {
                if let Some(sent) = crate::room::number_after(&text, b"\"text\":\"t") {
                    show.chat_ms
                        .lock()
                        .await
                        .push(now_ms().saturating_sub(sent) as f64);
                }
            }
            Some(_) => {}
        }
    }
}

/// A chatter saying "t{millis}" every `every`.
async fn chatter(
    addr: SocketAddr,
    room: String,
    token: String,
    every: Duration,
    offset: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let auth = format!("Authorization: Bearer {token}");
    let mut socket =
        Socket::connect(28, addr, &format!("/api/v1/rooms/{room}/ws"), &[auth]).await?;
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let frame = json!({"type": "chat", "text": format!("t{}", now_ms())});
                socket.send_text(&frame.to_string()).await?;
            }
            frame = socket.next() => if frame?.is_none() { anyhow::bail!("the server closed a chatter") },
        }
    }
}

/// Buyers tapping the sale at `rate` a second, each once, until `stop`.
async fn buyers(
    base: String,
    room: String,
    sale: String,
    tokens: Vec<String>,
    rate: f64,
    show: Arc<Show>,
    stop: CancellationToken,
) {
    let clients: Vec<reqwest::Client> = (30..90).map(client_from).collect();
    let url = format!("{base}/api/v1/rooms/{room}/sales/{sale}/orders");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    let mut taps = tokio::task::JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (client, url, show) = (
            clients[i % clients.len()].clone(),
            url.clone(),
            show.clone(),
        );
        taps.spawn(async move {
            let started = Instant::now();
            let res = client
                .post(&url)
                .bearer_auth(&token)
                .header("idempotency-key", format!("tap-{i}"))
                .json(&json!({}))
                .send()
                .await;
            if res.is_ok_and(|r| r.status().as_u16() == 201) {
                show.purchase_ms
                    .lock()
                    .await
                    .push(started.elapsed().as_secs_f64() * 1000.0);
            }
        });
    }
    while taps.join_next().await.is_some() {}
}

/// Counts the video frames an HTTP-FLV viewer of the room gets.
async fn frames(
    base: String,
    room: String,
    show: Arc<Show>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let res = client_from(27)
        .get(format!("{base}/live/{room}.flv"))
        .send()
        .await?;
    anyhow::ensure!(res.status().is_success(), "HTTP-FLV: {}", res.status());
    let mut body = res.bytes_stream();
    let mut buf = bytes::BytesMut::new();
    let mut header = true;
    loop {
        let chunk = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            chunk = body.next() => chunk,
        };
        let Some(chunk) = chunk else {
            anyhow::bail!("the FLV stream ended")
        };
        buf.extend_from_slice(&chunk?);
        if header {
            if buf.len() < 13 {
                continue;
            }
            let _ = buf.split_to(13);
            header = false;
        }
        while buf.len() >= 11 {
            let size = usize::from(buf[1]) << 16 | usize::from(buf[2]) << 8 | usize::from(buf[3]);
            if buf.len() < 11 + size + 4 {
                break;
            }
            let tag = buf.split_to(11 + size + 4);
            // A video frame, not its sequence header.
            if tag[0] == 9 && tag.get(12) != Some(&0) {
                show.frames.fetch_add(1, Relaxed);
            }
        }
    }
}

fn rss_mib(pid: Option<u32>) -> Option<f64> {
    pid.and_then(crate::video::rss_kib)
        .map(|k| k as f64 / 1024.0)
}

fn p99(mut ms: Vec<f64>) -> Option<f64> {
    ms.sort_by(f64::total_cmp);
    percentile(&ms, 0.99)
}

/// Runs the show calm, then under attack; the figures of both.
pub async fn run(plan: Plan) -> anyhow::Result<Figures> {
    let base = plan.base.trim_end_matches('/').to_owned();
    let addr: SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .context("--url must be http://IP:PORT")?;
    let taps_per_phase = (plan.tap_rate * plan.seconds as f64).ceil() as usize;
    eprintln!("==> setting up the show");
    let (room, sale, bomb_key) = set_up(&plan, 2 * taps_per_phase).await?;
    let chatters = (plan.chat_rate.ceil() as usize).max(1);
    let chat_tokens = sign_up(&base, chatters, "chatter").await?;
    let buyer_tokens = sign_up(&base, 2 * taps_per_phase, "buyer").await?;
    eprintln!("==> waiting for the stream (the script's ffmpeg publishes to the key)");
    let http = client_from(29);
    loop {
        let res = http
            .get(format!("{base}/api/v1/rooms/{room}/stream"))
            .send()
            .await;
        if res.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let show = Arc::new(Show::default());
    let stop = CancellationToken::new();
    let mut clients = tokio::task::JoinSet::new();
    eprintln!("==> {} viewers", plan.viewers);
    for i in 0..plan.viewers {
        let source = 10 + (i % 10) as u8;
        clients.spawn(viewer(
            addr,
            source,
            room.clone(),
            i % 20 == 0,
            show.clone(),
            stop.clone(),
        ));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let every = Duration::from_secs_f64(chatters as f64 / plan.chat_rate.max(0.1));
    for (i, token) in chat_tokens.into_iter().enumerate() {
        let offset = every.mul_f64(i as f64 / chatters as f64);
        clients.spawn(chatter(
            addr,
            room.clone(),
            token,
            every,
            offset,
            stop.clone(),
        ));
    }
    clients.spawn(frames(
        base.clone(),
        room.clone(),
        show.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut buyer_tokens = buyer_tokens.into_iter();

    eprintln!("==> calm, {} s", plan.seconds);
    let calm = phase(
        &plan,
        &base,
        &room,
        &sale,
        buyer_tokens.by_ref().take(taps_per_phase).collect(),
        &show,
    )
    .await;
    let rss_calm = rss_mib(plan.server_pid);

    eprintln!("==> under attack, {} s", plan.seconds);
    let attack_stop = CancellationToken::new();
    let attackers = attack::start(
        attack::Targets {
            base: base.clone(),
            http: addr,
            rtmp: plan.rtmp,
            room: room.clone(),
            bomb_key,
        },
        &plan.attacks,
        attack_stop.clone(),
    );
    // The attack in full swing before the show is measured.
    tokio::time::sleep(Duration::from_secs(3)).await;
    show.take().await;
    let attacked = phase(&plan, &base, &room, &sale, buyer_tokens.collect(), &show).await;
    let rss_attacked = rss_mib(plan.server_pid);
    attack_stop.cancel();
    let counts = attackers.finish().await;
    stop.cancel();
    let mut failures = Vec::new();
    while let Some(done) = clients.join_next().await {
        if let Ok(Err(e)) = done {
            failures.push(format!("{e:#}"));
        }
    }
    if let Some(first) = failures.first() {
        eprintln!(
            "{} of the show's clients failed; the first: {first}",
            failures.len()
        );
    }
    let fps = |p: &Phase| p.frames as f64 / plan.seconds as f64;
    Ok(Figures {
        bench: "abuse",
        viewers: plan.viewers,
        chat_rate: plan.chat_rate,
        seconds: plan.seconds,
        attacks: plan.attacks.clone(),
        fps_calm: fps(&calm),
        fps_attacked: fps(&attacked),
        chat_samples_calm: calm.chat_ms.len(),
        chat_samples_attacked: attacked.chat_ms.len(),
        purchases_calm: calm.purchase_ms.len(),
        purchases_attacked: attacked.purchase_ms.len(),
        chat_p99_ms_calm: p99(calm.chat_ms),
        chat_p99_ms_attacked: p99(attacked.chat_ms),
        purchase_p99_ms_calm: p99(calm.purchase_ms),
        purchase_p99_ms_attacked: p99(attacked.purchase_ms),
        rss_mib_calm: rss_calm,
        rss_mib_attacked: rss_attacked,
        server_cpu_pct_calm: calm.cpu_pct,
        server_cpu_pct_attacked: attacked.cpu_pct,
        attack: counts,
    })
}

/// One measured phase: the buyers tap through it while the rest of the show
/// goes on.
async fn phase(
    plan: &Plan,
    base: &str,
    room: &str,
    sale: &str,
    tokens: Vec<String>,
    show: &Arc<Show>,
) -> Phase {
    show.take().await;
    let cpu_before = plan.server_pid.and_then(crate::video::cpu_seconds);
    let started = Instant::now();
    let stop = CancellationToken::new();
    let buying = tokio::spawn(buyers(
        base.to_owned(),
        room.to_owned(),
        sale.to_owned(),
        tokens,
        plan.tap_rate,
        show.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(plan.seconds)).await;
    let cpu = plan.server_pid.and_then(crate::video::cpu_seconds);
    let elapsed = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = buying.await;
    let mut phase = show.take().await;
    phase.cpu_pct = cpu_before.zip(cpu).map(|(a, b)| (b - a) / elapsed * 100.0);
    phase
}
