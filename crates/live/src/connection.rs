//! One viewer's WebSocket in a room. Generic over the socket (any `Stream` of
//! messages that is also a `Sink`), so the room logic is tested without sockets.
//!
//! The protocol is in `docs/protocol.md`. What is sent: the start (a snapshot, or
//! the frames missed since `since`), then every room frame, batched: all frames
//! waiting are fed and flushed together. What is read: `chat`, `like`, `ping`.
//!
//! Slow readers: a connection reads the room's shared ring at its own pace. One
//! that falls a whole ring behind loses the oldest frames (chat it will not see),
//! is told how many, and gets the room's current `state` (counters, sale, pin),
//! so what it shows stays true. One that falls behind [`LAGS_BEFORE_CUT`] times
//! within [`LAG_WINDOW`], or whose socket takes no bytes for `write_timeout`,
//! is disconnected (1008). It never holds more than the ring, and never slows
//! anyone else: the room never waits for a connection.

use std::collections::VecDeque;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, close_code};
use domain::ids::UserId;
use domain::room::ChatText;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::room::{Bucket, Frame, Rate, Refusal, Room, Start, bucket, take};
use crate::{Hub, Seat};

/// Frames written in one flush at most.
const BATCH: usize = 256;
/// How many times a connection may lose frames within [`LAG_WINDOW`].
/// A text frame's payload, shared by every connection that sends it (the
/// WebSocket's own type, so that sending it copies nothing). The rest of the
/// crate names it through here only.
pub type FrameText = Utf8Bytes;

pub const LAGS_BEFORE_CUT: usize = 3;
pub const LAG_WINDOW: Duration = Duration::from_secs(30);

/// The signed-in person behind a connection.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub id: UserId,
    pub name: String,
    /// The shop's owner or one of its moderators: not held to slow mode.
    pub moderator: bool,
    /// What the connection signed in with (the hash of the session's or the
    /// token's secret): once it no longer signs in, the connection watches
    /// on without its user's rights.
    pub credential: String,
}

/// A change to what a signed-in viewer may do, for the connections open now.
#[derive(Debug, Clone)]
pub(crate) enum Grant {
    /// `user` moderates the room's shop now, or no longer.
    Moderator { user: UserId, moderator: bool },
    /// Of `user`'s credentials, only these still sign in.
    SignedOut {
        user: UserId,
        valid: std::sync::Arc<std::collections::HashSet<String>>,
    },
}

/// What a connection may do, and how often.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Chat messages per user in a room.
    pub chat: Rate,
    /// Likes per connection (they are coalesced, but counting costs too).
    pub likes: Rate,
    /// Frames of any kind per connection; a flood past it is cut off.
    pub frames: Rate,
    /// Bad frames (malformed, unknown) a connection may send before it is cut off.
    pub bad_frames: u32,
    /// The longest text frame a client may send, in bytes (chat is 300
    /// characters); a longer one closes the connection with 1009. The socket
    /// itself should accept somewhat more, so that the message is read whole and
    /// the close is a clean one.
    pub max_frame_bytes: usize,
    /// The server pings this often; a connection silent for three of these is
    /// closed.
    pub heartbeat: Duration,
    /// Frames a connection may fall behind its room by before it loses the
    /// oldest (the size of each room's shared ring).
    pub ring: usize,
    /// How long a write may wait for the socket before the viewer is cut off.
    pub write_timeout: Duration,
    /// Chat messages a room shows at most (more than people can read): past it,
    /// viewers' messages are shown as a sample, in the order they came, while the
    /// shop's owner and moderators always get through. All are kept.
    pub display: Rate,
    /// How often each node writes its rooms' viewers and likes for the
    /// sellers' dashboards; every node samples on the same boundaries.
    pub sample_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            chat: Rate {
                burst: 5.0,
                per_second: 1.0,
            },
            likes: Rate {
                burst: 20.0,
                per_second: 10.0,
            },
            frames: Rate {
                burst: 50.0,
                per_second: 20.0,
            },
            bad_frames: 20,
            max_frame_bytes: 4096,
            heartbeat: Duration::from_secs(20),
            ring: 4096,
            write_timeout: Duration::from_secs(10),
            display: Rate {
                burst: 200.0,
                per_second: 100.0,
            },
            sample_interval: Duration::from_secs(10),
        }
    }
}

/// What the reading side decided about one incoming message.
enum Reply {
    Nothing,
    Send(Utf8Bytes),
    /// An error event; `bad` counts towards [`Limits::bad_frames`] (a frame no
    /// client of the protocol sends, as opposed to a refusal such as a rate).
    Refuse {
        frame: Utf8Bytes,
        bad: bool,
    },
}

fn refuse(code: &str, message: impl Into<String>, bad: bool) -> Reply {
    Reply::Refuse {
        frame: Utf8Bytes::from(
            json!({"type": "error", "code": code, "message": message.into()}).to_string(),
        ),
        bad,
    }
}

fn reject(reason: &'static str) {
    metrics::counter!("live_frames_rejected_total", "reason" => reason).increment(1);
}

/// Serves one connection until the viewer leaves, is cut off, or the server
/// stops. `seat` is the viewer's place in the room (see [`Hub::join`]).
pub async fn serve<S, E>(
    socket: S,
    hub: Hub,
    seat: Seat,
    viewer: Option<Viewer>,
    since: Option<u64>,
) where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let (mut tx, rx) = socket.split();
    let room = seat.room.clone();
    let limits = hub.limits().clone();
    let (start, mut frames) = room.join(since);
    // The last seq this connection has sent: the ring may still bring frames
    // the start already covered.
    let mut sent = since.unwrap_or(0);
    let started = match start {
        Start::Snapshot(snapshot, seq) => {
            sent = seq;
            tx.feed(Message::Text(snapshot)).await.is_ok()
        }
        Start::Replay(missed) => {
            let mut ok = true;
            for frame in missed {
                sent = frame.seq;
                ok &= tx.feed(Message::Text(frame.text)).await.is_ok();
            }
            ok
        }
    };
    if !started || !flush(&mut tx, limits.write_timeout).await {
        return;
    }
    let me = viewer.as_ref().map(|v| v.id.clone());
    let mut lags: VecDeque<Instant> = VecDeque::new();
    let mut heartbeat = tokio::time::interval(limits.heartbeat);
    heartbeat.reset();
    // The reading half runs as a task of its own, where the rooms run (see
    // `Hub::spawn_reader`): a chat message is read when it arrives, not after
    // every connection of a big room has written its flush.
    let (said, mut inbound) = mpsc::channel(16);
    let closing = CancellationToken::new();
    let signed_in = SignedIn {
        grants: room.grants(),
        viewer,
    };
    let mut reader = hub.spawn_reader(read(
        rx,
        hub.clone(),
        room.clone(),
        signed_in,
        limits.clone(),
        said,
        closing.clone(),
    ));
    let close = loop {
        tokio::select! {
            biased;
            frame = frames.recv() => {
                let delivered = tokio::time::timeout(
                    limits.write_timeout,
                    deliver(&mut tx, &mut frames, frame, &room, me.as_ref(), &mut lags, &mut sent),
                )
                .await;
                match delivered {
                    Ok(Ok(())) => {}
                    Ok(Err(close)) => break close,
                    Err(_) => {
                        metrics::counter!("live_slow_disconnects_total").increment(1);
                        break Some((close_code::POLICY, "cannot keep up"));
                    }
                }
            }
            // Before the reading half's channel: stopping ends the rooms' thread,
            // which drops every reader, and the viewer must still be told why.
            _ = hub.shutdown().cancelled() => break Some((close_code::RESTART, "reconnect elsewhere")),
            said = inbound.recv() => match said {
                Some(Inbound::Send(text)) => {
                    if tx.feed(Message::Text(text)).await.is_err()
                        || !flush(&mut tx, limits.write_timeout).await
                    {
                        break None;
                    }
                }
                Some(Inbound::Close(code, reason)) => break Some((code, reason)),
                None => break None,
            },
            _ = heartbeat.tick() => {
                if tx.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
        }
    };
    // No longer a viewer, whatever the closing handshake below takes.
    drop(seat);
    closing.cancel();
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Message::Close(Some(frame))))
            .await;
        // The closing handshake: the reader reads what the client still sends
        // until its own close, so that unread bytes do not turn the close into
        // a reset.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut reader).await;
    }
    reader.abort();
}

/// What the reading half tells the writing half.
enum Inbound {
    /// A frame for this viewer: a pong, an error event.
    Send(Utf8Bytes),
    /// Close the connection with this code and reason.
    Close(u16, &'static str),
}

/// Who a connection speaks for, kept up to date: a moderator dismissed, or
/// a session signed out, changes it on connections already open.
struct SignedIn {
    grants: broadcast::Receiver<Grant>,
    viewer: Option<Viewer>,
}

impl SignedIn {
    /// Applies a change; the notice for the client, if its rights changed.
    fn apply(&mut self, grant: Grant) -> Option<Utf8Bytes> {
        let viewer = self.viewer.as_mut()?;
        match grant {
            Grant::Moderator { user, moderator } if user == viewer.id => {
                if viewer.moderator == moderator {
                    return None;
                }
                viewer.moderator = moderator;
                let notice = json!({"type": "moderator", "moderator": moderator});
                Some(Utf8Bytes::from(notice.to_string()))
            }
            Grant::SignedOut { user, valid } if user == viewer.id => {
                if valid.contains(&viewer.credential) {
                    return None;
                }
                self.viewer = None;
                metrics::counter!("live_signed_out_total").increment(1);
                let notice = json!({"type": "error", "code": "signed_out",
                    "message": "signed out: you can watch, but not chat or like, until you sign in again"});
                Some(Utf8Bytes::from(notice.to_string()))
            }
            _ => None,
        }
    }
}

/// The reading half of a connection: `chat`, `like` and `ping`, the limits on
/// what a client sends, and the heartbeat (a client silent for three of them is
/// closed). Once the writing half closes (`closing`), it only reads on to the
/// client's own close.
async fn read<R, E>(
    mut rx: R,
    hub: Hub,
    room: std::sync::Arc<Room>,
    mut signed_in: SignedIn,
    limits: Limits,
    said: mpsc::Sender<Inbound>,
    closing: CancellationToken,
) where
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut likes = bucket(limits.likes);
    let mut incoming = bucket(limits.frames);
    let mut bad = 0u32;
    let mut draining = false;
    loop {
        let next = tokio::select! {
            () = closing.cancelled(), if !draining => {
                draining = true;
                continue;
            }
            grant = signed_in.grants.recv() => {
                let notice = match grant {
                    Ok(grant) => signed_in.apply(grant),
                    // Missed changes: nobody keeps rights they may have lost.
                    Err(RecvError::Lagged(_)) => signed_in.viewer.take().map(|_| Utf8Bytes::from_static(
                        r#"{"type":"error","code":"signed_out","message":"sign in again to chat"}"#,
                    )),
                    Err(RecvError::Closed) => None,
                };
                if let Some(notice) = notice
                    && said.send(Inbound::Send(notice)).await.is_err()
                {
                    return;
                }
                continue;
            }
            next = tokio::time::timeout(limits.heartbeat * 3, rx.next()) => next,
        };
        let message = match next {
            Err(_) => {
                if !draining {
                    let _ = said
                        .send(Inbound::Close(close_code::AWAY, "no heartbeat"))
                        .await;
                }
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                // tungstenite reports an over-long message as an error.
                let text = e.to_string();
                if !draining && (text.contains("too long") || text.contains("size")) {
                    reject("too_big");
                    let _ = said
                        .send(Inbound::Close(close_code::SIZE, "message too big"))
                        .await;
                }
                return;
            }
            Ok(Some(Ok(message))) => message,
        };
        if draining {
            if matches!(message, Message::Close(_)) {
                return;
            }
            continue;
        }
        if take(&mut incoming, limits.frames, std::time::Instant::now()).is_err() {
            reject("flood");
            let _ = said
                .send(Inbound::Close(close_code::POLICY, "too many frames"))
                .await;
            draining = true;
            continue;
        }
        let reply = match message {
            Message::Text(text) if text.len() > limits.max_frame_bytes => {
                reject("too_big");
                let _ = said
                    .send(Inbound::Close(close_code::SIZE, "message too big"))
                    .await;
                draining = true;
                continue;
            }
            Message::Text(text) => {
                read_text(
                    &hub,
                    &room,
                    signed_in.viewer.as_ref(),
                    &mut likes,
                    &limits,
                    text.as_str(),
                )
                .await
            }
            Message::Binary(_) => {
                reject("binary");
                refuse("unsupported_frame", "frames are JSON text", true)
            }
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) => Reply::Nothing,
        };
        let text = match reply {
            Reply::Nothing => continue,
            Reply::Send(text) => text,
            Reply::Refuse { frame, bad: is_bad } => {
                bad += u32::from(is_bad);
                if bad > limits.bad_frames {
                    let _ = said
                        .send(Inbound::Close(close_code::POLICY, "too many bad frames"))
                        .await;
                    draining = true;
                    continue;
                }
                frame
            }
        };
        if said.send(Inbound::Send(text)).await.is_err() {
            return;
        }
    }
}

type Close = Option<(u16, &'static str)>;

/// Writes `first` and whatever else is waiting in the ring, in one flush. A
/// connection that lost frames is told so and gets the room's current state.
#[allow(clippy::too_many_arguments)]
async fn deliver<S: Sink<Message> + Unpin>(
    tx: &mut S,
    frames: &mut broadcast::Receiver<Frame>,
    first: Result<Frame, RecvError>,
    room: &Room,
    me: Option<&UserId>,
    lags: &mut VecDeque<Instant>,
    sent: &mut u64,
) -> Result<(), Close> {
    let mut lost = 0;
    match first {
        Ok(frame) => {
            let mut fed = 0;
            if wanted(&frame, me, sent) {
                tx.feed(Message::Text(frame.text)).await.map_err(|_| None)?;
                fed += 1;
            }
            while fed < BATCH {
                match frames.try_recv() {
                    Ok(frame) if !wanted(&frame, me, sent) => {}
                    Ok(frame) => {
                        tx.feed(Message::Text(frame.text)).await.map_err(|_| None)?;
                        fed += 1;
                    }
                    Err(TryRecvError::Lagged(n)) => {
                        lost = n;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        Err(RecvError::Lagged(n)) => lost = n,
        Err(RecvError::Closed) => return Err(Some((close_code::AWAY, "the room closed"))),
    }
    if lost > 0 {
        metrics::counter!("live_dropped_frames_total").increment(lost);
        let now = Instant::now();
        lags.push_back(now);
        while lags
            .front()
            .is_some_and(|t| now.duration_since(*t) > LAG_WINDOW)
        {
            lags.pop_front();
        }
        if lags.len() >= LAGS_BEFORE_CUT {
            metrics::counter!("live_slow_disconnects_total").increment(1);
            return Err(Some((close_code::POLICY, "cannot keep up")));
        }
        let notice = Utf8Bytes::from(json!({"type": "lagged", "lost": lost}).to_string());
        tx.feed(Message::Text(notice)).await.map_err(|_| None)?;
        tx.feed(Message::Text(room.state_frame()))
            .await
            .map_err(|_| None)?;
    }
    tx.flush().await.map_err(|_| None)
}

/// Whether this connection sends `frame`: a numbered frame it has not sent
/// yet (counted as sent), or a notice for its user.
fn wanted(frame: &Frame, me: Option<&UserId>, sent: &mut u64) -> bool {
    match &frame.to {
        Some(to) => me == Some(to),
        None if frame.seq > *sent => {
            *sent = frame.seq;
            true
        }
        None => false,
    }
}

async fn flush<S: Sink<Message> + Unpin>(tx: &mut S, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, tx.flush()).await, Ok(Ok(())))
}

/// The answer to a chat message the room's rules refuse.
fn refused_chat(refusal: Refusal) -> Reply {
    Reply::Refuse {
        frame: refusal_frame(refusal),
        bad: false,
    }
}

/// The error event for a chat message the room's rules refuse (counted).
pub(crate) fn refusal_frame(refusal: Refusal) -> Utf8Bytes {
    let (code, message, retry) = match refusal {
        Refusal::Banned => (
            "banned",
            "you are banned from this room's chat".to_owned(),
            None,
        ),
        Refusal::Muted { until } => (
            "muted",
            match until {
                Some(until) => format!("you are muted until {}", until.to_rfc3339()),
                None => "you are muted".to_owned(),
            },
            None,
        ),
        Refusal::Blocked => (
            "message_blocked",
            "the message contains a blocked word".to_owned(),
            None,
        ),
        Refusal::TooSoon { slow_mode, wait } => (
            if slow_mode {
                "slow_mode"
            } else {
                "rate_limited"
            },
            format!(
                "{}: wait {:.0} s",
                if slow_mode { "slow mode" } else { "too fast" },
                wait.as_secs_f64().ceil()
            ),
            Some(wait),
        ),
    };
    reject(code);
    let mut frame = json!({"type": "error", "code": code, "message": message});
    if let Some(wait) = retry {
        frame["retry_after_ms"] = json!(wait.as_millis() as u64);
    }
    Utf8Bytes::from(frame.to_string())
}

/// Reads one text frame: `chat`, `like` or `ping`.
async fn read_text(
    hub: &Hub,
    room: &Room,
    viewer: Option<&Viewer>,
    likes: &mut Bucket,
    limits: &Limits,
    text: &str,
) -> Reply {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        reject("malformed");
        return refuse("invalid_frame", "not a JSON object", true);
    };
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        reject("malformed");
        return refuse("invalid_frame", "a frame needs a \"type\"", true);
    };
    match kind {
        "ping" => Reply::Send(Utf8Bytes::from_static(r#"{"type":"pong"}"#)),
        "like" => {
            let Some(viewer) = viewer else {
                return refuse("unauthenticated", "sign in to like", false);
            };
            if room.silenced(&viewer.id) {
                return Reply::Nothing;
            }
            if take(likes, limits.likes, std::time::Instant::now()).is_err() {
                reject("rate_limited");
                return Reply::Nothing;
            }
            room.like();
            Reply::Nothing
        }
        "chat" => {
            let Some(viewer) = viewer else {
                return refuse("unauthenticated", "sign in to chat", false);
            };
            let Some(raw) = value.get("text").and_then(Value::as_str) else {
                return refuse("invalid_field", "text: a string is required", false);
            };
            let text = match ChatText::parse(raw) {
                Ok(text) => text,
                Err(e) => return refuse("invalid_field", e.to_string(), false),
            };
            if let Err(refusal) =
                room.check_chat(&viewer.id, viewer.moderator, text.as_str(), limits.chat)
            {
                return refused_chat(refusal);
            }
            // Boxed: every connection's reading half holds this future's
            // space for as long as it lives, and few of them ever chat.
            match Box::pin(hub.chat(&room.id, viewer, &text)).await {
                Ok(()) => Reply::Nothing,
                Err(e) => {
                    tracing::warn!(room = %room.id, error = %e, "a chat message could not be published");
                    refuse("unavailable", "chat is unavailable; try again", false)
                }
            }
        }
        other => {
            reject("unknown_type");
            refuse(
                "unknown_type",
                format!("unknown frame type {other:?}"),
                true,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::pin::Pin;
    use std::task::{Context, Poll};

    use serde_json::Value;
    use store::testing::TestDatabase;
    use tokio::sync::mpsc;

    use super::*;

    /// A socket made of two channels: what the test sends comes out of
    /// `Stream`, what the connection writes goes into `sent`.
    struct Pipe {
        incoming: mpsc::UnboundedReceiver<Result<Message, String>>,
        outgoing: mpsc::UnboundedSender<Message>,
    }

    impl Stream for Pipe {
        type Item = Result<Message, String>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.incoming.poll_recv(cx)
        }
    }

    impl Sink<Message> for Pipe {
        type Error = String;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), String> {
            self.outgoing.send(item).map_err(|e| e.to_string())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
            Poll::Ready(Ok(()))
        }
    }

    struct Client {
        to_server: mpsc::UnboundedSender<Result<Message, String>>,
        from_server: mpsc::UnboundedReceiver<Message>,
    }

    impl Client {
        fn send(&self, frame: Value) {
            self.to_server
                .send(Ok(Message::Text(frame.to_string().into())))
                .unwrap();
        }

        async fn next(&mut self) -> Message {
            tokio::time::timeout(Duration::from_secs(5), self.from_server.recv())
                .await
                .unwrap()
                .unwrap()
        }

        async fn next_json(&mut self) -> Value {
            match self.next().await {
                Message::Text(text) => serde_json::from_str(text.as_str()).unwrap(),
                other => panic!("expected text, got {other:?}"),
            }
        }

        async fn next_of(&mut self, kind: &str) -> Value {
            loop {
                let frame = self.next_json().await;
                if frame["type"] == kind {
                    return frame;
                }
            }
        }
    }

    /// A room in a fresh store and a hub serving it.
    async fn setup(limits: Limits) -> (TestDatabase, Hub, domain::ids::RoomId, Viewer) {
        use domain::account::{DisplayName, Email, Role};
        use domain::catalog::{Description, Handle, ShopName, Title};
        let db = TestDatabase::sqlite().await;
        let user = db
            .store
            .create_user(store::NewUser {
                email: Email::parse("ann@example.com").unwrap(),
                display_name: DisplayName::parse("Ann").unwrap(),
                password_hash: "x".into(),
                role: Role::Seller,
            })
            .await
            .unwrap();
        let shop = db
            .store
            .create_shop(store::NewShop {
                owner: user.id.clone(),
                handle: Handle::parse("anns").unwrap(),
                name: ShopName::parse("Ann's").unwrap(),
                description: Description::parse("").unwrap(),
                currency: domain::money::Currency::parse("EUR").unwrap(),
            })
            .await
            .unwrap();
        let room = db
            .store
            .create_room(store::NewRoom {
                shop: shop.id,
                title: Title::parse("Live").unwrap(),
                description: Description::parse("").unwrap(),
                cover_image: None,
                scheduled_start: None,
                stream_key_hash: "k".into(),
            })
            .await
            .unwrap();
        let hub = Hub::new(
            db.store.clone(),
            bus::Bus::in_process(),
            limits,
            &CancellationToken::new(),
        );
        let viewer = Viewer {
            id: user.id,
            name: "Ann".into(),
            moderator: true,
            credential: "hash".into(),
        };
        (db, hub, room.id, viewer)
    }

    async fn connect(hub: &Hub, room: &domain::ids::RoomId, viewer: Option<Viewer>) -> Client {
        let (to_server, incoming) = mpsc::unbounded_channel();
        let (outgoing, from_server) = mpsc::unbounded_channel();
        let seat = hub.join(room).await.unwrap().unwrap();
        tokio::spawn(serve(
            Pipe { incoming, outgoing },
            hub.clone(),
            seat,
            viewer,
            None,
        ));
        Client {
            to_server,
            from_server,
        }
    }

    #[tokio::test]
    async fn a_chat_message_goes_round_the_room_once_numbered() {
        let (_db, hub, room, ann) = setup(Limits::default()).await;
        let mut speaker = connect(&hub, &room, Some(ann)).await;
        let mut watcher = connect(&hub, &room, None).await;
        let first = speaker.next_of("snapshot").await["seq"].as_u64().unwrap();
        watcher.next_of("snapshot").await;
        speaker.send(json!({"type": "chat", "text": " hello\u{0000} "}));
        for client in [&mut speaker, &mut watcher] {
            let chat = client.next_of("chat").await;
            assert_eq!(chat["data"]["text"], "hello");
            assert_eq!(chat["data"]["user"]["name"], "Ann");
            assert!(chat["seq"].as_u64().unwrap() > first);
        }
        watcher.send(json!({"type": "chat", "text": "me too"}));
        assert_eq!(watcher.next_of("error").await["code"], "unauthenticated");
    }

    #[tokio::test]
    async fn bad_frames_are_answered_then_the_connection_is_closed() {
        let (_db, hub, room, _) = setup(Limits {
            bad_frames: 2,
            ..Limits::default()
        })
        .await;
        let mut client = connect(&hub, &room, None).await;
        client.next_of("snapshot").await;
        client.send(json!(["not", "an", "object"]));
        assert_eq!(client.next_of("error").await["code"], "invalid_frame");
        client
            .to_server
            .send(Ok(Message::Binary(vec![1, 2, 3].into())))
            .unwrap();
        assert_eq!(client.next_of("error").await["code"], "unsupported_frame");
        client.send(json!({"type": "nope"}));
        loop {
            if let Message::Close(Some(frame)) = client.next().await {
                assert_eq!(frame.code, close_code::POLICY);
                break;
            }
        }
        assert_eq!(hub.connections(&room), 0);
    }

    #[tokio::test]
    async fn a_socket_error_ends_the_connection_and_frees_the_seat() {
        let (_db, hub, room, _) = setup(Limits::default()).await;
        let mut client = connect(&hub, &room, None).await;
        client.next_of("snapshot").await;
        assert_eq!(hub.connections(&room), 1);
        client
            .to_server
            .send(Err("connection reset".into()))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while hub.connections(&room) > 0 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn stopping_the_hub_tells_connections_to_reconnect_elsewhere() {
        let (_db, hub, room, _) = setup(Limits::default()).await;
        let mut client = connect(&hub, &room, None).await;
        client.next_of("snapshot").await;
        hub.stop();
        loop {
            if let Message::Close(Some(frame)) = client.next().await {
                assert_eq!(frame.code, close_code::RESTART);
                break;
            }
        }
    }
}
