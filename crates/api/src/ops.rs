//! Operating endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::AppState;
use crate::error::{ApiError, Code};

pub(crate) fn router(openapi: Arc<utoipa::openapi::OpenApi>) -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = openapi.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
}

/// Ready when the store answers within two seconds and the bus is connected.
async fn ready(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    match tokio::time::timeout(Duration::from_secs(2), state.store().ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check: store unreachable");
            return Err(ApiError::new(
                Code::Unavailable,
                "The store is unreachable.",
            ));
        }
        Err(_) => {
            return Err(ApiError::new(
                Code::Unavailable,
                "The store did not answer in time.",
            ));
        }
    }
    if !state.bus().ready() {
        return Err(ApiError::new(
            Code::Unavailable,
            "The bus (NATS) is unreachable.",
        ));
    }
    Ok(Json(json!({
        "status": "ready",
        "store": state.store().backend().as_str(),
        "bus": state.bus().kind(),
    })))
}

/// The Prometheus text. With `--metrics-token`, only for a request that
/// brings it as `Authorization: Bearer`.
async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(token) = &state.config().metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !domain::secret::secret_matches(&domain::secret::hash_secret(token), given) {
            return Err(ApiError::new(
                Code::Unauthenticated,
                "/metrics needs the metrics token as a bearer token",
            ));
        }
    }
    let pool = state.store().pool_stats();
    let backend = [("backend", pool.backend.as_str())];
    metrics::gauge!("hawker_store_connections", &backend).set(f64::from(pool.connections));
    metrics::gauge!("hawker_store_idle_connections", &backend).set(f64::from(pool.idle));
    if let Ok(n) = state.store().reversals_pending().await {
        // Payments that came after their order ended, not yet refunded.
        metrics::gauge!("hawker_payment_reversals_pending").set(n as f64);
    }
    let streams = state.media().all_stats();
    let live: Vec<_> = streams.iter().filter(|s| s.live).collect();
    metrics::gauge!("hawker_streams_live").set(live.len() as f64);
    let mut text = state.0.metrics.render();
    text.push_str(&stream_series(&live));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

/// One series per live stream and measure, labelled with its room, written
/// here rather than kept in the recorder: a room's series are gone from the
/// next scrape once its stream ends.
fn stream_series(streams: &[&media::StreamStats]) -> String {
    use std::fmt::Write as _;
    type Measure = fn(&media::StreamStats) -> f64;
    let measures: [(&str, Measure); 7] = [
        ("hawker_stream_live", |_| 1.0),
        ("hawker_stream_bitrate_bps", |s| s.bitrate as f64),
        ("hawker_stream_frame_rate", |s| s.frame_rate),
        ("hawker_stream_width", |s| f64::from(s.width.unwrap_or(0))),
        ("hawker_stream_height", |s| f64::from(s.height.unwrap_or(0))),
        ("hawker_stream_keyframe_interval_ms", |s| {
            s.keyframe_interval_ms.unwrap_or(0) as f64
        }),
        ("hawker_stream_uptime_seconds", |s| s.uptime_seconds as f64),
    ];
    let mut text = String::new();
    for (name, measure) in measures {
        let _ = writeln!(text, "# TYPE {name} gauge");
        for stream in streams {
            let _ = writeln!(
                text,
                "{name}{{room=\"{}\"}} {}",
                stream.room,
                measure(stream)
            );
        }
    }
    text
}
