//! Throws random and mutated input at every media parser for as long as asked:
//!
//!     cargo run --release -p hawker-media --example fuzz -- 600
//!
//! Inputs are a real publishing session (handshake, commands and the demo
//! clip's tags, chunked as an encoder chunks them) with bytes flipped,
//! inserted, dropped or cut, and plain random bytes. Each input goes through
//! the RTMP session, and what comes out of it through the FLV, AVC and AAC
//! parsers and the LL-HLS muxer. A panic prints the input's seed and writes
//! the input to `fuzz-crash-{seed}.bin`. The property tests run the same
//! parsers on a few hundred inputs in every `cargo test`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use media::amf::{self, Amf};
use media::flv::{self, AudioTag, VideoTag};
use media::hls::{Hls, Settings};
use media::rtmp::chunk::{ChunkWriter, Message};
use media::rtmp::{Event, Session};

/// xorshift64*: enough randomness for mutation, and reproducible by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What ffmpeg sends when it publishes the demo clip.
fn session_bytes() -> Vec<u8> {
    let mut wire = BytesMut::new();
    wire.extend_from_slice(&[3]);
    wire.extend_from_slice(&[0u8; 1536 * 2]);
    let writer = ChunkWriter::new();
    let command = |values: &[Amf], stream_id: u32, wire: &mut BytesMut| {
        let mut payload = Vec::new();
        amf::encode_all(values, &mut payload);
        let message = Message {
            type_id: 20,
            stream_id,
            timestamp: 0,
            payload: payload.into(),
        };
        writer.write(3, &message, wire);
    };
    command(
        &[
            Amf::string("connect"),
            Amf::Number(1.0),
            Amf::object(&[("app", Amf::string("live"))]),
        ],
        0,
        &mut wire,
    );
    command(
        &[Amf::string("createStream"), Amf::Number(2.0), Amf::Null],
        0,
        &mut wire,
    );
    command(
        &[
            Amf::string("publish"),
            Amf::Number(3.0),
            Amf::Null,
            Amf::string("live_key"),
        ],
        1,
        &mut wire,
    );
    let clip = Bytes::from_static(include_bytes!("../fixtures/demo.flv"));
    let writer = ChunkWriter::new();
    for tag in flv::read_file(&clip).unwrap().into_iter().take(120) {
        let message = Message {
            type_id: tag.kind,
            stream_id: 1,
            timestamp: tag.timestamp,
            payload: tag.body,
        };
        writer.write(6, &message, &mut wire);
    }
    wire.to_vec()
}

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut input = base.to_vec();
    if rng.below(10) == 0 {
        let len = rng.below(4096);
        return (0..len).map(|_| rng.next() as u8).collect();
    }
    for _ in 0..1 + rng.below(8) {
        if input.is_empty() {
            break;
        }
        let at = rng.below(input.len());
        match rng.below(4) {
            0 => input[at] = rng.next() as u8,
            1 => input.insert(at, rng.next() as u8),
            2 => {
                input.remove(at);
            }
            _ => input.truncate(at),
        }
    }
    input
}

/// Everything a server does with an input, minus the sockets.
fn exercise(input: &[u8]) {
    let mut session = Session::new(&media::rtmp::Limits::default());
    let mut hls = Hls::new(Settings::default(), String::new());
    let mut wire = BytesMut::from(input);
    loop {
        match session.next_event(&mut wire) {
            Ok(Some(Event::Publish { .. })) => session.accept_publish(),
            Ok(Some(Event::Video { timestamp, body })) => match flv::parse_video(&body) {
                Ok(VideoTag::Config(config)) => hls.set_video(config),
                Ok(VideoTag::Frame {
                    keyframe,
                    cts,
                    data,
                }) => hls.push_video(i64::from(timestamp), cts, keyframe, data, 0),
                _ => {}
            },
            Ok(Some(Event::Audio { timestamp, body })) => match flv::parse_audio(&body) {
                Ok(AudioTag::Config(config)) => hls.set_audio(config),
                Ok(AudioTag::Frame(data)) => hls.push_audio(i64::from(timestamp), data, 0),
                _ => {}
            },
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
        let _ = session.output();
    }
    hls.end();
    let _ = hls.playlist();
    let _ = flv::read_file(&Bytes::copy_from_slice(input));
    let _ = amf::decode_all(input);
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let base = session_bytes();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut runs = 0u64;
    std::panic::set_hook(Box::new(|_| {}));
    while Instant::now() < deadline {
        seed = seed.wrapping_add(1);
        let mut rng = Rng(seed);
        let input = mutate(&mut rng, &base);
        if std::panic::catch_unwind(|| exercise(&input)).is_err() {
            let path = format!("fuzz-crash-{seed}.bin");
            std::fs::write(&path, &input).unwrap();
            eprintln!("panic on seed {seed}; input written to {path}");
            std::process::exit(1);
        }
        runs += 1;
    }
    println!("{runs} inputs in {seconds} s, no panic");
}
