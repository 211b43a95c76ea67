//! The room's WebSocket. The protocol is in `docs/protocol.md`; the rooms
//! themselves live in the `live` crate.

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade, close_code};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use domain::catalog::ProductStatus;
use domain::event::{PinCard, RoomEvent, Unpin};
use domain::ids::{ProductId, RoomId};
use domain::room::RoomStatus;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiResult, Code, ErrorBody};
use crate::extract::{Credential, CurrentUser, JsonBody, MaybeUser, QueryParams, same_origin};
use crate::server::Caller;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(room_socket))
        .routes(routes!(pin, unpin))
}

/// The largest message the socket reads; the live crate refuses (1009) any over
/// its own, smaller limit, after reading it whole so that the close is clean.
const MAX_INCOMING: usize = 64 * 1024;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct SocketQuery {
    /// The last sequence number the client saw: it gets every event after it,
    /// or a fresh snapshot when the room's history no longer reaches back.
    since: Option<u64>,
}

/// Opens the room's WebSocket. Anyone may watch; chatting and liking need a
/// signed-in account (the session cookie, or `Authorization: Bearer`).
#[utoipa::path(get, path = "/api/v1/rooms/{room}/ws", tag = "live",
    params(("room" = String, Path, description = "Room id"), SocketQuery),
    responses(
        (status = 101, description = "Switching to the room's WebSocket protocol"),
        (status = 401, description = "`unauthenticated`: an unknown bearer token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn room_socket(
    State(state): State<AppState>,
    caller: Caller,
    MaybeUser(user): MaybeUser,
    Path(room): Path<String>,
    QueryParams(query): QueryParams<SocketQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    // Over the limit, the socket opens and closes at once with 1013 (try
    // again later): a browser's WebSocket API shows a refused upgrade as a
    // bare failure, a close code as a reason. Nothing else is done for it.
    let place = match state.websockets().admit(caller.client) {
        Ok(place) => place,
        Err(full) => {
            metrics::counter!("hawker_websockets_refused_total", "limit" => full.as_str())
                .increment(1);
            return Ok(upgrade.on_upgrade(|mut socket| async move {
                let close = CloseFrame {
                    code: close_code::AGAIN,
                    reason: "too many connections from your address".into(),
                };
                let _ = socket.send(Message::Close(Some(close))).await;
            }));
        }
    };
    let hub = state.hub().clone();
    let seat = hub
        .join(&RoomId::from_string(room))
        .await?
        .ok_or(Code::NotFound)?;
    // A page on another site can open a socket with the viewer's cookie; it may
    // watch, but not speak for them.
    let user = user.filter(|u| matches!(u.credential, Credential::Token) || same_origin(&headers));
    let viewer = match user {
        None => None,
        Some(user) => {
            let shop = match state.store().shop(seat.room.shop_id().as_str()).await? {
                Some(shop) => shop,
                None => return Err(Code::NotFound.into()),
            };
            Some(live::Viewer {
                moderator: super::moderation::moderates(&state, &user, &shop).await?,
                id: user.user.id,
                name: user.user.display_name.as_str().to_owned(),
                credential: user.secret_hash,
            })
        }
    };
    Ok(upgrade
        .read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(MAX_INCOMING)
        .max_frame_size(MAX_INCOMING)
        .on_upgrade(move |socket| async move {
            live::serve(socket, hub, seat, viewer, query.since).await;
            drop((place, caller.admitted));
        }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pin {
    /// An active product of the room's shop.
    product_id: String,
}

/// Pins a product in the room: every viewer's product card shows it at once (a
/// `pin` event), replacing the one pinned before. Pins are kept with their time,
/// for the replay.
#[utoipa::path(put, path = "/api/v1/rooms/{room}/pin", tag = "live", request_body = Pin,
    params(("room" = String, Path, description = "Room id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The product card, as the `pin` event carries it", body = PinCard),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_transition`: the room has ended", body = ErrorBody),
        (status = 422, description = "`invalid_field`: no such active product in this shop", body = ErrorBody),
    ))]
async fn pin(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(room): Path<String>,
    JsonBody(body): JsonBody<Pin>,
) -> ApiResult<Json<PinCard>> {
    let room = super::rooms::owned_room(&state, &current, &room).await?;
    if room.status == RoomStatus::Ended {
        return Err(Code::InvalidTransition.into());
    }
    let not_here =
        || domain::ValidationError::new("product_id", "no such active product in this shop");
    let product = state
        .store()
        .product(&ProductId::from_string(body.product_id))
        .await?
        .filter(|p| p.shop_id == room.shop_id && p.status == ProductStatus::Active)
        .ok_or_else(not_here)?;
    let at = state
        .store()
        .pin_product(&room.id, &product.id, &current.user.id)
        .await?;
    let card = PinCard::new(&product, at);
    state
        .bus()
        .announce_room(&room.id, &RoomEvent::Pin(card.clone()))
        .await;
    tracing::info!(room = %room.id, product = %product.id, "product pinned");
    Ok(Json(card))
}

/// Unpins the room's product (a `unpin` event). Unpinning with nothing pinned
/// is not an error.
#[utoipa::path(delete, path = "/api/v1/rooms/{room}/pin", tag = "live",
    params(("room" = String, Path, description = "Room id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "Nothing is pinned now"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn unpin(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(room): Path<String>,
) -> ApiResult<StatusCode> {
    let room = super::rooms::owned_room(&state, &current, &room).await?;
    if state.store().unpin(&room.id).await? {
        state
            .bus()
            .announce_room(&room.id, &RoomEvent::Unpin(Unpin {}))
            .await;
    }
    Ok(StatusCode::NO_CONTENT)
}
