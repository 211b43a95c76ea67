//! A muxer written out whole and read back: what an edge starts from
//! ([`crate::wire`]). Everything the muxer holds goes, so that the copy cuts
//! the same parts and segments from the same frames.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;

use super::{Hls, Open, Part, Segment, Settings, VideoFrame};
use crate::flv::{AacConfig, AvcConfig};
use crate::fmp4::Sample;
use crate::wire::{Reader, Writer};

impl Hls {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.i64(self.settings.part_target_ms);
        w.i64(self.settings.segment_min_ms);
        w.u64(self.settings.window as u64);
        w.bytes(self.prefix.as_bytes());
        w.opt_bytes(self.video.as_ref().map(|v| &v.record));
        w.opt_bytes(self.audio.as_ref().map(|a| &a.asc));
        w.opt_bytes(self.init.as_ref());
        w.u32(self.generation);
        w.bool(self.init_used);
        w.bool(self.discontinuity_next);
        w.u32(self.segments.len() as u32);
        for s in &self.segments {
            w.u64(s.msn);
            w.i64(s.duration_ms);
            w.i64(s.start_ms);
            w.i64(s.wall_ms);
            w.u32(s.generation);
            w.bool(s.discontinuity);
            w.bytes(&s.init);
            parts(w, &s.parts);
        }
        w.bool(self.open.is_some());
        if let Some(o) = &self.open {
            w.u64(o.msn);
            w.i64(o.start_ms);
            w.i64(o.wall_ms);
            w.bool(o.discontinuity);
            parts(w, &o.parts);
            w.i64(o.part_start_ms);
        }
        w.u64(self.next_msn);
        w.u64(self.discontinuities_dropped);
        w.bool(self.pending_video.is_some());
        if let Some(f) = &self.pending_video {
            w.i64(f.dts_ms);
            w.u32(f.cts_ms as u32);
            w.bool(f.keyframe);
            w.bytes(&f.data);
        }
        w.u32(self.video_ready.len() as u32);
        for s in &self.video_ready {
            sample(w, s);
        }
        w.u64(self.video_base);
        w.i64(self.last_gap_ms);
        w.u32(self.audio_ready.len() as u32);
        for (dts, tick, s) in &self.audio_ready {
            w.i64(*dts);
            w.u64(*tick);
            sample(w, s);
        }
        w.opt_i64(self.audio_next.map(|t| t as i64));
        w.u32(self.fragments);
        w.opt_i64(self.wall_offset_ms);
        w.bool(self.ended);
    }

    /// A muxer as [`Hls::encode`] wrote it; `None` if the bytes do not say one.
    pub(crate) fn decode(r: &mut Reader) -> Option<Self> {
        let settings = Settings {
            part_target_ms: r.i64()?,
            segment_min_ms: r.i64()?,
            window: usize::try_from(r.u64()?).ok()?,
        };
        let mut hls = Hls::new(settings, String::from_utf8(r.bytes()?.to_vec()).ok()?);
        hls.video = r.opt_bytes()?.map(AvcConfig::parse).transpose().ok()?;
        hls.audio = r.opt_bytes()?.map(AacConfig::parse).transpose().ok()?;
        hls.init = r.opt_bytes()?;
        hls.generation = r.u32()?;
        hls.init_used = r.bool()?;
        hls.discontinuity_next = r.bool()?;
        let segments = r.count(40)?;
        for _ in 0..segments {
            let (msn, duration_ms, start_ms, wall_ms) = (r.u64()?, r.i64()?, r.i64()?, r.i64()?);
            let (generation, discontinuity, init) = (r.u32()?, r.bool()?, r.bytes()?);
            let parts = read_parts(r)?;
            let mut data = BytesMut::with_capacity(parts.iter().map(|p| p.data.len()).sum());
            for part in &parts {
                data.extend_from_slice(&part.data);
            }
            hls.segments.push_back(Arc::new(Segment {
                msn,
                data: data.freeze(),
                duration_ms,
                start_ms,
                wall_ms,
                generation,
                discontinuity,
                init,
                parts,
            }));
        }
        if r.bool()? {
            hls.open = Some(Open {
                msn: r.u64()?,
                start_ms: r.i64()?,
                wall_ms: r.i64()?,
                discontinuity: r.bool()?,
                parts: read_parts(r)?,
                part_start_ms: r.i64()?,
            });
        }
        hls.next_msn = r.u64()?;
        hls.discontinuities_dropped = r.u64()?;
        if r.bool()? {
            hls.pending_video = Some(VideoFrame {
                dts_ms: r.i64()?,
                cts_ms: r.u32()? as i32,
                keyframe: r.bool()?,
                data: r.bytes()?,
            });
        }
        let ready = r.count(13)?;
        hls.video_ready = (0..ready).map(|_| read_sample(r)).collect::<Option<_>>()?;
        hls.video_base = r.u64()?;
        hls.last_gap_ms = r.i64()?;
        let audio = r.count(29)?;
        hls.audio_ready = (0..audio)
            .map(|_| Some((r.i64()?, r.u64()?, read_sample(r)?)))
            .collect::<Option<VecDeque<_>>>()?;
        hls.audio_next = r.opt_i64()?.map(|t| t as u64);
        hls.fragments = r.u32()?;
        hls.wall_offset_ms = r.opt_i64()?;
        hls.ended = r.bool()?;
        Some(hls)
    }
}

fn parts(w: &mut Writer, parts: &[Part]) {
    w.u32(parts.len() as u32);
    for p in parts {
        w.bytes(&p.data);
        w.i64(p.duration_ms);
        w.bool(p.independent);
    }
}

fn read_parts(r: &mut Reader) -> Option<Vec<Part>> {
    let n = r.count(13)?;
    (0..n)
        .map(|_| {
            Some(Part {
                data: r.bytes()?,
                duration_ms: r.i64()?,
                independent: r.bool()?,
            })
        })
        .collect()
}

fn sample(w: &mut Writer, s: &Sample) {
    w.u32(s.duration);
    w.u32(s.cts as u32);
    w.bool(s.keyframe);
    w.bytes(&s.data);
}

fn read_sample(r: &mut Reader) -> Option<Sample> {
    Some(Sample {
        duration: r.u32()?,
        cts: r.u32()? as i32,
        keyframe: r.bool()?,
        data: r.bytes()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::tests::{audio_config, stream, video_config};
    use bytes::Bytes;

    #[test]
    fn a_copy_made_mid_stream_cuts_what_the_original_cuts() {
        let mut origin = Hls::new(Settings::default(), "s1/".to_owned());
        origin.set_video(video_config());
        origin.set_audio(audio_config());
        stream(&mut origin, 3, 30);
        let mut w = Writer::default();
        origin.encode(&mut w);
        let mut copy = Hls::decode(&mut Reader::new(w.finish())).expect("decodes");
        assert_eq!(copy.playlist(), origin.playlist());
        // The same frames to both from here: the same parts, byte for byte.
        for hls in [&mut origin, &mut copy] {
            for n in 0..75 {
                let dts = 3000 + n * 1000 / 30;
                hls.push_audio(dts, Bytes::from_static(&[1, 2]), 0);
                hls.push_video(
                    dts,
                    66,
                    n % 30 == 0,
                    Bytes::from_static(&[0, 0, 0, 1, 5]),
                    0,
                );
            }
        }
        assert_eq!(copy.playlist(), origin.playlist());
        let (msn, parts) = origin.next_part().expect("an open segment");
        for i in 0..parts {
            assert_eq!(copy.part(msn, i), origin.part(msn, i), "part {msn}.{i}");
        }
        assert_eq!(copy.segment(msn - 1), origin.segment(msn - 1));
        assert_eq!(copy.init(0), origin.init(0));
    }

    #[test]
    fn a_checkpoint_cut_short_is_refused() {
        let mut hls = Hls::new(Settings::default(), String::new());
        hls.set_video(video_config());
        stream(&mut hls, 2, 30);
        let mut w = Writer::default();
        hls.encode(&mut w);
        let whole = w.finish();
        for cut in [0, 10, whole.len() / 2, whole.len() - 1] {
            assert!(
                Hls::decode(&mut Reader::new(whole.slice(..cut))).is_none(),
                "{cut}"
            );
        }
    }
}
