//! Flash sales and buying in them, through the HTTP API.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Account, TestApp, assert_error};

/// A seller with a product of `stock` units, a room, and a live sale of
/// `quantity` units at 9.99 EUR with `limit` per buyer.
pub async fn live_sale(
    app: &TestApp,
    stock: i64,
    quantity: i64,
    limit: i64,
) -> (Account, Value, Value) {
    let seller = app.seller("anns").await;
    let product = app.product(&seller, "anns", "HOT", stock).await;
    let (_, room) = app
        .post(
            "/api/v1/shops/anns/rooms",
            Some(&seller.token),
            json!({"title": "Live"}),
        )
        .await;
    let room = room["room"].clone();
    let (status, sale) = app
        .post(
            &format!("/api/v1/rooms/{}/sales", room["id"].as_str().unwrap()),
            Some(&seller.token),
            json!({"variant_id": product["variants"][0]["id"], "price": {"amount": 999, "currency": "EUR"},
                   "quantity": quantity, "per_buyer_limit": limit, "duration_seconds": 600}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sale}");
    (seller, room, sale)
}

pub async fn buy(
    app: &TestApp,
    token: &str,
    room: &Value,
    sale: &Value,
    key: Option<&str>,
    body: Value,
) -> (StatusCode, Value, bool) {
    let mut req = app
        .client
        .post(app.url(&format!(
            "/api/v1/rooms/{}/sales/{}/orders",
            room["id"].as_str().unwrap(),
            sale["id"].as_str().unwrap()
        )))
        .bearer_auth(token)
        .json(&body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let replayed = res.headers().get("idempotent-replayed").is_some();
    (status, res.json().await.unwrap(), replayed)
}

#[tokio::test]
async fn a_sale_takes_stock_sells_and_gives_back_the_rest() {
    let app = TestApp::spawn().await;
    let (seller, room, sale) = live_sale(&app, 10, 3, 2).await;
    assert_eq!(
        (sale["status"].as_str(), sale["available"].as_i64()),
        (Some("live"), Some(3))
    );
    let variant = sale["variant_id"].as_str().unwrap();
    let (_, product) = app.get("/api/v1/shops/anns/products", None).await;
    assert_eq!(
        product["items"][0]["variants"][0]["stock_on_hand"], 7,
        "the sale took its units"
    );

    let ann = app.sign_up("ann@example.com").await;
    let (status, order, _) = buy(
        &app,
        &ann.token,
        &room,
        &sale,
        Some("k-1"),
        json!({"quantity": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "reserved");
    assert_eq!(order["total"], json!({"amount": 1998, "currency": "EUR"}));
    assert_eq!(order["lines"][0]["sku"], "HOT");
    assert!(order["expires_at"].is_string());
    let (s, e, _) = buy(&app, &ann.token, &room, &sale, Some("k-2"), json!({})).await;
    assert_error((s, e), StatusCode::CONFLICT, "limit_reached");
    let bob = app.sign_up("bob@example.com").await;
    let (s, _, _) = buy(&app, &bob.token, &room, &sale, Some("k-1"), json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "keys are per buyer");
    let cat = app.sign_up("cat@example.com").await;
    let (s, e, _) = buy(&app, &cat.token, &room, &sale, Some("k-1"), json!({})).await;
    assert_error((s, e), StatusCode::CONFLICT, "sold_out");
    let (_, now) = app
        .get(
            &format!("/api/v1/sales/{}", sale["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        (now["status"].as_str(), now["available"].as_i64()),
        (Some("sold_out"), Some(0))
    );

    // The buyer reads the order with its history; the seller can too; nobody else.
    let path = format!("/api/v1/orders/{}", order["id"].as_str().unwrap());
    let (status, mine) = app.get(&path, Some(&ann.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["history"][0]["status"], "reserved");
    assert_eq!(app.get(&path, Some(&seller.token)).await.0, StatusCode::OK);
    assert_error(
        app.get(&path, Some(&cat.token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (_, list) = app.get("/api/v1/orders", Some(&ann.token)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let (status, ended) = app
        .patch(
            &format!("/api/v1/sales/{}", sale["id"].as_str().unwrap()),
            Some(&seller.token),
            json!({"status": "ended"}),
        )
        .await;
    assert_eq!(
        (status, ended["status"].as_str()),
        (StatusCode::OK, Some("ended"))
    );
    let (s, e, _) = buy(&app, &cat.token, &room, &sale, Some("k-9"), json!({})).await;
    assert_error((s, e), StatusCode::CONFLICT, "sale_not_live");
    let (_, ledger) = app
        .get(
            &format!("/api/v1/variants/{variant}/stock-adjustments"),
            Some(&seller.token),
        )
        .await;
    let reasons: Vec<&str> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["sale_allocated", "initial"],
        "nothing was left to return"
    );
}

#[tokio::test]
async fn the_same_key_gives_the_same_answer_and_one_order() {
    let app = TestApp::spawn().await;
    let (_, room, sale) = live_sale(&app, 10, 5, 5).await;
    let ann = app.sign_up("ann@example.com").await;
    let (s1, first, replayed) = buy(
        &app,
        &ann.token,
        &room,
        &sale,
        Some("tap-7"),
        json!({"quantity": 1}),
    )
    .await;
    assert_eq!((s1, replayed), (StatusCode::CREATED, false));
    let (s2, second, replayed) = buy(
        &app,
        &ann.token,
        &room,
        &sale,
        Some("tap-7"),
        json!({"quantity": 1}),
    )
    .await;
    assert_eq!((s2, replayed), (StatusCode::CREATED, true));
    assert_eq!(first, second, "same status, same body");
    let (_, orders) = app.get("/api/v1/orders", Some(&ann.token)).await;
    assert_eq!(
        orders["items"].as_array().unwrap().len(),
        1,
        "never a second order"
    );
    let (s, e, _) = buy(
        &app,
        &ann.token,
        &room,
        &sale,
        Some("tap-7"),
        json!({"quantity": 2}),
    )
    .await;
    assert_error(
        (s, e),
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    let (_, now) = app
        .get(
            &format!("/api/v1/sales/{}", sale["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(now["available"], 4);

    // A refusal is an answer too, and is replayed as such: after 1 + 4 of the
    // 5 units, the sale is sold out.
    let (s, _, _) = buy(
        &app,
        &ann.token,
        &room,
        &sale,
        Some("big"),
        json!({"quantity": 4}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, e, _) = buy(
        &app,
        &ann.token,
        &room,
        &sale,
        Some("over"),
        json!({"quantity": 1}),
    )
    .await;
    assert_error((s, e.clone()), StatusCode::CONFLICT, "sold_out");
    let (s, again, replayed) = buy(
        &app,
        &ann.token,
        &room,
        &sale,
        Some("over"),
        json!({"quantity": 1}),
    )
    .await;
    assert_eq!((s, replayed), (StatusCode::CONFLICT, true));
    assert_eq!(again, e);
}

#[tokio::test]
async fn buying_needs_a_key_a_buyer_and_the_right_room() {
    let app = TestApp::spawn().await;
    let (seller, room, sale) = live_sale(&app, 10, 5, 5).await;
    let ann = app.sign_up("ann@example.com").await;
    let (s, e, _) = buy(&app, &ann.token, &room, &sale, None, json!({})).await;
    assert_error((s, e), StatusCode::BAD_REQUEST, "invalid_idempotency_key");
    let long = "k".repeat(256);
    let (s, e, _) = buy(&app, &ann.token, &room, &sale, Some(&long), json!({})).await;
    assert_error((s, e), StatusCode::BAD_REQUEST, "invalid_idempotency_key");
    for bad in [
        json!({"quantity": 0}),
        json!({"quantity": -1}),
        json!({"quantity": 101}),
    ] {
        let (s, e, _) = buy(&app, &ann.token, &room, &sale, Some("q"), bad).await;
        assert_error((s, e), StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    }
    let (s, e, _) = buy(
        &app,
        &ann.token,
        &room,
        &sale,
        Some("q2"),
        json!({"quantity": "two"}),
    )
    .await;
    assert_error((s, e), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let (_, other_room) = app
        .post(
            "/api/v1/shops/anns/rooms",
            Some(&seller.token),
            json!({"title": "Other"}),
        )
        .await;
    let (s, e, _) = buy(
        &app,
        &ann.token,
        &other_room["room"],
        &sale,
        Some("q3"),
        json!({}),
    )
    .await;
    assert_error((s, e), StatusCode::NOT_FOUND, "not_found");
    let (s, e, _) = buy(
        &app,
        &ann.token,
        &room,
        &json!({"id": "sale_nope"}),
        Some("q4"),
        json!({}),
    )
    .await;
    assert_error((s, e), StatusCode::NOT_FOUND, "not_found");
    let anonymous = app
        .client
        .post(app.url(&format!(
            "/api/v1/rooms/{}/sales/{}/orders",
            room["id"].as_str().unwrap(),
            sale["id"].as_str().unwrap()
        )))
        .header("idempotency-key", "x")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sale_creation_is_checked() {
    let app = TestApp::spawn().await;
    let seller = app.seller("anns").await;
    let bob = app.seller("bobs").await;
    let product = app.product(&seller, "anns", "HOT", 5).await;
    let bobs = app.product(&bob, "bobs", "BOB", 5).await;
    let (_, room) = app
        .post(
            "/api/v1/shops/anns/rooms",
            Some(&seller.token),
            json!({"title": "Live"}),
        )
        .await;
    let path = format!(
        "/api/v1/rooms/{}/sales",
        room["room"]["id"].as_str().unwrap()
    );
    let variant = product["variants"][0]["id"].clone();
    let sale = |body: Value| {
        let (app, path, token) = (&app, path.clone(), seller.token.clone());
        async move { app.post(&path, Some(&token), body).await }
    };
    let price = json!({"amount": 500, "currency": "EUR"});
    assert_error(
        sale(json!({"variant_id": variant, "price": price, "quantity": 6, "duration_seconds": 60}))
            .await,
        StatusCode::CONFLICT,
        "insufficient_stock",
    );
    assert_error(
        sale(json!({"variant_id": bobs["variants"][0]["id"], "price": price, "quantity": 1, "duration_seconds": 60})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        sale(json!({"variant_id": variant, "price": {"amount": 500, "currency": "USD"}, "quantity": 1, "duration_seconds": 60})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "currency_mismatch",
    );
    for bad in [
        json!({"variant_id": variant, "price": price, "quantity": 0, "duration_seconds": 60}),
        json!({"variant_id": variant, "price": price, "quantity": 1}),
        json!({"variant_id": variant, "price": price, "quantity": 1, "duration_seconds": 60, "ends_at": "2030-01-01T00:00:00Z"}),
        json!({"variant_id": variant, "price": price, "quantity": 1, "duration_seconds": 5}),
        json!({"variant_id": variant, "price": price, "quantity": 1, "duration_seconds": 60, "per_buyer_limit": 0}),
        json!({"variant_id": variant, "price": price, "quantity": 1, "ends_at": "2001-01-01T00:00:00Z"}),
    ] {
        assert_error(
            sale(bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        );
    }
    assert_error(
        app.post(
            &path,
            Some(&bob.token),
            json!({"variant_id": variant, "price": price, "quantity": 1, "duration_seconds": 60}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // A sale that could not start was not left behind, and no stock moved.
    let (_, sales) = app.get(&path, None).await;
    let statuses: Vec<&str> = sales["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["cancelled"]);
    let (_, p) = app
        .get(
            &format!("/api/v1/products/{}", product["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(p["variants"][0]["stock_on_hand"], 5);

    // A scheduled sale is started by the sale clock in the binary, or by hand here.
    let (status, scheduled) = sale(json!({"variant_id": variant, "price": price, "quantity": 2,
        "starts_at": "2099-01-01T00:00:00Z", "ends_at": "2099-01-02T00:00:00Z"}))
    .await;
    assert_eq!(
        (status, scheduled["status"].as_str()),
        (StatusCode::CREATED, Some("scheduled"))
    );
    let sale_path = format!("/api/v1/sales/{}", scheduled["id"].as_str().unwrap());
    let (status, started) = app
        .patch(&sale_path, Some(&seller.token), json!({"status": "live"}))
        .await;
    assert_eq!(
        (status, started["status"].as_str()),
        (StatusCode::OK, Some("live")),
        "{started}"
    );
    assert_error(
        app.patch(&sale_path, Some(&seller.token), json!({"status": "live"}))
            .await,
        StatusCode::CONFLICT,
        "invalid_transition",
    );
    assert_error(
        app.patch(
            &sale_path,
            Some(&seller.token),
            json!({"status": "sold_out"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    let (status, cancelled) = app
        .patch(
            &sale_path,
            Some(&seller.token),
            json!({"status": "cancelled"}),
        )
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (_, p) = app
        .get(
            &format!("/api/v1/products/{}", product["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        p["variants"][0]["stock_on_hand"], 5,
        "the cancelled sale gave its units back"
    );
}

/// The storm, over HTTP: many buyers tap at once on a small quantity.
async fn storm(app: &TestApp) {
    let (_, room, sale) = live_sale(app, 100, 40, 1).await;
    let mut buyers = Vec::new();
    for i in 0..150 {
        buyers.push(app.sign_up(&format!("buyer{i}@example.com")).await);
    }
    let taps: Vec<_> = buyers
        .iter()
        .map(|b| {
            let (client, url, token) = (
                app.client.clone(),
                app.url(&format!(
                    "/api/v1/rooms/{}/sales/{}/orders",
                    room["id"].as_str().unwrap(),
                    sale["id"].as_str().unwrap()
                )),
                b.token.clone(),
            );
            tokio::spawn(async move {
                let res = client
                    .post(url)
                    .bearer_auth(token)
                    .header("idempotency-key", "storm")
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                res.status()
            })
        })
        .collect();
    let (mut created, mut sold_out) = (0, 0);
    for t in taps {
        match t.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => sold_out += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((created, sold_out), (40, 110));
    let (_, now) = app
        .get(
            &format!("/api/v1/sales/{}", sale["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        (now["status"].as_str(), now["available"].as_i64()),
        (Some("sold_out"), Some(0))
    );
}

#[tokio::test]
async fn a_storm_over_http_sells_exactly_the_quantity_on_sqlite() {
    storm(&TestApp::spawn().await).await;
}

#[tokio::test]
async fn a_storm_over_http_sells_exactly_the_quantity_on_postgres() {
    storm(&TestApp::spawn_postgres().await).await;
}

/// A storm's stock changes reach the room as a few coalesced `sale.stock`
/// events ending on the true count, with one `sale.sold_out`.
#[tokio::test]
async fn the_room_hears_the_sale_coalesced() {
    let app = TestApp::spawn().await;
    let seller = app.seller("anns").await;
    let product = app.product(&seller, "anns", "HOT", 100).await;
    let (_, room) = app
        .post(
            "/api/v1/shops/anns/rooms",
            Some(&seller.token),
            json!({"title": "Live"}),
        )
        .await;
    let room = room["room"].clone();
    let room_id = domain::ids::RoomId::from_string(room["id"].as_str().unwrap());
    let mut events = app.listen(&room_id).await;
    let (_, sale) = app
        .post(
            &format!("/api/v1/rooms/{}/sales", room["id"].as_str().unwrap()),
            Some(&seller.token),
            json!({"variant_id": product["variants"][0]["id"], "price": {"amount": 999, "currency": "EUR"},
                   "quantity": 40, "per_buyer_limit": 1, "duration_seconds": 600}),
        )
        .await;
    let mut buyers = Vec::new();
    for i in 0..60 {
        buyers.push(app.sign_up(&format!("b{i}@example.com")).await);
    }
    let taps: Vec<_> = buyers
        .iter()
        .map(|b| {
            let req = app
                .client
                .post(app.url(&format!(
                    "/api/v1/rooms/{}/sales/{}/orders",
                    room["id"].as_str().unwrap(),
                    sale["id"].as_str().unwrap()
                )))
                .bearer_auth(&b.token)
                .header("idempotency-key", "tap")
                .json(&json!({}));
            tokio::spawn(async move { req.send().await.unwrap().status() })
        })
        .collect();
    for t in taps {
        t.await.unwrap();
    }
    let mut seen = Vec::new();
    let (mut final_stock, mut sold_out) = (false, false);
    while !(final_stock && sold_out) {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
            .await
            .expect("the final stock and the sell-out arrive");
        final_stock |= event["type"] == "sale.stock" && event["data"]["available"] == 0;
        sold_out |= event["type"] == "sale.sold_out";
        seen.push((std::time::Instant::now(), event));
    }
    assert_eq!(seen[0].1["type"], "sale.started");
    let stock: Vec<_> = seen
        .iter()
        .filter(|(_, e)| e["type"] == "sale.stock")
        .collect();
    let counts: Vec<i64> = stock
        .iter()
        .map(|(_, e)| e["data"]["available"].as_i64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "stock only falls: {counts:?}"
    );
    assert_eq!(counts.last(), Some(&0));
    assert_eq!(
        seen.iter()
            .filter(|(_, e)| e["type"] == "sale.sold_out")
            .count(),
        1
    );
    // Coalesced: no more than one per tick over the time the events spanned.
    let span_ms = stock
        .last()
        .unwrap()
        .0
        .duration_since(stock[0].0)
        .as_millis() as i64;
    let allowed = span_ms / api::SALE_EVENT_TICK.as_millis() as i64 + 2;
    assert!(
        (stock.len() as i64) <= allowed,
        "{} stock events over {span_ms} ms",
        stock.len()
    );
}

/// Many taps with one key at once: one order, and every answer is that order
/// (replayed) or "in use"; never a second order.
#[tokio::test]
async fn concurrent_taps_with_one_key_make_one_order() {
    let app = TestApp::spawn().await;
    let (_, room, sale) = live_sale(&app, 10, 5, 5).await;
    let ann = app.sign_up("ann@example.com").await;
    let url = app.url(&format!(
        "/api/v1/rooms/{}/sales/{}/orders",
        room["id"].as_str().unwrap(),
        sale["id"].as_str().unwrap()
    ));
    let taps: Vec<_> = (0..12)
        .map(|_| {
            let req = app
                .client
                .post(&url)
                .bearer_auth(&ann.token)
                .header("idempotency-key", "double-tap")
                .json(&json!({}));
            tokio::spawn(async move {
                let res = req.send().await.unwrap();
                (res.status(), res.text().await.unwrap())
            })
        })
        .collect();
    let mut orders = Vec::new();
    for t in taps {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::CREATED => orders.push(body),
            StatusCode::CONFLICT => assert!(body.contains("idempotency_key_in_use"), "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!orders.is_empty());
    assert!(
        orders.iter().all(|o| o == &orders[0]),
        "every success is the same order, byte for byte"
    );
    let (_, mine) = app.get("/api/v1/orders", Some(&ann.token)).await;
    assert_eq!(
        mine["items"].as_array().unwrap().len(),
        1,
        "never a second order"
    );
}
