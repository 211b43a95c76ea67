//! Live rooms: the WebSocket gateway, chat, likes, viewer counts, and the room
//! events of the other parts (sales, pins, the stream, moderation).
//!
//! How a chat message flows: a viewer's connection validates it (signed in, rate,
//! length) and publishes it on the bus; the room's task on this node takes it
//! from the bus, decodes it ([`domain::event::RoomEvent`]), gives it the room's
//! next sequence number, serialises it once and sends the bytes to every
//! connection of the room through one broadcast ring ([`room`]); the message is
//! kept in the store in batches, off that path. Each connection ([`connection`])
//! writes whatever frames are waiting in one flush.
//!
//! Sequence numbers are this node's: the in-process bus has one node. A bus that
//! spans nodes brings its own order, and the room task will number in that order.

pub mod connection;
pub mod room;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{Bus, BusError, Subscription, Topic};
use domain::Timestamp;
use domain::event::{
    ChatEntry, ChatMessage, PinCard, RoomEvent, RoomSummary, SaleState, ShopEvent, Speaker,
    Undecodable,
};
use domain::ids::{MessageId, RoomId};
use domain::room::{ChatText, Playback, RoomStatus};
use domain::sale::SaleStatus;
use store::{ChatRecord, PageRequest, RoomSample, Store, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use connection::{Limits, Viewer, serve};
pub use room::{Frame, Rate, Refusal, Room, Seed, Start};

/// Why a room could not be opened on this node.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// How often a room's new frames go out to its connections, together.
pub const FLUSH: Duration = Duration::from_millis(20);

/// How often coalesced counters (likes, viewers) go out.
pub const TICK: Duration = Duration::from_millis(500);
/// A room with no connection on this node for this long is let go.
const IDLE: Duration = Duration::from_secs(60);
/// Chat messages waiting to be kept; past this, new ones are counted and dropped
/// from the log (they were still shown).
const CHAT_LOG_QUEUE: usize = 65_536;

/// The live rooms of this node. Cheap to clone.
#[derive(Clone)]
pub struct Hub(Arc<Inner>);

struct Inner {
    store: Store,
    bus: Bus,
    rooms: Mutex<HashMap<RoomId, Arc<Room>>>,
    chat_log: mpsc::Sender<ChatRecord>,
    chat_log_writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    limits: Limits,
    shutdown: CancellationToken,
    /// Where the rooms' tasks run (see [`rooms_runtime`]).
    rooms_runtime: tokio::runtime::Handle,
}

/// A thread of the rooms' own, with its own scheduler, for their tasks: a
/// chat message goes from the bus into its room, and the room's frames go out
/// every [`FLUSH`], as soon as they are due. On the server's workers those
/// wake-ups would queue behind the connections of a big room, which all wake
/// at each flush: in a room of 10,000 viewers, one more round of 10,000
/// writes per hop. Falls back to the caller's runtime if the thread cannot
/// be had.
fn rooms_runtime(shutdown: CancellationToken) -> tokio::runtime::Handle {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("hawker-rooms".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    let _ = tx.send(Some(runtime.handle().clone()));
                    runtime.block_on(shutdown.cancelled());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no runtime of their own for the rooms");
                    let _ = tx.send(None);
                }
            }
        });
    match spawned.ok().and_then(|_| rx.recv().ok().flatten()) {
        Some(handle) => handle,
        None => tokio::runtime::Handle::current(),
    }
}

/// A connection's place in a room: while it is held, the connection counts as a
/// viewer and the room stays open on this node.
pub struct Seat {
    pub room: Arc<Room>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.room.viewers.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("live_connections").decrement(1.0);
    }
}

impl Hub {
    /// Starts the chat log writer. Cancelling `shutdown` (or [`Hub::stop`])
    /// closes every connection (1001) and stops the rooms' tasks.
    pub fn new(store: Store, bus: Bus, limits: Limits, shutdown: &CancellationToken) -> Self {
        let (chat_log, queue) = mpsc::channel(CHAT_LOG_QUEUE);
        let shutdown = shutdown.child_token();
        let writer = tokio::spawn(write_chat_log(store.clone(), queue, shutdown.clone()));
        let hub = Self(Arc::new(Inner {
            store,
            bus,
            rooms: Mutex::default(),
            chat_log,
            chat_log_writer: Mutex::new(Some(writer)),
            limits,
            rooms_runtime: rooms_runtime(shutdown.clone()),
            shutdown,
        }));
        tokio::spawn(sample_rooms(Arc::downgrade(&hub.0)));
        hub
    }

    /// Closes every connection and stops the rooms; the chat log writes out
    /// what it holds (await [`Hub::stopped`]).
    pub fn stop(&self) {
        self.0.shutdown.cancel();
    }

    /// Returns once the chat log has written out what it held after
    /// [`Hub::stop`].
    pub async fn stopped(&self) {
        let writer = self
            .0
            .chat_log_writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }

    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    /// Runs a connection's reading half where the rooms run, off the workers
    /// whose queues hold the fan-out's writes.
    pub(crate) fn spawn_reader<F>(&self, reader: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.0.rooms_runtime.spawn(reader)
    }

    /// Takes a seat in the room, opening the room on this node if needed.
    /// `None` when there is no such room.
    pub async fn join(&self, id: &RoomId) -> Result<Option<Seat>, JoinError> {
        if let Some(seat) = self.seat_in_open_room(id) {
            return Ok(Some(seat));
        }
        // Subscribed before the room is read, so that nothing published while
        // it is read is lost.
        let events = self.0.bus.subscribe(&Topic::Room(id.clone())).await?;
        let Some(room) = self.0.store.room(id).await? else {
            return Ok(None);
        };
        let shop_events = self
            .0
            .bus
            .subscribe(&Topic::Shop(room.shop_id.clone()))
            .await?;
        let seed = self.seed(room).await?;
        let mut rooms = self.0.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let room = rooms
            .entry(id.clone())
            .or_insert_with(|| {
                let room = Arc::new(Room::new(id.clone(), seed, self.0.limits.ring));
                self.0.rooms_runtime.spawn(run_room(
                    self.clone(),
                    room.clone(),
                    events,
                    shop_events,
                ));
                room
            })
            .clone();
        Ok(Some(take_seat(room)))
    }

    fn seat_in_open_room(&self, id: &RoomId) -> Option<Seat> {
        let rooms = self.0.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.get(id).cloned().map(take_seat)
    }

    /// Connections in the room on this node.
    pub fn viewers(&self, id: &RoomId) -> usize {
        let rooms = self.0.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .get(id)
            .map_or(0, |r| r.viewers.load(Ordering::Relaxed))
    }

    /// Publishes a viewer's chat message to the room (through the bus, so that
    /// every node shows it).
    pub async fn chat(
        &self,
        room: &RoomId,
        viewer: &Viewer,
        text: &ChatText,
    ) -> Result<(), BusError> {
        let message = RoomEvent::Chat(ChatMessage {
            id: MessageId::generate(),
            user: Speaker {
                id: viewer.id.clone(),
                name: viewer.name.clone(),
                moderator: viewer.moderator,
            },
            text: text.clone(),
        });
        self.0.bus.publish_room(room, &message).await
    }

    /// What a room starts from: its description, its running sale, its pin,
    /// its last chat and its rules.
    async fn seed(&self, room: domain::room::Room) -> Result<Seed, StoreError> {
        let store = &self.0.store;
        let id = &room.id;
        let sales = store
            .sales_of_room(
                id,
                &PageRequest {
                    after: None,
                    limit: 20,
                },
            )
            .await?;
        let sale = sales
            .items
            .iter()
            .find(|s| matches!(s.status, SaleStatus::Live | SaleStatus::SoldOut))
            .map(SaleState::new);
        let chat = store
            .recent_chat(id, room::SNAPSHOT_CHAT as i64)
            .await?
            .into_iter()
            .filter_map(|m| {
                Some(ChatEntry {
                    message: ChatMessage {
                        id: m.record.id,
                        user: Speaker {
                            id: m.record.user,
                            name: m.name,
                            moderator: m.record.moderator,
                        },
                        text: ChatText::parse(&m.record.text).ok()?,
                    },
                    seq: u64::try_from(m.record.seq).ok()?,
                    at: m.record.at,
                })
            })
            .collect();
        let pinned = match store.current_pin(id).await? {
            Some((product, at)) => store.product(&product).await?.map(|p| PinCard::new(&p, at)),
            None => None,
        };
        let sanctions = store.sanctions(id).await?;
        let slow_mode_seconds = u64::try_from(store.slow_mode(id).await?).unwrap_or(0);
        let blocked_words = store.blocked_words(&room.shop_id).await?;
        Ok(Seed {
            sanctions,
            slow_mode_seconds,
            blocked_words,
            pinned,
            // A room opened while its stream runs learns of it here, since
            // the `stream.live` event went by before anyone joined.
            room: RoomSummary {
                stream: (room.status == RoomStatus::Live)
                    .then(|| Playback::new(&room.id, room.started_at)),
                id: room.id,
                shop_id: room.shop_id,
                title: room.title,
                status: room.status,
                started_at: room.started_at,
            },
            sale,
            chat,
        })
    }
}

fn take_seat(room: Arc<Room>) -> Seat {
    room.viewers.fetch_add(1, Ordering::Relaxed);
    metrics::gauge!("live_connections").increment(1.0);
    Seat { room }
}

/// The room's task on this node: numbers the bus's events into the room, applies
/// its shop's rules, sends the coalesced counters every [`TICK`], and lets the
/// room go when nobody has watched it here for [`IDLE`].
async fn run_room(
    hub: Hub,
    room: Arc<Room>,
    mut events: Subscription,
    mut shop_events: Subscription,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_since: Option<tokio::time::Instant> = None;
    let mut display = room::bucket(hub.0.limits.display);
    let mut flush = tokio::time::interval(FLUSH);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = flush.tick() => room.flush(),
            payload = events.next() => {
                let Some(payload) = payload else { return };
                match RoomEvent::decode(&payload) {
                    Ok(event) => {
                        if let RoomEvent::Chat(message) = &event {
                            let shown = message.user.moderator
                                || room::take(&mut display, hub.0.limits.display, std::time::Instant::now()).is_ok();
                            let seq = if shown {
                                room.publish(&event)
                            } else {
                                // Over the display cap: kept, not shown.
                                metrics::counter!("live_chat_not_shown_total").increment(1);
                                room.seq()
                            };
                            log_chat(&hub, &room.id, seq, message);
                        } else {
                            room.publish(&event);
                        }
                    }
                    Err(e) => skip(&room.id, &e),
                }
            }
            payload = shop_events.next() => {
                let Some(payload) = payload else { return };
                match ShopEvent::decode(&payload) {
                    // For the room's rules only: viewers never see the list.
                    Ok(ShopEvent::BlockedWords { words }) => room.set_blocked_words(words),
                    Err(e) => skip(&room.id, &e),
                }
            }
            _ = tick.tick() => {
                room.tick();
                if room.viewers.load(Ordering::Relaxed) > 0 {
                    idle_since = None;
                } else if idle_since.get_or_insert_with(tokio::time::Instant::now).elapsed() >= IDLE {
                    let mut rooms = hub.0.rooms.lock().unwrap_or_else(|p| p.into_inner());
                    // Checked again under the hub's lock, where seats are taken.
                    if room.viewers.load(Ordering::Relaxed) == 0 {
                        rooms.remove(&room.id);
                        return;
                    }
                }
            }
            _ = hub.0.shutdown.cancelled() => return,
        }
    }
}

/// An event this node cannot show (a newer node's, or garbled) is counted and
/// skipped; the room goes on.
fn skip(room: &RoomId, error: &Undecodable) {
    let reason = match error {
        Undecodable::Unknown(_) => "unknown_type",
        Undecodable::Malformed(_) => "malformed",
    };
    tracing::debug!(%room, %error, "a bus event was skipped");
    metrics::counter!("live_bus_events_skipped_total", "reason" => reason).increment(1);
}

fn log_chat(hub: &Hub, room: &RoomId, seq: u64, message: &ChatMessage) {
    let record = ChatRecord {
        id: message.id.clone(),
        room: room.clone(),
        user: message.user.id.clone(),
        moderator: message.user.moderator,
        seq: i64::try_from(seq).unwrap_or(i64::MAX),
        text: message.text.as_str().to_owned(),
        at: Timestamp::now(),
    };
    if hub.0.chat_log.try_send(record).is_err() {
        metrics::counter!("live_chat_unlogged_total").increment(1);
    }
}

/// Writes, at the end of every sampling interval, what this node saw of each
/// open room (its viewers then, the likes during the interval) for the sellers'
/// dashboards. Intervals start on multiples of the interval since the epoch, so
/// the nodes' samples line up and add up. Holds the hub weakly: it stops with it.
async fn sample_rooms(hub: std::sync::Weak<Inner>) {
    let Some((every, shutdown)) = hub
        .upgrade()
        .map(|h| (h.limits.sample_interval, h.shutdown.clone()))
    else {
        return;
    };
    let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1);
    loop {
        let now = Timestamp::now().as_millis();
        let end = (now / every_ms + 1) * every_ms;
        let wait = Duration::from_millis(u64::try_from(end - now).unwrap_or(0));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        let Some(hub) = hub.upgrade() else { return };
        let at = Timestamp::from_millis(end - every_ms);
        let samples: Vec<RoomSample> = hub
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|room| {
                let (viewers, likes) = room.take_sample();
                (viewers > 0 || likes > 0).then(|| RoomSample {
                    room: room.id.clone(),
                    at,
                    viewers: i64::try_from(viewers).unwrap_or(i64::MAX),
                    likes: i64::try_from(likes).unwrap_or(i64::MAX),
                })
            })
            .collect();
        if let Err(e) = hub.store.record_room_samples(&samples).await {
            tracing::warn!(error = %e, rooms = samples.len(), "could not keep the rooms' samples");
        }
    }
}

/// Keeps chat messages in batches: whatever queued while the last batch was
/// written. On shutdown, writes what is queued and ends.
async fn write_chat_log(
    store: Store,
    mut queue: mpsc::Receiver<ChatRecord>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(512);
    loop {
        let stopping = tokio::select! {
            n = queue.recv_many(&mut batch, 512) => n == 0,
            () = shutdown.cancelled() => true,
        };
        if stopping {
            while let Ok(record) = queue.try_recv() {
                batch.push(record);
            }
        }
        for chunk in batch.chunks(512) {
            if let Err(e) = store.save_chat(chunk).await {
                tracing::warn!(error = %e, messages = chunk.len(), "could not keep chat messages");
                metrics::counter!("live_chat_unlogged_total").increment(chunk.len() as u64);
            }
        }
        batch.clear();
        if stopping {
            return;
        }
    }
}
