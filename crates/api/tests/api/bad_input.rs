//! Every class of bad input gets a 4xx with a stable code in the one error shape.

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error};

async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, app.url(path)).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

#[tokio::test]
async fn malformed_bodies() {
    let app = TestApp::spawn_with(|c| c.max_body_bytes = 4096).await;
    let ann = app.seller("anns").await;
    let json_ct = Some("application/json");
    let post = |body: &[u8], ct: Option<&'static str>| {
        raw(
            &app,
            Method::POST,
            "/api/v1/shops",
            Some(&ann.token),
            ct,
            body.to_vec(),
        )
    };
    assert_error(
        post(b"{\"handle\": ", json_ct).await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    assert_error(
        post(b"not json", json_ct).await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    assert_error(
        post(br#"{"handle": 5, "name": "x", "currency": "EUR"}"#, json_ct).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        post(br#"{"name": "x", "currency": "EUR"}"#, json_ct).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        post(
            br#"{"handle": "abc", "name": "x", "currency": "EUR", "admin": true}"#,
            json_ct,
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        post(br#"[]"#, json_ct).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        post(
            br#"{"handle": "abc", "name": "x", "currency": "EUR"}"#,
            None,
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_error(
        post(
            br#"{"handle": "abc", "name": "x", "currency": "EUR"}"#,
            Some("text/plain"),
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let mut huge =
        br#"{"handle": "abc", "name": "x", "currency": "EUR", "description": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 8192));
    huge.extend(br#""}"#);
    assert_error(
        post(&huge, json_ct).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_error(
        post(b"\xff\xfe\x00", json_ct).await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    // Text fields are cleaned, never interpreted: control characters go, HTML stays text.
    let (status, shop) = app
        .post(
            "/api/v1/shops",
            Some(&ann.token),
            json!({"handle": "anns-2", "name": "<b>Ann</b>\u{0007}", "currency": "EUR"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{shop}");
    assert_eq!(shop["name"], "<b>Ann</b>");
}

#[tokio::test]
async fn unknown_routes_methods_queries_and_credentials() {
    let app = TestApp::spawn().await;
    assert_error(
        app.get("/api/v1/nothing-here", None).await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    );
    assert_error(
        app.get("/no/such/page", None).await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    );
    assert_error(
        app.call(Method::PUT, "/api/v1/users", None, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert_error(
        app.get("/api/v1/rooms?limit=lots", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        app.get("/api/v1/rooms?limit=-1", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        app.get("/api/v1/rooms?cursor=%27%20OR%201%3D1", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    );
    assert_error(
        app.get("/api/v1/me", Some("hks_forged")).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    assert_error(
        app.get("/api/v1/me", Some("")).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    let (status, _) = app.get("/api/v1/rooms?limit=100000", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an oversized limit is clamped, not an error"
    );
    let garbage = raw(&app, Method::GET, "/api/v1/me", None, None, vec![]).await;
    assert_error(garbage, StatusCode::UNAUTHORIZED, "unauthenticated");
    let (status, _) = app.get("/api/v1/shops/%E2%9C%93%F0%9F%98%80", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
