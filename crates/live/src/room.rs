//! One live room on this node: its sequence of events, their recent history, the
//! counters, and the state a joining viewer's snapshot is made of.
//!
//! Every event gets the room's next sequence number and is serialised ONCE, under
//! the room's lock, into a [`Frame`] that every connection shares. The frames go
//! out through one broadcast ring per room: a connection holds a cursor into it,
//! not a queue of its own, so an idle viewer costs no buffer, and one that falls
//! a whole ring behind learns how many frames it lost instead of holding them.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use domain::Timestamp;
use domain::event::{
    ChatEntry, Likes, PinCard, RoomEvent, RoomSummary, RoomView, SaleState, ViewKind, Viewers,
    view_frame,
};
use domain::ids::{RoomId, ShopId, UserId};
use domain::room::{RoomStatus, Sanction, SanctionKind};
use tokio::sync::broadcast;

use crate::connection::FrameText;

/// Frames a room keeps for viewers who reconnect with `since`.
pub const HISTORY: usize = 1024;
/// Chat messages a joining viewer's snapshot carries.
pub const SNAPSHOT_CHAT: usize = 50;

/// One event of the room, serialised once and shared by every connection.
#[derive(Debug, Clone)]
pub struct Frame {
    pub seq: u64,
    pub text: FrameText,
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
    /// Published, not yet in the ring (see [`Room::flush`]).
    pending: Vec<Frame>,
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
    /// Connections on this node.
    pub(crate) viewers: AtomicUsize,
    /// Likes received since the last `likes` event.
    likes_pending: AtomicU64,
    /// Likes received since the dashboard's last sample.
    likes_unsampled: AtomicU64,
    /// Taken alone, or after `state`; never the other way round.
    speakers: Mutex<Speakers>,
}

impl Room {
    /// `ring`: frames a connection may fall behind by before it loses the oldest.
    pub fn new(id: RoomId, seed: Seed, ring: usize) -> Self {
        // Sequence numbers start from the clock, so that after a restart they
        // continue above anything a reconnecting viewer saw before it.
        let first = u64::try_from(Timestamp::now().as_millis()).unwrap_or(0) * 1000;
        let mut chat: VecDeque<ChatEntry> = seed.chat.into();
        while chat.len() > SNAPSHOT_CHAT {
            chat.pop_front();
        }
        Self {
            id,
            shop_id: seed.room.shop_id.clone(),
            state: Mutex::new(State {
                seq: first,
                history: VecDeque::with_capacity(HISTORY),
                chat,
                likes: 0,
                viewers_shown: 0,
                room: seed.room,
                sale: seed.sale,
                pinned: seed.pinned,
                pending: Vec::new(),
            }),
            frames: broadcast::channel(ring.max(1)).0,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers, serialises and sends one event, stamped now; returns its
    /// sequence number.
    pub fn publish(&self, event: &RoomEvent) -> u64 {
        let at = Timestamp::now();
        let mut state = self.lock();
        state.seq += 1;
        let seq = state.seq;
        match event {
            RoomEvent::Chat(message) => {
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
        let frame = Frame {
            seq,
            text: FrameText::from(event.frame(seq, at)),
        };
        if state.history.len() == HISTORY {
            state.history.pop_front();
        }
        state.history.push_back(frame.clone());
        state.pending.push(frame);
        metrics::counter!("live_events_total").increment(1);
        seq
    }

    /// Sends the frames published since the last flush into the ring, at once:
    /// every connection wakes once for all of them and writes them in one go.
    /// Called by the room's task every [`crate::FLUSH`].
    pub fn flush(&self) {
        let mut state = self.lock();
        for frame in state.pending.drain(..) {
            // No receivers is fine: nobody is watching on this node right now.
            let _ = self.frames.send(frame);
        }
    }

    /// The last sequence number given.
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

    /// A like from a viewer; shown in the next coalesced `likes` event.
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

    /// Publishes the coalesced counters if they changed since the last tick.
    pub fn tick(&self) {
        let added = self.likes_pending.swap(0, Ordering::Relaxed);
        if added > 0 {
            let count = self.lock().likes + added;
            self.publish(&RoomEvent::Likes(Likes { count, added }));
        }
        let viewers = self.viewers.load(Ordering::Relaxed) as u64;
        if viewers != self.lock().viewers_shown {
            self.publish(&RoomEvent::Viewers(Viewers { count: viewers }));
        }
    }

    fn speakers(&self) -> std::sync::MutexGuard<'_, Speakers> {
        self.speakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Slow mode's seconds between two messages of a user (0: off).
    fn slow_mode(&self) -> u64 {
        self.speakers().slow_mode.as_secs()
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
        )
    }

    fn parse(text: &FrameText) -> Value {
        serde_json::from_str(text.as_str()).unwrap()
    }

    #[test]
    fn events_are_numbered_in_order_and_serialised_once() {
        let room = room();
        let (start, mut rx) = room.join(None);
        let Start::Snapshot(snap, _) = start else {
            panic!("a new viewer starts from a snapshot")
        };
        let first = parse(&snap)["seq"].as_u64().unwrap();
        let a = room.publish(&chat("a"));
        let b = room.publish(&chat("b"));
        assert_eq!((a, b), (first + 1, first + 2));
        assert!(rx.try_recv().is_err(), "nothing before the flush");
        room.flush();
        let got = rx.try_recv().unwrap();
        assert_eq!(got.seq, a);
        assert_eq!(parse(&got.text)["data"]["text"], "a");
        // Both receivers share the same bytes.
        let (_, mut other) = room.join(None);
        room.publish(&chat("c"));
        room.flush();
        rx.try_recv().unwrap();
        let mine = rx.try_recv().unwrap();
        let theirs = other.try_recv().unwrap();
        assert_eq!(mine.text.as_str().as_ptr(), theirs.text.as_str().as_ptr());
    }

    #[test]
    fn a_reconnect_replays_what_was_missed_or_gets_a_snapshot() {
        let room = room();
        let s1 = room.publish(&chat("1"));
        let s2 = room.publish(&chat("2"));
        let s3 = room.publish(&chat("3"));
        let (Start::Replay(missed), _) = room.join(Some(s1)) else {
            panic!("the history covers it")
        };
        assert_eq!(missed.iter().map(|f| f.seq).collect::<Vec<_>>(), [s2, s3]);
        let (Start::Replay(none), _) = room.join(Some(s3)) else {
            panic!("up to date")
        };
        assert!(none.is_empty());
        assert!(matches!(room.join(Some(s3 + 10)).0, Start::Snapshot(..)));
        for i in 0..HISTORY {
            room.publish(&chat(i));
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
    fn counters_are_coalesced_into_one_event_a_tick() {
        let room = room();
        let (_, mut rx) = room.join(None);
        for _ in 0..500 {
            room.like();
        }
        room.viewers.store(3, Ordering::Relaxed);
        room.tick();
        room.flush();
        let likes = parse(&rx.try_recv().unwrap().text);
        assert_eq!(likes["type"], "likes");
        assert_eq!(likes["data"]["count"], 500);
        let viewers = parse(&rx.try_recv().unwrap().text);
        assert_eq!(viewers["data"]["count"], 3);
        room.tick();
        room.flush();
        assert!(rx.try_recv().is_err(), "nothing changed, nothing sent");
        let state = parse(&room.state_frame());
        assert_eq!(
            (
                state["data"]["likes"].as_u64(),
                state["data"]["viewers"].as_u64()
            ),
            (Some(500), Some(3))
        );
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
