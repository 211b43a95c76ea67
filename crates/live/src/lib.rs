//! Live rooms: the WebSocket gateway, chat, likes, viewer counts, and the room
//! events of the other parts (sales, pins, the stream, moderation).
//!
//! How a chat message flows: a viewer's connection validates it (signed in, rate,
//! length) and publishes it as an input of the room on the bus; the room's
//! sequencer ([`leader`], on whichever node holds the room's lease) reads it,
//! gives it the room's next sequence number, serialises it once and appends it
//! to the room's log in the next batch ([`batch`]); every node with the room open
//! reads the log, applies each frame to its room ([`room`]) and sends the bytes
//! to its connections through one broadcast ring. The sequencer keeps the
//! message in the store, in batches, off that path. Each connection
//! ([`connection`]) writes whatever frames are waiting in one flush.

pub mod batch;
pub mod connection;
mod leader;
pub mod room;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{Bus, BusError, Entries, Subscription, Topic};
use domain::Timestamp;
use domain::event::{
    ChatEntry, ChatMessage, PinCard, RoomEvent, RoomSummary, SaleState, ShopEvent, Speaker,
    Undecodable,
};
use domain::ids::{MessageId, RoomId, UserId};
use domain::room::{ChatText, Playback, RoomStatus};
use domain::sale::SaleStatus;
use store::{ChatRecord, PageRequest, RoomSample, Store, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use connection::{Limits, Viewer, serve};
use leader::Presence;
pub use room::{Frame, Rate, Refusal, Room, Seed, Standing, Start};

/// Why a room could not be opened on this node.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The room's log could not be read up to its end in time.
    #[error("the room's events are not reachable just now")]
    Unavailable,
}

/// How often a room's sequencer appends what it numbered, together.
pub const FLUSH: Duration = Duration::from_millis(20);

/// How often coalesced counters (likes, viewers) go out, and how often each
/// node reports its share of them.
pub const TICK: Duration = Duration::from_millis(500);
/// How long a join waits for the room's log to be read to its end.
const JOIN_WAIT: Duration = Duration::from_secs(5);
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
    /// This node's name in the rooms' leases and reports.
    node: String,
    /// Held while a room is opened, so that it is opened once.
    opening: tokio::sync::Mutex<()>,
    /// The rooms this node sequences, with their leases' positions: given up
    /// when the node stops.
    leases: Mutex<HashMap<RoomId, u64>>,
}

/// A name no other hub has, in this process or another.
fn node_name() -> String {
    static HUBS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        Timestamp::now().as_millis(),
        HUBS.fetch_add(1, Ordering::Relaxed)
    )
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
            node: node_name(),
            opening: tokio::sync::Mutex::new(()),
            leases: Mutex::default(),
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
    /// [`Hub::stop`], and the rooms this node sequenced are given up.
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
        let leases: Vec<(RoomId, u64)> = self
            .0
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (room, lease) in leases {
            self.0.bus.release(&room, lease).await;
        }
    }

    /// Records (`Some`) or forgets the lease this node holds on a room.
    pub(crate) fn hold_lease(&self, room: &RoomId, lease: Option<u64>) {
        let mut leases = self.0.leases.lock().unwrap_or_else(|p| p.into_inner());
        match lease {
            Some(lease) => leases.insert(room.clone(), lease),
            None => leases.remove(room),
        };
    }

    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }

    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    pub(crate) fn bus(&self) -> &Bus {
        &self.0.bus
    }

    /// This node's name in the rooms' leases and reports.
    /// Of `user`'s credentials only `valid` still sign in (they signed out,
    /// or revoked a token): this node's connections opened with another
    /// watch on without the user's rights.
    pub fn signed_out(&self, user: &UserId, valid: std::collections::HashSet<String>) {
        let valid = Arc::new(valid);
        let rooms: Vec<Arc<Room>> = self
            .0
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for room in rooms {
            room.grant(connection::Grant::SignedOut {
                user: user.clone(),
                valid: valid.clone(),
            });
        }
    }

    pub fn node(&self) -> &str {
        &self.0.node
    }

    /// Runs a connection's reading half where the rooms run, off the workers
    /// whose queues hold the fan-out's writes.
    pub(crate) fn spawn_reader<F>(&self, reader: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.0.rooms_runtime.spawn(reader)
    }

    /// Takes a seat in the room, opening the room on this node if needed, once
    /// the room has read its log to where it stood when it opened. `None` when
    /// there is no such room.
    pub async fn join(&self, id: &RoomId) -> Result<Option<Seat>, JoinError> {
        let seat = match self.seat_in_open_room(id) {
            Some(seat) => seat,
            None => {
                let _opening = self.0.opening.lock().await;
                match self.seat_in_open_room(id) {
                    Some(seat) => seat,
                    None => match self.open(id).await? {
                        Some(seat) => seat,
                        None => return Ok(None),
                    },
                }
            }
        };
        let room = seat.room.clone();
        tokio::time::timeout(JOIN_WAIT, room.applied(room.opened_at()))
            .await
            .map_err(|_| JoinError::Unavailable)?;
        Ok(Some(seat))
    }

    fn open_room(&self, id: &RoomId) -> Option<Arc<Room>> {
        let rooms = self.0.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.get(id).cloned()
    }

    fn seat_in_open_room(&self, id: &RoomId) -> Option<Seat> {
        let rooms = self.0.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.get(id).cloned().map(take_seat)
    }

    /// Opens the room on this node: its log read from the oldest batch the
    /// bus keeps (before the room is read from the store, so that nothing
    /// appended meanwhile is lost), its shop's events, its seed; and starts its
    /// task, which tries at once to sequence it.
    async fn open(&self, id: &RoomId) -> Result<Option<Seat>, JoinError> {
        let log = self.0.bus.room_log(id).await?;
        let Some(room) = self.0.store.room(id).await? else {
            return Ok(None);
        };
        let shop_events = self
            .0
            .bus
            .subscribe(&Topic::Shop(room.shop_id.clone()))
            .await?;
        let seed = self.seed(room).await?;
        let last = self.0.bus.last_batch(id).await?;
        // An empty log is ready once its first batch (a sequencer's start) is in.
        let opened_at = last.map_or(1, |e| e.position);
        let room = Arc::new(Room::new(id.clone(), seed, self.0.limits.ring, opened_at));
        let seat = {
            let mut rooms = self.0.rooms.lock().unwrap_or_else(|p| p.into_inner());
            rooms.insert(id.clone(), room.clone());
            take_seat(room.clone())
        };
        self.0
            .rooms_runtime
            .spawn(run_room(self.clone(), room, log, shop_events));
        Ok(Some(seat))
    }

    /// Connections in the room on this node.
    pub fn connections(&self, id: &RoomId) -> usize {
        self.open_room(id)
            .map_or(0, |r| r.viewers.load(Ordering::Relaxed))
    }

    /// The room's viewers on every node, as last shown in it (0 when the room
    /// is not open here).
    pub fn viewers(&self, id: &RoomId) -> u64 {
        self.open_room(id).map_or(0, |r| r.viewers_shown())
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

/// The room's task on this node: applies the room's log, applies its shop's
/// rules, reports this node's viewers and likes every [`TICK`], tries to
/// sequence the room whenever nobody does, and lets the room go when nobody
/// has watched it here for [`IDLE`].
async fn run_room(hub: Hub, room: Arc<Room>, mut log: Entries, mut shop_events: Subscription) {
    let stop = hub.0.shutdown.child_token();
    let _stop_leading = stop.clone().drop_guard();
    let lead = || {
        hub.0
            .rooms_runtime
            .spawn(leader::lead(hub.clone(), room.clone(), stop.clone()))
    };
    let mut leading = lead();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_since: Option<tokio::time::Instant> = None;
    let mut reported = 0;
    loop {
        tokio::select! {
            entry = log.next() => {
                let Some(entry) = entry else { return };
                match batch::Batch::decode(&entry.payload) {
                    Some(batch) => room.apply(entry.position, &batch),
                    None => metrics::counter!("live_bus_events_skipped_total", "reason" => "malformed").increment(1),
                }
            }
            payload = shop_events.next() => {
                let Some(payload) = payload else { return };
                match ShopEvent::decode(&payload) {
                    // For the room's rules only: viewers never see the list.
                    Ok(ShopEvent::BlockedWords { words }) => room.set_blocked_words(words),
                    Ok(ShopEvent::Moderator { user, moderator }) => {
                        room.grant(connection::Grant::Moderator { user, moderator });
                    }
                    Err(e) => skip(&room.id, &e),
                }
            }
            _ = tick.tick() => {
                let (viewers, likes) = room.take_presence();
                if viewers > 0 || likes > 0 || reported > 0 {
                    reported = viewers;
                    let presence = Presence { node: hub.node().to_owned(), viewers, likes };
                    let (hub, room) = (hub.clone(), room.clone());
                    hub.0.rooms_runtime.clone().spawn(async move { leader::report(&hub, &room, presence).await });
                }
                if leading.is_finished() {
                    leading = lead();
                }
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
pub(crate) fn skip(room: &RoomId, error: &Undecodable) {
    let reason = match error {
        Undecodable::Unknown(_) => "unknown_type",
        Undecodable::Malformed(_) => "malformed",
    };
    tracing::debug!(%room, %error, "a bus event was skipped");
    metrics::counter!("live_bus_events_skipped_total", "reason" => reason).increment(1);
}

/// Queues a chat message for the store, as shown at `at` under `seq`.
pub(crate) fn log_chat(hub: &Hub, room: &RoomId, entry: ChatEntry) {
    let record = ChatRecord {
        id: entry.message.id,
        room: room.clone(),
        user: entry.message.user.id,
        moderator: entry.message.user.moderator,
        seq: i64::try_from(entry.seq).unwrap_or(i64::MAX),
        text: entry.message.text.as_str().to_owned(),
        at: entry.at,
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
