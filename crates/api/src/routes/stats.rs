//! The seller's live dashboard: a room's audience, chat, likes, orders and
//! revenue over time, for the live that runs or one that ended.

use axum::Json;
use axum::extract::{Path, State};
use domain::Timestamp;
use domain::money::Money;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::rooms::owned_room;
use crate::AppState;
use crate::error::{ApiResult, Code, ErrorBody};
use crate::extract::CurrentUser;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(room_stats))
}

/// One sampling interval.
#[derive(Serialize, ToSchema)]
pub(crate) struct StatsPoint {
    /// The interval's start.
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    /// Viewers connected at the interval's end, over all nodes.
    viewers: i64,
    likes: i64,
    messages: i64,
    /// Orders placed from the room.
    orders: i64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RoomStats {
    room_id: String,
    /// The length of each point of `series`.
    interval_seconds: u64,
    /// Oldest first; intervals in which nothing happened are left out.
    series: Vec<StatsPoint>,
    /// Connected now, on this node.
    viewers_now: u64,
    peak_viewers: i64,
    likes: i64,
    messages: i64,
    /// Accounts that wrote in the chat.
    chatters: i64,
    /// Orders placed from the room, in any state.
    orders: i64,
    /// Orders that were paid.
    paid_orders: i64,
    /// Accounts with a paid order.
    buyers: i64,
    /// Paid minus refunded.
    revenue: Money,
    /// Buyers per viewer at the peak: the share of the largest audience that
    /// bought (0 when nobody watched).
    conversion: f64,
}

/// A room's dashboard (the shop's owner only). Viewers and likes are sampled
/// every `interval_seconds` by each node; messages and orders come from the
/// chat log and the orders themselves.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/stats", tag = "rooms",
    params(("room" = String, Path, description = "Room id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = RoomStats),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn room_stats(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<Json<RoomStats>> {
    let room = owned_room(&state, &current, &id).await?;
    let store = state.store();
    let shop = store
        .shop(room.shop_id.as_str())
        .await?
        .ok_or(Code::NotFound)?;
    let interval = state.config().live.sample_interval;
    let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
    let stats = store.room_stats(&room.id, interval_ms).await?;
    let conversion = if stats.peak_viewers > 0 {
        stats.buyers as f64 / stats.peak_viewers as f64
    } else {
        0.0
    };
    Ok(Json(RoomStats {
        viewers_now: state.hub().viewers(&room.id),
        room_id: room.id.to_string(),
        interval_seconds: interval.as_secs().max(1),
        series: stats
            .series
            .iter()
            .map(|p| StatsPoint {
                at: Timestamp::from_millis(p.at),
                viewers: p.viewers,
                likes: p.likes,
                messages: p.messages,
                orders: p.orders,
            })
            .collect(),
        peak_viewers: stats.peak_viewers,
        likes: stats.likes,
        messages: stats.messages,
        chatters: stats.chatters,
        orders: stats.orders,
        paid_orders: stats.paid_orders,
        buyers: stats.buyers,
        revenue: Money {
            amount: stats.revenue,
            currency: shop.currency,
        },
        conversion,
    }))
}
