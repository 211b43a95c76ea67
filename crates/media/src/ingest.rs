//! The RTMP listener: the I/O around [`crate::rtmp::Session`]. Each connection
//! has its own task; a bad or silent one is closed with a log line and touches
//! nothing else.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => {
                let _ = socket.set_nodelay(true);
                metrics::counter!("hawker_rtmp_connections_total").increment(1);
                let (media, shutdown) = (media.clone(), shutdown.clone());
                let Some(event_loop) = &event_loop else {
                    connections.spawn(connection(socket, peer, media, shutdown));
                    continue;
                };
                // Moved to the RTMP thread's reactor: deregistered here,
                // registered there by the task.
                match socket.into_std() {
                    Ok(socket) => {
                        connections.spawn_on(
                            async move {
                                match TcpStream::from_std(socket) {
                                    Ok(socket) => connection(socket, peer, media, shutdown).await,
                                    Err(e) => {
                                        tracing::warn!(%peer, error = %e, "RTMP connection lost")
                                    }
                                }
                            },
                            &event_loop.handle,
                        );
                    }
                    Err(e) => tracing::warn!(%peer, error = %e, "RTMP connection lost"),
                }
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
    #[error("replaced by a new publisher")]
    Replaced,
    #[error("server shutting down")]
    Shutdown,
    #[error("encoder closed the connection")]
    Eof,
}

async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    media: Media,
    shutdown: CancellationToken,
) {
    let mut publisher = None;
    let result = run(socket, peer, &media, &shutdown, &mut publisher).await;
    let room = publisher.as_ref().map(|p: &Publisher| p.room().to_string());
    match &result {
        Err(Closed::Eof | Closed::Shutdown | Closed::Replaced) => {
            tracing::info!(%peer, room, reason = %result.as_ref().err().map(ToString::to_string).unwrap_or_default(), "RTMP connection closed");
        }
        Err(e) => {
            metrics::counter!("hawker_rtmp_rejected_total").increment(1);
            tracing::warn!(%peer, room, reason = %e, "RTMP connection closed");
        }
        Ok(()) => tracing::info!(%peer, room, "encoder stopped publishing"),
    }
    if let Some(publisher) = publisher {
        publisher.finish().await;
    }
}

async fn run(
    mut socket: TcpStream,
    peer: SocketAddr,
    media: &Media,
    shutdown: &CancellationToken,
    publisher: &mut Option<Publisher>,
) -> Result<(), Closed> {
    let settings = media.settings().clone();
    let mut session = Session::new(settings.max_message);
    let mut input = BytesMut::with_capacity(64 * 1024);
    // The futures a read races against are made once, not per read: a busy
    // encoder sends ~70 messages a second, and registering a timer and two
    // cancellation waiters for each of them showed in the ingest's CPU time.
    let shutdown_wait = shutdown.cancelled();
    tokio::pin!(shutdown_wait);
    let mut replaced_wait = Box::pin(CancellationToken::new().cancelled_owned());
    let mut last_read = tokio::time::Instant::now();
    let deadline = tokio::time::sleep(settings.publish_timeout);
    tokio::pin!(deadline);
    loop {
        let read = tokio::select! {
            biased;
            read = socket.read_buf(&mut input) => read?,
            () = &mut shutdown_wait => return Err(Closed::Shutdown),
            () = &mut replaced_wait => {
                // The new session owns the stream now; this one must not end it.
                publisher.take();
                return Err(Closed::Replaced);
            }
            () = &mut deadline => {
                if publisher.is_none() {
                    return Err(Closed::NoPublish(settings.publish_timeout));
                }
                let silent_until = last_read + settings.idle_timeout;
                if tokio::time::Instant::now() >= silent_until {
                    return Err(Closed::Silent(settings.idle_timeout));
                }
                deadline.as_mut().reset(silent_until);
                continue;
            }
        };
        last_read = tokio::time::Instant::now();
        if read == 0 {
            return Err(Closed::Eof);
        }
        while let Some(event) = session.next_event(&mut input)? {
            match event {
                Event::Publish { key } => match media.authorize(&key).await {
                    Ok(room) => {
                        let started = media.publish(&room, peer).await;
                        replaced_wait = Box::pin(started.replaced().clone().cancelled_owned());
                        deadline
                            .as_mut()
                            .reset(tokio::time::Instant::now() + settings.idle_timeout);
                        *publisher = Some(started);
                        session.accept_publish();
                    }
                    Err(refused) => {
                        let code = match refused {
                            Refused::Store(_) => "NetStream.Publish.Failed",
                            _ => "NetStream.Publish.BadName",
                        };
                        session.reject_publish(code, "publishing refused");
                        flush(&mut socket, &mut session).await?;
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
                    flush(&mut socket, &mut session).await?;
                    return Ok(());
                }
            }
        }
        if session.buffered() > 2 * settings.max_message {
            return Err(Closed::Hoarding(session.buffered()));
        }
        flush(&mut socket, &mut session).await?;
    }
}

async fn flush(socket: &mut TcpStream, session: &mut Session) -> Result<(), Closed> {
    if let Some(out) = session.output() {
        tokio::time::timeout(WRITE_TIMEOUT, socket.write_all(&out))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    }
    Ok(())
}
