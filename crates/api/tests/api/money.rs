//! Money under races, timeouts and faults: the payment provider (the node's
//! own sandbox, over HTTP) is told to answer late, fail after charging, never
//! answer, send its webhook first or twice. Each test checks the provider's
//! own ledger: what it charged and refunded is what the store recorded.

use std::time::Duration;

use reqwest::StatusCode;
use sandbox::wire::{Fault, Target};
use serde_json::{Value, json};

use crate::helpers::{Account, TestApp, assert_error};
use crate::selling::{buy, live_sale};

const CARD: &str = "4242424242424242";

fn card() -> Value {
    json!({"card": {"number": CARD, "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
}

/// A seller, a buyer and the buyer's reserved order of 2 (19.98 EUR).
async fn reserved(app: &TestApp) -> Reserved {
    let (seller, room, sale) = live_sale(app, 10, 5, 5).await;
    let (buyer, order) = another_buyer(app, &room, &sale, "ann@example.com", 2).await;
    Reserved {
        seller,
        buyer,
        order,
        room,
        sale,
    }
}

struct Reserved {
    seller: Account,
    buyer: Account,
    order: Value,
    room: Value,
    sale: Value,
}

/// Another buyer's reserved order of `quantity` in the same sale.
async fn another_buyer(
    app: &TestApp,
    room: &Value,
    sale: &Value,
    email: &str,
    quantity: i64,
) -> (Account, Value) {
    let buyer = app.sign_up(email).await;
    let (status, order, _) = buy(
        app,
        &buyer.token,
        room,
        sale,
        Some("b1"),
        json!({"quantity": quantity}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    (buyer, order)
}

async fn post_keyed(
    app: &TestApp,
    path: &str,
    token: &str,
    key: &str,
    body: Value,
) -> (StatusCode, Value) {
    let res = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap_or(Value::Null))
}

async fn pay(app: &TestApp, token: &str, order: &Value, key: &str) -> (StatusCode, Value) {
    let path = format!("/api/v1/orders/{}/payments", order["id"].as_str().unwrap());
    post_keyed(app, &path, token, key, card()).await
}

async fn refund(
    app: &TestApp,
    token: &str,
    order: &Value,
    key: &str,
    cents: i64,
) -> (StatusCode, Value) {
    let path = format!("/api/v1/orders/{}/refunds", order["id"].as_str().unwrap());
    let body = json!({"amount": {"amount": cents, "currency": "EUR"}, "reason": "damaged"});
    post_keyed(app, &path, token, key, body).await
}

async fn order_of(app: &TestApp, token: &str, order: &Value) -> Value {
    let path = format!("/api/v1/orders/{}", order["id"].as_str().unwrap());
    app.get(&path, Some(token)).await.1
}

fn order_id(order: &Value) -> domain::ids::OrderId {
    domain::ids::OrderId::from_string(order["id"].as_str().unwrap().to_owned())
}

/// Waits until the order has a payment attempt written (its charge is on
/// its way to the provider).
async fn until_attempt_written(app: &TestApp, order: &Value) {
    let id = order_id(order);
    for _ in 0..400 {
        let open = app
            .db
            .store
            .unsettled_payments(domain::Timestamp::now().plus_millis(60_000), 100)
            .await
            .unwrap();
        if open.iter().any(|p| p.order_id == id) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no attempt was written");
}

/// Waits until every reversal due has been refunded by the node's upkeep.
pub async fn until_reversals_are_refunded(app: &TestApp) {
    for _ in 0..400 {
        if app.db.store.reversals_pending().await.unwrap() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("a reversal was never refunded");
}

/// A payment provider of the test's own whose webhooks reach no node (as
/// when its endpoint is misconfigured): only the calls' answers, retries and
/// the upkeep can settle anything. It stops when the guard is dropped.
async fn silent_provider() -> (String, tokio_util::sync::DropGuard) {
    let stop = tokio_util::sync::CancellationToken::new();
    let sandbox =
        sandbox::Sandbox::open(sandbox::Settings::new(b"whsec".to_vec()), stop.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sandbox::serve(listener, sandbox));
    (url, stop.drop_guard())
}

fn paid_events(order: &Value) -> usize {
    order["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["status"] == "paid")
        .count()
}

#[tokio::test]
async fn a_charge_that_lands_after_the_reservation_expired_is_reversed() {
    let app = TestApp::spawn().await;
    let Reserved { buyer, order, .. } = reserved(&app).await;
    app.fault(Target::PaymentIntents, Fault::Delay { after_ms: 1_500 })
        .await;
    let paying = {
        let (app_token, order) = (buyer.token.clone(), order.clone());
        let app = &app;
        async move { pay(app, &app_token, &order, "p1").await }
    };
    let expire = async {
        until_attempt_written(&app, &order).await;
        // The hold a charge in progress gets is over.
        let later = domain::Timestamp::now().plus_millis(store::PAYMENT_HOLD_MS + 3_600_000);
        app.db.store.expire_reservations(later, 10).await.unwrap()
    };
    let ((status, body), expired) = tokio::join!(paying, expire);
    assert_eq!(
        expired.len(),
        1,
        "the reservation expired while the card was charged"
    );
    assert_error((status, body), StatusCode::CONFLICT, "payment_reversed");
    let seen = order_of(&app, &buyer.token, &order).await;
    assert_eq!(seen["status"], "expired");
    let last = seen["history"].as_array().unwrap().last().unwrap();
    assert!(
        last["reason"].as_str().unwrap().contains("refunded"),
        "{last}"
    );
    until_reversals_are_refunded(&app).await;
    let (charges, refunds) = app.provider_ledger().await;
    assert_eq!((charges.len(), refunds.len()), (1, 1));
    assert_eq!(refunds[0]["amount"], 1998, "refunded in full");
    let (status, replay) = pay(&app, &buyer.token, &order, "p1").await;
    assert_error((status, replay), StatusCode::CONFLICT, "payment_reversed");
}

#[tokio::test]
async fn two_payments_with_two_keys_charge_once() {
    let app = TestApp::spawn().await;
    let Reserved { buyer, order, .. } = reserved(&app).await;
    app.fault(Target::PaymentIntents, Fault::Delay { after_ms: 1_000 })
        .await;
    let first = pay(&app, &buyer.token, &order, "k1");
    let second = async {
        until_attempt_written(&app, &order).await;
        pay(&app, &buyer.token, &order, "k2").await
    };
    let ((s1, b1), (s2, b2)) = tokio::join!(first, second);
    assert_eq!(s1, StatusCode::CREATED, "{b1}");
    assert_error((s2, b2), StatusCode::CONFLICT, "payment_in_progress");
    let (status, late) = pay(&app, &buyer.token, &order, "k3").await;
    assert_error((status, late), StatusCode::CONFLICT, "invalid_transition");
    let (charges, _) = app.provider_ledger().await;
    assert_eq!(charges.len(), 1, "charged once");
    assert_eq!(paid_events(&order_of(&app, &buyer.token, &order).await), 1);
}

#[tokio::test]
async fn a_retry_after_the_answer_was_lost_does_not_charge_again() {
    let (url, _silent) = silent_provider().await;
    let app = TestApp::spawn_with(|c| {
        c.payments_url = Some(url);
        c.payments_timeout = Duration::from_millis(500);
    })
    .await;
    let Reserved {
        buyer,
        order,
        room,
        sale,
        ..
    } = reserved(&app).await;
    // Charged, then the answer is lost.
    app.fault(Target::PaymentIntents, Fault::FailAfter).await;
    let (status, body) = pay(&app, &buyer.token, &order, "t1").await;
    assert_error(
        (status, body),
        StatusCode::BAD_GATEWAY,
        "provider_unavailable",
    );
    let (status, paid) = pay(&app, &buyer.token, &order, "t1").await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    assert_eq!(paid["order"]["status"], "paid");
    // Charged, then no answer before the node gives up waiting.
    let (other, second) = another_buyer(&app, &room, &sale, "bob@example.com", 1).await;
    app.fault(Target::PaymentIntents, Fault::Timeout).await;
    let (status, body) = pay(&app, &other.token, &second, "t2").await;
    assert_error(
        (status, body),
        StatusCode::BAD_GATEWAY,
        "provider_unavailable",
    );
    let (status, paid) = pay(&app, &other.token, &second, "t2").await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    let (charges, _) = app.provider_ledger().await;
    assert_eq!(
        charges.len(),
        2,
        "one charge per order, however often asked"
    );
    assert_eq!(paid_events(&order_of(&app, &buyer.token, &order).await), 1);
}

#[tokio::test]
async fn an_attempt_whose_answer_never_came_is_settled_from_the_providers_record() {
    let (url, _silent) = silent_provider().await;
    let app = TestApp::spawn_with(|c| {
        c.payments_url = Some(url);
        c.payments_timeout = Duration::from_millis(300);
        c.upkeep.settle_after = Duration::from_secs(1);
    })
    .await;
    let Reserved { buyer, order, .. } = reserved(&app).await;
    app.fault(Target::PaymentIntents, Fault::FailAfter).await;
    let (status, body) = pay(&app, &buyer.token, &order, "u1").await;
    assert_error(
        (status, body),
        StatusCode::BAD_GATEWAY,
        "provider_unavailable",
    );
    // No retry comes: the upkeep finds the charge by the attempt and pays.
    let mut seen = Value::Null;
    for _ in 0..400 {
        seen = order_of(&app, &buyer.token, &order).await;
        if seen["status"] == "paid" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seen["status"], "paid", "{seen}");
    let (charges, _) = app.provider_ledger().await;
    assert_eq!(charges.len(), 1);
}

#[tokio::test]
async fn two_refunds_with_two_keys_never_exceed_the_payment() {
    let app = TestApp::spawn().await;
    let Reserved {
        seller,
        buyer,
        order,
        ..
    } = reserved(&app).await;
    let (status, _) = pay(&app, &buyer.token, &order, "p").await;
    assert_eq!(status, StatusCode::CREATED);
    app.fault(Target::Refunds, Fault::Delay { after_ms: 800 })
        .await;
    let (a, b) = tokio::join!(
        refund(&app, &seller.token, &order, "r1", 1998),
        refund(&app, &seller.token, &order, "r2", 1998)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::CREATED, StatusCode::UNPROCESSABLE_ENTITY],
        "{a:?} {b:?}"
    );
    let refused = if a.0 == StatusCode::CREATED { b } else { a };
    assert_error(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "refund_too_large",
    );
    let (_, refunds) = app.provider_ledger().await;
    assert_eq!(refunds.len(), 1, "one refund went out");
    assert_eq!(
        order_of(&app, &buyer.token, &order).await["status"],
        "refunded"
    );
}

#[tokio::test]
async fn a_refund_whose_answer_was_lost_is_made_once() {
    let app = TestApp::spawn_with(|c| c.upkeep.settle_after = Duration::from_secs(1)).await;
    let Reserved {
        seller,
        buyer,
        order,
        ..
    } = reserved(&app).await;
    pay(&app, &buyer.token, &order, "p").await;
    app.fault(Target::Refunds, Fault::FailAfter).await;
    let (status, body) = refund(&app, &seller.token, &order, "r1", 500).await;
    assert_error(
        (status, body),
        StatusCode::BAD_GATEWAY,
        "provider_unavailable",
    );
    let (status, again) = refund(&app, &seller.token, &order, "r1", 500).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["refund"]["status"], "succeeded");
    // And one that nobody retries is completed by the upkeep.
    app.fault(Target::Refunds, Fault::FailAfter).await;
    let (status, _) = refund(&app, &seller.token, &order, "r2", 300).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let mut seen = Value::Null;
    for _ in 0..400 {
        seen = order_of(&app, &buyer.token, &order).await;
        if seen["refunded"]["amount"] == 800 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seen["refunded"]["amount"], 800, "{seen}");
    let (_, refunds) = app.provider_ledger().await;
    assert_eq!(refunds.len(), 2, "each refund made once");
}

#[tokio::test]
async fn a_webhook_that_comes_before_the_charge_is_answered_pays_once() {
    let app = TestApp::spawn().await;
    let Reserved { buyer, order, .. } = reserved(&app).await;
    app.fault(Target::PaymentIntents, Fault::WebhookFirst).await;
    let (status, paid) = pay(&app, &buyer.token, &order, "w1").await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    let seen = order_of(&app, &buyer.token, &order).await;
    assert_eq!(
        (seen["status"].as_str(), paid_events(&seen)),
        (Some("paid"), 1)
    );
    let (charges, _) = app.provider_ledger().await;
    assert_eq!(charges.len(), 1);
}

#[tokio::test]
async fn a_webhook_delivered_twice_counts_once() {
    let app = TestApp::spawn().await;
    let Reserved { buyer, order, .. } = reserved(&app).await;
    app.fault(Target::PaymentIntents, Fault::WebhookTwice).await;
    let (status, _) = pay(&app, &buyer.token, &order, "a1").await;
    assert_eq!(status, StatusCode::CREATED);
    let mut seen = Value::Null;
    for _ in 0..400 {
        let stats: Value = app
            .client
            .get(format!("{}/v1/test/stats", app.payments_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen = order_of(&app, &buyer.token, &order).await;
        if stats["webhooks_delivered"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        (seen["status"].as_str(), paid_events(&seen)),
        (Some("paid"), 1),
        "{seen}"
    );
}

#[tokio::test]
async fn a_webhook_for_a_payment_not_written_yet_is_retried() {
    let app = TestApp::spawn_with(|c| c.payment_webhook_secret = Some("whsec_early".into())).await;
    let now = domain::Timestamp::now().as_millis();
    let event = json!({"id": "evt_early", "type": "payment_intent.succeeded", "created": now,
        "data": {"object": {"id": "pi_early", "amount": 100, "currency": "eur",
            "status": "succeeded", "last_payment_error": null, "card_last4": "4242",
            "amount_refunded": 0, "created": now,
            "metadata": {"payment": "pay_not_yet", "order": "ord_x"}}}})
    .to_string();
    let header = sandbox::signature::sign(b"whsec_early", now / 1000, event.as_bytes());
    let res = app
        .client
        .post(app.url("/api/v1/payments/webhooks/test"))
        .header("content-type", "application/json")
        .header("hawker-signature", header)
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the provider delivers it again"
    );
    assert!(
        !app.db
            .store
            .webhook_seen("test", "evt_early")
            .await
            .unwrap(),
        "not remembered: its next delivery is applied"
    );
}

#[tokio::test]
async fn reconciliation_records_a_charge_the_store_had_given_up_on() {
    // A provider whose webhooks never reach the node.
    let silent = tokio_util::sync::CancellationToken::new();
    let sandbox =
        sandbox::Sandbox::open(sandbox::Settings::new(b"whsec".to_vec()), silent.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sandbox::serve(listener, sandbox));
    let app = TestApp::spawn_with(|c| c.payments_url = Some(url)).await;
    let Reserved {
        buyer,
        order,
        room,
        sale,
        ..
    } = reserved(&app).await;
    let (status, _) = pay(&app, &buyer.token, &order, "p").await;
    assert_eq!(status, StatusCode::CREATED);
    let (other, second) = another_buyer(&app, &room, &sale, "bob@example.com", 1).await;
    // A charge made for an attempt the store closed as abandoned (the
    // provider was slower than the upkeep's patience).
    app.fault(Target::PaymentIntents, Fault::FailAfter).await;
    let (status, _) = pay(&app, &other.token, &second, "q").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let attempt = app
        .db
        .store
        .payment_by_request(&domain::ids::UserId::from_string(other.id.clone()), "q")
        .await
        .unwrap()
        .unwrap();
    assert!(app.db.store.abandon_payment(&attempt.id).await.unwrap());
    let (store, provider) = (app.state.store(), app.state.payment_provider());
    let from = domain::Timestamp::now().plus_millis(-3_600_000);
    let to = domain::Timestamp::now().plus_millis(1_000);
    let report = api::payments::upkeep::reconcile(store, provider, from, to)
        .await
        .unwrap();
    assert_eq!(report.charges, 2);
    assert_eq!(report.fixed(), 1, "{report:?}");
    assert!(report.mismatches.is_empty(), "{report:?}");
    assert_eq!(
        order_of(&app, &other.token, &second).await["status"],
        "paid",
        "the order was still reserved: the charge found pays it"
    );
    let again = api::payments::upkeep::reconcile(store, provider, from, to)
        .await
        .unwrap();
    assert_eq!((again.fixed(), again.mismatches.len()), (0, 0), "{again:?}");
}
