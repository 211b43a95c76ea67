use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::TestApp;

#[tokio::test]
async fn health_readiness_metrics_and_request_ids() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.get("/healthz", None).await,
        (StatusCode::OK, serde_json::json!({"status": "ok"}))
    );
    let (status, ready) = app.get("/readyz", None).await;
    assert_eq!(
        (status, ready["store"].as_str()),
        (StatusCode::OK, Some("sqlite"))
    );
    app.get("/api/v1/shops/nobody", None).await;

    for path in ["/healthz", "/api/v1/nope", "/api/v1/shops/nobody"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        let id = res
            .headers()
            .get("x-request-id")
            .expect("x-request-id on every response");
        assert_eq!(id.len(), 36, "a UUID");
    }
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["x-request-id"],
        "trace-me-42",
        "a client's id is kept"
    );

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "http_requests_total{method=\"GET\",route=\"/api/v1/shops/{shop}\",status=\"404\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hawker_store_connections{backend=\"sqlite\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn readiness_fails_when_the_store_is_gone() {
    let app = TestApp::spawn().await;
    app.db.store.close().await;
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    let (status, body) = app.get("/api/v1/shops/demo", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

#[tokio::test]
async fn openapi_describes_every_route_body_and_error() {
    let app = TestApp::spawn().await;
    let (status, doc) = app.get("/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let expected: &[(&str, &str)] = &[
        ("/api/v1/users", "post"),
        ("/api/v1/sessions", "post"),
        ("/api/v1/sessions/current", "delete"),
        ("/api/v1/me", "get"),
        ("/api/v1/tokens", "post"),
        ("/api/v1/tokens", "get"),
        ("/api/v1/tokens/{id}", "delete"),
        ("/api/v1/shops", "post"),
        ("/api/v1/shops/{shop}", "get"),
        ("/api/v1/shops/{shop}", "patch"),
        ("/api/v1/shops/{shop}/products", "post"),
        ("/api/v1/shops/{shop}/products", "get"),
        ("/api/v1/shops/{shop}/images", "post"),
        ("/api/v1/products/{product}", "get"),
        ("/api/v1/products/{product}", "patch"),
        ("/api/v1/products/{product}/variants", "post"),
        ("/api/v1/variants/{variant}", "patch"),
        ("/api/v1/variants/{variant}/stock-adjustments", "post"),
        ("/api/v1/variants/{variant}/stock-adjustments", "get"),
        ("/api/v1/shops/{shop}/rooms", "post"),
        ("/api/v1/shops/{shop}/rooms", "get"),
        ("/api/v1/rooms", "get"),
        ("/api/v1/rooms/{room}", "get"),
        ("/api/v1/rooms/{room}", "patch"),
        ("/api/v1/rooms/{room}/stream-key", "post"),
        ("/api/v1/rooms/{room}/sales", "post"),
        ("/api/v1/rooms/{room}/sales", "get"),
        ("/api/v1/sales/{sale}", "get"),
        ("/api/v1/sales/{sale}", "patch"),
        ("/api/v1/rooms/{room}/sales/{sale}/orders", "post"),
        ("/api/v1/orders", "get"),
        ("/api/v1/orders/{order}", "get"),
        ("/api/v1/orders/{order}/payments", "post"),
        ("/api/v1/orders/{order}/cancel", "post"),
        ("/api/v1/orders/{order}/fulfillments", "post"),
        ("/api/v1/orders/{order}/refunds", "post"),
        ("/api/v1/payments/webhooks/{provider}", "post"),
        ("/api/v1/shops/{shop}/orders", "get"),
        ("/api/v1/orders", "post"),
        ("/api/v1/rooms/{room}/ws", "get"),
        ("/api/v1/rooms/{room}/pin", "put"),
        ("/api/v1/rooms/{room}/pin", "delete"),
        ("/api/v1/rooms/{room}/stream", "get"),
        ("/api/v1/rooms/{room}/recordings", "get"),
        ("/api/v1/recordings/{rec}", "get"),
        ("/api/v1/recordings/{rec}", "delete"),
        ("/api/v1/shops/{shop}/moderators", "get"),
        ("/api/v1/shops/{shop}/moderators/{user}", "put"),
        ("/api/v1/shops/{shop}/moderators/{user}", "delete"),
        ("/api/v1/shops/{shop}/blocked-words", "get"),
        ("/api/v1/shops/{shop}/blocked-words", "put"),
        ("/api/v1/rooms/{room}/messages/{message}", "delete"),
        ("/api/v1/rooms/{room}/sanctions", "get"),
        ("/api/v1/rooms/{room}/sanctions/{user}", "put"),
        ("/api/v1/rooms/{room}/sanctions/{user}", "delete"),
        ("/api/v1/rooms/{room}/slow-mode", "put"),
        ("/api/v1/rooms/{room}/stats", "get"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    let mut count = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            count += 1;
            let responses = op["responses"].as_object().unwrap();
            // A WebSocket's success is the switch to its protocol.
            assert!(
                responses.keys().any(|s| s.starts_with('2') || s == "101"),
                "{method} {path} has no success response"
            );
            assert!(
                responses.contains_key("500") && responses.contains_key("422"),
                "{method} {path} lacks common errors"
            );
        }
    }
    for (path, method) in expected {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    assert_eq!(
        count,
        expected.len(),
        "every documented operation is expected, and the reverse"
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "ErrorBody",
        "Code",
        "Product",
        "Variant",
        "Money",
        "Shop",
        "Room",
        "StockAdjustment",
        "CreateProduct",
        "SignUp",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    let codes: Vec<&str> = schemas["Code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for code in api::Code::ALL {
        assert!(
            codes.contains(&code.as_str()),
            "error code {} undocumented",
            code.as_str()
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

/// `http_requests_in_flight` as `/metrics` shows it.
async fn in_flight(app: &TestApp) -> u64 {
    app.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("http_requests_in_flight "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test]
async fn a_request_in_flight_finishes_during_shutdown() {
    let app = TestApp::spawn().await;
    let body =
        br#"{"email": "late@example.com", "password": "correct horse", "display_name": "Late"}"#;
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/users HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body[..10]).await.unwrap();
    // In flight: the server is reading its body (the scrape counts itself).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while in_flight(&app).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request is served"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.begin_shutdown();
    // The server stops taking connections at once ...
    while tokio::net::TcpStream::connect(app.addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener closes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ... and the request in flight still finishes.
    socket.write_all(&body[10..]).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(tokio::net::TcpStream::connect(app.addr).await.is_err());
}
