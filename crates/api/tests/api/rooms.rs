use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_error, png};

#[tokio::test]
async fn rooms_with_stream_keys_shown_once() {
    let app = TestApp::spawn().await;
    let ann = app.seller("anns").await;
    let bob = app.seller("bobs").await;
    let (status, created) = app
        .post(
            "/api/v1/shops/anns/rooms",
            Some(&ann.token),
            json!({"title": "Friday drop", "description": "New tees", "scheduled_start": "2030-01-01T10:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["stream_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("live_") && key.len() > 40);
    let room = &created["room"];
    assert_eq!(room["status"], "scheduled");
    assert_eq!(room["scheduled_start"], "2030-01-01T10:00:00Z");
    let path = format!("/api/v1/rooms/{}", room["id"].as_str().unwrap());

    let (status, public) = app.get(&path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !public.to_string().contains(&key),
        "the key is never shown again"
    );
    let stored = app
        .db
        .store
        .stream_key_hash(&domain::ids::RoomId::from_string(
            room["id"].as_str().unwrap(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.contains(&key), "only a hash is stored");
    assert!(api::stream_key_matches(&stored, &key));

    let (status, rotated) = app
        .post(&format!("{path}/stream-key"), Some(&ann.token), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let new_key = rotated["stream_key"].as_str().unwrap();
    assert_ne!(new_key, key);
    let stored = app
        .db
        .store
        .stream_key_hash(&domain::ids::RoomId::from_string(
            room["id"].as_str().unwrap(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert!(api::stream_key_matches(&stored, new_key));
    assert!(
        !api::stream_key_matches(&stored, &key),
        "the old key stops working"
    );
    assert_error(
        app.post(&format!("{path}/stream-key"), Some(&bob.token), json!({}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    assert_error(
        app.patch(&path, Some(&bob.token), json!({"title": "x"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        app.post(
            "/api/v1/shops/anns/rooms",
            Some(&bob.token),
            json!({"title": "x"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let (status, patched) = app
        .patch(
            &path,
            Some(&ann.token),
            json!({"title": "Friday drop!", "scheduled_start": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["title"], "Friday drop!");
    assert_eq!(patched["scheduled_start"], json!(null));
    assert_eq!(patched["description"], "New tees");
    assert_error(
        app.patch(&path, Some(&ann.token), json!({"status": "live"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        app.patch(&path, Some(&ann.token), json!({"cover_image": "nope"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_image",
    );

    // A cover must come from the room's own shop.
    let upload = |token: &str, shop: &str| {
        let req = app
            .client
            .post(app.url(&format!("/api/v1/shops/{shop}/images")))
            .bearer_auth(token)
            .body(png(6, 6));
        async move {
            req.send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let bobs = upload(&bob.token, "bobs").await;
    assert_error(
        app.patch(&path, Some(&ann.token), json!({"cover_image": bobs["id"]}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_image",
    );
    let anns = upload(&ann.token, "anns").await;
    let (status, covered) = app
        .patch(&path, Some(&ann.token), json!({"cover_image": anns["id"]}))
        .await;
    assert_eq!(
        (status, &covered["cover_image"]),
        (StatusCode::OK, &anns["id"])
    );
    let (status, cleared) = app
        .patch(&path, Some(&ann.token), json!({"cover_image": null}))
        .await;
    assert_eq!(
        (status, &cleared["cover_image"]),
        (StatusCode::OK, &json!(null))
    );
}

#[tokio::test]
async fn rooms_are_listed_by_state_and_end_for_good() {
    let app = TestApp::spawn().await;
    let ann = app.seller("anns").await;
    let bob = app.seller("bobs").await;
    let mut ids = Vec::new();
    for (who, shop, title) in [
        (&ann, "anns", "A1"),
        (&ann, "anns", "A2"),
        (&bob, "bobs", "B1"),
    ] {
        let (_, created) = app
            .post(
                &format!("/api/v1/shops/{shop}/rooms"),
                Some(&who.token),
                json!({"title": title}),
            )
            .await;
        ids.push(created["room"]["id"].as_str().unwrap().to_owned());
    }
    let (status, ended) = app
        .patch(
            &format!("/api/v1/rooms/{}", ids[0]),
            Some(&ann.token),
            json!({"status": "ended"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(ended["status"], "ended");
    assert!(ended["ended_at"].is_string());
    assert_error(
        app.patch(
            &format!("/api/v1/rooms/{}", ids[0]),
            Some(&ann.token),
            json!({"title": "again"}),
        )
        .await,
        StatusCode::CONFLICT,
        "invalid_transition",
    );

    let titles = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["title"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        titles(&app.get("/api/v1/rooms?status=scheduled", None).await.1),
        ["B1", "A2"]
    );
    assert_eq!(
        titles(&app.get("/api/v1/rooms?status=ended", None).await.1),
        ["A1"]
    );
    assert!(titles(&app.get("/api/v1/rooms?status=live", None).await.1).is_empty());
    assert_eq!(
        titles(&app.get("/api/v1/shops/anns/rooms", None).await.1),
        ["A2", "A1"]
    );
    assert_error(
        app.get("/api/v1/rooms?status=paused", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        app.get("/api/v1/rooms/room_nope", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}
