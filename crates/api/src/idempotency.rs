//! `Idempotency-Key` handling for the routes that create money-moving things,
//! with Stripe's semantics: the first answer (success or a 4xx) to a user's key
//! is stored and replayed for 24 hours with the same status and body; the same
//! key with different parameters is `idempotency_key_reused`; a key whose first
//! request is still running is `idempotency_key_in_use`. A server error frees the
//! key, so a retry can succeed.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::ids::UserId;
use serde_json::Value;
use sha2::{Digest, Sha256};
use store::{Answer, Earlier, KeyState};

use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};

pub const HEADER: &str = "idempotency-key";

/// The key a client sent: 1 to 255 visible ASCII characters.
pub fn key(headers: &HeaderMap) -> ApiResult<String> {
    let value = headers
        .get(HEADER)
        .ok_or(Code::InvalidIdempotencyKey)?
        .to_str()
        .map_err(|_| Code::InvalidIdempotencyKey)?;
    if value.is_empty() || value.len() > 255 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Code::InvalidIdempotencyKey.into());
    }
    Ok(value.to_owned())
}

/// A request to a route with an Idempotency-Key: the key, the hash that makes
/// two requests "the same", and the parsed body.
pub struct Request<T> {
    pub key: String,
    pub hash: String,
    pub body: T,
}

/// Reads the key, parses the JSON body as `T` (`invalid_body` if it does not
/// fit) and hashes the request, in that order.
pub fn request<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    route: &str,
    body: Value,
) -> ApiResult<Request<T>> {
    let key = key(headers)?;
    let hash = request_hash(route, &body);
    let body = serde_json::from_value(body)
        .map_err(|e| crate::error::ApiError::new(Code::InvalidBody, e.to_string()))?;
    Ok(Request { key, hash, body })
}

/// What makes two requests "the same": the route and the parameters (the JSON
/// body in canonical form, so key order does not matter).
pub fn request_hash(route: &str, body: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(b"\n");
    hasher.update(body.to_string().as_bytes());
    crate::auth::hex(&hasher.finalize())
}

/// A JSON answer given as its exact bytes, so a replay is byte-for-byte the same.
pub fn json_response(status: StatusCode, body: String, replayed: bool) -> Response {
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

/// The response an answer kept under a key makes, the same for the first
/// answer and every replay.
pub fn respond(answer: Answer, replayed: bool) -> Response {
    match answer {
        Answer::Made(body) => json_response(StatusCode::CREATED, body, replayed),
        Answer::Started(body) => json_response(StatusCode::ACCEPTED, body, replayed),
        Answer::Refused(refusal) => {
            let error = ApiError::from(&refusal);
            let body = serde_json::to_string(&error.body()).unwrap_or_default();
            json_response(error.code.status(), body, replayed)
        }
        Answer::Failed(body) => json_response(failed_status(&body), body, replayed),
    }
}

/// The status of a kept error document: its code's.
fn failed_status(body: &str) -> StatusCode {
    #[derive(serde::Deserialize)]
    struct Document {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: String,
    }
    serde_json::from_str::<Document>(body)
        .ok()
        .and_then(|d| Code::parse(&d.error.code))
        .map_or(StatusCode::INTERNAL_SERVER_ERROR, Code::status)
}

/// The answer to a purchase that reserved `order`: what its key recorded
/// (the order's JSON), so a replay is the same bytes.
pub fn reserved(order: &domain::order::Order) -> ApiResult<Response> {
    let body = serde_json::to_string(order).map_err(|_| Code::Internal)?;
    Ok(json_response(StatusCode::CREATED, body, false))
}

/// The answer to a request whose key belongs to an earlier request (decided
/// inside an inventory batch).
pub fn earlier(found: Earlier) -> ApiResult<Response> {
    match found {
        Earlier::InUse => Err(Code::IdempotencyKeyInUse.into()),
        Earlier::Reused => Err(Code::IdempotencyKeyReused.into()),
        Earlier::Replay(answer) => Ok(respond(answer, true)),
    }
}

/// What a request under [`run`] did.
pub enum Done {
    /// Made something: `201 Created`.
    Created(Value),
    /// Started something still in progress: `202 Accepted`.
    Accepted(Value),
}

/// Runs `work` once per key, in a task of its own: a request cut off by the
/// timeout or by its client going away does not stop the work half-way (a
/// charge made and not recorded); its key stays in use until the work is done
/// and its answer kept, then a retry gets the answer. A key whose first
/// request died with its node is found abandoned and the work runs again:
/// it must resume what the first try left (the money routes find their
/// attempt by the key) rather than start over.
pub async fn run(
    state: &AppState,
    user: &UserId,
    key: &str,
    hash: &str,
    work: impl Future<Output = ApiResult<Done>> + Send + 'static,
) -> ApiResult<Response> {
    let store = state.store().clone();
    let abandoned_after = state.config().request_timeout * 2;
    match store
        .begin_idempotent(user, key, hash, abandoned_after)
        .await?
    {
        KeyState::Fresh | KeyState::Abandoned => {}
        KeyState::Replay(answer) => return Ok(respond(answer, true)),
        KeyState::InUse => return Err(Code::IdempotencyKeyInUse.into()),
        KeyState::Reused => return Err(Code::IdempotencyKeyReused.into()),
    }
    let (user, key) = (user.clone(), key.to_owned());
    let task = tokio::spawn(async move {
        let answer = match work.await {
            Ok(Done::Created(value)) => Answer::Made(value.to_string()),
            Ok(Done::Accepted(value)) => Answer::Started(value.to_string()),
            Err(e) if e.code.status().is_client_error() => {
                Answer::Failed(serde_json::to_string(&e.body()).unwrap_or_default())
            }
            Err(e) => {
                if let Err(forget) = store.forget_idempotent(&user, &key).await {
                    tracing::warn!(error = %forget, "could not free an idempotency key");
                }
                return Err(e);
            }
        };
        // The work is committed; if recording the answer fails, a retry finds
        // the key abandoned and the work finds what it did.
        if let Err(e) = store.finish_idempotent(&user, &key, &answer).await {
            tracing::warn!(error = %e, "could not record an idempotent answer");
        }
        Ok(answer)
    });
    match task.await {
        Ok(answer) => Ok(respond(answer?, false)),
        Err(e) => {
            tracing::error!(error = %e, "an idempotent request's task failed");
            Err(Code::Internal.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        let mut h = HeaderMap::new();
        assert!(key(&h).is_err());
        h.insert(HEADER, HeaderValue::from_static("a1b2-c3"));
        assert_eq!(key(&h).unwrap(), "a1b2-c3");
        h.insert(HEADER, HeaderValue::from_static("has space"));
        assert!(key(&h).is_err());
        h.insert(HEADER, HeaderValue::from_str(&"k".repeat(256)).unwrap());
        assert!(key(&h).is_err());
    }

    #[test]
    fn the_hash_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"a": 1, "b": 2}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b": 2, "a": 1}"#).unwrap();
        assert_eq!(request_hash("/x", &a), request_hash("/x", &b));
        assert_ne!(request_hash("/x", &a), request_hash("/y", &a));
    }
}
