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
    }
}

/// POSTs JSON and returns the status and the parsed body.
async fn post(
    client: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    let mut req = client.post(&url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = res.status().as_u16();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

async fn created(
    client: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let (status, value) = post(client, url.clone(), token, body).await?;
    if status != 201 {
        bail!("POST {url}: {status} {value}");
    }
    Ok(value)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
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
    let product = created(&client, format!("{base}/api/v1/shops/{handle}/products"), Some(&token), json!({
        "title": "Storm tee", "status": "active",
        "variants": [{"sku": "STORM", "price": {"amount": 2000, "currency": "EUR"}, "stock": args.quantity}]})).await?;
    let room = created(
        &client,
        format!("{base}/api/v1/shops/{handle}/rooms"),
        Some(&token),
        json!({"title": "Storm"}),
    )
    .await?;
    let room = room["room"]["id"].as_str().unwrap_or_default().to_owned();
    let sale = created(
        &client,
        format!("{base}/api/v1/rooms/{room}/sales"),
        Some(&token),
        json!({
        "variant_id": product["variants"][0]["id"], "price": {"amount": 999, "currency": "EUR"},
        "quantity": args.quantity, "per_buyer_limit": 1, "duration_seconds": 3600}),
    )
    .await?;
    let sale = sale["id"].as_str().unwrap_or_default().to_owned();

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

    // Open every connection before the clock starts: the figure is about
    // selling, not about TCP handshakes.
    let mut warm = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, url) = (client.clone(), format!("{base}/healthz"));
        warm.spawn(async move { client.get(url).send().await.map(|_| ()) });
    }
    while let Some(done) = warm.join_next().await {
        done??;
    }
    say(format!(
        "storm: {} taps, {} in flight",
        args.attempts, args.concurrency
    ));
    let url = Arc::new(format!("{base}/api/v1/rooms/{room}/sales/{sale}/orders"));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let answered = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut taps = tokio::task::JoinSet::new();
    for i in 0..args.attempts {
        let (client, url, in_flight, counter) = (
            client.clone(),
            url.clone(),
            in_flight.clone(),
            answered.clone(),
        );
        let token = buyers[i % buyers.len()].clone();
        let permit = in_flight.acquire_owned().await?;
        taps.spawn(async move {
            let sent = Instant::now();
            let result = client
                .post(url.as_str())
                .bearer_auth(&token)
                .header("idempotency-key", format!("tap-{i}"))
                .json(&json!({}))
                .send()
                .await;
            let status = match result {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let code = res
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
                    (status, code)
                }
                Err(_) => (0, None),
            };
            drop(permit);
            counter.fetch_add(1, Ordering::Relaxed);
            (status, sent.elapsed(), start.elapsed())
        });
        if !args.quiet && i % 5000 == 4999 {
            eprintln!(
                "  sent {}, answered {}",
                i + 1,
                answered.load(Ordering::Relaxed)
            );
        }
    }
    let (mut confirmed, mut sold_out, mut limited, mut other) = (0usize, 0usize, 0usize, 0usize);
    let mut latencies = Vec::with_capacity(args.attempts);
    let mut last_confirmed = Duration::ZERO;
    while let Some(done) = taps.join_next().await {
        let ((status, code), latency, at) = done?;
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
