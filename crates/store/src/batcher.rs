//! The batchers' runtime, whatever they serve: one task per key (a flash sale,
//! a variant at its list price) takes every tap that queued while its last
//! transaction ran and hands them to its [`Serve`] as one batch; every tap is
//! answered once that batch committed (or failed). No SQL here: what a batch
//! does is the [`Serve`] implementation's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, StoreError};

/// Taps waiting for a batcher; past this, callers wait to enqueue.
pub(crate) const QUEUE: usize = 8192;
/// A batcher with no taps for this long stops; the next tap starts another.
pub(crate) const IDLE: Duration = Duration::from_secs(30);
/// Under load, how long a batcher that found only a few taps waits for
/// more before it claims: the buyers its last batch answered are tapping
/// again, and a batch of one would cost a commit of its own while hundreds
/// of taps queue up behind it. Without load (the last batch was one tap)
/// nobody waits.
pub(crate) const LINGER: Duration = Duration::from_millis(5);

/// A batch's worth of work: one kind of tap, served in one transaction per
/// batch by one batcher task per key (a sale, or a variant at its list price).
pub(crate) trait Serve: Send + 'static {
    type Tap: Send + 'static;
    type Outcome: Send + 'static;
    /// The most taps one transaction serves.
    const MAX_BATCH: usize;
    /// Serves `taps` in one transaction and answers each, in order.
    fn serve(
        &mut self,
        taps: &[Self::Tap],
    ) -> impl Future<Output = Result<Vec<Self::Outcome>>> + Send;
}

type Reply<O> = oneshot::Sender<std::result::Result<O, Arc<StoreError>>>;

struct Pending<S: Serve> {
    tap: S::Tap,
    reply: Reply<S::Outcome>,
}

/// The batchers of one kind, by key: each started by the first tap for its key
/// and stopped after [`IDLE`].
pub(crate) struct Batchers<K, S: Serve> {
    queues: Mutex<HashMap<K, mpsc::Sender<Pending<S>>>>,
}

impl<K, S: Serve> Default for Batchers<K, S> {
    fn default() -> Self {
        Self {
            queues: Mutex::default(),
        }
    }
}

impl<K: Clone + Eq + std::hash::Hash + std::fmt::Display, S: Serve> Batchers<K, S> {
    /// Hands `tap` to `key`'s batcher (started with `start` if there is none)
    /// and waits for the answer, which comes after its batch committed.
    pub(crate) async fn submit(
        &self,
        key: &K,
        tap: S::Tap,
        start: impl Fn() -> S,
    ) -> Result<S::Outcome> {
        let (reply, answer) = oneshot::channel();
        let mut pending = Pending { tap, reply };
        loop {
            let queue = self.queue(key, &start);
            match queue.send(pending).await {
                Ok(()) => break,
                // That batcher stopped for idleness just now: start another.
                Err(mpsc::error::SendError(back)) => pending = back,
            }
        }
        match answer.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(StoreError::Shared(e)),
            Err(_) => Err(StoreError::Interrupted),
        }
    }

    fn queue(&self, key: &K, start: &impl Fn() -> S) -> mpsc::Sender<Pending<S>> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = queues.get(key)
            && !queue.is_closed()
        {
            return queue.clone();
        }
        if queues.len() >= 1024 {
            queues.retain(|_, q| !q.is_closed());
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        queues.insert(key.clone(), tx.clone());
        tokio::spawn(run_batcher(start(), key.to_string(), rx));
        tx
    }
}

async fn run_batcher<S: Serve>(mut server: S, key: String, mut taps: mpsc::Receiver<Pending<S>>) {
    let mut batch = Vec::with_capacity(S::MAX_BATCH);
    let mut closing = false;
    // The size of the last batch: how many taps come in a round under the
    // current load.
    let mut last = 0;
    loop {
        let received = if closing {
            taps.recv_many(&mut batch, S::MAX_BATCH).await
        } else {
            match tokio::time::timeout(IDLE, taps.recv_many(&mut batch, S::MAX_BATCH)).await {
                Ok(n) => n,
                Err(_) => {
                    // Refuse new taps (their senders start a new batcher), then
                    // serve whatever slipped in before the refusal.
                    taps.close();
                    closing = true;
                    continue;
                }
            }
        };
        if received == 0 {
            return;
        }
        if batch.len() < last / 2 {
            linger(&mut taps, &mut batch, last.min(S::MAX_BATCH)).await;
        }
        last = batch.len();
        let (tapped, replies): (Vec<S::Tap>, Vec<Reply<S::Outcome>>) =
            batch.drain(..).map(|p| (p.tap, p.reply)).unzip();
        let started = std::time::Instant::now();
        match server.serve(&tapped).await {
            Ok(outcomes) => {
                tracing::debug!(
                    key,
                    taps = tapped.len(),
                    took_us = started.elapsed().as_micros() as u64,
                    "batch committed"
                );
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(key, error = %e, taps = tapped.len(), "a batch failed");
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Adds to `batch` the taps that arrive within [`LINGER`], until it
/// holds `expected` of them.
async fn linger<T>(taps: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, expected: usize) {
    let deadline = tokio::time::Instant::now() + LINGER;
    while batch.len() < expected {
        let room = expected - batch.len();
        match tokio::time::timeout_at(deadline, taps.recv_many(batch, room)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn lingering_takes_the_taps_that_come_and_stops_at_the_expected_count() {
        let (tx, mut rx) = mpsc::channel(16);
        for i in 0..6 {
            tx.send(i).await.unwrap();
        }
        let mut batch = vec![];
        linger(&mut rx, &mut batch, 4).await;
        assert_eq!(batch, [0, 1, 2, 3], "no more than expected");
        // Fewer than expected: it waits out the linger and keeps what came.
        linger(&mut rx, &mut batch, 8).await;
        assert_eq!(batch, [0, 1, 2, 3, 4, 5]);
        // A closed queue ends it at once.
        drop(tx);
        linger(&mut rx, &mut batch, 100).await;
        assert_eq!(batch.len(), 6);
    }
}
