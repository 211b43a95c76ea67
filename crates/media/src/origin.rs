//! Which node a room's stream comes from. The node an encoder reaches claims
//! the room's origin lease in the store (`store::Store::claim_origin`) and
//! renews it every [`RENEW`] while the stream lasts, writing into it where the
//! stream stands (a [`Handoff`]: the next media sequence number, the init
//! generation, the discontinuity sequence, the clock, the recording). The
//! newest claim wins, so an encoder that reconnects to another node takes the
//! stream over there, and that node goes on from the handoff: the same stream
//! id, numbers that keep rising after a discontinuity, timestamps that keep
//! rising, the same recording. The node it left learns at once from the bus
//! (`Topic::Streams`), or at its next renewal, and lets go: it cuts its
//! encoder and drops its copy of the stream without ending the room's live.
//! A lease not renewed for [`LEASE`] (its node died) is as good as none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bus::{Subscription, Topic};
use bytes::Bytes;
use domain::Timestamp;
use domain::event::{Ended, RoomEvent};
use domain::ids::RoomId;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::hls::Position;
use crate::stream::{Media, State, Stream};

/// How long an origin lease holds without being renewed.
pub const LEASE: Duration = Duration::from_secs(3);
/// How often the origin renews it.
pub const RENEW: Duration = Duration::from_secs(1);

/// A name no other node has, in this process or another.
pub(crate) fn node_name() -> String {
    static MEDIA: AtomicU64 = AtomicU64::new(0);
    format!(
        "media-{}-{}-{}",
        std::process::id(),
        Timestamp::now().as_millis(),
        MEDIA.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where a stream stands, for the node that goes on with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Handoff {
    #[serde(flatten)]
    pub position: Position,
    /// The clock's last output timestamp, ms.
    pub media_ms: i64,
    pub recording: Option<String>,
}

impl Handoff {
    /// A lease's state; one that says nothing (a lease taken a moment ago)
    /// starts the stream's numbers at zero.
    pub fn parse(state: &str) -> Self {
        serde_json::from_str(state).unwrap_or_default()
    }

    fn of(state: &State) -> Self {
        Self {
            position: state.hls.position(),
            media_ms: state.clock.last_out,
            recording: state.recording.as_ref().map(|r| r.id.to_string()),
        }
    }
}

/// Media sequence numbers a new origin skips: the lease's position is up to a
/// renewal old, and the node it came from may have begun a segment or two
/// since, which viewers may have seen; a number must never name two segments.
const MSN_MARGIN: u64 = 2;

impl State {
    /// A new copy of the stream goes on from another node's.
    pub(crate) fn continue_from(&mut self, handoff: &Handoff) {
        let mut position = handoff.position;
        position.next_msn += MSN_MARGIN;
        self.hls.continue_from(position);
        self.clock.continue_from(handoff.media_ms);
    }
}

/// What a new origin tells every node.
#[derive(Serialize, Deserialize)]
struct Moved {
    room: RoomId,
    epoch: i64,
    node: String,
}

impl Media {
    /// Tells the node the stream left to let go now.
    pub(crate) async fn announce_move(&self, room: &RoomId, epoch: i64) {
        let moved = Moved {
            room: room.clone(),
            epoch,
            node: self.0.node.clone(),
        };
        let payload = Bytes::from(serde_json::to_vec(&moved).unwrap_or_default());
        if let Err(e) = self.0.bus.publish(&Topic::Streams, payload).await {
            tracing::warn!(%room, error = %e, "could not announce where the stream went; the other node learns at its next renewal");
        }
    }

    /// Renews this node's lease on the stream's room until the stream ends
    /// here; lets go when another node took it.
    pub(crate) fn keep_origin(&self, stream: &Arc<Stream>) {
        let (media, stream) = (self.clone(), stream.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RENEW);
            tick.tick().await;
            loop {
                tick.tick().await;
                let (epoch, handoff) = {
                    let state = stream.lock();
                    if state.ended {
                        return;
                    }
                    (state.epoch, Handoff::of(&state))
                };
                let handoff = serde_json::to_string(&handoff).unwrap_or_default();
                let store = &media.0.store;
                match store
                    .renew_origin(&stream.room, epoch, &handoff, LEASE)
                    .await
                {
                    Ok(true) => {}
                    // A newer claim: this node's own (a publisher that took
                    // over here, whose epoch the stream has or is about to
                    // get) or another's.
                    Ok(false) => match store.origin(&stream.room).await {
                        Ok(Some(origin)) if origin.node == media.0.node => {}
                        Ok(_) => {
                            tracing::info!(room = %stream.room, "another node took the stream over");
                            media.let_go(&stream);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(room = %stream.room, error = %e, "could not tell who has the stream")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(room = %stream.room, error = %e, "could not renew the stream's origin lease")
                    }
                }
            }
        });
    }

    /// This node is no longer the stream's origin: its publisher is cut, its
    /// recording left to the new origin, and its copy dropped, without ending
    /// the live.
    pub(crate) fn let_go(&self, stream: &Arc<Stream>) {
        let (publisher, recording) = {
            let mut state = stream.lock();
            if state.ended {
                return;
            }
            state.ended = true;
            state.departed = None;
            state.hls.end();
            (state.publisher.take(), state.recording.take())
        };
        if let Some((_, token)) = publisher {
            token.cancel();
        }
        if let Some(recording) = recording {
            recording.leave();
        }
        let _ = stream.flv.send(Bytes::new());
        stream.changed.send_modify(|n| *n += 1);
        let mut streams = self.streams();
        if streams
            .get(&stream.room)
            .is_some_and(|s| Arc::ptr_eq(s, stream))
        {
            streams.remove(&stream.room);
        }
        metrics::counter!("hawker_streams_moved_total").increment(1);
    }

    /// Ends the lives whose origin died (their lease lapsed): every node
    /// looks every second, and the one whose release of the lapsed lease
    /// takes announces the end. An encoder that comes back after that starts
    /// a new stream; the recording keeps what was written (and is closed by
    /// `Recorder::recover`).
    pub async fn end_lapsed_streams(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(RENEW);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Ok(lapsed) = self.0.store.lapsed_origins(Timestamp::now()).await else {
                continue;
            };
            for origin in lapsed {
                if !matches!(
                    self.0
                        .store
                        .release_origin(&origin.room, origin.epoch)
                        .await,
                    Ok(true)
                ) {
                    continue;
                }
                tracing::info!(room = %origin.room, node = %origin.node, "the stream's node went away and no encoder came back: the live is over");
                if let Some(copy) = self.stream(&origin.room).filter(|s| s.is_copy()) {
                    self.end_copy(&copy);
                }
                self.set_live(&origin.room, false).await;
                let ended = RoomEvent::StreamEnded(Ended {
                    ended_at: Some(Timestamp::now()),
                });
                self.0.bus.announce_room(&origin.room, &ended).await;
            }
        }
    }

    /// Lets go of the streams other nodes announce they took over, until
    /// `shutdown`.
    pub async fn follow_moves(self, mut moves: Subscription, shutdown: CancellationToken) {
        loop {
            let payload = tokio::select! {
                () = shutdown.cancelled() => return,
                next = moves.next() => match next {
                    Some(payload) => payload,
                    None => return,
                },
            };
            let Ok(moved) = serde_json::from_slice::<Moved>(&payload) else {
                continue;
            };
            if moved.node == self.0.node {
                continue;
            }
            let older = self
                .stream(&moved.room)
                .filter(|s| s.lock().epoch < moved.epoch);
            if let Some(stream) = older {
                tracing::info!(room = %moved.room, to = %moved.node, "the stream moved to another node");
                self.let_go(&stream);
            }
        }
    }
}
