//! Video and files on several nodes: three `hawker serve` processes sharing
//! PostgreSQL, NATS and one file storage (an S3-compatible server, or a folder
//! they all mount). ffmpeg publishes to one node; the others serve what it
//! made.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::cluster::{Cluster, PATIENCE};

/// ffmpeg publishing `seconds` of 320x240 H.264 and AAC in real time to
/// `rtmp`, as OBS would; waits for it to finish.
async fn publish(rtmp: std::net::SocketAddr, key: &str, seconds: u32) {
    let mut ffmpeg = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=320x240:rate=30:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=44100:duration={seconds}"
        ))
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p", "-c:a",
            "aac", "-b:a", "64k", "-f", "flv",
        ])
        .arg(format!("rtmp://{rtmp}/live/{key}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg is installed (scripts/test installs it)");
    let status = ffmpeg.wait().await.unwrap();
    assert!(status.success(), "ffmpeg failed: {status}");
}

/// Three nodes sharing a folder for their files.
async fn cluster_on_a_shared_folder() -> (tempfile::TempDir, Cluster) {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("file://{}", shared.path().display());
    let env = vec![("HAWKER_OBJECT_STORE_URL", url)];
    let cluster = Cluster::start_with(3, "nats://127.0.0.1:4222", env).await;
    (shared, cluster)
}

fn png() -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, 4, 4);
    encoder.set_color(png::ColorType::Rgb);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&[200; 4 * 4 * 3]).unwrap();
    writer.finish().unwrap();
    out
}

async fn get(cluster: &Cluster, i: usize, path: &str) -> (u16, bytes::Bytes) {
    let res = cluster
        .client
        .get(format!("{}{path}", cluster.base(i)))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.bytes().await.unwrap())
}

/// An image uploaded through node 0 is served by the others; a stream
/// published to node 0 is recorded there and its recording plays from node 2.
async fn files_made_on_one_node_are_served_by_all(cluster: &Cluster) {
    let (seller, room, key) = cluster.shop_with_room().await;
    let picture = png();
    let uploaded = cluster
        .client
        .post(format!("{}/api/v1/shops/anns/images", cluster.base(0)))
        .bearer_auth(&seller)
        .header("content-type", "image/png")
        .body(picture.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status().as_u16(), 201);
    let image: Value = uploaded.json().await.unwrap();
    let image = image["id"].as_str().unwrap();
    for i in 1..3 {
        let (status, body) = get(cluster, i, &format!("/images/{image}")).await;
        assert_eq!(
            (status, body.as_ref()),
            (200, picture.as_slice()),
            "node {i}"
        );
    }

    publish(cluster.rtmp[0], &key, 4).await;
    // Complete once the grace for a reconnect is over, seen from node 1.
    let recording = complete_recordings(cluster, 1, &room).await.remove(0);
    assert!(
        recording["duration_ms"].as_i64().unwrap() >= 3000,
        "{recording}"
    );
    let playlist_url = recording["playlist_url"].as_str().unwrap();
    let (status, playlist) = get(cluster, 2, playlist_url).await;
    assert_eq!(status, 200);
    let playlist = String::from_utf8(playlist.to_vec()).unwrap();
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    // ffprobe reads the whole recording through node 2.
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(format!("{}{playlist_url}", cluster.base(2)))
        .output()
        .expect("ffprobe comes with ffmpeg");
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let seconds: f64 = String::from_utf8_lossy(&probe.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(seconds >= 3.0, "{seconds} s");
}

#[tokio::test]
async fn nodes_on_an_s3_server_serve_each_others_images_and_recordings() {
    let s3 = objects::testing::S3::start().await;
    let cluster = Cluster::start_with(3, "nats://127.0.0.1:4222", s3.env("hawker")).await;
    files_made_on_one_node_are_served_by_all(&cluster).await;
    // Everything is in the bucket, under the URL's prefix.
    let stored = s3.objects("hawker");
    assert_eq!(stored.list("images").await.unwrap().len(), 1);
    cluster.finish().await;
}

#[tokio::test]
async fn nodes_sharing_a_folder_serve_each_others_images_and_recordings() {
    let (shared, cluster) = cluster_on_a_shared_folder().await;
    files_made_on_one_node_are_served_by_all(&cluster).await;
    assert!(shared.path().join("recordings").is_dir());
    cluster.finish().await;
}

/// An ffmpeg publishing to `rtmp` until it is killed or cut off.
fn encoder(rtmp: std::net::SocketAddr, key: &str) -> tokio::process::Child {
    tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=30:duration=120")
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p", "-f",
            "flv",
        ])
        .arg(format!("rtmp://{rtmp}/live/{key}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg is installed (scripts/test installs it)")
}

/// What a live playlist says: its stream id (the directory of its URIs),
/// first media sequence number, discontinuity sequence and newest segment.
#[derive(Debug)]
struct Live {
    stream: String,
    first: u64,
    discontinuities: u64,
    last: u64,
    /// The playlist has a join of two encoders in its window.
    joined: bool,
}

fn live(playlist: &str) -> Option<Live> {
    let tag = |name: &str| {
        playlist
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.parse().ok())
    };
    let (stream, last) = playlist.lines().rev().find_map(|l| {
        let (stream, file) = l.split_once('/')?;
        let msn = file
            .strip_prefix("seg")?
            .strip_suffix(".m4s")?
            .parse()
            .ok()?;
        Some((stream.to_owned(), msn))
    })?;
    Some(Live {
        stream,
        first: tag("#EXT-X-MEDIA-SEQUENCE:")?,
        discontinuities: tag("#EXT-X-DISCONTINUITY-SEQUENCE:").unwrap_or(0),
        last,
        joined: playlist.contains("#EXT-X-DISCONTINUITY\n"),
    })
}

/// Node `i`'s live playlist of `room` once it has a segment past `after`.
async fn playlist_past(cluster: &Cluster, i: usize, room: &str, after: Option<u64>) -> Live {
    playlist_where(cluster, i, room, |l| after.is_none_or(|a| l.last > a)).await
}

/// Node `i`'s live playlist of `room` once it is as `wanted`.
async fn playlist_where(
    cluster: &Cluster,
    i: usize,
    room: &str,
    wanted: impl Fn(&Live) -> bool,
) -> Live {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = get(cluster, i, &format!("/live/{room}/index.m3u8")).await;
        let text = String::from_utf8_lossy(&body);
        if status == 200
            && let Some(found) = live(&text).filter(&wanted)
        {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {i}: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The room's recordings, as node `i` lists them.
async fn recordings(cluster: &Cluster, i: usize, room: &str) -> Vec<Value> {
    let path = format!("/api/v1/rooms/{room}/recordings");
    let (_, list) = cluster
        .call(i, reqwest::Method::GET, &path, None, None)
        .await;
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The room's recordings, as node `i` lists them, once all are complete.
async fn complete_recordings(cluster: &Cluster, i: usize, room: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let items = recordings(cluster, i, room).await;
        if !items.is_empty() && items.iter().all(|r| r["status"] == "complete") {
            return items;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "recordings: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn room_status(cluster: &Cluster, i: usize, room: &str) -> String {
    let (_, body) = cluster
        .call(
            i,
            reqwest::Method::GET,
            &format!("/api/v1/rooms/{room}"),
            None,
            None,
        )
        .await;
    body["status"].as_str().unwrap_or_default().to_owned()
}

/// After the move, node 1 goes on with node 0's stream: the same URIs, its
/// window, and numbers that keep rising past a discontinuity (the join), the
/// room live all along.
async fn the_stream_goes_on_at_node_1(cluster: &Cluster, room: &str, before: &Live) {
    let after = playlist_where(cluster, 1, room, |l| {
        l.last > before.last + 1 && (l.joined || l.discontinuities > before.discontinuities)
    })
    .await;
    assert_eq!(after.stream, before.stream, "the same stream: {after:?}");
    assert!(
        after.first >= before.first,
        "numbers keep rising: {before:?} then {after:?}"
    );
    assert_eq!(room_status(cluster, 2, room).await, "live");
}

#[tokio::test]
async fn an_encoder_that_moves_to_another_node_takes_the_stream_over_there() {
    let (_shared, cluster) = cluster_on_a_shared_folder().await;
    let (_, room, key) = cluster.shop_with_room().await;
    let mut first = encoder(cluster.rtmp[0], &key);
    let before = playlist_past(&cluster, 0, &room, Some(1)).await;
    let flv = FlvReader::start(&cluster, 0, &room).await;
    // Node 2 is an edge of node 0 when the stream moves.
    playlist_past(&cluster, 2, &room, None).await;
    // The same key on another node: the newest encoder wins, and the node it
    // left cuts the first encoder off.
    let mut second = encoder(cluster.rtmp[1], &key);
    let cut = tokio::time::timeout(PATIENCE, first.wait()).await;
    assert!(cut.is_ok(), "node 0 let the first encoder go on publishing");
    the_stream_goes_on_at_node_1(&cluster, &room, &before).await;
    // The edge follows the stream to node 1: the same join in its playlist.
    let edge = playlist_where(&cluster, 2, &room, |l| l.joined && l.last > before.last + 1).await;
    assert_eq!(edge.stream, before.stream);
    // Node 0's HTTP-FLV viewer kept its connection: two more seconds of
    // video come through it, from the new origin, timestamps still rising.
    let seen = flv.video_tags();
    flv.until_video_tags(seen + 60).await;
    let stamps = flv.video_stamps();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
    second.kill().await.unwrap();
    let recordings = complete_recordings(&cluster, 2, &room).await;
    assert_eq!(
        recordings.len(),
        1,
        "one recording of both halves: {recordings:?}"
    );
    let (_, playlist) = get(&cluster, 2, recordings[0]["playlist_url"].as_str().unwrap()).await;
    let playlist = String::from_utf8_lossy(&playlist);
    assert!(playlist.contains("#EXT-X-DISCONTINUITY"), "{playlist}");
    assert_eq!(room_status(&cluster, 1, &room).await, "scheduled");
    cluster.finish().await;
}

#[tokio::test]
async fn an_encoder_that_comes_back_to_another_node_within_the_grace_continues_the_stream() {
    let (_shared, cluster) = cluster_on_a_shared_folder().await;
    let (_, room, key) = cluster.shop_with_room().await;
    let mut first = encoder(cluster.rtmp[0], &key);
    let before = playlist_past(&cluster, 0, &room, Some(1)).await;
    // The encoder's connection drops; it reconnects, to another node.
    first.kill().await.unwrap();
    let mut second = encoder(cluster.rtmp[1], &key);
    the_stream_goes_on_at_node_1(&cluster, &room, &before).await;
    second.kill().await.unwrap();
    let recordings = complete_recordings(&cluster, 2, &room).await;
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    cluster.finish().await;
}

/// The media URIs of a live playlist, as listed.
fn uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter_map(|l| {
            l.split_once("URI=\"")
                .map(|(_, rest)| rest.split('"').next().unwrap_or("").to_owned())
                .or_else(|| (!l.starts_with('#') && !l.is_empty()).then(|| l.to_owned()))
        })
        .collect()
}

/// Tags of an FLV body (after its 13-byte header): kind and timestamp.
fn flv_tags(body: &[u8]) -> Vec<(u8, u32)> {
    let mut tags = Vec::new();
    let mut at = 13;
    while at + 11 <= body.len() {
        let size = u32::from_be_bytes([0, body[at + 1], body[at + 2], body[at + 3]]) as usize;
        let ts = u32::from_be_bytes([body[at + 7], body[at + 4], body[at + 5], body[at + 6]]);
        if at + 11 + size + 4 > body.len() {
            break;
        }
        tags.push((body[at], ts));
        at += 11 + size + 4;
    }
    tags
}

/// `bytes` of node `i`'s HTTP-FLV body of `room`.
async fn flv_body(cluster: &Cluster, i: usize, room: &str, bytes: usize) -> Vec<u8> {
    let mut res = cluster
        .client
        .get(format!("{}/live/{room}.flv", cluster.base(i)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut body = Vec::new();
    while body.len() < bytes {
        match res.chunk().await.unwrap() {
            Some(chunk) => body.extend_from_slice(&chunk),
            None => break,
        }
    }
    body
}

/// An HTTP-FLV viewer reading in the background: the video tags' timestamps
/// it got so far.
struct FlvReader {
    stamps: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FlvReader {
    async fn start(cluster: &Cluster, i: usize, room: &str) -> Self {
        let mut res = cluster
            .client
            .get(format!("{}/live/{room}.flv", cluster.base(i)))
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let stamps = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = stamps.clone();
        let task = tokio::spawn(async move {
            let mut body = Vec::new();
            while let Ok(Some(chunk)) = res.chunk().await {
                body.extend_from_slice(&chunk);
                let video: Vec<u32> = flv_tags(&body)
                    .into_iter()
                    .filter(|t| t.0 == 9)
                    .map(|t| t.1)
                    .collect();
                *seen.lock().unwrap() = video;
            }
        });
        Self { stamps, task }
    }

    fn video_stamps(&self) -> Vec<u32> {
        self.stamps.lock().unwrap().clone()
    }

    fn video_tags(&self) -> usize {
        self.stamps.lock().unwrap().len()
    }

    async fn until_video_tags(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.video_tags() < n {
            assert!(!self.task.is_finished(), "the HTTP-FLV connection closed");
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} video tags",
                self.video_tags()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn metric(cluster: &Cluster, i: usize, name: &str) -> f64 {
    let (_, text) = get(cluster, i, "/metrics").await;
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_stream_published_to_one_node_plays_from_every_node() {
    let cluster = Cluster::start(3, "nats://127.0.0.1:4222").await;
    let (_, room, key) = cluster.shop_with_room().await;
    let _encoder = encoder(cluster.rtmp[0], &key);
    let origin = playlist_past(&cluster, 0, &room, Some(1)).await;

    // Node 1 serves the origin's stream, under the same names.
    let edge = playlist_past(&cluster, 1, &room, Some(origin.last)).await;
    assert_eq!(edge.stream, origin.stream);
    // A blocking request for the next part wakes when it is there, and the
    // part is the origin's, byte for byte.
    let (_, text) = get(&cluster, 1, &format!("/live/{room}/index.m3u8")).await;
    let text = String::from_utf8_lossy(&text).into_owned();
    let hint = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_owned();
    let (msn, part) = hint
        .rsplit('/')
        .next()
        .and_then(|f| {
            f.strip_prefix("part")?
                .strip_suffix(".m4s")?
                .split_once('.')
        })
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .unwrap();
    let (status, blocked) = get(
        &cluster,
        1,
        &format!("/live/{room}/index.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        uris(&String::from_utf8_lossy(&blocked)).contains(&hint),
        "{hint}"
    );
    let path = format!("/live/{room}/{hint}");
    let (edge_status, edge_part) = get(&cluster, 1, &path).await;
    let (origin_status, origin_part) = get(&cluster, 0, &path).await;
    assert_eq!((edge_status, origin_status), (200, 200));
    assert_eq!(edge_part, origin_part, "the same part from both nodes");

    // Node 2 serves it over HTTP-FLV, timestamps rising, and its health.
    let body = flv_body(&cluster, 2, &room, 200_000).await;
    assert!(body.starts_with(b"FLV"));
    let tags = flv_tags(&body);
    assert!(
        tags.iter().filter(|t| t.0 == 9).count() > 10,
        "{} tags",
        tags.len()
    );
    let video: Vec<u32> = tags.iter().filter(|t| t.0 == 9).map(|t| t.1).collect();
    assert!(video.windows(2).all(|w| w[0] <= w[1]), "{video:?}");
    let (status, health) = cluster
        .call(
            2,
            reqwest::Method::GET,
            &format!("/api/v1/rooms/{room}/stream"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["live"], true);
    assert_eq!(
        health["video_codec"]
            .as_str()
            .map(|c| c.starts_with("avc1")),
        Some(true)
    );

    // One pull per node, however many viewers: twenty more on node 1.
    let path = format!("/live/{room}/index.m3u8");
    let viewers: Vec<_> = (0..20).map(|_| get(&cluster, 1, &path)).collect();
    for (status, _) in futures_util::future::join_all(viewers).await {
        assert_eq!(status, 200);
    }
    assert_eq!(metric(&cluster, 1, "hawker_edge_pulls_total").await, 1.0);
    assert_eq!(
        metric(&cluster, 0, "hawker_edge_feeds").await,
        2.0,
        "nodes 1 and 2"
    );
    // ffprobe plays node 2's LL-HLS.
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(format!("{}/live/{room}/index.m3u8", cluster.base(2)))
        .output()
        .expect("ffprobe comes with ffmpeg");
    assert!(
        String::from_utf8_lossy(&probe.stdout).contains("h264"),
        "{probe:?}"
    );
    cluster.finish().await;
}

#[tokio::test]
async fn when_the_origin_dies_its_edges_end_the_stream_and_a_new_one_plays_everywhere() {
    let (_shared, mut cluster) = cluster_on_a_shared_folder().await;
    let (_, room, key) = cluster.shop_with_room().await;
    let mut first = encoder(cluster.rtmp[0], &key);
    let before = playlist_past(&cluster, 0, &room, Some(1)).await;
    playlist_past(&cluster, 1, &room, None).await;
    cluster.kill(0);
    let _ = first.wait().await;
    // Node 1's copy ends cleanly, and the room's live is over.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, text) = get(&cluster, 1, &format!("/live/{room}/index.m3u8")).await;
        if String::from_utf8_lossy(&text).contains("#EXT-X-ENDLIST") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ENDLIST on node 1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while room_status(&cluster, 2, &room).await != "scheduled" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the room stayed live"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The encoder comes back, to node 1: a new stream plays from every node.
    let _second = encoder(cluster.rtmp[1], &key);
    let after = playlist_past(&cluster, 2, &room, None).await;
    assert_ne!(after.stream, before.stream);
    assert_eq!(room_status(&cluster, 2, &room).await, "live");
    // What node 0 recorded before it died is kept, and closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let items = recordings(&cluster, 2, &room).await;
        let first = items.iter().find(|r| r["status"] == "complete");
        if let Some(first) = first {
            assert!(first["duration_ms"].as_i64().unwrap() > 0, "{first}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{items:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cluster.finish().await;
}
