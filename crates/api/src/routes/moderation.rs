//! Moderating live rooms: a shop's owner appoints moderators; the owner and the
//! moderators delete chat messages, mute and ban chatters, set slow mode, and
//! keep the shop's blocked words. Each change reaches the room's viewers (and
//! its rules on every node) as a bus event.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::Timestamp;
use domain::catalog::Shop;
use domain::event::{self, ChatDeleted, RoomEvent, SanctionLifted, ShopEvent};
use domain::ids::{MessageId, RoomId, UserId};
use domain::room::{
    MAX_BLOCKED_WORD_CHARS, MAX_BLOCKED_WORDS, MAX_MUTE_SECONDS, MAX_SLOW_MODE_SECONDS, Room,
    Sanction, SanctionKind,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::catalog::owned_shop;
use crate::AppState;
use crate::error::{ApiResult, Code, ErrorBody};
use crate::extract::{CurrentUser, JsonBody};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_moderators))
        .routes(routes!(appoint_moderator, dismiss_moderator))
        .routes(routes!(get_blocked_words, set_blocked_words))
        .routes(routes!(delete_message))
        .routes(routes!(list_sanctions))
        .routes(routes!(sanction_user, lift_sanction))
        .routes(routes!(set_slow_mode))
}

/// Whether `user` moderates the shop's rooms: its owner, an admin, or a
/// moderator the owner appointed.
pub(crate) async fn moderates(
    state: &AppState,
    user: &CurrentUser,
    shop: &Shop,
) -> ApiResult<bool> {
    Ok(shop.owner_id == user.user.id
        || user.user.role == domain::account::Role::Admin
        || state.store().is_moderator(&shop.id, &user.user.id).await?)
}

async fn moderated_shop(state: &AppState, current: &CurrentUser, shop: &str) -> ApiResult<Shop> {
    let shop = state.store().shop(shop).await?.ok_or(Code::NotFound)?;
    if !moderates(state, current, &shop).await? {
        return Err(Code::Forbidden.into());
    }
    Ok(shop)
}

async fn moderated_room(
    state: &AppState,
    current: &CurrentUser,
    room: &str,
) -> ApiResult<(Room, Shop)> {
    let room = state
        .store()
        .room(&RoomId::from_string(room))
        .await?
        .ok_or(Code::NotFound)?;
    let shop = moderated_shop(state, current, room.shop_id.as_str()).await?;
    Ok((room, shop))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Moderators {
    /// User ids, in the order they were appointed.
    items: Vec<String>,
}

/// The shop's moderators.
#[utoipa::path(get, path = "/api/v1/shops/{shop}/moderators", tag = "moderation",
    params(("shop" = String, Path, description = "Shop id or handle")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Moderators),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn list_moderators(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(shop): Path<String>,
) -> ApiResult<Json<Moderators>> {
    let shop = moderated_shop(&state, &current, &shop).await?;
    let items = state.store().moderators(&shop.id).await?;
    Ok(Json(Moderators {
        items: items.into_iter().map(|u| u.as_str().to_owned()).collect(),
    }))
}

/// Appoints a moderator of all the shop's rooms (owner only).
#[utoipa::path(put, path = "/api/v1/shops/{shop}/moderators/{user}", tag = "moderation",
    params(("shop" = String, Path, description = "Shop id or handle"), ("user" = String, Path, description = "User id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "The user moderates the shop's rooms"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such shop or user", body = ErrorBody),
    ))]
async fn appoint_moderator(
    State(state): State<AppState>,
    current: CurrentUser,
    Path((shop, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let shop = owned_shop(&state, &current, &shop).await?;
    let user = state
        .store()
        .user(&UserId::from_string(user))
        .await?
        .ok_or(Code::NotFound)?;
    state.store().appoint_moderator(&shop.id, &user.id).await?;
    let event = ShopEvent::Moderator {
        user: user.id,
        moderator: true,
    };
    state.bus().announce_shop(&shop.id, &event).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Dismisses a moderator (owner only): their open room sockets lose the
/// moderator's rights at once.
#[utoipa::path(delete, path = "/api/v1/shops/{shop}/moderators/{user}", tag = "moderation",
    params(("shop" = String, Path, description = "Shop id or handle"), ("user" = String, Path, description = "User id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "Dismissed"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`: not a moderator of this shop", body = ErrorBody),
    ))]
async fn dismiss_moderator(
    State(state): State<AppState>,
    current: CurrentUser,
    Path((shop, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let shop = owned_shop(&state, &current, &shop).await?;
    let user = UserId::from_string(user);
    if !state.store().dismiss_moderator(&shop.id, &user).await? {
        return Err(Code::NotFound.into());
    }
    // Sockets already open lose the moderator's rights at once, on every node.
    let event = ShopEvent::Moderator {
        user,
        moderator: false,
    };
    state.bus().announce_shop(&shop.id, &event).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BlockedWords {
    /// Words (or phrases) that keep a chat message from being shown, matched
    /// without regard to case; at most 500, each 1 to 50 characters.
    words: Vec<String>,
}

/// The shop's blocked words (owner and moderators).
#[utoipa::path(get, path = "/api/v1/shops/{shop}/blocked-words", tag = "moderation",
    params(("shop" = String, Path, description = "Shop id or handle")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = BlockedWords),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn get_blocked_words(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(shop): Path<String>,
) -> ApiResult<Json<BlockedWords>> {
    let shop = moderated_shop(&state, &current, &shop).await?;
    let words = state.store().blocked_words(&shop.id).await?;
    Ok(Json(BlockedWords { words }))
}

/// Replaces the shop's blocked words; its rooms apply them at once.
#[utoipa::path(put, path = "/api/v1/shops/{shop}/blocked-words", tag = "moderation",
    request_body = BlockedWords,
    params(("shop" = String, Path, description = "Shop id or handle")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The words as kept (cleaned, lower case, sorted)", body = BlockedWords),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field`", body = ErrorBody),
    ))]
async fn set_blocked_words(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(shop): Path<String>,
    JsonBody(body): JsonBody<BlockedWords>,
) -> ApiResult<Json<BlockedWords>> {
    let shop = moderated_shop(&state, &current, &shop).await?;
    if body.words.len() > MAX_BLOCKED_WORDS {
        return Err(
            domain::ValidationError::new("words", format!("at most {MAX_BLOCKED_WORDS}")).into(),
        );
    }
    let mut words = body
        .words
        .iter()
        .map(|w| {
            domain::short_text("words", w, 1, MAX_BLOCKED_WORD_CHARS).map(|w| w.to_lowercase())
        })
        .collect::<Result<Vec<_>, _>>()?;
    words.sort();
    words.dedup();
    state.store().set_blocked_words(&shop.id, &words).await?;
    // Every room of the shop open on any node listens to the shop's topic.
    let event = ShopEvent::BlockedWords {
        words: words.clone(),
    };
    state.bus().announce_shop(&shop.id, &event).await;
    Ok(Json(BlockedWords { words }))
}

/// Deletes a chat message: it vanishes for every viewer (a `chat.deleted`
/// event); its text stays in the store for review.
#[utoipa::path(delete, path = "/api/v1/rooms/{room}/messages/{message}", tag = "moderation",
    params(("room" = String, Path, description = "Room id"), ("message" = String, Path, description = "Message id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn delete_message(
    State(state): State<AppState>,
    current: CurrentUser,
    Path((room, message)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (room, _) = moderated_room(&state, &current, &room).await?;
    if !state.store().delete_chat(&room.id, &message).await? {
        return Err(Code::NotFound.into());
    }
    state
        .bus()
        .announce_room(
            &room.id,
            &RoomEvent::ChatDeleted(ChatDeleted {
                id: MessageId::from_string(message),
            }),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Sanctions {
    items: Vec<Sanction>,
}

/// The mutes and bans in force in the room.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/sanctions", tag = "moderation",
    params(("room" = String, Path, description = "Room id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Sanctions),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn list_sanctions(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(room): Path<String>,
) -> ApiResult<Json<Sanctions>> {
    let (room, _) = moderated_room(&state, &current, &room).await?;
    let items = state.store().sanctions(&room.id).await?;
    Ok(Json(Sanctions { items }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SanctionRequest {
    kind: SanctionKind,
    /// How long a mute lasts (1 second to 7 days); not given for a ban.
    seconds: Option<i64>,
}

/// Mutes (for a time) or bans a user in the room. Nothing they send is shown
/// while it lasts; they are told so when they try. The room sees a
/// `user.muted` or `user.banned` event.
#[utoipa::path(put, path = "/api/v1/rooms/{room}/sanctions/{user}", tag = "moderation",
    request_body = SanctionRequest,
    params(("room" = String, Path, description = "Room id"), ("user" = String, Path, description = "User id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Sanction),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such room or user", body = ErrorBody),
        (status = 422, description = "`invalid_field`: a bad duration, or a moderator", body = ErrorBody),
    ))]
async fn sanction_user(
    State(state): State<AppState>,
    current: CurrentUser,
    Path((room, user)): Path<(String, String)>,
    JsonBody(body): JsonBody<SanctionRequest>,
) -> ApiResult<Json<Sanction>> {
    let (room, shop) = moderated_room(&state, &current, &room).await?;
    let target = state
        .store()
        .user(&UserId::from_string(user))
        .await?
        .ok_or(Code::NotFound)?;
    if target.id == shop.owner_id || state.store().is_moderator(&shop.id, &target.id).await? {
        return Err(domain::ValidationError::new(
            "user",
            "the shop's owner and moderators cannot be muted or banned",
        )
        .into());
    }
    let until = match (body.kind, body.seconds) {
        (SanctionKind::Ban, None) => None,
        (SanctionKind::Ban, Some(_)) => {
            return Err(domain::ValidationError::new("seconds", "a ban has no duration").into());
        }
        (SanctionKind::Mute, Some(s)) if (1..=MAX_MUTE_SECONDS).contains(&s) => {
            Some(Timestamp::now().plus_millis(s * 1000))
        }
        (SanctionKind::Mute, _) => {
            return Err(domain::ValidationError::new(
                "seconds",
                format!("a mute lasts 1 to {MAX_MUTE_SECONDS} seconds"),
            )
            .into());
        }
    };
    let sanction = state
        .store()
        .sanction(&room.id, &target.id, body.kind, until, &current.user.id)
        .await?;
    let event = match sanction.kind {
        SanctionKind::Mute => RoomEvent::UserMuted(sanction.clone()),
        SanctionKind::Ban => RoomEvent::UserBanned(sanction.clone()),
    };
    state.bus().announce_room(&room.id, &event).await;
    tracing::info!(room = %room.id, user = %target.id, kind = sanction.kind.as_str(), "chatter sanctioned");
    Ok(Json(sanction))
}

/// Lifts a user's mute or ban in the room (a `user.sanction_lifted` event).
#[utoipa::path(delete, path = "/api/v1/rooms/{room}/sanctions/{user}", tag = "moderation",
    params(("room" = String, Path, description = "Room id"), ("user" = String, Path, description = "User id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "Lifted"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`: no sanction for this user here", body = ErrorBody),
    ))]
async fn lift_sanction(
    State(state): State<AppState>,
    current: CurrentUser,
    Path((room, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (room, _) = moderated_room(&state, &current, &room).await?;
    let user = UserId::from_string(user);
    if !state.store().lift_sanction(&room.id, &user).await? {
        return Err(Code::NotFound.into());
    }
    state
        .bus()
        .announce_room(
            &room.id,
            &RoomEvent::SanctionLifted(SanctionLifted { user_id: user }),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SlowMode {
    /// One message per user per this many seconds (0 to 300; 0 turns it off).
    /// The shop's owner and moderators are not held to it.
    seconds: i64,
}

/// Sets the room's slow mode (a `slow_mode` event).
#[utoipa::path(put, path = "/api/v1/rooms/{room}/slow-mode", tag = "moderation",
    request_body = SlowMode,
    params(("room" = String, Path, description = "Room id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = SlowMode),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field`", body = ErrorBody),
    ))]
async fn set_slow_mode(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(room): Path<String>,
    JsonBody(body): JsonBody<SlowMode>,
) -> ApiResult<Json<SlowMode>> {
    let (room, _) = moderated_room(&state, &current, &room).await?;
    if !(0..=MAX_SLOW_MODE_SECONDS).contains(&body.seconds) {
        return Err(domain::ValidationError::new(
            "seconds",
            format!("0 to {MAX_SLOW_MODE_SECONDS}"),
        )
        .into());
    }
    state.store().set_slow_mode(&room.id, body.seconds).await?;
    state
        .bus()
        .announce_room(
            &room.id,
            &RoomEvent::SlowMode(event::SlowMode {
                seconds: u64::try_from(body.seconds).unwrap_or(0),
            }),
        )
        .await;
    Ok(Json(body))
}
