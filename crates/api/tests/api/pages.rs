//! The web app's pages and files as the server delivers them: the right page
//! for each address, security headers, caching, compression, and who may frame
//! the embeddable player.

use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
};
use serde_json::json;

use crate::helpers::{TestApp, assert_error};

async fn page(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header(ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap()
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn every_page_is_served_with_its_script_and_a_strict_policy() {
    let app = TestApp::spawn().await;
    for (path, script) in [
        ("/", "/assets/index-"),
        ("/studio", "/assets/studio-"),
        ("/orders", "/assets/orders-"),
        ("/r/room_anything", "/assets/room-"),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(header(&response, CONTENT_TYPE).starts_with("text/html"));
        assert_eq!(header(&response, CACHE_CONTROL), "no-cache");
        let csp = header(&response, CONTENT_SECURITY_POLICY);
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'self'"), "{csp}");
        let html = response.text().await.unwrap();
        assert!(html.contains(script), "{path} loads {script}: {html}");
    }
}

#[tokio::test]
async fn assets_are_immutable_and_gzip_encoded_when_accepted() {
    let app = TestApp::spawn().await;
    let html = app
        .client
        .get(app.url("/r/room_x"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let script = html
        .split('"')
        .find(|part| part.starts_with("/assets/room-") && part.ends_with(".js"))
        .unwrap()
        .to_owned();
    let response = page(&app, &script).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, CONTENT_TYPE).starts_with("text/javascript"));
    assert!(header(&response, CACHE_CONTROL).contains("immutable"));
    assert_eq!(header(&response, CONTENT_ENCODING), "gzip");
    let plain = app.client.get(app.url(&script)).send().await.unwrap();
    assert_eq!(header(&plain, CONTENT_ENCODING), "");
    assert!(plain.text().await.unwrap().contains("/api/v1/rooms/"));
    let missing = app
        .client
        .get(app.url("/assets/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_embed_page_may_be_framed_by_the_sites_its_shop_lists() {
    let app = TestApp::spawn().await;
    let seller = app.seller("framed").await;
    let (status, created) = app
        .post(
            "/api/v1/shops/framed/rooms",
            Some(&seller.token),
            json!({"title": "Embedded live"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(
        created["publish_url"]
            .as_str()
            .unwrap()
            .starts_with("rtmp://127.0.0.1:"),
        "{created}"
    );
    let room = created["room"]["id"].as_str().unwrap();
    let embed = format!("/embed/{room}");
    let csp = header(&page(&app, &embed).await, CONTENT_SECURITY_POLICY);
    assert!(csp.ends_with("frame-ancestors 'self'"), "{csp}");

    let (status, shop) = app
        .patch(
            "/api/v1/shops/framed",
            Some(&seller.token),
            json!({"embed_origins": ["https://Blog.Example/", "http://127.0.0.2:8080"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{shop}");
    assert_eq!(
        shop["embed_origins"],
        json!(["https://blog.example", "http://127.0.0.2:8080"])
    );
    let csp = header(&page(&app, &embed).await, CONTENT_SECURITY_POLICY);
    assert!(
        csp.ends_with("frame-ancestors 'self' https://blog.example http://127.0.0.2:8080"),
        "{csp}"
    );

    for bad in [
        "blog.example",
        "https://blog.example/path",
        "javascript:alert(1)",
        "https://a b",
    ] {
        assert_error(
            app.patch(
                "/api/v1/shops/framed",
                Some(&seller.token),
                json!({"embed_origins": [bad]}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        );
    }
    let unknown = page(&app, "/embed/room_unknown").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}
