//! Reading orders: a buyer's own, or a shop's as its seller.

use axum::Json;
use axum::extract::{Path, State};
use domain::ids::OrderId;
use domain::order::Order;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Page, PageQuery};
use crate::AppState;
use crate::error::{ApiResult, Code, ErrorBody};
use crate::extract::{CurrentUser, QueryParams};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
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
