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

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let pool = state.store().pool_stats();
    let backend = [("backend", pool.backend.as_str())];
    metrics::gauge!("hawker_store_connections", &backend).set(f64::from(pool.connections));
    metrics::gauge!("hawker_store_idle_connections", &backend).set(f64::from(pool.idle));
    if let Ok(n) = state.store().reversals_pending().await {
        // Payments that came after their order ended, not yet refunded.
        metrics::gauge!("hawker_payment_reversals_pending").set(n as f64);
    }
    let streams = state.media().all_stats();
    metrics::gauge!("hawker_streams_live").set(streams.iter().filter(|s| s.live).count() as f64);
    // An ended stream reads as zeros until it is let go, and stays at zero.
    for stream in &streams {
        let room = [("room", stream.room.as_str().to_owned())];
        let live = if stream.live { 1.0 } else { 0.0 };
        metrics::gauge!("hawker_stream_live", &room).set(live);
        metrics::gauge!("hawker_stream_bitrate_bps", &room).set(live * stream.bitrate as f64);
        metrics::gauge!("hawker_stream_frame_rate", &room).set(live * stream.frame_rate);
        metrics::gauge!("hawker_stream_width", &room).set(f64::from(stream.width.unwrap_or(0)));
        metrics::gauge!("hawker_stream_height", &room).set(f64::from(stream.height.unwrap_or(0)));
        metrics::gauge!("hawker_stream_keyframe_interval_ms", &room)
            .set(stream.keyframe_interval_ms.unwrap_or(0) as f64);
        metrics::gauge!("hawker_stream_uptime_seconds", &room)
            .set(live * stream.uptime_seconds as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.0.metrics.render(),
    )
}
