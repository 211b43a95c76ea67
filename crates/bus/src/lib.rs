//! Room events between Hawker's parts: the selling path, the video ingest and
//! the live rooms publish here, and each room's hub subscribes. In-process for
//! now; NATS joins behind the same interface when several nodes must share
//! events. The bus does not keep history: the live rooms number and keep what
//! they show.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use domain::Timestamp;
use domain::ids::RoomId;
use serde::Serialize;
use tokio::sync::broadcast;

/// Something that happened in a room, such as `sale.stock` or `sale.started`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomEvent {
    pub room: RoomId,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub data: serde_json::Value,
    pub at: Timestamp,
}

/// Events a subscriber may fall behind by before it loses the oldest.
const CAPACITY: usize = 1024;

#[derive(Clone, Default)]
pub struct Bus {
    rooms: Arc<Mutex<HashMap<RoomId, broadcast::Sender<Arc<RoomEvent>>>>>,
}

impl Bus {
    pub fn in_process() -> Self {
        Self::default()
    }

    /// Sends an event to the room's current subscribers; with none, it is dropped.
    pub fn publish(&self, event: RoomEvent) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = rooms.get(&event.room) else {
            return;
        };
        if sender.send(Arc::new(event.clone())).is_err() {
            // Nobody listens any more: forget the room until someone does.
            rooms.remove(&event.room);
        }
    }

    /// Events of `room` from now on. A subscriber that falls more than
    /// `CAPACITY` events behind gets `Lagged` and skips ahead.
    pub fn subscribe(&self, room: &RoomId) -> broadcast::Receiver<Arc<RoomEvent>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .entry(room.clone())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(room: &RoomId, kind: &'static str) -> RoomEvent {
        RoomEvent {
            room: room.clone(),
            kind,
            data: serde_json::json!({}),
            at: Timestamp::now(),
        }
    }

    #[tokio::test]
    async fn subscribers_get_their_room_only() {
        let bus = Bus::in_process();
        let (a, b) = (RoomId::generate(), RoomId::generate());
        bus.publish(event(&a, "before"));
        let mut sub = bus.subscribe(&a);
        bus.publish(event(&b, "other room"));
        bus.publish(event(&a, "sale.started"));
        assert_eq!(sub.recv().await.unwrap().kind, "sale.started");
        assert!(
            sub.try_recv().is_err(),
            "nothing from before or from another room"
        );
        drop(sub);
        bus.publish(event(&a, "nobody listens"));
        assert!(
            bus.rooms.lock().unwrap().get(&a).is_none(),
            "an unheard room is forgotten"
        );
    }
}
