//! `hawker-loadgen`: the crowd, for benchmarks and soak tests. It talks to a
//! running Hawker over its public HTTP API only, as real clients do.
//!
//! `flash-sale` sets up a seller, a live flash sale of `--quantity` units and
//! `--buyers` accounts, then sends `--attempts` purchase taps spread over the
//! buyers with `--concurrency` requests in flight, and reports what happened:
//! confirmed orders per second, answer latencies, refusals, and whether anything
//! was oversold (from the sale's own stock afterwards).

/// glibc's allocator spends a fifth of a busy server's time in its arena locks;
/// mimalloc's per-thread heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use loadgen::created;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "hawker-loadgen",
    version,
    about = "Simulated crowds for Hawker benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// A purchase storm on one flash sale
    FlashSale(FlashSale),
    /// Viewers, chatters and slow readers in one live room
    Room(RoomArgs),
    /// One room over several nodes: viewers spread over them, chat through
    /// all of them, then the node that numbers the room killed
    Cluster(ClusterArgs),
    /// A viewer process of `cluster` (started by it)
    #[command(hide = true)]
    ClusterViewers(ClusterViewersArgs),
    /// Publishers of a pre-encoded clip and HTTP-FLV or RTMP players, against
    /// Hawker or nginx-rtmp: latency, CPU per stream, viewers per core
    Video(VideoArgs),
    /// A show measured calm and then under attack (bench/abuse)
    Abuse(AbuseArgs),
}

#[derive(clap::Args)]
struct VideoArgs {
    /// The FLV clip to publish, sent as it is (no encoding); it must last
    /// longer than the warm-up and the measurement
    #[arg(long)]
    clip: std::path::PathBuf,
    /// RTMP address to publish to
    #[arg(long, default_value = "127.0.0.1:1935")]
    rtmp: std::net::SocketAddr,
    /// Stream keys (or names), one publisher each, comma separated
    #[arg(long, value_delimiter = ',', required = true)]
    keys: Vec<String>,
    /// What players read: http://IP:PORT/live/ROOM.flv or rtmp://IP:PORT/live/NAME
    #[arg(long)]
    play: Option<String>,
    /// Players; one in 50 (and the first) also measures latency
    #[arg(long, default_value_t = 1)]
    players: usize,
    /// Seconds of measurement, after a warm-up of 3 s
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Source addresses to spread players over (127.0.0.2 onwards)
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// The server's process id, for its CPU time and memory
    #[arg(long)]
    server_pid: Option<u32>,
    /// Start every publisher at the same instant (by default their starts are
    /// spread over one frame interval, as independent encoders are)
    #[arg(long)]
    aligned: bool,
    /// Write `frame_index timestamp wall_ms` for each video frame the first publisher sent
    #[arg(long)]
    send_log: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
struct ClusterArgs {
    /// The nodes' base URLs (http://IP:PORT), comma separated; the room is
    /// set up and opened through the first
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// The nodes' process ids, in the same order: their CPU time, and the kill
    #[arg(long, value_delimiter = ',', required = true)]
    pids: Vec<u32>,
    /// nats-server's process id, for its CPU time
    #[arg(long)]
    bus_pid: Option<u32>,
    /// WebSocket viewers in the room, over all nodes
    #[arg(long, default_value_t = 40_000)]
    viewers: usize,
    /// Signed-in accounts that chat, spread over the nodes
    #[arg(long, default_value_t = 40)]
    chatters: usize,
    /// Chat messages a second, over all chatters
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds of steady state measured before the kill
    #[arg(long, default_value_t = 20)]
    steady_seconds: u64,
    /// Seconds measured after the kill
    #[arg(long, default_value_t = 15)]
    after_kill_seconds: u64,
    /// Do not kill a node (the single-node run)
    #[arg(long)]
    no_kill: bool,
    /// Print only the JSON line
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct ClusterViewersArgs {
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<std::net::SocketAddr>,
    #[arg(long)]
    room: String,
    #[arg(long)]
    viewers: usize,
    #[arg(long)]
    first: usize,
    /// Source addresses, as LOW-HIGH of 127.0.0.LOW to 127.0.0.HIGH
    #[arg(long)]
    sources: String,
}

#[derive(clap::Args)]
struct RoomArgs {
    /// The server's base URL (Hawker's, or a Pusher server's with --pusher-app)
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Run against a Pusher-compatible server (the peer): its app as
    /// ID:KEY:SECRET; viewers subscribe to one public channel and the messages
    /// are published through its HTTP API
    #[arg(long)]
    pusher_app: Option<String>,
    /// WebSocket viewers in the room
    #[arg(long, default_value_t = 1000)]
    viewers: usize,
    /// Signed-in accounts that chat (each at most about one message a second)
    #[arg(long, default_value_t = 100)]
    chatters: usize,
    /// Chat messages a second, over all chatters
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long the chat runs
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Viewers, in percent, that stop reading when the chat starts
    #[arg(long, default_value_t = 0)]
    stalled_percent: usize,
    /// Source addresses to spread viewers over (127.0.0.2 onwards)
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// The server's process id, to measure its memory per viewer
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print only the JSON line
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct AbuseArgs {
    /// Hawker's base URL, http://IP:PORT
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Hawker's RTMP address
    #[arg(long, default_value = "127.0.0.1:1935")]
    rtmp: std::net::SocketAddr,
    /// Where to write the show's stream key, for the encoder
    #[arg(long)]
    key_file: std::path::PathBuf,
    /// WebSocket viewers of the show
    #[arg(long, default_value_t = 1000)]
    viewers: usize,
    /// Chat messages a second
    #[arg(long, default_value_t = 50.0)]
    chat_rate: f64,
    /// Flash-sale purchases a second
    #[arg(long, default_value_t = 10.0)]
    tap_rate: f64,
    /// Seconds each phase (calm, attacked) is measured
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// The server's process id, for its memory
    #[arg(long)]
    server_pid: Option<u32>,
    /// The attacks, comma-separated: rtmp, bombs, slowloris, websockets,
    /// sign-ups [default: all]
    #[arg(long, value_delimiter = ',')]
    attacks: Vec<String>,
}

#[derive(clap::Args)]
struct FlashSale {
    /// Hawker's base URL
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Units on sale
    #[arg(long, default_value_t = 1000)]
    quantity: i64,
    /// Purchase taps to send
    #[arg(long, default_value_t = 20_000)]
    attempts: usize,
    /// Buyer accounts the taps are spread over (each may buy one unit)
    #[arg(long, default_value_t = 2000)]
    buyers: usize,
    /// Requests in flight at once
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Taps on a warm-up sale of its own before the measured storm, over the
    /// same connections, each of which buys a unit (the sale has as many and
    /// its per-buyer limit lets every buyer's taps through): the selling path
    /// runs on the server's database connections, so that the storm measures
    /// a server that has sold before, not its first statements on each
    /// connection; 0 for none
    #[arg(long, default_value_t = 4096)]
    warmup_taps: usize,
    /// Print only the JSON line
    #[arg(long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.scenario {
        Scenario::FlashSale(args) => runtime.block_on(flash_sale(args)),
        Scenario::Room(args) => runtime.block_on(async move {
            let pusher = match args
                .pusher_app
                .as_deref()
                .map(|a| a.split(':').collect::<Vec<_>>())
            {
                None => None,
                Some(parts) => match parts[..] {
                    [app_id, key, secret] => Some(loadgen::room::Pusher {
                        app_id: app_id.to_owned(),
                        key: key.to_owned(),
                        secret: secret.to_owned(),
                    }),
                    _ => anyhow::bail!("--pusher-app takes ID:KEY:SECRET"),
                },
            };
            let figures = loadgen::room::run(loadgen::room::Plan {
                base: args.url,
                viewers: args.viewers,
                chatters: args.chatters,
                rate: args.rate,
                seconds: args.seconds,
                stalled_percent: args.stalled_percent,
                sources: args.sources,
                server_pid: args.server_pid,
                pusher,
                quiet: args.quiet,
            })
            .await?;
            println!("{}", serde_json::to_string(&figures)?);
            Ok(())
        }),
        Scenario::Video(args) => runtime.block_on(video(args)),
        Scenario::Abuse(args) => runtime.block_on(async move {
            let figures = loadgen::abuse::run(loadgen::abuse::Plan {
                base: args.url,
                rtmp: args.rtmp,
                key_file: args.key_file,
                viewers: args.viewers,
                chat_rate: args.chat_rate,
                tap_rate: args.tap_rate,
                seconds: args.seconds,
                server_pid: args.server_pid,
                attacks: if args.attacks.is_empty() {
                    loadgen::abuse::ATTACKS.map(str::to_owned).to_vec()
                } else {
                    args.attacks
                },
            })
            .await?;
            println!("{}", serde_json::to_string(&figures)?);
            Ok(())
        }),
        Scenario::Cluster(args) => runtime.block_on(async move {
            let figures = loadgen::cluster::run(loadgen::cluster::Plan {
                nodes: args.nodes,
                pids: args.pids,
                bus_pid: args.bus_pid,
                viewers: args.viewers,
                chatters: args.chatters,
                rate: args.rate,
                steady_seconds: args.steady_seconds,
                after_kill_seconds: args.after_kill_seconds,
                kill: !args.no_kill,
                quiet: args.quiet,
            })
            .await?;
            println!("{}", serde_json::to_string(&figures)?);
            Ok(())
        }),
        Scenario::ClusterViewers(args) => {
            let sources = args
                .sources
                .split_once('-')
                .and_then(|(low, high)| Some((low.parse().ok()?, high.parse().ok()?)))
                .context("--sources takes LOW-HIGH")?;
            runtime.block_on(loadgen::cluster::watch::run(
                loadgen::cluster::watch::Plan {
                    nodes: args.nodes,
                    room: args.room,
                    viewers: args.viewers,
                    first: args.first,
                    sources,
                },
            ))
        }
    }
}

async fn video(args: VideoArgs) -> anyhow::Result<()> {
    use loadgen::video::{self, SendLog, Source, Watched};
    use std::sync::atomic::Ordering::Relaxed;

    let tags = Arc::new(video::read_clip(&args.clip)?);
    let rss_before = args.server_pid.and_then(video::rss_kib);
    let stop = tokio_util::sync::CancellationToken::new();
    let log = Arc::new(SendLog::default());
    let mut publishers = tokio::task::JoinSet::new();
    let publishers_count = args.keys.len().max(1) as u64;
    for (i, key) in args.keys.iter().enumerate() {
        let (tags, key, stop) = (tags.clone(), key.clone(), stop.clone());
        let log = (i == 0).then(|| log.clone());
        let rtmp = args.rtmp;
        // Encoders are not in step with each other: without --aligned, their
        // starts are spread over one frame interval.
        let offset = if args.aligned {
            Duration::ZERO
        } else {
            Duration::from_micros(33_333 * i as u64 / publishers_count)
        };
        publishers.spawn(async move {
            tokio::time::sleep(offset).await;
            video::publish(rtmp, &key, &tags, log, stop).await
        });
    }
    // Let the streams start before players ask for them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let watched = Arc::new(Watched::default());
    let mut players = tokio::task::JoinSet::new();
    if let Some(url) = &args.play {
        let source = Source::parse(url)?;
        for i in 0..args.players {
            let from = 2 + (i % usize::from(args.sources.max(1))) as u8;
            let measures = (i % 50 == 0).then(|| log.clone());
            players.spawn(video::play(
                source.clone(),
                from,
                measures,
                watched.clone(),
                stop.clone(),
            ));
            if i % 200 == 199 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = args.server_pid;
    let cpu_before = pid.and_then(video::cpu_seconds);
    let bytes_before = watched.bytes.load(Relaxed);
    let started = Instant::now();
    watched
        .latencies_ms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, pid.and_then(video::cpu_seconds)) {
        (Some(a), Some(b)) => Some((b - a) / elapsed),
        _ => None,
    };
    let bytes = watched.bytes.load(Relaxed) - bytes_before;
    let rss_after = pid.and_then(video::rss_kib);
    let rss_mib = rss_after.map(|k| k as f64 / 1024.0);
    // What the streams (and players) added to the server's memory.
    let rss_kib_per_stream = rss_before
        .zip(rss_after)
        .map(|(before, after)| after.saturating_sub(before) as f64 / args.keys.len().max(1) as f64);
    let ended = watched.ended.load(Relaxed);
    stop.cancel();
    let mut failures = Vec::new();
    while let Some(done) = publishers.join_next().await {
        if let Ok(Err(e)) = done {
            failures.push(format!("publisher: {e:#}"));
        }
    }
    while let Some(done) = players.join_next().await {
        if let Ok(Err(e)) = done {
            failures.push(format!("player: {e:#}"));
        }
    }
    if let Some(path) = &args.send_log {
        log.write(path)?;
    }
    let mut latencies = std::mem::take(
        &mut *watched
            .latencies_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    latencies.sort_by(f64::total_cmp);
    let players_held = args.players as u64 - ended.min(args.players as u64);
    let figures = json!({
        "publishers": args.keys.len(),
        "players": args.players,
        "players_held": players_held,
        "seconds": elapsed,
        "server_cpu_pct": cpu.map(|c| c * 100.0),
        "cpu_pct_per_stream": cpu.map(|c| c * 100.0 / args.keys.len() as f64),
        "players_per_core": cpu.filter(|c| *c > 0.0 && args.players > 0).map(|c| players_held as f64 / c),
        "kbps_per_player": if args.players > 0 { bytes as f64 * 8.0 / 1000.0 / elapsed / args.players as f64 } else { 0.0 },
        "latency_ms_median": loadgen::percentile(&latencies, 0.5),
        "latency_ms_p95": loadgen::percentile(&latencies, 0.95),
        "latency_samples": latencies.len(),
        "server_rss_mib": rss_mib,
        "rss_kib_per_stream": rss_kib_per_stream,
        "failures": failures.len(),
        "first_failure": failures.first(),
    });
    println!("{figures}");
    Ok(())
}

/// The latency at fraction `p` of a sorted list, in milliseconds (0 when empty).
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    loadgen::percentile(sorted, p).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

async fn flash_sale(args: FlashSale) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(60))
        .build()?;
    let run = std::process::id();
    let say = |line: String| {
        if !args.quiet {
            eprintln!("{line}");
        }
    };

    say(format!(
        "setting up a sale of {} units at {base}",
        args.quantity
    ));
    let seller = created(&client, format!("{base}/api/v1/users"), None, json!({
        "email": format!("seller-{run}@loadgen.example"), "password": "loadgen-password", "display_name": "Loadgen seller"})).await?;
    let token = seller["token"].as_str().unwrap_or_default().to_owned();
    let handle = format!("loadgen-{run}");
    created(
        &client,
        format!("{base}/api/v1/shops"),
        Some(&token),
        json!({
        "handle": handle, "name": "Loadgen", "currency": "EUR"}),
    )
    .await?;
    let warmup_units = args.warmup_taps.max(1) as i64;
    let product = created(&client, format!("{base}/api/v1/shops/{handle}/products"), Some(&token), json!({
        "title": "Storm tee", "status": "active",
        "variants": [{"sku": "STORM", "price": {"amount": 2000, "currency": "EUR"}, "stock": args.quantity},
                     {"sku": "WARMUP", "price": {"amount": 2000, "currency": "EUR"}, "stock": warmup_units}]})).await?;
    let room = created(
        &client,
        format!("{base}/api/v1/shops/{handle}/rooms"),
        Some(&token),
        json!({"title": "Storm"}),
    )
    .await?;
    let room = room["room"]["id"].as_str().unwrap_or_default().to_owned();
    let open_sale = |variant: Value, quantity: i64, per_buyer_limit: i64| {
        let (client, url, token) = (
            client.clone(),
            format!("{base}/api/v1/rooms/{room}/sales"),
            token.clone(),
        );
        async move {
            let sale = created(
                &client,
                url,
                Some(&token),
                json!({
                "variant_id": variant, "price": {"amount": 999, "currency": "EUR"},
                "quantity": quantity, "per_buyer_limit": per_buyer_limit, "duration_seconds": 3600}),
            )
            .await?;
            anyhow::Ok(sale["id"].as_str().unwrap_or_default().to_owned())
        }
    };

    say(format!("signing up {} buyers", args.buyers));
    let signups = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.buyers {
        let (client, base, signups) = (client.clone(), base.clone(), signups.clone());
        tasks.spawn(async move {
            let _permit = signups.acquire().await?;
            let v = created(&client, format!("{base}/api/v1/users"), None, json!({
                "email": format!("buyer-{run}-{i}@loadgen.example"), "password": "loadgen-password", "display_name": "Buyer"})).await?;
            anyhow::Ok(v["token"].as_str().unwrap_or_default().to_owned())
        });
    }
    let mut buyers = Vec::with_capacity(args.buyers);
    while let Some(token) = tasks.join_next().await {
        buyers.push(token??);
    }

    // The buyers are in the room before the sale, signed in: each one's page
    // has asked who they are, as the viewer page does when it opens.
    say("buyers open the room".to_owned());
    let opening = Arc::new(tokio::sync::Semaphore::new(64));
    let mut pages = tokio::task::JoinSet::new();
    for token in &buyers {
        let (client, url, token, opening) = (
            client.clone(),
            format!("{base}/api/v1/me"),
            token.clone(),
            opening.clone(),
        );
        pages.spawn(async move {
            let _permit = opening.acquire().await?;
            let res = client.get(url).bearer_auth(token).send().await?;
            anyhow::ensure!(res.status().is_success(), "GET /me: {}", res.status());
            anyhow::Ok(())
        });
    }
    while let Some(done) = pages.join_next().await {
        done??;
    }
    // Open every connection before the clock starts: the figure is about
    // selling, not about TCP handshakes.
    let addr = addr_of(&base)?;
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        connecting.spawn(connect(addr.clone()));
    }
    let mut connections = Vec::with_capacity(args.concurrency);
    while let Some(connection) = connecting.join_next().await {
        connections.push(connection??);
    }
    let buyers = Arc::new(buyers);
    if args.warmup_taps > 0 {
        let per_buyer = args.warmup_taps.div_ceil(args.buyers.max(1)) as i64;
        let warm = open_sale(
            product["variants"][1]["id"].clone(),
            warmup_units,
            per_buyer,
        )
        .await?;
        say(format!(
            "warm-up: {} taps on a sale of its own",
            args.warmup_taps
        ));
        let storm = Arc::new(Storm {
            addr: addr.clone(),
            path: format!("/api/v1/rooms/{room}/sales/{warm}/orders"),
            buyers: buyers.clone(),
            keys: "warm",
            attempts: args.warmup_taps,
            next: AtomicUsize::new(0),
            start: Instant::now(),
        });
        let mut workers = tokio::task::JoinSet::new();
        for connection in connections {
            workers.spawn(tap_worker(storm.clone(), connection));
        }
        connections = Vec::with_capacity(args.concurrency);
        while let Some(done) = workers.join_next().await {
            connections.push(done??.1);
        }
    }
    let sale = open_sale(product["variants"][0]["id"].clone(), args.quantity, 1).await?;
    say(format!(
        "storm: {} taps, {} in flight",
        args.attempts, args.concurrency
    ));
    let storm = Arc::new(Storm {
        addr,
        path: format!("/api/v1/rooms/{room}/sales/{sale}/orders"),
        buyers,
        keys: "tap",
        attempts: args.attempts,
        next: AtomicUsize::new(0),
        start: Instant::now(),
    });
    let mut workers = tokio::task::JoinSet::new();
    for connection in connections {
        workers.spawn(tap_worker(storm.clone(), connection));
    }
    let progress = if args.quiet {
        None
    } else {
        let storm = storm.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                eprintln!(
                    "  sent {}",
                    storm.next.load(Ordering::Relaxed).min(storm.attempts)
                );
            }
        }))
    };
    let mut answers = Vec::with_capacity(args.attempts);
    while let Some(done) = workers.join_next().await {
        answers.extend(done??.0);
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    let start = storm.start;
    let (mut confirmed, mut sold_out, mut limited, mut other) = (0usize, 0usize, 0usize, 0usize);
    let mut latencies = Vec::with_capacity(args.attempts);
    let mut last_confirmed = Duration::ZERO;
    for Answer {
        status,
        code,
        latency,
        at,
    } in answers
    {
        latencies.push(latency);
        match (status, code.as_deref()) {
            (201, _) => {
                confirmed += 1;
                last_confirmed = last_confirmed.max(at);
            }
            (409, Some("sold_out")) => sold_out += 1,
            (409, Some("limit_reached")) => limited += 1,
            _ => other += 1,
        }
    }
    let elapsed = start.elapsed();
    latencies.sort();

    let state: Value = client
        .get(format!("{base}/api/v1/sales/{sale}"))
        .send()
        .await?
        .json()
        .await?;
    let final_stock = state["available"].as_i64().unwrap_or(-1);
    let sold = args.quantity - final_stock;
    let oversold = (confirmed as i64 - args.quantity).max(0) + (sold - args.quantity).max(0);
    let confirmed_per_s = confirmed as f64 / last_confirmed.as_secs_f64().max(1e-9);
    let figures = json!({
        "confirmed": confirmed,
        "confirmed_per_s": (confirmed_per_s * 10.0).round() / 10.0,
        "answers_per_s": ((args.attempts as f64 / elapsed.as_secs_f64()) * 10.0).round() / 10.0,
        "p50_ms": (percentile(&latencies, 0.50) * 100.0).round() / 100.0,
        "p99_ms": (percentile(&latencies, 0.99) * 100.0).round() / 100.0,
        "max_ms": (percentile(&latencies, 1.0) * 100.0).round() / 100.0,
        "sold_out": sold_out,
        "limit_reached": limited,
        "errors": other,
        "oversold": oversold,
        "final_stock": final_stock,
        "sold_per_sale_row": sold,
        "quantity": args.quantity,
        "attempts": args.attempts,
        "warmup_taps": args.warmup_taps,
    });
    if !args.quiet {
        eprintln!(
            "confirmed {confirmed} of {} units in {:.3} s ({confirmed_per_s:.0}/s); answers p50 {:.1} ms, p99 {:.1} ms; \
             sold_out {sold_out}, limit {limited}, errors {other}; oversold {oversold}; final stock {final_stock}",
            args.quantity,
            last_confirmed.as_secs_f64(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
        );
    }
    println!("{figures}");
    if oversold > 0 || sold != confirmed as i64 {
        bail!("the sale's stock does not match the confirmed orders: {figures}");
    }
    Ok(())
}

/// The shared state of a purchase storm: which tap comes next, and its clock.
struct Storm {
    addr: String,
    path: String,
    buyers: Arc<Vec<String>>,
    /// The Idempotency-Keys' prefix: a buyer's keys differ between storms.
    keys: &'static str,
    attempts: usize,
    next: AtomicUsize,
    start: Instant,
}

/// What one tap got back, and when.
struct Answer {
    status: u16,
    code: Option<String>,
    latency: Duration,
    /// Since the storm started.
    at: Duration,
}

/// `host:port` of an `http://` base URL.
fn addr_of(base: &str) -> anyhow::Result<String> {
    let rest = base
        .strip_prefix("http://")
        .context("the storm speaks plain http:// only")?;
    Ok(rest.split('/').next().unwrap_or(rest).to_owned())
}

type Connection = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// An HTTP/1.1 connection of the storm's own: no pool, no URL parsing per
/// request, as a load tool does, so the generator takes as little of the machine
/// as it can.
async fn connect(addr: String) -> anyhow::Result<Connection> {
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One connection of the storm: sends taps one after another until all are sent.
async fn tap_worker(
    storm: Arc<Storm>,
    mut sender: Connection,
) -> anyhow::Result<(Vec<Answer>, Connection)> {
    let mut answers = Vec::new();
    loop {
        let i = storm.next.fetch_add(1, Ordering::Relaxed);
        if i >= storm.attempts {
            return Ok((answers, sender));
        }
        let request = hyper::Request::post(storm.path.as_str())
            .header("host", storm.addr.as_str())
            .header(
                "authorization",
                format!("Bearer {}", storm.buyers[i % storm.buyers.len()]),
            )
            .header("idempotency-key", format!("{}-{i}", storm.keys))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))?;
        let sent = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        let code = if status == 201 {
            None
        } else {
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        };
        answers.push(Answer {
            status,
            code,
            latency: sent.elapsed(),
            at: storm.start.elapsed(),
        });
    }
}
