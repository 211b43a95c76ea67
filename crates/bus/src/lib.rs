//! Events between Hawker's parts and between its nodes, as bytes.
//!
//! Two kinds of traffic:
//! - **Broadcasts** on a [`Topic`]: a shop's events and changes to sign-ins go
//!   to whoever subscribed ([`Bus::publish`], [`Bus::subscribe`]), at most once.
//! - **A room's log**, for the live rooms to number events in one order on
//!   every node: what is said in a room is appended to its *inputs*
//!   ([`Bus::publish`] on [`Topic::Room`]), the room's sequencer reads them
//!   ([`Bus::room_inputs`]) and appends numbered batches to the room's *log*
//!   ([`Bus::append`]) on the condition that nobody appended since the batch it
//!   last saw, and every node with viewers in the room reads the log
//!   ([`Bus::room_log`]), its retained part first. Who sequences a room is
//!   decided by a lease with the same condition ([`Bus::lease`]). Positions are
//!   the bus's own, growing, never reused; 0 means "none".
//!
//! Two backends behind one interface: in-process (one node: broadcast channels,
//! and a bounded log in memory while someone reads the room), and NATS with
//! JetStream (`docs/cluster.md` names the subjects and streams).

mod local;
mod nats;

use std::time::Duration;

use bytes::Bytes;
use domain::event::{RoomEvent, SessionEvent, ShopEvent};
use domain::ids::{RoomId, ShopId};

pub use nats::NatsSettings;

/// What a subscriber listens to, or where a room's input goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// What is said in a room ([`RoomEvent`] and the live rooms' own inputs),
    /// before it is numbered.
    Room(RoomId),
    /// What a shop's rooms must know and viewers never see ([`ShopEvent`]).
    Shop(ShopId),
    /// Users' sign-ins, which every node's credential cache follows
    /// ([`SessionEvent`]).
    Sessions,
    /// Which node a room's stream moved to, for the one it left to let go
    /// at once.
    Streams,
}

impl Topic {
    /// The topic's name under the bus's prefix: `room.{id}.in`, `shop.{id}`,
    /// `sessions`, `streams`.
    pub fn subject(&self) -> String {
        match self {
            Self::Room(id) => format!("room.{id}.in"),
            Self::Shop(id) => format!("shop.{id}"),
            Self::Sessions => "sessions".to_owned(),
            Self::Streams => "streams".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("an event could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the bus is unreachable: {0}")]
    Unreachable(String),
}

/// Why an append or a lease did not take.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Someone else appended since the position given: the caller is not, or
    /// no longer, the one who writes.
    #[error("another node appended first")]
    Conflict,
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// One entry of a room's inputs or log, at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub position: u64,
    pub payload: Bytes,
}

/// Where a reader of a room's inputs starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// The first input after this position.
    After(u64),
    /// The inputs of the last this long (a room nobody sequenced yet).
    Recent(Duration),
}

/// How long a lease holds without being renewed.
pub const LEASE: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct Bus(Backend);

#[derive(Clone)]
enum Backend {
    Local(local::Local),
    Nats(std::sync::Arc<nats::Nats>),
}

impl Bus {
    pub fn in_process() -> Self {
        Self(Backend::Local(local::Local::default()))
    }

    /// Connects to NATS and makes sure the room streams exist. Fails if the
    /// server cannot be reached or has no JetStream.
    pub async fn nats(settings: &NatsSettings) -> Result<Self, BusError> {
        Ok(Self(Backend::Nats(std::sync::Arc::new(
            nats::Nats::connect(settings).await?,
        ))))
    }

    /// Whether the bus can carry events now (always, in process).
    pub fn ready(&self) -> bool {
        match &self.0 {
            Backend::Local(_) => true,
            Backend::Nats(n) => n.ready(),
        }
    }

    /// `in-process` or `nats`, for `/readyz`.
    pub fn kind(&self) -> &'static str {
        match &self.0 {
            Backend::Local(_) => "in-process",
            Backend::Nats(_) => "nats",
        }
    }

    /// Publishes a payload: a broadcast to the topic's subscribers, or, on a
    /// room's topic, an input for its sequencer, kept by the bus until read.
    pub async fn publish(&self, topic: &Topic, payload: Bytes) -> Result<(), BusError> {
        let published = match &self.0 {
            Backend::Local(l) => {
                l.publish(topic, payload);
                Ok(())
            }
            Backend::Nats(n) => n.publish(topic, payload).await,
        };
        counted("publish", published)
    }

    /// Encodes a room event and publishes it on the room's topic.
    pub async fn publish_room(&self, room: &RoomId, event: &RoomEvent) -> Result<(), BusError> {
        let payload = Bytes::from(event.encode()?);
        self.publish(&Topic::Room(room.clone()), payload).await
    }

    /// Encodes a shop event and publishes it on the shop's topic.
    pub async fn publish_shop(&self, shop: &ShopId, event: &ShopEvent) -> Result<(), BusError> {
        let payload = Bytes::from(event.encode()?);
        self.publish(&Topic::Shop(shop.clone()), payload).await
    }

    /// Publishes a room event that tells of a change already kept: a failure
    /// costs the viewers that event, not the caller's answer, so it is logged
    /// and counted (`bus_announce_failed_total`) instead of returned.
    pub async fn announce_room(&self, room: &RoomId, event: &RoomEvent) {
        if let Err(e) = self.publish_room(room, event).await {
            not_announced(&Topic::Room(room.clone()), event.kind().as_str(), &e);
        }
    }

    /// [`Bus::announce_room`] for a shop's event.
    pub async fn announce_shop(&self, shop: &ShopId, event: &ShopEvent) {
        if let Err(e) = self.publish_shop(shop, event).await {
            not_announced(&Topic::Shop(shop.clone()), "shop", &e);
        }
    }

    /// [`Bus::announce_room`] for a change to a user's sign-ins.
    pub async fn announce_sessions(&self, event: &SessionEvent) {
        let published = match event.encode() {
            Ok(payload) => self.publish(&Topic::Sessions, Bytes::from(payload)).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = published {
            not_announced(&Topic::Sessions, "sessions", &e);
        }
    }

    /// Payloads published on `topic` from now on (on a room's topic: its
    /// inputs as they come, for tools and tests; the rooms read
    /// [`Bus::room_inputs`]).
    pub async fn subscribe(&self, topic: &Topic) -> Result<Subscription, BusError> {
        match &self.0 {
            Backend::Local(l) => Ok(l.subscribe(topic)),
            Backend::Nats(n) => n.subscribe(topic).await,
        }
    }

    /// A room's inputs from `from` on, in the order the bus took them.
    pub async fn room_inputs(&self, room: &RoomId, from: Start) -> Result<Entries, BusError> {
        match &self.0 {
            Backend::Local(l) => Ok(l.inputs(room, from)),
            Backend::Nats(n) => n.inputs(room, from).await,
        }
    }

    /// A room's log: every batch the bus still holds, oldest first, then the
    /// new ones as they are appended.
    pub async fn room_log(&self, room: &RoomId) -> Result<Entries, BusError> {
        match &self.0 {
            Backend::Local(l) => Ok(l.log(room)),
            Backend::Nats(n) => n.log(room).await,
        }
    }

    /// The last batch of a room's log, if the bus holds one.
    pub async fn last_batch(&self, room: &RoomId) -> Result<Option<Entry>, BusError> {
        let last = match &self.0 {
            Backend::Local(l) => Ok(l.last(room)),
            Backend::Nats(n) => n.last(room).await,
        };
        counted("read", last)
    }

    /// Appends a batch to a room's log if its last batch is still at
    /// `expected` (0: the log is empty); returns the new batch's position.
    pub async fn append(
        &self,
        room: &RoomId,
        expected: u64,
        payload: Bytes,
    ) -> Result<u64, AppendError> {
        let appended = match &self.0 {
            Backend::Local(l) => l.append(room, expected, payload),
            Backend::Nats(n) => n.append(room, expected, payload).await,
        };
        match &appended {
            Ok(_) => metrics::counter!("bus_published_total").increment(1),
            Err(AppendError::Bus(_)) => {
                metrics::counter!("bus_failed_total", "op" => "append").increment(1);
            }
            // Refused by the condition: nothing was published, nothing failed.
            Err(AppendError::Conflict) => {}
        }
        appended
    }

    /// Takes (`expected` 0) or renews (`expected`: the position the last take
    /// or renewal returned) the lease on sequencing a room, for [`LEASE`].
    /// [`AppendError::Conflict`]: someone else holds it. In process, the one
    /// node always does.
    pub async fn lease(
        &self,
        room: &RoomId,
        expected: u64,
        holder: &str,
    ) -> Result<u64, AppendError> {
        match &self.0 {
            Backend::Local(_) => Ok(expected + 1),
            Backend::Nats(n) => n.lease(room, expected, holder).await,
        }
    }

    /// Gives up a lease (at the position its last take or renewal returned),
    /// so that another node takes it at once rather than when it lapses.
    pub async fn release(&self, room: &RoomId, lease: u64) {
        if let Backend::Nats(n) = &self.0
            && let Err(e) = n.release(lease).await
        {
            tracing::debug!(%room, error = %e, "a lease was left to lapse");
        }
    }
}

fn counted<T>(op: &'static str, result: Result<T, BusError>) -> Result<T, BusError> {
    match &result {
        Ok(_) if op == "publish" => metrics::counter!("bus_published_total").increment(1),
        Ok(_) => {}
        Err(_) => metrics::counter!("bus_failed_total", "op" => op).increment(1),
    }
    result
}

fn not_announced(topic: &Topic, kind: &str, error: &BusError) {
    tracing::warn!(topic = %topic.subject(), kind, %error, "an event was kept but not published");
    metrics::counter!("bus_announce_failed_total").increment(1);
}

/// A subscriber's own stream of broadcast payloads.
pub struct Subscription(SubscriptionInner);

enum SubscriptionInner {
    Local(local::Receiver),
    Nats(async_nats::Subscriber),
}

impl Subscription {
    /// The next payload, or `None` once the bus is gone. In process, a
    /// subscriber that fell more than a channel's worth behind skips what it
    /// lost (counted in `bus_missed_total`).
    pub async fn next(&mut self) -> Option<Bytes> {
        let next = match &mut self.0 {
            SubscriptionInner::Local(r) => r.next().await,
            SubscriptionInner::Nats(s) => futures_util::StreamExt::next(s).await.map(|m| m.payload),
        };
        if next.is_some() {
            metrics::counter!("bus_received_total").increment(1);
        }
        next
    }
}

/// A reader of a room's inputs or log.
pub struct Entries(EntriesInner);

enum EntriesInner {
    Local(local::Reader),
    Nats(Box<nats::Reader>),
}

impl Entries {
    /// The next entry; waits for it. `None` once the bus is gone. A reader
    /// that fell behind what the bus keeps goes on from the oldest entry still
    /// held (the positions say what it missed).
    pub async fn next(&mut self) -> Option<Entry> {
        let next = match &mut self.0 {
            EntriesInner::Local(r) => r.next().await,
            EntriesInner::Nats(r) => r.next().await,
        };
        if next.is_some() {
            metrics::counter!("bus_received_total").increment(1);
        }
        next
    }
}
