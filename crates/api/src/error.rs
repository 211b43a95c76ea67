//! Every error the API can answer, in one table: a stable code (clients depend on
//! it, so codes are API), an HTTP status and a default message. Every 4xx and 5xx
//! body has one shape: `{"error": {"code": "...", "message": "..."}}`.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use store::{Conflict, StoreError};

macro_rules! error_codes {
    ($($variant:ident = ($status:ident, $code:literal, $message:literal),)*) => {
        /// Stable error codes. See the table in `crates/api/src/error.rs`.
        // Each code is its variant's name in snake_case; a unit test holds them equal.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            pub fn status(self) -> StatusCode {
                match self { $(Code::$variant => StatusCode::$status,)* }
            }

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            pub fn parse(code: &str) -> Option<Self> {
                match code { $($code => Some(Code::$variant),)* _ => None }
            }

            pub fn default_message(self) -> &'static str {
                match self { $(Code::$variant => $message,)* }
            }
        }
    };
}

error_codes! {
    BadRequest = (BAD_REQUEST, "bad_request", "The request could not be understood."),
    InvalidJson = (BAD_REQUEST, "invalid_json", "The body is not valid JSON."),
    InvalidQuery = (BAD_REQUEST, "invalid_query", "The query string is invalid."),
    InvalidCursor = (BAD_REQUEST, "invalid_cursor", "The cursor does not come from this list."),
    InvalidSignature = (BAD_REQUEST, "invalid_signature", "The webhook's signature is missing, wrong or stale."),
    InvalidIdempotencyKey = (BAD_REQUEST, "invalid_idempotency_key", "Send an Idempotency-Key header of 1 to 255 visible ASCII characters."),
    Unauthenticated = (UNAUTHORIZED, "unauthenticated", "Sign in first."),
    InvalidCredentials = (UNAUTHORIZED, "invalid_credentials", "The email or the password is wrong."),
    Forbidden = (FORBIDDEN, "forbidden", "This belongs to someone else."),
    SellerOnly = (FORBIDDEN, "seller_only", "Only sellers can do this; open a shop first."),
    NotFound = (NOT_FOUND, "not_found", "Not found."),
    RouteNotFound = (NOT_FOUND, "route_not_found", "There is no such route."),
    MethodNotAllowed = (METHOD_NOT_ALLOWED, "method_not_allowed", "This route does not take that method."),
    EmailTaken = (CONFLICT, "email_taken", "An account with this email exists."),
    HandleTaken = (CONFLICT, "handle_taken", "A shop with this handle exists."),
    SkuTaken = (CONFLICT, "sku_taken", "This shop already has a variant with this SKU."),
    InsufficientStock = (CONFLICT, "insufficient_stock", "There is not enough stock for this change."),
    SoldOut = (CONFLICT, "sold_out", "Sold out."),
    OrderExpired = (CONFLICT, "order_expired", "The reservation has expired; buy again."),
    PaymentInProgress = (CONFLICT, "payment_in_progress", "A payment for this order is still being processed."),
    PaymentReversed = (CONFLICT, "payment_reversed", "The order could no longer take the payment; it is refunded in full."),
    LimitReached = (CONFLICT, "limit_reached", "You already hold as many as one buyer may in this sale."),
    TooManyUnpaid = (CONFLICT, "too_many_unpaid", "You hold as many unpaid orders as you may: pay for or cancel one first."),
    SaleNotLive = (CONFLICT, "sale_not_live", "The sale has not started, has ended or was cancelled."),
    IdempotencyKeyInUse = (CONFLICT, "idempotency_key_in_use", "A request with this Idempotency-Key is still running; retry shortly."),
    InvalidTransition = (CONFLICT, "invalid_transition", "That change is not possible in the current state."),
    NotASession = (CONFLICT, "not_a_session", "Signed in with an API token: there is no session to end."),
    CardDeclined = (PAYMENT_REQUIRED, "card_declined", "The card was declined."),
    InsufficientFunds = (PAYMENT_REQUIRED, "insufficient_funds", "The card has insufficient funds."),
    PayloadTooLarge = (PAYLOAD_TOO_LARGE, "payload_too_large", "The body is larger than this route accepts."),
    UnsupportedMediaType = (UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Send JSON with Content-Type: application/json."),
    UnsupportedImage = (UNSUPPORTED_MEDIA_TYPE, "unsupported_image", "Upload a JPEG, PNG or WebP image."),
    InvalidBody = (UNPROCESSABLE_ENTITY, "invalid_body", "The body does not have the expected fields and types."),
    InvalidField = (UNPROCESSABLE_ENTITY, "invalid_field", "A field has an invalid value."),
    CurrencyMismatch = (UNPROCESSABLE_ENTITY, "currency_mismatch", "Prices must be in the shop's currency."),
    UnknownImage = (UNPROCESSABLE_ENTITY, "unknown_image", "The image was not uploaded to this shop."),
    IdempotencyKeyReused = (UNPROCESSABLE_ENTITY, "idempotency_key_reused", "This Idempotency-Key was used for a different request."),
    RefundTooLarge = (UNPROCESSABLE_ENTITY, "refund_too_large", "The refunds would exceed what was paid."),
    RateLimited = (TOO_MANY_REQUESTS, "rate_limited", "Too many attempts; wait and try again."),
    TooManyConnections = (TOO_MANY_REQUESTS, "too_many_connections", "Too many connections from your address; close some and try again."),
    Internal = (INTERNAL_SERVER_ERROR, "internal", "Something went wrong on our side; it has been logged."),
    ProviderUnavailable = (BAD_GATEWAY, "provider_unavailable", "The payment provider did not answer; try again."),
    ProviderRefused = (BAD_GATEWAY, "provider_refused", "The payment provider refused the call; nothing was charged or refunded."),
    Unavailable = (SERVICE_UNAVAILABLE, "unavailable", "The service is not ready; try again shortly."),
    StorageUnavailable = (SERVICE_UNAVAILABLE, "storage_unavailable", "The file storage is not answering; try again shortly."),
    Timeout = (SERVICE_UNAVAILABLE, "timeout", "The request took too long."),
}

/// An error answer. Build it from a [`Code`], a store error or a validation error.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// The input field at fault, for `invalid_field`.
    pub field: Option<&'static str>,
    /// Seconds until a retry can succeed, for `rate_limited`.
    pub retry_after: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: Code,
    pub message: String,
    /// The input field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl From<Code> for ApiError {
    fn from(code: Code) -> Self {
        Self::new(code, code.default_message())
    }
}

impl From<objects::ObjectError> for ApiError {
    fn from(e: objects::ObjectError) -> Self {
        match e {
            objects::ObjectError::Unavailable(_) => Code::StorageUnavailable.into(),
            objects::ObjectError::BadKey(_) => Code::Internal.into(),
        }
    }
}

impl From<domain::ValidationError> for ApiError {
    fn from(e: domain::ValidationError) -> Self {
        Self {
            field: Some(e.field),
            ..Self::new(Code::InvalidField, e.to_string())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Code::NotFound.into(),
            StoreError::Conflict(Conflict::Email) => Code::EmailTaken.into(),
            StoreError::Conflict(Conflict::Handle) => Code::HandleTaken.into(),
            StoreError::Conflict(Conflict::Sku) => Code::SkuTaken.into(),
            StoreError::InsufficientStock { on_hand } => ApiError::new(
                Code::InsufficientStock,
                format!("Stock on hand is {on_hand}; stock cannot go below zero."),
            ),
            StoreError::WrongState => Code::InvalidTransition.into(),
            StoreError::Order(domain::order::OrderError::RefundTooLarge { refundable }) => {
                ApiError::new(
                    Code::RefundTooLarge,
                    format!("At most {refundable} can still be refunded."),
                )
            }
            StoreError::Order(e) => ApiError::new(Code::InvalidTransition, e.to_string()),
            StoreError::UnknownImage(id) => ApiError::new(
                Code::UnknownImage,
                format!("Image {id} was not uploaded to this shop."),
            ),
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "store unavailable");
                Code::Unavailable.into()
            }
            e => {
                tracing::error!(error = %e, "store error");
                Code::Internal.into()
            }
        }
    }
}

/// A purchase the store refused, in the API's words.
impl From<&store::Refusal> for ApiError {
    fn from(refusal: &store::Refusal) -> Self {
        use store::Refusal;
        match refusal {
            Refusal::SoldOut => Code::SoldOut.into(),
            Refusal::LimitReached => Code::LimitReached.into(),
            Refusal::NotLive => Code::SaleNotLive.into(),
            Refusal::OutOfStock { on_hand, .. } => ApiError::new(
                Code::SoldOut,
                format!("Only {on_hand} left of one of the variants."),
            ),
            Refusal::UnknownVariant { .. } => {
                domain::ValidationError::new("lines.variant_id", "no such variant for sale").into()
            }
            Refusal::MixedShops => {
                domain::ValidationError::new("lines", "all lines must come from one shop").into()
            }
            Refusal::TooManyUnpaid => {
                metrics::counter!("hawker_unpaid_cap_refusals_total").increment(1);
                Code::TooManyUnpaid.into()
            }
        }
    }
}

impl From<live::JoinError> for ApiError {
    fn from(e: live::JoinError) -> Self {
        match e {
            live::JoinError::Store(e) => e.into(),
            live::JoinError::Bus(e) => {
                tracing::warn!(error = %e, "bus unavailable");
                Code::Unavailable.into()
            }
            live::JoinError::Unavailable => Code::Unavailable.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let code = match &r {
            JsonRejection::JsonDataError(_) => Code::InvalidBody,
            JsonRejection::JsonSyntaxError(_) => Code::InvalidJson,
            JsonRejection::MissingJsonContentType(_) => Code::UnsupportedMediaType,
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
            _ => Code::BadRequest,
        };
        Self::new(code, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(Code::InvalidQuery, r.body_text())
    }
}

impl ApiError {
    /// The body this error is answered with.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
                field: self.field,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The error code for an error status that came from outside our handlers
/// (routing, body limits, extractors we do not wrap).
pub(crate) fn code_for_status(status: StatusCode) -> Code {
    match status {
        StatusCode::NOT_FOUND => Code::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidBody,
        StatusCode::TOO_MANY_REQUESTS => Code::RateLimited,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => Code::Timeout,
        s if s.is_server_error() => Code::Internal,
        _ => Code::BadRequest,
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_errors_only() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "{} repeats", code.as_str());
            assert!(code.status().as_u16() >= 400);
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, code.as_str());
        }
    }
}
