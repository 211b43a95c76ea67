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
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hls::Position;
use crate::stream::{Media, State, Stream};

/// How long an origin lease holds without being renewed: long enough that a
/// database slowed down for a few seconds (a commit of 2.5 s was seen on a
/// loaded test machine) does not end a live stream.
pub const LEASE: Duration = Duration::from_secs(5);
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
    /// When this was written (wall clock, ms).
    pub at_ms: i64,
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
            at_ms: Timestamp::now().as_millis(),
        }
    }
}

impl State {
    /// A new copy of the stream goes on from another node's. The handoff is
    /// up to a renewal old, and the node it came from went on meanwhile,
    /// which viewers may have seen: the numbers skip the segments it may
    /// have begun since (a number must never name two segments), and the
    /// clock goes on from where it may have got to (timestamps must never
    /// go back), both reckoned from the handoff's age.
    pub(crate) fn continue_from(&mut self, handoff: &Handoff, segment_min_ms: i64) {
        let age = (Timestamp::now().as_millis() - handoff.at_ms).clamp(0, 60_000);
        let mut position = handoff.position;
        position.next_msn += 2 + (age / segment_min_ms.max(1)) as u64;
        self.hls.continue_from(position);
        self.clock.continue_from(handoff.media_ms + age + 100);
    }
}

/// Fetches the stream of a room from the node at a URL, as it stands: the
/// first frames of its feed ([`crate::wire`]), or `None`.
pub type Fetcher = Arc<
    dyn Fn(RoomId, String) -> std::pin::Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>
        + Send
        + Sync,
>;

/// A new copy of a stream another node had goes on from it: from its state
/// as fetched, window and all, when that worked (the playlist goes on as if
/// the encoder had come back to that node), or else from the lease's handoff.
pub(crate) fn go_on(
    stream: &Arc<Stream>,
    taken: Option<Bytes>,
    handoff: &Handoff,
    segment_min_ms: i64,
) {
    if let Some(taken) = taken {
        let mut mirror = crate::edge::Mirror::new(stream.clone());
        if let Err(e) = mirror.take(&taken) {
            tracing::warn!(room = %stream.room, error = %e, "the other node's stream came cut short");
        }
        if mirror.took_media() {
            let mut state = stream.lock();
            // The encoder is a new one, as after a reconnect to that node
            // (and the edges that start from what came before hear so).
            state.hls.pause();
            stream.feed_out(&mut state, crate::wire::Frame::Pause);
            let last = mirror.last_timestamp().max(handoff.media_ms);
            state.clock.continue_from(last);
            return;
        }
    }
    stream.lock().continue_from(handoff, segment_min_ms);
}

impl Media {
    /// Lets this node fetch another node's stream as it stands when it takes
    /// the stream over ([`Fetcher`]; the HTTP part is the api crate's).
    pub fn fetch_streams_with(&self, fetcher: Fetcher) {
        let _ = self.0.fetcher.set(fetcher);
    }

    /// The room's stream as the node whose lease names it has it, if that
    /// is another node and it answers.
    pub(crate) async fn state_elsewhere(&self, room: &RoomId) -> Option<Bytes> {
        let fetch = self.0.fetcher.get()?.clone();
        let origin = self.0.store.origin(room).await.ok()??;
        if origin.node == self.0.node || origin.url.is_empty() {
            return None;
        }
        tokio::time::timeout(FETCH_WAIT, fetch(room.clone(), origin.url))
            .await
            .ok()?
    }
}

/// How long a taking-over node waits for the other node's stream.
const FETCH_WAIT: Duration = Duration::from_secs(1);

/// What one node tells every node about a stream.
#[derive(Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
enum Notice {
    /// A new origin took the stream: the node it left lets go.
    Moved {
        room: RoomId,
        epoch: i64,
        node: String,
    },
    /// The room's stream key was replaced or the room ended: whichever node
    /// the encoder reached disconnects it.
    Cut { room: RoomId },
}

impl Media {
    async fn announce(&self, room: &RoomId, notice: &Notice) -> bool {
        let payload = Bytes::from(serde_json::to_vec(notice).unwrap_or_default());
        match self.0.bus.publish(&Topic::Streams, payload).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%room, error = %e, "could not tell the other nodes about the stream");
                false
            }
        }
    }

    /// Tells the node the stream left to let go now (or it learns at its
    /// next renewal).
    pub(crate) async fn announce_move(&self, room: &RoomId, epoch: i64) {
        let moved = Notice::Moved {
            room: room.clone(),
            epoch,
            node: self.0.node.clone(),
        };
        self.announce(room, &moved).await;
    }

    /// Disconnects the encoder publishing to `room`, on whichever node it
    /// is: its key no longer opens the room, or the room is over. The stream
    /// goes on as after any encoder's leaving (the reconnect grace, then the
    /// end), since the old key cannot come back.
    pub async fn cut(&self, room: &RoomId) {
        if !self
            .announce(room, &Notice::Cut { room: room.clone() })
            .await
        {
            self.cut_here(room);
        }
    }

    fn cut_here(&self, room: &RoomId) {
        let Some(stream) = self.stream(room) else {
            return;
        };
        let state = stream.lock();
        if let Some((_, token)) = &state.publisher {
            tracing::info!(%room, "the publisher is cut off");
            metrics::counter!("hawker_rtmp_publishers_cut_total").increment(1);
            token.cancel();
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
                    if state.ended || state.edge {
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
                            media.let_go(&stream, true);
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

    /// This node is no longer the stream's origin: its publisher is cut and
    /// its recording left to the new origin, without ending the live. With
    /// `follow`, and a node that pulls copies ([`Media::copies_to_follow`]),
    /// the stream becomes a copy of the new origin's, so that its viewers
    /// (HTTP-FLV connections included) go on watching; otherwise it is
    /// dropped.
    pub(crate) fn let_go(&self, stream: &Arc<Stream>, follow: bool) {
        let follower = self.0.copies.get().filter(|_| follow);
        let (publisher, recording) = {
            let mut state = stream.lock();
            if state.ended || state.edge {
                return;
            }
            state.departed = None;
            if follower.is_some() {
                state.edge = true;
            } else {
                state.ended = true;
                state.hls.end();
            }
            (state.publisher.take(), state.recording.take())
        };
        if let Some((_, token)) = publisher {
            token.cancel();
        }
        if let Some(recording) = recording {
            recording.leave();
        }
        metrics::counter!("hawker_streams_moved_total").increment(1);
        if let Some(follower) = follower {
            let _ = follower.send(stream.clone());
            return;
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
    }

    /// The streams this node let go to another, now copies to pull from
    /// there; `None` once asked for (one follower per node).
    pub fn copies_to_follow(&self) -> Option<mpsc::UnboundedReceiver<Arc<Stream>>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.0.copies.set(sender).ok()?;
        Some(receiver)
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

    /// Lets go of the streams other nodes announce they took over, and cuts
    /// the publishers the API cut off (on any node), until `shutdown`.
    pub async fn follow_moves(self, mut moves: Subscription, shutdown: CancellationToken) {
        loop {
            let payload = tokio::select! {
                () = shutdown.cancelled() => return,
                next = moves.next() => match next {
                    Some(payload) => payload,
                    None => return,
                },
            };
            let (room, epoch, node) = match serde_json::from_slice::<Notice>(&payload) {
                Ok(Notice::Moved { room, epoch, node }) => (room, epoch, node),
                Ok(Notice::Cut { room }) => {
                    self.cut_here(&room);
                    continue;
                }
                Err(_) => continue,
            };
            if node == self.0.node {
                continue;
            }
            let older = self.stream(&room).filter(|s| s.lock().epoch < epoch);
            if let Some(stream) = older {
                tracing::info!(%room, to = %node, "the stream moved to another node");
                self.let_go(&stream, true);
            }
        }
    }
}
