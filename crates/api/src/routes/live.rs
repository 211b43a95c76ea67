//! The room's WebSocket. The protocol is in `docs/protocol.md`; the rooms
//! themselves live in the `live` crate.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use domain::ids::RoomId;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiResult, Code, ErrorBody};
use crate::extract::{Credential, MaybeUser, QueryParams};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(room_socket))
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
    MaybeUser(user): MaybeUser,
    Path(room): Path<String>,
    QueryParams(query): QueryParams<SocketQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    let hub = state.hub().clone();
    let seat = hub
        .join(&RoomId::from_string(room))
        .await?
        .ok_or(Code::NotFound)?;
    // A page on another site can open a socket with the viewer's cookie; it may
    // watch, but not speak for them.
    let viewer = user
        .filter(|u| matches!(u.credential, Credential::Token) || same_origin(&headers))
        .map(|u| live::Viewer {
            id: u.user.id,
            name: u.user.display_name.as_str().to_owned(),
        });
    Ok(upgrade
        .read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(MAX_INCOMING)
        .max_frame_size(MAX_INCOMING)
        .on_upgrade(move |socket| live::serve(socket, hub, seat, viewer, query.since)))
}

/// Whether a browser's handshake comes from a page of this site.
fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, origin_host)| origin_host == host),
        (Some(_), None) => false,
        (None, _) => true,
    }
}
