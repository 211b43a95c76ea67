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
use crate::video::{eventually, handshake, publish, room_with_key};

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
    // Now it is closed after 100 messages without publishing (and at the
    // publish deadline, however busy, were it slower).
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
    let series = format!("hawker_stream_live{{room=\"{room}\"}} 1");
    assert!(app.metrics().await.contains(&series), "{series}");
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
    // The room's series went with its stream.
    assert!(!metrics.contains(&room), "{metrics}");
    assert!(
        metrics.contains("hawker_rtmp_rejected_total{reason=\"chatter\"} 8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hawker_rtmp_rejected_total{reason=\"amf_values\"} 1"),
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

/// A client whose connections come from `address` (any of 127.0.0.0/8).
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Signs in as `email`, from `client`, with `forwarded_for` as the
/// X-Forwarded-For a proxy would add.
async fn sign_in(
    app: &TestApp,
    client: &reqwest::Client,
    forwarded_for: Option<&str>,
    email: &str,
    password: &str,
) -> (StatusCode, Option<u64>) {
    let mut request = client
        .post(app.url("/api/v1/sessions"))
        .json(&json!({"email": email, "password": password}));
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    let res = request.send().await.unwrap();
    let wait = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (res.status(), wait)
}

#[tokio::test]
async fn bad_passwords_from_one_address_do_not_lock_the_owner_out() {
    let app = TestApp::spawn().await;
    app.sign_up("seller@example.com").await;
    let attacker = client_from("127.0.0.2");
    let owner = client_from("127.0.0.3");
    let mut refused = 0;
    for _ in 0..12 {
        let (status, wait) = sign_in(&app, &attacker, None, "seller@example.com", "guess").await;
        match status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert!(wait.is_some_and(|w| w >= 1), "Retry-After: {wait:?}");
            }
            other => panic!("{other}"),
        }
    }
    // Five free failures, then each try waits longer: the guesses past the
    // fifth, coming at once, are refused.
    assert!(refused >= 6, "{refused} of 12 refused");
    let (status, _) = sign_in(&app, &attacker, None, "seller@example.com", "correct horse").await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the attacker's address waits"
    );
    // The owner, elsewhere, is not held up by the attacker's failures.
    let (status, _) = sign_in(&app, &owner, None, "seller@example.com", "correct horse").await;
    assert_eq!(status, StatusCode::CREATED);
    // Successful sign-ins are not counted against an address.
    for _ in 0..20 {
        let (status, _) = sign_in(&app, &owner, None, "seller@example.com", "correct horse").await;
        assert_eq!(status, StatusCode::CREATED);
    }
}

#[tokio::test]
async fn sign_ins_through_a_trusted_proxy_are_counted_per_client() {
    let app = TestApp::spawn_with(|c| {
        c.trusted_proxies = vec![domain::net::Cidr::parse("127.0.0.1/32").unwrap()];
        c.sign_in_failures_per_address = 5;
    })
    .await;
    app.sign_up("ann@example.com").await;
    app.sign_up("bob@example.com").await;
    let proxy = client_from("127.0.0.1");
    // One client behind the proxy fails five times, on five accounts.
    for n in 0..5 {
        let email = format!("nobody{n}@example.com");
        let (status, _) = sign_in(&app, &proxy, Some("203.0.113.5"), &email, "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = sign_in(
        &app,
        &proxy,
        Some("203.0.113.5"),
        "ann@example.com",
        "correct horse",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "that client is refused"
    );
    // Everybody else behind the same proxy signs in.
    let (status, _) = sign_in(
        &app,
        &proxy,
        Some("198.51.100.7, 203.0.113.5"),
        "bob@example.com",
        "correct horse",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the nearest hop is the client"
    );
    let (status, _) = sign_in(
        &app,
        &proxy,
        Some("203.0.113.5, 198.51.100.7"),
        "bob@example.com",
        "correct horse",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // A client that is no proxy cannot choose its address.
    let direct = client_from("127.0.0.2");
    for _ in 0..5 {
        let (status, _) = sign_in(
            &app,
            &direct,
            Some("192.0.2.1"),
            "nobody@example.com",
            "guess",
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = sign_in(
        &app,
        &direct,
        Some("192.0.2.99"),
        "ann@example.com",
        "correct horse",
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn sign_ups_are_limited_per_address() {
    let app = TestApp::spawn_with(|c| c.sign_ups_per_address = 3).await;
    let bot = client_from("127.0.0.2");
    let sign_up = |client: &reqwest::Client, n: u32| {
        client
            .post(app.url("/api/v1/users"))
            .json(&json!({"email": format!("bot{n}@example.com"), "password": "correct horse", "display_name": "Bot"}))
            .send()
    };
    for n in 0..3 {
        assert_eq!(
            sign_up(&bot, n).await.unwrap().status(),
            StatusCode::CREATED
        );
    }
    let res = sign_up(&bot, 3).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    let person = client_from("127.0.0.3");
    assert_eq!(
        sign_up(&person, 4).await.unwrap().status(),
        StatusCode::CREATED
    );
}

/// A TCP connection to the app from `address`.
async fn connect_from(app: &TestApp, address: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::new(address.parse().unwrap(), 0))
        .unwrap();
    socket.connect(app.addr).await.unwrap()
}

/// Reads until the server closes; what it said.
async fn read_to_close(socket: &mut TcpStream) -> String {
    let mut said = Vec::new();
    let _ = socket.read_to_end(&mut said).await;
    String::from_utf8_lossy(&said).into_owned()
}

#[tokio::test]
async fn a_slowloris_client_is_dropped_and_others_are_served() {
    let app = TestApp::spawn_with(|c| c.http.header_read_timeout = Duration::from_secs(1)).await;
    let mut slow = connect_from(&app, "127.0.0.2").await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header byte every 100 ms, for ever: the server's deadline for the
    // headers is what ends it.
    let (mut read, mut write) = slow.into_split();
    let dribble = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            if write.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut said = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut said)).await;
    dribble.abort();
    assert!(closed.is_ok(), "the slow client is still connected");
    let said = String::from_utf8_lossy(&said);
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 408"),
        "{said}"
    );
    let (status, _) = app.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn connections_over_the_per_address_cap_get_429() {
    let app = TestApp::spawn_with(|c| c.http.max_connections_per_address = 10).await;
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut socket = connect_from(&app, "127.0.0.2").await;
        // Served, so it is surely counted, and kept alive.
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        socket.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
        held.push(socket);
    }
    let mut eleventh = connect_from(&app, "127.0.0.2").await;
    let said = read_to_close(&mut eleventh).await;
    assert!(said.starts_with("HTTP/1.1 429"), "{said}");
    assert!(said.contains("\"too_many_connections\""), "{said}");
    // Another address is not held up.
    let mut other = connect_from(&app, "127.0.0.3").await;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_close(&mut other).await.starts_with("HTTP/1.1 200"));
    // A connection closed gives its place back.
    drop(held.pop());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("hawker_http_connections_refused_total{limit=\"per_address\"} 1"),
        "{metrics}"
    );
    let mut again = None;
    for _ in 0..100 {
        let mut socket = connect_from(&app, "127.0.0.2").await;
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let said = read_to_close(&mut socket).await;
        if said.starts_with("HTTP/1.1 200") {
            again = Some(said);
            break;
        }
        // The server has not seen the close yet.
        tokio::task::yield_now().await;
    }
    assert!(again.is_some(), "the place was not given back");
}

/// A room WebSocket opened from `address`.
async fn socket_from(app: &TestApp, address: &str, room: &str) -> crate::live::Socket {
    let stream = connect_from(app, address).await;
    let url = format!("ws://{}/api/v1/rooms/{room}/ws", app.addr);
    tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn two_hundred_websockets_from_one_address_meet_a_cap_of_one_hundred() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.config.http.max_websockets_per_address, 100,
        "the default"
    );
    let (_, room) = crate::live::room_of(&app).await;
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        let mut socket = socket_from(&app, "127.0.0.2", &room).await;
        let first = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut socket),
        )
        .await
        .expect("a frame within 5 s");
        match first {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_))) => open.push(socket),
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(close)))) => {
                assert_eq!(u16::from(close.code), 1013, "{close:?}");
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((open.len(), refused), (100, 100));
    // Someone else still gets in, and the room counts only the admitted.
    let mut other = socket_from(&app, "127.0.0.3", &room).await;
    let snapshot = crate::live::next(&mut other).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("hawker_websockets_refused_total{limit=\"per_address\"} 100"),
        "{metrics}"
    );
}

#[tokio::test]
async fn metrics_can_ask_for_a_token() {
    let app = TestApp::spawn_with(|c| c.metrics_token = Some("scrape-me".into())).await;
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("hawker_streams_live"));
}

/// Reserves `units` of `variant` at list price as `token`, from `client`.
async fn hoard(
    app: &TestApp,
    client: &reqwest::Client,
    token: &str,
    variant: &Value,
    units: i64,
) -> (StatusCode, Value) {
    let res = client
        .post(app.url("/api/v1/orders"))
        .bearer_auth(token)
        .header(
            "idempotency-key",
            format!("k-{}", domain::ids::OrderId::generate()),
        )
        .json(&json!({"lines": [{"variant_id": variant, "quantity": units}]}))
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap())
}

#[tokio::test]
async fn a_hoarding_script_is_stopped_at_the_unpaid_caps() {
    let app = TestApp::spawn_with(|c| {
        c.unpaid_caps = store::UnpaidCaps {
            orders_per_buyer: 3,
            units_per_buyer: 5,
            orders_per_address: 4,
        };
    })
    .await;
    let (_, room, sale) = crate::selling::live_sale(&app, 100, 10, 5).await;
    let variant = sale["variant_id"].clone();
    let script = client_from("127.0.0.2");
    let accounts = [
        app.sign_up("bot1@example.com").await,
        app.sign_up("bot2@example.com").await,
        app.sign_up("bot3@example.com").await,
    ];
    // One account: three orders, then no more until it pays.
    for _ in 0..3 {
        let (status, order) = hoard(&app, &script, &accounts[0].token, &variant, 1).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
    }
    let (status, refused) = hoard(&app, &script, &accounts[0].token, &variant, 1).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("too_many_unpaid"))
    );
    // Nor in a flash sale.
    let (status, refused, _) = crate::selling::buy(
        &app,
        &accounts[0].token,
        &room,
        &sale,
        Some("f1"),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("too_many_unpaid"))
    );
    // Another account: five units at most.
    let (status, _) = hoard(&app, &script, &accounts[1].token, &variant, 6).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, order) = hoard(&app, &script, &accounts[1].token, &variant, 5).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    // A third account from the same address meets the address's cap.
    let (status, refused) = hoard(&app, &script, &accounts[2].token, &variant, 1).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("too_many_unpaid"))
    );
    // From elsewhere it buys, in a flash sale with a reservation of its own.
    let elsewhere = client_from("127.0.0.3");
    let (status, tapped, _) = crate::selling::buy(
        &app,
        &accounts[2].token,
        &room,
        &sale,
        Some("f2"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{tapped}");
    let held_ms = |order: &Value| {
        let at = |field: &str| {
            serde_json::from_value::<domain::Timestamp>(order[field].clone())
                .unwrap()
                .as_millis()
        };
        at("expires_at") - at("created_at")
    };
    assert_eq!(
        held_ms(&tapped),
        3 * 60 * 1000,
        "a flash-sale tap waits 3 minutes"
    );
    assert_eq!(
        held_ms(&order),
        10 * 60 * 1000,
        "an order at list price waits 10"
    );
    let (status, _) = hoard(&app, &elsewhere, &accounts[2].token, &variant, 1).await;
    assert_eq!(status, StatusCode::CREATED);
    // Paid, an order no longer counts.
    let res = app
        .client
        .post(app.url(&format!("/api/v1/orders/{}/payments", order["id"].as_str().unwrap())))
        .bearer_auth(&accounts[1].token)
        .header("idempotency-key", "pay-1")
        .json(&json!({"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let (status, order) = hoard(&app, &script, &accounts[1].token, &variant, 5).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
}

/// Reads up to the error event with `code`, past any other.
async fn error_with(socket: &mut crate::live::Socket, code: &str) {
    while crate::live::next_of(socket, "error").await["code"] != code {}
}

#[tokio::test]
async fn a_dismissed_moderator_and_a_signed_out_session_lose_their_rights_on_open_sockets() {
    use crate::live::{next, next_of, open, send};
    let app = TestApp::spawn().await;
    let (seller, room) = crate::live::room_of(&app).await;
    let moderator = app.sign_up("mod@example.com").await;
    let appoint = format!("/api/v1/shops/anns/moderators/{}", moderator.id);
    let (status, _) = app
        .call(reqwest::Method::PUT, &appoint, Some(&seller.token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/rooms/{room}/slow-mode"),
            Some(&seller.token),
            Some(json!({"seconds": 30})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut socket = open(&app, &room, Some(&moderator.token), None).await;
    next(&mut socket).await;
    // A moderator is not held to slow mode.
    for text in ["one", "two"] {
        send(&mut socket, json!({"type": "chat", "text": text})).await;
        assert_eq!(next_of(&mut socket, "chat").await["data"]["text"], text);
    }
    let (status, _) = app.delete(&appoint, Some(&seller.token)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The socket opened as a moderator hears it, and is held to slow mode.
    assert_eq!(next_of(&mut socket, "moderator").await["moderator"], false);
    send(&mut socket, json!({"type": "chat", "text": "three"})).await;
    send(&mut socket, json!({"type": "chat", "text": "four"})).await;
    let refused = next_of(&mut socket, "error").await;
    assert_eq!(refused["code"], "slow_mode", "{refused}");

    // Signed out elsewhere (the session this socket was opened with), the
    // socket watches on and cannot chat.
    let (status, _) = app
        .delete("/api/v1/sessions/current", Some(&moderator.token))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    error_with(&mut socket, "signed_out").await;
    send(&mut socket, json!({"type": "chat", "text": "five"})).await;
    error_with(&mut socket, "unauthenticated").await;
    // Another session of the seller's is not touched by this one's end.
    let mut seller_socket = open(&app, &room, Some(&seller.token), None).await;
    next(&mut seller_socket).await;
    let other = app
        .post(
            "/api/v1/sessions",
            None,
            json!({"email": "anns@example.com", "password": "correct horse"}),
        )
        .await;
    assert_eq!(other.0, StatusCode::CREATED, "{}", other.1);
    let (status, _) = app
        .delete("/api/v1/sessions/current", other.1["token"].as_str())
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    send(
        &mut seller_socket,
        json!({"type": "chat", "text": "still here"}),
    )
    .await;
    assert_eq!(
        next_of(&mut seller_socket, "chat").await["data"]["text"],
        "still here"
    );
}

#[tokio::test]
async fn http_flv_viewers_over_the_per_address_cap_get_429() {
    let app = TestApp::spawn_with(|c| c.http.max_flv_viewers_per_address = 2).await;
    let (_, room, key) = room_with_key(&app).await;
    let mut encoder = publish(&app, &key, 60);
    let url = app.url(&format!("/live/{room}.flv"));
    let viewer = client_from("127.0.0.2");
    let first = eventually("the stream to play", || async {
        let res = viewer.get(&url).send().await.ok()?;
        (res.status() == StatusCode::OK).then_some(res)
    })
    .await;
    let second = viewer.get(&url).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    let third = viewer.get(&url).send().await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");
    // Another address watches; a viewer that leaves gives its place back.
    let other = client_from("127.0.0.3").get(&url).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    drop(first);
    let again = eventually("the place to come back", || async {
        let res = viewer.get(&url).send().await.ok()?;
        (res.status() == StatusCode::OK).then_some(res)
    })
    .await;
    drop((second, other, again));
    encoder.kill().await.unwrap();
}
