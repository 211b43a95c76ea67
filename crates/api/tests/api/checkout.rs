//! Buying at the regular price: POST /api/v1/orders.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error};

async fn order(app: &TestApp, token: &str, key: &str, body: Value) -> (StatusCode, Value) {
    let res = app
        .client
        .post(app.url("/api/v1/orders"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap())
}

async fn stock(app: &TestApp, product: &Value, i: usize) -> i64 {
    let (_, p) = app
        .get(
            &format!("/api/v1/products/{}", product["id"].as_str().unwrap()),
            None,
        )
        .await;
    p["variants"][i]["stock_on_hand"].as_i64().unwrap()
}

#[tokio::test]
async fn an_order_holds_all_its_lines_or_none() {
    let app = TestApp::spawn().await;
    let seller = app.seller("anns").await;
    let tee = app.product(&seller, "anns", "TEE", 5).await;
    let mug = app.product(&seller, "anns", "MUG", 1).await;
    let (t, m) = (
        tee["variants"][0]["id"].clone(),
        mug["variants"][0]["id"].clone(),
    );
    let ann = app.sign_up("ann@example.com").await;

    let (status, o) = order(
        &app,
        &ann.token,
        "o1",
        json!({"lines": [
        {"variant_id": t, "quantity": 2}, {"variant_id": m}, {"variant_id": t}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    assert_eq!(o["status"], "reserved");
    assert_eq!(
        o["lines"].as_array().unwrap().len(),
        2,
        "lines of one variant add up"
    );
    assert_eq!(o["total"], json!({"amount": 4 * 1999, "currency": "EUR"}));
    assert_eq!(
        (stock(&app, &tee, 0).await, stock(&app, &mug, 0).await),
        (2, 0)
    );
    let (_, ledger) = app
        .get(
            &format!("/api/v1/variants/{}/stock-adjustments", t.as_str().unwrap()),
            Some(&seller.token),
        )
        .await;
    assert_eq!(ledger["items"][0]["reason"], "reserved");
    assert_eq!(ledger["items"][0]["note"], o["id"]);

    // The mug is gone: the whole order is refused and the tees stay on the shelf.
    let (s, e) = order(
        &app,
        &ann.token,
        "o2",
        json!({"lines": [{"variant_id": t}, {"variant_id": m}]}),
    )
    .await;
    assert_error((s, e), StatusCode::CONFLICT, "sold_out");
    assert_eq!(stock(&app, &tee, 0).await, 2);

    let (status, again) = order(
        &app,
        &ann.token,
        "o1",
        json!({"lines": [
        {"variant_id": t, "quantity": 2}, {"variant_id": m}, {"variant_id": t}]}),
    )
    .await;
    assert_eq!(
        (status, &again),
        (StatusCode::CREATED, &o),
        "replayed, not bought twice"
    );

    // Cancelled, the units go back to the shelf through the ledger.
    let (status, _) = app
        .post(
            &format!("/api/v1/orders/{}/cancel", o["id"].as_str().unwrap()),
            Some(&ann.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (stock(&app, &tee, 0).await, stock(&app, &mug, 0).await),
        (5, 1)
    );
}

#[tokio::test]
async fn orders_are_checked() {
    let app = TestApp::spawn().await;
    let ann_shop = app.seller("anns").await;
    let bob_shop = app.seller("bobs").await;
    let tee = app.product(&ann_shop, "anns", "TEE", 5).await;
    let bobs = app.product(&bob_shop, "bobs", "BOB", 5).await;
    let (t, b) = (
        tee["variants"][0]["id"].clone(),
        bobs["variants"][0]["id"].clone(),
    );
    let (_, bobs_room) = app
        .post(
            "/api/v1/shops/bobs/rooms",
            Some(&bob_shop.token),
            json!({"title": "B"}),
        )
        .await;
    let ann = app.sign_up("ann@example.com").await;
    let check = |key: &'static str, body: Value| {
        let (app, token) = (&app, ann.token.clone());
        async move { order(app, &token, key, body).await }
    };
    assert_error(
        check("c1", json!({"lines": []})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        check(
            "c2",
            json!({"lines": [{"variant_id": t}, {"variant_id": b}]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        check("c3", json!({"lines": [{"variant_id": "var_nope"}]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        check("c4", json!({"lines": [{"variant_id": t, "quantity": 0}]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        check(
            "c5",
            json!({"lines": [{"variant_id": t}], "room_id": bobs_room["room"]["id"]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        check("c6", json!({"items": []})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    // A draft cannot be bought.
    app.patch(
        &format!("/api/v1/products/{}", tee["id"].as_str().unwrap()),
        Some(&ann_shop.token),
        json!({"status": "draft"}),
    )
    .await;
    assert_error(
        check("c7", json!({"lines": [{"variant_id": t}]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    let (_, orders) = app.get("/api/v1/orders", Some(&ann.token)).await;
    assert_eq!(orders["items"], json!([]), "nothing was ordered");
    assert_eq!(stock(&app, &bobs, 0).await, 5);
}

#[tokio::test]
async fn parallel_orders_never_take_more_than_the_shelf() {
    let app = TestApp::spawn().await;
    let seller = app.seller("anns").await;
    let tee = app.product(&seller, "anns", "TEE", 5).await;
    let t = tee["variants"][0]["id"].clone();
    let mut buyers = Vec::new();
    for i in 0..20 {
        buyers.push(app.sign_up(&format!("b{i}@example.com")).await);
    }
    let taps: Vec<_> = buyers
        .iter()
        .map(|b| {
            let req = app
                .client
                .post(app.url("/api/v1/orders"))
                .bearer_auth(&b.token)
                .header("idempotency-key", "rush")
                .json(&json!({"lines": [{"variant_id": t}]}));
            tokio::spawn(async move { req.send().await.unwrap().status() })
        })
        .collect();
    let mut created = 0;
    for t in taps {
        match t.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 5);
    assert_eq!(stock(&app, &tee, 0).await, 0);
}
