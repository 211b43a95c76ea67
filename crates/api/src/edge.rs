//! Playback from any node. A request for a room's stream on a node its
//! encoder did not reach is served there from a copy of the stream
//! (`media::edge`), pulled from the origin once per room per node, however
//! many viewers ask, over an internal route that only nodes with the
//! cluster's secret may use (`GET /internal/v1/streams/{room}/feed`, the
//! secret in `x-hawker-cluster-secret`). The origin is the one the room's
//! origin lease names, reached at the URL it advertises. The copy lets go
//! when nobody has asked for it for a while; when its origin goes away it
//! follows the lease to the node the stream moved to, or, once that fails for
//! as long as a lease lasts, ends its playlist rather than serve it stale.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::get;
use domain::ids::RoomId;
use futures_util::StreamExt as _;
use media::Stream;
use media::edge::Mirror;
use media::wire::Frame;
use tokio::sync::broadcast::error::RecvError;

use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};

/// The header an edge proves itself with.
pub const SECRET_HEADER: &str = "x-hawker-cluster-secret";

/// How long a request waits for a new copy's first media.
const FIRST_MEDIA: Duration = Duration::from_secs(5);
/// A feed that brings nothing for this long is taken for lost.
const SILENT_FEED: Duration = Duration::from_secs(5);

pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/internal/v1/streams/{room}/feed", get(feed))
        .route("/internal/v1/streams/{room}/state", get(state_now))
}

/// What a node that takes a stream over fetches from the node that had it:
/// the stream as it stands ([`media::origin::Fetcher`]).
pub fn fetcher(state: &AppState) -> Option<media::origin::Fetcher> {
    let secret = state.config().cluster_secret.clone()?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(1))
        .build()
        .ok()?;
    Some(Arc::new(move |room: RoomId, url: String| {
        let (client, secret) = (client.clone(), secret.clone());
        Box::pin(async move {
            let address = format!("{url}/internal/v1/streams/{room}/state");
            let response = client
                .get(&address)
                .header(SECRET_HEADER, secret)
                .send()
                .await
                .ok()?;
            if !response.status().is_success() {
                return None;
            }
            response.bytes().await.ok()
        })
    }))
}

/// The room's stream on this node: the encoder's if it publishes here, or
/// else a copy of the origin's.
pub(crate) async fn stream_here(state: &AppState, room: &str) -> ApiResult<Arc<Stream>> {
    let room = RoomId::from_string(room.to_owned());
    let here = state.media().stream(&room);
    if let Some(stream) = &here
        && !(stream.is_copy() && stream.is_over())
    {
        return Ok(stream.clone());
    }
    let not_streaming = || ApiError::new(Code::NotFound, "the room is not streaming");
    let origin = state.store().origin(&room).await?;
    let Some(origin) = origin.filter(|o| o.node != state.media().node()) else {
        return here.ok_or_else(not_streaming);
    };
    if here.as_ref().is_some_and(|s| s.id == origin.stream_id) {
        // The copy of this stream ended: its playlist says so.
        return here.ok_or_else(not_streaming);
    }
    let Some(secret) = state.config().cluster_secret.clone() else {
        tracing::warn!(%room, "the stream is on another node, and without --cluster-secret this one cannot pull it");
        return Err(not_streaming());
    };
    let (stream, new) = state.media().edge(&room, &origin.stream_id);
    if new {
        tokio::spawn(pull(
            state.clone(),
            Mirror::new(stream.clone()),
            origin.url,
            secret,
        ));
    }
    stream.until_started(FIRST_MEDIA).await;
    Ok(stream)
}

/// Pulls the streams this node let go to another node (an encoder took them
/// over there) from there, so that their viewers here go on watching; until
/// `shutdown`.
pub async fn follow_copies(state: AppState, shutdown: tokio_util::sync::CancellationToken) {
    let Some(mut copies) = state.media().copies_to_follow() else {
        return;
    };
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            next = copies.recv() => match next {
                Some(stream) => stream,
                None => return,
            },
        };
        let origin = state.store().origin(&stream.room).await.ok().flatten();
        match (origin, state.config().cluster_secret.clone()) {
            (Some(origin), Some(secret))
                if origin.stream_id == stream.id && origin.node != state.media().node() =>
            {
                let mirror = Mirror::new(stream);
                tokio::spawn(pull(state.clone(), mirror, origin.url, secret));
            }
            _ => state.media().end_copy(&stream),
        }
    }
}

/// Pulls the stream's feed into its copy until the stream ends, the copy
/// goes unwatched, or its origin is gone.
async fn pull(state: AppState, mut mirror: Mirror, mut url: String, secret: String) {
    let stream = mirror.stream().clone();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    let mut lost_since: Option<Instant> = None;
    loop {
        match follow(&client, &mut mirror, &url, &secret).await {
            Followed::Ended => {
                state.media().end_copy(&stream);
                return;
            }
            Followed::Unwatched => {
                tracing::debug!(room = %stream.room, "nobody watches the copy: it lets go");
                state.media().end_copy(&stream);
                return;
            }
            Followed::Lost(why) => {
                tracing::info!(room = %stream.room, %url, %why, "lost the stream's origin");
            }
        }
        if mirror.took_media() {
            lost_since = None;
        }
        let since = *lost_since.get_or_insert_with(Instant::now);
        let origin = state.store().origin(&stream.room).await;
        let next = match origin {
            Ok(Some(o)) if o.stream_id == stream.id && o.node != state.media().node() => {
                Some(o.url)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(room = %stream.room, error = %e, "could not look up the stream's origin");
                Some(url.clone())
            }
        };
        match next {
            Some(next) if since.elapsed() < media::origin::LEASE => url = next,
            // The stream is over, is another one, or its origin is gone.
            _ => {
                state.media().end_copy(&stream);
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

enum Followed {
    Ended,
    Unwatched,
    Lost(String),
}

/// One connection to the origin's feed.
async fn follow(
    client: &reqwest::Client,
    mirror: &mut Mirror,
    url: &str,
    secret: &str,
) -> Followed {
    let stream = mirror.stream().clone();
    let address = format!("{url}/internal/v1/streams/{}/feed", stream.room);
    let response = match client
        .get(&address)
        .header(SECRET_HEADER, secret)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => return Followed::Lost(format!("the origin answered {}", r.status())),
        Err(e) => return Followed::Lost(e.to_string()),
    };
    mirror.reconnect();
    let mut body = response.bytes_stream();
    let mut watch = tokio::time::interval(Duration::from_secs(1));
    loop {
        let chunk = tokio::select! {
            _ = watch.tick() => {
                if stream.unwatched() {
                    return Followed::Unwatched;
                }
                continue;
            }
            chunk = tokio::time::timeout(SILENT_FEED, body.next()) => chunk,
        };
        match chunk {
            Err(_) => return Followed::Lost("the feed went silent".to_owned()),
            Ok(None) => return Followed::Lost("the feed closed".to_owned()),
            Ok(Some(Err(e))) => return Followed::Lost(e.to_string()),
            Ok(Some(Ok(chunk))) => match mirror.take(&chunk) {
                Ok(true) => return Followed::Ended,
                Ok(false) => {}
                Err(e) => return Followed::Lost(e.to_string()),
            },
        }
    }
}

/// The stream as it stands (its checkpoint and what came since), for a node
/// that takes it over.
async fn state_now(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (_, start, _) = joined(&state, &room, &headers)?;
    Ok(Response::new(Body::from(start)))
}

/// The stream's feed, for an edge: its checkpoint and what came since, then
/// each frame as the stream takes it. A feed that falls too far behind ends
/// (the edge connects again and starts from a new checkpoint).
async fn feed(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (stream, start, frames) = joined(&state, &room, &headers)?;
    metrics::gauge!("hawker_edge_feeds").increment(1.0);
    let body = futures_util::stream::unfold(
        FeedOut {
            stream,
            start: Some(start),
            frames,
            done: false,
        },
        |mut out| async move {
            let next = out.next().await?;
            Some((Ok::<_, std::io::Error>(next), out))
        },
    );
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// An edge's join of the room's stream, if it shows the cluster's secret
/// and the stream is this node's own.
fn joined(
    state: &AppState,
    room: &str,
    headers: &HeaderMap,
) -> ApiResult<(
    Arc<Stream>,
    bytes::Bytes,
    tokio::sync::broadcast::Receiver<Frame>,
)> {
    let secret = state.config().cluster_secret.as_deref();
    let given = headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok());
    let allowed = match (secret, given) {
        (Some(secret), Some(given)) => {
            domain::secret::secret_matches(&domain::secret::hash_secret(secret), given)
        }
        _ => false,
    };
    if !allowed {
        return Err(Code::NotFound.into());
    }
    let stream = state
        .media()
        .stream(&RoomId::from_string(room.to_owned()))
        .filter(|s| !s.is_copy())
        .ok_or_else(|| ApiError::new(Code::NotFound, "the room is not streaming here"))?;
    let (start, frames) = stream
        .join_feed()
        .ok_or_else(|| ApiError::new(Code::NotFound, "the stream has not begun a segment yet"))?;
    Ok((stream, start, frames))
}

struct FeedOut {
    stream: Arc<Stream>,
    start: Option<bytes::Bytes>,
    frames: tokio::sync::broadcast::Receiver<Frame>,
    done: bool,
}

impl FeedOut {
    async fn next(&mut self) -> Option<bytes::Bytes> {
        if let Some(start) = self.start.take() {
            metrics::counter!("hawker_edge_feed_bytes_total").increment(start.len() as u64);
            return Some(start);
        }
        if self.done {
            return None;
        }
        let mut out = bytes::BytesMut::new();
        let first = match self.frames.recv().await {
            Ok(frame) => frame,
            Err(RecvError::Closed) => return None,
            Err(RecvError::Lagged(behind)) => {
                tracing::info!(
                    behind,
                    "an edge fell behind the stream's feed and was cut off"
                );
                return None;
            }
        };
        // The stream moved to another node, and this one's is a copy of it
        // now: the edge follows the lease there rather than pull a copy.
        if self.stream.is_copy() {
            return None;
        }
        self.done = first == Frame::End;
        first.encode(&mut out);
        // What else is waiting goes in the same write.
        while !self.done
            && let Ok(frame) = self.frames.try_recv()
        {
            self.done = frame == Frame::End;
            frame.encode(&mut out);
        }
        metrics::counter!("hawker_edge_feed_bytes_total").increment(out.len() as u64);
        Some(out.freeze())
    }
}

impl Drop for FeedOut {
    fn drop(&mut self) {
        metrics::gauge!("hawker_edge_feeds").decrement(1.0);
    }
}
