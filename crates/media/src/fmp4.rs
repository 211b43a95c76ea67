//! Fragmented MP4 (CMAF) as LL-HLS serves it: one init segment (`ftyp` +
//! `moov`) per stream configuration, then `moof` + `mdat` fragments, each a
//! partial segment. Video is track 1 (timescale 90 kHz), audio track 2
//! (timescale = its sample rate). Samples are copied as the encoder sent them.

use bytes::{BufMut, Bytes, BytesMut};

use crate::flv::{AacConfig, AvcConfig};

pub const VIDEO_TRACK: u32 = 1;
pub const AUDIO_TRACK: u32 = 2;
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// One sample of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// In the track's timescale.
    pub duration: u32,
    /// Presentation minus decode time, in the track's timescale.
    pub cts: i32,
    pub keyframe: bool,
    pub data: Bytes,
}

/// Writes boxes, patching each one's size when it closes.
struct Boxes {
    out: BytesMut,
    open: Vec<usize>,
}

impl Boxes {
    fn new() -> Self {
        Self {
            out: BytesMut::with_capacity(1024),
            open: Vec::new(),
        }
    }

    fn open(&mut self, kind: &[u8; 4]) {
        self.open.push(self.out.len());
        self.out.put_u32(0);
        self.out.extend_from_slice(kind);
    }

    fn open_full(&mut self, kind: &[u8; 4], version: u8, flags: u32) {
        self.open(kind);
        self.out
            .put_u32(u32::from(version) << 24 | (flags & 0xff_ffff));
    }

    fn close(&mut self) {
        if let Some(start) = self.open.pop() {
            let size = (self.out.len() - start) as u32;
            self.out[start..start + 4].copy_from_slice(&size.to_be_bytes());
        }
    }

    fn zeros(&mut self, n: usize) {
        self.out.put_bytes(0, n);
    }

    fn matrix(&mut self) {
        for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.out.put_u32(v);
        }
    }
}

/// `ftyp` and `moov` for the tracks present.
pub fn init_segment(video: Option<&AvcConfig>, audio: Option<&AacConfig>) -> Bytes {
    let mut b = Boxes::new();
    b.open(b"ftyp");
    b.out.extend_from_slice(b"iso6");
    b.out.put_u32(0);
    for brand in [b"iso6", b"cmfc", b"isom", b"mp41"] {
        b.out.extend_from_slice(brand);
    }
    b.close();

    b.open(b"moov");
    b.open_full(b"mvhd", 0, 0);
    b.zeros(8); // creation and modification time
    b.out.put_u32(1000);
    b.out.put_u32(0); // duration: unknown, it is fragmented
    b.out.put_u32(0x0001_0000); // rate 1.0
    b.out.put_u16(0x0100); // volume 1.0
    b.zeros(10);
    b.matrix();
    b.zeros(24);
    b.out.put_u32(AUDIO_TRACK + 1);
    b.close();
    if let Some(video) = video {
        track(&mut b, Track::Video(video));
    }
    if let Some(audio) = audio {
        track(&mut b, Track::Audio(audio));
    }
    b.open(b"mvex");
    for (id, present) in [
        (VIDEO_TRACK, video.is_some()),
        (AUDIO_TRACK, audio.is_some()),
    ] {
        if present {
            b.open_full(b"trex", 0, 0);
            b.out.put_u32(id);
            b.out.put_u32(1); // sample description index
            b.zeros(12); // default duration, size, flags
            b.close();
        }
    }
    b.close();
    b.close();
    b.out.freeze()
}

enum Track<'a> {
    Video(&'a AvcConfig),
    Audio(&'a AacConfig),
}

fn track(b: &mut Boxes, track: Track<'_>) {
    let (id, timescale, handler, name) = match &track {
        Track::Video(_) => (VIDEO_TRACK, VIDEO_TIMESCALE, b"vide", "Hawker video"),
        Track::Audio(a) => (AUDIO_TRACK, a.sample_rate, b"soun", "Hawker audio"),
    };
    b.open(b"trak");
    b.open_full(b"tkhd", 0, 3); // enabled, in movie
    b.zeros(8);
    b.out.put_u32(id);
    b.zeros(4);
    b.out.put_u32(0); // duration
    b.zeros(8);
    b.out.put_u16(0); // layer
    b.out.put_u16(0); // alternate group
    b.out.put_u16(if matches!(track, Track::Audio(_)) {
        0x0100
    } else {
        0
    });
    b.zeros(2);
    b.matrix();
    let (width, height) = match &track {
        Track::Video(v) => (v.width, v.height),
        Track::Audio(_) => (0, 0),
    };
    b.out.put_u32(width << 16);
    b.out.put_u32(height << 16);
    b.close();

    b.open(b"mdia");
    b.open_full(b"mdhd", 0, 0);
    b.zeros(8);
    b.out.put_u32(timescale);
    b.out.put_u32(0);
    b.out.put_u16(0x55c4); // "und"
    b.out.put_u16(0);
    b.close();
    b.open_full(b"hdlr", 0, 0);
    b.out.put_u32(0);
    b.out.extend_from_slice(handler);
    b.zeros(12);
    b.out.extend_from_slice(name.as_bytes());
    b.out.put_u8(0);
    b.close();

    b.open(b"minf");
    match &track {
        Track::Video(_) => {
            b.open_full(b"vmhd", 0, 1);
            b.zeros(8);
        }
        Track::Audio(_) => {
            b.open_full(b"smhd", 0, 0);
            b.zeros(4);
        }
    }
    b.close();
    b.open(b"dinf");
    b.open_full(b"dref", 0, 0);
    b.out.put_u32(1);
    b.open_full(b"url ", 0, 1); // media in this file
    b.close();
    b.close();
    b.close();

    b.open(b"stbl");
    b.open_full(b"stsd", 0, 0);
    b.out.put_u32(1);
    match &track {
        Track::Video(v) => avc1(b, v),
        Track::Audio(a) => mp4a(b, a),
    }
    b.close();
    for kind in [b"stts", b"stsc", b"stco"] {
        b.open_full(kind, 0, 0);
        b.out.put_u32(0);
        b.close();
    }
    b.open_full(b"stsz", 0, 0);
    b.zeros(8);
    b.close();
    b.close(); // stbl
    b.close(); // minf
    b.close(); // mdia
    b.close(); // trak
}

fn avc1(b: &mut Boxes, v: &AvcConfig) {
    b.open(b"avc1");
    b.zeros(6);
    b.out.put_u16(1); // data reference index
    b.zeros(16);
    b.out.put_u16(v.width.min(0xffff) as u16);
    b.out.put_u16(v.height.min(0xffff) as u16);
    b.out.put_u32(0x0048_0000); // 72 dpi
    b.out.put_u32(0x0048_0000);
    b.zeros(4);
    b.out.put_u16(1); // frame count
    b.zeros(32); // compressor name
    b.out.put_u16(0x0018); // depth
    b.out.put_u16(0xffff);
    b.open(b"avcC");
    b.out.extend_from_slice(&v.record);
    b.close();
    b.close();
}

fn mp4a(b: &mut Boxes, a: &AacConfig) {
    b.open(b"mp4a");
    b.zeros(6);
    b.out.put_u16(1);
    b.zeros(8);
    b.out.put_u16(u16::from(a.channels.max(1)));
    b.out.put_u16(16);
    b.zeros(4);
    b.out.put_u32(a.sample_rate.min(0xffff) << 16);
    b.open_full(b"esds", 0, 0);
    let asc = &a.asc[..a.asc.len().min(100)];
    let decoder_specific = 2 + asc.len();
    let decoder_config = 2 + 13 + decoder_specific;
    let es = 3 + decoder_config + 3;
    descriptor(b, 0x03, es);
    b.out.put_u16(0); // ES id
    b.out.put_u8(0); // flags
    descriptor(b, 0x04, decoder_config - 2);
    b.out.put_u8(0x40); // MPEG-4 audio
    b.out.put_u8(0x15); // audio stream
    b.out.put_uint(0, 3); // buffer size
    b.out.put_u32(0); // max bitrate
    b.out.put_u32(0); // average bitrate
    descriptor(b, 0x05, asc.len());
    b.out.extend_from_slice(asc);
    descriptor(b, 0x06, 1);
    b.out.put_u8(0x02);
    b.close();
    b.close();
}

fn descriptor(b: &mut Boxes, tag: u8, len: usize) {
    b.out.put_u8(tag);
    b.out.put_u8(len as u8);
}

/// One track's run in a fragment.
pub struct Run<'a> {
    pub track: u32,
    /// Decode time of the first sample, in the track's timescale.
    pub base: u64,
    pub samples: &'a [Sample],
}

/// A `moof` and its `mdat`: one partial segment.
pub fn fragment(sequence: u32, runs: &[Run<'_>]) -> Bytes {
    let mut b = Boxes::new();
    b.open(b"moof");
    b.open_full(b"mfhd", 0, 0);
    b.out.put_u32(sequence);
    b.close();
    let mut offsets = Vec::new();
    for run in runs.iter().filter(|r| !r.samples.is_empty()) {
        let video = run.track == VIDEO_TRACK;
        b.open(b"traf");
        b.open_full(b"tfhd", 0, 0x02_0000); // default-base-is-moof
        b.out.put_u32(run.track);
        b.close();
        b.open_full(b"tfdt", 1, 0);
        b.out.put_u64(run.base);
        b.close();
        let flags = if video { 0x0f01 } else { 0x0301 };
        b.open_full(b"trun", 1, flags);
        b.out.put_u32(run.samples.len() as u32);
        offsets.push(b.out.len());
        b.out.put_u32(0); // data offset, patched below
        for s in run.samples {
            b.out.put_u32(s.duration);
            b.out.put_u32(s.data.len() as u32);
            if video {
                b.out
                    .put_u32(if s.keyframe { 0x0200_0000 } else { 0x0101_0000 });
                b.out.put_i32(s.cts);
            }
        }
        b.close();
        b.close();
    }
    b.close();
    let moof_len = b.out.len();
    let mut data_at = moof_len + 8;
    for (at, run) in offsets
        .iter()
        .zip(runs.iter().filter(|r| !r.samples.is_empty()))
    {
        b.out[*at..*at + 4].copy_from_slice(&(data_at as u32).to_be_bytes());
        data_at += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    b.open(b"mdat");
    for run in runs {
        for s in run.samples {
            b.out.extend_from_slice(&s.data);
        }
    }
    b.close();
    b.out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (kind, size) of each top-level box.
    fn boxes(bytes: &[u8]) -> Vec<(String, usize)> {
        let mut at = 0;
        let mut found = Vec::new();
        while at + 8 <= bytes.len() {
            let size = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
                as usize;
            found.push((
                String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned(),
                size,
            ));
            at += size.max(8);
        }
        assert_eq!(at, bytes.len(), "box sizes add up to the whole");
        found
    }

    #[test]
    fn a_fragment_points_each_run_at_its_data() {
        let sample = |n: u8, keyframe| Sample {
            duration: 3000,
            cts: 0,
            keyframe,
            data: Bytes::from(vec![n; 10]),
        };
        let video = [sample(1, true), sample(2, false)];
        let audio = [sample(3, true)];
        let bytes = fragment(
            7,
            &[
                Run {
                    track: VIDEO_TRACK,
                    base: 0,
                    samples: &video,
                },
                Run {
                    track: AUDIO_TRACK,
                    base: 0,
                    samples: &audio,
                },
            ],
        );
        let found = boxes(&bytes);
        assert_eq!(found[0].0, "moof");
        assert_eq!(found[1], ("mdat".into(), 38));
        let moof = found[0].1;
        assert_eq!(&bytes[moof + 8..moof + 18], &[1; 10]);
        assert_eq!(&bytes[moof + 28..moof + 38], &[3; 10]);
    }

    #[test]
    fn an_init_segment_holds_both_tracks() {
        let video = AvcConfig::parse(crate::flv::tests::record()).expect("valid");
        let audio = AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).expect("valid");
        let bytes = init_segment(Some(&video), Some(&audio));
        let found = boxes(&bytes);
        assert_eq!(
            found.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["ftyp", "moov"]
        );
        let text = String::from_utf8_lossy(&bytes);
        for kind in ["avc1", "avcC", "mp4a", "esds", "trex", "mvex"] {
            assert!(text.contains(kind), "{kind} in the init segment");
        }
    }
}
