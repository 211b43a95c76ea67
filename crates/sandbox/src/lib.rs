//! The payments sandbox: a card processor's test mode as a service of its own,
//! reached over HTTP as Stripe is. Nodes create PaymentIntents and Refunds with
//! idempotency keys; the sandbox keeps a durable ledger they can list by time
//! window, caps refunds at what was charged, and delivers signed webhooks with
//! retries and backoff to the URLs it was given (the nodes, or the load
//! balancer in front of them). For tests it injects faults: answers late,
//! fails before or after doing the work, never answers, sends a webhook
//! before answering, or twice.
//!
//! | card number        | result                                                   |
//! |--------------------|----------------------------------------------------------|
//! | 4242424242424242   | succeeds                                                 |
//! | 4000000000000002   | declined: `card_declined`                                |
//! | 4000000000009995   | declined: `insufficient_funds`                           |
//! | 4000000000003220   | processing; succeeds after the asynchronous delay        |
//! | 4000000000000341   | processing; declined after the asynchronous delay        |
//! | any other number   | declined: `card_declined` (test mode takes test cards only) |

mod deliver;
pub mod ledger;
mod routes;
pub mod signature;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ledger::Ledger;
use crate::wire::{Fault, Stats, Target};

/// How the sandbox runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the ledger is kept; `None` keeps it in memory only.
    pub ledger: Option<PathBuf>,
    /// Where webhooks go, tried in turn on each attempt.
    pub webhook_urls: Vec<String>,
    pub webhook_secret: Vec<u8>,
    /// The bearer token every request must carry, if set.
    pub api_key: Option<String>,
    /// How long an asynchronous card takes to settle.
    pub async_delay: Duration,
    /// The first retry's wait after a failed webhook delivery; it doubles on
    /// each attempt, up to a minute.
    pub retry_base: Duration,
    /// Faults injected at random into this share of calls (0 to 1).
    pub chaos_rate: f64,
    pub chaos_seed: u64,
}

impl Settings {
    pub fn new(webhook_secret: Vec<u8>) -> Self {
        Self {
            ledger: None,
            webhook_urls: Vec::new(),
            webhook_secret,
            api_key: None,
            async_delay: Duration::from_secs(1),
            retry_base: Duration::from_millis(500),
            chaos_rate: 0.0,
            chaos_seed: 1,
        }
    }
}

/// A running sandbox's shared state.
pub struct Sandbox {
    settings: Settings,
    ledger: Mutex<Ledger>,
    faults: Mutex<Faults>,
    stats: Mutex<Stats>,
    client: reqwest::Client,
    shutdown: CancellationToken,
}

/// The faults queued by tests, then the random ones.
struct Faults {
    queued: HashMap<Target, VecDeque<Fault>>,
    rng: u64,
}

impl Faults {
    fn next(&mut self, target: Target, rate: f64) -> Option<Fault> {
        if let Some(fault) = self.queued.get_mut(&target).and_then(VecDeque::pop_front) {
            return Some(fault);
        }
        if rate <= 0.0 || self.random() % 10_000 >= (rate * 10_000.0) as u64 {
            return None;
        }
        Some(match self.random() % 6 {
            0 => Fault::Delay {
                after_ms: 50 + self.random() % 1_500,
            },
            1 => Fault::FailBefore,
            2 => Fault::FailAfter,
            3 => Fault::Timeout,
            4 => Fault::WebhookFirst,
            _ => Fault::WebhookTwice,
        })
    }

    /// xorshift64*: reproducible from the seed, good enough to pick faults.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn random_id(prefix: &str) -> String {
    let mut buf = [0u8; 12];
    // A failing OS random source leaves zeros; the clock keeps ids apart.
    let _ = getrandom::fill(&mut buf);
    let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}

impl Sandbox {
    /// Opens the ledger and gets ready; [`serve`] answers requests.
    pub fn open(settings: Settings, shutdown: CancellationToken) -> std::io::Result<Arc<Self>> {
        let ledger = match &settings.ledger {
            Some(path) => Ledger::open(path)?,
            None => Ledger::in_memory(),
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Arc::new(Self {
            faults: Mutex::new(Faults {
                queued: HashMap::new(),
                rng: settings.chaos_seed.max(1),
            }),
            settings,
            ledger: Mutex::new(ledger),
            stats: Mutex::default(),
            client,
            shutdown,
        }))
    }

    /// Queues `count` faults for the next calls to `target`.
    pub fn queue_fault(&self, target: Target, fault: Fault, count: u32) {
        let mut faults = lock(&self.faults);
        let queue = faults.queued.entry(target).or_default();
        queue.extend(std::iter::repeat_n(fault, count as usize));
    }

    fn next_fault(&self, target: Target) -> Option<Fault> {
        let fault = lock(&self.faults).next(target, self.settings.chaos_rate)?;
        *lock(&self.stats)
            .faults
            .entry(fault.name().to_owned())
            .or_default() += 1;
        Some(fault)
    }

    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }
}

/// Serves the sandbox's API on `listener` until `shutdown`, after resuming
/// what a restart interrupted: intents still to settle, webhooks still to
/// deliver.
pub async fn serve(listener: TcpListener, sandbox: Arc<Sandbox>) -> std::io::Result<()> {
    deliver::resume(&sandbox);
    let shutdown = sandbox.shutdown.clone();
    axum::serve(listener, routes::router(sandbox))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
