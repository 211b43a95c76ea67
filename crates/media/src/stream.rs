//! The streams of this node: one per room being published, each holding what
//! its viewers need (the FLV headers and current GOP, the LL-HLS window) and
//! fanning tags out to HTTP-FLV viewers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bus::Bus;
use bytes::{Bytes, BytesMut};
use domain::Timestamp;
use domain::event::{Ended, RoomEvent};
use domain::ids::{RecordingId, RoomId};
use domain::room::{Playback, Room, RoomChange, RoomStatus};
use serde::Serialize;
use store::Store;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::flv::{self, AacConfig, AudioTag, AvcConfig, VideoTag};
use crate::hls::{self, Hls};
use crate::record::Recorder;
use crate::wire::Frame;

/// How the media part behaves; the binary fills it from its settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hls: hls::Settings,
    /// What an RTMP connection may cost, and how many there may be.
    pub rtmp: crate::rtmp::Limits,
    /// Encoders' sockets are read together on this tick rather than as data
    /// arrives: fewer wake-ups for at most this much added latency.
    pub ingest_tick: Duration,
    /// Batches of FLV tags (one per video frame) an HTTP-FLV viewer may fall
    /// behind by before it is cut off.
    pub flv_queue: usize,
    /// An HTTP-FLV viewer waits this long after a frame for the next ones and
    /// writes them together: fewer writes per viewer, for that much latency.
    pub flv_merge: Duration,
    /// The current GOP kept for new HTTP-FLV viewers is dropped past this.
    pub gop_max_bytes: usize,
    /// An ended stream's playlist stays (with ENDLIST) this long.
    pub linger: Duration,
    /// A stream whose encoder went away waits this long for it to come back
    /// (OBS reconnects by itself) before it ends: a reconnect within it
    /// continues the same playlist. Zero ends a stream with its encoder.
    pub reconnect_grace: Duration,
    /// Bytes of recorded segments held in memory while the file storage does
    /// not answer; past it, the oldest are dropped (and counted).
    pub recording_buffer: usize,
    /// Where the other nodes reach this one (its origin lease says it).
    pub advertise_url: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            hls: hls::Settings::default(),
            rtmp: crate::rtmp::Limits::default(),
            ingest_tick: Duration::from_millis(10),
            flv_queue: 256,
            flv_merge: Duration::ZERO,
            gop_max_bytes: 32 * 1024 * 1024,
            linger: Duration::from_secs(30),
            reconnect_grace: Duration::from_secs(5),
            recording_buffer: 256 * 1024 * 1024,
            advertise_url: String::new(),
        }
    }
}

pub use domain::room::{flv_path, hls_path};

/// Frames an edge may fall behind by before it is cut off (and starts again).
const FEED_QUEUE: usize = 4096;

/// Why a publish is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no room has this stream key")]
    UnknownKey,
    #[error("the room has ended")]
    RoomEnded,
    #[error("the store failed: {0}")]
    Store(#[from] store::StoreError),
}

/// The streams of this node. Cheap to clone.
#[derive(Clone)]
pub struct Media(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) bus: Bus,
    /// This node's name in the origin leases; no other node has it.
    pub(crate) node: String,
    settings: Settings,
    streams: Mutex<HashMap<RoomId, Arc<Stream>>>,
    sessions: AtomicU64,
    recorder: Recorder,
    /// Fetches another node's stream as it stands ([`Media::fetch_streams_with`]).
    pub(crate) fetcher: std::sync::OnceLock<crate::origin::Fetcher>,
    /// Where streams let go to another node go, to be pulled from there.
    pub(crate) copies: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Arc<Stream>>>,
}

impl Media {
    /// Recordings go to `objects`.
    pub fn new(store: Store, bus: Bus, objects: objects::Objects, settings: Settings) -> Self {
        let recorder = Recorder::new(store.clone(), objects, settings.recording_buffer);
        Self(Arc::new(Inner {
            store,
            bus,
            node: crate::origin::node_name(),
            settings,
            streams: Mutex::default(),
            sessions: AtomicU64::new(1),
            recorder,
            copies: std::sync::OnceLock::new(),
            fetcher: std::sync::OnceLock::new(),
        }))
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// This node's name in the origin leases.
    pub fn node(&self) -> &str {
        &self.0.node
    }

    pub fn recorder(&self) -> &Recorder {
        &self.0.recorder
    }

    /// The room's stream, live or lingering after its end.
    pub fn stream(&self, room: &RoomId) -> Option<Arc<Stream>> {
        self.streams().get(room).cloned()
    }

    /// Stats of every stream on this node, for `/metrics`.
    pub fn all_stats(&self) -> Vec<StreamStats> {
        let streams: Vec<_> = self.streams().values().cloned().collect();
        streams.iter().map(|s| s.stats()).collect()
    }

    pub(crate) fn streams(&self) -> MutexGuard<'_, HashMap<RoomId, Arc<Stream>>> {
        self.0.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The room a stream key opens, compared against the stored hash.
    pub async fn authorize(&self, key: &str) -> Result<Room, Refused> {
        let hash = domain::secret::hash_secret(key);
        let Some((room, stored)) = self.0.store.room_by_stream_key_hash(&hash).await? else {
            return Err(Refused::UnknownKey);
        };
        if !domain::secret::secret_matches(&stored, key) {
            return Err(Refused::UnknownKey);
        }
        if room.status == RoomStatus::Ended {
            return Err(Refused::RoomEnded);
        }
        Ok(room)
    }

    /// Makes this session the room's publisher, and this node the room's
    /// origin (its lease, [`crate::origin`]). A publisher already there is
    /// told to stop (its token is cancelled): the newest connection wins,
    /// which is what an encoder reconnecting after a network drop needs, on
    /// this node or another. A stream waiting for its encoder to come back,
    /// here or on another node, goes on with this one.
    pub async fn publish(&self, room: &Room, peer: SocketAddr) -> Result<Publisher, Refused> {
        let session = self.0.sessions.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        // The stream as the node that has it now stands, window and all, for
        // this one to go on from exactly (before claiming it, while that
        // node still serves it).
        let taken = self.state_elsewhere(&room.id).await;
        let claim = self
            .0
            .store
            .claim_origin(
                &room.id,
                &self.0.node,
                &self.0.settings.advertise_url,
                &format!("s{:x}", Timestamp::now().as_millis()),
                crate::origin::LEASE,
            )
            .await?;
        let epoch = claim.origin.epoch;
        // The stream was another node's: it goes on here from where it stood.
        let moved = claim
            .previous_node
            .as_ref()
            .filter(|node| **node != self.0.node)
            .map(|_| crate::origin::Handoff::parse(&claim.origin.state));
        let (stream, takeover, stale) = {
            let mut streams = self.streams();
            let here = streams.get(&room.id).filter(|s| !s.lock().ended).cloned();
            match here {
                Some(stream) if moved.is_none() => {
                    let takeover = stream.take_over(session, token.clone(), epoch);
                    (stream, takeover, None)
                }
                stale => {
                    let stream = Arc::new(Stream::new(
                        room.id.clone(),
                        claim.origin.stream_id.clone(),
                        &self.0.settings,
                    ));
                    if let Some(handoff) = &moved {
                        let segment_min = self.0.settings.hls.segment_min_ms;
                        crate::origin::go_on(&stream, taken, handoff, segment_min);
                    }
                    streams.insert(room.id.clone(), stream.clone());
                    let takeover = stream.take_over(session, token.clone(), epoch);
                    (stream, takeover, stale)
                }
            }
        };
        match stale {
            Some(copy) if copy.is_copy() => self.end_copy(&copy),
            Some(stale) => self.let_go(&stale, false),
            None => {}
        }
        if takeover == Takeover::Replaced {
            tracing::info!(room = %room.id, %peer, "a new publisher took over the stream");
        } else if takeover == Takeover::Resumed {
            tracing::info!(room = %room.id, %peer, "the encoder came back: the stream goes on");
            metrics::counter!("hawker_streams_resumed_total").increment(1);
        } else if let Some(handoff) = moved {
            tracing::info!(room = %room.id, %peer, from = ?claim.previous_node, "the stream moved here from another node: it goes on");
            metrics::counter!("hawker_streams_resumed_total").increment(1);
            self.announce_move(&room.id, epoch).await;
            let recording = match handoff.recording {
                Some(id) => self.0.recorder.resume(RecordingId::from_string(id)).await,
                None => None,
            };
            let recording = match recording {
                Some(r) => Some(r),
                None => self.0.recorder.start(&room.id, Timestamp::now()).await,
            };
            stream.lock().recording = recording;
            self.keep_origin(&stream);
        } else {
            tracing::info!(room = %room.id, %peer, "stream started");
            metrics::counter!("hawker_streams_started_total").increment(1);
            let started = Timestamp::now();
            stream.lock().recording = self.0.recorder.start(&room.id, started).await;
            self.keep_origin(&stream);
            self.set_live(&room.id, true).await;
            let live = RoomEvent::StreamLive(Playback::new(&room.id, Some(started)));
            self.0.bus.announce_room(&room.id, &live).await;
        }
        Ok(Publisher {
            media: self.clone(),
            stream,
            session,
            token,
        })
    }

    pub(crate) async fn set_live(&self, room: &RoomId, live: bool) {
        let store = &self.0.store;
        let Ok(Some(current)) = store.room(room).await else {
            return;
        };
        let change = if live {
            RoomChange::StreamStarted
        } else {
            RoomChange::StreamStopped
        };
        if let Ok(to) = current.status.apply(change)
            && to != current.status
            && let Err(e) = store.set_room_status(room, current.status, to).await
        {
            tracing::warn!(%room, error = %e, "could not record the stream's state on the room");
        }
    }

    /// Ends every stream (on shutdown), writing out what the recorder holds.
    pub async fn stop(&self) {
        let streams: Vec<_> = self.streams().values().cloned().collect();
        for stream in streams {
            if !stream.lock().ended {
                self.end(&stream).await;
            }
        }
        self.0.recorder.stop().await;
    }

    async fn end(&self, stream: &Arc<Stream>) {
        let epoch = stream.lock().epoch;
        if let Ok(false) = self.0.store.release_origin(&stream.room, epoch).await {
            // Another node took the stream and goes on with it.
            self.let_go(stream, true);
            return;
        }
        let (segments, recording) = {
            let mut state = stream.lock();
            if state.ended {
                return;
            }
            state.ended = true;
            state.hls.end();
            state.publisher = None;
            stream.feed_out(&mut state, Frame::End);
            (state.hls.take_completed(), state.recording.take())
        };
        let _ = stream.flv.send(Bytes::new());
        stream.changed.send_modify(|n| *n += 1);
        tracing::info!(room = %stream.room, "stream ended");
        self.set_live(&stream.room, false).await;
        let ended = RoomEvent::StreamEnded(Ended {
            ended_at: Some(Timestamp::now()),
        });
        self.0.bus.announce_room(&stream.room, &ended).await;
        // Closed after the room has left `live`: a complete recording means
        // the live it recorded is over.
        if let Some(recording) = recording {
            recording.write(segments);
            recording.finish();
        }
        self.drop_after_linger(stream);
    }

    /// An ended stream's playlist (with ENDLIST) stays for the linger.
    pub(crate) fn drop_after_linger(&self, stream: &Arc<Stream>) {
        let media = self.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            tokio::time::sleep(media.0.settings.linger).await;
            let mut streams = media.streams();
            if streams
                .get(&stream.room)
                .is_some_and(|s| Arc::ptr_eq(s, &stream))
            {
                streams.remove(&stream.room);
            }
        });
    }
}

/// What a new publisher took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takeover {
    /// A new stream.
    Started,
    /// A stream whose publisher was still connected (now cut off).
    Replaced,
    /// A stream waiting for its encoder to come back.
    Resumed,
}

/// One room's stream.
pub struct Stream {
    pub room: RoomId,
    /// Names this stream's media URIs (`/live/{room}/{id}/...`).
    pub id: String,
    state: Mutex<State>,
    /// Batches of encoded FLV tags for HTTP-FLV viewers; an empty one means the end.
    pub(crate) flv: broadcast::Sender<Bytes>,
    /// Bumped at every new part and at the end, for blocking playlist requests.
    pub(crate) changed: watch::Sender<u64>,
    /// What the edges pulling this stream get ([`crate::wire`]).
    pub(crate) feed: broadcast::Sender<Frame>,
}

pub(crate) struct State {
    /// The epoch of this node's origin lease on the room.
    pub(crate) epoch: i64,
    /// A copy of another node's stream ([`crate::edge`]).
    pub(crate) edge: bool,
    /// When a viewer last asked for something.
    pub(crate) last_read: Instant,
    pub(crate) publisher: Option<(u64, CancellationToken)>,
    /// The session whose encoder went away, while the stream waits for it to
    /// come back.
    pub(crate) departed: Option<u64>,
    pub(crate) ended: bool,
    pub(crate) metadata: Option<Bytes>,
    pub(crate) video_header: Option<Bytes>,
    pub(crate) audio_header: Option<Bytes>,
    pub(crate) video: Option<AvcConfig>,
    pub(crate) audio: Option<AacConfig>,
    /// The tags since the last keyframe (timestamp, the FLV tag encoded once),
    /// which every new viewer shares.
    pub(crate) gop: Vec<(u32, Bytes)>,
    pub(crate) gop_bytes: usize,
    /// Encoded tags not yet sent to HTTP-FLV viewers: audio waits for the next
    /// video frame, so viewers wake once per frame, not once per tag.
    pub(crate) flv_pending: BytesMut,
    /// How many of the GOP's last tags are in `flv_pending`.
    pub(crate) flv_pending_tags: usize,
    /// The timestamp of the last tag sent to HTTP-FLV viewers.
    pub(crate) flv_last: u32,
    /// A copy that started again from a checkpoint takes the tags since it
    /// anew: those up to this timestamp its viewers had already.
    pub(crate) flv_quiet_until: Option<u32>,
    pub(crate) gop_max_bytes: usize,
    pub(crate) hls: Hls,
    pub(crate) clock: Clock,
    stats: Counters,
    pub(crate) recording: Option<crate::record::Recording>,
    /// The stream as it stood just before the last sample that began a
    /// segment, and what it took in since: where an edge starts.
    checkpoint: Option<Checkpoint>,
    since: Vec<Frame>,
    since_bytes: usize,
}

/// A stream as an edge starts from it.
#[derive(Clone)]
pub(crate) struct Checkpoint {
    pub(crate) hls: Hls,
    pub(crate) metadata: Option<Bytes>,
    pub(crate) video_header: Option<Bytes>,
    pub(crate) audio_header: Option<Bytes>,
}

impl State {
    /// A changed sequence header (a new encoder's settings), sent to the
    /// HTTP-FLV viewers at once, after what is pending.
    pub(crate) fn send_header(
        &mut self,
        flv: &broadcast::Sender<Bytes>,
        kind: u8,
        ts: u32,
        body: &Bytes,
    ) {
        if flv.receiver_count() == 0 {
            return;
        }
        let mut batch = self.flv_pending.split();
        flv::write_tag(kind, ts, body, &mut batch);
        self.flv_pending_tags = 0;
        let _ = flv.send(batch.freeze());
    }
}

/// Keeps output timestamps increasing across publishers and encoder restarts.
#[derive(Default)]
pub(crate) struct Clock {
    offset: i64,
    last_in: Option<i64>,
    pub(crate) last_out: i64,
    rebase: bool,
    started: bool,
}

impl Clock {
    /// Goes on from another node's clock, which stood at `last_out`.
    pub(crate) fn continue_from(&mut self, last_out: i64) {
        self.last_out = last_out;
        self.started = true;
        self.rebase = true;
    }

    /// Tags more than this apart (forwards) or behind (backwards) are a jump.
    const FORWARD_JUMP_MS: i64 = 10_000;
    const BACKWARD_JUMP_MS: i64 = 1_000;

    fn map(&mut self, timestamp: u32) -> i64 {
        let input = i64::from(timestamp);
        let jumped = match self.last_in {
            None => false,
            Some(last) => {
                input - last > Self::FORWARD_JUMP_MS || last - input > Self::BACKWARD_JUMP_MS
            }
        };
        if self.rebase || jumped || self.last_in.is_none() {
            let next = if self.started { self.last_out + 40 } else { 0 };
            self.offset = next - input;
            self.rebase = false;
            self.last_in = None;
            self.started = true;
        }
        self.last_in = Some(self.last_in.map_or(input, |l| l.max(input)));
        let out = (input + self.offset).max(0);
        self.last_out = self.last_out.max(out);
        out
    }
}

#[derive(Default)]
struct Counters {
    started: Option<Instant>,
    window_start: Option<Instant>,
    window_bytes: u64,
    window_frames: u64,
    bitrate: u64,
    fps: f64,
    last_keyframe_ms: Option<i64>,
    keyframe_interval_ms: Option<i64>,
    publishers: u64,
}

/// What the studio shows about a stream, and `/metrics` exports.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStats {
    pub room: RoomId,
    pub live: bool,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frame_rate: f64,
    pub bitrate: u64,
    pub keyframe_interval_ms: Option<i64>,
    pub uptime_seconds: u64,
    pub publishers: u64,
    /// The encoder went away and the stream waits for it to come back.
    pub reconnecting: bool,
}

impl Stream {
    pub(crate) fn new(room: RoomId, id: String, settings: &Settings) -> Self {
        Self {
            room,
            id: id.clone(),
            state: Mutex::new(State {
                epoch: 0,
                edge: false,
                last_read: Instant::now(),
                publisher: None,
                departed: None,
                ended: false,
                metadata: None,
                video_header: None,
                audio_header: None,
                video: None,
                audio: None,
                gop: Vec::new(),
                gop_bytes: 0,
                flv_pending: BytesMut::new(),
                flv_pending_tags: 0,
                flv_last: 0,
                flv_quiet_until: None,
                gop_max_bytes: settings.gop_max_bytes,
                hls: Hls::new(settings.hls, format!("{id}/")),
                clock: Clock::default(),
                stats: Counters::default(),
                recording: None,
                checkpoint: None,
                since: Vec::new(),
                since_bytes: 0,
            }),
            flv: broadcast::channel(settings.flv_queue).0,
            changed: watch::channel(0).0,
            feed: broadcast::channel(FEED_QUEUE).0,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `session` the publisher, under the lease's `epoch`, and says
    /// what it took over.
    fn take_over(&self, session: u64, token: CancellationToken, epoch: i64) -> Takeover {
        let mut state = self.lock();
        state.epoch = epoch;
        let takeover = match state.publisher.replace((session, token)) {
            Some((_, old)) => {
                old.cancel();
                Takeover::Replaced
            }
            None if state.stats.publishers > 0 => Takeover::Resumed,
            None => Takeover::Started,
        };
        state.departed = None;
        state.clock.rebase = true;
        state.stats.publishers += 1;
        state.stats.started.get_or_insert_with(Instant::now);
        takeover
    }

    pub fn stats(&self) -> StreamStats {
        let state = self.lock();
        StreamStats {
            room: self.room.clone(),
            live: !state.ended,
            video_codec: state.video.as_ref().map(AvcConfig::codec),
            audio_codec: state.audio.as_ref().map(AacConfig::codec),
            width: state.video.as_ref().map(|v| v.width),
            height: state.video.as_ref().map(|v| v.height),
            frame_rate: state.stats.fps,
            bitrate: state.stats.bitrate,
            keyframe_interval_ms: state.stats.keyframe_interval_ms,
            uptime_seconds: state
                .stats
                .started
                .map(|s| s.elapsed().as_secs())
                .unwrap_or(0),
            reconnecting: state.departed.is_some(),
            publishers: state.stats.publishers,
        }
    }

    /// A tag at its output timestamp `out_ts`, seen at `wall_ms`: parsed,
    /// muxed, kept for new viewers and sent to those watching, and to the
    /// edges. The origin and its edges all take tags in through here, so
    /// they all make the same parts and segments.
    pub(crate) fn take_in(
        &self,
        state: &mut State,
        kind: u8,
        out_ts: u32,
        body: Bytes,
        wall_ms: i64,
    ) -> Result<(), BadTag> {
        let ts = i64::from(out_ts);
        self.checkpoint_before(state, kind, ts, &body);
        state.stats.window_bytes += body.len() as u64;
        let mut keyframe = false;
        let mut media = false;
        if kind == flv::TAG_VIDEO {
            match flv::parse_video(&body)? {
                VideoTag::Config(config) => {
                    if state.video.as_ref().is_some_and(|old| *old != config) {
                        state.send_header(&self.flv, kind, out_ts, &body);
                    }
                    state.video_header = Some(body.clone());
                    state.hls.set_video(config.clone());
                    state.video = Some(config);
                }
                VideoTag::Frame {
                    keyframe: key,
                    cts,
                    data,
                } => {
                    if state.video.is_none() {
                        return Ok(());
                    }
                    keyframe = key;
                    media = true;
                    state.stats.window_frames += 1;
                    if key {
                        if let Some(last) = state.stats.last_keyframe_ms {
                            state.stats.keyframe_interval_ms = Some(ts - last);
                        }
                        state.stats.last_keyframe_ms = Some(ts);
                    }
                    state.hls.push_video(ts, cts, key, data, wall_ms);
                }
                VideoTag::EndOfSequence => {}
                VideoTag::Unsupported(codec) => {
                    metrics::counter!("hawker_media_unsupported_tags_total").increment(1);
                    tracing::debug!(room = %self.room, codec, "unsupported video codec");
                    return Ok(());
                }
            }
        } else {
            match flv::parse_audio(&body)? {
                AudioTag::Config(config) => {
                    if state.audio.as_ref().is_some_and(|old| *old != config) {
                        state.send_header(&self.flv, kind, out_ts, &body);
                    }
                    state.audio_header = Some(body.clone());
                    state.hls.set_audio(config.clone());
                    state.audio = Some(config);
                }
                AudioTag::Frame(data) => {
                    if state.audio.is_none() {
                        return Ok(());
                    }
                    media = true;
                    state.hls.push_audio(ts, data, wall_ms);
                }
                AudioTag::Unsupported(format) => {
                    metrics::counter!("hawker_media_unsupported_tags_total").increment(1);
                    tracing::debug!(room = %self.room, format, "unsupported audio format");
                    return Ok(());
                }
            }
        }
        if media {
            if keyframe {
                state.gop.clear();
                state.gop_bytes = 0;
            }
            if state.gop_bytes + body.len() <= state.gop_max_bytes {
                state.gop_bytes += body.len();
                let mut tag = BytesMut::with_capacity(body.len() + 15);
                flv::write_tag(kind, out_ts, &body, &mut tag);
                state.gop.push((out_ts, tag.freeze()));
            } else {
                // Too long a GOP to keep: new viewers wait for the next keyframe.
                state.gop.clear();
                state.gop_bytes = state.gop_max_bytes;
            }
            let seen = state.flv_quiet_until.is_some_and(|q| out_ts <= q);
            if !seen {
                state.flv_quiet_until = None;
            }
            if self.flv.receiver_count() > 0 && !seen {
                state.flv_last = out_ts;
                flv::write_tag(kind, out_ts, &body, &mut state.flv_pending);
                state.flv_pending_tags += 1;
                if kind == flv::TAG_VIDEO || state.video.is_none() {
                    let batch = state.flv_pending.split().freeze();
                    state.flv_pending_tags = 0;
                    let _ = self.flv.send(batch);
                }
            } else {
                state.flv_pending.clear();
                state.flv_pending_tags = 0;
            }
        }
        update_rates(&mut state.stats);
        self.feed_out(
            state,
            crate::wire::Frame::Tag {
                kind,
                timestamp: out_ts,
                wall_ms,
                body,
            },
        );
        Ok(())
    }

    /// Before a tag that begins a segment, the stream as it stands is the
    /// edges' new starting point.
    fn checkpoint_before(&self, state: &mut State, kind: u8, ts: i64, body: &Bytes) {
        let codec = body.first().copied().unwrap_or(0);
        let frame = body.get(1) == Some(&1);
        let starts = match kind {
            flv::TAG_VIDEO if frame && codec & 0x0f == 7 => {
                state.hls.starts_segment(true, ts, codec >> 4 == 1)
            }
            flv::TAG_AUDIO if frame && codec >> 4 == 10 => {
                state.hls.starts_segment(false, ts, false)
            }
            _ => false,
        };
        if starts {
            state.checkpoint = Some(Checkpoint {
                hls: state.hls.clone(),
                metadata: state.metadata.clone(),
                video_header: state.video_header.clone(),
                audio_header: state.audio_header.clone(),
            });
            state.since.clear();
            state.since_bytes = 0;
        }
    }

    /// What the stream took in, for the edges: sent to those pulling it, and
    /// kept since the checkpoint for those that come.
    pub(crate) fn feed_out(&self, state: &mut State, frame: Frame) {
        if state.checkpoint.is_some() {
            state.since_bytes += match &frame {
                Frame::Tag { body, .. } | Frame::Metadata(body) => body.len(),
                _ => 0,
            };
            if state.since_bytes > state.gop_max_bytes {
                // Too long since a segment began: edges wait for the next.
                state.checkpoint = None;
                state.since.clear();
            } else {
                state.since.push(frame.clone());
            }
        }
        if self.feed.receiver_count() > 0 {
            let _ = self.feed.send(frame);
        }
    }

    /// What an edge that starts pulling now gets first (the checkpoint, then
    /// what came since, [`crate::wire`]'s frames encoded) and what comes
    /// after; `None` until the stream has begun a segment, or once it ended.
    pub fn join_feed(&self) -> Option<(Bytes, broadcast::Receiver<Frame>)> {
        let (checkpoint, since, feed) = {
            let state = self.lock();
            if state.ended {
                return None;
            }
            let checkpoint = state.checkpoint.clone()?;
            (checkpoint, state.since.clone(), self.feed.subscribe())
        };
        let mut out = BytesMut::new();
        Frame::Start(checkpoint.encode(&self.id)).encode(&mut out);
        for frame in &since {
            frame.encode(&mut out);
        }
        Some((out.freeze(), feed))
    }

    /// What an HTTP-FLV viewer gets first, in pieces (header, metadata and
    /// sequence headers; then the current GOP's tags, the same bytes for every
    /// viewer), and the tags after it.
    pub fn watch_flv(&self) -> Option<(Vec<Bytes>, broadcast::Receiver<Bytes>)> {
        let mut state = self.lock();
        state.last_read = Instant::now();
        if state.ended {
            return None;
        }
        let mut start = BytesMut::new();
        start.extend_from_slice(&flv::header(state.audio.is_some(), state.video.is_some()));
        let first_ts = state.gop.first().map(|t| t.0).unwrap_or(0);
        if let Some(metadata) = &state.metadata {
            flv::write_tag(flv::TAG_SCRIPT, 0, metadata, &mut start);
        }
        if let Some(h) = &state.video_header {
            flv::write_tag(flv::TAG_VIDEO, first_ts, h, &mut start);
        }
        if let Some(h) = &state.audio_header {
            flv::write_tag(flv::TAG_AUDIO, first_ts, h, &mut start);
        }
        // The pending tags reach this viewer with the next batch.
        let sent = state.gop.len() - state.flv_pending_tags.min(state.gop.len());
        let mut pieces = Vec::with_capacity(sent + 1);
        pieces.push(start.freeze());
        pieces.extend(state.gop[..sent].iter().map(|(_, tag)| tag.clone()));
        Some((pieces, self.flv.subscribe()))
    }

    /// The playlist once it holds `want` (`_HLS_msn`, `_HLS_part`), or after
    /// `wait` whatever it holds; `None` if nothing is playable yet.
    pub async fn playlist(
        &self,
        want: Option<(u64, Option<usize>)>,
        wait: Duration,
    ) -> Result<Option<String>, TooFar> {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let mut state = self.lock();
                state.last_read = Instant::now();
                let ready = match want {
                    None => true,
                    Some((msn, _)) if msn > state.hls.upcoming_msn() + 1 => return Err(TooFar),
                    Some((msn, part)) => state.hls.has(msn, part),
                };
                if ready || tokio::time::Instant::now() >= deadline {
                    return Ok(state.hls.is_playable().then(|| state.hls.playlist()));
                }
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return Ok(None) },
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// A part, waiting up to `wait` if it is the next one to be made (the
    /// playlist's preload hint).
    pub async fn part(&self, msn: u64, index: usize, wait: Duration) -> Option<Bytes> {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let mut state = self.lock();
                state.last_read = Instant::now();
                if let Some(part) = state.hls.part(msn, index) {
                    return Some(part);
                }
                let upcoming = state.hls.next_part() == Some((msn, index))
                    || state
                        .hls
                        .next_part()
                        .is_some_and(|(m, _)| m + 1 == msn && index == 0);
                if !upcoming || state.ended || tokio::time::Instant::now() >= deadline {
                    return None;
                }
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return None },
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    pub fn segment(&self, msn: u64) -> Option<Bytes> {
        let mut state = self.lock();
        state.last_read = Instant::now();
        state.hls.segment(msn)
    }

    pub fn init(&self, generation: u32) -> Option<Bytes> {
        let mut state = self.lock();
        state.last_read = Instant::now();
        state.hls.init(generation)
    }
}

/// `_HLS_msn` names a segment more than two beyond the playlist's last.
#[derive(Debug)]
pub struct TooFar;

/// A publishing session's handle on its room's stream.
pub struct Publisher {
    media: Media,
    stream: Arc<Stream>,
    session: u64,
    token: CancellationToken,
}

/// What the ingest does with a bad tag: log it and go on, or drop the session.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BadTag(#[from] flv::FlvError);

impl Publisher {
    /// Cancelled when another session takes the stream over.
    pub fn replaced(&self) -> &CancellationToken {
        &self.token
    }

    pub fn room(&self) -> &RoomId {
        &self.stream.room
    }

    /// Whether this session is still its stream's publisher: its token was
    /// cancelled to cut it ([`Media::cut`]) rather than because another
    /// session or node took over.
    pub fn holds_stream(&self) -> bool {
        let state = self.stream.lock();
        state.publisher.as_ref().map(|p| p.0) == Some(self.session) && !state.ended
    }

    pub fn metadata(&self, body: Bytes) {
        let mut state = self.stream.lock();
        if state.publisher.as_ref().map(|p| p.0) == Some(self.session) {
            state.metadata = Some(body.clone());
            self.stream.feed_out(&mut state, Frame::Metadata(body));
        }
    }

    /// One audio or video tag from the encoder.
    pub fn push(&self, kind: u8, timestamp: u32, body: Bytes) -> Result<(), BadTag> {
        let wall_ms = Timestamp::now().as_millis();
        let (segments, recording, new_part) = {
            let mut state = self.stream.lock();
            if state.publisher.as_ref().map(|p| p.0) != Some(self.session) || state.ended {
                return Ok(());
            }
            let parts_before = state.hls.next_part();
            let ts = state.clock.map(timestamp);
            let out_ts = u32::try_from(ts).unwrap_or(u32::MAX);
            self.stream
                .take_in(&mut state, kind, out_ts, body, wall_ms)?;
            let new_part = state.hls.next_part() != parts_before;
            let segments = state.hls.take_completed();
            let recording = if segments.is_empty() {
                None
            } else {
                state.recording.clone()
            };
            (segments, recording, new_part)
        };
        if new_part {
            self.stream.changed.send_modify(|n| *n += 1);
        }
        if let Some(recording) = recording {
            recording.write(segments);
        }
        Ok(())
    }

    /// The encoder stopped or went away. Unless another session took the
    /// stream over, it waits for the reconnect grace, and ends if nobody
    /// publishes by then.
    pub async fn finish(self) {
        let grace = self.media.0.settings.reconnect_grace;
        // What the pause closed, for the recording; `None`: end at once.
        let paused = {
            let mut state = self.stream.lock();
            if state.publisher.as_ref().map(|p| p.0) != Some(self.session) || state.ended {
                return;
            }
            (!grace.is_zero()).then(|| {
                state.publisher = None;
                state.departed = Some(self.session);
                state.hls.pause();
                self.stream.feed_out(&mut state, Frame::Pause);
                (state.hls.take_completed(), state.recording.clone())
            })
        };
        let Some((segments, recording)) = paused else {
            self.media.end(&self.stream).await;
            return;
        };
        self.stream.changed.send_modify(|n| *n += 1);
        if let Some(recording) = recording {
            recording.write(segments);
        }
        tracing::info!(room = %self.stream.room, grace_ms = grace.as_millis() as u64, "the encoder went away; waiting for it to come back");
        let (media, stream, session) = (self.media, self.stream, self.session);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let gone = stream.lock().departed == Some(session);
            if gone {
                media.end(&stream).await;
            }
        });
    }
}

fn update_rates(stats: &mut Counters) {
    let now = Instant::now();
    let start = *stats.window_start.get_or_insert(now);
    let elapsed = now.duration_since(start);
    if elapsed >= Duration::from_secs(2) {
        let secs = elapsed.as_secs_f64();
        stats.bitrate = (stats.window_bytes as f64 * 8.0 / secs) as u64;
        stats.fps = (stats.window_frames as f64 / secs * 10.0).round() / 10.0;
        stats.window_bytes = 0;
        stats.window_frames = 0;
        stats.window_start = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_keeps_time_moving_forward_across_restarts() {
        let mut clock = Clock::default();
        assert_eq!(clock.map(1000), 0);
        assert_eq!(clock.map(1040), 40);
        // The encoder restarts at zero.
        assert_eq!(clock.map(0), 80);
        assert_eq!(clock.map(40), 120);
        // A new publisher starts wherever it likes.
        clock.rebase = true;
        assert_eq!(clock.map(90_000), 160);
        // A leap forward of a minute is closed up too.
        assert_eq!(clock.map(150_000), 200);
        // Audio a little behind video is not a jump.
        assert_eq!(clock.map(149_990), 190);
    }
}
