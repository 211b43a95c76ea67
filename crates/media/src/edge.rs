//! A copy of another node's stream, made from its feed ([`crate::wire`]):
//! this node is an edge of the room, as in SRS's edge cluster. One copy per
//! room on a node, however many viewers it has: the first viewer's request
//! makes it ([`Media::edge`]) and whoever made it pulls the feed into its
//! [`Mirror`]; every request finds it in the node's streams, as it would the
//! stream of an encoder connected here, and blocking playlist and part
//! requests wake as parts arrive. The copy applies the origin's tags to the
//! origin's checkpoint, so its parts, segments and playlists are the origin's,
//! byte for byte, under the same names.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use domain::ids::RoomId;

use crate::flv::{self, AudioTag, VideoTag};
use crate::hls::Hls;
use crate::stream::{Checkpoint, Media, Stream};
use crate::wire::{BadFrame, Frame, Reader, Writer};

impl Checkpoint {
    /// The stream `id` as it stood: a [`Frame::Start`]'s payload.
    pub(crate) fn encode(&self, id: &str) -> Bytes {
        let mut w = Writer::default();
        w.bytes(id.as_bytes());
        w.opt_bytes(self.metadata.as_ref());
        w.opt_bytes(self.video_header.as_ref());
        w.opt_bytes(self.audio_header.as_ref());
        self.hls.encode(&mut w);
        w.finish()
    }

    fn decode(payload: Bytes) -> Option<(String, Self)> {
        let mut r = Reader::new(payload);
        let id = String::from_utf8(r.bytes()?.to_vec()).ok()?;
        let metadata = r.opt_bytes()?;
        let video_header = r.opt_bytes()?;
        let audio_header = r.opt_bytes()?;
        let hls = Hls::decode(&mut r)?;
        Some((
            id,
            Self {
                hls,
                metadata,
                video_header,
                audio_header,
            },
        ))
    }
}

/// Why a feed cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Bad(#[from] BadFrame),
    #[error("the feed does not start with the stream's checkpoint")]
    NoStart,
    #[error("the feed is of another stream ({0})")]
    OtherStream(String),
    #[error("a tag the copy cannot take: {0}")]
    Tag(#[from] crate::stream::BadTag),
}

impl Media {
    /// The room's stream `id` on this node as a copy of the origin's: the
    /// one already there, or a new one, with `true`: the caller pulls its
    /// feed into a [`Mirror`]. A copy of an older stream is ended first.
    pub fn edge(&self, room: &RoomId, id: &str) -> (Arc<Stream>, bool) {
        let (stream, older) = {
            let mut streams = self.streams();
            match streams.get(room) {
                Some(s) if s.id == id && !s.lock().ended => return (s.clone(), false),
                _ => {}
            }
            let stream = Arc::new(Stream::new(room.clone(), id.to_owned(), self.settings()));
            stream.lock().edge = true;
            let older = streams.insert(room.clone(), stream.clone());
            (stream, older)
        };
        if let Some(older) = older.filter(|s| s.lock().edge) {
            self.end_copy(&older);
        }
        metrics::counter!("hawker_edge_pulls_total").increment(1);
        (stream, true)
    }

    /// The copy is over (the origin ended the stream, or went away): its
    /// playlist ends, its HTTP-FLV viewers' bodies close, and it is dropped
    /// after the linger.
    pub fn end_copy(&self, stream: &Arc<Stream>) {
        {
            let mut state = stream.lock();
            if state.ended {
                return;
            }
            state.ended = true;
            state.hls.end();
        }
        let _ = stream.flv.send(Bytes::new());
        stream.changed.send_modify(|n| *n += 1);
        self.drop_after_linger(stream);
    }
}

/// Applies a feed, as it arrives, to its copy of the stream.
pub struct Mirror {
    stream: Arc<Stream>,
    input: BytesMut,
    started: bool,
    /// The timestamp of the last tag taken.
    last_timestamp: i64,
}

impl Mirror {
    pub fn new(stream: Arc<Stream>) -> Self {
        Self {
            stream,
            input: BytesMut::new(),
            started: false,
            last_timestamp: 0,
        }
    }

    /// Takes a chunk of the feed; `Ok(true)` once the stream ended.
    pub fn take(&mut self, chunk: &[u8]) -> Result<bool, FeedError> {
        self.input.extend_from_slice(chunk);
        while let Some(frame) = Frame::decode(&mut self.input)? {
            if self.apply(frame)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A new connection to the origin (or to the node the stream moved to):
    /// its feed starts again from a checkpoint.
    pub fn reconnect(&mut self) {
        self.input.clear();
        self.started = false;
    }

    fn apply(&mut self, frame: Frame) -> Result<bool, FeedError> {
        let stream = &self.stream;
        let parts_before;
        {
            let mut state = stream.lock();
            parts_before = state.hls.next_part();
            match frame {
                Frame::Start(payload) => {
                    let (id, checkpoint) = Checkpoint::decode(payload)
                        .ok_or(BadFrame("a checkpoint that does not parse"))?;
                    if id != stream.id {
                        return Err(FeedError::OtherStream(id));
                    }
                    state.restore(&stream.flv, checkpoint);
                    self.started = true;
                }
                _ if !self.started => return Err(FeedError::NoStart),
                Frame::Tag {
                    kind,
                    timestamp,
                    wall_ms,
                    body,
                } => {
                    self.last_timestamp = self.last_timestamp.max(i64::from(timestamp));
                    stream.take_in(&mut state, kind, timestamp, body, wall_ms)?;
                }
                Frame::Metadata(body) => state.metadata = Some(body),
                Frame::Pause => state.hls.pause(),
                Frame::End => {
                    drop(state);
                    return Ok(true);
                }
            }
            // Nothing is recorded here: the origin records.
            state.hls.take_completed();
        }
        if stream.lock().hls.next_part() != parts_before {
            stream.changed.send_modify(|n| *n += 1);
        }
        Ok(false)
    }

    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// The timestamp of the last tag the copy took.
    pub fn last_timestamp(&self) -> i64 {
        self.last_timestamp
    }

    /// Whether the feed of the last connection brought its checkpoint.
    pub fn took_media(&self) -> bool {
        self.started
    }
}

impl crate::stream::State {
    /// The copy takes the origin's checkpoint: its muxer whole, and what
    /// HTTP-FLV viewers need (a changed sequence header goes to those
    /// already watching).
    fn restore(&mut self, flv: &tokio::sync::broadcast::Sender<Bytes>, checkpoint: Checkpoint) {
        let at = self.gop.last().map_or(0, |t| t.0);
        if let Some(header) = checkpoint.video_header {
            if let Ok(VideoTag::Config(c)) = flv::parse_video(&header) {
                if self.video.as_ref().is_some_and(|old| *old != c) {
                    self.send_header(flv, flv::TAG_VIDEO, at, &header);
                }
                self.video = Some(c);
            }
            self.video_header = Some(header);
        }
        if let Some(header) = checkpoint.audio_header {
            if let Ok(AudioTag::Config(c)) = flv::parse_audio(&header) {
                if self.audio.as_ref().is_some_and(|old| *old != c) {
                    self.send_header(flv, flv::TAG_AUDIO, at, &header);
                }
                self.audio = Some(c);
            }
            self.audio_header = Some(header);
        }
        self.metadata = checkpoint.metadata;
        self.hls = checkpoint.hls;
        self.gop.clear();
        self.gop_bytes = 0;
        self.flv_pending.clear();
        self.flv_pending_tags = 0;
        self.flv_quiet_until = Some(self.flv_last);
        self.last_read = Instant::now();
    }
}

/// How long a copy nobody asked for is kept pulling.
pub const EDGE_IDLE: Duration = Duration::from_secs(10);

impl Stream {
    /// Whether this is a copy of another node's stream.
    pub fn is_copy(&self) -> bool {
        self.lock().edge
    }

    pub fn is_over(&self) -> bool {
        self.lock().ended
    }

    /// Waits up to `wait` for the stream to have something to play (or to
    /// end).
    pub async fn until_started(&self, wait: Duration) {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let state = self.lock();
                if state.ended || state.hls.is_playable() {
                    return;
                }
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Whether this copy has had no viewer for [`EDGE_IDLE`].
    pub fn unwatched(&self) -> bool {
        self.flv.receiver_count() == 0 && self.lock().last_read.elapsed() >= EDGE_IDLE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Settings;

    fn origin_and_copy() -> (Arc<Stream>, Arc<Stream>) {
        let settings = Settings::default();
        let room = RoomId::from_string("room_1".to_owned());
        (
            Arc::new(Stream::new(room.clone(), "s1".to_owned(), &settings)),
            Arc::new(Stream::new(room, "s1".to_owned(), &settings)),
        )
    }

    /// Frames `from..to` of a 30 fps stream with a keyframe a second, and
    /// AAC audio, as tags.
    fn tags(from: u32, to: u32) -> Vec<(u8, u32, Bytes)> {
        let mut out = Vec::new();
        if from == 0 {
            let mut config = vec![0x17, 0, 0, 0, 0];
            config.extend_from_slice(&crate::flv::tests::record());
            out.push((flv::TAG_VIDEO, 0, Bytes::from(config)));
            out.push((
                flv::TAG_AUDIO,
                0,
                Bytes::from_static(&[0xaf, 0, 0x12, 0x10]),
            ));
        }
        for n in from..to {
            let ts = n * 1000 / 30;
            let kind = if n % 30 == 0 { 0x17 } else { 0x27 };
            out.push((
                flv::TAG_AUDIO,
                ts,
                Bytes::from_static(&[0xaf, 1, 0x21, 0x10]),
            ));
            out.push((
                flv::TAG_VIDEO,
                ts,
                Bytes::from(vec![kind, 1, 0, 0, 0x42, 0, 0, 0, 1, 5]),
            ));
        }
        out
    }

    fn take(stream: &Stream, tags: &[(u8, u32, Bytes)]) {
        let mut state = stream.lock();
        for (kind, ts, body) in tags {
            stream
                .take_in(
                    &mut state,
                    *kind,
                    *ts,
                    body.clone(),
                    1_700_000_000_000 + i64::from(*ts),
                )
                .expect("a valid tag");
            state.hls.take_completed();
        }
    }

    #[test]
    fn a_copy_joined_mid_stream_makes_what_the_origin_makes() {
        let (origin, copy) = origin_and_copy();
        take(&origin, &tags(0, 100));
        assert!(origin.join_feed().is_some(), "a segment began");
        let (start, mut feed) = origin.join_feed().expect("a checkpoint");
        let mut mirror = Mirror::new(copy.clone());
        // The join arrives in pieces, as a TCP stream would bring it.
        for piece in start.chunks(777) {
            assert!(!mirror.take(piece).expect("a valid feed"));
        }
        take(&origin, &tags(100, 200));
        let mut wire = BytesMut::new();
        while let Ok(frame) = feed.try_recv() {
            frame.encode(&mut wire);
        }
        assert!(!mirror.take(&wire).expect("a valid feed"));
        let (o, c) = (origin.lock(), copy.lock());
        assert_eq!(c.hls.playlist(), o.hls.playlist());
        let (msn, parts) = o.hls.next_part().expect("an open segment");
        for i in 0..parts {
            assert_eq!(c.hls.part(msn, i), o.hls.part(msn, i), "part {msn}.{i}");
        }
        for m in msn.saturating_sub(3)..msn {
            assert_eq!(c.hls.segment(m), o.hls.segment(m), "segment {m}");
        }
        // HTTP-FLV viewers of the copy get the same start as the origin's.
        drop((o, c));
        assert_eq!(
            copy.watch_flv().map(|w| w.0),
            origin.watch_flv().map(|w| w.0)
        );
    }

    #[test]
    fn a_feed_of_another_stream_or_without_its_start_is_refused() {
        let (origin, _) = origin_and_copy();
        take(&origin, &tags(0, 40));
        let (start, _) = origin.join_feed().expect("a checkpoint");
        let other = Arc::new(Stream::new(
            RoomId::from_string("room_1".to_owned()),
            "s2".to_owned(),
            &Settings::default(),
        ));
        assert!(matches!(
            Mirror::new(other).take(&start),
            Err(FeedError::OtherStream(_))
        ));
        let mut tag = BytesMut::new();
        Frame::Pause.encode(&mut tag);
        let (_, copy) = origin_and_copy();
        assert!(matches!(
            Mirror::new(copy).take(&tag),
            Err(FeedError::NoStart)
        ));
    }
}
