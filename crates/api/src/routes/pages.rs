//! The web app's pages (`web/`, embedded by the `hawker-web` crate): `/`,
//! `/r/{room}`, `/studio`, `/orders` and `/embed/{room}`, and their
//! content-hashed files under `/assets/`. Pages are never cached (a new build
//! takes effect at once); assets are immutable. Every page carries a
//! Content-Security-Policy that allows only this origin's scripts; only the
//! embed page may be framed, by the sites its shop lists.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use domain::ids::RoomId;

use crate::AppState;
use crate::error::{ApiResult, Code};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", own_page("index.html"))
        .route("/studio", own_page("studio.html"))
        .route("/orders", own_page("orders.html"))
        .route("/r/{room}", own_page("room.html"))
        .route("/embed/{room}", get(embed))
        .route("/assets/{*file}", get(asset))
}

/// A page that only this site may frame.
fn own_page(file: &'static str) -> MethodRouter<AppState> {
    get(move |request: HeaderMap| async move { page(file, &request, "'self'") })
}

/// What a page may load: scripts and styles from here, media from here and
/// `blob:` (hls.js feeds MediaSource), the room's WebSocket; `ancestors` says
/// who may frame it.
fn policy(ancestors: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         media-src 'self' blob:; worker-src 'self' blob:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors {ancestors}"
    )
}

fn page(path: &str, request: &HeaderMap, ancestors: &str) -> Response {
    let Some(mut response) = file(path, request) else {
        return crate::error::ApiError::from(Code::RouteNotFound).into_response();
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(csp) = HeaderValue::from_str(&policy(ancestors)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The embeddable player: framed by this site and the origins its shop allows.
async fn embed(
    State(state): State<AppState>,
    Path(room): Path<String>,
    request: HeaderMap,
) -> ApiResult<Response> {
    let store = state.store();
    let room = store
        .room(&RoomId::from_string(room))
        .await?
        .ok_or(Code::NotFound)?;
    let shop = store
        .shop(room.shop_id.as_str())
        .await?
        .ok_or(Code::NotFound)?;
    let mut ancestors = String::from("'self'");
    for origin in shop.embed_origins.as_slice() {
        ancestors.push(' ');
        ancestors.push_str(origin.as_str());
    }
    Ok(page("embed.html", &request, &ancestors))
}

async fn asset(Path(file): Path<String>, request: HeaderMap) -> Response {
    match self::file(&format!("assets/{file}"), &request) {
        Some(mut response) => {
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            response
        }
        None => crate::error::ApiError::from(Code::RouteNotFound).into_response(),
    }
}

/// A built file, gzip-encoded when the client accepts it and that is smaller.
fn file(path: &str, request: &HeaderMap) -> Option<Response> {
    let asset = web::asset(path)?;
    let gzip = asset.gzip.filter(|_| {
        request
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")))
    });
    let mut response = (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::VARY, HeaderValue::from_static("accept-encoding")),
        ],
        gzip.unwrap_or(asset.body),
    )
        .into_response();
    if gzip.is_some() {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Some(response)
}
