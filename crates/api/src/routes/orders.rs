//! Reading orders: a buyer's own, or a shop's as its seller.

use axum::Json;
use axum::extract::{Path, State};
use domain::ids::{OrderId, RoomId, SaleId};
use domain::order::{Order, OrderStatus};
use serde::Deserialize;
use store::OrderFilter;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::catalog::owned_shop;
use super::{Page, PageQuery};
use crate::AppState;
use crate::error::{ApiResult, Code, ErrorBody};
use crate::extract::{CurrentUser, QueryParams};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(shop_orders))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ShopOrderQuery {
    limit: Option<u32>,
    cursor: Option<String>,
    /// Only orders in this state.
    status: Option<OrderStatus>,
    /// Only orders from this room.
    room: Option<String>,
    /// Only orders from this flash sale.
    sale: Option<String>,
}

/// A shop's orders, newest first, with filters. The shop's owner only.
#[utoipa::path(get, path = "/api/v1/shops/{shop}/orders", tag = "selling",
    params(("shop" = String, Path, description = "Shop id or handle"), ShopOrderQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Page<Order>),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn shop_orders(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(shop): Path<String>,
    QueryParams(query): QueryParams<ShopOrderQuery>,
) -> ApiResult<Json<Page<Order>>> {
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .request()?;
    let shop = owned_shop(&state, &current, &shop).await?;
    let filter = OrderFilter {
        status: query.status,
        room: query.room.map(RoomId::from_string),
        sale: query.sale.map(SaleId::from_string),
    };
    Ok(Json(
        state
            .store()
            .orders_of_shop(&shop.id, &filter, &page)
            .await?
            .into(),
    ))
}

/// The caller's orders, newest first, each with its lines and history.
#[utoipa::path(get, path = "/api/v1/orders", tag = "selling", params(PageQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Page<Order>),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
    ))]
async fn list_orders(
    State(state): State<AppState>,
    current: CurrentUser,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<Page<Order>>> {
    let page = query.request()?;
    Ok(Json(
        state
            .store()
            .orders_of_buyer(&current.user.id, &page)
            .await?
            .into(),
    ))
}

/// One order with its lines and every change of its state. For its buyer and
/// its shop's seller; anyone else gets `not_found`.
#[utoipa::path(get, path = "/api/v1/orders/{order}", tag = "selling",
    params(("order" = String, Path, description = "Order id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Order),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn get_order(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Order>> {
    let order = state
        .store()
        .order(&OrderId::from_string(id))
        .await?
        .ok_or(Code::NotFound)?;
    if order.buyer_id != current.user.id {
        let seller = state
            .store()
            .shop(order.shop_id.as_str())
            .await?
            .is_some_and(|s| s.owner_id == current.user.id);
        if !seller {
            return Err(Code::NotFound.into());
        }
    }
    Ok(Json(order))
}
