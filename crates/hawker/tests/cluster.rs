//! Several `hawker serve` nodes as one: three processes on 127.0.0.2, .3 and
//! .4, one PostgreSQL database and one NATS (each test its own database and
//! subject prefix), viewers spread over the nodes as a load balancer would.
//! Every viewer must see the same events under the same `seq`, one more than
//! the last, through kills, restarts and the loss of NATS.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod common;
use common::cluster::{Cluster, PATIENCE};
use common::{Proc, free_port, log_file};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a viewer's socket said.
enum Said {
    Frame(Value),
    /// Closed, with the close code if the server sent one.
    Closed(Option<u16>),
}

/// A viewer: its socket, and every numbered frame it was shown, checked as
/// they come to be one `seq` more than the last it saw.
struct Viewer {
    socket: Socket,
    /// The node it is connected to.
    addr: SocketAddr,
    last: u64,
    shown: BTreeMap<u64, Value>,
    /// The `error` frames it was sent.
    errors: Vec<Value>,
}

impl Cluster {
    /// A viewer of `room` on node `i`.
    async fn viewer(&self, i: usize, room: &str, token: Option<&str>) -> Viewer {
        Viewer::open(self.addrs[i], room, token, None).await
    }
}

impl Viewer {
    async fn connect(
        addr: SocketAddr,
        room: &str,
        token: Option<&str>,
        since: Option<u64>,
    ) -> Socket {
        let query = since.map(|s| format!("?since={s}")).unwrap_or_default();
        let mut request = format!("ws://{addr}/api/v1/rooms/{room}/ws{query}")
            .into_client_request()
            .unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        tokio_tungstenite::connect_async(request).await.unwrap().0
    }

    /// Joins: the first frame is the snapshot.
    async fn open(addr: SocketAddr, room: &str, token: Option<&str>, since: Option<u64>) -> Self {
        let mut viewer = Self {
            socket: Self::connect(addr, room, token, since).await,
            addr,
            last: 0,
            shown: BTreeMap::new(),
            errors: Vec::new(),
        };
        match viewer.said().await {
            Said::Frame(frame) if frame["type"] == "snapshot" => {
                viewer.last = frame["seq"].as_u64().unwrap();
            }
            Said::Frame(frame) => panic!("expected a snapshot, got {frame}"),
            Said::Closed(code) => panic!("closed on joining ({code:?})"),
        }
        viewer
    }

    /// Reconnects to `addr` with the last `seq` seen: what comes next must be
    /// exactly what it missed (no snapshot, no gap, no repeat).
    async fn resume(&mut self, addr: SocketAddr, room: &str, token: Option<&str>) {
        self.socket = Self::connect(addr, room, token, Some(self.last)).await;
        self.addr = addr;
    }

    /// Reads on until its node tells it to reconnect elsewhere (1012), and
    /// does, to `addr`.
    async fn moved(&mut self, addr: SocketAddr, room: &str, token: Option<&str>) {
        let code = self.read_until(|_| false).await.unwrap_err();
        assert_eq!(code, Some(1012), "told to reconnect elsewhere");
        self.resume(addr, room, token).await;
    }

    async fn said(&mut self) -> Said {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("the room said something in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Said::Frame(serde_json::from_str(text.as_str()).unwrap());
                }
                Some(Ok(Message::Close(frame))) => {
                    return Said::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Said::Closed(None),
            }
        }
    }

    /// Reads numbered frames until one for which `until` holds, and returns
    /// it; `None` if the socket closed first (with its close code).
    async fn read_until(&mut self, until: impl Fn(&Value) -> bool) -> Result<Value, Option<u16>> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if tokio::time::Instant::now() > deadline {
                let recent: Vec<_> = self.shown.values().rev().take(5).collect();
                panic!(
                    "not seen in time; the last frames: {recent:?}; errors: {:?}",
                    self.errors
                );
            }
            let frame = match self.said().await {
                Said::Frame(frame) => frame,
                Said::Closed(code) => return Err(code),
            };
            match frame["type"].as_str() {
                Some("error") => {
                    self.errors.push(frame.clone());
                    if until(&frame) {
                        return Ok(frame);
                    }
                    continue;
                }
                Some("pong") => continue,
                Some("snapshot" | "lagged" | "state") => {
                    panic!("expected the missed events, got {frame}")
                }
                _ => {}
            }
            let seq = frame["seq"].as_u64().unwrap();
            assert_eq!(seq, self.last + 1, "a gap or a repeat before {frame}");
            self.last = seq;
            self.shown.insert(seq, frame.clone());
            if until(&frame) {
                return Ok(frame);
            }
        }
    }

    async fn wait_for(&mut self, until: impl Fn(&Value) -> bool) -> Value {
        self.read_until(until).await.expect("the socket stays open")
    }

    async fn send(&mut self, frame: Value) {
        self.socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    async fn chat(&mut self, text: &str) {
        self.send(json!({"type": "chat", "text": text})).await;
    }

    /// Sends a chat message and waits until it comes back numbered (it is
    /// acknowledged then); sends it again when the server says when.
    async fn say(&mut self, text: &str) -> u64 {
        loop {
            self.chat(text).await;
            let answer = self
                .wait_for(|f| {
                    f["type"] == "error" || (f["type"] == "chat" && f["data"]["text"] == text)
                })
                .await;
            if answer["type"] == "chat" {
                return answer["seq"].as_u64().unwrap();
            }
            assert_eq!(answer["code"], "rate_limited", "{answer}");
            let wait = answer["retry_after_ms"].as_u64().unwrap();
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    /// The texts of the chat messages shown, in `seq` order.
    fn chat_texts(&self) -> Vec<String> {
        self.shown
            .values()
            .filter(|f| f["type"] == "chat")
            .map(|f| f["data"]["text"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn chat_is(text: &'static str) -> impl Fn(&Value) -> bool {
    move |f| f["type"] == "chat" && f["data"]["text"] == text
}

/// Every `seq` that two viewers both saw carries the same frame, byte for
/// byte once parsed: the same event, the same number, the same `at`.
fn assert_same_room(viewers: &[&Viewer]) {
    for (i, a) in viewers.iter().enumerate() {
        for b in &viewers[i + 1..] {
            let mut common = 0;
            for (seq, frame) in &a.shown {
                if let Some(other) = b.shown.get(seq) {
                    assert_eq!(frame, other, "seq {seq} differs between two viewers");
                    common += 1;
                }
            }
            assert!(common > 0, "two viewers saw nothing in common");
        }
    }
}

/// The machine's NATS, with JetStream.
const NATS: &str = "nats://127.0.0.1:4222";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_shows_one_room_in_one_order() {
    let cluster = Cluster::start(3, NATS).await;
    let (seller, room, product) = cluster.show().await;
    let (ann, _) = cluster.sign_up(1, "ann.viewer@example.com").await;
    let (bob, bob_id) = cluster.sign_up(2, "bob@example.com").await;
    let mut watchers = Vec::new();
    for i in 0..3 {
        watchers.push(cluster.viewer(i, &room, None).await);
    }
    let mut seller_socket = cluster.viewer(0, &room, Some(&seller)).await;
    let mut ann_socket = cluster.viewer(1, &room, Some(&ann)).await;
    let mut bob_socket = cluster.viewer(2, &room, Some(&bob)).await;

    // The room's viewers are the sum of every node's: six connections on three.
    for watcher in &mut watchers {
        watcher
            .wait_for(|f| f["type"] == "viewers" && f["data"]["count"] == 6)
            .await;
    }
    // Likes from two nodes add up.
    for _ in 0..3 {
        ann_socket.send(json!({"type": "like"})).await;
    }
    for _ in 0..4 {
        seller_socket.send(json!({"type": "like"})).await;
    }
    for watcher in &mut watchers {
        watcher
            .wait_for(|f| f["type"] == "likes" && f["data"]["count"] == 7)
            .await;
    }

    // Chat through two nodes, a pin through a third, a sale, a ban.
    for i in 0..5 {
        ann_socket.chat(&format!("ann {i}")).await;
        seller_socket.chat(&format!("seller {i}")).await;
    }
    let pin = format!("/api/v1/rooms/{room}/pin");
    cluster
        .put(1, &pin, &seller, json!({"product_id": product["id"]}))
        .await;
    cluster
        .post(
            2,
            &format!("/api/v1/rooms/{room}/sales"),
            Some(&seller),
            json!({"variant_id": product["variants"][0]["id"],
                   "price": {"amount": 999, "currency": "EUR"},
                   "quantity": 10, "per_buyer_limit": 1, "duration_seconds": 600}),
        )
        .await;
    cluster
        .put(
            0,
            &format!("/api/v1/rooms/{room}/sanctions/{bob_id}"),
            &seller,
            json!({"kind": "ban"}),
        )
        .await;
    // A message deleted through node 2.
    let first = ann_socket.wait_for(chat_is("ann 0")).await;
    let (status, _) = cluster
        .call(
            2,
            reqwest::Method::DELETE,
            &format!(
                "/api/v1/rooms/{room}/messages/{}",
                first["data"]["id"].as_str().unwrap()
            ),
            Some(&seller),
            None,
        )
        .await;
    assert_eq!(status, 204);
    // Banned on node 0, refused on node 2.
    bob_socket.wait_for(|f| f["type"] == "user.banned").await;
    bob_socket.chat("let me in").await;
    let refused = bob_socket.wait_for(|f| f["type"] == "error").await;
    assert_eq!(refused["code"], "banned", "{refused}");
    ann_socket.say("last").await;

    for watcher in &mut watchers {
        watcher.wait_for(chat_is("last")).await;
        let texts = watcher.chat_texts();
        let of = |who: &str| {
            texts
                .iter()
                .filter(|t| t.starts_with(who))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            of("ann "),
            (0..5).map(|i| format!("ann {i}")).collect::<Vec<_>>()
        );
        assert_eq!(
            of("seller "),
            (0..5).map(|i| format!("seller {i}")).collect::<Vec<_>>()
        );
        assert!(!texts.iter().any(|t| t == "let me in"));
        let kinds: Vec<&str> = watcher
            .shown
            .values()
            .map(|f| f["type"].as_str().unwrap())
            .collect();
        for kind in ["pin", "sale.started", "user.banned", "chat.deleted"] {
            assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
        }
    }
    let mut all: Vec<&Viewer> = watchers.iter().collect();
    all.push(&ann_socket);
    assert_same_room(&all);
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_resumes_on_another_node_with_exactly_what_it_missed() {
    let cluster = Cluster::start(3, NATS).await;
    let (seller, room, _) = cluster.show().await;
    let (other, _) = cluster.sign_up(2, "bob@example.com").await;
    let mut speaker = cluster.viewer(1, &room, Some(&seller)).await;
    let mut second = cluster.viewer(2, &room, Some(&other)).await;
    let mut moving = cluster.viewer(0, &room, None).await;
    let mut staying = cluster.viewer(2, &room, None).await;
    for i in 0..5 {
        speaker.say(&format!("m{i}")).await;
    }
    moving.wait_for(chat_is("m4")).await;
    drop(moving.socket.close(None).await);
    for i in 5..10 {
        second.say(&format!("m{i}")).await;
    }
    staying.wait_for(chat_is("m9")).await;
    // Away while m5..m9 went by; back on another node.
    moving.resume(cluster.addrs[2], &room, None).await;
    moving.wait_for(chat_is("m9")).await;
    assert_eq!(
        moving.chat_texts(),
        (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert_same_room(&[&moving, &staying, &speaker, &second]);
    cluster.finish().await;
}

/// Messages each speaker had acknowledged (came back to it numbered).
fn assert_each_shown_once(viewer: &Viewer, acknowledged: &[String]) {
    let texts = viewer.chat_texts();
    for text in acknowledged {
        let times = texts.iter().filter(|t| *t == text).count();
        assert_eq!(times, 1, "{text:?} shown {times} times in {texts:?}");
    }
    let mut ids: Vec<&Value> = viewer
        .shown
        .values()
        .filter(|f| f["type"] == "chat")
        .map(|f| &f["data"]["id"])
        .collect();
    let all = ids.len();
    ids.sort_by_key(|id| id.as_str().unwrap().to_owned());
    ids.dedup();
    assert_eq!(ids.len(), all, "a message was numbered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_chat_loses_no_acknowledged_message() {
    let mut cluster = Cluster::start(3, NATS).await;
    let (seller, room, _) = cluster.show().await;
    // The first to open the room (node 0) sequences it.
    let mut speakers = vec![cluster.viewer(0, &room, Some(&seller)).await];
    let mut tokens = vec![seller];
    for i in 1..3 {
        let (token, _) = cluster.sign_up(i, &format!("s{i}@example.com")).await;
        speakers.push(cluster.viewer(i, &room, Some(&token)).await);
        tokens.push(token);
    }
    let mut watchers = Vec::new();
    for i in 0..3 {
        watchers.push(cluster.viewer(i, &room, None).await);
    }
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        for (i, speaker) in speakers.iter_mut().enumerate() {
            let text = format!("before {i}.{round}");
            speaker.say(&text).await;
            acknowledged.push(text);
        }
    }
    // Node 0 sends one more and dies before anyone can know what became of it.
    speakers[0].chat("in flight").await;
    cluster.kill(0);
    assert_eq!(watchers[0].read_until(|_| false).await.unwrap_err(), None);
    // Said while the room has no sequencer: kept by the bus until a new one
    // takes over on a surviving node.
    for round in 0..3 {
        for (i, speaker) in speakers.iter_mut().enumerate().skip(1) {
            let text = format!("after {i}.{round}");
            speaker.say(&text).await;
            acknowledged.push(text);
        }
    }
    // Node 0's viewers come back through the load balancer to the others.
    watchers[0].resume(cluster.addrs[1], &room, None).await;
    speakers[0] = cluster.viewer(2, &room, Some(&tokens[0])).await;
    speakers[0].say("back").await;
    acknowledged.push("back".to_owned());
    speakers[1].say("end").await;
    for watcher in &mut watchers {
        watcher.wait_for(chat_is("end")).await;
        assert_each_shown_once(watcher, &acknowledged);
    }
    let all: Vec<&Viewer> = watchers.iter().collect();
    assert_same_room(&all);
    // Kept in the store once each, whichever sequencer numbered it.
    let room_id = domain::ids::RoomId::from_string(&room);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let kept: Vec<String> = cluster
            .db
            .store
            .recent_chat(&room_id, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.record.text)
            .collect();
        if kept.iter().any(|t| t == "end") {
            for text in &acknowledged {
                assert_eq!(
                    kept.iter().filter(|t| *t == text).count(),
                    1,
                    "{text} in {kept:?}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the chat log never caught up: {kept:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The bus's traffic is counted.
    let text = cluster
        .client
        .get(format!("{}/metrics", cluster.base(1)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for counter in ["bus_published_total", "bus_received_total"] {
        assert!(text.contains(counter), "{counter} missing from /metrics");
    }
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_no_event() {
    let mut cluster = Cluster::start(3, NATS).await;
    let (seller, room, _) = cluster.show().await;
    let mut tokens = vec![seller];
    for i in 1..3 {
        tokens.push(cluster.sign_up(i, &format!("s{i}@example.com")).await.0);
    }
    let mut speakers = Vec::new();
    let mut watchers = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        speakers.push(cluster.viewer(i, &room, Some(token)).await);
        watchers.push(cluster.viewer(i, &room, None).await);
    }
    let mut acknowledged = Vec::new();
    // Node by node: stopped (its viewers told to go elsewhere, and going),
    // the room going on through the others, started again.
    for node in 0..3 {
        let elsewhere = (node + 1) % 3;
        let text = format!("before restart {node}");
        speakers[elsewhere].say(&text).await;
        acknowledged.push(text);
        cluster.terminate(node);
        let (from, to) = (cluster.addrs[node], cluster.addrs[elsewhere]);
        for watcher in watchers.iter_mut().filter(|w| w.addr == from) {
            watcher.moved(to, &room, None).await;
        }
        for (speaker, token) in speakers.iter_mut().zip(&tokens) {
            if speaker.addr == from {
                speaker.moved(to, &room, Some(token)).await;
            }
        }
        let text = format!("during restart {node}");
        speakers[node].say(&text).await;
        acknowledged.push(text);
        cluster.restart(node).await;
    }
    speakers[0].say("end").await;
    for watcher in &mut watchers {
        watcher.wait_for(chat_is("end")).await;
        assert_each_shown_once(watcher, &acknowledged);
    }
    let all: Vec<&Viewer> = watchers.iter().chain(&speakers).collect();
    assert_same_room(&all);
    cluster.finish().await;
}

/// A nats-server of the test's own, with JetStream, on `port`, keeping its
/// streams in `dir` (so that they outlive a restart).
fn nats_server(port: u16, dir: &std::path::Path) -> Proc {
    Proc(
        Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(log_file(dir, "nats.log"))
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_survives_losing_nats() {
    let nats_dir = tempfile::tempdir().unwrap();
    let port = free_port([127, 0, 0, 1]);
    let mut nats = Some(nats_server(port, nats_dir.path()));
    let nats_url = format!("nats://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nats-server never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cluster = Cluster::start(2, &nats_url).await;
    let (seller, room, _) = cluster.show().await;
    let mut speaker = cluster.viewer(0, &room, Some(&seller)).await;
    let mut watchers = vec![
        cluster.viewer(0, &room, None).await,
        cluster.viewer(1, &room, None).await,
    ];
    speaker.say("before").await;

    drop(nats.take());
    for i in 0..2 {
        cluster.until_status(i, "/readyz", 503).await;
    }
    // Chat is refused with a stable code, not lost; viewers stay connected.
    speaker.chat("while away").await;
    let refused = speaker.wait_for(|f| f["type"] == "error").await;
    assert_eq!(refused["code"], "unavailable", "{refused}");

    let _nats = nats_server(port, nats_dir.path());
    for i in 0..2 {
        cluster.until_ready(i).await;
    }
    speaker.say("after").await;
    for watcher in &mut watchers {
        watcher.wait_for(chat_is("after")).await;
        assert_eq!(watcher.chat_texts(), ["before", "after"]);
    }
    let all: Vec<&Viewer> = watchers.iter().chain([&speaker]).collect();
    assert_same_room(&all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_limits_and_sign_outs_hold_on_every_node() {
    let cluster = Cluster::start(3, NATS).await;
    cluster.sign_up(0, "target@example.com").await;
    let attempt = |node: usize, password: &'static str| {
        let cluster = &cluster;
        async move {
            cluster
                .call(
                    node,
                    reqwest::Method::POST,
                    "/api/v1/sessions",
                    None,
                    Some(json!({"email": "target@example.com", "password": password})),
                )
                .await
        }
    };
    // Five free failures for an account from one address, counted once
    // across the nodes, not five each; the next try waits.
    for i in 0..5 {
        assert_eq!(attempt(i % 3, "wrong horse").await.0, 401);
    }
    let (status, body) = attempt(1, "wrong horse").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("rate_limited"))
    );

    // Signed out on one node: refused on another at once, not when that
    // node's cache of credentials would have let go of it.
    let (token, _) = cluster.sign_up(1, "leaving@example.com").await;
    let me =
        |node: usize| cluster.call(node, reqwest::Method::GET, "/api/v1/me", Some(&token), None);
    assert_eq!(me(2).await.0, 200);
    let (status, _) = cluster
        .call(
            0,
            reqwest::Method::DELETE,
            "/api/v1/sessions/current",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let signed_out = Instant::now();
    while me(2).await.0 != 401 {
        assert!(
            signed_out.elapsed() < Duration::from_secs(9),
            "node 2 still took the session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_chat_allowance_holds_across_nodes() {
    let cluster = Cluster::start(2, NATS).await;
    let (seller, room, _) = cluster.show().await;
    let (token, user) = cluster.sign_up(1, "fast@example.com").await;
    let mut here = cluster.viewer(0, &room, Some(&token)).await;
    let mut there = cluster.viewer(1, &room, Some(&token)).await;
    // Five at once through each node: each node's own check lets its five
    // through, and the room's sequencer holds the user to one allowance.
    for i in 0..5 {
        here.chat(&format!("here {i}")).await;
        there.chat(&format!("there {i}")).await;
    }
    let decided = |v: &Viewer| {
        let shown = v
            .shown
            .values()
            .filter(|f| f["type"] == "chat" && f["data"]["user"]["id"] == user.as_str())
            .count();
        let refused = v
            .errors
            .iter()
            .filter(|e| e["code"] == "rate_limited")
            .count();
        (shown, refused)
    };
    while {
        let (shown, refused) = decided(&here);
        shown + refused < 10
    } {
        here.read_until(|f| f["type"] == "chat" || f["type"] == "error")
            .await
            .unwrap();
    }
    let (shown, refused) = decided(&here);
    assert_eq!(shown + refused, 10);
    assert!(
        refused >= 3,
        "{shown} shown, {refused} refused: one allowance, not two"
    );
    assert!(
        here.errors
            .iter()
            .all(|e| e["retry_after_ms"].as_u64().is_some()),
        "{:?}",
        here.errors
    );

    // Slow mode: once a minute, whichever node the next message goes to.
    cluster
        .put(
            0,
            &format!("/api/v1/rooms/{room}/slow-mode"),
            &seller,
            json!({"seconds": 60}),
        )
        .await;
    let (slow, _) = cluster.sign_up(0, "slow@example.com").await;
    let mut first = cluster.viewer(0, &room, Some(&slow)).await;
    let mut second = cluster.viewer(1, &room, Some(&slow)).await;
    first.say("once").await;
    second.chat("twice").await;
    let refused = second.wait_for(|f| f["type"] == "error").await;
    assert_eq!(refused["code"], "slow_mode", "{refused}");
    drop(there);
    cluster.finish().await;
}
