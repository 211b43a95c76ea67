//! Reading orders: a buyer's own, or a shop's as its seller.

use axum::Json;
use axum::extract::{Path, State};
use std::collections::BTreeMap;

use axum::http::HeaderMap;
use axum::response::Response;
use domain::ValidationError;
use domain::ids::{OrderId, RoomId, SaleId, VariantId};
use domain::order::{Order, OrderStatus};
use domain::sale::BuyQuantity;
use serde::Deserialize;
use store::{OrderFilter, OrderKey, OrderOutcome, RegularLine, RegularOrder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::catalog::owned_shop;
use super::{Page, PageQuery};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{ClientAddr, CurrentUser, JsonBody, QueryParams};
use crate::idempotency;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orders, create_order))
        .routes(routes!(get_order))
        .routes(routes!(shop_orders))
}

/// The order if `current` is its buyer; anyone else gets `not_found`.
pub(crate) async fn own_order(
    state: &AppState,
    current: &CurrentUser,
    id: &str,
) -> ApiResult<Order> {
    let order = state
        .store()
        .order(&OrderId::from_string(id))
        .await?
        .ok_or(Code::NotFound)?;
    if order.buyer_id != current.user.id {
        return Err(Code::NotFound.into());
    }
    Ok(order)
}

/// The order if `current` sells it: `not_found` for a stranger.
pub(crate) async fn sold_order(
    state: &AppState,
    current: &CurrentUser,
    id: &str,
) -> ApiResult<Order> {
    let order = state
        .store()
        .order(&OrderId::from_string(id))
        .await?
        .ok_or(Code::NotFound)?;
    owned_shop(state, current, order.shop_id.as_str())
        .await
        .map_err(|_| ApiError::from(Code::NotFound))?;
    Ok(order)
}

/// The order if `current` is its buyer or its seller; anyone else gets `not_found`.
pub(crate) async fn visible_order(
    state: &AppState,
    current: &CurrentUser,
    id: &str,
) -> ApiResult<Order> {
    match own_order(state, current, id).await {
        Ok(order) => Ok(order),
        Err(_) => sold_order(state, current, id).await,
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOrder {
    /// One to 20 lines; lines of the same variant are added together.
    lines: Vec<LineInput>,
    /// The room the purchase came from, if any (same shop).
    room_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LineInput {
    variant_id: String,
    /// Default 1.
    quantity: Option<i64>,
}

const MAX_LINES: usize = 20;

/// Buys one or more variants of one shop at their list price. The answer is an
/// order holding the units until it is paid or expires: all lines or none. Send
/// an `Idempotency-Key`: a retry never makes a second order.
#[utoipa::path(post, path = "/api/v1/orders", tag = "selling", request_body = CreateOrder,
    params(("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = Order),
        (status = 400, description = "`invalid_idempotency_key`", body = ErrorBody),
        (status = 409, description = "`sold_out`, `idempotency_key_in_use`, `too_many_unpaid`", body = ErrorBody),
        (status = 422, description = "`invalid_field`, `idempotency_key_reused`", body = ErrorBody),
    ))]
async fn create_order(
    State(state): State<AppState>,
    current: CurrentUser,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Response> {
    let idempotency::Request {
        key,
        hash,
        body: request,
    } = idempotency::request::<CreateOrder>(&headers, "POST /orders", body)?;
    if request.lines.is_empty() || request.lines.len() > MAX_LINES {
        return Err(
            ValidationError::new("lines", format!("an order has 1 to {MAX_LINES} lines")).into(),
        );
    }
    let mut merged: BTreeMap<String, i64> = BTreeMap::new();
    for line in &request.lines {
        *merged.entry(line.variant_id.clone()).or_default() += line.quantity.unwrap_or(1);
    }
    let lines = merged
        .into_iter()
        .map(|(variant, n)| {
            Ok(RegularLine {
                variant: VariantId::from_string(variant),
                quantity: BuyQuantity::parse("lines.quantity", n)?,
            })
        })
        .collect::<Result<Vec<_>, ValidationError>>()?;
    // The room must be the shop's: checked before anything is reserved.
    let room = match &request.room_id {
        Some(id) => {
            let room = state
                .store()
                .room(&RoomId::from_string(id))
                .await?
                .ok_or_else(|| ValidationError::new("room_id", "no such room"))?;
            let shop = state
                .store()
                .variant(&lines[0].variant)
                .await?
                .map(|(_, shop)| shop);
            if shop.is_some_and(|s| s != room.shop_id) {
                return Err(
                    ValidationError::new("room_id", "the room belongs to another shop").into(),
                );
            }
            Some(room.id)
        }
        None => None,
    };
    // The key is taken, a retry answered, and the answer recorded, all in the
    // transaction of the variant's batch, as for a flash-sale tap.
    let order = RegularOrder {
        buyer: current.user.id.clone(),
        room,
        lines,
        from: client.map(|ip| ip.to_string()),
        idempotency: Some(OrderKey {
            key,
            request_hash: hash,
        }),
    };
    match state.inventory().order(order).await? {
        OrderOutcome::Reserved(order) => idempotency::reserved(&order),
        OrderOutcome::Refused(refusal) => Err(ApiError::from(&refusal)),
        OrderOutcome::Earlier(found) => idempotency::earlier(found),
    }
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
    Ok(Json(visible_order(&state, &current, &id).await?))
}
