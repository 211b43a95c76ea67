//! Paying, cancelling, shipping and refunding orders, and the payment
//! providers' webhooks.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use domain::Timestamp;
use domain::order::{
    Order, OrderEvent, OrderStatus, Payment, PaymentStatus, Refund, RefundStatus, Shipment,
};
use domain::short_text as bounded;
use serde::{Deserialize, Serialize};
use store::{Begun, NewPayment, NewRefund, OrderChange};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::catalog::{MoneyInput, owned_shop};
use super::orders::{own_order, sold_order, visible_order};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{CurrentUser, JsonBody};
use crate::idempotency;
use crate::payments::{Card, ProviderError, RefundFor, upkeep};

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

/// Pays a reserved order with a card through the payment provider. `201` when the
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
        (status = 409, description = "`order_expired`, `payment_in_progress`, `invalid_transition`, `payment_reversed` (charged after the order closed: refunded in full)", body = ErrorBody),
        (status = 502, description = "`provider_unavailable` (retry with the same key: it is never charged twice), `provider_refused`", body = ErrorBody),
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
    let work = pay_order(state.clone(), current, id, key.clone(), request.card);
    idempotency::run(&state, &buyer, &key, &hash, work).await
}

/// Pays `id` with `card` under the buyer's `key`: writes the attempt (or
/// finds the one an earlier try with the key wrote), charges it through the
/// provider keyed by the attempt, and records the answer.
async fn pay_order(
    state: AppState,
    current: CurrentUser,
    id: String,
    key: String,
    card: Card,
) -> ApiResult<idempotency::Done> {
    let order = own_order(&state, &current, &id).await?;
    let buyer = &current.user.id;
    let mut payment = state.store().payment_by_request(buyer, &key).await?;
    if payment.is_none() {
        if order.status != OrderStatus::Reserved {
            return Err(ApiError::new(
                Code::InvalidTransition,
                format!("The order is {}.", order.status.as_str()),
            ));
        }
        if order.expires_at.is_some_and(|at| at <= Timestamp::now()) {
            return Err(Code::OrderExpired.into());
        }
        let begun = state
            .store()
            .begin_payment(NewPayment {
                order: &order.id,
                provider: state.payment_provider().name(),
                amount: order.total,
                payer: buyer,
                request_key: &key,
            })
            .await?;
        payment = Some(match begun {
            Begun::New(p) | Begun::Earlier(p) => p,
            Begun::Busy => return Err(Code::PaymentInProgress.into()),
        });
    }
    let Some(mut payment) = payment else {
        return Err(Code::Internal.into());
    };
    let reversed;
    if payment.status == PaymentStatus::Attempting {
        let charge = state
            .payment_provider()
            .charge(&payment.id, &order.id, payment.amount, &card)
            .await;
        let charge = match charge {
            Ok(charge) => charge,
            Err(ProviderError::Refused { code, message }) => {
                tracing::warn!(%code, %message, payment = %payment.id, "the provider refused a charge");
                state.store().abandon_payment(&payment.id).await?;
                return Err(Code::ProviderRefused.into());
            }
            Err(ProviderError::Unanswered(e)) => {
                // The charge may have been made: the attempt stays open, to be
                // asked again with the same key by a retry or by the upkeep.
                tracing::warn!(error = %e, payment = %payment.id, "the provider did not answer a charge");
                return Err(Code::ProviderUnavailable.into());
            }
        };
        let recorded = upkeep::settle(state.store(), &payment.id, &charge, None).await?;
        reversed = recorded.reversed;
        payment = recorded.payment;
    } else {
        reversed = state.store().reversal_of(&payment.id).await?.is_some();
    }
    let order = state
        .store()
        .order(&payment.order_id)
        .await?
        .ok_or(Code::NotFound)?;
    if reversed {
        return Err(Code::PaymentReversed.into());
    }
    let result = |payment, order| {
        serde_json::to_value(PaymentResult { payment, order })
            .map_err(|_| ApiError::from(Code::Internal))
    };
    match payment.status {
        PaymentStatus::Succeeded => Ok(idempotency::Done::Created(result(payment, order)?)),
        PaymentStatus::Processing | PaymentStatus::Attempting => {
            Ok(idempotency::Done::Accepted(result(payment, order)?))
        }
        PaymentStatus::Failed => Err(match payment.failure_code.as_deref() {
            Some("insufficient_funds") => Code::InsufficientFunds.into(),
            Some(store::ABANDONED) => ApiError::new(
                Code::ProviderUnavailable,
                "The payment never reached the provider; pay again with a new Idempotency-Key.",
            ),
            _ => Code::CardDeclined.into(),
        }),
    }
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
        (status = 502, description = "`provider_unavailable` (the amount stays claimed; retry with the same key), `provider_refused`", body = ErrorBody),
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
    let work = refund_order(state.clone(), current, id, key.clone(), request, reason);
    idempotency::run(&state, &seller, &key, &hash, work).await
}

/// Refunds under the seller's `key`: claims the amount in the store (or finds
/// the claim an earlier try with the key made), asks the provider keyed by
/// the claim, and records its answer.
async fn refund_order(
    state: AppState,
    current: CurrentUser,
    id: String,
    key: String,
    request: RefundOrder,
    reason: String,
) -> ApiResult<idempotency::Done> {
    let order = sold_order(&state, &current, &id).await?;
    let shop = owned_shop(&state, &current, order.shop_id.as_str()).await?;
    let amount = request.amount.parse_for(&shop)?;
    let seller = &current.user.id;
    let payment = state
        .store()
        .succeeded_payment(&order.id)
        .await?
        .ok_or_else(|| ApiError::new(Code::InvalidTransition, "Nothing was paid."))?;
    let claim = state
        .store()
        .claim_refund(NewRefund {
            payment: &payment,
            amount,
            reason: &reason,
            restock: request.restock,
            actor: seller,
            request_key: &key,
        })
        .await?;
    let refund_id = claim.refund.id.clone();
    let (claim, order) = match claim.refund.status {
        RefundStatus::Pending => {
            let intent = payment
                .provider_payment_id
                .as_deref()
                .ok_or(Code::Internal)?;
            let made = state
                .payment_provider()
                .refund(
                    intent,
                    claim.refund.amount,
                    &RefundFor::Refund(refund_id.clone()),
                )
                .await;
            match made {
                Ok(made) => state.store().complete_refund(&refund_id, &made.id).await?,
                Err(ProviderError::Refused { code, message }) => {
                    tracing::warn!(%code, %message, refund = %refund_id, "the provider refused a refund");
                    state.store().fail_refund(&refund_id).await?;
                    return Err(Code::ProviderRefused.into());
                }
                Err(ProviderError::Unanswered(e)) => {
                    // The claim stays: a retry with the key, or the upkeep,
                    // asks again with the same provider key.
                    tracing::warn!(error = %e, refund = %refund_id, "the provider did not answer a refund");
                    return Err(Code::ProviderUnavailable.into());
                }
            }
        }
        RefundStatus::Succeeded => {
            let order = state
                .store()
                .order(&order.id)
                .await?
                .ok_or(Code::NotFound)?;
            (claim, order)
        }
        RefundStatus::Failed => return Err(Code::ProviderRefused.into()),
    };
    let body = serde_json::to_value(RefundResult {
        refund: claim.refund,
        order,
    })
    .map_err(|_| Code::Internal)?;
    Ok(idempotency::Done::Created(body))
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
        (status = 503, description = "`unavailable`: the payment is not known yet; the provider delivers it again", body = ErrorBody),
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
    let Some(payment) = event.charge.payment.clone() else {
        return Ok(Json(
            serde_json::json!({"received": true, "applied": false}),
        ));
    };
    if state
        .store()
        .webhook_seen(provider.name(), &event.id)
        .await?
    {
        return Ok(Json(
            serde_json::json!({"received": true, "applied": false}),
        ));
    }
    match upkeep::settle(
        state.store(),
        &payment,
        &event.charge,
        Some((provider.name(), &event.id)),
    )
    .await
    {
        Ok(recorded) => {
            tracing::info!(order = %recorded.order.id, status = recorded.payment.status.as_str(),
                reversed = recorded.reversed, "payment settled by webhook");
            Ok(Json(
                serde_json::json!({"received": true, "applied": recorded.changed}),
            ))
        }
        // Not written yet (or not this deployment's): the provider retries.
        Err(store::StoreError::NotFound) => Err(ApiError::new(
            Code::Unavailable,
            "The payment is not known yet; deliver the event again.",
        )),
        Err(e) => Err(e.into()),
    }
}
