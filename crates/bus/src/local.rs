//! The in-process bus: one node. Broadcasts go through a channel per topic; a
//! room's inputs and log are kept in memory, bounded, while anyone reads the
//! room (a room nobody reads has no log, and its inputs are dropped, as no
//! viewer is there to see them).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use domain::ids::RoomId;
use tokio::sync::{Notify, broadcast};

use crate::{
    AppendError, Entries, EntriesInner, Entry, Start, Subscription, SubscriptionInner, Topic,
};

/// Payloads a broadcast subscriber may fall behind by before it loses the oldest.
pub(crate) const CAPACITY: usize = 1024;
/// Inputs a room keeps for its sequencer.
const INPUTS: usize = 4096;
/// Batches a room's log keeps.
const BATCHES: usize = 1024;

#[derive(Clone, Default)]
pub(crate) struct Local {
    topics: Arc<Mutex<HashMap<Topic, broadcast::Sender<Bytes>>>>,
    rooms: Arc<Mutex<HashMap<RoomId, Weak<RoomLog>>>>,
}

#[derive(Default)]
struct RoomLog {
    state: Mutex<LogState>,
    changed: Notify,
}

#[derive(Default)]
struct LogState {
    inputs: VecDeque<Entry>,
    batches: VecDeque<Entry>,
    /// The last position given, inputs and batches alike.
    position: u64,
}

#[derive(Clone, Copy)]
enum Side {
    Inputs,
    Batches,
}

impl LogState {
    fn side(&self, side: Side) -> &VecDeque<Entry> {
        match side {
            Side::Inputs => &self.inputs,
            Side::Batches => &self.batches,
        }
    }

    fn push(&mut self, side: Side, payload: Bytes) -> u64 {
        self.position += 1;
        let (entries, cap) = match side {
            Side::Inputs => (&mut self.inputs, INPUTS),
            Side::Batches => (&mut self.batches, BATCHES),
        };
        if entries.len() == cap {
            entries.pop_front();
        }
        entries.push_back(Entry {
            position: self.position,
            payload,
        });
        self.position
    }
}

impl Local {
    pub(crate) fn publish(&self, topic: &Topic, payload: Bytes) {
        if let Topic::Room(room) = topic
            && let Some(log) = self.existing(room)
        {
            log.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Side::Inputs, payload.clone());
            log.changed.notify_waiters();
        }
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = topics.get(topic)
            && sender.send(payload).is_err()
        {
            // Nobody listens any more: forget the topic until someone does.
            topics.remove(topic);
        }
    }

    pub(crate) fn subscribe(&self, topic: &Topic) -> Subscription {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let receiver = topics
            .entry(topic.clone())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe();
        Subscription(SubscriptionInner::Local(Receiver {
            topic: topic.clone(),
            receiver,
        }))
    }

    fn existing(&self, room: &RoomId) -> Option<Arc<RoomLog>> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.get(room).and_then(Weak::upgrade)
    }

    /// The room's log, made if nobody holds it.
    fn room(&self, room: &RoomId) -> Arc<RoomLog> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(log) = rooms.get(room).and_then(Weak::upgrade) {
            return log;
        }
        let log = Arc::new(RoomLog::default());
        rooms.retain(|_, l| l.strong_count() > 0);
        rooms.insert(room.clone(), Arc::downgrade(&log));
        log
    }

    pub(crate) fn inputs(&self, room: &RoomId, from: Start) -> Entries {
        let log = self.room(room);
        let after = match from {
            Start::After(position) => position,
            // Whatever it holds is recent: a room's log lives while it is read.
            Start::Recent(_) => 0,
        };
        Entries(EntriesInner::Local(Reader {
            log,
            side: Side::Inputs,
            after,
        }))
    }

    pub(crate) fn log(&self, room: &RoomId) -> Entries {
        Entries(EntriesInner::Local(Reader {
            log: self.room(room),
            side: Side::Batches,
            after: 0,
        }))
    }

    pub(crate) fn last(&self, room: &RoomId) -> Option<Entry> {
        let log = self.existing(room)?;
        let state = log.state.lock().unwrap_or_else(|p| p.into_inner());
        state.batches.back().cloned()
    }

    pub(crate) fn append(
        &self,
        room: &RoomId,
        expected: u64,
        payload: Bytes,
    ) -> Result<u64, AppendError> {
        // Nobody reads the room: nobody would see the batch.
        let Some(log) = self.existing(room) else {
            return Err(AppendError::Conflict);
        };
        let mut state = log.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.batches.back().map_or(0, |b| b.position) != expected {
            return Err(AppendError::Conflict);
        }
        let position = state.push(Side::Batches, payload);
        drop(state);
        log.changed.notify_waiters();
        Ok(position)
    }
}

/// A broadcast subscription in process.
pub(crate) struct Receiver {
    topic: Topic,
    receiver: broadcast::Receiver<Bytes>,
}

impl Receiver {
    pub(crate) async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.receiver.recv().await {
                Ok(payload) => return Some(payload),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(topic = %self.topic.subject(), missed = n, "a subscriber fell behind the bus");
                    metrics::counter!("bus_missed_total").increment(n);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// A reader of one side of a room's log in process.
pub(crate) struct Reader {
    log: Arc<RoomLog>,
    side: Side,
    after: u64,
}

impl Reader {
    pub(crate) async fn next(&mut self) -> Option<Entry> {
        loop {
            let changed = self.log.changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before the check, so an append in between wakes it.
            changed.as_mut().enable();
            {
                let state = self.log.state.lock().unwrap_or_else(|p| p.into_inner());
                let entries = state.side(self.side);
                let first = entries.partition_point(|e| e.position <= self.after);
                if let Some(entry) = entries.get(first) {
                    self.after = entry.position;
                    return Some(entry.clone());
                }
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Bus;
    use domain::ids::ShopId;

    #[tokio::test]
    async fn subscribers_get_their_topic_only() {
        let bus = Bus::in_process();
        let (a, b) = (
            Topic::Shop(ShopId::generate()),
            Topic::Shop(ShopId::generate()),
        );
        bus.publish(&a, Bytes::from_static(b"before"))
            .await
            .unwrap();
        let mut sub = bus.subscribe(&a).await.unwrap();
        bus.publish(&b, Bytes::from_static(b"other shop"))
            .await
            .unwrap();
        bus.publish(&a, Bytes::from_static(b"mine")).await.unwrap();
        assert_eq!(sub.next().await.unwrap(), "mine");
        let Subscription(SubscriptionInner::Local(receiver)) = &mut sub else {
            panic!("an in-process subscription")
        };
        assert!(
            receiver.receiver.try_recv().is_err(),
            "nothing from before or from another topic"
        );
        drop(sub);
        bus.publish(&a, Bytes::from_static(b"nobody listens"))
            .await
            .unwrap();
        let crate::Backend::Local(local) = &bus.0 else {
            panic!("an in-process bus")
        };
        assert!(
            local.topics.lock().unwrap().get(&a).is_none(),
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

    #[tokio::test]
    async fn a_room_log_takes_appends_in_turn_and_is_read_from_the_start() {
        let bus = Bus::in_process();
        let room = RoomId::generate();
        bus.publish_room(
            &room,
            &domain::event::RoomEvent::Unpin(domain::event::Unpin {}),
        )
        .await
        .unwrap();
        let mut inputs = bus.room_inputs(&room, Start::After(0)).await.unwrap();
        let mut log = bus.room_log(&room).await.unwrap();
        bus.publish(&Topic::Room(room.clone()), Bytes::from_static(b"said"))
            .await
            .unwrap();
        let said = inputs.next().await.unwrap();
        assert_eq!(
            said.payload, "said",
            "an input from before anyone read the room is gone"
        );
        let first = bus
            .append(&room, 0, Bytes::from_static(b"one"))
            .await
            .unwrap();
        assert!(matches!(
            bus.append(&room, 0, Bytes::from_static(b"again")).await,
            Err(AppendError::Conflict)
        ));
        bus.append(&room, first, Bytes::from_static(b"two"))
            .await
            .unwrap();
        assert_eq!(log.next().await.unwrap().payload, "one");
        assert_eq!(log.next().await.unwrap().payload, "two");
        assert_eq!(bus.last_batch(&room).await.unwrap().unwrap().payload, "two");
        let mut late = bus.room_log(&room).await.unwrap();
        assert_eq!(
            late.next().await.unwrap().payload,
            "one",
            "a new reader starts from what is held"
        );
    }
}
