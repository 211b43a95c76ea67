//! One live room on this node: its sequence of events, their recent history, the
//! counters, and the state a joining viewer's snapshot is made of.
//!
//! The room follows its log ([`Room::apply`]): every event was numbered and
//! serialised ONCE, by the room's sequencer, into a frame that every connection
//! of every node shares, and changes the state here as it is applied. The frames go
//! out through one broadcast ring per room: a connection holds a cursor into it,
//! not a queue of its own, so an idle viewer costs no buffer, and one that falls
//! a whole ring behind learns how many frames it lost instead of holding them.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use domain::Timestamp;
use domain::event::{
    ChatEntry, PinCard, RoomEvent, RoomSummary, RoomView, SaleState, ViewKind, read_frame,
    view_frame,
};
use domain::ids::{RoomId, ShopId, UserId};
use domain::room::{RoomStatus, Sanction, SanctionKind};
use tokio::sync::{broadcast, watch};

use crate::batch::Batch;
use crate::connection::{FrameText, Grant};

/// Frames a room keeps for viewers who reconnect with `since`.
pub const HISTORY: usize = 1024;
/// Chat messages a joining viewer's snapshot carries.
pub const SNAPSHOT_CHAT: usize = 50;

/// One event of the room, serialised once and shared by every connection; or,
/// with `to`, a notice for one user's connections only, not numbered (`seq` is
/// then the number it follows).
#[derive(Debug, Clone)]
pub struct Frame {
    pub seq: u64,
    pub text: FrameText,
    pub to: Option<UserId>,
}

/// Where a joining connection starts.
pub enum Start {
    /// The room as it is now, up to the `seq` given: the viewer missed too
    /// much, or is new.
    Snapshot(FrameText, u64),
    /// Every frame after the `since` the viewer sent (possibly none).
    Replay(Vec<Frame>),
}

/// Token buckets: `burst` actions at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub burst: f64,
    pub per_second: f64,
}

pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What the room shows and remembers; changed only under the room's lock.
struct State {
    seq: u64,
    history: VecDeque<Frame>,
    chat: VecDeque<ChatEntry>,
    likes: u64,
    viewers_shown: u64,
    room: RoomSummary,
    sale: Option<SaleState>,
    pinned: Option<PinCard>,
    /// The last batch of the room's log applied.
    position: u64,
}

/// Where a room stands (see [`Room::standing`]).
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    pub seq: u64,
    pub likes: u64,
    pub viewers: u64,
}

/// What a new room starts from, read from the store.
pub struct Seed {
    pub room: RoomSummary,
    pub sale: Option<SaleState>,
    pub pinned: Option<PinCard>,
    pub chat: Vec<ChatEntry>,
    pub sanctions: Vec<Sanction>,
    pub slow_mode_seconds: u64,
    /// The shop's blocked words, lower case.
    pub blocked_words: Vec<String>,
}

/// Why a chat message is not shown.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Muted {
        until: Option<Timestamp>,
    },
    Banned,
    /// It contains one of the shop's blocked words.
    Blocked,
    /// Slow mode, or the user's rate: try again after this long.
    TooSoon {
        slow_mode: bool,
        wait: Duration,
    },
}

/// Who may say what in the room: sanctions, slow mode, blocked words, and each
/// chatter's rate and last message.
struct Speakers {
    sanctions: HashMap<UserId, Sanction>,
    slow_mode: Duration,
    blocked: Vec<String>,
    buckets: HashMap<UserId, Bucket>,
    last_message: HashMap<UserId, Instant>,
}

pub struct Room {
    pub id: RoomId,
    shop_id: ShopId,
    state: Mutex<State>,
    frames: broadcast::Sender<Frame>,
    /// Changes to what the viewers signed in on this node may do.
    grants: broadcast::Sender<Grant>,
    /// Connections on this node.
    pub(crate) viewers: AtomicUsize,
    /// Likes received since the last report to the sequencer.
    likes_pending: AtomicU64,
    /// Likes received since the dashboard's last sample.
    likes_unsampled: AtomicU64,
    /// Taken alone, or after `state`; never the other way round.
    speakers: Mutex<Speakers>,
    /// The last batch applied, for those who wait for it.
    applied: watch::Sender<u64>,
    /// The last batch of the log when the room was opened here.
    opened_at: u64,
}

impl Room {
    /// `ring`: frames a connection may fall behind by before it loses the
    /// oldest; `opened_at`: the log's position the room must have applied
    /// before it shows anything ([`Room::opened_at`]).
    pub fn new(id: RoomId, seed: Seed, ring: usize, opened_at: u64) -> Self {
        let mut chat: VecDeque<ChatEntry> = seed.chat.into();
        while chat.len() > SNAPSHOT_CHAT {
            chat.pop_front();
        }
        Self {
            id,
            shop_id: seed.room.shop_id.clone(),
            state: Mutex::new(State {
                seq: 0,
                history: VecDeque::with_capacity(HISTORY),
                chat,
                likes: 0,
                viewers_shown: 0,
                room: seed.room,
                sale: seed.sale,
                pinned: seed.pinned,
                position: 0,
            }),
            applied: watch::channel(0).0,
            opened_at,
            frames: broadcast::channel(ring.max(1)).0,
            grants: broadcast::channel(64).0,
            viewers: AtomicUsize::new(0),
            likes_pending: AtomicU64::new(0),
            likes_unsampled: AtomicU64::new(0),
            speakers: Mutex::new(Speakers {
                sanctions: seed
                    .sanctions
                    .into_iter()
                    .map(|s| (s.user_id.clone(), s))
                    .collect(),
                slow_mode: Duration::from_secs(seed.slow_mode_seconds),
                blocked: seed.blocked_words,
                buckets: HashMap::new(),
                last_message: HashMap::new(),
            }),
        }
    }

    /// The shop the room belongs to.
    pub fn shop_id(&self) -> &ShopId {
        &self.shop_id
    }

    /// Tells this node's connections what a viewer may do now.
    pub(crate) fn grant(&self, grant: Grant) {
        let _ = self.grants.send(grant);
    }

    pub(crate) fn grants(&self) -> broadcast::Receiver<Grant> {
        self.grants.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies the next batch of the room's log: each frame's event changes what
    /// the room shows, and the frames go out to this node's connections at
    /// once, so every connection wakes once for all of them. A batch already
    /// applied (by its position) or a frame already seen (by its `seq`) is
    /// skipped; a frame past a gap (the log lost batches) starts the history
    /// again, since it can no longer replay across it.
    pub fn apply(&self, position: u64, batch: &Batch) {
        let mut state = self.lock();
        if position <= state.position {
            return;
        }
        state.position = position;
        for text in &batch.frames {
            let Some(frame) = read_frame(text.as_bytes()) else {
                metrics::counter!("live_bus_events_skipped_total", "reason" => "malformed")
                    .increment(1);
                continue;
            };
            if frame.seq <= state.seq {
                continue;
            }
            if frame.seq != state.seq + 1 {
                state.history.clear();
            }
            state.seq = frame.seq;
            match &frame.event {
                Ok(event) => self.change(&mut state, event, frame.seq, frame.at),
                Err(e) => crate::skip(&self.id, e),
            }
            let frame = Frame {
                seq: frame.seq,
                text: text.clone(),
                to: None,
            };
            if state.history.len() == HISTORY {
                state.history.pop_front();
            }
            state.history.push_back(frame.clone());
            // No receivers is fine: nobody is watching on this node right now.
            let _ = self.frames.send(frame);
            metrics::counter!("live_events_total").increment(1);
        }
        if batch.seq > state.seq {
            // Numbering starts (or starts again) here.
            state.history.clear();
            state.seq = batch.seq;
        }
        for notice in &batch.refused {
            let _ = self.frames.send(Frame {
                seq: state.seq,
                text: FrameText::from(notice.text.clone()),
                to: Some(notice.to.clone()),
            });
        }
        drop(state);
        self.applied.send_replace(position);
    }

    /// What an event changes in the room's state and rules.
    fn change(&self, state: &mut State, event: &RoomEvent, seq: u64, at: Timestamp) {
        match event {
            RoomEvent::Chat(message) => {
                if state.chat.iter().any(|m| m.message.id == message.id) {
                    return;
                }
                if state.chat.len() == SNAPSHOT_CHAT {
                    state.chat.pop_front();
                }
                state.chat.push_back(ChatEntry {
                    message: message.clone(),
                    seq,
                    at,
                });
            }
            RoomEvent::SaleStarted(sale)
            | RoomEvent::SaleStock(sale)
            | RoomEvent::SaleSoldOut(sale) => {
                state.sale = Some(sale.clone());
            }
            RoomEvent::SaleEnded(_) => state.sale = None,
            RoomEvent::Likes(likes) => state.likes = likes.count,
            RoomEvent::Viewers(viewers) => state.viewers_shown = viewers.count,
            RoomEvent::RoomEnded(_) => state.room.status = RoomStatus::Ended,
            RoomEvent::StreamLive(playback) => {
                state.room.status = RoomStatus::Live;
                state.room.stream = Some(playback.clone());
            }
            RoomEvent::StreamEnded(_) => {
                if state.room.status == RoomStatus::Live {
                    state.room.status = RoomStatus::Scheduled;
                }
                state.room.stream = None;
            }
            RoomEvent::Pin(card) => state.pinned = Some(card.clone()),
            RoomEvent::Unpin(_) => state.pinned = None,
            RoomEvent::ChatDeleted(deleted) => state.chat.retain(|m| m.message.id != deleted.id),
            RoomEvent::SlowMode(slow) => {
                self.speakers().slow_mode = Duration::from_secs(slow.seconds);
            }
            RoomEvent::UserMuted(sanction) | RoomEvent::UserBanned(sanction) => {
                self.speakers()
                    .sanctions
                    .insert(sanction.user_id.clone(), sanction.clone());
            }
            RoomEvent::SanctionLifted(lifted) => {
                self.speakers().sanctions.remove(&lifted.user_id);
            }
        }
    }

    /// Where the room stands: the last `seq` and the counters shown (a new
    /// sequencer carries on from them).
    pub fn standing(&self) -> Standing {
        let state = self.lock();
        Standing {
            seq: state.seq,
            likes: state.likes,
            viewers: state.viewers_shown,
        }
    }

    /// Waits until the room has applied its log up to `position`.
    pub async fn applied(&self, position: u64) {
        let mut applied = self.applied.subscribe();
        let _ = applied.wait_for(|p| *p >= position).await;
    }

    /// The log's position the room must have applied before a connection
    /// starts: the last batch there was when it opened here.
    pub fn opened_at(&self) -> u64 {
        self.opened_at
    }

    /// The last `seq` applied.
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    /// Subscribes a connection, and says where it starts: after `since` if the
    /// history still holds everything after it, else from a snapshot. Both happen
    /// under the lock, so nothing after the start is missed; frames published but
    /// not yet flushed are in the start and will come through the ring too, so
    /// the connection skips what it has already sent (by `seq`).
    pub fn join(&self, since: Option<u64>) -> (Start, broadcast::Receiver<Frame>) {
        let state = self.lock();
        let receiver = self.frames.subscribe();
        let start = match since {
            Some(since) if since == state.seq => Start::Replay(Vec::new()),
            Some(since)
                if since < state.seq
                    && state.history.front().is_some_and(|f| f.seq <= since + 1) =>
            {
                Start::Replay(
                    state
                        .history
                        .iter()
                        .filter(|f| f.seq > since)
                        .cloned()
                        .collect(),
                )
            }
            _ => Start::Snapshot(
                FrameText::from(view(&state, self.slow_mode(), ViewKind::Snapshot)),
                state.seq,
            ),
        };
        (start, receiver)
    }

    /// The counters, sale and pin as they are now, for a connection that lost
    /// frames: it keeps the latest state even when it missed chat.
    pub fn state_frame(&self) -> FrameText {
        let state = self.lock();
        FrameText::from(view(&state, self.slow_mode(), ViewKind::State))
    }

    /// A like from a viewer; reported to the sequencer at the next tick.
    pub fn like(&self) {
        self.likes_pending.fetch_add(1, Ordering::Relaxed);
        self.likes_unsampled.fetch_add(1, Ordering::Relaxed);
    }

    /// The dashboard's sample: viewers on this node now, and the likes since
    /// the last sample.
    pub(crate) fn take_sample(&self) -> (usize, u64) {
        (
            self.viewers.load(Ordering::Relaxed),
            self.likes_unsampled.swap(0, Ordering::Relaxed),
        )
    }

    /// This node's share for the sequencer: viewers here now, and the likes
    /// since the last report.
    pub(crate) fn take_presence(&self) -> (u64, u64) {
        (
            self.viewers.load(Ordering::Relaxed) as u64,
            self.likes_pending.swap(0, Ordering::Relaxed),
        )
    }

    /// The room's viewers across nodes, as last shown.
    pub fn viewers_shown(&self) -> u64 {
        self.lock().viewers_shown
    }

    fn speakers(&self) -> std::sync::MutexGuard<'_, Speakers> {
        self.speakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Slow mode's seconds between two messages of a user (0: off).
    fn slow_mode(&self) -> u64 {
        self.speakers().slow_mode.as_secs()
    }

    /// The chat messages among the frames the room keeps for `since`.
    pub(crate) fn recent_chat(&self) -> Vec<ChatEntry> {
        let state = self.lock();
        state
            .history
            .iter()
            .filter_map(|frame| {
                let read = read_frame(frame.text.as_bytes())?;
                match read.event {
                    Ok(RoomEvent::Chat(message)) => Some(ChatEntry {
                        message,
                        seq: read.seq,
                        at: read.at,
                    }),
                    _ => None,
                }
            })
            .collect()
    }

    /// Slow mode's time between two messages of a user (zero: off).
    pub(crate) fn slow_mode_period(&self) -> Duration {
        self.speakers().slow_mode
    }

    /// Replaces the shop's blocked words (lower case) for this room.
    pub fn set_blocked_words(&self, words: Vec<String>) {
        self.speakers().blocked = words;
    }

    /// Whether the user is muted or banned here now.
    pub fn silenced(&self, user: &UserId) -> bool {
        let now = Timestamp::now();
        self.speakers()
            .sanctions
            .get(user)
            .is_some_and(|s| s.in_force(now))
    }

    /// Decides whether `user` may say `text` now, and if so counts it against
    /// their rate and slow mode. Moderators are not held to slow mode.
    pub fn check_chat(
        &self,
        user: &UserId,
        moderator: bool,
        text: &str,
        rate: Rate,
    ) -> Result<(), Refusal> {
        let now = Instant::now();
        let mut speakers = self.speakers();
        if let Some(sanction) = speakers.sanctions.get(user)
            && sanction.in_force(Timestamp::now())
        {
            return Err(match sanction.kind {
                SanctionKind::Ban => Refusal::Banned,
                SanctionKind::Mute => Refusal::Muted {
                    until: sanction.until,
                },
            });
        }
        if !speakers.blocked.is_empty() {
            let lower = text.to_lowercase();
            if speakers.blocked.iter().any(|w| lower.contains(w.as_str())) {
                return Err(Refusal::Blocked);
            }
        }
        if !moderator && let Some(last) = speakers.last_message.get(user) {
            let since = now.duration_since(*last);
            if since < speakers.slow_mode {
                return Err(Refusal::TooSoon {
                    slow_mode: true,
                    wait: speakers.slow_mode - since,
                });
            }
        }
        if speakers.buckets.len() > 100_000 {
            speakers
                .buckets
                .retain(|_, b| b.at.elapsed().as_secs_f64() * rate.per_second < rate.burst);
            speakers
                .last_message
                .retain(|_, at| at.elapsed() < Duration::from_secs(600));
        }
        let bucket = speakers
            .buckets
            .entry(user.clone())
            .or_insert_with(|| self::bucket(rate));
        take(bucket, rate, now).map_err(|wait| Refusal::TooSoon {
            slow_mode: false,
            wait,
        })?;
        speakers.last_message.insert(user.clone(), now);
        Ok(())
    }
}

/// Takes one token from `bucket` at `now`, or says how long until there is one.
pub(crate) fn take(bucket: &mut Bucket, rate: Rate, now: Instant) -> Result<(), Duration> {
    let refill = now.duration_since(bucket.at).as_secs_f64() * rate.per_second;
    bucket.tokens = (bucket.tokens + refill).min(rate.burst);
    bucket.at = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        Ok(())
    } else {
        Err(Duration::from_secs_f64(
            (1.0 - bucket.tokens) / rate.per_second,
        ))
    }
}

/// A connection's own bucket (likes, frames), outside any room.
pub(crate) fn bucket(rate: Rate) -> Bucket {
    Bucket {
        tokens: rate.burst,
        at: Instant::now(),
    }
}

fn view(state: &State, slow_mode_seconds: u64, kind: ViewKind) -> String {
    let view = RoomView {
        room: &state.room,
        viewers: state.viewers_shown,
        likes: state.likes,
        sale: state.sale.as_ref(),
        pinned: state.pinned.as_ref(),
        slow_mode_seconds,
        chat: (kind == ViewKind::Snapshot).then(|| state.chat.iter().collect()),
    };
    view_frame(kind, state.seq, Timestamp::now(), &view)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use domain::catalog::Title;
    use domain::event::{ChatMessage, Speaker};
    use domain::ids::MessageId;
    use domain::room::ChatText;
    use serde_json::Value;

    fn chat(text: impl std::fmt::Display) -> RoomEvent {
        RoomEvent::Chat(ChatMessage {
            id: MessageId::generate(),
            user: Speaker {
                id: UserId::generate(),
                name: "Ann".into(),
                moderator: false,
            },
            text: ChatText::parse(&text.to_string()).unwrap(),
        })
    }

    fn room() -> Room {
        Room::new(
            RoomId::generate(),
            Seed {
                room: RoomSummary {
                    id: RoomId::generate(),
                    shop_id: ShopId::generate(),
                    title: Title::parse("Live").unwrap(),
                    status: RoomStatus::Scheduled,
                    started_at: None,
                    stream: None,
                },
                sale: None,
                pinned: None,
                chat: vec![],
                sanctions: vec![],
                slow_mode_seconds: 0,
                blocked_words: vec![],
            },
            4096,
            1,
        )
    }

    fn parse(text: &FrameText) -> Value {
        serde_json::from_str(text.as_str()).unwrap()
    }

    /// Numbers events as a sequencer does and applies them to the room, a
    /// batch at a time.
    struct Sequencer {
        seq: u64,
        position: u64,
    }

    impl Sequencer {
        fn new() -> Self {
            Self {
                seq: 1_000,
                position: 0,
            }
        }

        fn batch(&mut self, events: &[RoomEvent]) -> Batch {
            let frames = events
                .iter()
                .map(|e| {
                    self.seq += 1;
                    FrameText::from(e.frame(self.seq, Timestamp::now()))
                })
                .collect();
            Batch {
                seq: self.seq,
                input: 0,
                frames,
                refused: Vec::new(),
            }
        }

        fn say(&mut self, room: &Room, events: &[RoomEvent]) -> u64 {
            let batch = self.batch(events);
            self.position += 1;
            room.apply(self.position, &batch);
            self.seq
        }
    }

    #[test]
    fn a_batch_goes_to_every_connection_as_it_is() {
        let room = room();
        let mut log = Sequencer::new();
        log.say(&room, &[]);
        let (start, mut rx) = room.join(None);
        let Start::Snapshot(snap, _) = start else {
            panic!("a new viewer starts from a snapshot")
        };
        assert_eq!(
            parse(&snap)["seq"],
            1_000,
            "the numbering stands where the log says"
        );
        let (_, mut other) = room.join(None);
        let batch = log.batch(&[chat("a"), chat("b")]);
        room.apply(2, &batch);
        let got = rx.try_recv().unwrap();
        assert_eq!(got.seq, 1_001);
        assert_eq!(parse(&got.text)["data"]["text"], "a");
        assert_eq!(rx.try_recv().unwrap().seq, 1_002);
        let theirs = other.try_recv().unwrap();
        assert_eq!(
            (got.text.as_str().as_ptr(), theirs.text.as_str().as_ptr()),
            (
                batch.frames[0].as_str().as_ptr(),
                batch.frames[0].as_str().as_ptr()
            ),
            "every connection shares the log's bytes"
        );
        room.apply(2, &batch);
        room.apply(3, &batch);
        assert!(rx.try_recv().is_err(), "nothing twice");
        assert_eq!(room.seq(), 1_002);
    }

    #[test]
    fn a_reconnect_replays_what_was_missed_or_gets_a_snapshot() {
        let room = room();
        let mut log = Sequencer::new();
        let s1 = log.say(&room, &[chat("1")]);
        let s3 = log.say(&room, &[chat("2"), chat("3")]);
        let (Start::Replay(missed), _) = room.join(Some(s1)) else {
            panic!("the history covers it")
        };
        assert_eq!(
            missed.iter().map(|f| f.seq).collect::<Vec<_>>(),
            [s1 + 1, s3]
        );
        let (Start::Replay(none), _) = room.join(Some(s3)) else {
            panic!("up to date")
        };
        assert!(none.is_empty());
        assert!(matches!(room.join(Some(s3 + 10)).0, Start::Snapshot(..)));
        for i in 0..HISTORY {
            log.say(&room, &[chat(i)]);
        }
        let (Start::Snapshot(snap, _), _) = room.join(Some(s1)) else {
            panic!("fell out of the history")
        };
        let snap = parse(&snap);
        assert_eq!(
            snap["data"]["chat"].as_array().unwrap().len(),
            SNAPSHOT_CHAT
        );
    }

    #[test]
    fn a_gap_in_the_log_is_not_replayed_across() {
        let room = room();
        let mut log = Sequencer::new();
        let before = log.say(&room, &[chat("1")]);
        log.seq += 5;
        let after = log.say(&room, &[chat("2")]);
        assert!(matches!(room.join(Some(before)).0, Start::Snapshot(..)));
        assert!(matches!(room.join(Some(after)).0, Start::Replay(_)));
    }

    #[test]
    fn the_counters_shown_are_the_sequencers_and_the_nodes_share_is_reported() {
        let room = room();
        let mut log = Sequencer::new();
        for _ in 0..5 {
            room.like();
        }
        room.viewers.store(3, Ordering::Relaxed);
        assert_eq!(room.take_presence(), (3, 5));
        assert_eq!(room.take_presence(), (3, 0), "likes are reported once");
        log.say(
            &room,
            &[
                RoomEvent::Likes(domain::event::Likes {
                    count: 40,
                    added: 5,
                }),
                RoomEvent::Viewers(domain::event::Viewers { count: 12 }),
            ],
        );
        let state = parse(&room.state_frame());
        assert_eq!(
            (
                state["data"]["likes"].as_u64(),
                state["data"]["viewers"].as_u64()
            ),
            (Some(40), Some(12))
        );
        assert_eq!(room.viewers_shown(), 12);
    }

    #[test]
    fn buckets_refill_at_their_rate() {
        let rate = Rate {
            burst: 2.0,
            per_second: 1.0,
        };
        let start = Instant::now();
        let mut b = Bucket {
            tokens: 2.0,
            at: start,
        };
        assert!(take(&mut b, rate, start).is_ok());
        assert!(take(&mut b, rate, start).is_ok());
        let wait = take(&mut b, rate, start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(take(&mut b, rate, start + Duration::from_millis(1000)).is_ok());
    }
}
