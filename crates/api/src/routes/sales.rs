//! Flash sales in a room, and buying in them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use domain::Timestamp;
use domain::ids::{RoomId, SaleId, VariantId};
use domain::order::Order;
use domain::room::RoomStatus;
use domain::sale::{BuyQuantity, FlashSale, MAX_PER_BUYER, SaleQuantity, SaleStatus};
use serde::Deserialize;
use store::{Claim, ClaimKey, ClaimOutcome, NewSale, StoreError};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::catalog::{MoneyInput, owned_shop};
use super::{Page, PageQuery};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{ClientAddr, CurrentUser, JsonBody, QueryParams};
use crate::idempotency;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_sale, list_sales))
        .routes(routes!(get_sale, update_sale))
        .routes(routes!(buy))
}

/// The longest a sale may run.
const MAX_DURATION_S: i64 = 7 * 24 * 3600;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSale {
    /// A variant of a product of the room's shop.
    variant_id: String,
    /// The sale price, in the shop's currency.
    price: MoneyInput,
    /// Units offered; taken from the variant's stock when the sale starts.
    quantity: i64,
    /// Units one buyer may hold (default 1).
    per_buyer_limit: Option<i64>,
    /// RFC 3339; absent or past means now.
    #[schema(value_type = Option<String>, format = DateTime)]
    starts_at: Option<Timestamp>,
    /// RFC 3339. Give this or `duration_seconds`.
    #[schema(value_type = Option<String>, format = DateTime)]
    ends_at: Option<Timestamp>,
    /// How long the sale runs from its start. Give this or `ends_at`.
    duration_seconds: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateSale {
    /// `live` starts a scheduled sale now; `ended` ends it (unsold units go back
    /// to the variant); `cancelled` stops it.
    status: SaleStatus,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BuyInSale {
    /// Units to buy (default 1), up to the sale's per-buyer limit.
    quantity: Option<i64>,
}

/// Creates a flash sale in a room. A sale whose start is now (or absent) starts
/// at once: its quantity leaves the variant's stock.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/sales", tag = "selling", request_body = CreateSale,
    params(("room" = String, Path, description = "Room id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = FlashSale),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`insufficient_stock`, `invalid_transition` (the room ended)", body = ErrorBody),
        (status = 422, description = "`invalid_field`, `currency_mismatch`", body = ErrorBody),
    ))]
async fn create_sale(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(room): Path<String>,
    JsonBody(body): JsonBody<CreateSale>,
) -> ApiResult<(StatusCode, Json<FlashSale>)> {
    let store = state.store();
    let room = store
        .room(&RoomId::from_string(room))
        .await?
        .ok_or(Code::NotFound)?;
    let shop = owned_shop(&state, &current, room.shop_id.as_str()).await?;
    if room.status == RoomStatus::Ended {
        return Err(Code::InvalidTransition.into());
    }
    let (variant, variant_shop) = store
        .variant(&VariantId::from_string(&body.variant_id))
        .await?
        .ok_or_else(|| {
            domain::ValidationError::new("variant_id", "no such variant in this shop")
        })?;
    if variant_shop != shop.id {
        return Err(
            domain::ValidationError::new("variant_id", "no such variant in this shop").into(),
        );
    }
    let price = body.price.parse_for(&shop)?;
    let quantity = SaleQuantity::parse(body.quantity)?;
    let limit = body.per_buyer_limit.unwrap_or(1);
    if !(1..=MAX_PER_BUYER).contains(&limit) {
        return Err(domain::ValidationError::new(
            "per_buyer_limit",
            format!("must be between 1 and {MAX_PER_BUYER}"),
        )
        .into());
    }
    let now = Timestamp::now();
    let starts_at = body.starts_at.filter(|s| *s > now).unwrap_or(now);
    let ends_at = match (body.ends_at, body.duration_seconds) {
        (Some(end), None) => end,
        (None, Some(secs)) if (10..=MAX_DURATION_S).contains(&secs) => {
            starts_at.plus_millis(secs * 1000)
        }
        (None, Some(_)) => {
            return Err(domain::ValidationError::new(
                "duration_seconds",
                format!("must be between 10 and {MAX_DURATION_S}"),
            )
            .into());
        }
        _ => {
            return Err(domain::ValidationError::new(
                "ends_at",
                "give ends_at or duration_seconds, not both",
            )
            .into());
        }
    };
    if ends_at <= starts_at || ends_at.as_millis() - starts_at.as_millis() > MAX_DURATION_S * 1000 {
        return Err(domain::ValidationError::new(
            "ends_at",
            "must be after the start, within 7 days",
        )
        .into());
    }
    let sale = store
        .create_sale(NewSale {
            room: room.id,
            shop: shop.id,
            variant: variant.id,
            price,
            quantity,
            per_buyer_limit: limit,
            starts_at,
            ends_at,
        })
        .await?;
    if sale.starts_at > now {
        return Ok((StatusCode::CREATED, Json(sale)));
    }
    match store.start_sale(&sale.id, &current.user.id).await {
        Ok(live) => {
            tracing::info!(sale = %live.id, "flash sale started");
            state.sale_events().started_or_ended(&live).await;
            Ok((StatusCode::CREATED, Json(live)))
        }
        Err(e) => {
            // The sale cannot start (not enough stock): do not leave it scheduled.
            store
                .close_sale(&sale.id, SaleStatus::Cancelled, &current.user.id)
                .await?;
            Err(e.into())
        }
    }
}

/// A room's sales, newest first. Public.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/sales", tag = "selling",
    params(("room" = String, Path, description = "Room id"), PageQuery),
    responses((status = 200, body = Page<FlashSale>)))]
async fn list_sales(
    State(state): State<AppState>,
    Path(room): Path<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<Page<FlashSale>>> {
    let page = query.request()?;
    let sales = state
        .store()
        .sales_of_room(&RoomId::from_string(room), &page)
        .await?;
    Ok(Json(sales.into()))
}

/// One sale, with its stock. Public.
#[utoipa::path(get, path = "/api/v1/sales/{sale}", tag = "selling",
    params(("sale" = String, Path, description = "Sale id")),
    responses((status = 200, body = FlashSale), (status = 404, description = "`not_found`", body = ErrorBody)))]
async fn get_sale(
    State(state): State<AppState>,
    Path(sale): Path<String>,
) -> ApiResult<Json<FlashSale>> {
    let sale = state.store().sale(&SaleId::from_string(sale)).await?;
    Ok(Json(sale.ok_or(Code::NotFound)?))
}

/// Starts, ends or cancels a sale.
#[utoipa::path(patch, path = "/api/v1/sales/{sale}", tag = "selling", request_body = UpdateSale,
    params(("sale" = String, Path, description = "Sale id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = FlashSale),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_transition`, `insufficient_stock`", body = ErrorBody),
    ))]
async fn update_sale(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(sale): Path<String>,
    JsonBody(body): JsonBody<UpdateSale>,
) -> ApiResult<Json<FlashSale>> {
    let store = state.store();
    let sale = store
        .sale(&SaleId::from_string(sale))
        .await?
        .ok_or(Code::NotFound)?;
    owned_shop(&state, &current, sale.shop_id.as_str()).await?;
    let updated = match body.status {
        SaleStatus::Live => store.start_sale(&sale.id, &current.user.id).await?,
        to @ (SaleStatus::Ended | SaleStatus::Cancelled) => {
            store.close_sale(&sale.id, to, &current.user.id).await?
        }
        other => {
            return Err(domain::ValidationError::new(
                "status",
                format!(
                    "set live, ended or cancelled; {} is reached by selling",
                    other.as_str()
                ),
            )
            .into());
        }
    };
    tracing::info!(sale = %updated.id, status = updated.status.as_str(), "flash sale changed");
    state.sale_events().started_or_ended(&updated).await;
    Ok(Json(updated))
}

/// Buys in a flash sale. Send an `Idempotency-Key`: a retry with the same key
/// gets the same answer and never a second order. The answer is an order that
/// holds a reservation until it is paid or expires.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/sales/{sale}/orders", tag = "selling", request_body = BuyInSale,
    params(
        ("room" = String, Path, description = "Room id"),
        ("sale" = String, Path, description = "Sale id"),
        ("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters, unique per purchase"),
    ),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = Order),
        (status = 400, description = "`invalid_idempotency_key`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sale in this room", body = ErrorBody),
        (status = 409, description = "`sold_out`, `limit_reached`, `sale_not_live`, `idempotency_key_in_use`, `too_many_unpaid`", body = ErrorBody),
        (status = 422, description = "`invalid_field`, `idempotency_key_reused`", body = ErrorBody),
    ))]
async fn buy(
    State(state): State<AppState>,
    current: CurrentUser,
    ClientAddr(client): ClientAddr,
    Path((room, sale)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Response> {
    let idempotency::Request {
        key,
        hash,
        body: parsed,
    } = idempotency::request::<BuyInSale>(
        &headers,
        &format!("POST /rooms/{room}/sales/{sale}/orders"),
        body,
    )?;
    let quantity = BuyQuantity::parse("quantity", parsed.quantity.unwrap_or(1))?;
    let buyer = current.user.id.clone();
    // The key is taken, a retry answered, and the answer recorded, all in the
    // batch's own transaction: a tap costs no commit of its own.
    let sale_id = SaleId::from_string(sale);
    if state
        .sale_room(&sale_id)
        .await?
        .is_none_or(|r| r.as_str() != room)
    {
        return Err(Code::NotFound.into());
    }
    let claim = Claim {
        buyer,
        quantity,
        from: client.map(|ip| ip.to_string()),
        idempotency: Some(ClaimKey {
            key,
            request_hash: hash,
        }),
    };
    let outcome = state
        .inventory()
        .buy(&sale_id, claim)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::from(Code::NotFound),
            other => other.into(),
        })?;
    match outcome {
        ClaimOutcome::Reserved(order) => idempotency::reserved(&order),
        ClaimOutcome::Refused(refusal) => Err(ApiError::from(&refusal)),
        ClaimOutcome::Earlier(found) => idempotency::earlier(found),
    }
}
