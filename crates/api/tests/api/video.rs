//! Video end to end with the real ffmpeg: publish over RTMP, play LL-HLS and
//! HTTP-FLV, read the recording; and what bad encoders get.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::helpers::{Account, TestApp, assert_error};

/// A seller's room and its stream key.
pub(crate) async fn room_with_key(app: &TestApp) -> (Account, String, String) {
    let seller = app.seller("vids").await;
    let (status, body) = app
        .post(
            "/api/v1/shops/vids/rooms",
            Some(&seller.token),
            json!({"title": "Live"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let room = body["room"]["id"].as_str().unwrap().to_owned();
    let key = body["stream_key"].as_str().unwrap().to_owned();
    (seller, room, key)
}

/// ffmpeg publishing `seconds` of 320x240 H.264 with B-frames and AAC, in
/// real time, as OBS would.
pub(crate) fn publish(app: &TestApp, key: &str, seconds: u32) -> Child {
    Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=320x240:rate=30:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=44100:duration={seconds}"
        ))
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "30", "-pix_fmt",
            "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv",
        ])
        .arg(format!("rtmp://{}/live/{key}", app.rtmp))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg is installed (scripts/test installs it)")
}

/// Polls `check` every 100 ms for up to 20 s.
pub(crate) async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    for _ in 0..200 {
        if let Some(found) = check().await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn text(app: &TestApp, path: &str) -> (StatusCode, String) {
    let res = app.client.get(app.url(path)).send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

/// Streams as ffprobe sees them: (codec, width, height) per stream.
async fn probe(url: &str) -> Vec<(String, i64, i64)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rw_timeout",
            "5000000",
            "-show_entries",
            "stream=codec_name,width,height:format=duration",
            "-of",
            "json",
            url,
        ])
        .output()
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    body["streams"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["codec_name"].as_str().unwrap_or_default().to_owned(),
                s["width"].as_i64().unwrap_or(0),
                s["height"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

async fn duration(url: &str) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "default=nw=1:nk=1",
            url,
        ])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0)
}

fn has_h264_and_aac(streams: &[(String, i64, i64)]) -> bool {
    streams.iter().any(|s| s == &("h264".into(), 320, 240))
        && streams.iter().any(|(codec, _, _)| codec == "aac")
}

/// The value of `name=` in a tag line's attributes.
fn attribute<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_once(':')?
        .1
        .split(',')
        .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.trim_matches('"'))
}

#[tokio::test]
async fn a_published_stream_plays_over_ll_hls_and_http_flv_and_becomes_a_shoppable_recording() {
    let app = TestApp::spawn().await;
    let (seller, room, key) = room_with_key(&app).await;
    let product = app.product(&seller, "vids", "TEE", 5).await;
    let mut events = app
        .listen(&domain::ids::RoomId::from_string(room.clone()))
        .await;
    let mut viewer = crate::live::open(&app, &room, None, None).await;
    let snapshot = crate::live::next(&mut viewer).await;
    assert_eq!(
        snapshot["data"]["room"]["status"], "scheduled",
        "{snapshot}"
    );
    let mut encoder = publish(&app, &key, 8);
    let playlist_path = format!("/live/{room}/index.m3u8");

    // Live within moments, with two segments listed.
    let playlist = eventually("two segments", || async {
        let (status, body) = text(&app, &playlist_path).await;
        (status == StatusCode::OK && body.matches("#EXTINF").count() >= 2).then_some(body)
    })
    .await;
    let live = events.next().await;
    assert_eq!(live["type"], "stream.live");
    // Viewers in the room hear of it.
    let frame = crate::live::next_of(&mut viewer, "stream.live").await;
    assert_eq!(frame["data"]["hls"], format!("/live/{room}/index.m3u8"));
    let (_, body) = app.get(&format!("/api/v1/rooms/{room}"), None).await;
    assert_eq!(body["status"], "live", "{body}");
    let (status, stats) = app.get(&format!("/api/v1/rooms/{room}/stream"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["video_codec"], "avc1.64000d", "{stats}");
    assert_eq!(stats["audio_codec"], "mp4a.40.2");
    assert_eq!(
        (stats["width"].as_i64(), stats["height"].as_i64()),
        (Some(320), Some(240))
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&format!("hawker_stream_frame_rate{{room=\"{room}\"}}")),
        "{metrics}"
    );

    // The LL-HLS tags.
    for tag in [
        "#EXT-X-VERSION:9",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600",
        "#EXT-X-PART-INF:PART-TARGET=0.200",
        "#EXT-X-MAP:URI=",
        "#EXT-X-PROGRAM-DATE-TIME:",
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=",
    ] {
        assert!(playlist.contains(tag), "{tag} missing in\n{playlist}");
    }
    let mut after_segment_start = true;
    for line in playlist.lines() {
        if line.starts_with("#EXT-X-PROGRAM-DATE-TIME") {
            after_segment_start = true;
        } else if line.starts_with("#EXT-X-PART:") {
            let duration: f64 = attribute(line, "DURATION").unwrap().parse().unwrap();
            assert!(duration <= 0.2, "{line}");
            assert_eq!(
                line.ends_with("INDEPENDENT=YES"),
                after_segment_start,
                "only a segment's first part starts with a keyframe here: {line}"
            );
            after_segment_start = false;
        }
    }

    // A blocking reload for the hinted part returns once it exists.
    let hint = playlist
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT"))
        .and_then(|l| attribute(l, "URI"))
        .unwrap()
        .to_owned();
    let (msn, part) = hint
        .rsplit_once('/')
        .unwrap()
        .1
        .strip_prefix("part")
        .unwrap()
        .strip_suffix(".m4s")
        .unwrap()
        .split_once('.')
        .unwrap();
    let (status, reloaded) = text(
        &app,
        &format!("{playlist_path}?_HLS_msn={msn}&_HLS_part={part}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(reloaded.contains(&format!("URI=\"{hint}\"")), "{reloaded}");
    let part_url = app.url(&format!("/live/{room}/{hint}"));
    let res = app.client.get(&part_url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let too_far = msn.parse::<u64>().unwrap() + 10;
    let (status, body) = app
        .get(&format!("{playlist_path}?_HLS_msn={too_far}"), None)
        .await;
    assert_error((status, body), StatusCode::BAD_REQUEST, "bad_request");

    // ffprobe plays both.
    let hls = probe(&app.url(&playlist_path)).await;
    assert!(has_h264_and_aac(&hls), "LL-HLS: {hls:?}");
    let flv = probe(&app.url(&format!("/live/{room}.flv"))).await;
    assert!(has_h264_and_aac(&flv), "HTTP-FLV: {flv:?}");

    // A pin during the live lands on the recording's timeline.
    let (status, _) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/rooms/{room}/pin"),
            Some(&seller.token),
            Some(json!({"product_id": product["id"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let exit = encoder.wait().await.unwrap();
    assert!(exit.success(), "ffmpeg failed");
    let recording = eventually("a complete recording", || async {
        let (_, list) = app
            .get(&format!("/api/v1/rooms/{room}/recordings"), None)
            .await;
        let first = list["items"].get(0).cloned()?;
        (first["status"] == "complete").then_some(first)
    })
    .await;
    let (_, body) = app.get(&format!("/api/v1/rooms/{room}"), None).await;
    assert_eq!(
        body["status"], "scheduled",
        "the room waits for the next live"
    );
    crate::live::next_of(&mut viewer, "stream.ended").await;
    assert!(playlist_ended(&app, &playlist_path).await);

    let (status, view) = app
        .get(
            &format!("/api/v1/recordings/{}", recording["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let pin = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "pin")
        .cloned()
        .unwrap_or_else(|| panic!("a pin on the timeline: {view}"));
    assert_eq!(pin["data"]["product_id"], product["id"]);
    let at = pin["at_ms"].as_i64().unwrap();
    assert!((1_000..8_000).contains(&at), "pinned mid-live: {at}");
    let url = app.url(view["playlist_url"].as_str().unwrap());
    let streams = probe(&url).await;
    assert!(has_h264_and_aac(&streams), "recording: {streams:?}");
    let seconds = duration(&url).await;
    assert!(
        (7.5..=8.5).contains(&seconds),
        "recording lasts {seconds} s"
    );
}

async fn playlist_ended(app: &TestApp, path: &str) -> bool {
    let (_, body) = text(app, path).await;
    body.trim_end().ends_with("#EXT-X-ENDLIST")
}

#[tokio::test]
async fn a_wrong_stream_key_is_refused() {
    let app = TestApp::spawn().await;
    let (_, room, _) = room_with_key(&app).await;
    let mut encoder = publish(&app, "live_0000000000000000", 3);
    let exit = tokio::time::timeout(Duration::from_secs(20), encoder.wait())
        .await
        .expect("ffmpeg gives up")
        .unwrap();
    assert!(!exit.success());
    let (status, _) = app.get(&format!("/api/v1/rooms/{room}/stream"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(app.metrics().await.contains("hawker_rtmp_rejected_total"));
}

#[tokio::test]
async fn a_second_publisher_with_the_same_key_takes_over_at_once() {
    let app = TestApp::spawn().await;
    let (_, room, key) = room_with_key(&app).await;
    let stats_path = format!("/api/v1/rooms/{room}/stream");
    let mut first = publish(&app, &key, 30);
    eventually("the first publisher", || async {
        let (status, stats) = app.get(&stats_path, None).await;
        (status == StatusCode::OK && stats["video_codec"].is_string()).then_some(())
    })
    .await;
    let mut second = publish(&app, &key, 30);
    // The stale session is dropped: its encoder sees the connection close.
    let exit = tokio::time::timeout(Duration::from_secs(15), first.wait())
        .await
        .expect("the first encoder is cut off")
        .unwrap();
    assert!(!exit.success());
    let (status, stats) = app.get(&stats_path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["live"], true);
    assert_eq!(stats["publishers"], 2);
    // The playlist goes on without ending, fed by the new publisher.
    let playlist_path = format!("/live/{room}/index.m3u8");
    let (_, before) = text(&app, &playlist_path).await;
    let after = eventually("the playlist to move on", || async {
        let (_, after) = text(&app, &playlist_path).await;
        (after != before).then_some(after)
    })
    .await;
    assert!(!after.contains("#EXT-X-ENDLIST"));
    second.kill().await.unwrap();
    eventually("the stream to end", || async {
        playlist_ended(&app, &playlist_path).await.then_some(())
    })
    .await;
}

/// The highest media sequence number a playlist names, and its stream's prefix.
fn last_segment(playlist: &str) -> (u64, String) {
    let uri = playlist
        .lines()
        .rfind(|l| l.contains("seg") && l.ends_with(".m4s"))
        .expect("a segment");
    let (prefix, name) = uri.rsplit_once("seg").unwrap();
    (
        name.trim_end_matches(".m4s").parse().unwrap(),
        prefix.to_owned(),
    )
}

/// An HTTP-FLV viewer that reads the room's stream until it ends: the
/// timestamps of the video tags it got so far, and whether the body ended.
struct FlvWatcher {
    video: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FlvWatcher {
    async fn start(app: &TestApp, room: &str) -> Self {
        let mut res = app
            .client
            .get(app.url(&format!("/live/{room}.flv")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let video = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = video.clone();
        let task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut at = 13; // the FLV header and the first previous-tag size
            while let Ok(Some(chunk)) = res.chunk().await {
                buf.extend_from_slice(&chunk);
                while buf.len() >= at + 11 {
                    let size =
                        u32::from_be_bytes([0, buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
                    if buf.len() < at + 11 + size + 4 {
                        break;
                    }
                    if buf[at] == 9 {
                        let ts = u32::from_be_bytes([
                            buf[at + 7],
                            buf[at + 4],
                            buf[at + 5],
                            buf[at + 6],
                        ]);
                        seen.lock().unwrap().push(ts);
                    }
                    at += 11 + size + 4;
                }
            }
        });
        Self { video, task }
    }

    fn video(&self) -> Vec<u32> {
        self.video.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn an_encoder_that_reconnects_within_the_grace_continues_the_playlist() {
    let app = TestApp::spawn_with(|c| c.media.reconnect_grace = Duration::from_secs(10)).await;
    let (_, room, key) = room_with_key(&app).await;
    let stats_path = format!("/api/v1/rooms/{room}/stream");
    let playlist_path = format!("/live/{room}/index.m3u8");
    let mut first = publish(&app, &key, 3);
    eventually("the first encoder's stream", || async {
        let (status, stats) = app.get(&stats_path, None).await;
        (status == StatusCode::OK && stats["video_codec"].is_string()).then_some(())
    })
    .await;
    let watcher = FlvWatcher::start(&app, &room).await;
    assert!(first.wait().await.unwrap().success());
    // The encoder is gone; the stream waits for it, still live, not ended.
    let stats = eventually("the stream to notice its encoder left", || async {
        let (status, stats) = app.get(&stats_path, None).await;
        (status == StatusCode::OK && stats["reconnecting"] == true).then_some(stats)
    })
    .await;
    assert_eq!(stats["live"], true);
    let frames_of_first = watcher.video().len();
    assert!(
        frames_of_first > 0,
        "the HTTP-FLV viewer got the first encoder's frames"
    );
    let (_, before) = text(&app, &playlist_path).await;
    assert!(!before.contains("#EXT-X-ENDLIST"), "{before}");
    let (last_before, prefix) = last_segment(&before);
    let (_, room_view) = app.get(&format!("/api/v1/rooms/{room}"), None).await;
    assert_eq!(room_view["status"], "live", "{room_view}");

    // It comes back: the same playlist goes on, numbers rising, the join marked.
    let mut second = publish(&app, &key, 30);
    let after = eventually("segments from the returning encoder", || async {
        let (_, after) = text(&app, &playlist_path).await;
        (last_segment(&after).0 > last_before + 1).then_some(after)
    })
    .await;
    assert_eq!(last_segment(&after).1, prefix, "the same stream's URIs");
    assert!(after.contains("#EXT-X-DISCONTINUITY\n"), "{after}");
    assert!(!after.contains("#EXT-X-ENDLIST"));
    let (_, stats) = app.get(&stats_path, None).await;
    assert_eq!(
        (stats["publishers"].clone(), stats["reconnecting"].clone()),
        (json!(2), json!(false))
    );
    // The HTTP-FLV viewer kept its connection: frames from both encoders, on
    // one clock that never goes back.
    let video = eventually("the returning encoder's frames over HTTP-FLV", || async {
        let video = watcher.video();
        (video.len() > frames_of_first + 30).then_some(video)
    })
    .await;
    assert!(
        !watcher.task.is_finished(),
        "the HTTP-FLV body is still open"
    );
    assert!(
        video.windows(2).all(|w| w[0] <= w[1]),
        "timestamps go back: {video:?}"
    );

    // Gone for longer than the grace: the stream ends.
    second.kill().await.unwrap();
    eventually("the stream to end after the grace", || async {
        playlist_ended(&app, &playlist_path).await.then_some(())
    })
    .await;
    let (_, room_view) = app.get(&format!("/api/v1/rooms/{room}"), None).await;
    assert_eq!(room_view["status"], "scheduled", "{room_view}");
}

/// A connection the server should close on its own, and how long that may take.
async fn closed_by_server(app: &TestApp, bytes: &[u8], within: Duration) -> bool {
    let mut socket = TcpStream::connect(app.rtmp).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    let mut sink = vec![0u8; 8192];
    tokio::time::timeout(within, async {
        loop {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// C0 + C1 + C2 of a plain handshake.
pub(crate) fn handshake() -> Vec<u8> {
    let mut bytes = vec![3u8];
    bytes.extend_from_slice(&[0u8; 1536 * 2]);
    bytes
}

#[tokio::test]
async fn bad_encoders_are_closed_and_good_ones_still_publish() {
    let app = TestApp::spawn_with(|c| c.media.rtmp.publish_timeout = Duration::from_secs(1)).await;
    let (seller, room, key) = room_with_key(&app).await;
    let wait = Duration::from_secs(5);
    // Garbage instead of a handshake.
    assert!(closed_by_server(&app, b"GET / HTTP/1.1\r\n\r\n", wait).await);
    // A handshake that never finishes.
    assert!(closed_by_server(&app, &[3, 0, 0], wait).await);
    // A chunk claiming a 16 MB message.
    let mut huge = handshake();
    huge.extend_from_slice(&[0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0]);
    assert!(closed_by_server(&app, &huge, wait).await);
    // A command that is not AMF.
    let mut bad_amf = handshake();
    bad_amf.extend_from_slice(&[
        0x03, 0, 0, 0, 0, 0, 4, 20, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44,
    ]);
    assert!(closed_by_server(&app, &bad_amf, wait).await);
    // A chunk size of zero.
    let mut zero = handshake();
    zero.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(closed_by_server(&app, &zero, wait).await);

    // The server still takes a real encoder.
    let mut encoder = publish(&app, &key, 2);
    assert!(encoder.wait().await.unwrap().success());
    let list = eventually("the recording to complete", || async {
        let (_, list) = app
            .get(&format!("/api/v1/rooms/{room}/recordings"), None)
            .await;
        (list["items"][0]["status"] == "complete").then_some(list)
    })
    .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    // Only the seller deletes it; its files go with it.
    let rec = list["items"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/recordings/{rec}");
    let playlist = format!("/recordings/{rec}/index.m3u8");
    assert_eq!(text(&app, &playlist).await.0, StatusCode::OK);
    let stranger = app.sign_up("stranger@example.com").await;
    assert_error(
        app.delete(&path, Some(&stranger.token)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_eq!(
        app.delete(&path, Some(&seller.token)).await.0,
        StatusCode::NO_CONTENT
    );
    assert_error(
        app.get(&path, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(text(&app, &playlist).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_http_flv_viewer_that_stops_reading_is_dropped() {
    let app = TestApp::spawn_with(|c| c.send_timeout = Duration::from_secs(2)).await;
    let (_, room, key) = room_with_key(&app).await;
    // A fast stream (about 3 Mbit/s), so the stalled viewer's buffers fill quickly.
    let mut encoder = Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=640x360:rate=30:duration=20")
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "3M",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "flv",
        ])
        .arg(format!("rtmp://{}/live/{key}", app.rtmp))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("the stream", || async {
        let (status, _) = app.get(&format!("/api/v1/rooms/{room}/stream"), None).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    // A viewer with a tiny receive window that reads the answer's head and stops.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(app.addr).await.unwrap();
    stalled
        .write_all(format!("GET /live/{room}.flv HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 512];
    let n = stalled.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    let viewers = |metrics: String| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("hawker_httpflv_viewers "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    assert_eq!(viewers(app.metrics().await), Some(1.0));
    // Its window stays shut; the kernel gives up on it and the server lets it go.
    eventually("the stalled viewer to be dropped", || async {
        (viewers(app.metrics().await) == Some(0.0)).then_some(())
    })
    .await;
    // Other viewers still play.
    let streams = probe(&app.url(&format!("/live/{room}.flv"))).await;
    assert!(
        streams.iter().any(|(codec, _, _)| codec == "h264"),
        "{streams:?}"
    );
    encoder.kill().await.unwrap();
}
