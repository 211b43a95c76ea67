//! FLV tag bodies as RTMP carries them (H.264 and AAC), their codec
//! configurations, and FLV files as HTTP-FLV sends them.

use bytes::{BufMut, Bytes, BytesMut};
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{BitReader, decode_nal};
use thiserror::Error;

pub const TAG_AUDIO: u8 = 8;
pub const TAG_VIDEO: u8 = 9;
pub const TAG_SCRIPT: u8 = 18;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FlvError {
    #[error("{0} is cut short")]
    Truncated(&'static str),
    #[error("AVC decoder configuration: {0}")]
    AvcConfig(String),
    #[error("AAC AudioSpecificConfig: {0}")]
    AacConfig(&'static str),
}

/// An H.264 stream's decoder configuration (`AVCDecoderConfigurationRecord`,
/// which is also the body of the `avcC` box).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub record: Bytes,
    pub width: u32,
    pub height: u32,
    pub profile: u8,
    pub compatibility: u8,
    pub level: u8,
    /// Bytes of each NAL unit's length prefix in the samples.
    pub nal_length_size: u8,
}

impl AvcConfig {
    pub fn parse(record: Bytes) -> Result<Self, FlvError> {
        let bad = |why: &str| FlvError::AvcConfig(why.to_owned());
        if record.len() < 7 {
            return Err(bad("shorter than its fixed fields"));
        }
        if record[0] != 1 {
            return Err(bad("version is not 1"));
        }
        let nal_length_size = (record[4] & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(bad("NAL length size 3 is not allowed"));
        }
        let sps_count = record[5] & 0x1f;
        if sps_count == 0 {
            return Err(bad("no sequence parameter set"));
        }
        let mut at = 6;
        let mut first_sps = None;
        for _ in 0..sps_count {
            let len = usize::from(u16::from_be_bytes([
                *record.get(at).ok_or_else(|| bad("SPS length cut short"))?,
                *record
                    .get(at + 1)
                    .ok_or_else(|| bad("SPS length cut short"))?,
            ]));
            let sps = record
                .get(at + 2..at + 2 + len)
                .ok_or_else(|| bad("SPS cut short"))?;
            first_sps.get_or_insert(sps);
            at += 2 + len;
        }
        let sps = first_sps.ok_or_else(|| bad("no sequence parameter set"))?;
        if sps.is_empty() || sps[0] & 0x1f != 7 {
            return Err(bad("the first parameter set is not an SPS"));
        }
        let rbsp = decode_nal(sps).map_err(|e| bad(&e.to_string()))?;
        let parsed = SeqParameterSet::from_bits(BitReader::new(&*rbsp))
            .map_err(|e| bad(&format!("{e:?}")))?;
        let (width, height) = parsed
            .pixel_dimensions()
            .map_err(|e| bad(&format!("{e:?}")))?;
        Ok(Self {
            width,
            height,
            profile: record[1],
            compatibility: record[2],
            level: record[3],
            nal_length_size,
            record,
        })
    }

    /// The RFC 6381 codec string, as in `CODECS="avc1.64001f"`.
    pub fn codec(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile, self.compatibility, self.level
        )
    }
}

/// An AAC stream's `AudioSpecificConfig` (the body of the `esds` decoder info).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    pub asc: Bytes,
    pub object_type: u8,
    pub sample_rate: u32,
    pub channels: u8,
}

const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

impl AacConfig {
    pub fn parse(asc: Bytes) -> Result<Self, FlvError> {
        let mut bits = Bits::new(&asc);
        let mut object_type = bits.take(5).ok_or(FlvError::AacConfig("cut short"))? as u8;
        if object_type == 31 {
            object_type = 32 + bits.take(6).ok_or(FlvError::AacConfig("cut short"))? as u8;
        }
        let index = bits.take(4).ok_or(FlvError::AacConfig("cut short"))?;
        let sample_rate = if index == 15 {
            bits.take(24).ok_or(FlvError::AacConfig("cut short"))?
        } else {
            *AAC_RATES
                .get(index as usize)
                .ok_or(FlvError::AacConfig("reserved sample rate index"))?
        };
        if sample_rate == 0 {
            return Err(FlvError::AacConfig("sample rate 0"));
        }
        let channels = bits.take(4).ok_or(FlvError::AacConfig("cut short"))? as u8;
        Ok(Self {
            asc,
            object_type,
            sample_rate,
            channels,
        })
    }

    pub fn codec(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

struct Bits<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Bits<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Option<u32> {
        let mut value = 0u32;
        for _ in 0..n {
            let byte = self.bytes.get(self.at / 8)?;
            let bit = (byte >> (7 - self.at % 8)) & 1;
            value = value << 1 | u32::from(bit);
            self.at += 1;
        }
        Some(value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag {
    Config(AvcConfig),
    /// Length-prefixed NAL units of one access unit.
    Frame {
        keyframe: bool,
        /// Composition time offset (presentation minus decode), in ms.
        cts: i32,
        data: Bytes,
    },
    EndOfSequence,
    /// A codec other than H.264, by its FLV codec id (or 0x80 for Enhanced RTMP).
    Unsupported(u8),
}

pub fn parse_video(body: &Bytes) -> Result<VideoTag, FlvError> {
    let first = *body.first().ok_or(FlvError::Truncated("video tag"))?;
    if first & 0x80 != 0 && first >> 4 != 1 && first >> 4 != 2 {
        return Ok(VideoTag::Unsupported(0x80));
    }
    let codec = first & 0x0f;
    if codec != 7 {
        return Ok(VideoTag::Unsupported(codec));
    }
    if body.len() < 5 {
        return Err(FlvError::Truncated("AVC video tag"));
    }
    let raw = u32::from(body[2]) << 16 | u32::from(body[3]) << 8 | u32::from(body[4]);
    // Sign-extend the 24-bit offset.
    let cts = ((raw << 8) as i32) >> 8;
    Ok(match body[1] {
        0 => VideoTag::Config(AvcConfig::parse(body.slice(5..))?),
        1 => VideoTag::Frame {
            keyframe: first >> 4 == 1,
            cts,
            data: body.slice(5..),
        },
        _ => VideoTag::EndOfSequence,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag {
    Config(AacConfig),
    /// One raw AAC frame.
    Frame(Bytes),
    /// A format other than AAC, by its FLV sound format.
    Unsupported(u8),
}

pub fn parse_audio(body: &Bytes) -> Result<AudioTag, FlvError> {
    let first = *body.first().ok_or(FlvError::Truncated("audio tag"))?;
    let format = first >> 4;
    if format != 10 {
        return Ok(AudioTag::Unsupported(format));
    }
    match body.get(1) {
        Some(0) => Ok(AudioTag::Config(AacConfig::parse(body.slice(2..))?)),
        Some(_) => Ok(AudioTag::Frame(body.slice(2..))),
        None => Err(FlvError::Truncated("AAC audio tag")),
    }
}

/// A tag of an FLV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTag {
    pub kind: u8,
    pub timestamp: u32,
    pub body: Bytes,
}

/// The audio, video and script tags of an FLV file.
pub fn read_file(file: &Bytes) -> Result<Vec<FileTag>, FlvError> {
    if file.len() < 9 || &file[..3] != b"FLV" {
        return Err(FlvError::Truncated("FLV header"));
    }
    let mut at = u32::from_be_bytes([file[5], file[6], file[7], file[8]]) as usize + 4;
    let mut tags = Vec::new();
    while at + 11 <= file.len() {
        let h = &file[at..at + 11];
        let size = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
        let timestamp =
            u32::from(h[7]) << 24 | u32::from(h[4]) << 16 | u32::from(h[5]) << 8 | u32::from(h[6]);
        let body = file
            .get(at + 11..at + 11 + size)
            .ok_or(FlvError::Truncated("FLV tag"))?;
        if matches!(h[0], TAG_AUDIO | TAG_VIDEO | TAG_SCRIPT) {
            tags.push(FileTag {
                kind: h[0],
                timestamp,
                body: file.slice_ref(body),
            });
        }
        at += 11 + size + 4;
    }
    Ok(tags)
}

/// The FLV file header and the first (zero) previous-tag size.
pub fn header(audio: bool, video: bool) -> Bytes {
    let flags = u8::from(audio) << 2 | u8::from(video);
    Bytes::copy_from_slice(&[b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0])
}

/// One FLV tag with its trailing previous-tag size.
pub fn write_tag(kind: u8, timestamp: u32, body: &[u8], out: &mut BytesMut) {
    out.reserve(15 + body.len());
    out.put_u8(kind);
    out.put_uint(body.len() as u64, 3);
    out.put_uint(u64::from(timestamp & 0xff_ffff), 3);
    out.put_u8((timestamp >> 24) as u8);
    out.put_uint(0, 3);
    out.extend_from_slice(body);
    out.put_u32(11 + body.len() as u32);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An SPS for 640x360 High profile, as x264 writes it, and a PPS.
    pub const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
        0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
    ];
    pub const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    pub fn record() -> Bytes {
        let mut r = vec![1, SPS[1], SPS[2], SPS[3], 0xff, 0xe1];
        r.extend_from_slice(&(SPS.len() as u16).to_be_bytes());
        r.extend_from_slice(SPS);
        r.push(1);
        r.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
        r.extend_from_slice(PPS);
        r.into()
    }

    #[test]
    fn an_avc_configuration_gives_size_and_codec() {
        let config = AvcConfig::parse(record()).expect("a valid record");
        assert_eq!((config.width, config.height), (640, 360));
        assert_eq!(config.codec(), "avc1.64001e");
        assert_eq!(config.nal_length_size, 4);
    }

    #[test]
    fn an_aac_configuration_gives_rate_and_channels() {
        let config = AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).expect("valid");
        assert_eq!(
            (config.object_type, config.sample_rate, config.channels),
            (2, 44100, 2)
        );
        assert_eq!(config.codec(), "mp4a.40.2");
        assert!(AacConfig::parse(Bytes::from_static(&[0x17])).is_err());
    }

    #[test]
    fn video_tags_carry_signed_composition_offsets() {
        let body = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xd8, 0, 0, 0, 1, 0x41]);
        assert_eq!(
            parse_video(&body),
            Ok(VideoTag::Frame {
                keyframe: false,
                cts: -40,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x41])
            })
        );
        assert_eq!(
            parse_video(&Bytes::from_static(&[0x12, 0])),
            Ok(VideoTag::Unsupported(2))
        );
    }

    #[test]
    fn tags_are_written_with_their_sizes() {
        let mut out = BytesMut::new();
        write_tag(TAG_AUDIO, 0x0123_4567, &[0xaf, 1, 2], &mut out);
        assert_eq!(
            &out[..],
            &[
                8, 0, 0, 3, 0x23, 0x45, 0x67, 0x01, 0, 0, 0, 0xaf, 1, 2, 0, 0, 0, 14
            ]
        );
    }

    #[test]
    fn the_demo_clip_reads_back_as_tags() {
        let file = Bytes::from_static(include_bytes!("../fixtures/demo.flv"));
        let tags = read_file(&file).expect("a valid FLV file");
        assert!(matches!(
            parse_video(
                &tags
                    .iter()
                    .find(|t| t.kind == TAG_VIDEO)
                    .expect("video")
                    .body
            ),
            Ok(VideoTag::Config(AvcConfig {
                width: 640,
                height: 360,
                ..
            }))
        ));
        assert!(tags.iter().any(|t| t.kind == TAG_AUDIO));
        let mut written = BytesMut::from(&header(true, true)[..]);
        for tag in &tags {
            write_tag(tag.kind, tag.timestamp, &tag.body, &mut written);
        }
        assert_eq!(read_file(&written.freeze()), Ok(tags));
    }

    proptest! {
        #[test]
        fn arbitrary_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut file = b"FLV\x01\x05\x00\x00\x00\x09".to_vec();
            file.extend_from_slice(&bytes);
            let _ = read_file(&Bytes::from(file));
        }

        #[test]
        fn arbitrary_tags_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let bytes = Bytes::from(bytes);
            let _ = parse_video(&bytes);
            let _ = parse_audio(&bytes);
            let _ = AvcConfig::parse(bytes.clone());
            let _ = AacConfig::parse(bytes);
        }

        #[test]
        fn arbitrary_sps_bodies_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut sps = vec![0x67];
            sps.extend_from_slice(&tail);
            let mut r = vec![1, 0x64, 0, 0x1e, 0xff, 0xe1];
            r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
            r.extend_from_slice(&sps);
            let _ = AvcConfig::parse(r.into());
        }
    }
}
