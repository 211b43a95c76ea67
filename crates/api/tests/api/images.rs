use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use serde_json::{Value, json};
use sha2::Digest;

use crate::helpers::{TestApp, assert_error, png};

async fn upload(
    app: &TestApp,
    token: &str,
    shop: &str,
    bytes: Vec<u8>,
    declared: &str,
) -> (StatusCode, Value) {
    let res = app
        .client
        .post(app.url(&format!("/api/v1/shops/{shop}/images")))
        .bearer_auth(token)
        .header(CONTENT_TYPE, declared)
        .body(bytes)
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap())
}

#[tokio::test]
async fn images_upload_by_content_and_serve_with_long_caching() {
    let app = TestApp::spawn().await;
    let ann = app.seller("anns").await;
    let picture = png(8, 8);
    // The declared type is ignored: the bytes decide.
    let (status, image) = upload(
        &app,
        &ann.token,
        "anns",
        picture.clone(),
        "application/octet-stream",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{image}");
    assert_eq!(image["content_type"], "image/png");
    let id = image["id"].as_str().unwrap();
    assert_eq!(id.len(), 64);
    let again = upload(&app, &ann.token, "anns", picture.clone(), "image/png").await;
    assert_eq!(again.1["id"], id, "content-addressed: same bytes, same id");

    let res = app
        .client
        .get(app.url(&format!("/images/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[CONTENT_TYPE], "image/png");
    assert!(
        res.headers()[CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let etag = res.headers()[ETAG].clone();
    assert_eq!(res.bytes().await.unwrap().as_ref(), picture.as_slice());
    let cached = app
        .client
        .get(app.url(&format!("/images/{id}")))
        .header(IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);

    let (status, product) = app
        .post(
            "/api/v1/shops/anns/products",
            Some(&ann.token),
            json!({"title": "Pictured", "images": [id], "variants": [{"sku": "P", "price": {"amount": 1, "currency": "EUR"}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{product}");
    assert_eq!(product["images"], json!([id]));
}

#[tokio::test]
async fn bad_images_are_refused() {
    let app = TestApp::spawn_with(|c| c.max_image_bytes = 64 * 1024).await;
    let ann = app.seller("anns").await;
    let bob = app.seller("bobs").await;
    assert_error(
        upload(
            &app,
            &ann.token,
            "anns",
            b"<svg onload=alert(1)></svg>".to_vec(),
            "image/png",
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_image",
    );
    assert_error(
        upload(
            &app,
            &ann.token,
            "anns",
            b"GIF89a\x01\x00".to_vec(),
            "image/gif",
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_image",
    );
    assert_error(
        upload(&app, &ann.token, "anns", Vec::new(), "image/png").await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_image",
    );
    let mut big = png(8, 8);
    big.resize(65 * 1024, 0);
    assert_error(
        upload(&app, &ann.token, "anns", big, "image/png").await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_error(
        upload(&app, &bob.token, "anns", png(4, 4), "image/png").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // An image uploaded to Bob's shop cannot be used in Ann's products.
    let (_, bobs) = upload(&app, &bob.token, "bobs", png(5, 5), "image/png").await;
    assert_error(
        app.post(
            "/api/v1/shops/anns/products",
            Some(&ann.token),
            json!({"title": "T", "images": [bobs["id"]], "variants": [{"sku": "A", "price": {"amount": 1, "currency": "EUR"}}]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_image",
    );
    assert_error(
        app.get(&format!("/images/{}", "a".repeat(64)), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        app.get("/images/..%2F..%2Fhawker.db", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn nodes_sharing_a_folder_serve_each_others_images_and_a_lost_folder_is_a_503() {
    let shared = tempfile::tempdir().unwrap();
    let folder = shared.path().join("objects");
    std::fs::create_dir(&folder).unwrap();
    let url = format!("file://{}", folder.display());
    let app = TestApp::spawn_with(|c| c.object_store_url = Some(url)).await;
    let other = app.node_beside().await;
    let ann = app.seller("anns").await;
    let picture = png(8, 8);
    let (status, image) = upload(&app, &ann.token, "anns", picture.clone(), "image/png").await;
    assert_eq!(status, StatusCode::CREATED, "{image}");
    let id = image["id"].as_str().unwrap();
    let res = other
        .client
        .get(other.url(&format!("/images/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "the other node serves it");
    assert_eq!(res.bytes().await.unwrap().as_ref(), picture.as_slice());

    // The folder is gone (an unmounted share): uploads are refused with a
    // stable code, and nothing is recorded.
    std::fs::remove_dir_all(&folder).unwrap();
    std::fs::write(&folder, b"not a folder").unwrap();
    let another = png(9, 9);
    let another_id: String = sha2::Sha256::digest(&another)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (status, refused) = upload(&other, &ann.token, "anns", another, "image/png").await;
    assert_error(
        (status, refused),
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
    );
    let (status, _) = other.get(&format!("/images/{another_id}"), None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused upload is not recorded"
    );
}
