use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error};

#[tokio::test]
async fn shops_are_public_and_only_their_owner_changes_them() {
    let app = TestApp::spawn().await;
    let ann = app.seller("anns").await;
    let bob = app.seller("bobs").await;
    let (status, shop) = app.get("/api/v1/shops/anns", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shop["currency"], "EUR");
    assert_eq!(shop["owner_id"], ann.id.as_str());
    let by_id = app
        .get(
            &format!("/api/v1/shops/{}", shop["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(by_id.1["handle"], "anns");

    let (status, me) = app.get("/api/v1/me", Some(&ann.token)).await;
    assert_eq!(
        (status, me["user"]["role"].as_str()),
        (StatusCode::OK, Some("seller"))
    );

    assert_error(
        app.patch(
            "/api/v1/shops/anns",
            Some(&bob.token),
            json!({"name": "Mine now"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        app.patch("/api/v1/shops/anns", None, json!({"name": "x"}))
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    let (status, updated) = app
        .patch(
            "/api/v1/shops/anns",
            Some(&ann.token),
            json!({"name": "Ann & Co", "description": "Hand-made."}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Ann & Co");
    assert_error(
        app.patch(
            "/api/v1/shops/anns",
            Some(&ann.token),
            json!({"handle": "bobs"}),
        )
        .await,
        StatusCode::CONFLICT,
        "handle_taken",
    );
    assert_error(
        app.post(
            "/api/v1/shops",
            Some(&bob.token),
            json!({"handle": "anns", "name": "x", "currency": "EUR"}),
        )
        .await,
        StatusCode::CONFLICT,
        "handle_taken",
    );
    assert_error(
        app.post(
            "/api/v1/shops",
            Some(&bob.token),
            json!({"handle": "bobs-2", "name": "x", "currency": "ZZZ"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        app.get("/api/v1/shops/nobody", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn products_with_variants_and_their_visibility() {
    let app = TestApp::spawn().await;
    let ann = app.seller("anns").await;
    let bob = app.seller("bobs").await;
    let (status, draft) = app
        .post(
            "/api/v1/shops/anns/products",
            Some(&ann.token),
            json!({
                "title": "Tee", "description": "Soft.",
                "variants": [
                    {"sku": "TEE-S", "options": {"size": "S", "colour": "red"}, "price": {"amount": 1999, "currency": "EUR"}, "stock": 5},
                    {"sku": "TEE-M", "options": {"size": "M"}, "price": {"amount": 2099, "currency": "EUR"}}
                ]
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{draft}");
    assert_eq!(draft["status"], "draft");
    assert_eq!(
        draft["variants"][0]["price"],
        json!({"amount": 1999, "currency": "EUR"})
    );
    assert_eq!(draft["variants"][0]["options"]["colour"], "red");
    assert_eq!(draft["variants"][1]["stock_on_hand"], 0);
    let path = format!("/api/v1/products/{}", draft["id"].as_str().unwrap());

    // A draft is the owner's alone.
    assert_error(
        app.get(&path, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        app.get(&path, Some(&bob.token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        app.patch(&path, Some(&bob.token), json!({"title": "x"}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(app.get(&path, Some(&ann.token)).await.0, StatusCode::OK);
    let (_, public) = app.get("/api/v1/shops/anns/products", None).await;
    assert_eq!(public["items"], json!([]));
    let (_, own) = app
        .get("/api/v1/shops/anns/products?status=draft", Some(&ann.token))
        .await;
    assert_eq!(own["items"].as_array().unwrap().len(), 1);
    let (_, peek) = app
        .get("/api/v1/shops/anns/products?status=draft", Some(&bob.token))
        .await;
    assert_eq!(peek["items"], json!([]));

    let (status, active) = app
        .patch(
            &path,
            Some(&ann.token),
            json!({"status": "active", "title": "Organic Tee"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{active}");
    assert_eq!(active["title"], "Organic Tee");
    assert_eq!(app.get(&path, None).await.1["title"], "Organic Tee");
    // Now public, someone else's edit is forbidden rather than hidden.
    assert_error(
        app.patch(&path, Some(&bob.token), json!({"title": "x"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    let (status, added) = app
        .post(
            &format!("{path}/variants"),
            Some(&ann.token),
            json!({"sku": "TEE-L", "price": {"amount": 2199, "currency": "EUR"}, "stock": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_error(
        app.post(
            &format!("{path}/variants"),
            Some(&ann.token),
            json!({"sku": "TEE-L", "price": {"amount": 1, "currency": "EUR"}}),
        )
        .await,
        StatusCode::CONFLICT,
        "sku_taken",
    );
    let variant = format!("/api/v1/variants/{}", added["id"].as_str().unwrap());
    let (status, repriced) = app
        .patch(
            &variant,
            Some(&ann.token),
            json!({"price": {"amount": 2500, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(
        (status, &repriced["price"]["amount"]),
        (StatusCode::OK, &json!(2500))
    );
    assert_error(
        app.patch(
            &variant,
            Some(&ann.token),
            json!({"price": {"amount": 2500, "currency": "USD"}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "currency_mismatch",
    );
    assert_error(
        app.patch(&variant, Some(&bob.token), json!({"sku": "MINE"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_eq!(
        app.get(&path, None).await.1["variants"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn product_input_is_checked() {
    let app = TestApp::spawn().await;
    let ann = app.seller("anns").await;
    let create = |body: Value| {
        let app = &app;
        let token = ann.token.clone();
        async move {
            app.post("/api/v1/shops/anns/products", Some(&token), body)
                .await
        }
    };
    let variant = |price: Value| json!({"title": "T", "variants": [{"sku": "A", "price": price}]});
    assert_error(
        create(variant(json!({"amount": -1, "currency": "EUR"}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        create(variant(json!({"amount": 100, "currency": "USD"}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "currency_mismatch",
    );
    assert_error(
        create(variant(json!({"amount": 100, "currency": "EURO"}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        create(variant(json!({"amount": 1.5, "currency": "EUR"}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    let overflow = app
        .client
        .post(app.url("/api/v1/shops/anns/products"))
        .bearer_auth(&ann.token)
        .header("content-type", "application/json")
        .body(r#"{"title": "T", "variants": [{"sku": "A", "price": {"amount": 99999999999999999999, "currency": "EUR"}}]}"#)
        .send()
        .await
        .unwrap();
    assert_error(
        (overflow.status(), overflow.json().await.unwrap()),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        create(variant(
            json!({"amount": 10_000_000_000_001i64, "currency": "EUR"}),
        ))
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        create(json!({"title": "T", "variants": []})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(create(json!({"title": "", "variants": [{"sku": "A", "price": {"amount": 1, "currency": "EUR"}}]})).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert_error(
        create(json!({"title": "T", "variants": [{"sku": "A", "price": {"amount": 1, "currency": "EUR"}, "stock": -3}]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        create(json!({"title": "T", "variants": [{"sku": "A", "price": {"amount": 1, "currency": "EUR"}}], "images": ["0000"]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_image",
    );
    assert_error(
        create(json!({"title": "T", "variants": [{"sku": "A b/c", "price": {"amount": 1, "currency": "EUR"}}]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    // Nothing of the failed attempts was kept.
    let (_, all) = app
        .get("/api/v1/shops/anns/products?status=draft", Some(&ann.token))
        .await;
    assert_eq!(all["items"], json!([]));
}

#[tokio::test]
async fn product_lists_page_with_cursors() {
    let app = TestApp::spawn().await;
    let ann = app.seller("anns").await;
    for i in 0..5 {
        app.product(&ann, "anns", &format!("SKU-{i}"), 1).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/shops/anns/products?limit=2&cursor={c}"),
            None => "/api/v1/shops/anns/products?limit=2".to_owned(),
        };
        let (status, page) = app.get(&path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for p in page["items"].as_array().unwrap() {
            seen.push(p["variants"][0]["sku"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["SKU-4", "SKU-3", "SKU-2", "SKU-1", "SKU-0"]);
}

#[tokio::test]
async fn stock_changes_through_adjustments_kept_in_a_ledger() {
    let app = TestApp::spawn().await;
    let ann = app.seller("anns").await;
    let bob = app.seller("bobs").await;
    let product = app.product(&ann, "anns", "TEE", 3).await;
    let path = format!(
        "/api/v1/variants/{}/stock-adjustments",
        product["variants"][0]["id"].as_str().unwrap()
    );

    let (status, line) = app
        .post(
            &path,
            Some(&ann.token),
            json!({"delta": 10, "reason": "received", "note": "pallet 7"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{line}");
    assert_eq!(line["on_hand_after"], 13);
    assert_eq!(line["actor_id"], ann.id.as_str());
    assert_error(
        app.post(
            &path,
            Some(&ann.token),
            json!({"delta": -14, "reason": "damaged"}),
        )
        .await,
        StatusCode::CONFLICT,
        "insufficient_stock",
    );
    assert_error(
        app.post(
            &path,
            Some(&ann.token),
            json!({"delta": 0, "reason": "correction"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        app.post(
            &path,
            Some(&ann.token),
            json!({"delta": 1, "reason": "initial"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert_error(
        app.post(
            &path,
            Some(&ann.token),
            json!({"delta": 1, "reason": "stolen"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    let (status, _) = app
        .post(
            &path,
            Some(&ann.token),
            json!({"delta": -13, "reason": "damaged", "note": "flood"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // "Why is this 0?": the ledger answers.
    let (status, ledger) = app.get(&path, Some(&ann.token)).await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<(i64, &str, i64)> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["delta"].as_i64().unwrap(),
                l["reason"].as_str().unwrap(),
                l["on_hand_after"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [(-13, "damaged", 0), (10, "received", 13), (3, "initial", 3)]
    );
    assert_eq!(
        app.get(
            &format!("/api/v1/products/{}", product["id"].as_str().unwrap()),
            None
        )
        .await
        .1["variants"][0]["stock_on_hand"],
        0
    );

    // Another seller neither reads nor changes this stock.
    assert_error(
        app.get(&path, Some(&bob.token)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        app.post(
            &path,
            Some(&bob.token),
            json!({"delta": 5, "reason": "received"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        app.get(&path, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    assert_error(
        app.get(
            "/api/v1/variants/var_nope/stock-adjustments",
            Some(&ann.token),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

/// The whole seller path on PostgreSQL, to show the API runs on it as on SQLite.
#[tokio::test]
async fn seller_flow_on_postgres() {
    let app = TestApp::spawn_postgres().await;
    let ann = app.seller("anns").await;
    let product = app.product(&ann, "anns", "PG-1", 4).await;
    let variant = product["variants"][0]["id"].as_str().unwrap();
    let (status, line) = app
        .post(
            &format!("/api/v1/variants/{variant}/stock-adjustments"),
            Some(&ann.token),
            json!({"delta": -4, "reason": "correction"}),
        )
        .await;
    assert_eq!(
        (status, &line["on_hand_after"]),
        (StatusCode::CREATED, &json!(0))
    );
    let (status, room) = app
        .post(
            "/api/v1/shops/anns/rooms",
            Some(&ann.token),
            json!({"title": "Live on PG"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    let (_, ready) = app.get("/readyz", None).await;
    assert_eq!(ready["store"], "postgres");
    let (_, listed) = app.get("/api/v1/rooms?status=scheduled", None).await;
    assert_eq!(listed["items"][0]["title"], "Live on PG");
}
