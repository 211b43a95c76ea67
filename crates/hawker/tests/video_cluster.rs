//! Video and files on several nodes: three `hawker serve` processes sharing
//! PostgreSQL, NATS and one file storage (an S3-compatible server, or a folder
//! they all mount). ffmpeg publishes to one node; the others serve what it
//! made.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

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

/// A seller's shop and room, made through node 0: the seller's token, the
/// room and its stream key.
async fn room(cluster: &Cluster) -> (String, String, String) {
    let (seller, _) = cluster.sign_up(0, "ann@example.com").await;
    cluster
        .post(
            0,
            "/api/v1/shops",
            Some(&seller),
            json!({"handle": "anns", "name": "Ann's", "currency": "EUR"}),
        )
        .await;
    let made = cluster
        .post(
            0,
            "/api/v1/shops/anns/rooms",
            Some(&seller),
            json!({"title": "Live"}),
        )
        .await;
    (
        seller,
        made["room"]["id"].as_str().unwrap().to_owned(),
        made["stream_key"].as_str().unwrap().to_owned(),
    )
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
    let (seller, room, key) = room(cluster).await;
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
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let recording = loop {
        let (_, list) = cluster
            .call(
                1,
                reqwest::Method::GET,
                &format!("/api/v1/rooms/{room}/recordings"),
                None,
                None,
            )
            .await;
        if let Some(done) = list["items"]
            .as_array()
            .and_then(|items| items.first())
            .filter(|r| r["status"] == "complete")
        {
            break done.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no complete recording: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
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
    let shared = tempfile::tempdir().unwrap();
    let url = format!("file://{}", shared.path().display());
    let cluster = Cluster::start_with(
        3,
        "nats://127.0.0.1:4222",
        vec![("HAWKER_OBJECT_STORE_URL", url)],
    )
    .await;
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
    })
}

/// Node `i`'s live playlist of `room` once it has a segment past `after`.
async fn playlist_past(cluster: &Cluster, i: usize, room: &str, after: Option<u64>) -> Live {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = get(cluster, i, &format!("/live/{room}/index.m3u8")).await;
        let text = String::from_utf8_lossy(&body);
        if status == 200
            && let Some(found) = live(&text).filter(|l| after.is_none_or(|a| l.last > a))
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

/// The room's recordings, as node `i` lists them, once all are complete.
async fn complete_recordings(cluster: &Cluster, i: usize, room: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, list) = cluster
            .call(
                i,
                reqwest::Method::GET,
                &format!("/api/v1/rooms/{room}/recordings"),
                None,
                None,
            )
            .await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        if !items.is_empty() && items.iter().all(|r| r["status"] == "complete") {
            return items;
        }
        assert!(tokio::time::Instant::now() < deadline, "recordings: {list}");
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

/// After the move, node 1 goes on with node 0's stream: the same URIs,
/// numbers that keep rising after a discontinuity, the room live all along,
/// and one recording of both halves.
async fn the_stream_goes_on_at_node_1(cluster: &Cluster, room: &str, before: &Live) {
    let after = playlist_past(cluster, 1, room, Some(before.last)).await;
    assert_eq!(after.stream, before.stream, "the same stream: {after:?}");
    assert!(
        after.first > before.last,
        "numbers keep rising: {before:?} then {after:?}"
    );
    assert!(after.discontinuities > before.discontinuities, "{after:?}");
    assert_eq!(room_status(cluster, 2, room).await, "live");
}

#[tokio::test]
async fn an_encoder_that_moves_to_another_node_takes_the_stream_over_there() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("file://{}", shared.path().display());
    let cluster = Cluster::start_with(
        3,
        "nats://127.0.0.1:4222",
        vec![("HAWKER_OBJECT_STORE_URL", url)],
    )
    .await;
    let (_, room, key) = room(&cluster).await;
    let mut first = encoder(cluster.rtmp[0], &key);
    let before = playlist_past(&cluster, 0, &room, Some(1)).await;
    // The same key on another node: the newest encoder wins, and the node it
    // left cuts the first encoder off.
    let mut second = encoder(cluster.rtmp[1], &key);
    let cut = tokio::time::timeout(PATIENCE, first.wait()).await;
    assert!(cut.is_ok(), "node 0 let the first encoder go on publishing");
    the_stream_goes_on_at_node_1(&cluster, &room, &before).await;
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
    let shared = tempfile::tempdir().unwrap();
    let url = format!("file://{}", shared.path().display());
    let cluster = Cluster::start_with(
        3,
        "nats://127.0.0.1:4222",
        vec![("HAWKER_OBJECT_STORE_URL", url)],
    )
    .await;
    let (_, room, key) = room(&cluster).await;
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
