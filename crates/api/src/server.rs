//! The HTTP server around the router: connections admitted under the limits
//! (in all and per address), a first request's headers read within a
//! deadline, the client's address found behind trusted proxies, and a
//! graceful stop.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use domain::net::{Cidr, Gate, Pass};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::{ApiError, AppState, Code};

/// What an HTTP connection may cost, and how many there may be.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// A connection must have sent its first request's headers this long
    /// after it was accepted.
    pub header_read_timeout: Duration,
    /// Open connections, in all (WebSockets and HTTP-FLV viewers included).
    pub max_connections: usize,
    /// Open connections from one address; a trusted proxy's are counted in
    /// the total only.
    pub max_connections_per_address: usize,
    /// Room WebSockets from one client address.
    pub max_websockets_per_address: usize,
    /// HTTP-FLV viewers from one client address.
    pub max_flv_viewers_per_address: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 16_000,
            max_connections_per_address: 256,
            max_websockets_per_address: 100,
            max_flv_viewers_per_address: 20,
        }
    }
}

/// The client's address, as [`domain::net::client_address`] reads it, in
/// every request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub IpAddr);

/// A connection's place at the server's gate, in every request's extensions:
/// a WebSocket keeps it for as long as it stays open.
#[derive(Clone)]
pub(crate) struct Admitted {
    _pass: Arc<Pass>,
}

/// Serves the API on `listener` until `shutdown` is cancelled, then lets
/// requests in flight finish for at most `grace` before returning.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let hub = state.hub().clone();
    let config = state.config();
    let limits = config.http.clone();
    let trusted: Arc<[Cidr]> = config.trusted_proxies.clone().into();
    let unacknowledged = config.send_timeout;
    let gate = Gate::new(limits.max_connections, limits.max_connections_per_address);
    let app = crate::router(state);
    let connections = TaskTracker::new();
    // No hyper timer: with one (and its header-read timeout), LL-HLS in
    // Chromium stalled at the demo's clip joins on a loaded machine. The
    // deadline for the first request is kept here instead.
    let http = hyper::server::conn::http1::Builder::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let proxied = trusted.iter().any(|c| c.contains(peer.ip()));
        let pass = match gate.admit((!proxied).then_some(peer.ip())) {
            Ok(pass) => Arc::new(pass),
            Err(full) => {
                metrics::counter!("hawker_http_connections_refused_total", "limit" => full.as_str())
                    .increment(1);
                tokio::spawn(refuse(tcp));
                continue;
            }
        };
        metrics::gauge!("hawker_http_connections").set(gate.open() as f64);
        // A peer that stops reading (a stalled HTTP-FLV player, a frozen
        // phone) lets nothing be acknowledged; the kernel drops its connection
        // after this long, and the response it held goes with it. No Nagle:
        // room events, media parts and FLV tags are written whole and at
        // once, and each one held back for the peer's delayed acknowledgement
        // is late.
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&tcp).set_tcp_user_timeout(Some(unacknowledged));
        let (app, trusted) = (app.clone(), trusted.clone());
        let admitted = Admitted { _pass: pass };
        let served = Arc::new(AtomicBool::new(false));
        let first_request = served.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            first_request.store(true, Ordering::Relaxed);
            let headers = req.headers();
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let client = domain::net::client_address(
                peer.ip(),
                &trusted,
                header("forwarded"),
                header("x-forwarded-for"),
            );
            let extensions = req.extensions_mut();
            extensions.insert(ConnectInfo(peer));
            extensions.insert(ClientIp(client));
            extensions.insert(admitted.clone());
            let app = app.clone();
            async move {
                Ok::<_, Infallible>(
                    app.oneshot(req.map(Body::new))
                        .await
                        .unwrap_or_else(|e| match e {}),
                )
            }
        });
        let connection = http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let stopping = shutdown.clone();
        let open = gate.clone();
        let header_deadline = limits.header_read_timeout;
        connections.spawn(async move {
            tokio::pin!(connection);
            let deadline = tokio::time::sleep(header_deadline);
            tokio::pin!(deadline);
            let mut first = true;
            let ended = loop {
                tokio::select! {
                    ended = connection.as_mut() => break ended,
                    () = &mut deadline, if first => {
                        if !served.load(Ordering::Relaxed) {
                            // Dropping the connection closes its socket.
                            metrics::counter!("hawker_http_header_timeouts_total").increment(1);
                            tracing::debug!(%peer, "no request's headers came in time");
                            break Ok(());
                        }
                        first = false;
                    }
                    () = stopping.cancelled() => {
                        // The request in flight finishes; no other is read.
                        connection.as_mut().graceful_shutdown();
                        break connection.await;
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
            // The connection's own place may still be held by an upgraded
            // socket; the gauge says what is open now.
            metrics::gauge!("hawker_http_connections").set(open.open() as f64);
        });
    }
    drop(listener);
    connections.close();
    // Upgraded connections are no longer the HTTP server's to drain: the hub,
    // on a child of the same token, is closing them now.
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "requests still running after the grace period; closing them"
        );
    }
    if tokio::time::timeout(grace, hub.stopped()).await.is_err() {
        tracing::warn!("the chat log did not finish writing within the grace period");
    }
    Ok(())
}

/// Answers a connection over the limits with `429 too_many_connections`
/// and closes it, without reading its request.
async fn refuse(mut tcp: TcpStream) {
    let error = ApiError::new(
        Code::TooManyConnections,
        "too many connections from your address; close some and try again",
    );
    let body = serde_json::to_string(&error.body()).unwrap_or_default();
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = tcp.write_all(response.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

impl ClientIp {
    /// The client address of a request's connection.
    pub(crate) fn of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
        extensions.get::<ClientIp>().map(|c| c.0)
    }
}

/// Where a request came from: its client's address and its connection's
/// place at the gate (which a WebSocket keeps while it stays open).
pub(crate) struct Caller {
    pub client: Option<IpAddr>,
    pub admitted: Option<Admitted>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            client: ClientIp::of(&parts.extensions),
            admitted: parts.extensions.get::<Admitted>().cloned(),
        })
    }
}
