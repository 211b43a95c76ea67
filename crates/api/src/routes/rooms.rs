//! Live rooms: created and scheduled by a seller in their shop, listed publicly.
//! A room's stream key is shown once, at creation or rotation, and stored hashed.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use domain::Timestamp;
use domain::catalog::{Description, Title};
use domain::event::{Ended, RoomEvent};
use domain::ids::{RoomId, ShopId};
use domain::room::{Room, RoomChange, RoomStatus, StreamKey};
use serde::{Deserialize, Serialize};
use store::{NewRoom, RoomFilter, RoomPatch, StoreError};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::catalog::owned_shop;
use super::{Page, PageQuery, nullable};
use crate::AppState;
use crate::auth::{hash_secret, random_bytes};
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{CurrentUser, JsonBody, QueryParams};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_room, list_shop_rooms))
        .routes(routes!(list_rooms))
        .routes(routes!(get_room, update_room))
        .routes(routes!(rotate_stream_key))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRoom {
    title: String,
    #[serde(default)]
    description: String,
    /// An image id uploaded to the shop.
    cover_image: Option<String>,
    /// When the live is planned to start (RFC 3339).
    #[schema(value_type = Option<String>, format = DateTime)]
    scheduled_start: Option<Timestamp>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateRoom {
    title: Option<String>,
    description: Option<String>,
    /// An image id, or `null` to remove the cover.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    cover_image: Option<Option<String>>,
    /// RFC 3339, or `null` to clear.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = DateTime)]
    scheduled_start: Option<Option<Timestamp>>,
    /// `ended` closes the room for good.
    status: Option<RoomStatus>,
}

/// A room with its stream key, which is shown in this answer only.
#[derive(Serialize, ToSchema)]
pub(crate) struct RoomWithKey {
    room: Room,
    /// Publish to `{publish_url}/{stream_key}`.
    stream_key: String,
    /// The RTMP server to give an encoder (OBS: Settings, Stream, Server), such
    /// as `rtmp://HOST:1935/live`, with the host this request was sent to.
    publish_url: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct StreamKeyRotated {
    stream_key: String,
    publish_url: String,
}

/// `rtmp://{host}:{port}/live`, with the host the client reached this server by.
fn publish_url(state: &AppState, headers: &HeaderMap) -> String {
    let authority = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    format!("rtmp://{host}:{}/live", state.config().rtmp_port)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RoomQuery {
    limit: Option<u32>,
    cursor: Option<String>,
    /// `live` (live now), `scheduled` (upcoming) or `ended`.
    status: Option<RoomStatus>,
}

impl RoomQuery {
    fn page(&self) -> ApiResult<store::PageRequest> {
        PageQuery {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
        .request()
    }
}

fn new_stream_key() -> ApiResult<StreamKey> {
    Ok(StreamKey::from_random(random_bytes::<24>()?))
}

/// The room if `current` owns its shop.
pub(crate) async fn owned_room(
    state: &AppState,
    current: &CurrentUser,
    id: &str,
) -> ApiResult<Room> {
    let room = state
        .store()
        .room(&RoomId::from_string(id))
        .await?
        .ok_or(Code::NotFound)?;
    owned_shop(state, current, room.shop_id.as_str()).await?;
    Ok(room)
}

/// A cover must be an image uploaded to the room's own shop.
async fn check_cover(state: &AppState, shop: &ShopId, image: Option<&str>) -> ApiResult<()> {
    if let Some(image) = image
        && !state.store().shop_has_image(shop, image).await?
    {
        return Err(ApiError::new(
            Code::UnknownImage,
            format!("Image {image} was not uploaded to this shop."),
        ));
    }
    Ok(())
}

/// Creates a room in a shop. The answer holds the stream key, shown this once.
#[utoipa::path(post, path = "/api/v1/shops/{shop}/rooms", tag = "rooms", request_body = CreateRoom,
    params(("shop" = String, Path, description = "Shop id or handle")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = RoomWithKey),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field`, `unknown_image`", body = ErrorBody),
    ))]
async fn create_room(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(shop): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateRoom>,
) -> ApiResult<(StatusCode, Json<RoomWithKey>)> {
    let shop = owned_shop(&state, &current, &shop).await?;
    check_cover(&state, &shop.id, body.cover_image.as_deref()).await?;
    let key = new_stream_key()?;
    let room = state
        .store()
        .create_room(NewRoom {
            shop: shop.id,
            title: Title::parse(&body.title)?,
            description: Description::parse(&body.description)?,
            cover_image: body.cover_image,
            scheduled_start: body.scheduled_start,
            stream_key_hash: hash_secret(key.expose()),
        })
        .await?;
    tracing::info!(room = %room.id, "room created");
    Ok((
        StatusCode::CREATED,
        Json(RoomWithKey {
            room,
            stream_key: key.expose().to_owned(),
            publish_url: publish_url(&state, &headers),
        }),
    ))
}

/// A shop's rooms, newest first. Public.
#[utoipa::path(get, path = "/api/v1/shops/{shop}/rooms", tag = "rooms",
    params(("shop" = String, Path, description = "Shop id or handle"), RoomQuery),
    responses((status = 200, body = Page<Room>), (status = 404, description = "`not_found`", body = ErrorBody)))]
async fn list_shop_rooms(
    State(state): State<AppState>,
    Path(shop): Path<String>,
    QueryParams(query): QueryParams<RoomQuery>,
) -> ApiResult<Json<Page<Room>>> {
    let page = query.page()?;
    let shop = state.store().shop(&shop).await?.ok_or(Code::NotFound)?;
    let filter = RoomFilter {
        shop: Some(shop.id),
        status: query.status,
    };
    Ok(Json(state.store().rooms(&filter, &page).await?.into()))
}

/// Rooms of every shop, newest first: `?status=live` for live now,
/// `scheduled` for upcoming, `ended` for past lives. Public.
#[utoipa::path(get, path = "/api/v1/rooms", tag = "rooms", params(RoomQuery),
    responses((status = 200, body = Page<ListedRoom>)))]
async fn list_rooms(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<RoomQuery>,
) -> ApiResult<Json<Page<ListedRoom>>> {
    let page = query.page()?;
    let filter = RoomFilter {
        shop: None,
        status: query.status,
    };
    let rooms = state.store().rooms(&filter, &page).await?;
    let hub = state.hub();
    Ok(Json(Page {
        items: rooms
            .items
            .into_iter()
            .map(|room| ListedRoom {
                viewers: hub.viewers(&room.id),
                room,
            })
            .collect(),
        next_cursor: rooms.next,
    }))
}

/// A room in the public directory, with its audience.
#[derive(Serialize, ToSchema)]
pub(crate) struct ListedRoom {
    #[serde(flatten)]
    room: Room,
    /// Viewers connected to the room's WebSocket on this node.
    viewers: u64,
}

/// One room. Public.
#[utoipa::path(get, path = "/api/v1/rooms/{room}", tag = "rooms",
    params(("room" = String, Path, description = "Room id")),
    responses((status = 200, body = Room), (status = 404, description = "`not_found`", body = ErrorBody)))]
async fn get_room(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Room>> {
    let room = state.store().room(&RoomId::from_string(id)).await?;
    Ok(Json(room.ok_or(Code::NotFound)?))
}

/// Changes a room's details; `"status": "ended"` ends it for good.
#[utoipa::path(patch, path = "/api/v1/rooms/{room}", tag = "rooms", request_body = UpdateRoom,
    params(("room" = String, Path, description = "Room id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Room),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_transition`: the room has ended", body = ErrorBody),
    ))]
async fn update_room(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateRoom>,
) -> ApiResult<Json<Room>> {
    let room = owned_room(&state, &current, &id).await?;
    let event = match body.status {
        None => None,
        Some(RoomStatus::Ended) => Some(RoomChange::Ended),
        Some(other) => {
            return Err(domain::ValidationError::new(
                "status",
                format!(
                    "only `ended` can be set; a room becomes {} when its stream starts or stops",
                    other.as_str()
                ),
            )
            .into());
        }
    };
    if room.status == RoomStatus::Ended {
        return Err(Code::InvalidTransition.into());
    }
    if let Some(Some(image)) = &body.cover_image {
        check_cover(&state, &room.shop_id, Some(image)).await?;
    }
    let patch = RoomPatch {
        title: body.title.as_deref().map(Title::parse).transpose()?,
        description: body
            .description
            .as_deref()
            .map(Description::parse)
            .transpose()?,
        cover_image: body.cover_image,
        scheduled_start: body.scheduled_start,
    };
    let mut room = state.store().update_room(&room.id, patch).await?;
    if let Some(event) = event {
        let to = room
            .status
            .apply(event)
            .map_err(|e| ApiError::new(Code::InvalidTransition, e.to_string()))?;
        room = match state
            .store()
            .set_room_status(&room.id, room.status, to)
            .await
        {
            Ok(room) => room,
            // The stream started or stopped between our read and our write.
            Err(StoreError::NotFound) => return Err(Code::InvalidTransition.into()),
            Err(e) => return Err(e.into()),
        };
        tracing::info!(room = %room.id, "room ended");
        state.media().cut(&room.id).await;
        state
            .bus()
            .announce_room(
                &room.id,
                &RoomEvent::RoomEnded(Ended {
                    ended_at: room.ended_at,
                }),
            )
            .await;
    }
    Ok(Json(room))
}

/// Replaces the room's stream key: the old one stops working at once, and an
/// encoder publishing with it is disconnected, on whichever node. The new
/// key is in this answer only.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/stream-key", tag = "rooms",
    params(("room" = String, Path, description = "Room id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = StreamKeyRotated),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn rotate_stream_key(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<StreamKeyRotated>)> {
    let room = owned_room(&state, &current, &id).await?;
    let key = new_stream_key()?;
    state
        .store()
        .set_stream_key_hash(&room.id, &hash_secret(key.expose()))
        .await?;
    tracing::info!(room = %room.id, "stream key rotated");
    state.media().cut(&room.id).await;
    Ok((
        StatusCode::CREATED,
        Json(StreamKeyRotated {
            stream_key: key.expose().to_owned(),
            publish_url: publish_url(&state, &headers),
        }),
    ))
}
