//! What a viewer process tells the conductor, one JSON line at a time on its
//! standard output: a [`Tick`] every second while it runs, then [`Done`] once
//! it is told to stop. Both sides are this crate, so the types are shared.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The phases of a run, in order. The conductor announces each one on the
/// viewer processes' standard input (its number on a line).
pub const PHASES: usize = 3;
/// Viewers connecting, chat starting: not measured.
pub const WARMING: usize = 0;
/// Every node up: the steady-state figures.
pub const STEADY: usize = 1;
/// From the kill of one node to the end.
pub const AFTER_KILL: usize = 2;

/// One line of a viewer process's output.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    Tick(Tick),
    Done(Done),
}

/// Counters since the process started, sent every second.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tick {
    /// Viewers connected now.
    pub open: usize,
    /// Viewers that had a connection, lost it and have not got a numbered
    /// frame on a new one yet.
    pub away: usize,
    /// Frames received, by the node they came from (the conductor's order).
    pub frames: Vec<u64>,
    pub gaps: u64,
    pub duplicates: u64,
}

/// What one viewer process measured, by phase.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Done {
    pub phases: Vec<Phase>,
    /// Every numbered room event seen, as (`seq`, hash of the frame's bytes):
    /// the conductor checks that all processes agree on each.
    pub seqs: Vec<(u64, u64)>,
    /// Events whose bytes differed between two viewers of this process.
    pub disagreements: u64,
    /// Events too far from the first one seen to be checked.
    pub unchecked: u64,
    /// Connections lost (not counting the end of the run).
    pub drops: u64,
    /// Viewers without a connection when the run stopped, after a drop.
    pub away: usize,
    /// Viewers back after a drop: a numbered frame on their new connection.
    pub resumed: u64,
    /// Resumes answered with a fresh snapshot instead of the missed events.
    pub snapshots_on_resume: u64,
    /// When the last viewer to come back came back (Unix milliseconds).
    pub last_back_unix_ms: Option<u64>,
}

/// One phase's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Phase {
    /// Frames received, by node.
    pub frames: Vec<u64>,
    /// Chat latency from a sender on one node to a viewer on another.
    pub latency: Histogram,
    /// Times a viewer's `seq` jumped forward (or it was told `lagged`).
    pub gaps: u64,
    /// Events those jumps skipped.
    pub missing: u64,
    /// Events a viewer got again (a `seq` not above the last one).
    pub duplicates: u64,
}

impl Phase {
    pub fn merge(&mut self, other: &Phase) {
        add_counts(&mut self.frames, &other.frames);
        self.latency.merge(&other.latency);
        self.gaps += other.gaps;
        self.missing += other.missing;
        self.duplicates += other.duplicates;
    }
}

/// Adds `more` to `sum`, count by count (by node), growing `sum` to fit.
pub fn add_counts(sum: &mut Vec<u64>, more: &[u64]) {
    if sum.len() < more.len() {
        sum.resize(more.len(), 0);
    }
    for (s, n) in sum.iter_mut().zip(more) {
        *s += n;
    }
}

/// Latencies in whole milliseconds, up to [`Histogram::MAX_MS`] (longer ones
/// count as that): mergeable across processes, exact to the millisecond.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Histogram {
    /// (milliseconds, count), only the buckets that were hit, in order.
    buckets: Vec<(u32, u64)>,
}

impl Histogram {
    pub const MAX_MS: u32 = 60_000;

    /// A histogram of dense counts (index = milliseconds).
    pub fn from_counts(counts: &[u64]) -> Self {
        let buckets = counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(ms, n)| (ms as u32, *n))
            .collect();
        Self { buckets }
    }

    pub fn merge(&mut self, other: &Histogram) {
        let mut all: BTreeMap<u32, u64> = self.buckets.iter().copied().collect();
        for (ms, n) in &other.buckets {
            *all.entry(*ms).or_default() += n;
        }
        self.buckets = all.into_iter().collect();
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    /// The latency at fraction `p` (0 to 1), in milliseconds; `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u32> {
        let total = self.count();
        let last = total.checked_sub(1)?;
        let rank = (last as f64 * p.clamp(0.0, 1.0)).round() as u64;
        let mut seen = 0;
        for (ms, n) in &self.buckets {
            seen += n;
            if seen > rank {
                return Some(*ms);
            }
        }
        self.buckets.last().map(|(ms, _)| *ms)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn histograms_merge_and_give_percentiles() {
        let mut counts = vec![0u64; 10];
        counts[3] = 98;
        counts[9] = 2;
        let mut a = Histogram::from_counts(&counts);
        assert_eq!(a.percentile(0.5), Some(3));
        assert_eq!(a.percentile(0.99), Some(9));
        let mut more = vec![0u64; 10];
        more[1] = 100;
        more[9] = 100;
        a.merge(&Histogram::from_counts(&more));
        assert_eq!(a.count(), 300);
        assert_eq!(a.percentile(0.0), Some(1));
        assert_eq!(a.percentile(0.5), Some(3));
        assert_eq!(a.percentile(1.0), Some(9));
        assert_eq!(Histogram::default().percentile(0.5), None);
    }
}
