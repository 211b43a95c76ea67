//! The sandbox's HTTP routes: `/v1/payment_intents`, `/v1/refunds` and, for
//! tests, `/v1/test/faults` and `/v1/test/stats`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::ledger::{Kept, Record, Settle};
use crate::wire::{
    CreateIntent, CreateRefund, ErrorBody, ErrorDetail, Event, EventData, Fault, Intent,
    IntentStatus, List, PaymentError, QueueFault, Refund, Target, Window,
};
use crate::{Sandbox, deliver, lock, now_ms, random_id};

type Shared = State<Arc<Sandbox>>;

pub fn router(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/v1/payment_intents", post(create_intent).get(list_intents))
        .route("/v1/payment_intents/{id}", get(get_intent))
        .route("/v1/refunds", post(create_refund).get(list_refunds))
        .route("/v1/test/faults", post(queue_fault))
        .route("/v1/test/stats", get(stats))
        .route("/v1/test/payment_intents/{id}/settle", post(settle_now))
        .layer(middleware::from_fn_with_state(sandbox.clone(), authorize))
        .with_state(sandbox)
}

fn json(status: StatusCode, body: String, replayed: bool) -> Response {
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// An error answer, as `{"error": {"type", "code", "message"}}`.
struct Error {
    status: StatusCode,
    body: ErrorBody,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&self.body).unwrap_or_default();
        json(self.status, body, false)
    }
}

fn error(status: StatusCode, kind: &str, code: &str, message: impl Into<String>) -> Error {
    Error {
        status,
        body: ErrorBody {
            error: ErrorDetail {
                kind: kind.into(),
                code: code.into(),
                message: message.into(),
            },
        },
    }
}

fn invalid(code: &str, message: impl Into<String>) -> Error {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        code,
        message,
    )
}

fn api_error(message: &str) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "api_error",
        "api_error",
        message,
    )
    .into_response()
}

async fn authorize(State(sandbox): Shared, request: Request, next: Next) -> Response {
    if let Some(key) = &sandbox.settings.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let matches = given.is_some_and(|g| {
            g.len() == key.len() && g.bytes().zip(key.bytes()).fold(0, |d, (a, b)| d | (a ^ b)) == 0
        });
        if !matches {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "api_key_invalid",
                "Send the API key as a bearer token.",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// A write's idempotency key and the hash that makes two writes "the same".
fn keyed(headers: &HeaderMap, body: &[u8]) -> Result<(String, String), Error> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            invalid(
                "idempotency_key_missing",
                "Send an Idempotency-Key of 1 to 255 characters.",
            )
        })?;
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    let hash = Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((key.to_owned(), hash))
}

/// What a write did, before faults shape the answer.
struct Written {
    kept: Kept,
    replayed: bool,
    /// A webhook to deliver.
    event: Option<Event>,
    /// An intent to settle later.
    settle: Option<(String, Settle)>,
}

/// Runs a write once per key: a retry with the same key and body is answered
/// from the ledger, the same key with another body is refused.
fn write_once(
    sandbox: &Sandbox,
    target: Target,
    headers: &HeaderMap,
    body: &[u8],
    work: impl FnOnce(&crate::ledger::Ledger, i64) -> Outcome,
) -> Result<Written, Error> {
    let (key, hash) = keyed(headers, body)?;
    let mut ledger = lock(&sandbox.ledger);
    if let Some(kept) = ledger.kept(target, &key) {
        if kept.hash != hash {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "idempotency_error",
                "idempotency_key_reused",
                "This key was used with other parameters.",
            ));
        }
        return Ok(Written {
            kept: kept.clone(),
            replayed: true,
            event: None,
            settle: None,
        });
    }
    let now = ledger.stamp(now_ms());
    let outcome = work(&ledger, now);
    let kept = Kept {
        hash,
        status: outcome.status.as_u16(),
        body: outcome.body,
    };
    let mut records = outcome.records;
    records.push(Record::Key {
        target,
        key,
        kept: kept.clone(),
    });
    ledger.commit(records).map_err(|e| {
        tracing::error!(error = %e, "payments sandbox: cannot write the ledger");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "api_error",
            "The ledger could not be written; nothing was done.",
        )
    })?;
    Ok(Written {
        kept,
        replayed: false,
        event: outcome.event,
        settle: outcome.settle,
    })
}

struct Outcome {
    status: StatusCode,
    body: String,
    records: Vec<Record>,
    event: Option<Event>,
    settle: Option<(String, Settle)>,
}

impl Outcome {
    fn refused(response: (StatusCode, &str, &str, String)) -> Self {
        let (status, kind, code, message) = response;
        let body = ErrorBody {
            error: ErrorDetail {
                kind: kind.into(),
                code: code.into(),
                message,
            },
        };
        Self {
            status,
            body: serde_json::to_string(&body).unwrap_or_default(),
            records: Vec::new(),
            event: None,
            settle: None,
        }
    }
}

pub(crate) fn event_for(intent: &Intent, now: i64) -> Event {
    let kind = if intent.status == IntentStatus::Succeeded {
        "payment_intent.succeeded"
    } else {
        "payment_intent.payment_failed"
    };
    Event {
        id: random_id("evt"),
        kind: kind.into(),
        created: now,
        data: EventData {
            object: intent.clone(),
        },
    }
}

fn charge(sandbox: &Sandbox, request: CreateIntent, now: i64) -> Outcome {
    let bad = |m: &str| {
        Outcome::refused((
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "parameter_invalid",
            m.to_owned(),
        ))
    };
    if !(1..=99_999_999_999).contains(&request.amount) {
        return bad("amount must be 1 to 99999999999 minor units");
    }
    if request.currency.len() != 3 || !request.currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return bad("currency must be a three-letter ISO 4217 code");
    }
    let number = &request.payment_method.card.number;
    let (status, failure, settle) = match number.as_str() {
        "4242424242424242" => (IntentStatus::Succeeded, None, None),
        "4000000000009995" => (
            IntentStatus::RequiresPaymentMethod,
            Some("insufficient_funds"),
            None,
        ),
        "4000000000003220" | "4000000000000341" => {
            let at = now + sandbox.settings.async_delay.as_millis() as i64;
            let succeeds = number == "4000000000003220";
            (
                IntentStatus::Processing,
                None,
                Some(Settle { at, succeeds }),
            )
        }
        _ => (
            IntentStatus::RequiresPaymentMethod,
            Some("card_declined"),
            None,
        ),
    };
    let intent = Intent {
        id: random_id("pi"),
        amount: request.amount,
        currency: request.currency.to_ascii_lowercase(),
        status,
        last_payment_error: failure.map(|code| PaymentError { code: code.into() }),
        card_last4: number[number.len().saturating_sub(4)..].to_owned(),
        amount_refunded: 0,
        metadata: request.metadata,
        created: now,
    };
    let event = (status != IntentStatus::Processing).then(|| event_for(&intent, now));
    let mut records = vec![Record::Intent {
        intent: intent.clone(),
        settle,
    }];
    records.extend(event.iter().map(|e| Record::Event { event: e.clone() }));
    Outcome {
        status: StatusCode::OK,
        body: serde_json::to_string(&intent).unwrap_or_default(),
        records,
        event,
        settle: settle.map(|s| (intent.id.clone(), s)),
    }
}

fn refund(ledger: &crate::ledger::Ledger, request: CreateRefund, now: i64) -> Outcome {
    let Some(intent) = ledger.intent(&request.payment_intent) else {
        return Outcome::refused((
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "resource_missing",
            format!("No such payment_intent: {}", request.payment_intent),
        ));
    };
    if intent.status != IntentStatus::Succeeded {
        return Outcome::refused((
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "charge_not_succeeded",
            "Only a succeeded payment can be refunded.".into(),
        ));
    }
    let left = intent.amount - intent.amount_refunded;
    if request.amount <= 0 || request.amount > left {
        return Outcome::refused((
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "amount_too_large",
            format!("Refund 1 to {left}: that is what is left of the charge."),
        ));
    }
    let made = Refund {
        id: random_id("re"),
        payment_intent: intent.id.clone(),
        amount: request.amount,
        currency: intent.currency.clone(),
        metadata: request.metadata,
        created: now,
    };
    let mut charged = intent.clone();
    charged.amount_refunded += request.amount;
    Outcome {
        status: StatusCode::OK,
        body: serde_json::to_string(&made).unwrap_or_default(),
        records: vec![
            Record::Intent {
                intent: charged,
                settle: None,
            },
            Record::Refund { refund: made },
        ],
        event: None,
        settle: None,
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| invalid("parameter_invalid", e.to_string()))
}

/// What `fault` does before the work: waits, or fails.
async fn before(fault: Option<Fault>) -> Result<(), Response> {
    match fault {
        Some(Fault::FailBefore) => Err(api_error("Injected: failed before doing anything.")),
        Some(Fault::Delay { after_ms }) => {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Answers a write as `fault` says, after the work is done.
async fn answer(sandbox: &Arc<Sandbox>, written: Written, fault: Option<Fault>) -> Response {
    if let Some((intent, settle)) = written.settle {
        deliver::settle_later(sandbox, intent, settle);
    }
    if let Some(event) = written.event {
        match fault {
            Some(Fault::WebhookFirst) => deliver::now_then_later(sandbox, event).await,
            Some(Fault::WebhookTwice) => {
                deliver::later(sandbox, event.clone());
                deliver::later(sandbox, event);
            }
            _ => deliver::later(sandbox, event),
        }
    }
    match fault {
        Some(Fault::Delay { after_ms }) => {
            tokio::time::sleep(Duration::from_millis(after_ms)).await
        }
        Some(Fault::FailAfter) => {
            return api_error("Injected: the work was done, the answer lost.");
        }
        Some(Fault::Timeout) => {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(120)) => {}
                () = sandbox.shutdown.cancelled() => {}
            }
            return api_error("Injected: no answer in time.");
        }
        _ => {}
    }
    let status = StatusCode::from_u16(written.kept.status).unwrap_or(StatusCode::OK);
    json(status, written.kept.body, written.replayed)
}

async fn create_intent(State(sandbox): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let fault = sandbox.next_fault(Target::PaymentIntents);
    if let Err(response) = before(fault).await {
        return response;
    }
    let written = write_once(
        &sandbox,
        Target::PaymentIntents,
        &headers,
        &body,
        |_, now| match parse::<CreateIntent>(&body) {
            Ok(request) => charge(&sandbox, request, now),
            Err(_) => Outcome::refused((
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "parameter_invalid",
                "The body is not a payment intent.".into(),
            )),
        },
    );
    match written {
        Ok(written) => {
            if !written.replayed && written.kept.status == 200 {
                lock(&sandbox.stats).charges += 1;
            }
            answer(&sandbox, written, fault).await
        }
        Err(e) => e.into_response(),
    }
}

async fn create_refund(State(sandbox): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let fault = sandbox.next_fault(Target::Refunds);
    if let Err(response) = before(fault).await {
        return response;
    }
    let written = write_once(
        &sandbox,
        Target::Refunds,
        &headers,
        &body,
        |ledger, now| match parse::<CreateRefund>(&body) {
            Ok(request) => refund(ledger, request, now),
            Err(_) => Outcome::refused((
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "parameter_invalid",
                "The body is not a refund.".into(),
            )),
        },
    );
    match written {
        Ok(written) => {
            if !written.replayed && written.kept.status == 200 {
                lock(&sandbox.stats).refunds += 1;
            }
            answer(&sandbox, written, fault).await
        }
        Err(e) => e.into_response(),
    }
}

async fn get_intent(State(sandbox): Shared, Path(id): Path<String>) -> Response {
    match lock(&sandbox.ledger).intent(&id) {
        Some(intent) => json(
            StatusCode::OK,
            serde_json::to_string(intent).unwrap_or_default(),
            false,
        ),
        None => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "resource_missing",
            format!("No such payment_intent: {id}"),
        )
        .into_response(),
    }
}

/// A window of intents, or the intents of one Hawker payment. The window's
/// fields are spelled out: a flattened struct would not parse numbers from a
/// query string.
#[derive(Deserialize)]
struct IntentQuery {
    created_gte: Option<i64>,
    created_lt: Option<i64>,
    starting_after: Option<String>,
    limit: Option<usize>,
    /// Only the intents whose metadata `payment` is this.
    #[serde(rename = "metadata[payment]")]
    payment: Option<String>,
}

fn listed<T: serde::Serialize>((data, has_more): (Vec<T>, bool)) -> Response {
    json(
        StatusCode::OK,
        serde_json::to_string(&List { data, has_more }).unwrap_or_default(),
        false,
    )
}

async fn list_intents(State(sandbox): Shared, Query(query): Query<IntentQuery>) -> Response {
    let ledger = lock(&sandbox.ledger);
    match &query.payment {
        Some(payment) => listed((ledger.intents_tagged("payment", payment), false)),
        None => listed(ledger.intents_in(&Window {
            created_gte: query.created_gte,
            created_lt: query.created_lt,
            starting_after: query.starting_after,
            limit: query.limit,
        })),
    }
}

async fn list_refunds(State(sandbox): Shared, Query(window): Query<Window>) -> Response {
    listed(lock(&sandbox.ledger).refunds_in(&window))
}

async fn queue_fault(State(sandbox): Shared, body: Bytes) -> Response {
    match parse::<QueueFault>(&body) {
        Ok(q) => {
            sandbox.queue_fault(q.target, q.fault, q.count);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn stats(State(sandbox): Shared) -> Response {
    json(
        StatusCode::OK,
        serde_json::to_string(&sandbox.stats()).unwrap_or_default(),
        false,
    )
}

/// Settles a processing intent now rather than after the asynchronous delay,
/// and delivers its webhook before answering (as a test clock would).
async fn settle_now(State(sandbox): Shared, Path(id): Path<String>) -> Response {
    match deliver::settle_now(&sandbox, &id) {
        Some(event) => {
            deliver::now_then_later(&sandbox, event).await;
            get_intent(State(sandbox), Path(id)).await
        }
        None => invalid(
            "intent_unexpected_state",
            "Only a processing intent settles.",
        )
        .into_response(),
    }
}
