//! A room's sequencer: the one node, of all that have the room open, that
//! numbers its events. It holds the room's lease on the bus, reads the room's
//! inputs in the bus's order, gives each event the next `seq` and its `at`,
//! applies the display cap, sums every node's viewers and likes into the
//! coalesced `viewers` and `likes`, and appends what it numbered to the room's
//! log every [`FLUSH`], on the condition that nobody else appended meanwhile.
//! Every node (this one too) shows the room from that log.
//!
//! Taking over: a new sequencer reads the last batch of the log (the last `seq`
//! and the last input read), waits until its own node has applied the log that
//! far, and goes on from there: numbers never go backwards and no input is
//! numbered twice. An old sequencer that has not noticed it lost the lease
//! fails its next append and stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{AppendError, Start, Topic};
use bytes::Bytes;
use domain::Timestamp;
use domain::event::{ChatEntry, Likes, RoomEvent, Viewers};
use domain::ids::{SaleId, UserId};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, Notice};
use crate::connection::FrameText;
use crate::room::{self, Refusal, Room};
use crate::{FLUSH, Hub, TICK};

/// A node's share of a room, reported every [`TICK`] by each node with
/// viewers in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Presence {
    pub node: String,
    /// Connections on that node now.
    pub viewers: u64,
    /// Likes on that node since its last report.
    pub likes: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum Own {
    #[serde(rename = "presence")]
    Presence(Presence),
}

impl Presence {
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(&Own::Presence(self.clone())).unwrap_or_default())
    }
}

/// What an input is: a room event, or one of the rooms' own reports.
enum Input {
    Event(RoomEvent),
    Presence(Presence),
}

fn decode(payload: &[u8]) -> Result<Input, domain::event::Undecodable> {
    if let Ok(Own::Presence(p)) = serde_json::from_slice(payload) {
        return Ok(Input::Presence(p));
    }
    RoomEvent::decode(payload).map(Input::Event)
}

/// A node's report this much older than the newest one no longer counts (it
/// stopped reporting: it died, or nobody watches there any more). Measured
/// against the other reports, not the clock, so that a machine that stalls
/// for a while (all reports late together) does not make the count dip.
const FRESH: Duration = Duration::from_secs(2);
/// A report this old lapses whatever the others do (the only node that
/// reported died).
const STALE: Duration = Duration::from_secs(8);
/// A room nobody has numbered for as long as its log keeps: the inputs of
/// this long before are still shown.
const RECENT: Duration = Duration::from_secs(30);
/// How long a new sequencer waits for its node to catch up with the log.
const CATCH_UP: Duration = Duration::from_secs(5);
/// How often the lease is renewed (it lapses after [`bus::LEASE`]).
const RENEW: Duration = Duration::from_secs(1);
/// A batch holds at most this many bytes; past it, inputs wait for the flush.
const BATCH_BYTES: usize = 256 * 1024;

/// Sequences the room while this node holds its lease; returns when it cannot
/// take it, loses it, or `stop` is cancelled. The lease is given up on the way
/// out (when the node stops, by [`Hub::stopped`]).
pub(crate) async fn lead(hub: Hub, room: Arc<Room>, stop: CancellationToken) {
    let bus = hub.bus();
    let Ok(lease) = bus.lease(&room.id, 0, hub.node()).await else {
        return;
    };
    hub.hold_lease(&room.id, Some(lease));
    let lease = match Leader::take_over(&hub, &room, lease).await {
        Some(mut leader) => {
            leader.run(&hub, &stop).await;
            leader.lease
        }
        None => lease,
    };
    if !hub.shutdown().is_cancelled() {
        hub.hold_lease(&room.id, None);
        bus.release(&room.id, lease).await;
    }
}

/// Why a sequencer stops.
struct Stepped;

/// A user's chat allowance at the sequencer.
struct Speaker {
    bucket: room::Bucket,
    /// Their last message shown.
    last: Option<Instant>,
    /// Their last message, shown or not.
    seen: Instant,
}

/// How much later than its node a sequencer may see a message.
const JITTER: Duration = Duration::from_millis(500);
/// Past this many users, those quiet for a minute (or for slow mode's period)
/// are forgotten.
const SPEAKERS: usize = 100_000;

struct Leader {
    room: Arc<Room>,
    /// The lease's position on the bus.
    lease: u64,
    renewed: Instant,
    /// The position of the last batch of the log.
    expected: u64,
    /// The last `seq` given.
    seq: u64,
    /// The position of the last input read.
    input: u64,
    likes: u64,
    viewers: u64,
    /// Numbered, not yet appended; and their size.
    outbox: Vec<FrameText>,
    bytes: usize,
    /// Shown chat messages to keep once their batch is in the log.
    chat: Vec<(u64, domain::event::ChatMessage)>,
    /// Answers to the chat messages refused, for the next batch.
    refused: Vec<Notice>,
    /// Each user's rate and last message, over all their connections on
    /// every node.
    speakers: HashMap<UserId, Speaker>,
    /// Slow mode as the events numbered so far set it.
    slow_mode: Duration,
    /// The newest version of each sale numbered so far.
    sales: HashMap<SaleId, i64>,
    display: room::Bucket,
    presence: HashMap<String, (u64, Instant)>,
    likes_added: u64,
    since: Instant,
}

impl Leader {
    /// Numbers the room's inputs until the lease is lost or `stop` is
    /// cancelled.
    async fn run(&mut self, hub: &Hub, stop: &CancellationToken) {
        let room = self.room.clone();
        tracing::debug!(room = %room.id, node = hub.node(), seq = self.seq, "sequencing the room");
        metrics::counter!("live_sequencer_takeovers_total").increment(1);
        let from = match self.input {
            0 => Start::Recent(RECENT),
            input => Start::After(input),
        };
        let Ok(mut inputs) = hub.bus().room_inputs(&room.id, from).await else {
            return;
        };
        let mut flush = tokio::time::interval(FLUSH);
        let mut tick = tokio::time::interval(TICK);
        let mut renew = tokio::time::interval(RENEW);
        for timer in [&mut flush, &mut tick, &mut renew] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            let room_for_more = self.bytes < BATCH_BYTES;
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                _ = flush.tick() => {
                    if self.flush(hub).await.is_err() {
                        return;
                    }
                }
                _ = renew.tick() => {
                    if self.renew(hub).await.is_err() {
                        return;
                    }
                }
                _ = tick.tick() => self.count(),
                entry = inputs.next(), if room_for_more => {
                    let Some(entry) = entry else { return };
                    self.input = entry.position;
                    match decode(&entry.payload) {
                        Ok(input) => self.take(hub, input),
                        Err(e) => crate::skip(&room.id, &e),
                    }
                }
            }
        }
    }

    async fn take_over(hub: &Hub, room: &Arc<Room>, lease: u64) -> Option<Self> {
        let last = hub.bus().last_batch(&room.id).await.ok()?;
        let position = last.as_ref().map_or(0, |e| e.position);
        let batch = last.as_ref().and_then(|e| Batch::decode(&e.payload));
        if tokio::time::timeout(CATCH_UP, room.applied(position))
            .await
            .is_err()
        {
            tracing::warn!(room = %room.id, "the room's log could not be read to its end");
            return None;
        }
        // The last sequencer may have died before it kept what it numbered:
        // what the log still shows is kept again (once, whoever kept it first).
        for entry in room.recent_chat() {
            crate::log_chat(hub, &room.id, entry);
        }
        let standing = room.standing();
        let mut leader = Self {
            room: room.clone(),
            lease,
            renewed: Instant::now(),
            expected: position,
            seq: batch.as_ref().map_or(0, |b| b.seq).max(standing.seq),
            input: batch.as_ref().map_or(0, |b| b.input),
            likes: standing.likes,
            viewers: standing.viewers,
            outbox: Vec::new(),
            bytes: 0,
            chat: Vec::new(),
            refused: Vec::new(),
            speakers: HashMap::new(),
            slow_mode: room.slow_mode_period(),
            sales: HashMap::new(),
            display: room::bucket(hub.limits().display),
            presence: HashMap::new(),
            likes_added: 0,
            since: Instant::now(),
        };
        if batch.is_none() {
            // Numbering starts here: from the clock, so that it continues above
            // anything a viewer saw before the log lost the room's batches.
            let clock = u64::try_from(Timestamp::now().as_millis()).unwrap_or(0) * 1000;
            leader.seq = leader.seq.max(clock);
            leader.append(hub, Vec::new()).await.ok()?;
        }
        Some(leader)
    }

    fn number(&mut self, event: &RoomEvent) -> u64 {
        self.seq += 1;
        let frame = FrameText::from(event.frame(self.seq, Timestamp::now()));
        self.bytes += frame.len() + 1;
        self.outbox.push(frame);
        self.seq
    }

    fn take(&mut self, hub: &Hub, input: Input) {
        match input {
            Input::Presence(p) => {
                self.likes_added += p.likes;
                self.presence.insert(p.node, (p.viewers, Instant::now()));
            }
            Input::Event(RoomEvent::Chat(message)) => {
                let limits = hub.limits();
                if let Err(refusal) = self.allow(&message.user, limits.chat) {
                    let text = crate::connection::refusal_frame(refusal).to_string();
                    self.bytes += text.len() + 64;
                    self.refused.push(Notice {
                        to: message.user.id,
                        text,
                    });
                    return;
                }
                let shown = message.user.moderator
                    || room::take(&mut self.display, limits.display, Instant::now()).is_ok();
                if shown {
                    let seq = self.number(&RoomEvent::Chat(message.clone()));
                    self.chat.push((seq, message));
                } else {
                    // Over the display cap: kept, not shown.
                    metrics::counter!("live_chat_not_shown_total").increment(1);
                    let entry = ChatEntry {
                        message,
                        seq: self.seq,
                        at: Timestamp::now(),
                    };
                    crate::log_chat(hub, &self.room.id, entry);
                }
            }
            Input::Event(event) => {
                match &event {
                    RoomEvent::SlowMode(slow) => {
                        self.slow_mode = Duration::from_secs(slow.seconds);
                    }
                    RoomEvent::SaleStarted(sale)
                    | RoomEvent::SaleStock(sale)
                    | RoomEvent::SaleSoldOut(sale)
                    | RoomEvent::SaleEnded(sale) => {
                        // Several nodes sell, and their reports can cross on
                        // the way: an older state than one shown is dropped.
                        let newest = self.sales.entry(sale.sale_id.clone()).or_insert(i64::MIN);
                        if sale.version < *newest {
                            metrics::counter!("live_stale_sale_events_total").increment(1);
                            return;
                        }
                        *newest = sale.version;
                    }
                    _ => {}
                }
                self.number(&event);
            }
        }
    }

    /// Counts a chat message against its user's rate and slow mode, across
    /// every node (each node checks its own connections first). The owner and
    /// moderators are not held to slow mode.
    fn allow(&mut self, user: &domain::event::Speaker, rate: room::Rate) -> Result<(), Refusal> {
        let now = Instant::now();
        // One message and a moment of slack: messages a node let through at
        // its limit reach the sequencer with a little jitter, and must not be
        // refused for it.
        let rate = room::Rate {
            burst: rate.burst + 1.0,
            ..rate
        };
        let slow_mode = self.slow_mode.saturating_sub(JITTER);
        if self.speakers.len() > SPEAKERS {
            self.speakers
                .retain(|_, s| s.seen.elapsed() < slow_mode.max(Duration::from_secs(60)));
        }
        let speaker = self
            .speakers
            .entry(user.id.clone())
            .or_insert_with(|| Speaker {
                bucket: room::bucket(rate),
                last: None,
                seen: now,
            });
        speaker.seen = now;
        if !user.moderator
            && let Some(last) = speaker.last
            && now.duration_since(last) < slow_mode
        {
            return Err(Refusal::TooSoon {
                slow_mode: true,
                wait: slow_mode - now.duration_since(last),
            });
        }
        room::take(&mut speaker.bucket, rate, now).map_err(|wait| Refusal::TooSoon {
            slow_mode: false,
            wait,
        })?;
        speaker.last = Some(now);
        Ok(())
    }

    /// The coalesced counters, every [`TICK`]: likes when there were any,
    /// viewers when the sum of the nodes' fresh reports changed (once every
    /// node has had the time to report).
    fn count(&mut self) {
        if self.likes_added > 0 {
            let added = std::mem::take(&mut self.likes_added);
            self.likes += added;
            let count = self.likes;
            self.number(&RoomEvent::Likes(Likes { count, added }));
        }
        if self.since.elapsed() >= TICK * 2 {
            let count = viewers_reported(&mut self.presence, Instant::now());
            if count != self.viewers {
                self.viewers = count;
                self.number(&RoomEvent::Viewers(Viewers { count }));
            }
        }
    }

    async fn flush(&mut self, hub: &Hub) -> Result<(), Stepped> {
        if self.outbox.is_empty() && self.refused.is_empty() {
            return Ok(());
        }
        let frames = self.outbox.clone();
        match self.append(hub, frames).await {
            Ok(()) => {
                self.outbox.clear();
                self.refused.clear();
                self.bytes = 0;
                for (seq, message) in std::mem::take(&mut self.chat) {
                    let entry = ChatEntry {
                        message,
                        seq,
                        at: Timestamp::now(),
                    };
                    crate::log_chat(hub, &self.room.id, entry);
                }
                Ok(())
            }
            // Kept for the next flush; a sequencer that cannot reach the bus
            // loses its lease soon enough.
            Err(AppendError::Bus(_)) => Ok(()),
            Err(AppendError::Conflict) => Err(Stepped),
        }
    }

    async fn append(&mut self, hub: &Hub, frames: Vec<FrameText>) -> Result<(), AppendError> {
        let batch = Batch {
            seq: self.seq,
            input: self.input,
            frames,
            refused: self.refused.clone(),
        };
        self.expected = hub
            .bus()
            .append(&self.room.id, self.expected, batch.encode())
            .await
            .inspect_err(|e| {
                if matches!(e, AppendError::Conflict) {
                    tracing::info!(room = %self.room.id, "another node sequences the room now");
                }
            })?;
        Ok(())
    }

    async fn renew(&mut self, hub: &Hub) -> Result<(), Stepped> {
        match hub.bus().lease(&self.room.id, self.lease, hub.node()).await {
            Ok(lease) => {
                self.lease = lease;
                self.renewed = Instant::now();
                hub.hold_lease(&self.room.id, Some(lease));
                Ok(())
            }
            Err(AppendError::Conflict) => Err(Stepped),
            Err(AppendError::Bus(_)) if self.renewed.elapsed() + RENEW >= bus::LEASE => {
                Err(Stepped)
            }
            Err(AppendError::Bus(_)) => Ok(()),
        }
    }
}

/// Reports this node's share of the room to its sequencer.
/// The sum of the nodes' reports that still count (see [`FRESH`] and
/// [`STALE`]); the others are forgotten.
fn viewers_reported(presence: &mut HashMap<String, (u64, Instant)>, now: Instant) -> u64 {
    let Some(newest) = presence.values().map(|(_, at)| *at).max() else {
        return 0;
    };
    presence
        .retain(|_, (_, at)| newest.duration_since(*at) < FRESH && now.duration_since(*at) < STALE);
    presence.values().map(|(viewers, _)| viewers).sum()
}

pub(crate) async fn report(hub: &Hub, room: &Room, presence: Presence) {
    if let Err(e) = hub
        .bus()
        .publish(&Topic::Room(room.id.clone()), presence.encode())
        .await
    {
        tracing::debug!(room = %room.id, error = %e, "presence not reported");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_node_lapses_but_a_stalled_machine_keeps_its_count() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut presence =
            HashMap::from([("a".to_owned(), (3, at(0))), ("b".to_owned(), (4, at(0)))]);
        // Nobody reported for 5 s (the machine stalled): both still count.
        assert_eq!(viewers_reported(&mut presence, at(5_000)), 7);
        // `a` goes on reporting, `b` is silent: `b` lapses.
        presence.insert("a".to_owned(), (3, at(2_500)));
        assert_eq!(viewers_reported(&mut presence, at(2_600)), 3);
        assert!(!presence.contains_key("b"));
        // The only report left is very old: it lapses too.
        assert_eq!(viewers_reported(&mut presence, at(2_500 + 8_000)), 0);
        assert!(presence.is_empty());
    }
}
