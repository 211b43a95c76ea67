//! The room's WebSocket, with real clients over real sockets.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::TestApp;

/// A chat message from `user` (named Ann) as the room's bus carries it.
fn chat_event(id: &str, user: &str, moderator: bool, text: &str) -> domain::event::RoomEvent {
    domain::event::RoomEvent::Chat(domain::event::ChatMessage {
        id: domain::ids::MessageId::from_string(id),
        user: domain::event::Speaker {
            id: domain::ids::UserId::from_string(user),
            name: "Ann".into(),
            moderator,
        },
        text: domain::room::ChatText::parse(text).unwrap(),
    })
}
use crate::selling::{buy, live_sale};

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) async fn open(
    app: &TestApp,
    room: &str,
    token: Option<&str>,
    since: Option<u64>,
) -> Socket {
    let query = since.map(|s| format!("?since={s}")).unwrap_or_default();
    let url = format!("ws://{}/api/v1/rooms/{room}/ws{query}", app.addr);
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// The next JSON frame, skipping pings; panics after five seconds.
pub(crate) async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame within 5 s")
            .expect("the socket is open")
            .unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The next frame of `kind`, skipping others (counters come and go).
pub(crate) async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let frame = next(socket).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

pub(crate) async fn send(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// The close code the server ends with, reading past any frames before it.
pub(crate) async fn closed_with(socket: &mut Socket) -> CloseCode {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("closed within 5 s")
        {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

pub(crate) async fn room_of(app: &TestApp) -> (crate::helpers::Account, String) {
    let seller = app.seller("anns").await;
    let (status, room) = app
        .post(
            "/api/v1/shops/anns/rooms",
            Some(&seller.token),
            json!({"title": "Live"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = room["room"]["id"].as_str().unwrap().to_owned();
    (seller, id)
}

#[tokio::test]
async fn every_viewer_sees_the_same_chat_in_the_same_order() {
    let app = TestApp::spawn().await;
    let (seller, room) = room_of(&app).await;
    let ann = app.sign_up("ann@example.com").await;
    let mut watcher = open(&app, &room, None, None).await;
    let mut seller_socket = open(&app, &room, Some(&seller.token), None).await;
    let mut ann_socket = open(&app, &room, Some(&ann.token), None).await;
    for socket in [&mut watcher, &mut seller_socket, &mut ann_socket] {
        let snapshot = next(socket).await;
        assert_eq!(snapshot["type"], "snapshot");
        assert_eq!(snapshot["data"]["room"]["title"], "Live");
    }
    for i in 0..5 {
        send(
            &mut ann_socket,
            json!({"type": "chat", "text": format!("ann {i}")}),
        )
        .await;
        send(
            &mut seller_socket,
            json!({"type": "chat", "text": format!("seller {i}")}),
        )
        .await;
    }
    let mut seen = Vec::new();
    for socket in [&mut watcher, &mut seller_socket, &mut ann_socket] {
        let mut chat = Vec::new();
        while chat.len() < 10 {
            let frame = next_of(socket, "chat").await;
            chat.push((
                frame["seq"].as_u64().unwrap(),
                frame["data"]["text"].clone(),
            ));
        }
        assert!(
            chat.windows(2)
                .all(|w| w[1].0 == w[0].0 + 1 || w[1].0 > w[0].0)
        );
        seen.push(chat);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);
    // The messages are kept: a new viewer's snapshot carries them.
    let mut late = open(&app, &room, None, None).await;
    let snapshot = next(&mut late).await;
    assert_eq!(snapshot["data"]["chat"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn watching_is_open_but_chat_and_likes_need_an_account() {
    let app = TestApp::spawn().await;
    let (_, room) = room_of(&app).await;
    let mut anonymous = open(&app, &room, None, None).await;
    next(&mut anonymous).await;
    send(&mut anonymous, json!({"type": "chat", "text": "hi"})).await;
    let refused = next_of(&mut anonymous, "error").await;
    assert_eq!(refused["code"], "unauthenticated");
    send(&mut anonymous, json!({"type": "like"})).await;
    assert_eq!(
        next_of(&mut anonymous, "error").await["code"],
        "unauthenticated"
    );
    // Unknown rooms and bad tokens are refused before the upgrade.
    let refused = |url: String, token: Option<&str>| {
        let mut request = url.into_client_request().unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        async move {
            match tokio_tungstenite::connect_async(request).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status(),
                other => panic!("expected an HTTP refusal, got {other:?}"),
            }
        }
    };
    let nope = format!("ws://{}/api/v1/rooms/room_nope/ws", app.addr);
    assert_eq!(refused(nope, None).await, StatusCode::NOT_FOUND);
    let bad_token = format!("ws://{}/api/v1/rooms/{room}/ws", app.addr);
    assert_eq!(
        refused(bad_token, Some("hks_nope")).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn likes_and_viewers_are_coalesced_counts() {
    let app = TestApp::spawn().await;
    let (_, room) = room_of(&app).await;
    let ann = app.sign_up("ann@example.com").await;
    let mut socket = open(&app, &room, Some(&ann.token), None).await;
    // The count reaches the snapshot or follows it, depending on the tick.
    if next(&mut socket).await["data"]["viewers"] != 1 {
        assert_eq!(next_of(&mut socket, "viewers").await["data"]["count"], 1);
    }
    for _ in 0..15 {
        send(&mut socket, json!({"type": "like"})).await;
    }
    let mut total = 0;
    while total < 15 {
        let likes = next_of(&mut socket, "likes").await;
        total = likes["data"]["count"].as_u64().unwrap();
    }
    assert_eq!(total, 15);
}

#[tokio::test]
async fn a_reconnect_with_since_gets_what_it_missed() {
    let app = TestApp::spawn().await;
    let (seller, room) = room_of(&app).await;
    let mut seller_socket = open(&app, &room, Some(&seller.token), None).await;
    next(&mut seller_socket).await;
    let mut viewer = open(&app, &room, None, None).await;
    next(&mut viewer).await;
    send(&mut seller_socket, json!({"type": "chat", "text": "one"})).await;
    let one = next_of(&mut viewer, "chat").await;
    let last_seen = one["seq"].as_u64().unwrap();
    viewer.close(None).await.unwrap();
    send(&mut seller_socket, json!({"type": "chat", "text": "two"})).await;
    send(&mut seller_socket, json!({"type": "chat", "text": "three"})).await;
    next_of(&mut seller_socket, "chat").await;
    next_of(&mut seller_socket, "chat").await;
    let last = next_of(&mut seller_socket, "chat").await;
    assert_eq!(last["data"]["text"], "three");

    let mut back = open(&app, &room, None, Some(last_seen)).await;
    let mut texts = Vec::new();
    loop {
        let frame = next(&mut back).await;
        assert_ne!(frame["type"], "snapshot", "the history covers the gap");
        assert!(frame["seq"].as_u64().unwrap() > last_seen);
        if frame["type"] == "chat" {
            texts.push(frame["data"]["text"].as_str().unwrap().to_owned());
        }
        if frame["seq"] == last["seq"] {
            break;
        }
    }
    assert_eq!(texts, ["two", "three"]);
    // From too far back, or after a restart: a fresh snapshot.
    let mut stale = open(&app, &room, None, Some(1)).await;
    assert_eq!(next(&mut stale).await["type"], "snapshot");
}

#[tokio::test]
async fn chat_is_validated_and_rate_limited() {
    let app = TestApp::spawn().await;
    let (_, room) = room_of(&app).await;
    let ann = app.sign_up("ann@example.com").await;
    let mut socket = open(&app, &room, Some(&ann.token), None).await;
    next(&mut socket).await;
    send(
        &mut socket,
        json!({"type": "chat", "text": "x".repeat(301)}),
    )
    .await;
    assert_eq!(next_of(&mut socket, "error").await["code"], "invalid_field");
    send(&mut socket, json!({"type": "chat", "text": " \u{0007} "})).await;
    assert_eq!(next_of(&mut socket, "error").await["code"], "invalid_field");
    send(
        &mut socket,
        json!({"type": "chat", "text": "<b>hi</b>\u{0007}"}),
    )
    .await;
    let shown = next_of(&mut socket, "chat").await;
    assert_eq!(
        shown["data"]["text"], "<b>hi</b>",
        "kept as text, controls stripped"
    );
    // A burst of five, then a wait.
    for i in 0..6 {
        send(
            &mut socket,
            json!({"type": "chat", "text": format!("m{i}")}),
        )
        .await;
    }
    let limited = next_of(&mut socket, "error").await;
    assert_eq!(limited["code"], "rate_limited");
    assert!(limited["retry_after_ms"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn bad_frames_get_error_events_and_abuse_is_closed() {
    let app = TestApp::spawn().await;
    let (_, room) = room_of(&app).await;
    let mut socket = open(&app, &room, None, None).await;
    next(&mut socket).await;
    socket
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    assert_eq!(next_of(&mut socket, "error").await["code"], "invalid_frame");
    send(&mut socket, json!({"no": "type"})).await;
    assert_eq!(next_of(&mut socket, "error").await["code"], "invalid_frame");
    send(&mut socket, json!({"type": "dance"})).await;
    assert_eq!(next_of(&mut socket, "error").await["code"], "unknown_type");
    socket
        .send(Message::Binary(Bytes::from_static(b"\x00\x01")))
        .await
        .unwrap();
    assert_eq!(
        next_of(&mut socket, "error").await["code"],
        "unsupported_frame"
    );
    send(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next_of(&mut socket, "pong").await["type"], "pong");

    // Too big: 1009.
    let mut big = open(&app, &room, None, None).await;
    next(&mut big).await;
    big.send(Message::Text("x".repeat(10_000).into()))
        .await
        .unwrap();
    assert_eq!(closed_with(&mut big).await, CloseCode::Size);

    // A flood: 1008.
    let mut flood = open(&app, &room, None, None).await;
    next(&mut flood).await;
    for _ in 0..200 {
        if flood
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(closed_with(&mut flood).await, CloseCode::Policy);

    // The room carries on for everyone else.
    send(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next_of(&mut socket, "pong").await["type"], "pong");
    let metrics = app.metrics().await;
    for reason in ["malformed", "unknown_type", "binary", "too_big", "flood"] {
        assert!(
            metrics.contains(&format!(
                "live_frames_rejected_total{{reason=\"{reason}\"}}"
            )),
            "{reason} is counted"
        );
    }
}

#[tokio::test]
async fn the_room_sees_its_flash_sale() {
    let app = TestApp::spawn().await;
    let (_, room, sale) = live_sale(&app, 10, 3, 3).await;
    let room_id = room["id"].as_str().unwrap();
    let mut socket = open(&app, room_id, None, None).await;
    let snapshot = next(&mut socket).await;
    assert_eq!(snapshot["data"]["sale"]["sale_id"], sale["id"]);
    assert_eq!(snapshot["data"]["sale"]["available"], 3);
    let buyer = app.sign_up("buyer@example.com").await;
    let (status, _, _) = buy(
        &app,
        &buyer.token,
        &room,
        &sale,
        Some("k1"),
        json!({"quantity": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut available = None;
    while available != Some(0) {
        let stock = next_of(&mut socket, "sale.stock").await;
        available = stock["data"]["available"].as_u64();
    }
    let sold_out = next_of(&mut socket, "sale.sold_out").await;
    assert_eq!(sold_out["data"]["status"], "sold_out");
}

#[tokio::test]
async fn a_reader_that_stops_is_cut_off_and_the_others_keep_their_pace() {
    let app = TestApp::spawn_with(|config| {
        config.live.ring = 1024;
        config.live.write_timeout = Duration::from_millis(500);
        config.live.display = live::Rate {
            burst: 1e9,
            per_second: 1e9,
        };
        // One author for the whole flood.
        config.live.chat = config.live.display;
    })
    .await;
    let (seller, room) = room_of(&app).await;
    let room_id = domain::ids::RoomId::from_string(&room);
    const SENT: usize = 20_000;
    // A viewer that never reads, with a small receive buffer.
    let stuck = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(app.addr).await.unwrap();
        let url = format!("ws://{}/api/v1/rooms/{room}/ws", app.addr);
        tokio_tungstenite::client_async(url, stream)
            .await
            .unwrap()
            .0
    };
    let mut fast = open(&app, &room, Some(&seller.token), None).await;
    next(&mut fast).await;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = tokio::spawn({
        let received = received.clone();
        async move {
            loop {
                let frame = next(&mut fast).await;
                assert_ne!(frame["type"], "lagged", "the fast viewer keeps up");
                if frame["type"] == "chat" {
                    let n = received.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    if n == SENT {
                        return fast;
                    }
                }
            }
        }
    });
    // 300-character messages in steps of 100, each sent once the fast viewer
    // has the step before: the room never waits, so the stuck viewer falls
    // behind however fast this machine is.
    let text = "x".repeat(300);
    for i in 0..SENT {
        app.state
            .bus()
            .publish_room(
                &room_id,
                &chat_event(&format!("msg_{i}"), &seller.id, false, &text),
            )
            .await
            .unwrap();
        if i % 100 == 99 {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while received.load(std::sync::atomic::Ordering::SeqCst) <= i {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the fast viewer stalled at {i}"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    let _fast = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the fast viewer gets the last message")
        .unwrap();
    // The stuck viewer is let go (its writes stall for longer than the write
    // timeout) while its socket is still open on its side.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.state.hub().viewers(&room_id) > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck viewer is still served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = app.metrics().await;
    let cut = metrics
        .lines()
        .find(|l| l.starts_with("live_slow_disconnects_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(cut >= 1.0, "a slow viewer was cut off: {metrics}");
    assert_eq!(
        app.state.hub().viewers(&room_id),
        1,
        "the fast viewer stays"
    );
    drop(stuck);
}

#[tokio::test]
async fn the_seller_pins_and_unpins_and_every_viewer_sees_it() {
    let app = TestApp::spawn().await;
    let (seller, room) = room_of(&app).await;
    let product = app.product(&seller, "anns", "TEE", 7).await;
    let product_id = product["id"].as_str().unwrap();
    let mut viewer = open(&app, &room, None, None).await;
    assert_eq!(next(&mut viewer).await["data"]["pinned"], Value::Null);

    let pin = format!("/api/v1/rooms/{room}/pin");
    let (status, card) = app
        .call(
            reqwest::Method::PUT,
            &pin,
            Some(&seller.token),
            Some(json!({"product_id": product_id})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{card}");
    assert_eq!(card["variants"][0]["stock"], 7);
    let event = next_of(&mut viewer, "pin").await;
    assert_eq!(event["data"]["product_id"], product_id);
    assert_eq!(event["data"]["title"], card["title"]);
    // A viewer who joins now sees the pin in the snapshot.
    let mut late = open(&app, &room, None, None).await;
    assert_eq!(
        next(&mut late).await["data"]["pinned"]["product_id"],
        product_id
    );

    // Only the room's seller pins, only their shop's active products.
    let other = app.seller("bobs").await;
    let (status, _) = app
        .call(
            reqwest::Method::PUT,
            &pin,
            Some(&other.token),
            Some(json!({"product_id": product_id})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let theirs = app.product(&other, "bobs", "BOB", 1).await;
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            &pin,
            Some(&seller.token),
            Some(json!({"product_id": theirs["id"]})),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("invalid_field"))
    );

    let (status, _) = app.delete(&pin, Some(&seller.token)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    next_of(&mut viewer, "unpin").await;
    let (status, _) = app.delete(&pin, Some(&seller.token)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "unpinning twice is fine");
    let mut after = open(&app, &room, None, None).await;
    assert_eq!(next(&mut after).await["data"]["pinned"], Value::Null);

    // The seller ends the room: every viewer hears it.
    let (status, _) = app
        .patch(
            &format!("/api/v1/rooms/{room}"),
            Some(&seller.token),
            json!({"status": "ended"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(next_of(&mut viewer, "room.ended").await["data"]["ended_at"].is_string());
    let mut last = open(&app, &room, None, None).await;
    assert_eq!(next(&mut last).await["data"]["room"]["status"], "ended");
}

#[tokio::test]
async fn moderators_delete_mute_ban_slow_down_and_block_words() {
    let app = TestApp::spawn().await;
    let (seller, room) = room_of(&app).await;
    let moderator = app.sign_up("mod@example.com").await;
    let ann = app.sign_up("ann@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let put = |path: String, token: String, body: Value| {
        let app = &app;
        async move {
            app.call(reqwest::Method::PUT, &path, Some(&token), Some(body))
                .await
        }
    };
    // Only the owner appoints; a plain viewer moderates nothing.
    let appoint = format!("/api/v1/shops/anns/moderators/{}", moderator.id);
    assert_eq!(
        app.call(reqwest::Method::PUT, &appoint, Some(&ann.token), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(reqwest::Method::PUT, &appoint, Some(&seller.token), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (_, list) = app
        .get("/api/v1/shops/anns/moderators", Some(&moderator.token))
        .await;
    assert_eq!(list["items"], json!([moderator.id]));

    let mut watcher = open(&app, &room, None, None).await;
    next(&mut watcher).await;
    let mut ann_socket = open(&app, &room, Some(&ann.token), None).await;
    next(&mut ann_socket).await;
    let mut bob_socket = open(&app, &room, Some(&bob.token), None).await;
    next(&mut bob_socket).await;

    // Delete: the message vanishes for everyone, and from later snapshots.
    send(&mut ann_socket, json!({"type": "chat", "text": "first!"})).await;
    let message = next_of(&mut watcher, "chat").await["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let delete = format!("/api/v1/rooms/{room}/messages/{message}");
    let mut deleted = false;
    for _ in 0..100 {
        // The chat log keeps messages a moment after they are shown.
        let (status, _) = app.delete(&delete, Some(&moderator.token)).await;
        if status == StatusCode::NO_CONTENT {
            deleted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(deleted);
    assert_eq!(
        next_of(&mut watcher, "chat.deleted").await["data"]["id"],
        message
    );
    let mut late = open(&app, &room, None, None).await;
    assert!(
        next(&mut late).await["data"]["chat"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Mute: ann is told, nothing she sends is shown; lifted, she speaks again.
    let sanction = |user: &str| format!("/api/v1/rooms/{room}/sanctions/{user}");
    let (status, muted) = put(
        sanction(&ann.id),
        moderator.token.clone(),
        json!({"kind": "mute", "seconds": 60}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{muted}");
    assert_eq!(
        next_of(&mut watcher, "user.muted").await["data"]["user_id"],
        ann.id
    );
    send(&mut ann_socket, json!({"type": "chat", "text": "hello?"})).await;
    assert_eq!(next_of(&mut ann_socket, "error").await["code"], "muted");
    assert_eq!(
        app.delete(&sanction(&ann.id), Some(&moderator.token))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    next_of(&mut watcher, "user.sanction_lifted").await;
    send(&mut ann_socket, json!({"type": "chat", "text": "back"})).await;
    assert_eq!(next_of(&mut watcher, "chat").await["data"]["text"], "back");

    // Ban: bob is told; the owner and moderators cannot be banned.
    assert_eq!(
        put(
            sanction(&bob.id),
            seller.token.clone(),
            json!({"kind": "ban"})
        )
        .await
        .0,
        StatusCode::OK
    );
    next_of(&mut bob_socket, "user.banned").await;
    send(
        &mut bob_socket,
        json!({"type": "chat", "text": "let me in"}),
    )
    .await;
    assert_eq!(next_of(&mut bob_socket, "error").await["code"], "banned");
    let (status, body) = put(
        sanction(&seller.id),
        moderator.token.clone(),
        json!({"kind": "ban"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("invalid_field"))
    );
    let (status, _) = put(sanction(&ann.id), bob.token.clone(), json!({"kind": "ban"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = put(
        sanction(&ann.id),
        seller.token.clone(),
        json!({"kind": "mute"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a mute needs its seconds"
    );

    // Slow mode: one message per 30 s for ann, not for the seller.
    let (status, _) = put(
        format!("/api/v1/rooms/{room}/slow-mode"),
        moderator.token.clone(),
        json!({"seconds": 30}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        next_of(&mut ann_socket, "slow_mode").await["data"]["seconds"],
        30
    );
    send(&mut ann_socket, json!({"type": "chat", "text": "one"})).await;
    send(&mut ann_socket, json!({"type": "chat", "text": "two"})).await;
    let slowed = next_of(&mut ann_socket, "error").await;
    assert_eq!(slowed["code"], "slow_mode");
    assert!(slowed["retry_after_ms"].as_u64().unwrap() > 20_000);
    let mut seller_socket = open(&app, &room, Some(&seller.token), None).await;
    assert_eq!(
        next(&mut seller_socket).await["data"]["slow_mode_seconds"],
        30
    );
    for text in ["a", "b"] {
        send(&mut seller_socket, json!({"type": "chat", "text": text})).await;
        assert_eq!(
            next_of(&mut seller_socket, "chat").await["data"]["text"],
            text
        );
    }
    put(
        format!("/api/v1/rooms/{room}/slow-mode"),
        seller.token.clone(),
        json!({"seconds": 0}),
    )
    .await;
    next_of(&mut ann_socket, "slow_mode").await;

    // Blocked words, matched without regard to case.
    let (status, words) = put(
        "/api/v1/shops/anns/blocked-words".into(),
        moderator.token.clone(),
        json!({"words": ["Scam", " scam", "fake link"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(words["words"], json!(["fake link", "scam"]));
    let mut refused = false;
    for _ in 0..50 {
        send(
            &mut ann_socket,
            json!({"type": "chat", "text": "total SCAM here"}),
        )
        .await;
        let answer = loop {
            let frame = next(&mut ann_socket).await;
            if frame["type"] == "error"
                || (frame["type"] == "chat" && frame["data"]["user"]["id"] == ann.id)
            {
                break frame;
            }
        };
        if answer["code"] == "message_blocked" {
            refused = true;
            break;
        }
        // The words reach the room through the bus a moment after the answer.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert!(refused, "a blocked word keeps the message from the room");
}

#[tokio::test]
async fn a_room_busier_than_people_read_shows_a_sample_and_keeps_everything() {
    let app = TestApp::spawn_with(|config| {
        config.live.display = live::Rate {
            burst: 5.0,
            per_second: 1.0,
        };
        // One author for the whole room: the room's cap is what is tested.
        config.live.chat = live::Rate {
            burst: 1e9,
            per_second: 1e9,
        };
    })
    .await;
    let (seller, room) = room_of(&app).await;
    let room_id = domain::ids::RoomId::from_string(&room);
    let mut viewer = open(&app, &room, None, None).await;
    next(&mut viewer).await;
    let chat = |i: usize, moderator: bool| {
        chat_event(
            domain::ids::MessageId::generate().as_str(),
            &seller.id,
            moderator,
            &format!("m{i}"),
        )
    };
    for i in 0..200 {
        app.state
            .bus()
            .publish_room(&room_id, &chat(i, false))
            .await
            .unwrap();
    }
    app.state
        .bus()
        .publish_room(&room_id, &chat(200, true))
        .await
        .unwrap();
    let mut shown = 0;
    loop {
        let frame = next_of(&mut viewer, "chat").await;
        shown += 1;
        if frame["data"]["text"] == "m200" {
            break;
        }
    }
    assert!(
        (6..200).contains(&shown),
        "a sample, and the moderator: {shown}"
    );
    // Every message is kept.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.db.store.recent_chat(&room_id, 500).await.unwrap().len() < 201 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "all 201 messages are kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_dashboard_counts_viewers_likes_chat_orders_and_revenue() {
    let app = TestApp::spawn_with(|c| c.live.sample_interval = Duration::from_millis(200)).await;
    let (seller, room, sale) = live_sale(&app, 10, 5, 1).await;
    let room_id = room["id"].as_str().unwrap();
    let ann = app.sign_up("ann@example.com").await;
    let mut socket = open(&app, room_id, Some(&ann.token), None).await;
    next(&mut socket).await;
    send(
        &mut socket,
        json!({"type": "chat", "text": "is it cotton?"}),
    )
    .await;
    next_of(&mut socket, "chat").await;
    for _ in 0..3 {
        send(&mut socket, json!({"type": "like"})).await;
    }
    next_of(&mut socket, "likes").await;
    let (status, order, _) = buy(&app, &ann.token, &room, &sale, Some("k1"), json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let (status, paid) = app
        .client
        .post(app.url(&format!("/api/v1/orders/{}/payments", order["id"].as_str().unwrap())))
        .bearer_auth(&ann.token)
        .header("idempotency-key", "p1")
        .json(&json!({"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}}))
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{:?}", paid.text().await);

    let path = format!("/api/v1/rooms/{room_id}/stats");
    let mut stats = Value::Null;
    for _ in 0..100 {
        let (status, body) = app.get(&path, Some(&seller.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        stats = body;
        // The viewer count is the sequencer's sum of each node's reports
        // (every 500 ms): on a machine stalled for seconds, a report can
        // lapse and the count dip until the next one.
        if stats["likes"] == 3 && stats["peak_viewers"] == 1 && stats["viewers_now"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stats["likes"], 3, "{stats}");
    assert_eq!(stats["peak_viewers"], 1, "{stats}");
    assert_eq!(stats["viewers_now"], 1, "{stats}");
    assert_eq!(stats["messages"], 1, "{stats}");
    assert_eq!(stats["chatters"], 1, "{stats}");
    assert_eq!(stats["orders"], 1, "{stats}");
    assert_eq!(stats["paid_orders"], 1, "{stats}");
    assert_eq!(stats["buyers"], 1, "{stats}");
    assert_eq!(stats["revenue"], json!({"amount": 999, "currency": "EUR"}));
    assert_eq!(stats["conversion"], 1.0);
    let series = stats["series"].as_array().unwrap();
    let sum = |field: &str| {
        series
            .iter()
            .map(|p| p[field].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!(
        (sum("likes"), sum("messages"), sum("orders")),
        (3, 1, 1),
        "{stats}"
    );

    let (status, _) = app.get(&path, Some(&ann.token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.get(&path, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Waits for the `sale.stock` that shows the one unit back, on sale again.
async fn back_on_sale(viewer: &mut Socket) {
    loop {
        let stock = next_of(viewer, "sale.stock").await;
        if stock["data"]["available"] == 1 {
            assert_eq!(stock["data"]["status"], "live", "on sale again: {stock}");
            return;
        }
    }
}

#[tokio::test]
async fn a_cancelled_order_gives_its_units_back_to_the_room() {
    let app = TestApp::spawn().await;
    let (_, room, sale) = live_sale(&app, 5, 1, 1).await;
    let room_id = room["id"].as_str().unwrap();
    let mut viewer = open(&app, room_id, None, None).await;
    next(&mut viewer).await;
    let buyer = app.sign_up("late@example.com").await;
    let (status, order, _) = buy(&app, &buyer.token, &room, &sale, Some("k"), json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let sold_out = next_of(&mut viewer, "sale.sold_out").await;
    assert_eq!(sold_out["data"]["available"], 0);
    let (status, _) = app
        .post(
            &format!("/api/v1/orders/{}/cancel", order["id"].as_str().unwrap()),
            Some(&buyer.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    back_on_sale(&mut viewer).await;
}

#[tokio::test]
async fn a_room_opened_on_another_node_shows_who_said_its_chat() {
    let app = TestApp::spawn().await;
    let (seller, room) = room_of(&app).await;
    let mut speaker = open(&app, &room, Some(&seller.token), None).await;
    next(&mut speaker).await;
    speaker
        .send(Message::Text(
            json!({"type": "chat", "text": "welcome"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let shown = next_of(&mut speaker, "chat").await;
    let room_id = domain::ids::RoomId::from_string(&room);
    // Kept in the store (in batches, off the room's path) ...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app
        .db
        .store
        .recent_chat(&room_id, 10)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the message is kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... so that a node that opens the room later shows it as it was shown.
    let other = app.node_beside().await;
    let mut viewer = open(&other, &room, None, None).await;
    let snapshot = next(&mut viewer).await;
    let chat = &snapshot["data"]["chat"][0];
    assert_eq!(chat["text"], "welcome");
    assert_eq!(chat["user"], shown["data"]["user"], "{snapshot}");
    assert_eq!(
        chat["user"]["moderator"], true,
        "the seller speaks as the owner"
    );
}

#[tokio::test]
async fn a_lapsed_reservation_gives_its_units_back_to_the_room() {
    let app = TestApp::spawn_with(|c| {
        c.reservation_window = Duration::from_millis(300);
        c.flash_reservation_window = Duration::from_millis(300);
    })
    .await;
    let (_, room, sale) = live_sale(&app, 5, 1, 1).await;
    let mut viewer = open(&app, room["id"].as_str().unwrap(), None, None).await;
    next(&mut viewer).await;
    let buyer = app.sign_up("slow@example.com").await;
    let (status, order, _) = buy(&app, &buyer.token, &room, &sale, Some("k"), json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    next_of(&mut viewer, "sale.sold_out").await;
    // Not paid in time: the selling clock expires it.
    back_on_sale(&mut viewer).await;
    let (_, order) = app
        .get(
            &format!("/api/v1/orders/{}", order["id"].as_str().unwrap()),
            Some(&buyer.token),
        )
        .await;
    assert_eq!(order["status"], "expired");
}

#[tokio::test]
async fn an_event_of_a_newer_node_is_skipped_and_the_room_goes_on() {
    let app = TestApp::spawn().await;
    let (seller, room) = room_of(&app).await;
    let mut viewer = open(&app, &room, None, None).await;
    next(&mut viewer).await;
    let topic = bus::Topic::Room(domain::ids::RoomId::from_string(&room));
    let newer = br#"{"type":"auction.bid","data":{"amount":{"amount":500,"currency":"EUR"}}}"#;
    app.state
        .bus()
        .publish(&topic, Bytes::from_static(newer))
        .await
        .unwrap();
    app.state
        .bus()
        .publish_room(
            &domain::ids::RoomId::from_string(&room),
            &chat_event("msg_after", &seller.id, false, "still here"),
        )
        .await
        .unwrap();
    let chat = next_of(&mut viewer, "chat").await;
    assert_eq!(chat["data"]["text"], "still here");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("live_bus_events_skipped_total{reason=\"unknown_type\"} 1"),
        "{metrics}"
    );
}

/// Two nodes' reports of one sale can cross on the bus: the room never shows
/// an older state after a newer one.
#[tokio::test]
async fn an_older_sale_state_never_follows_a_newer_one() {
    let app = TestApp::spawn().await;
    let (seller, room) = room_of(&app).await;
    let room_id = domain::ids::RoomId::from_string(&room);
    let mut viewer = open(&app, &room, None, None).await;
    next(&mut viewer).await;
    let stock = |available: i64, version: i64| {
        let event = json!({"type": "sale.stock", "data": {
            "sale_id": "sal_1", "variant_id": "var_1", "available": available,
            "quantity": 10, "status": "live", "price": {"amount": 999, "currency": "EUR"},
            "ends_at": "2026-12-31T00:00:00Z", "version": version}});
        Bytes::from(event.to_string())
    };
    let topic = bus::Topic::Room(room_id.clone());
    for (available, version) in [(7, 5), (9, 3), (6, 6)] {
        app.state
            .bus()
            .publish(&topic, stock(available, version))
            .await
            .unwrap();
    }
    app.state
        .bus()
        .publish_room(&room_id, &chat_event("msg_end", &seller.id, true, "end"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let frame = next(&mut viewer).await;
        match frame["type"].as_str().unwrap() {
            "sale.stock" => seen.push(frame["data"]["available"].as_i64().unwrap()),
            "chat" => break,
            _ => {}
        }
    }
    assert_eq!(seen, [7, 6]);
}
