//! The doors an attacker tries, each found shut: RTMP clients that never
//! publish or send AMF bombs, a cut-off publisher, slow and greedy HTTP
//! clients, and the throttles.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::helpers::TestApp;
use crate::video::{eventually, publish, room_with_key};

/// C0 + C1 + C2 of a plain handshake.
fn handshake() -> Vec<u8> {
    let mut bytes = vec![3u8];
    bytes.extend_from_slice(&[0u8; 1536 * 2]);
    bytes
}

/// A ping request on the control chunk stream: a message the server
/// answers and otherwise ignores.
const PING: [u8; 18] = [0x02, 0, 0, 0, 0, 0, 6, 4, 0, 0, 0, 0, 0, 6, 0, 0, 0, 1];

/// Connects, handshakes, then pings every 2 ms (five times the ingest's
/// tick) and never publishes; true once the server closed the connection.
async fn chatter_until_closed(app: &TestApp) -> bool {
    let socket = TcpStream::connect(app.rtmp).await.unwrap();
    let (mut read, mut write) = socket.into_split();
    write.write_all(&handshake()).await.unwrap();
    let chatter = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(2));
        loop {
            every.tick().await;
            if write.write_all(&PING).await.is_err() {
                return;
            }
        }
    });
    let mut sink = vec![0u8; 8192];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match read.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    chatter.abort();
    closed
}

/// A room of the shop `vids` and its stream key.
async fn another_room(app: &TestApp, token: &str) -> (String, String) {
    let (status, body) = app
        .post(
            "/api/v1/shops/vids/rooms",
            Some(token),
            json!({"title": "Second"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["room"]["id"].as_str().unwrap().to_owned(),
        body["stream_key"].as_str().unwrap().to_owned(),
    )
}

/// Video packets in the recording at `url`, as ffprobe counts them.
async fn video_packets(url: &str) -> u64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "default=nw=1:nk=1",
            url,
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default().trim().to_owned();
    first.parse().unwrap_or_else(|_| {
        panic!(
            "ffprobe said {text:?}, {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn chattering_clients_and_an_amf_bomb_are_closed_while_a_real_encoder_keeps_publishing() {
    let app = TestApp::spawn_with(|c| c.media.rtmp.publish_timeout = Duration::from_secs(1)).await;
    let (seller, room, key) = room_with_key(&app).await;
    let (_, bomb_key) = another_room(&app, &seller.token).await;
    let seconds = 6;
    let mut encoder = publish(&app, &key, seconds);
    eventually("the stream to start", || async {
        let (status, _) = app.get(&format!("/api/v1/rooms/{room}/stream"), None).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;

    // Pings every 2 ms used to reset the publish timeout, which was only
    // looked at on a tick that read nothing: such a client stayed for ever.
    let chatterers: Vec<_> = (0..8).map(|_| chatter_until_closed(&app)).collect();
    // A publisher whose metadata is 8 MiB of AMF null markers: millions of
    // values decoded on the one RTMP thread.
    let bomb = async {
        let mut bomber = media::client::Connection::publish(app.rtmp, &bomb_key)
            .await
            .unwrap();
        let nulls = vec![0x05u8; (8 << 20) - 64];
        bomber.tag(media::flv::TAG_SCRIPT, 0, Bytes::from(nulls));
        bomber.flush().await.unwrap();
        bomber.next_media().await.is_err()
    };
    let (chatterers, bombed) = tokio::join!(futures_util::future::join_all(chatterers), bomb);
    assert!(chatterers.iter().all(|closed| *closed), "{chatterers:?}");
    assert!(bombed, "the AMF bomb's connection stays open");

    // The real encoder was never cut off and lost no frame.
    let (_, stats) = app.get(&format!("/api/v1/rooms/{room}/stream"), None).await;
    assert_eq!(stats["publishers"], 1, "{stats}");
    assert!(encoder.wait().await.unwrap().success());
    let list = eventually("the recording to complete", || async {
        let (_, list) = app
            .get(&format!("/api/v1/rooms/{room}/recordings"), None)
            .await;
        (list["items"][0]["status"] == "complete").then_some(list)
    })
    .await;
    let rec = list["items"][0]["id"].as_str().unwrap();
    let url = app.url(&format!("/recordings/{rec}/index.m3u8"));
    assert_eq!(video_packets(&url).await, u64::from(seconds) * 30);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("hawker_rtmp_rejected_total{reason=\"no_publish\"} 8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hawker_rtmp_rejected_total{reason=\"protocol\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn rotating_the_stream_key_cuts_the_running_publisher() {
    let app = TestApp::spawn_with(|c| c.media.reconnect_grace = Duration::from_secs(60)).await;
    let (seller, room, key) = room_with_key(&app).await;
    let mut encoder = publish(&app, &key, 120);
    eventually("the stream to start", || async {
        let (status, _) = app.get(&format!("/api/v1/rooms/{room}/stream"), None).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    let (status, rotated) = app
        .post(
            &format!("/api/v1/rooms/{room}/stream-key"),
            Some(&seller.token),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    // ffmpeg ends (with an error) once the server drops it; it had two
    // minutes to go.
    let exit = tokio::time::timeout(Duration::from_secs(30), encoder.wait())
        .await
        .expect("the publisher with the old key is still connected")
        .unwrap();
    assert!(!exit.success());
    // The old key opens nothing now; the new one does.
    let mut again = publish(&app, &key, 2);
    assert!(!again.wait().await.unwrap().success());
    let new_key = rotated["stream_key"].as_str().unwrap();
    let mut fresh = publish(&app, new_key, 2);
    assert!(fresh.wait().await.unwrap().success());
    let (status, stats) = app.get(&format!("/api/v1/rooms/{room}/stream"), None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["publishers"], 2, "{stats}");
}
