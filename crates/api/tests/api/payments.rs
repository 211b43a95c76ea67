//! Paying, shipping, refunding and cancelling orders, and signed webhooks.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Account, TestApp, assert_error};
use crate::selling::{buy, live_sale};

const SECRET: &str = "whsec_test_secret";

fn card(number: &str) -> Value {
    json!({"card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
}

async fn reserve(app: &TestApp, quantity: i64) -> (Account, Account, Value, Value) {
    let (seller, room, sale) = live_sale(app, 10, 5, 5).await;
    let buyer = app.sign_up("ann@example.com").await;
    let (status, order, _) = buy(
        app,
        &buyer.token,
        &room,
        &sale,
        Some("b1"),
        json!({"quantity": quantity}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    (seller, buyer, sale, order)
}

async fn pay(
    app: &TestApp,
    token: &str,
    order: &Value,
    key: &str,
    body: Value,
) -> (StatusCode, Value) {
    let res = app
        .client
        .post(app.url(&format!(
            "/api/v1/orders/{}/payments",
            order["id"].as_str().unwrap()
        )))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap())
}

async fn webhook(app: &TestApp, signature: Option<String>, body: &str) -> (StatusCode, Value) {
    let mut req = app
        .client
        .post(app.url("/api/v1/payments/webhooks/test"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(s) = signature {
        req = req.header("hawker-signature", s);
    }
    let res = req.send().await.unwrap();
    (res.status(), res.json().await.unwrap())
}

fn signed(body: &str, age_s: i64) -> String {
    let t = domain::Timestamp::now().as_millis() / 1000 - age_s;
    sandbox::signature::sign(SECRET.as_bytes(), t, body.as_bytes())
}

/// A provider's event about `payment` (as the API showed it), now `status`.
fn event(id: &str, payment: &Value, status: &str) -> String {
    let now = domain::Timestamp::now().as_millis();
    let kind = if status == "succeeded" {
        "payment_intent.succeeded"
    } else {
        "payment_intent.payment_failed"
    };
    json!({"id": id, "type": kind, "created": now, "data": {"object": {
        "id": payment["provider_payment_id"], "amount": payment["amount"]["amount"],
        "currency": "eur", "status": status, "last_payment_error": null,
        "card_last4": "3220", "amount_refunded": 0, "created": now,
        "metadata": {"payment": payment["id"], "order": payment["order_id"]},
    }}})
    .to_string()
}

/// Settles a processing charge at the provider now, which sends its webhook.
async fn settle_at_provider(app: &TestApp, payment: &Value) {
    let intent = payment["provider_payment_id"].as_str().unwrap();
    let res = app
        .client
        .post(format!(
            "{}/v1/test/payment_intents/{intent}/settle",
            app.payments_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_card_pays_once_and_declines_leave_the_reservation() {
    let app = TestApp::spawn().await;
    let (_, buyer, _, order) = reserve(&app, 2).await;
    let (s, e) = pay(&app, &buyer.token, &order, "p1", card("4000000000000002")).await;
    assert_error((s, e), StatusCode::PAYMENT_REQUIRED, "card_declined");
    let (s, e) = pay(&app, &buyer.token, &order, "p2", card("4000000000009995")).await;
    assert_error((s, e), StatusCode::PAYMENT_REQUIRED, "insufficient_funds");
    let (s, e) = pay(&app, &buyer.token, &order, "p3", card("4242424242424241")).await;
    assert_error((s, e), StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");

    let (status, paid) = pay(&app, &buyer.token, &order, "p4", card("4242424242424242")).await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    assert_eq!(paid["payment"]["status"], "succeeded");
    assert_eq!(paid["order"]["status"], "paid");
    assert_eq!(
        paid["order"]["paid"],
        json!({"amount": 1998, "currency": "EUR"})
    );
    assert_eq!(paid["order"]["expires_at"], Value::Null);
    let reasons: Vec<&str> = paid["order"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.last(), Some(&"paid by card ending 4242"));
    assert!(
        !paid.to_string().contains("4242424242424242"),
        "the card number is never echoed"
    );

    let (status, again) = pay(&app, &buyer.token, &order, "p4", card("4242424242424242")).await;
    assert_eq!(
        (status, &again),
        (StatusCode::CREATED, &paid),
        "a retry replays, it does not charge again"
    );
    let (s, e) = pay(&app, &buyer.token, &order, "p5", card("4242424242424242")).await;
    assert_error((s, e), StatusCode::CONFLICT, "invalid_transition");
    let stranger = app.sign_up("eve@example.com").await;
    let (s, e) = pay(
        &app,
        &stranger.token,
        &order,
        "p6",
        card("4242424242424242"),
    )
    .await;
    assert_error((s, e), StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn asynchronous_cards_settle_by_signed_webhook() {
    let app = TestApp::spawn_with(|c| c.payment_async_delay = Duration::from_millis(200)).await;
    let (_, buyer, _, order) = reserve(&app, 1).await;
    let (status, pending) = pay(&app, &buyer.token, &order, "a1", card("4000000000003220")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{pending}");
    assert_eq!(
        (
            pending["payment"]["status"].as_str(),
            pending["order"]["status"].as_str()
        ),
        (Some("processing"), Some("reserved"))
    );
    let (s, e) = pay(&app, &buyer.token, &order, "a2", card("4242424242424242")).await;
    assert_error((s, e), StatusCode::CONFLICT, "payment_in_progress");
    let path = format!("/api/v1/orders/{}", order["id"].as_str().unwrap());
    let mut status = String::new();
    for _ in 0..300 {
        status = app.get(&path, Some(&buyer.token)).await.1["status"]
            .as_str()
            .unwrap()
            .to_owned();
        if status == "paid" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status, "paid",
        "the provider's webhook arrived over HTTP and paid the order"
    );
}

#[tokio::test]
async fn webhooks_must_be_signed_fresh_and_count_once() {
    let app = TestApp::spawn_with(|c| {
        c.payment_webhook_secret = Some(SECRET.into());
        // The provider's own webhook would come much later: this test sends it.
        c.payment_async_delay = Duration::from_secs(3600);
    })
    .await;
    let (_, buyer, _, order) = reserve(&app, 1).await;
    let (_, pending) = pay(&app, &buyer.token, &order, "w1", card("4000000000003220")).await;
    let event = event("evt_1", &pending["payment"], "succeeded");

    let (s, e) = webhook(&app, None, &event).await;
    assert_error((s, e), StatusCode::BAD_REQUEST, "invalid_signature");
    let forged = format!(
        "t={},v1={}",
        domain::Timestamp::now().as_millis() / 1000,
        "00".repeat(32)
    );
    let (s, e) = webhook(&app, Some(forged), &event).await;
    assert_error((s, e), StatusCode::BAD_REQUEST, "invalid_signature");
    let (s, e) = webhook(&app, Some(signed(&event, 600)), &event).await;
    assert_error((s, e), StatusCode::BAD_REQUEST, "invalid_signature");
    let tampered = event.replace("evt_1", "evt_2");
    let (s, e) = webhook(&app, Some(signed(&event, 0)), &tampered).await;
    assert_error((s, e), StatusCode::BAD_REQUEST, "invalid_signature");
    let path = format!("/api/v1/orders/{}", order["id"].as_str().unwrap());
    assert_eq!(
        app.get(&path, Some(&buyer.token)).await.1["status"],
        "reserved",
        "nothing changed"
    );

    let (status, body) = webhook(&app, Some(signed(&event, 0)), &event).await;
    assert_eq!(
        (status, body["applied"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, body) = webhook(&app, Some(signed(&event, 0)), &event).await;
    assert_eq!(
        (status, body["applied"].as_bool()),
        (StatusCode::OK, Some(false)),
        "a replay changes nothing"
    );
    let other = crate::payments::event("evt_3", &pending["payment"], "succeeded");
    let (status, body) = webhook(&app, Some(signed(&other, 0)), &other).await;
    assert_eq!(
        (status, body["applied"].as_bool()),
        (StatusCode::OK, Some(false)),
        "another event with the same news changes nothing either"
    );
    let (_, paid) = app.get(&path, Some(&buyer.token)).await;
    assert_eq!(paid["status"], "paid");
    let payments = paid["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["status"] == "paid")
        .count();
    assert_eq!(payments, 1);
    assert_error(
        app.post("/api/v1/payments/webhooks/stripe", None, json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn sellers_ship_and_refund_buyers_cancel() {
    let app = TestApp::spawn().await;
    let (seller, buyer, sale, order) = reserve(&app, 2).await;
    let id = order["id"].as_str().unwrap();
    let ship = |token: String| {
        let app = &app;
        async move {
            app.post(
                &format!("/api/v1/orders/{id}/fulfillments"),
                Some(&token),
                json!({"carrier": "DHL", "tracking_number": "JD014600"}),
            )
            .await
        }
    };
    assert_error(
        ship(seller.token.clone()).await,
        StatusCode::CONFLICT,
        "invalid_transition",
    );
    pay(&app, &buyer.token, &order, "k", card("4242424242424242")).await;
    assert_error(
        ship(buyer.token.clone()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (status, shipped) = ship(seller.token.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{shipped}");
    assert_eq!(
        shipped["shipment"],
        json!({"carrier": "DHL", "tracking_number": "JD014600"})
    );

    let refund = |body: Value, key: &'static str| {
        let (app, token) = (&app, seller.token.clone());
        async move {
            let res = app
                .client
                .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
                .bearer_auth(token)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    let (status, part) = refund(
        json!({"amount": {"amount": 500, "currency": "EUR"}, "reason": "scratched"}),
        "r1",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{part}");
    assert_eq!(part["order"]["status"], "partially_refunded");
    assert_error(
        refund(
            json!({"amount": {"amount": 1499, "currency": "EUR"}, "reason": "too much"}),
            "r2",
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "refund_too_large",
    );
    let (_, before) = app.get("/api/v1/shops/anns/products", None).await;
    let shelf = before["items"][0]["variants"][0]["stock_on_hand"]
        .as_i64()
        .unwrap();
    let (status, full) = refund(json!({"amount": {"amount": 1498, "currency": "EUR"}, "reason": "returned", "restock": true}), "r3").await;
    assert_eq!(
        (status, full["order"]["status"].as_str()),
        (StatusCode::CREATED, Some("refunded")),
        "{full}"
    );
    let (_, after) = app.get("/api/v1/shops/anns/products", None).await;
    assert_eq!(
        after["items"][0]["variants"][0]["stock_on_hand"]
            .as_i64()
            .unwrap(),
        shelf + 2,
        "restocked"
    );
    let (_, seen) = app
        .get(&format!("/api/v1/orders/{id}"), Some(&buyer.token))
        .await;
    let refunds: Vec<i64> = seen["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["reason"] != "paid by card ending 4242")
        .filter_map(|h| h["amount"]["amount"].as_i64())
        .collect();
    assert_eq!(
        refunds,
        [500, 1498],
        "the buyer sees the refunds in the history"
    );

    // A second reservation, cancelled by its buyer: the units go back to the sale.
    let (_, room_sales) = app
        .get(
            &format!("/api/v1/sales/{}", sale["id"].as_str().unwrap()),
            None,
        )
        .await;
    let available = room_sales["available"].as_i64().unwrap();
    let room = json!({"id": sale["room_id"]});
    let (_, second, _) = buy(
        &app,
        &buyer.token,
        &room,
        &sale,
        Some("b2"),
        json!({"quantity": 1}),
    )
    .await;
    let cancel = format!("/api/v1/orders/{}/cancel", second["id"].as_str().unwrap());
    let stranger = app.sign_up("eve@example.com").await;
    assert_error(
        app.post(&cancel, Some(&stranger.token), json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (status, cancelled) = app.post(&cancel, Some(&buyer.token), json!({})).await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    assert_error(
        app.post(&cancel, Some(&seller.token), json!({})).await,
        StatusCode::CONFLICT,
        "invalid_transition",
    );
    let (_, now) = app
        .get(
            &format!("/api/v1/sales/{}", sale["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(now["available"].as_i64().unwrap(), available);
}

#[tokio::test]
async fn sellers_list_their_orders_with_filters() {
    let app = TestApp::spawn().await;
    let (seller, buyer, sale, order) = reserve(&app, 1).await;
    let room = json!({"id": sale["room_id"]});
    let (_, second, _) = buy(&app, &buyer.token, &room, &sale, Some("b2"), json!({})).await;
    pay(&app, &buyer.token, &order, "k", card("4242424242424242")).await;
    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, all) = app
        .get("/api/v1/shops/anns/orders", Some(&seller.token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ids(&all),
        [
            second["id"].as_str().unwrap(),
            order["id"].as_str().unwrap()
        ]
    );
    let (_, paid) = app
        .get("/api/v1/shops/anns/orders?status=paid", Some(&seller.token))
        .await;
    assert_eq!(ids(&paid), [order["id"].as_str().unwrap()]);
    let by_sale = format!(
        "/api/v1/shops/anns/orders?sale={}&room={}",
        sale["id"].as_str().unwrap(),
        sale["room_id"].as_str().unwrap()
    );
    assert_eq!(
        ids(&app.get(&by_sale, Some(&seller.token)).await.1).len(),
        2
    );
    let (_, none) = app
        .get(
            "/api/v1/shops/anns/orders?sale=sale_other",
            Some(&seller.token),
        )
        .await;
    assert!(ids(&none).is_empty());
    assert_error(
        app.get("/api/v1/shops/anns/orders", Some(&buyer.token))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        app.get("/api/v1/shops/anns/orders?status=lost", Some(&seller.token))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
}

#[tokio::test]
async fn an_expired_reservation_cannot_be_paid() {
    let app = TestApp::spawn_with(|c| {
        c.reservation_window = Duration::ZERO;
        c.flash_reservation_window = Duration::ZERO;
    })
    .await;
    let (_, buyer, _, order) = reserve(&app, 1).await;
    let (s, e) = pay(&app, &buyer.token, &order, "late", card("4242424242424242")).await;
    assert_error((s, e), StatusCode::CONFLICT, "order_expired");
}

#[tokio::test]
async fn a_payment_that_succeeds_after_its_order_expired_is_refunded() {
    let app = TestApp::spawn_with(|c| c.payment_async_delay = Duration::from_secs(3600)).await;
    let (_, buyer, sale, order) = reserve(&app, 1).await;
    let (_, pending) = pay(&app, &buyer.token, &order, "l1", card("4000000000003220")).await;
    // The provider takes longer than the reservation's hold.
    let past_hold = domain::Timestamp::now().plus_millis(store::PAYMENT_HOLD_MS + 3_600_000);
    let expired = app
        .db
        .store
        .expire_reservations(past_hold, 10)
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    settle_at_provider(&app, &pending["payment"]).await;

    let path = format!("/api/v1/orders/{}", order["id"].as_str().unwrap());
    let (_, seen) = app.get(&path, Some(&buyer.token)).await;
    assert_eq!(
        seen["status"], "expired",
        "the units went back; no order is paid"
    );
    let last = seen["history"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["reason"].as_str().unwrap().contains("refunded"),
        "{last}"
    );
    let (_, sale_now) = app
        .get(
            &format!("/api/v1/sales/{}", sale["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(sale_now["available"], 5, "{sale_now}");
    // The node's upkeep asks the provider for the refund and records it.
    crate::money::until_reversals_are_refunded(&app).await;
    let (_, refunds) = app.provider_ledger().await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["amount"], pending["payment"]["amount"]["amount"]);
}
