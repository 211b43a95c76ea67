//! The layers every request passes through, outermost first: request id, trace
//! span, metrics, error normalisation, panic catching, timeout.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, Response, header};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::AppState;
use crate::error::{ApiError, Code, code_for_status};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The process's Prometheus recorder, installed once however many servers start.
pub(crate) fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("http_request_duration_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ],
                )
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

pub(crate) fn wrap(app: Router, state: AppState) -> Router {
    let timeout = state.config().request_timeout;
    app.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    let client = crate::server::ClientIp::of(req.extensions())
                        .map(|ip| ip.to_string())
                        .unwrap_or_default();
                    // The path only: query strings may carry cursors or search terms.
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id, %client)
                }),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(middleware::from_fn(record_metrics))
            .layer(middleware::from_fn(error_shape))
            .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
                tracing::error!("a handler panicked");
                ApiError::from(Code::Internal).into_response()
            }))
            .layer(middleware::from_fn_with_state(timeout, time_limit)),
    )
}

/// Counts a request in `http_requests_in_flight` while it is served, however
/// it ends (a client that goes away drops the request's future).
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!("http_requests_in_flight").increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("http_requests_in_flight").decrement(1.0);
    }
}

async fn record_metrics(req: Request, next: Next) -> Response<Body> {
    let _in_flight = InFlight::start();
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels[..2])
        .record(start.elapsed().as_secs_f64());
    response
}

/// Gives every error that did not come from our handlers (unknown routes, wrong
/// methods, body limits, extractors we do not wrap) the API's error shape.
async fn error_shape(req: Request, next: Next) -> Response<Body> {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = code_for_status(status);
    let (parts, body) = response.into_parts();
    let detail = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| code.default_message().to_owned());
    let mut shaped = ApiError::new(code, detail).into_response();
    *shaped.status_mut() = status;
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    shaped
}

async fn time_limit(State(limit): State<Duration>, req: Request, next: Next) -> Response<Body> {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::from(Code::Timeout).into_response(),
    }
}
