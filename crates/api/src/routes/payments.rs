//! Paying, cancelling, shipping and refunding orders, and the payment
//! providers' webhooks.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use domain::Timestamp;
use domain::order::{Order, OrderEvent, OrderState, OrderStatus, Payment, Refund, Shipment};
use domain::short_text as bounded;
use serde::{Deserialize, Serialize};
use store::{NewPayment, OrderChange};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::catalog::{MoneyInput, owned_shop};
use super::orders::{own_order, sold_order, visible_order};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{CurrentUser, JsonBody};
use crate::idempotency;
use crate::payments::{Card, ChargeStatus};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(pay))
        .routes(routes!(cancel))
        .routes(routes!(fulfil))
        .routes(routes!(refund))
        .routes(routes!(webhook))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayOrder {
    card: Card,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct PaymentResult {
    payment: Payment,
    order: Order,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fulfil {
    carrier: String,
    tracking_number: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefundOrder {
    amount: MoneyInput,
    reason: String,
    /// Put every unit back on the shelf; only with a refund of everything paid.
    #[serde(default)]
    restock: bool,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RefundResult {
    refund: Refund,
    order: Order,
}

/// Pays a reserved order with a card through the `test` provider. `201` when the
/// payment succeeded (the order is paid), `202` when the provider answers later
/// (the order is paid when its webhook arrives), `402` when the card is declined
/// (the reservation stays until it expires). Send an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/orders/{order}/payments", tag = "selling", request_body = PayOrder,
    params(
        ("order" = String, Path, description = "Order id"),
        ("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters"),
    ),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = PaymentResult, description = "Paid"),
        (status = 202, body = PaymentResult, description = "Processing: the result comes by webhook"),
        (status = 402, description = "`card_declined`, `insufficient_funds`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`order_expired`, `payment_in_progress`, `invalid_transition`", body = ErrorBody),
        (status = 502, description = "`provider_unavailable`", body = ErrorBody),
    ))]
async fn pay(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Response> {
    let idempotency::Request {
        key,
        hash,
        body: request,
    } = idempotency::request::<PayOrder>(&headers, &format!("POST /orders/{id}/payments"), body)?;
    request.card.check(Timestamp::now().year_month())?;
    let buyer = current.user.id.clone();
    idempotency::run(
        &state,
        &buyer,
        &key,
        &hash,
        async || Ok(None),
        async || {
            let order = own_order(&state, &current, &id).await?;
            if order.status != OrderStatus::Reserved {
                return Err(ApiError::new(
                    Code::InvalidTransition,
                    format!("The order is {}.", order.status.as_str()),
                ));
            }
            if order.expires_at.is_some_and(|at| at <= Timestamp::now()) {
                return Err(Code::OrderExpired.into());
            }
            if state.store().payment_in_progress(&order.id).await? {
                return Err(Code::PaymentInProgress.into());
            }
            let provider = state.payment_provider();
            let charge = provider
                .charge(&order.id, order.total, &request.card)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, order = %order.id, "payment provider failed");
                    ApiError::from(Code::ProviderUnavailable)
                })?;
            let (status, failure) = match charge.status {
                ChargeStatus::Succeeded => (domain::order::PaymentStatus::Succeeded, None),
                ChargeStatus::Processing => (domain::order::PaymentStatus::Processing, None),
                ChargeStatus::Failed(code) => (domain::order::PaymentStatus::Failed, Some(code)),
            };
            let (payment, order) = state
                .store()
                .record_payment(NewPayment {
                    order: &order.id,
                    provider: provider.name(),
                    intent_id: &charge.intent_id,
                    amount: order.total,
                    status,
                    failure_code: failure,
                    payer: &buyer,
                    reason: format!("paid by card ending {}", request.card.last4()),
                })
                .await?;
            match failure {
                Some("insufficient_funds") => Err(Code::InsufficientFunds.into()),
                Some(_) => Err(Code::CardDeclined.into()),
                None => {
                    let complete = payment.status == domain::order::PaymentStatus::Succeeded;
                    let body = serde_json::to_value(PaymentResult { payment, order })
                        .map_err(|_| Code::Internal)?;
                    Ok(if complete {
                        idempotency::Done::Created(body)
                    } else {
                        idempotency::Done::Accepted(body)
                    })
                }
            }
        },
    )
    .await
}

/// Cancels a reserved order: its buyer or its seller may. The units go back.
#[utoipa::path(post, path = "/api/v1/orders/{order}/cancel", tag = "selling",
    params(("order" = String, Path, description = "Order id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Order),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_transition`: not reserved", body = ErrorBody),
    ))]
async fn cancel(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Order>> {
    let order = visible_order(&state, &current, &id).await?;
    let who = if order.buyer_id == current.user.id {
        "the buyer"
    } else {
        "the seller"
    };
    let changed = state
        .store()
        .change_order(
            &order.id,
            OrderChange {
                event: OrderEvent::Cancel,
                actor: Some(current.user.id.clone()),
                reason: format!("cancelled by {who}"),
                shipment: None,
                restock: false,
            },
        )
        .await?;
    if let Some(sale) = &changed.sale_id {
        state.units_returned(sale).await;
    }
    Ok(Json(changed))
}

/// Marks a paid order shipped, with its carrier and tracking number. Seller only.
#[utoipa::path(post, path = "/api/v1/orders/{order}/fulfillments", tag = "selling", request_body = Fulfil,
    params(("order" = String, Path, description = "Order id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = Order),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_transition`: not paid", body = ErrorBody),
    ))]
async fn fulfil(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Fulfil>,
) -> ApiResult<(StatusCode, Json<Order>)> {
    let order = sold_order(&state, &current, &id).await?;
    let shipment = Shipment {
        carrier: bounded("carrier", &body.carrier, 1, 60)?,
        tracking_number: bounded("tracking_number", &body.tracking_number, 1, 100)?,
    };
    let changed = state
        .store()
        .change_order(
            &order.id,
            OrderChange {
                event: OrderEvent::Fulfill,
                actor: Some(current.user.id.clone()),
                reason: format!("shipped with {}", shipment.carrier),
                shipment: Some(shipment),
                restock: false,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(changed)))
}

/// Refunds part or all of what was paid, through the provider. Seller only.
/// Refunds never add up to more than was paid. Send an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/orders/{order}/refunds", tag = "selling", request_body = RefundOrder,
    params(
        ("order" = String, Path, description = "Order id"),
        ("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters"),
    ),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = RefundResult),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_transition`: nothing paid", body = ErrorBody),
        (status = 422, description = "`refund_too_large`, `invalid_field`", body = ErrorBody),
        (status = 502, description = "`provider_unavailable`", body = ErrorBody),
    ))]
async fn refund(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Response> {
    let idempotency::Request {
        key,
        hash,
        body: request,
    } = idempotency::request::<RefundOrder>(&headers, &format!("POST /orders/{id}/refunds"), body)?;
    let reason = bounded("reason", &request.reason, 1, 500)?;
    let seller = current.user.id.clone();
    idempotency::run(
        &state,
        &seller,
        &key,
        &hash,
        async || Ok(None),
        async || {
            let order = sold_order(&state, &current, &id).await?;
            let shop = owned_shop(&state, &current, order.shop_id.as_str()).await?;
            let amount = request.amount.parse_for(&shop)?;
            // Check against the order first: nothing goes to the provider that the
            // order would refuse.
            OrderState::of(&order)
                .apply(OrderEvent::Refund(amount))
                .map_err(|e| ApiError::from(store::StoreError::Order(e)))?;
            let payment = state
                .store()
                .succeeded_payment(&order.id)
                .await?
                .ok_or_else(|| ApiError::new(Code::InvalidTransition, "Nothing was paid."))?;
            let refund_id = state
                .payment_provider()
                .refund(
                    &payment.provider_payment_id,
                    amount,
                    &format!("refund-{seller}-{key}"),
                )
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, order = %order.id, "refund failed at the provider");
                    ApiError::from(Code::ProviderUnavailable)
                })?;
            let (refund, order) = state
                .store()
                .record_refund(
                    &payment,
                    &refund_id,
                    amount,
                    &reason,
                    request.restock,
                    &seller,
                )
                .await?;
            let body =
                serde_json::to_value(RefundResult { refund, order }).map_err(|_| Code::Internal)?;
            Ok(idempotency::Done::Created(body))
        },
    )
    .await
}

/// A payment provider's signed callback. The signature (`Hawker-Signature:
/// t=<unix>,v1=<HMAC-SHA256 of "t.body">`) must match and be under five minutes
/// old; an event is applied once, however often it is delivered.
#[utoipa::path(post, path = "/api/v1/payments/webhooks/{provider}", tag = "selling",
    params(("provider" = String, Path, description = "`test`")),
    request_body(content = String, content_type = "application/json"),
    responses(
        (status = 200, description = "Received"),
        (status = 400, description = "`invalid_signature`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such provider", body = ErrorBody),
    ))]
async fn webhook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let provider = state.payment_provider();
    if provider.name() != name {
        return Err(Code::NotFound.into());
    }
    let event = provider
        .verify_webhook(&headers, &body, Timestamp::now())
        .map_err(|e| {
            tracing::warn!(error = %e, "payment webhook refused");
            ApiError::new(Code::InvalidSignature, e.to_string())
        })?;
    let succeeded = match event.kind.as_str() {
        "payment.succeeded" => true,
        "payment.failed" => false,
        _ => {
            return Ok(Json(
                serde_json::json!({"received": true, "applied": false}),
            ));
        }
    };
    let applied = state
        .store()
        .settle_payment(
            provider.name(),
            &event.id,
            &event.intent_id,
            succeeded,
            event.failure_code.as_deref(),
        )
        .await?;
    if let Some(settled) = &applied {
        tracing::info!(order = %settled.order.id, status = settled.payment.status.as_str(),
            reversal_due = settled.reversal_due, "payment settled by webhook");
    }
    Ok(Json(
        serde_json::json!({"received": true, "applied": applied.is_some()}),
    ))
}
