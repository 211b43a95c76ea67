//! Video over HTTP: LL-HLS (`/live/{room}/index.m3u8` and the stream's parts
//! and segments), HTTP-FLV (`/live/{room}.flv`), recordings as HLS VOD
//! (`/recordings/{rec}/index.m3u8`), and the recordings API with the replay's
//! timeline. Playback is open to any origin (CORS `*`).

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use domain::Timestamp;
use domain::event::Kind;
use domain::ids::{RecordingId, RoomId};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::rooms::owned_room;
use crate::AppState;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{ClientAddr, CurrentUser};

/// How long a blocking playlist request waits for the part it asks for.
const PLAYLIST_WAIT: Duration = Duration::from_secs(6);
/// How long a request for the next part (the preload hint) waits for it.
const PART_WAIT: Duration = Duration::from_secs(4);

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_recording, delete_recording))
        .routes(routes!(room_recordings))
        .routes(routes!(stream_stats))
}

/// Media routes, outside the JSON API.
pub(crate) fn media_router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/live/{file}", get(http_flv))
        .route("/live/{room}/index.m3u8", get(playlist))
        .route("/live/{room}/{stream}/{file}", get(media_file))
        .route("/recordings/{rec}/{file}", get(recording_file))
}

fn media(content_type: &'static str, cache: &'static str, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// A stored file as a response, streamed as the storage gives it (never
/// held whole), with its length.
pub(crate) fn download(
    content_type: &'static str,
    cache: &'static str,
    file: objects::Download,
) -> Response {
    let mut response = media(content_type, cache, Body::from_stream(file.stream));
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
    response
}

const PLAYLIST: &str = "application/vnd.apple.mpegurl";
const MP4: &str = "video/mp4";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const NO_CACHE: &str = "no-cache";

async fn http_flv(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Path(file): Path<String>,
) -> ApiResult<Response> {
    let room = file.strip_suffix(".flv").ok_or(Code::NotFound)?;
    let stream = crate::edge::stream_here(&state, room).await?;
    let place = state.flv_viewers().admit(client).map_err(|full| {
        metrics::counter!("hawker_httpflv_refused_total", "limit" => full.as_str()).increment(1);
        ApiError::new(
            Code::TooManyConnections,
            "too many HTTP-FLV viewers from your address; close some and try again",
        )
    })?;
    let (start, tags) = stream
        .watch_flv()
        .ok_or_else(|| ApiError::new(Code::NotFound, "the stream has ended"))?;
    metrics::gauge!("hawker_httpflv_viewers").increment(1.0);
    let viewer = FlvViewer {
        _place: place,
        start: start.into(),
        tags,
        ended: false,
        merge: state.media().settings().flv_merge,
    };
    let body = futures_util::stream::unfold(viewer, |mut viewer| async move {
        let batch = viewer.next().await?;
        Some((Ok::<_, std::io::Error>(batch), viewer))
    });
    Ok(media("video/x-flv", "no-store", Body::from_stream(body)))
}

/// One HTTP-FLV viewer: the start, then the stream's batches of tags (several
/// at once when more are waiting). A viewer that falls a whole queue behind is
/// cut off: the server never buffers for it beyond that queue.
struct FlvViewer {
    /// The viewer's place among its address's.
    _place: domain::net::Pass,
    /// The start's pieces, shared with every viewer that joined in this GOP.
    start: std::collections::VecDeque<Bytes>,
    tags: tokio::sync::broadcast::Receiver<Bytes>,
    ended: bool,
    /// Wait this long after a batch for more, to write them together.
    merge: Duration,
}

impl FlvViewer {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(piece) = self.start.pop_front() {
            return Some(piece);
        }
        if self.ended {
            return None;
        }
        let first = match self.tags.recv().await {
            Ok(tag) if !tag.is_empty() => tag,
            Ok(_) | Err(RecvError::Closed) => return None,
            Err(RecvError::Lagged(behind)) => {
                metrics::counter!("hawker_httpflv_cut_off_total").increment(1);
                tracing::debug!(behind, "an HTTP-FLV viewer fell behind and was cut off");
                return None;
            }
        };
        if !self.merge.is_zero() {
            tokio::time::sleep(self.merge).await;
        }
        // Usually one batch (a video frame and the audio before it) is waiting,
        // and it goes out as it is, shared with every viewer.
        let mut more = match self.tags.try_recv() {
            Ok(next) if !next.is_empty() => next,
            Ok(_) => {
                self.ended = true;
                return Some(first);
            }
            Err(_) => return Some(first),
        };
        let mut batch = bytes::BytesMut::from(&first[..]);
        loop {
            batch.extend_from_slice(&more);
            if batch.len() >= 256 * 1024 {
                break;
            }
            more = match self.tags.try_recv() {
                Ok(next) if !next.is_empty() => next,
                Ok(_) => {
                    self.ended = true;
                    break;
                }
                Err(_) => break,
            };
        }
        Some(batch.freeze())
    }
}

impl Drop for FlvViewer {
    fn drop(&mut self) {
        metrics::gauge!("hawker_httpflv_viewers").decrement(1.0);
    }
}

#[derive(Deserialize)]
struct Blocking {
    #[serde(rename = "_HLS_msn")]
    msn: Option<String>,
    #[serde(rename = "_HLS_part")]
    part: Option<String>,
}

fn number<T: std::str::FromStr>(value: &str, name: &str) -> ApiResult<T> {
    value
        .parse()
        .map_err(|_| ApiError::new(Code::BadRequest, format!("{name} must be a number")))
}

async fn playlist(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(blocking): Query<Blocking>,
) -> ApiResult<Response> {
    let want = match (&blocking.msn, &blocking.part) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::new(Code::BadRequest, "_HLS_part needs _HLS_msn"));
        }
        (Some(msn), part) => Some((
            number::<u64>(msn, "_HLS_msn")?,
            part.as_deref()
                .map(|p| number::<usize>(p, "_HLS_part"))
                .transpose()?,
        )),
    };
    let stream = crate::edge::stream_here(&state, &room).await?;
    let text = stream
        .playlist(want, PLAYLIST_WAIT)
        .await
        .map_err(|_| {
            ApiError::new(
                Code::BadRequest,
                "_HLS_msn is more than two segments past the playlist's last",
            )
        })?
        .ok_or_else(|| ApiError::new(Code::NotFound, "the stream has no media yet"))?;
    Ok(media(PLAYLIST, NO_CACHE, text))
}

/// `init{g}.mp4`, `seg{msn}.m4s`, `part{msn}.{i}.m4s` of one stream.
enum MediaFile {
    Init(u32),
    Segment(u64),
    Part(u64, usize),
}

fn media_file_name(file: &str) -> Option<MediaFile> {
    if let Some(g) = file
        .strip_prefix("init")
        .and_then(|f| f.strip_suffix(".mp4"))
    {
        return g.parse().ok().map(MediaFile::Init);
    }
    if let Some(n) = file
        .strip_prefix("seg")
        .and_then(|f| f.strip_suffix(".m4s"))
    {
        return n.parse().ok().map(MediaFile::Segment);
    }
    let (msn, index) = file
        .strip_prefix("part")?
        .strip_suffix(".m4s")?
        .split_once('.')?;
    Some(MediaFile::Part(msn.parse().ok()?, index.parse().ok()?))
}

async fn media_file(
    State(state): State<AppState>,
    Path((room, stream_id, file)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let stream = crate::edge::stream_here(&state, &room).await?;
    if stream.id != stream_id {
        return Err(ApiError::new(Code::NotFound, "that stream is over"));
    }
    let found = match media_file_name(&file).ok_or(Code::NotFound)? {
        MediaFile::Init(g) => stream.init(g),
        MediaFile::Segment(msn) => stream.segment(msn),
        MediaFile::Part(msn, i) => stream.part(msn, i, PART_WAIT).await,
    };
    let data = found.ok_or(Code::NotFound)?;
    Ok(media(MP4, IMMUTABLE, data))
}

async fn recording_file(
    State(state): State<AppState>,
    Path((rec, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    let valid_id = rec.starts_with("rec_")
        && rec.len() < 64
        && rec
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_id || !media::record::is_file_name(&file) {
        return Err(Code::NotFound.into());
    }
    let (content_type, cache) = if file == "index.m3u8" {
        (PLAYLIST, NO_CACHE)
    } else {
        (MP4, IMMUTABLE)
    };
    let found = state
        .media()
        .recorder()
        .file(&RecordingId::from_string(rec), &file)
        .await?;
    let file = found.ok_or(Code::NotFound)?;
    Ok(download(content_type, cache, file))
}

/// A recording of a live, with what happened during it.
#[derive(Serialize, ToSchema)]
pub(crate) struct RecordingView {
    id: String,
    room_id: String,
    /// `recording` while the live goes on, then `complete`.
    status: &'static str,
    /// The HLS VOD playlist.
    playlist_url: String,
    #[schema(value_type = String, format = DateTime)]
    started_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    ended_at: Option<Timestamp>,
    duration_ms: i64,
    bytes: i64,
    /// Pins, sales and chat at their media time (`at_ms` from the start).
    timeline: Vec<TimelineEntry>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct TimelineEntry {
    at_ms: i64,
    /// `pin`, `unpin`, `sale.started`, `sale.ended` or `chat`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    kind: Kind,
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

fn playlist_url(recording: &store::Recording) -> String {
    format!("/recordings/{}/index.m3u8", recording.id)
}

fn status(recording: &store::Recording) -> &'static str {
    if recording.recording {
        "recording"
    } else {
        "complete"
    }
}

/// Chat lines a timeline carries at most.
const TIMELINE_CHAT: i64 = 5_000;

async fn recording_view(state: &AppState, recording: store::Recording) -> ApiResult<RecordingView> {
    let store = state.store();
    let start = recording.started_at;
    let end = recording
        .ended_at
        .unwrap_or_else(|| start.plus_millis(recording.duration_ms.max(0)))
        .max(Timestamp::now().min(start.plus_millis(recording.duration_ms.max(0) + 60_000)));
    let offset = |at: Timestamp| (at.as_millis() - start.as_millis()).max(0);
    let mut timeline = Vec::new();
    for pin in store.pins_between(&recording.room_id, start, end).await? {
        let product = store.product(&pin.product_id).await?;
        timeline.push(TimelineEntry {
            at_ms: offset(pin.pinned_at),
            kind: Kind::Pin,
            data: serde_json::json!({
                "product_id": pin.product_id,
                "title": product.as_ref().map(|p| p.title.as_str().to_owned()),
            }),
        });
        if let Some(unpinned) = pin.unpinned_at.filter(|u| *u <= end) {
            timeline.push(TimelineEntry {
                at_ms: offset(unpinned),
                kind: Kind::Unpin,
                data: serde_json::json!({"product_id": pin.product_id}),
            });
        }
    }
    let sales = store
        .sales_of_room(
            &recording.room_id,
            &store::PageRequest {
                after: None,
                limit: store::PageRequest::MAX_LIMIT,
            },
        )
        .await?;
    for sale in sales.items {
        if sale.starts_at <= end && sale.ends_at >= start {
            let data = serde_json::json!({
                "sale_id": sale.id,
                "variant_id": sale.variant_id,
                "price": sale.price,
                "quantity": sale.quantity,
            });
            if sale.starts_at >= start {
                timeline.push(TimelineEntry {
                    at_ms: offset(sale.starts_at),
                    kind: Kind::SaleStarted,
                    data: data.clone(),
                });
            }
            if sale.ends_at <= end {
                timeline.push(TimelineEntry {
                    at_ms: offset(sale.ends_at),
                    kind: Kind::SaleEnded,
                    data,
                });
            }
        }
    }
    for line in store
        .chat_between(&recording.room_id, start, end, TIMELINE_CHAT)
        .await?
    {
        timeline.push(TimelineEntry {
            at_ms: offset(line.at),
            kind: Kind::Chat,
            data: serde_json::json!({
                "user": {"id": line.user_id, "display_name": line.display_name},
                "text": line.text,
            }),
        });
    }
    timeline.sort_by_key(|e| e.at_ms);
    Ok(RecordingView {
        playlist_url: playlist_url(&recording),
        id: recording.id.as_str().to_owned(),
        room_id: recording.room_id.as_str().to_owned(),
        status: status(&recording),
        started_at: recording.started_at,
        ended_at: recording.ended_at,
        duration_ms: recording.duration_ms,
        bytes: recording.bytes,
        timeline,
    })
}

/// A recording with its playlist URL and its timeline of pins, sales and chat.
#[utoipa::path(get, path = "/api/v1/recordings/{rec}", tag = "video",
    params(("rec" = String, Path, description = "Recording id")),
    responses(
        (status = 200, body = RecordingView),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn get_recording(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RecordingView>> {
    let recording = state
        .store()
        .recording(&RecordingId::from_string(id))
        .await?
        .ok_or(Code::NotFound)?;
    Ok(Json(recording_view(&state, recording).await?))
}

/// Deletes a recording and its files (the room's seller only).
#[utoipa::path(delete, path = "/api/v1/recordings/{rec}", tag = "video",
    params(("rec" = String, Path, description = "Recording id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_transition`: still recording", body = ErrorBody),
    ))]
async fn delete_recording(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let recording = state
        .store()
        .recording(&RecordingId::from_string(id))
        .await?
        .ok_or(Code::NotFound)?;
    owned_room(&state, &current, recording.room_id.as_str()).await?;
    if recording.recording {
        return Err(ApiError::new(
            Code::InvalidTransition,
            "the live is still being recorded",
        ));
    }
    state.media().recorder().delete(&recording.id).await?;
    tracing::info!(recording = %recording.id, "recording deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RecordingList {
    items: Vec<RecordingSummary>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RecordingSummary {
    id: String,
    status: &'static str,
    playlist_url: String,
    #[schema(value_type = String, format = DateTime)]
    started_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    ended_at: Option<Timestamp>,
    duration_ms: i64,
}

/// A room's recordings, newest first.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/recordings", tag = "video",
    params(("room" = String, Path, description = "Room id")),
    responses((status = 200, body = RecordingList)))]
async fn room_recordings(
    State(state): State<AppState>,
    Path(room): Path<String>,
) -> ApiResult<Json<RecordingList>> {
    let items = state
        .store()
        .room_recordings(&RoomId::from_string(room))
        .await?
        .into_iter()
        .map(|r| RecordingSummary {
            playlist_url: playlist_url(&r),
            id: r.id.as_str().to_owned(),
            status: status(&r),
            started_at: r.started_at,
            ended_at: r.ended_at,
            duration_ms: r.duration_ms,
        })
        .collect();
    Ok(Json(RecordingList { items }))
}

/// The room's stream as the studio shows it: codecs, size, frame rate,
/// bitrate, keyframe interval, uptime, and where to play it.
#[derive(Serialize, ToSchema)]
pub(crate) struct StreamView {
    live: bool,
    hls_url: String,
    flv_url: String,
    video_codec: Option<String>,
    audio_codec: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    frame_rate: f64,
    /// Bits per second, audio and video.
    bitrate: u64,
    keyframe_interval_ms: Option<i64>,
    uptime_seconds: u64,
    /// Publishing sessions so far (a reconnecting encoder makes a new one).
    publishers: u64,
    /// The encoder went away and the stream waits for it to come back (for
    /// the reconnect grace) before it ends.
    reconnecting: bool,
}

#[utoipa::path(get, path = "/api/v1/rooms/{room}/stream", tag = "video",
    params(("room" = String, Path, description = "Room id")),
    responses(
        (status = 200, body = StreamView),
        (status = 404, description = "`not_found`: the room is not streaming", body = ErrorBody),
    ))]
async fn stream_stats(
    State(state): State<AppState>,
    Path(room): Path<String>,
) -> ApiResult<Json<StreamView>> {
    let stats = crate::edge::stream_here(&state, &room).await?.stats();
    Ok(Json(StreamView {
        live: stats.live,
        hls_url: media::hls_path(&stats.room),
        flv_url: media::flv_path(&stats.room),
        video_codec: stats.video_codec,
        audio_codec: stats.audio_codec,
        width: stats.width,
        height: stats.height,
        frame_rate: stats.frame_rate,
        bitrate: stats.bitrate,
        keyframe_interval_ms: stats.keyframe_interval_ms,
        uptime_seconds: stats.uptime_seconds,
        publishers: stats.publishers,
        reconnecting: stats.reconnecting,
    }))
}
