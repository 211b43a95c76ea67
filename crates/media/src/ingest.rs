//! The RTMP listener: the I/O around [`crate::rtmp::Session`]. Each connection
//! has its own task; a bad or silent one is closed with a log line and touches
//! nothing else.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use domain::net::{Gate, Pass};

use crate::flv;
use crate::rtmp::{Event, Session};
use crate::stream::{Media, Publisher, Refused};

/// How long a write to an encoder may take before it is given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts encoders until `shutdown`, then ends every stream (so recordings
/// are closed) and returns once the connections are gone.
///
/// The connections run on a thread of their own, one event loop as nginx-rtmp
/// has: an encoder sends a message every 15 ms or so, and on the shared
/// multi-threaded runtime each one woke a second worker to look for work.
pub async fn serve(listener: TcpListener, media: Media, shutdown: CancellationToken) {
    let event_loop = match EventLoop::start() {
        Ok(event_loop) => Some(event_loop),
        Err(e) => {
            tracing::warn!(error = %e, "no RTMP thread; encoders share the main runtime");
            None
        }
    };
    let connections = TaskTracker::new();
    let limits = &media.settings().rtmp;
    let gate = Gate::new(limits.max_connections, limits.max_connections_per_address);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => {
                metrics::counter!("hawker_rtmp_connections_total").increment(1);
                // Over a limit, the connection is closed before a byte is
                // read: what an encoder sees is a refused publish.
                let pass = match gate.admit(Some(peer.ip())) {
                    Ok(pass) => pass,
                    Err(full) => {
                        metrics::counter!("hawker_rtmp_refused_total", "limit" => full.as_str())
                            .increment(1);
                        tracing::debug!(%peer, limit = full.as_str(), "RTMP connection refused");
                        continue;
                    }
                };
                metrics::gauge!("hawker_rtmp_connections").set(gate.open() as f64);
                let _ = socket.set_nodelay(true);
                // Taken out of the reactor: encoders' sockets are read on the
                // ingest's tick, not on readiness (see `run`).
                let socket = match socket.into_std() {
                    Ok(socket) => socket,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "RTMP connection lost");
                        continue;
                    }
                };
                let open = gate.clone();
                let task = connection(socket, peer, pass, media.clone(), shutdown.clone());
                let task = async move {
                    task.await;
                    metrics::gauge!("hawker_rtmp_connections").set(open.open() as f64);
                };
                match &event_loop {
                    Some(event_loop) => connections.spawn_on(task, &event_loop.handle),
                    None => connections.spawn(task),
                };
            }
            Err(e) => {
                tracing::warn!(error = %e, "RTMP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
    media.stop().await;
    if let Some(event_loop) = event_loop {
        let _ = tokio::task::spawn_blocking(move || event_loop.stop()).await;
    }
}

/// A current-thread runtime on a thread of its own.
struct EventLoop {
    handle: tokio::runtime::Handle,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl EventLoop {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hawker-rtmp".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            handle,
            stop,
            thread,
        })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] crate::rtmp::SessionError),
    #[error("bad media: {0}")]
    Media(#[from] crate::stream::BadTag),
    #[error("publish refused: {0}")]
    Refused(#[from] Refused),
    #[error("nothing received for {0:?}")]
    Silent(Duration),
    #[error("did not publish within {0:?}")]
    NoPublish(Duration),
    #[error("holds {0} bytes of partial messages")]
    Hoarding(usize),
    #[error("does not read what it is sent ({0} bytes waiting)")]
    Backlog(usize),
    #[error("replaced by a new publisher")]
    Replaced,
    #[error("its stream key was replaced or its room ended")]
    Cut,
    #[error("server shutting down")]
    Shutdown,
    #[error("encoder closed the connection")]
    Eof,
}

impl Closed {
    /// The `reason` label of `hawker_rtmp_rejected_total`.
    fn reason(&self) -> &'static str {
        match self {
            Closed::Io(_) => "io",
            Closed::Protocol(crate::rtmp::SessionError::Chunk(
                crate::rtmp::chunk::ChunkError::TooLong(_),
            )) => "message_too_long",
            Closed::Protocol(crate::rtmp::SessionError::Amf(crate::amf::AmfError::TooMany(_))) => {
                "amf_values"
            }
            Closed::Protocol(crate::rtmp::SessionError::Chatter) => "chatter",
            Closed::Protocol(_) => "protocol",
            Closed::Media(_) => "media",
            Closed::Refused(_) => "refused",
            Closed::Silent(_) => "silent",
            Closed::NoPublish(_) => "no_publish",
            Closed::Hoarding(_) => "hoarding",
            Closed::Backlog(_) => "backlog",
            Closed::Cut => "cut",
            Closed::Replaced | Closed::Shutdown | Closed::Eof => "",
        }
    }
}

async fn connection(
    socket: std::net::TcpStream,
    peer: SocketAddr,
    pass: Pass,
    media: Media,
    shutdown: CancellationToken,
) {
    let mut publisher = None;
    let result = run(socket, peer, &media, &shutdown, &mut publisher).await;
    drop(pass);
    let room = publisher.as_ref().map(|p: &Publisher| p.room().to_string());
    match &result {
        Err(Closed::Eof | Closed::Shutdown | Closed::Replaced) => {
            tracing::info!(%peer, room, reason = %result.as_ref().err().map(ToString::to_string).unwrap_or_default(), "RTMP connection closed");
        }
        Err(e) => {
            metrics::counter!("hawker_rtmp_rejected_total", "reason" => e.reason()).increment(1);
            tracing::warn!(%peer, room, reason = %e, "RTMP connection closed");
        }
        Ok(()) => tracing::info!(%peer, room, "encoder stopped publishing"),
    }
    if let Some(publisher) = publisher {
        publisher.finish().await;
    }
}

/// Reads and answers one encoder until it stops.
///
/// The socket is read on a tick shared by every connection (`Settings::
/// ingest_tick`, 10 ms by default) rather than when data arrives: an encoder
/// sends a message every 15 ms or so, and waking the thread for each arrival cost
/// more than the work (600 wake-ups a second for 20 streams at 2.4 messages
/// each). On the tick every connection drains what its socket holds, so one
/// wake-up serves all of them; the price is at most one tick of added latency.
/// The room a stream key opens, published by this session.
async fn publish(media: &Media, key: &str, peer: SocketAddr) -> Result<Publisher, Refused> {
    let room = media.authorize(key).await?;
    media.publish(&room, peer).await
}

async fn run(
    mut socket: std::net::TcpStream,
    peer: SocketAddr,
    media: &Media,
    shutdown: &CancellationToken,
    publisher: &mut Option<Publisher>,
) -> Result<(), Closed> {
    socket.set_nonblocking(true)?;
    let limits = media.settings().rtmp.clone();
    let mut session = Session::new(&limits);
    // Small until the connection publishes: a thousand that never do cost
    // a few MiB, not a hundred.
    let mut input = BytesMut::with_capacity(4 * 1024);
    let mut output = Output::new(limits.max_pending_output);
    let mut chunk = vec![0u8; 4 * 1024];
    let mut replaced: Option<CancellationToken> = None;
    let mut ticks = aligned_ticks(media.settings().ingest_tick);
    let opened = Instant::now();
    let mut last_read = opened;
    loop {
        ticks.tick().await;
        if shutdown.is_cancelled() {
            return Err(Closed::Shutdown);
        }
        if replaced
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
        {
            if publisher.as_ref().is_some_and(Publisher::holds_stream) {
                return Err(Closed::Cut);
            }
            // The new session owns the stream now; this one must not end it.
            publisher.take();
            return Err(Closed::Replaced);
        }
        let (read, eof) = drain(&mut socket, &mut chunk, &mut input, session.max_message())?;
        let now = Instant::now();
        if read > 0 {
            last_read = now;
        }
        // However busy a connection keeps itself, it publishes in time or goes.
        if publisher.is_none() && now - opened >= limits.publish_timeout {
            return Err(Closed::NoPublish(limits.publish_timeout));
        }
        if publisher.is_some() && now - last_read >= limits.idle_timeout {
            return Err(Closed::Silent(limits.idle_timeout));
        }
        while let Some(event) = session.next_event(&mut input)? {
            match event {
                Event::Publish { key } => match publish(media, &key, peer).await {
                    Ok(started) => {
                        replaced = Some(started.replaced().clone());
                        last_read = Instant::now();
                        chunk.resize(64 * 1024, 0);
                        *publisher = Some(started);
                        session.accept_publish();
                    }
                    Err(refused) => {
                        let code = match refused {
                            Refused::Store(_) => "NetStream.Publish.Failed",
                            _ => "NetStream.Publish.BadName",
                        };
                        session.reject_publish(code, "publishing refused");
                        output.finish(&mut socket, &mut session, &mut ticks).await?;
                        return Err(refused.into());
                    }
                },
                Event::Metadata(body) => {
                    if let Some(p) = publisher {
                        p.metadata(body);
                    }
                }
                Event::Audio { timestamp, body } => {
                    if let Some(p) = publisher {
                        p.push(flv::TAG_AUDIO, timestamp, body)?;
                    }
                }
                Event::Video { timestamp, body } => {
                    if let Some(p) = publisher {
                        p.push(flv::TAG_VIDEO, timestamp, body)?;
                    }
                }
                Event::Unpublish => {
                    if let Some(p) = publisher.take() {
                        p.finish().await;
                    }
                    output.finish(&mut socket, &mut session, &mut ticks).await?;
                    return Ok(());
                }
            }
        }
        if session.buffered() > 2 * session.max_message() {
            return Err(Closed::Hoarding(session.buffered()));
        }
        if eof {
            return Err(Closed::Eof);
        }
        output.send(&mut socket, &mut session)?;
    }
}

/// Ticks at multiples of `every` since a process-wide origin, so that every
/// connection's tick falls on the same instants and one wake-up serves all.
fn aligned_ticks(every: Duration) -> tokio::time::Interval {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let every = every.max(Duration::from_millis(1));
    let elapsed = origin.elapsed().as_nanos();
    let step = every.as_nanos();
    let next = origin
        + Duration::from_nanos(u64::try_from(elapsed.div_ceil(step) * step).unwrap_or(u64::MAX));
    let mut ticks = tokio::time::interval_at(next.into(), every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticks
}

/// Reads what the socket holds, at most about `limit` bytes (the rest waits
/// in the kernel, which slows the sender down). Returns the bytes read and
/// whether the peer closed.
fn drain(
    socket: &mut std::net::TcpStream,
    chunk: &mut [u8],
    input: &mut BytesMut,
    limit: usize,
) -> Result<(usize, bool), Closed> {
    let mut read = 0;
    while read < limit {
        match socket.read(chunk) {
            Ok(0) => return Ok((read, true)),
            Ok(n) => {
                input.extend_from_slice(&chunk[..n]);
                read += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((read, false))
}

/// What the session said and the socket has not taken yet.
struct Output {
    pending: BytesMut,
    /// Past this many bytes pending, the connection is closed.
    limit: usize,
    /// Since when the socket has taken nothing of `pending`.
    stalled: Option<Instant>,
}

impl Output {
    fn new(limit: usize) -> Self {
        Self {
            pending: BytesMut::new(),
            limit,
            stalled: None,
        }
    }

    /// Writes what the socket takes now; the rest waits for the next tick, for
    /// at most `WRITE_TIMEOUT`.
    fn send(
        &mut self,
        socket: &mut std::net::TcpStream,
        session: &mut Session,
    ) -> Result<(), Closed> {
        if let Some(out) = session.output() {
            self.pending.extend_from_slice(&out);
        }
        if self.pending.len() > self.limit {
            return Err(Closed::Backlog(self.pending.len()));
        }
        while !self.pending.is_empty() {
            match socket.write(&self.pending) {
                Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()),
                Ok(n) => {
                    let _ = self.pending.split_to(n);
                    self.stalled = None;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let since = *self.stalled.get_or_insert_with(Instant::now);
                    if since.elapsed() >= WRITE_TIMEOUT {
                        return Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into());
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes everything before the connection ends.
    async fn finish(
        &mut self,
        socket: &mut std::net::TcpStream,
        session: &mut Session,
        ticks: &mut tokio::time::Interval,
    ) -> Result<(), Closed> {
        self.send(socket, session)?;
        while !self.pending.is_empty() {
            ticks.tick().await;
            self.send(socket, session)?;
        }
        Ok(())
    }
}
