//! Events between Hawker's parts and, later, between nodes: the selling path,
//! the video ingest and the live rooms publish encoded events on a [`Topic`],
//! and whoever subscribed to it gets the bytes. The bus neither numbers nor
//! keeps events: the live rooms number what they show.
//!
//! The interface is the one a broker across nodes fits: publishing is
//! asynchronous and may fail, and a subscriber owns a [`Subscription`] that
//! yields payloads and deals with falling behind itself. In-process for now (a
//! broadcast channel per topic); NATS joins behind the same interface.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use domain::event::{RoomEvent, SessionEvent, ShopEvent};
use domain::ids::{RoomId, ShopId};
use tokio::sync::broadcast;

/// What a subscriber listens to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A room's events ([`RoomEvent`]).
    Room(RoomId),
    /// What a shop's rooms must know and viewers never see ([`ShopEvent`]).
    Shop(ShopId),
    /// Users' sign-ins, which every node's credential cache follows
    /// ([`SessionEvent`]).
    Sessions,
}

impl Topic {
    /// The topic's name on a broker: `room.{id}`, `shop.{id}`, `sessions`.
    pub fn subject(&self) -> String {
        match self {
            Self::Room(id) => format!("room.{id}"),
            Self::Shop(id) => format!("shop.{id}"),
            Self::Sessions => "sessions".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("an event could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Payloads a subscriber may fall behind by before it loses the oldest.
const CAPACITY: usize = 1024;

#[derive(Clone, Default)]
pub struct Bus {
    topics: Arc<Mutex<HashMap<Topic, broadcast::Sender<Bytes>>>>,
}

impl Bus {
    pub fn in_process() -> Self {
        Self::default()
    }

    /// Sends a payload to the topic's current subscribers; with none, it is dropped.
    pub async fn publish(&self, topic: &Topic, payload: Bytes) -> Result<(), BusError> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = topics.get(topic)
            && sender.send(payload).is_err()
        {
            // Nobody listens any more: forget the topic until someone does.
            topics.remove(topic);
        }
        metrics::counter!("bus_published_total").increment(1);
        Ok(())
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

    /// Payloads published on `topic` from now on.
    pub async fn subscribe(&self, topic: &Topic) -> Result<Subscription, BusError> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let receiver = topics
            .entry(topic.clone())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe();
        Ok(Subscription {
            topic: topic.clone(),
            receiver,
        })
    }
}

fn not_announced(topic: &Topic, kind: &str, error: &BusError) {
    tracing::warn!(topic = %topic.subject(), kind, %error, "an event was kept but not published");
    metrics::counter!("bus_announce_failed_total").increment(1);
}

/// A subscriber's own stream of payloads.
pub struct Subscription {
    topic: Topic,
    receiver: broadcast::Receiver<Bytes>,
}

impl Subscription {
    /// The next payload, or `None` once the bus is gone. A subscriber that fell
    /// more than a channel's worth behind skips what it lost (counted in
    /// `bus_missed_total`) and goes on from the oldest payload still held.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.receiver.recv().await {
                Ok(payload) => {
                    metrics::counter!("bus_received_total").increment(1);
                    return Some(payload);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(topic = %self.topic.subject(), missed = n, "a subscriber fell behind the bus");
                    metrics::counter!("bus_missed_total").increment(n);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn subscribers_get_their_topic_only() {
        let bus = Bus::in_process();
        let (a, b) = (
            Topic::Room(RoomId::generate()),
            Topic::Room(RoomId::generate()),
        );
        bus.publish(&a, Bytes::from_static(b"before"))
            .await
            .unwrap();
        let mut sub = bus.subscribe(&a).await.unwrap();
        bus.publish(&b, Bytes::from_static(b"other room"))
            .await
            .unwrap();
        bus.publish(&a, Bytes::from_static(b"mine")).await.unwrap();
        assert_eq!(sub.next().await.unwrap(), "mine");
        assert!(
            sub.receiver.try_recv().is_err(),
            "nothing from before or from another topic"
        );
        drop(sub);
        bus.publish(&a, Bytes::from_static(b"nobody listens"))
            .await
            .unwrap();
        assert!(
            bus.topics.lock().unwrap().get(&a).is_none(),
            "an unheard topic is forgotten"
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_goes_on_from_what_is_held() {
        let bus = Bus::in_process();
        let topic = Topic::Shop(ShopId::generate());
        let mut sub = bus.subscribe(&topic).await.unwrap();
        for i in 0..CAPACITY + 10 {
            bus.publish(&topic, Bytes::from(i.to_string()))
                .await
                .unwrap();
        }
        assert_eq!(sub.next().await.unwrap(), "10", "the oldest still held");
    }
}
