//! One viewer process of the cluster benchmark: `viewers` WebSocket viewers of
//! one room, spread over the nodes as a load balancer would, each checking its
//! own `seq` chain, all of them together checking that every event has the same
//! bytes under the same number.
//!
//! A viewer whose connection drops reconnects at once to another node with
//! `?since=` the last `seq` it saw, and is back when a numbered frame arrives on
//! the new connection: from then on its chain must go on with no gap and no
//! repeat. One viewer in [`SAMPLE`] also reads each chat message's send time and
//! sender's node, and counts the latency of those sent through another node
//! (of all of them when there is one node).
//!
//! The process speaks to the conductor over its standard streams: a phase
//! number or `stop` per line in; [`report::Line`]s out.

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::report::{self, Done, Histogram, Line, PHASES, Tick};
use super::{chat_sender, lock, unix_us};
use crate::room::SAMPLE;
use crate::ws;

/// Handshakes in flight at once, per process.
const HANDSHAKES: usize = 256;
/// Room events checked against each other: this many after the first one seen.
const WINDOW: usize = 1 << 17;

/// What the viewer process is to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub nodes: Vec<SocketAddr>,
    pub room: String,
    pub viewers: usize,
    /// The first viewer's number over all processes: viewer `i` starts on node
    /// `i % nodes` and measures latency when `i % SAMPLE == 0`.
    pub first: usize,
    /// Source addresses 127.0.0.`sources.0` to 127.0.0.`sources.1`.
    pub sources: (u8, u8),
}

/// Runs the viewers until `stop` (or the end of standard input), then prints
/// the [`Done`] line.
pub async fn run(plan: Plan) -> anyhow::Result<()> {
    let watch = Arc::new(Watch::new(&plan));
    let stop = CancellationToken::new();
    listen(watch.clone(), stop.clone());
    let mut viewers = tokio::task::JoinSet::new();
    let span = usize::from(plan.sources.1.saturating_sub(plan.sources.0)) + 1;
    for i in 0..plan.viewers {
        let source = plan.sources.0 + (i % span) as u8;
        viewers.spawn(viewer(watch.clone(), plan.first + i, source, stop.clone()));
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticks.tick() => print(&Line::Tick(watch.tick()))?,
            () = stop.cancelled() => break,
        }
    }
    let wind_down = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(wind_down);
    loop {
        tokio::select! {
            done = viewers.join_next() => if done.is_none() { break },
            () = &mut wind_down => { viewers.abort_all(); break }
        }
    }
    print(&Line::Done(watch.done()))
}

fn print(line: &Line) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, line)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Reads the conductor's lines on a thread of its own: a phase number moves
/// the phase on; `stop`, or the end of the input, stops the run.
fn listen(watch: Arc<Watch>, stop: CancellationToken) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match line.trim().parse::<usize>() {
                Ok(phase) if phase < PHASES => watch.phase.store(phase, Ordering::Relaxed),
                _ => break,
            }
        }
        stop.cancel();
    });
}

/// What a process's viewers share.
struct Watch {
    nodes: Vec<SocketAddr>,
    path: String,
    phase: AtomicUsize,
    handshakes: tokio::sync::Semaphore,
    open: AtomicUsize,
    away: AtomicUsize,
    phases: [Counters; PHASES],
    seqs: SeqTable,
    drops: AtomicU64,
    resumed: AtomicU64,
    snapshots_on_resume: AtomicU64,
    last_back_unix_ms: AtomicU64,
}

#[derive(Default)]
struct Counters {
    /// Frames received, by node.
    frames: Vec<AtomicU64>,
    /// Dense latency counts, index = milliseconds.
    latency: Mutex<Vec<u64>>,
    gaps: AtomicU64,
    missing: AtomicU64,
    duplicates: AtomicU64,
}

impl Watch {
    fn new(plan: &Plan) -> Self {
        Self {
            nodes: plan.nodes.clone(),
            path: format!("/api/v1/rooms/{}/ws", plan.room),
            phase: AtomicUsize::new(report::WARMING),
            handshakes: tokio::sync::Semaphore::new(HANDSHAKES),
            open: AtomicUsize::new(0),
            away: AtomicUsize::new(0),
            phases: std::array::from_fn(|_| Counters {
                frames: plan.nodes.iter().map(|_| AtomicU64::new(0)).collect(),
                ..Counters::default()
            }),
            seqs: SeqTable::new(),
            drops: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            snapshots_on_resume: AtomicU64::new(0),
            last_back_unix_ms: AtomicU64::new(0),
        }
    }

    fn counters(&self) -> &Counters {
        &self.phases[self.phase.load(Ordering::Relaxed).min(PHASES - 1)]
    }

    fn tick(&self) -> Tick {
        let sum = |f: fn(&Counters) -> &AtomicU64| {
            self.phases
                .iter()
                .map(|c| f(c).load(Ordering::Relaxed))
                .sum()
        };
        Tick {
            open: self.open.load(Ordering::Relaxed),
            away: self.away.load(Ordering::Relaxed),
            frames: (0..self.nodes.len())
                .map(|node| {
                    self.phases
                        .iter()
                        .map(|c| c.frames[node].load(Ordering::Relaxed))
                        .sum()
                })
                .collect(),
            gaps: sum(|c| &c.gaps),
            duplicates: sum(|c| &c.duplicates),
        }
    }

    fn done(&self) -> Done {
        let phases = self
            .phases
            .iter()
            .map(|c| report::Phase {
                frames: c.frames.iter().map(|n| n.load(Ordering::Relaxed)).collect(),
                latency: Histogram::from_counts(&lock(&c.latency)),
                gaps: c.gaps.load(Ordering::Relaxed),
                missing: c.missing.load(Ordering::Relaxed),
                duplicates: c.duplicates.load(Ordering::Relaxed),
            })
            .collect();
        let last_back = self.last_back_unix_ms.load(Ordering::Relaxed);
        Done {
            phases,
            seqs: self.seqs.seen(),
            disagreements: self.seqs.disagreements.load(Ordering::Relaxed),
            unchecked: self.seqs.unchecked.load(Ordering::Relaxed),
            drops: self.drops.load(Ordering::Relaxed),
            away: self.away.load(Ordering::Relaxed),
            resumed: self.resumed.load(Ordering::Relaxed),
            snapshots_on_resume: self.snapshots_on_resume.load(Ordering::Relaxed),
            last_back_unix_ms: (last_back > 0).then_some(last_back),
        }
    }

    fn latency(&self, ms: u64) {
        let mut counts = lock(&self.counters().latency);
        let ms = ms.min(u64::from(Histogram::MAX_MS)) as usize;
        if counts.len() <= ms {
            counts.resize(ms + 1, 0);
        }
        counts[ms] += 1;
    }
}

/// The bytes of every room event under its `seq`, as a hash: the first viewer
/// to see an event writes it, every other one compares.
struct SeqTable {
    /// The first `seq` the table holds (0 until the first event).
    base: AtomicU64,
    slots: Box<[AtomicU64]>,
    disagreements: AtomicU64,
    unchecked: AtomicU64,
}

impl SeqTable {
    fn new() -> Self {
        Self {
            base: AtomicU64::new(0),
            slots: (0..WINDOW).map(|_| AtomicU64::new(0)).collect(),
            disagreements: AtomicU64::new(0),
            unchecked: AtomicU64::new(0),
        }
    }

    fn check(&self, seq: u64, frame: &[u8]) {
        // Other viewers' first events may come before this one: a margin.
        let margin = (WINDOW / 8) as u64;
        let _ = self.base.compare_exchange(
            0,
            seq.saturating_sub(margin).max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let base = self.base.load(Ordering::Relaxed);
        let Some(slot) = seq
            .checked_sub(base)
            .and_then(|i| self.slots.get(usize::try_from(i).ok()?))
        else {
            self.unchecked.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let hash = fx(frame) | 1;
        if let Err(held) = slot.compare_exchange(0, hash, Ordering::Relaxed, Ordering::Relaxed)
            && held != hash
        {
            self.disagreements.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn seen(&self) -> Vec<(u64, u64)> {
        let base = self.base.load(Ordering::Relaxed);
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                let hash = slot.load(Ordering::Relaxed);
                (hash != 0).then_some((base + i as u64, hash))
            })
            .collect()
    }
}

/// A fast, fixed hash of a frame's bytes (the same in every process).
fn fx(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut hash = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    for byte in chunks.remainder() {
        hash = (hash.rotate_left(5) ^ u64::from(*byte)).wrapping_mul(K);
    }
    hash
}

/// A frame's `type` and `seq`, read from the fixed head every room frame
/// starts with (`{"type":"chat","seq":12,...`).
fn head(frame: &[u8]) -> (&[u8], Option<u64>) {
    let Some(rest) = frame.strip_prefix(b"{\"type\":\"") else {
        return (&[], None);
    };
    let end = rest.iter().position(|b| *b == b'"').unwrap_or(rest.len());
    let kind = &rest[..end];
    let seq = rest[end..].strip_prefix(b"\",\"seq\":").and_then(|digits| {
        let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&digits[..n]).ok()?.parse().ok()
    });
    (kind, seq)
}

/// One viewer: connects to node `index % nodes`, follows the room, and on a
/// drop reconnects to another node with `since`.
async fn viewer(watch: Arc<Watch>, index: usize, source: u8, stop: CancellationToken) {
    let n = watch.nodes.len();
    let mut node = index % n;
    let measure = index.is_multiple_of(SAMPLE);
    let mut last = 0u64;
    let mut away = false;
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        let path = match last {
            0 => watch.path.clone(),
            since => format!("{}?since={since}", watch.path),
        };
        let connected = {
            let _permit = watch.handshakes.acquire().await;
            ws::Socket::connect(source, watch.nodes[node], &path, &[]).await
        };
        let Ok(mut socket) = connected else {
            // A dead node refuses at once: try the next, backing off a little
            // when none answers.
            failures += 1;
            node = next_node(node, index, n);
            let pause = 20 * u64::from(failures.min(25)) + (index % 20) as u64;
            tokio::time::sleep(Duration::from_millis(pause)).await;
            continue;
        };
        failures = 0;
        watch.open.fetch_add(1, Ordering::Relaxed);
        loop {
            let frame = tokio::select! {
                frame = socket.next() => frame,
                () = stop.cancelled() => break,
            };
            let text = match frame {
                Ok(Some(ws::Frame::Text(text))) => text,
                Ok(Some(ws::Frame::Other)) => continue,
                Ok(None) | Err(_) => break,
            };
            let counters = watch.counters();
            counters.frames[node].fetch_add(1, Ordering::Relaxed);
            let (kind, seq) = head(&text);
            let Some(seq) = seq else {
                continue;
            };
            match kind {
                b"snapshot" if last == 0 => last = seq,
                b"snapshot" => {
                    watch.snapshots_on_resume.fetch_add(1, Ordering::Relaxed);
                    last = seq;
                }
                b"state" => {}
                b"lagged" => {
                    counters.gaps.fetch_add(1, Ordering::Relaxed);
                }
                _ if last != 0 && seq <= last => {
                    counters.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    if last != 0 && seq > last + 1 {
                        counters.gaps.fetch_add(1, Ordering::Relaxed);
                        counters
                            .missing
                            .fetch_add(seq - last - 1, Ordering::Relaxed);
                    }
                    last = seq;
                    watch.seqs.check(seq, &text);
                    if measure
                        && kind == b"chat"
                        && let Some((sent_us, from)) = chat_sender(&text)
                        && (from != node || watch.nodes.len() == 1)
                    {
                        watch.latency(unix_us().saturating_sub(sent_us) / 1000);
                    }
                }
            }
            if away {
                away = false;
                watch.away.fetch_sub(1, Ordering::Relaxed);
                watch.resumed.fetch_add(1, Ordering::Relaxed);
                watch
                    .last_back_unix_ms
                    .fetch_max(unix_us() / 1000, Ordering::Relaxed);
            }
        }
        watch.open.fetch_sub(1, Ordering::Relaxed);
        if stop.is_cancelled() {
            break;
        }
        watch.drops.fetch_add(1, Ordering::Relaxed);
        if !away {
            away = true;
            watch.away.fetch_add(1, Ordering::Relaxed);
        }
        node = next_node(node, index, n);
    }
}

/// The node a viewer tries after `node`: spread over the others, as a load
/// balancer spreads a dead node's clients.
fn next_node(node: usize, index: usize, n: usize) -> usize {
    if n < 2 {
        return node;
    }
    (node + 1 + (index / n) % (n - 1)) % n
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn heads_give_the_type_and_seq() {
        let (kind, seq) = head(br#"{"type":"chat","seq":1764012345678004,"at":"x","data":{}}"#);
        assert_eq!((kind, seq), (&b"chat"[..], Some(1_764_012_345_678_004)));
        assert_eq!(head(br#"{"type":"pong"}"#), (&b"pong"[..], None));
        assert_eq!(head(br#"{"seq":1}"#), (&b""[..], None));
    }

    #[test]
    fn the_table_finds_two_frames_under_one_seq() {
        let table = SeqTable::new();
        table.check(1000, b"one");
        table.check(1000, b"one");
        table.check(1001, b"two");
        assert_eq!(table.disagreements.load(Ordering::Relaxed), 0);
        table.check(1001, b"not two");
        assert_eq!(table.disagreements.load(Ordering::Relaxed), 1);
        let seen: Vec<u64> = table.seen().into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(seen, vec![1000, 1001]);
    }

    #[test]
    fn a_dead_nodes_viewers_spread_over_the_others() {
        let next: Vec<usize> = (0..12).map(|i| next_node(0, i * 4, 4)).collect();
        assert!(next.iter().all(|n| *n != 0));
        for node in 1..4 {
            assert!(next.contains(&node));
        }
    }
}
