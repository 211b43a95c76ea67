//! The cluster benchmark's conductor: one room served by several nodes, its
//! viewers spread over them by viewer processes of this binary ([`watch`]),
//! chat sent through every node, and then one node killed.
//!
//! The run: set up a room and its chatters through the first node; open the
//! room there (that node takes the room's lease and numbers it); start the
//! viewer processes and wait until every viewer is in; start the chat; measure
//! the steady state; SIGKILL the node that numbers the room (or, when asked, none)
//! and measure until the end. Each phase's figures come from the viewer
//! processes' counters, switched at the phase's start, and the servers' CPU
//! time read from `/proc` at the same instants.

pub mod report;
pub mod watch;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use report::{AFTER_KILL, Done, Line, PHASES, Phase, STEADY, Tick, WARMING};

/// Viewers per viewer process: far enough under the 20,000 open files one
/// process may hold.
const PER_PROCESS: usize = 14_000;

/// What the run does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The nodes' base URLs (`http://IP:PORT`).
    pub nodes: Vec<String>,
    /// The nodes' process ids, in the same order, for their CPU time.
    pub pids: Vec<u32>,
    /// The bus's process id (nats-server), for its CPU time.
    pub bus_pid: Option<u32>,
    pub viewers: usize,
    pub chatters: usize,
    /// Chat messages a second, over all chatters.
    pub rate: f64,
    /// Seconds of steady state, then seconds after the kill.
    pub steady_seconds: u64,
    pub after_kill_seconds: u64,
    /// Kill the node that numbers the room after the steady state.
    pub kill: bool,
    pub quiet: bool,
}

/// What the run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    pub viewers: usize,
    /// Viewers connected at the end of the steady state, over all nodes.
    pub held: usize,
    pub nodes: usize,
    pub messages_per_s: f64,
    pub delivered_per_s: f64,
    pub delivered_per_s_by_node: Vec<f64>,
    /// Chat from a sender on one node to viewers on the others, steady state.
    pub p50_ms: Option<u32>,
    pub p99_ms: Option<u32>,
    pub max_ms: Option<u32>,
    pub latency_samples: u64,
    /// The nodes' CPU time (user and system) per thousand frames delivered.
    pub cpu_ms_per_1k_deliveries: Option<f64>,
    /// nats-server's, the same way.
    pub bus_cpu_ms_per_1k_deliveries: Option<f64>,
    /// Cores busy, on average over the steady state: the nodes, and the load
    /// generator's processes (on the same machine).
    pub nodes_cores: Option<f64>,
    pub loadgen_cores: Option<f64>,
    pub gaps_before_kill: u64,
    pub duplicates_before_kill: u64,
    /// Distinct room events checked against every viewer's copy.
    pub events_checked: usize,
    /// Events two viewers saw with different bytes under one `seq`.
    pub disagreements: u64,
    pub unchecked: u64,
    pub kill: Option<Kill>,
}

/// What the kill did, and what came after it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Kill {
    /// The killed node (index into the nodes) and whether it numbered the room.
    pub node: usize,
    pub was_sequencer: bool,
    /// Takeovers of the room's numbering on the survivors.
    pub takeovers: f64,
    pub viewers_cut: u64,
    pub resumed: u64,
    pub not_back: usize,
    /// From the kill until the last cut viewer had a numbered frame again.
    pub resume_s: Option<f64>,
    pub gaps_after_kill: u64,
    pub missing_after_kill: u64,
    pub duplicates_after_kill: u64,
    pub snapshots_on_resume: u64,
    pub p50_ms: Option<u32>,
    pub p99_ms: Option<u32>,
    pub max_ms: Option<u32>,
    pub messages_per_s: f64,
    pub delivered_per_s: f64,
}

/// Microseconds since the Unix epoch: the clock every process of the run
/// shares, for latencies measured across processes.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A chat text carrying its send time and the sender's node.
fn chat_text(node: usize) -> String {
    format!("t:{} n:{node}", unix_us())
}

/// The send time (Unix µs) and sender's node of a chat frame made of
/// [`chat_text`].
pub fn chat_sender(frame: &[u8]) -> Option<(u64, usize)> {
    let sent = crate::room::number_after(frame, b"t:")?;
    let node = crate::room::number_after(frame, b" n:")?;
    Some((sent, usize::try_from(node).ok()?))
}

/// One viewer process, as the conductor sees it.
struct Process {
    child: Child,
    stdin: ChildStdin,
    tick: Arc<Mutex<Tick>>,
    done: Arc<Mutex<Option<Done>>>,
}

impl Process {
    fn spawn(
        nodes: &[SocketAddr],
        room: &str,
        first: usize,
        viewers: usize,
        n: usize,
    ) -> anyhow::Result<Self> {
        // Each process connects from ten addresses of its own.
        let low = 20 + 10 * n;
        let sources = format!("{low}-{}", low + 9);
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg("cluster-viewers")
            .args([
                "--nodes",
                &nodes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ])
            .args(["--room", room])
            .args(["--viewers", &viewers.to_string()])
            .args(["--first", &first.to_string()])
            .args(["--sources", &sources])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a viewer process")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let tick = Arc::new(Mutex::new(Tick::default()));
        let done = Arc::new(Mutex::new(None));
        let (t, d) = (tick.clone(), done.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str(&line) {
                    Ok(Line::Tick(tick)) => *lock(&t) = tick,
                    Ok(Line::Done(done)) => *lock(&d) = Some(done),
                    Err(e) => eprintln!("a viewer process said something else: {e}: {line}"),
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            tick,
            done,
        })
    }

    fn tell(&mut self, line: &str) {
        let _ = writeln!(self.stdin, "{line}");
        let _ = self.stdin.flush();
    }
}

/// A mutex's guard, whether or not a thread panicked holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sum of every process's latest tick.
fn total(processes: &[Process]) -> Tick {
    let mut sum = Tick::default();
    for p in processes {
        let t = lock(&p.tick);
        sum.open += t.open;
        sum.away += t.away;
        sum.gaps += t.gaps;
        sum.duplicates += t.duplicates;
        report::add_counts(&mut sum.frames, &t.frames);
    }
    sum
}

/// The CPU seconds of the given processes, summed.
fn cpu(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|pid| crate::video::cpu_seconds(*pid)).sum()
}

/// What the chatters share.
struct Chat {
    nodes: Vec<String>,
    room: String,
    dead: Vec<AtomicBool>,
    sent: [AtomicU64; PHASES],
    phase: std::sync::atomic::AtomicUsize,
}

/// Runs the benchmark and returns its figures.
pub async fn run(plan: Plan) -> anyhow::Result<Figures> {
    if plan.nodes.is_empty() || plan.nodes.len() != plan.pids.len() {
        bail!("give every node's URL and process id, in the same order");
    }
    let say = |line: String| {
        if !plan.quiet {
            eprintln!("{line}");
        }
    };
    let http = reqwest::Client::new();
    let addrs: Vec<SocketAddr> = plan
        .nodes
        .iter()
        .map(|url| {
            url.trim_end_matches('/')
                .strip_prefix("http://")
                .and_then(|a| a.parse().ok())
                .with_context(|| format!("{url}: http://IP:PORT only"))
        })
        .collect::<anyhow::Result<_>>()?;
    say(format!(
        "setting up the room and {} chatters through {}",
        plan.chatters, plan.nodes[0]
    ));
    let (room, tokens) =
        crate::room::hawker_room(&http, &plan.nodes[0], plan.chatters, &say).await?;

    // The first viewer opens the room on the first node, which takes its lease.
    let path = format!("/api/v1/rooms/{room}/ws");
    let mut opener = crate::ws::Socket::connect(10, addrs[0], &path, &[]).await?;
    opener.next().await?.context("the room sent nothing")?;
    let opener = tokio::spawn(async move { while let Ok(Some(_)) = opener.next().await {} });

    let processes_needed = plan.viewers.div_ceil(PER_PROCESS).max(1);
    let per = plan.viewers.div_ceil(processes_needed);
    let mut processes = Vec::new();
    for n in 0..processes_needed {
        let first = n * per;
        let count = per.min(plan.viewers - first);
        processes.push(Process::spawn(&addrs, &room, first, count, n)?);
    }
    say(format!(
        "{} viewers over {} nodes from {} processes",
        plan.viewers,
        plan.nodes.len(),
        processes.len()
    ));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for p in &mut processes {
            if let Some(status) = p.child.try_wait()? {
                bail!("a viewer process ended early: {status}");
            }
        }
        let t = total(&processes);
        say(format!("  {} viewers connected", t.open));
        if t.open >= plan.viewers || Instant::now() > deadline {
            break;
        }
    }

    let chat = Arc::new(Chat {
        nodes: plan.nodes.clone(),
        room: room.clone(),
        dead: plan.nodes.iter().map(|_| AtomicBool::new(false)).collect(),
        sent: Default::default(),
        phase: std::sync::atomic::AtomicUsize::new(WARMING),
    });
    let mut chatters = tokio::task::JoinSet::new();
    let period = Duration::from_secs_f64(tokens.len().max(1) as f64 / plan.rate.max(0.001));
    for (i, token) in tokens.into_iter().enumerate() {
        let offset = period.mul_f64(i as f64 / plan.chatters.max(1) as f64);
        chatters.spawn(chatter(chat.clone(), i, token, period, offset));
    }
    say(format!(
        "chat at {} messages/s from {} chatters on every node",
        plan.rate, plan.chatters
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;

    let steady = Mark::now(&plan, &chat, &mut processes, STEADY);
    progress(&processes, plan.steady_seconds, plan.quiet, "steady").await;
    let held = total(&processes).open;
    let mut kill = None;
    let steady_end = if plan.kill && plan.nodes.len() > 1 {
        let mut numbered = Vec::new();
        for url in &plan.nodes {
            numbered.push(crate::room::metric(&http, url, "live_sequencer_takeovers_total").await);
        }
        let node = numbered.iter().position(|n| *n > 0.0).unwrap_or(0);
        let mark = Mark::now(&plan, &chat, &mut processes, AFTER_KILL);
        chat.dead[node].store(true, Ordering::Relaxed);
        let status = std::process::Command::new("kill")
            .args(["-KILL", &plan.pids[node].to_string()])
            .status()?;
        if !status.success() {
            bail!("could not kill node {node} (pid {})", plan.pids[node]);
        }
        let was_sequencer = numbered[node] > 0.0;
        say(format!(
            "killed node {node} ({}); it numbered the room: {was_sequencer}",
            plan.nodes[node]
        ));
        progress(
            &processes,
            plan.after_kill_seconds,
            plan.quiet,
            "after the kill",
        )
        .await;
        let mut takeovers = 0.0;
        for (i, url) in plan.nodes.iter().enumerate() {
            if i != node {
                takeovers += crate::room::metric(&http, url, "live_sequencer_takeovers_total")
                    .await
                    - numbered[i];
            }
        }
        kill = Some((node, was_sequencer, takeovers, mark.at_unix_ms));
        mark
    } else {
        Mark::now(&plan, &chat, &mut processes, STEADY)
    };
    let end = Instant::now();
    chatters.abort_all();
    opener.abort();
    for p in &mut processes {
        p.tell("stop");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes.iter().any(|p| lock(&p.done).is_none()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut dones = Vec::new();
    for mut p in processes {
        let _ = p.child.wait();
        dones.push(
            lock(&p.done)
                .take()
                .context("a viewer process ended without its figures")?,
        );
    }

    let merged = Merged::of(&dones, plan.nodes.len());
    let steady_s = steady_end.at.duration_since(steady.at).as_secs_f64();
    let phase = &merged.phases[STEADY];
    let delivered: u64 = phase.frames.iter().sum();
    let per_1k = |cpu: Option<f64>, before: Option<f64>| {
        Some(
            ((cpu? - before?) * 1000.0 / (delivered.max(1) as f64 / 1000.0) * 1000.0).round()
                / 1000.0,
        )
    };
    let cores = |cpu: Option<f64>, before: Option<f64>| {
        Some(((cpu? - before?) / steady_s * 100.0).round() / 100.0)
    };
    let kill = kill.map(|(node, was_sequencer, takeovers, at_ms)| {
        let after = &merged.phases[AFTER_KILL];
        let after_s = end.duration_since(steady_end.at).as_secs_f64();
        Kill {
            node,
            was_sequencer,
            takeovers,
            viewers_cut: merged.drops,
            resumed: merged.resumed,
            not_back: merged.away,
            resume_s: merged
                .last_back_unix_ms
                .map(|ms| ms.saturating_sub(at_ms) as f64 / 1000.0),
            gaps_after_kill: after.gaps,
            missing_after_kill: after.missing,
            duplicates_after_kill: after.duplicates,
            snapshots_on_resume: merged.snapshots_on_resume,
            p50_ms: after.latency.percentile(0.5),
            p99_ms: after.latency.percentile(0.99),
            max_ms: after.latency.percentile(1.0),
            messages_per_s: rate(chat.sent[AFTER_KILL].load(Ordering::Relaxed), after_s),
            delivered_per_s: rate(after.frames.iter().sum(), after_s),
        }
    });
    Ok(Figures {
        viewers: plan.viewers,
        held,
        nodes: plan.nodes.len(),
        messages_per_s: rate(chat.sent[STEADY].load(Ordering::Relaxed), steady_s),
        delivered_per_s: rate(delivered, steady_s),
        delivered_per_s_by_node: phase.frames.iter().map(|n| rate(*n, steady_s)).collect(),
        p50_ms: phase.latency.percentile(0.5),
        p99_ms: phase.latency.percentile(0.99),
        max_ms: phase.latency.percentile(1.0),
        latency_samples: phase.latency.count(),
        cpu_ms_per_1k_deliveries: per_1k(steady_end.nodes_cpu, steady.nodes_cpu),
        bus_cpu_ms_per_1k_deliveries: per_1k(steady_end.bus_cpu, steady.bus_cpu),
        nodes_cores: cores(steady_end.nodes_cpu, steady.nodes_cpu),
        loadgen_cores: cores(steady_end.loadgen_cpu, steady.loadgen_cpu),
        gaps_before_kill: phase.gaps,
        duplicates_before_kill: phase.duplicates,
        events_checked: merged.events_checked,
        disagreements: merged.disagreements,
        unchecked: merged.unchecked,
        kill,
    })
}

fn rate(n: u64, seconds: f64) -> f64 {
    (n as f64 / seconds.max(1e-9) * 10.0).round() / 10.0
}

/// The start of a phase: when, and the servers' CPU time then.
struct Mark {
    at: Instant,
    at_unix_ms: u64,
    nodes_cpu: Option<f64>,
    bus_cpu: Option<f64>,
    /// This process's and the viewer processes'.
    loadgen_cpu: Option<f64>,
}

impl Mark {
    /// Reads the clocks and tells the chatters and the viewer processes that
    /// `phase` starts.
    fn now(plan: &Plan, chat: &Chat, processes: &mut [Process], phase: usize) -> Self {
        let mark = Self {
            at: Instant::now(),
            at_unix_ms: unix_us() / 1000,
            nodes_cpu: cpu(&plan.pids),
            bus_cpu: plan.bus_pid.and_then(|pid| cpu(&[pid])),
            loadgen_cpu: cpu(&processes
                .iter()
                .map(|p| p.child.id())
                .chain([std::process::id()])
                .collect::<Vec<_>>()),
        };
        chat.phase.store(phase, Ordering::Relaxed);
        for p in processes.iter_mut() {
            p.tell(&phase.to_string());
        }
        mark
    }
}

/// Every viewer process's figures together.
struct Merged {
    phases: Vec<Phase>,
    events_checked: usize,
    disagreements: u64,
    unchecked: u64,
    drops: u64,
    resumed: u64,
    away: usize,
    snapshots_on_resume: u64,
    last_back_unix_ms: Option<u64>,
}

impl Merged {
    fn of(dones: &[Done], nodes: usize) -> Self {
        let mut phases = vec![
            Phase {
                frames: vec![0; nodes],
                ..Phase::default()
            };
            PHASES
        ];
        let mut seqs = std::collections::HashMap::new();
        let mut disagreements = 0;
        for done in dones {
            for (sum, phase) in phases.iter_mut().zip(&done.phases) {
                sum.merge(phase);
            }
            disagreements += done.disagreements;
            for (seq, hash) in &done.seqs {
                if *seqs.entry(*seq).or_insert(*hash) != *hash {
                    disagreements += 1;
                }
            }
        }
        Self {
            phases,
            events_checked: seqs.len(),
            disagreements,
            unchecked: dones.iter().map(|d| d.unchecked).sum(),
            drops: dones.iter().map(|d| d.drops).sum(),
            resumed: dones.iter().map(|d| d.resumed).sum(),
            away: dones.iter().map(|d| d.away).sum(),
            snapshots_on_resume: dones.iter().map(|d| d.snapshots_on_resume).sum(),
            last_back_unix_ms: dones.iter().filter_map(|d| d.last_back_unix_ms).max(),
        }
    }
}

/// Prints a line a second for `seconds`: viewers, frames a second by node.
async fn progress(processes: &[Process], seconds: u64, quiet: bool, phase: &str) {
    let mut last = total(processes);
    for s in 1..=seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = total(processes);
        if !quiet {
            let by_node: Vec<String> = now
                .frames
                .iter()
                .zip(last.frames.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| format!("{}k", (a - b) / 1000))
                .collect();
            eprintln!(
                "  {phase} {s}s: {} open, {} away, frames/s by node {}, gaps {}, duplicates {}",
                now.open,
                now.away,
                by_node.join(" "),
                now.gaps,
                now.duplicates
            );
        }
        last = now;
    }
}

/// One chatter: says [`chat_text`] every `period` through node `index % nodes`,
/// moving to the next live node when its connection drops.
async fn chatter(
    chat: Arc<Chat>,
    index: usize,
    token: String,
    period: Duration,
    offset: Duration,
) -> anyhow::Result<()> {
    let n = chat.nodes.len();
    let mut node = index % n;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    loop {
        while chat.dead[node].load(Ordering::Relaxed) {
            node = (node + 1) % n;
        }
        let url = format!(
            "{}/api/v1/rooms/{}/ws",
            chat.nodes[node].replacen("http", "ws", 1),
            chat.room
        );
        let mut request = url.as_str().into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let Ok((ws, _)) = tokio_tungstenite::connect_async(request).await else {
            node = (node + 1) % n;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (mut tx, mut rx) = ws.split();
        let reader = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
        loop {
            tick.tick().await;
            if reader.is_finished() {
                break;
            }
            let text = json!({"type": "chat", "text": chat_text(node)}).to_string();
            if tx.send(Message::Text(text.into())).await.is_err() {
                break;
            }
            chat.sent[chat.phase.load(Ordering::Relaxed).min(PHASES - 1)]
                .fetch_add(1, Ordering::Relaxed);
        }
        reader.abort();
        node = (node + 1) % n;
    }
}
