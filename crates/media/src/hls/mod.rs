//! Low-Latency HLS: samples are cut into partial segments of about
//! [`Settings::part_target`] and into segments at keyframes, and the live
//! playlist lists them. Pure: no clock but the one given, no I/O.
//!
//! Segments start at keyframes, so a part is `INDEPENDENT` exactly when it
//! starts a segment or happens to start with a keyframe. A part is closed when
//! the next video frame would take it past the part target, so no part is longer
//! than the target (unless the encoder leaves a gap of more than a frame).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::flv::{AacConfig, AvcConfig};
use crate::fmp4::{self, AUDIO_TRACK, Run, Sample, VIDEO_TIMESCALE, VIDEO_TRACK};

mod checkpoint;

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The longest a part may be, in ms (PART-TARGET).
    pub part_target_ms: i64,
    /// A keyframe at least this long after a segment's start starts the next.
    pub segment_min_ms: i64,
    /// Complete segments listed in the live playlist.
    pub window: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            part_target_ms: 200,
            segment_min_ms: 1000,
            window: 6,
        }
    }
}

/// Segments whose parts stay listed (and fetchable), counting from the newest.
const PARTS_KEPT: usize = 3;
/// Audio frames held while no video frame comes to cut parts with.
const AUDIO_HELD: usize = 256;

#[derive(Debug, Clone)]
pub struct Part {
    pub data: Bytes,
    pub duration_ms: i64,
    pub independent: bool,
}

/// A complete segment: what a plain HLS client fetches and the recorder keeps.
#[derive(Debug)]
pub struct Segment {
    pub msn: u64,
    pub data: Bytes,
    pub duration_ms: i64,
    /// Media time of its first sample, ms.
    pub start_ms: i64,
    /// Wall-clock time of its first sample, ms since the epoch.
    pub wall_ms: i64,
    /// The init segment generation it needs.
    pub generation: u32,
    /// Its configuration differs from the previous segment's.
    pub discontinuity: bool,
    /// The init segment of its generation.
    pub init: Bytes,
    parts: Vec<Part>,
}

/// Where a stream's playlist stands: the next segment's media sequence
/// number, its init segment generation and the discontinuity sequence of its
/// newest segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub next_msn: u64,
    pub generation: u32,
    pub discontinuity_sequence: u64,
}

#[derive(Clone)]
struct Open {
    msn: u64,
    start_ms: i64,
    wall_ms: i64,
    discontinuity: bool,
    parts: Vec<Part>,
    part_start_ms: i64,
}

#[derive(Clone)]
struct VideoFrame {
    dts_ms: i64,
    cts_ms: i32,
    keyframe: bool,
    data: Bytes,
}

#[derive(Clone)]
pub struct Hls {
    settings: Settings,
    /// Put before every media URI of the playlist (a stream's own directory,
    /// so that a new stream in the room never reuses a cached URI).
    prefix: String,
    video: Option<AvcConfig>,
    audio: Option<AacConfig>,
    init: Option<Bytes>,
    generation: u32,
    init_used: bool,
    discontinuity_next: bool,
    segments: VecDeque<Arc<Segment>>,
    completed: Vec<Arc<Segment>>,
    open: Option<Open>,
    next_msn: u64,
    discontinuities_dropped: u64,
    pending_video: Option<VideoFrame>,
    video_ready: Vec<Sample>,
    video_base: u64,
    last_gap_ms: i64,
    audio_ready: VecDeque<(i64, u64, Sample)>,
    audio_next: Option<u64>,
    fragments: u32,
    /// Wall clock minus media time, fixed at the first sample.
    wall_offset_ms: Option<i64>,
    ended: bool,
}

impl Hls {
    pub fn new(settings: Settings, prefix: String) -> Self {
        Self {
            settings,
            prefix,
            video: None,
            audio: None,
            init: None,
            generation: 0,
            init_used: false,
            discontinuity_next: false,
            segments: VecDeque::new(),
            completed: Vec::new(),
            open: None,
            next_msn: 0,
            discontinuities_dropped: 0,
            pending_video: None,
            video_ready: Vec::new(),
            video_base: 0,
            last_gap_ms: 33,
            audio_ready: VecDeque::new(),
            audio_next: None,
            fragments: 0,
            wall_offset_ms: None,
            ended: false,
        }
    }

    /// A new video configuration; a different one ends the open segment and
    /// starts a new init segment generation.
    pub fn set_video(&mut self, config: AvcConfig) {
        if self.video.as_ref() != Some(&config) {
            self.restart();
            self.video = Some(config);
            self.new_init();
        }
    }

    pub fn set_audio(&mut self, config: AacConfig) {
        if self.audio.as_ref() != Some(&config) {
            self.restart();
            self.audio = Some(config);
            self.new_init();
        }
    }

    fn new_init(&mut self) {
        // A configuration that no segment used yet is replaced in place.
        if std::mem::take(&mut self.init_used) {
            self.generation += 1;
            self.discontinuity_next = true;
        }
        self.init = Some(fmp4::init_segment(self.video.as_ref(), self.audio.as_ref()));
    }

    /// Closes what is open, as at the end of a stream, without ending it.
    fn restart(&mut self) {
        if let Some(frame) = self.pending_video.take() {
            let end = frame.dts_ms + self.last_gap_ms;
            self.ready_video(frame, self.last_gap_ms);
            self.close_part(end);
        } else if let Some(open) = &self.open {
            let end = self
                .audio_ready
                .back()
                .map(|(dts, _, _)| *dts + 23)
                .unwrap_or(open.part_start_ms);
            self.close_part(end);
        }
        self.close_segment();
        self.audio_ready.clear();
        self.audio_next = None;
    }

    /// The encoder went away and may come back: what is open becomes a
    /// segment, and the next one starts a new init segment generation after a
    /// discontinuity (a returning encoder's settings need not be the same).
    /// The media sequence goes on; the wall clock is taken again from the
    /// first sample after.
    pub fn pause(&mut self) {
        self.restart();
        if std::mem::take(&mut self.init_used) {
            self.generation += 1;
        }
        self.discontinuity_next = true;
        self.wall_offset_ms = None;
    }

    /// Whether a frame (a video frame, or else an audio frame) at `dts_ms`
    /// would begin a segment.
    pub fn starts_segment(&self, video: bool, dts_ms: i64, keyframe: bool) -> bool {
        let due = self
            .open
            .as_ref()
            .is_none_or(|o| dts_ms - o.start_ms >= self.settings.segment_min_ms);
        let cuts = if video {
            self.video.is_some() && keyframe
        } else {
            self.video.is_none() && self.audio.is_some()
        };
        !self.ended && cuts && due
    }

    /// The stream is over: what is open becomes the last segment.
    pub fn end(&mut self) {
        self.restart();
        self.ended = true;
    }

    /// A video frame at `dts_ms` (media time, increasing), seen at `wall_ms`.
    pub fn push_video(
        &mut self,
        dts_ms: i64,
        cts_ms: i32,
        keyframe: bool,
        data: Bytes,
        wall_ms: i64,
    ) {
        if self.video.is_none() || self.ended {
            return;
        }
        let frame = VideoFrame {
            dts_ms,
            cts_ms,
            keyframe,
            data,
        };
        let Some(previous) = self.pending_video.take() else {
            if self.open.is_none() {
                if !keyframe {
                    return;
                }
                self.wall_offset_ms.get_or_insert(wall_ms - dts_ms);
                self.audio_ready.retain(|(dts, _, _)| *dts >= dts_ms);
                self.open_segment(dts_ms);
            }
            self.pending_video = Some(frame);
            return;
        };
        let gap = (dts_ms - previous.dts_ms).max(1);
        self.ready_video(previous, gap);
        self.last_gap_ms = gap;
        let (segment_start, part_start) = match &self.open {
            Some(open) => (open.start_ms, open.part_start_ms),
            None => (dts_ms, dts_ms),
        };
        if keyframe && dts_ms - segment_start >= self.settings.segment_min_ms {
            self.close_part(dts_ms);
            self.close_segment();
            self.open_segment(dts_ms);
        } else if dts_ms - part_start + gap > self.settings.part_target_ms {
            self.close_part(dts_ms);
        }
        self.pending_video = Some(frame);
    }

    /// An AAC frame at `dts_ms`.
    pub fn push_audio(&mut self, dts_ms: i64, data: Bytes, wall_ms: i64) {
        let Some(config) = &self.audio else {
            return;
        };
        if self.ended {
            return;
        }
        let rate = u64::from(config.sample_rate);
        let stamped = u64::try_from(dts_ms.max(0)).unwrap_or(0) * rate / 1000;
        // Keep the audio timeline sample-exact unless the stamps drift off it.
        let tick = match self.audio_next {
            Some(next) if next.abs_diff(stamped) < rate / 10 => next,
            _ => stamped,
        };
        self.audio_next = Some(tick + 1024);
        self.audio_ready.push_back((
            dts_ms,
            tick,
            Sample {
                duration: 1024,
                cts: 0,
                keyframe: true,
                data,
            },
        ));
        if self.video.is_none() {
            // Audio alone: audio frames cut the parts and segments.
            if self.open.is_none() {
                self.wall_offset_ms.get_or_insert(wall_ms - dts_ms);
                self.open_segment(dts_ms);
            }
            let (segment_start, part_start) = self
                .open
                .as_ref()
                .map(|o| (o.start_ms, o.part_start_ms))
                .unwrap_or((dts_ms, dts_ms));
            let frame_ms = (1024 * 1000 / rate.max(1)) as i64;
            if dts_ms - segment_start >= self.settings.segment_min_ms {
                self.close_part(dts_ms);
                self.close_segment();
                self.open_segment(dts_ms);
            } else if dts_ms - part_start + frame_ms > self.settings.part_target_ms {
                self.close_part(dts_ms);
            }
        } else if self.audio_ready.len() > AUDIO_HELD {
            self.audio_ready.pop_front();
        }
    }

    fn ready_video(&mut self, frame: VideoFrame, duration_ms: i64) {
        if self.video_ready.is_empty() {
            self.video_base = ms_to_ticks(frame.dts_ms, VIDEO_TIMESCALE);
        }
        self.video_ready.push(Sample {
            duration: (duration_ms * 90) as u32,
            cts: frame.cts_ms.saturating_mul(90),
            keyframe: frame.keyframe,
            data: frame.data,
        });
    }

    fn open_segment(&mut self, start_ms: i64) {
        let wall_ms = start_ms + self.wall_offset_ms.unwrap_or(0);
        self.init_used = true;
        self.open = Some(Open {
            msn: self.next_msn,
            start_ms,
            wall_ms,
            discontinuity: std::mem::take(&mut self.discontinuity_next),
            parts: Vec::new(),
            part_start_ms: start_ms,
        });
        self.next_msn += 1;
    }

    /// Makes a part of the samples before `end_ms`.
    fn close_part(&mut self, end_ms: i64) {
        let Some(open) = &mut self.open else {
            return;
        };
        let mut audio = Vec::new();
        let mut audio_base = None;
        while let Some((dts, _, _)) = self.audio_ready.front() {
            if *dts >= end_ms && self.video.is_some() {
                break;
            }
            if let Some((_, tick, sample)) = self.audio_ready.pop_front() {
                audio_base.get_or_insert(tick);
                audio.push(sample);
            }
        }
        let video = std::mem::take(&mut self.video_ready);
        if video.is_empty() && audio.is_empty() {
            return;
        }
        let independent = video.first().map(|s| s.keyframe).unwrap_or(true);
        self.fragments = self.fragments.wrapping_add(1);
        let data = fmp4::fragment(
            self.fragments,
            &[
                Run {
                    track: VIDEO_TRACK,
                    base: self.video_base,
                    samples: &video,
                },
                Run {
                    track: AUDIO_TRACK,
                    base: audio_base.unwrap_or(0),
                    samples: &audio,
                },
            ],
        );
        open.parts.push(Part {
            data,
            duration_ms: (end_ms - open.part_start_ms).max(1),
            independent,
        });
        open.part_start_ms = end_ms;
    }

    fn close_segment(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        if open.parts.is_empty() {
            self.next_msn = open.msn;
            return;
        }
        let mut data = BytesMut::with_capacity(open.parts.iter().map(|p| p.data.len()).sum());
        for part in &open.parts {
            data.extend_from_slice(&part.data);
        }
        let segment = Arc::new(Segment {
            msn: open.msn,
            data: data.freeze(),
            duration_ms: open.parts.iter().map(|p| p.duration_ms).sum(),
            start_ms: open.start_ms,
            wall_ms: open.wall_ms,
            generation: self.generation,
            discontinuity: open.discontinuity,
            init: self.init.clone().unwrap_or_default(),
            parts: open.parts,
        });
        self.segments.push_back(segment.clone());
        self.completed.push(segment);
        while self.segments.len() > self.settings.window {
            if let Some(gone) = self.segments.pop_front()
                && gone.discontinuity
            {
                self.discontinuities_dropped += 1;
            }
        }
    }

    /// Where the stream stands, for a node that continues it.
    pub fn position(&self) -> Position {
        let shown = self
            .segments
            .iter()
            .skip(1)
            .filter(|s| s.discontinuity)
            .count()
            + usize::from(
                self.open
                    .as_ref()
                    .is_some_and(|o| o.discontinuity && !self.segments.is_empty()),
            );
        Position {
            next_msn: self.next_msn,
            generation: self.generation,
            discontinuity_sequence: self.discontinuities_dropped + shown as u64,
        }
    }

    /// A new muxer's stream goes on from where another's stood: its segments
    /// number on from there, after a discontinuity, with a new init segment.
    pub fn continue_from(&mut self, from: Position) {
        self.next_msn = from.next_msn;
        self.generation = from.generation + 1;
        self.discontinuities_dropped = from.discontinuity_sequence + 1;
    }

    /// Segments completed since the last call (for the recorder).
    pub fn take_completed(&mut self) -> Vec<Arc<Segment>> {
        std::mem::take(&mut self.completed)
    }

    /// The init segment of a generation: the current one, or one that
    /// segments still in the window use.
    pub fn init(&self, generation: u32) -> Option<Bytes> {
        if generation == self.generation {
            return self.init.clone();
        }
        self.segments
            .iter()
            .find(|s| s.generation == generation)
            .map(|s| s.init.clone())
    }

    pub fn segment(&self, msn: u64) -> Option<Bytes> {
        self.segments
            .iter()
            .find(|s| s.msn == msn)
            .map(|s| s.data.clone())
    }

    pub fn part(&self, msn: u64, index: usize) -> Option<Bytes> {
        if let Some(open) = &self.open
            && open.msn == msn
        {
            return open.parts.get(index).map(|p| p.data.clone());
        }
        self.segments
            .iter()
            .rev()
            .take(PARTS_KEPT)
            .find(|s| s.msn == msn)
            .and_then(|s| s.parts.get(index))
            .map(|p| p.data.clone())
    }

    /// The next part to be made, as the playlist's preload hint names it.
    pub fn next_part(&self) -> Option<(u64, usize)> {
        self.open.as_ref().map(|o| (o.msn, o.parts.len()))
    }

    /// The media sequence number the next segment will get.
    pub fn upcoming_msn(&self) -> u64 {
        self.next_msn
    }

    /// Whether a playlist asked for with `_HLS_msn` and `_HLS_part` can be
    /// answered now (the segment, or the part of it, exists).
    pub fn has(&self, msn: u64, part: Option<usize>) -> bool {
        if self.ended {
            return true;
        }
        match &self.open {
            Some(open) if msn == open.msn => part.is_some_and(|p| p < open.parts.len()),
            Some(open) => msn < open.msn,
            None => msn < self.next_msn,
        }
    }

    /// Whether anything can be played yet.
    pub fn is_playable(&self) -> bool {
        self.init.is_some()
            && (!self.segments.is_empty()
                || self.open.as_ref().is_some_and(|o| !o.parts.is_empty()))
    }

    /// The live media playlist.
    pub fn playlist(&self) -> String {
        let part_target = self.settings.part_target_ms as f64 / 1000.0;
        let longest = self
            .segments
            .iter()
            .map(|s| s.duration_ms)
            .max()
            .unwrap_or(0)
            .max(self.settings.segment_min_ms);
        let target = (longest + 999) / 1000;
        let mut out = String::with_capacity(2048);
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{target}\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n\
             #EXT-X-PART-INF:PART-TARGET={part_target:.3}\n",
            part_target * 3.0
        );
        let first_msn = self
            .segments
            .front()
            .map(|s| s.msn)
            .or(self.open.as_ref().map(|o| o.msn))
            .unwrap_or(self.next_msn);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_msn}");
        if self.discontinuities_dropped > 0 {
            let _ = writeln!(
                out,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuities_dropped
            );
        }
        let first_generation = self
            .segments
            .front()
            .map(|s| s.generation)
            .unwrap_or(self.generation);
        let _ = writeln!(
            out,
            "#EXT-X-MAP:URI=\"{}init{first_generation}.mp4\"",
            self.prefix
        );
        let parts_from = self.segments.len().saturating_sub(PARTS_KEPT);
        for (i, segment) in self.segments.iter().enumerate() {
            if segment.discontinuity && i > 0 {
                let _ = write!(
                    out,
                    "#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"{}init{}.mp4\"\n",
                    self.prefix, segment.generation
                );
            }
            write_date(&mut out, segment.wall_ms);
            if i >= parts_from {
                write_parts(&mut out, &self.prefix, segment.msn, &segment.parts);
            }
            let _ = write!(
                out,
                "#EXTINF:{:.3},\n{}seg{}.m4s\n",
                segment.duration_ms as f64 / 1000.0,
                self.prefix,
                segment.msn
            );
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        } else if let Some(open) = &self.open {
            if open.discontinuity && !self.segments.is_empty() {
                let _ = write!(
                    out,
                    "#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"{}init{}.mp4\"\n",
                    self.prefix, self.generation
                );
            }
            write_date(&mut out, open.wall_ms);
            write_parts(&mut out, &self.prefix, open.msn, &open.parts);
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}part{}.{}.m4s\"",
                self.prefix,
                open.msn,
                open.parts.len()
            );
        }
        out
    }
}

fn write_parts(out: &mut String, prefix: &str, msn: u64, parts: &[Part]) {
    for (i, part) in parts.iter().enumerate() {
        let _ = writeln!(
            out,
            "#EXT-X-PART:DURATION={:.3},URI=\"{prefix}part{msn}.{i}.m4s\"{}",
            part.duration_ms as f64 / 1000.0,
            if part.independent {
                ",INDEPENDENT=YES"
            } else {
                ""
            }
        );
    }
}

fn write_date(out: &mut String, wall_ms: i64) {
    let _ = writeln!(
        out,
        "#EXT-X-PROGRAM-DATE-TIME:{}",
        domain::Timestamp::from_millis(wall_ms).to_rfc3339()
    );
}

fn ms_to_ticks(ms: i64, timescale: u32) -> u64 {
    u64::try_from(ms.max(0)).unwrap_or(0) * u64::from(timescale) / 1000
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn video_config() -> AvcConfig {
        AvcConfig::parse(crate::flv::tests::record()).expect("valid")
    }

    pub(crate) fn audio_config() -> AacConfig {
        AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).expect("valid")
    }

    /// `seconds` of 30 fps video with a keyframe every `gop` frames, and audio.
    pub(crate) fn stream(hls: &mut Hls, seconds: i64, gop: i64) {
        let frames = seconds * 30;
        let mut audio_ms = 0.0f64;
        for n in 0..frames {
            let dts = n * 1000 / 30;
            while audio_ms <= dts as f64 {
                hls.push_audio(audio_ms as i64, Bytes::from_static(&[1, 2]), 0);
                audio_ms += 1024.0 * 1000.0 / 44100.0;
            }
            hls.push_video(
                dts,
                66,
                n % gop == 0,
                Bytes::from_static(&[0, 0, 0, 1, 5]),
                0,
            );
        }
    }

    fn tag_values<'a>(playlist: &'a str, tag: &str) -> Vec<&'a str> {
        playlist
            .lines()
            .filter_map(|l| l.strip_prefix(tag))
            .collect()
    }

    #[test]
    fn parts_never_exceed_the_target_and_segments_start_at_keyframes() {
        let mut hls = Hls::new(Settings::default(), String::new());
        hls.set_video(video_config());
        hls.set_audio(audio_config());
        stream(&mut hls, 5, 30);
        let playlist = hls.playlist();
        for part in tag_values(&playlist, "#EXT-X-PART:") {
            let duration: f64 = part
                .split(',')
                .find_map(|f| f.strip_prefix("DURATION="))
                .and_then(|d| d.parse().ok())
                .expect("a duration");
            assert!(duration <= 0.2 + 1e-9, "{part}");
            assert!(duration >= 0.1, "{part}");
        }
        let completed = hls.take_completed();
        assert_eq!(
            completed.len(),
            4,
            "one-second GOPs make one-second segments"
        );
        for segment in &completed {
            assert_eq!(segment.duration_ms, 1000);
            assert!(segment.parts[0].independent);
            assert!(segment.parts[1..].iter().all(|p| !p.independent));
        }
        assert!(playlist.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part4."));
        assert!(playlist.contains("#EXT-X-TARGETDURATION:1\n"));
        assert!(playlist.contains("#EXT-X-MAP:URI=\"init0.mp4\""));
    }

    #[test]
    fn blocking_requests_are_answered_when_the_part_exists() {
        let mut hls = Hls::new(Settings::default(), String::new());
        hls.set_video(video_config());
        stream(&mut hls, 2, 30);
        let (msn, next) = hls.next_part().expect("an open segment");
        assert!(!hls.has(msn, Some(next)));
        assert!(hls.has(msn, Some(next - 1)));
        assert!(!hls.has(msn, None));
        assert!(hls.has(msn - 1, None));
        assert!(hls.part(msn, next - 1).is_some());
        hls.end();
        assert!(hls.has(msn + 5, Some(3)));
        assert!(hls.playlist().ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn the_window_slides_and_a_new_configuration_is_a_discontinuity() {
        let mut hls = Hls::new(Settings::default(), String::new());
        hls.set_video(video_config());
        stream(&mut hls, 9, 30);
        let mut other = video_config();
        other.level = 0x1f;
        hls.set_video(other);
        stream(&mut hls, 2, 30);
        let playlist = hls.playlist();
        assert_eq!(tag_values(&playlist, "#EXTINF:").len(), 6);
        assert!(playlist.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init1.mp4\""));
        assert!(hls.init(1).is_some() && hls.init(0).is_some());
        assert!(hls.segment(0).is_none(), "out of the window");
    }

    #[test]
    fn an_encoder_that_comes_back_continues_the_playlist_after_a_discontinuity() {
        let mut hls = Hls::new(Settings::default(), String::new());
        hls.set_video(video_config());
        hls.set_audio(audio_config());
        stream(&mut hls, 3, 30);
        hls.pause();
        // What was open is a whole segment now: the encoder's last frames play.
        assert_eq!(hls.take_completed().len(), 3);
        // The same encoder again, its clock carried on by the stream's.
        for n in 0..60 {
            let dts = 3040 + n * 1000 / 30;
            hls.push_video(
                dts,
                66,
                n % 30 == 0,
                Bytes::from_static(&[0, 0, 0, 1, 5]),
                0,
            );
        }
        let after = hls.playlist();
        assert_eq!(tag_values(&after, "#EXT-X-MEDIA-SEQUENCE:"), ["0"]);
        let segments = tag_values(&after, "#EXTINF:").len();
        assert_eq!(segments, 4, "the three before and one after");
        assert!(after.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init1.mp4\""));
        assert!(after.contains("seg3.m4s"), "numbers keep rising");
        assert!(hls.init(0).is_some() && hls.init(1).is_some());
    }

    #[test]
    fn a_muxer_that_continues_anothers_stream_numbers_on_after_a_discontinuity() {
        let mut first = Hls::new(Settings::default(), String::new());
        first.set_video(video_config());
        stream(&mut first, 3, 30);
        first.pause();
        stream(&mut first, 2, 30);
        let at = first.position();
        assert_eq!(at.generation, 1);
        assert_eq!(at.discontinuity_sequence, 1, "one join in the window");

        let mut next = Hls::new(Settings::default(), String::new());
        next.continue_from(at);
        next.set_video(video_config());
        stream(&mut next, 2, 30);
        let playlist = next.playlist();
        assert_eq!(
            tag_values(&playlist, "#EXT-X-MEDIA-SEQUENCE:"),
            [at.next_msn.to_string().as_str()]
        );
        assert_eq!(
            tag_values(&playlist, "#EXT-X-DISCONTINUITY-SEQUENCE:"),
            ["2"]
        );
        assert!(playlist.contains("#EXT-X-MAP:URI=\"init2.mp4\""));
        assert!(next.init(2).is_some());
    }

    #[test]
    fn frames_before_the_first_keyframe_are_skipped() {
        let mut hls = Hls::new(Settings::default(), String::new());
        hls.set_video(video_config());
        hls.push_video(0, 0, false, Bytes::from_static(&[1]), 0);
        assert!(hls.next_part().is_none());
        hls.push_video(33, 0, true, Bytes::from_static(&[1]), 0);
        assert_eq!(hls.next_part(), Some((0, 0)));
    }
}
