//! The money chaos run: two `hawker serve` nodes on one PostgreSQL database,
//! a `hawker payments-sandbox` injecting faults at random into its answers
//! (late, failed before or after the work, never answered, webhook first or
//! twice), buyers reserving, paying (some with asynchronous cards), cancelling
//! while their payment is in flight, a seller refunding (sometimes twice at
//! once), and one node SIGKILLed and restarted every few seconds. After the
//! storm the nodes settle what is open, `hawker admin reconcile` runs, and the
//! provider's ledger is checked against the store: every charge is on exactly
//! one paid order or reversed, every refund is recorded once, no order is
//! paid twice, refunds never exceed what was paid, and stock plus what the
//! orders hold is what the seller put up.
//!
//! Sized by `HAWKER_CHAOS_SECONDS` (20), `HAWKER_CHAOS_BUYERS` (12),
//! `HAWKER_CHAOS_RATE` (0.3) and `HAWKER_CHAOS_KILL_EVERY_MS` (3000);
//! `bench/chaos-money` runs it larger.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use domain::ids::{PaymentId, ShopId};
use domain::order::{OrderStatus, PaymentStatus, RefundStatus};
use serde_json::{Value, json};

mod common;
use common::{BIN, Proc, free_port, log_file, until_up};

const SECRET: &str = "whsec_chaos";
const STOCK: i64 = 100_000;

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Cluster {
    dir: tempfile::TempDir,
    db_url: String,
    sandbox_url: String,
    ports: [u16; 2],
}

impl Cluster {
    fn base(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[node])
    }

    fn node(&self, n: usize) -> Proc {
        let data = self.dir.path().join(format!("node{n}"));
        Proc(
            Command::new(BIN)
                .arg("serve")
                .args(["--http-addr", &format!("127.0.0.1:{}", self.ports[n])])
                .args(["--rtmp-addr", "127.0.0.1:0"])
                .arg("--data-dir")
                .arg(&data)
                .args(["--database-url", &self.db_url])
                .args(["--payments-url", &self.sandbox_url])
                .args(["--payment-webhook-secret", SECRET])
                .args(["--payments-timeout-ms", "1500"])
                .args(["--payments-settle-after", "3"])
                .args(["--request-timeout", "5"])
                // The buyers all sign up and buy from loopback, many orders
                // each, unpaid while the faults last.
                .args(["--sign-ups-per-address", "10000"])
                .args(["--max-unpaid-orders-per-address", "10000"])
                .args(["--max-unpaid-orders", "10000"])
                .args(["--max-unpaid-units", "10000"])
                .args(["--log", "warn"])
                .stdout(Stdio::null())
                .stderr(log_file(self.dir.path(), &format!("node{n}.log")))
                .spawn()
                .unwrap(),
        )
    }
}

/// xorshift64: each buyer's choices, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Sends a keyed POST to either node until it gets an answer that is not a
/// failure to retry (no connection, 5xx, key in use); `None` after a while.
async fn keyed(
    client: &reqwest::Client,
    bases: &[String; 2],
    path: &str,
    token: &str,
    key: &str,
    body: &Value,
    first: usize,
) -> Option<(u16, Value)> {
    for attempt in 0..40 {
        let base = &bases[(first + attempt) % 2];
        let sent = client
            .post(format!("{base}{path}"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await;
        if let Ok(res) = sent {
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            let retry = status >= 500 || body["error"]["code"] == "idempotency_key_in_use";
            if !retry {
                return Some((status, body));
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    None
}

#[derive(Default)]
struct Tally {
    reserved: AtomicUsize,
    paid: AtomicUsize,
    refunds_asked: AtomicUsize,
    cancels: AtomicUsize,
    unanswered: AtomicUsize,
}

const CARDS: [&str; 5] = [
    "4242424242424242",
    "4242424242424242",
    "4000000000003220",
    "4000000000000002",
    "4000000000000341",
];

#[allow(clippy::too_many_arguments)]
async fn buyer(
    client: reqwest::Client,
    bases: [String; 2],
    token: String,
    seller: Arc<String>,
    variant: String,
    seed: u64,
    until: Instant,
    tally: Arc<Tally>,
) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let first = rng.below(2) as usize;
        let line = json!({"lines": [{"variant_id": variant, "quantity": 1 + rng.below(2)}]});
        let Some((201, order)) = keyed(
            &client,
            &bases,
            "/api/v1/orders",
            &token,
            &format!("o{seed}-{n}"),
            &line,
            first,
        )
        .await
        else {
            tally.unanswered.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        tally.reserved.fetch_add(1, Ordering::Relaxed);
        let id = order["id"].as_str().unwrap().to_owned();
        let card = CARDS[rng.below(CARDS.len() as u64) as usize];
        let pay_body =
            json!({"card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"}});
        let pay_path = format!("/api/v1/orders/{id}/payments");
        let pay_key = format!("p{seed}-{n}");
        let pay = keyed(
            &client, &bases, &pay_path, &token, &pay_key, &pay_body, first,
        );
        let paid = if rng.below(8) == 0 {
            // Cancel while the payment is on its way.
            let cancel = async {
                tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
                let base = &bases[1 - first];
                let _ = client
                    .post(format!("{base}/api/v1/orders/{id}/cancel"))
                    .bearer_auth(&token)
                    .send()
                    .await;
            };
            tally.cancels.fetch_add(1, Ordering::Relaxed);
            tokio::join!(pay, cancel).0
        } else {
            pay.await
        };
        let Some((201, _)) = paid else {
            continue;
        };
        tally.paid.fetch_add(1, Ordering::Relaxed);
        if rng.below(3) != 0 {
            continue;
        }
        // The seller refunds: a part, or everything; sometimes two at once.
        let total = order["total"]["amount"].as_i64().unwrap();
        let refund_path = format!("/api/v1/orders/{id}/refunds");
        let amount = |r: &mut Rng| {
            if r.below(2) == 0 {
                total
            } else {
                1 + r.below(total as u64 - 1) as i64
            }
        };
        let bodies = [amount(&mut rng), amount(&mut rng)]
            .map(|a| json!({"amount": {"amount": a, "currency": "EUR"}, "reason": "chaos"}));
        let twice = rng.below(2) == 0;
        tally
            .refunds_asked
            .fetch_add(1 + usize::from(twice), Ordering::Relaxed);
        let keys = [format!("r{seed}-{n}-a"), format!("r{seed}-{n}-b")];
        let one = keyed(
            &client,
            &bases,
            &refund_path,
            &seller,
            &keys[0],
            &bodies[0],
            first,
        );
        if twice {
            let other = keyed(
                &client,
                &bases,
                &refund_path,
                &seller,
                &keys[1],
                &bodies[1],
                1 - first,
            );
            tokio::join!(one, other);
        } else {
            one.await;
        }
    }
}

async fn signed_up(client: &reqwest::Client, base: &str, email: &str) -> String {
    let res: Value = client
        .post(format!("{base}/api/v1/users"))
        .json(&json!({"email": email, "password": "correct horse", "display_name": "C"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    res["token"].as_str().unwrap().to_owned()
}

/// The seller's shop and the variant the storm buys.
async fn shop(client: &reqwest::Client, base: &str) -> (String, ShopId, String) {
    let token = signed_up(client, base, "seller@example.com").await;
    let post = |path: &str, body: Value| {
        let req = client
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let shop = post(
        "/api/v1/shops",
        json!({"handle": "chaos", "name": "Chaos", "currency": "EUR"}),
    )
    .await;
    let product = post(
        "/api/v1/shops/chaos/products",
        json!({"title": "T", "status": "active",
               "variants": [{"sku": "T", "price": {"amount": 1250, "currency": "EUR"}, "stock": STOCK}]}),
    )
    .await;
    let variant = product["variants"][0]["id"].as_str().unwrap().to_owned();
    let shop = ShopId::from_string(shop["id"].as_str().unwrap().to_owned());
    (token, shop, variant)
}

async fn provider_list(client: &reqwest::Client, url: &str, path: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page: Value = client
            .get(format!("{url}{path}?limit=100{after}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let data = page["data"].as_array().unwrap().clone();
        if let Some(last) = data.last() {
            after = format!("&starting_after={}", last["id"].as_str().unwrap());
        }
        all.extend(data);
        if page["has_more"] != true {
            return all;
        }
    }
}

#[test]
fn money_survives_faults_races_and_kills() {
    let seconds: u64 = setting("HAWKER_CHAOS_SECONDS", 20);
    let buyers: u64 = setting("HAWKER_CHAOS_BUYERS", 12);
    let rate: f64 = setting("HAWKER_CHAOS_RATE", 0.3);
    let kill_every = Duration::from_millis(setting("HAWKER_CHAOS_KILL_EVERY_MS", 3000));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(store::testing::TestDatabase::postgres());
    let cluster = Cluster {
        dir: tempfile::tempdir().unwrap(),
        db_url: db.url.clone().unwrap(),
        sandbox_url: String::new(),
        ports: [free_port([127, 0, 0, 1]), free_port([127, 0, 0, 1])],
    };
    let sandbox_port = free_port([127, 0, 0, 1]);
    let cluster = Cluster {
        sandbox_url: format!("http://127.0.0.1:{sandbox_port}"),
        ..cluster
    };
    let hooks = (0..2)
        .map(|n| format!("{}/api/v1/payments/webhooks/test", cluster.base(n)))
        .collect::<Vec<_>>()
        .join(",");
    let _sandbox = Proc(
        Command::new(BIN)
            .arg("payments-sandbox")
            .args(["--addr", &format!("127.0.0.1:{sandbox_port}")])
            .arg("--ledger")
            .arg(cluster.dir.path().join("ledger.jsonl"))
            .args(["--webhook-url", &hooks, "--webhook-secret", SECRET])
            .args(["--async-delay-ms", "400", "--retry-base-ms", "100"])
            .args(["--chaos-rate", &rate.to_string(), "--chaos-seed", "7"])
            .args(["--log", "warn"])
            .stdout(Stdio::null())
            .stderr(log_file(cluster.dir.path(), "sandbox.log"))
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(8))
        .build()
        .unwrap();
    // Migrated once, before two nodes race to it.
    let migrated = Command::new(BIN)
        .args(["migrate", "--database-url", &cluster.db_url, "--data-dir"])
        .arg(cluster.dir.path())
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    let mut nodes = [Some(cluster.node(0)), Some(cluster.node(1))];
    let bases = [cluster.base(0), cluster.base(1)];
    let kills = AtomicU64::new(0);
    let tally = Arc::new(Tally::default());
    let (shop_id, variant) = rt.block_on(async {
        until_up(
            &client,
            &format!("{}/v1/test/stats", cluster.sandbox_url),
            cluster.dir.path(),
        )
        .await;
        for base in &bases {
            until_up(&client, &format!("{base}/healthz"), cluster.dir.path()).await;
        }
        let (seller, shop_id, variant) = shop(&client, &bases[0]).await;
        let seller = Arc::new(seller);
        let mut crowd = Vec::new();
        for i in 0..buyers {
            let token = signed_up(
                &client,
                &bases[(i % 2) as usize],
                &format!("b{i}@example.com"),
            )
            .await;
            crowd.push(token);
        }
        let until = Instant::now() + Duration::from_secs(seconds);
        let storm: Vec<_> = crowd
            .into_iter()
            .enumerate()
            .map(|(i, token)| {
                tokio::spawn(buyer(
                    client.clone(),
                    bases.clone(),
                    token,
                    seller.clone(),
                    variant.clone(),
                    i as u64 + 1,
                    until,
                    tally.clone(),
                ))
            })
            .collect();
        // The killer: one node at a time, SIGKILLed, then restarted.
        let mut victim = 1;
        while Instant::now() < until {
            tokio::time::sleep(kill_every).await;
            if Instant::now() >= until {
                break;
            }
            nodes[victim] = None;
            kills.fetch_add(1, Ordering::Relaxed);
            nodes[victim] = Some(cluster.node(victim));
            until_up(
                &client,
                &format!("{}/healthz", bases[victim]),
                cluster.dir.path(),
            )
            .await;
            victim = 1 - victim;
        }
        for buyer in storm {
            buyer.await.unwrap();
        }
        (shop_id, variant)
    });

    // The nodes settle what the faults left open.
    let store = &db.store;
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let far = domain::Timestamp::now().plus_millis(86_400_000);
            let open = store.unsettled_payments(far, 1).await.unwrap();
            let pending = store.pending_refunds(far, 1).await.unwrap();
            let reversals = store.reversals_pending().await.unwrap();
            if open.is_empty() && pending.is_empty() && reversals == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still open: {open:?} {} pending refunds, {reversals} reversals",
                pending.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let reconciled = Command::new(BIN)
        .args(["admin", "reconcile", "--since-hours", "1"])
        .args([
            "--database-url",
            &cluster.db_url,
            "--payments-url",
            &cluster.sandbox_url,
        ])
        .arg("--data-dir")
        .arg(cluster.dir.path())
        .args(["--log", "warn"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&reconciled.stdout).into_owned();
    assert!(
        reconciled.status.success(),
        "reconcile: {report}\n{}",
        String::from_utf8_lossy(&reconciled.stderr)
    );
    let report: Value = serde_json::from_str(&report).unwrap();

    let (mismatches, reversals) = rt.block_on(check(
        &client,
        &cluster.sandbox_url,
        store,
        &shop_id,
        &variant,
    ));
    let stats: Value = rt.block_on(async {
        client
            .get(format!("{}/v1/test/stats", cluster.sandbox_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let faults: u64 = stats["faults"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    println!(
        "chaos-money: {seconds} s, {buyers} buyers, fault rate {rate}: orders reserved {}, paid {}, \
         cancels raced {}, refunds asked {}, requests given up {}; provider: charges {}, refunds {}, \
         reversals {reversals}, faults injected {faults} {}, webhooks delivered {} (failed attempts {}); node kills {}; \
         reconcile fixed {} ({}); mismatches {}",
        tally.reserved.load(Ordering::Relaxed),
        tally.paid.load(Ordering::Relaxed),
        tally.cancels.load(Ordering::Relaxed),
        tally.refunds_asked.load(Ordering::Relaxed),
        tally.unanswered.load(Ordering::Relaxed),
        stats["charges"],
        stats["refunds"],
        stats["faults"],
        stats["webhooks_delivered"],
        stats["webhooks_failed"],
        kills.load(Ordering::Relaxed),
        report["settled"].as_u64().unwrap()
            + report["reversed"].as_u64().unwrap()
            + report["refunds_recorded"].as_u64().unwrap(),
        report,
        mismatches.len(),
    );
    for m in &mismatches {
        println!("mismatch: {m}");
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert!(kills.load(Ordering::Relaxed) >= 1, "a node was killed");
    assert!(tally.paid.load(Ordering::Relaxed) > 0, "something was paid");
    drop(nodes);
    rt.block_on(db.store.close());
}

/// The invariants, from the provider's ledger and the store.
async fn check(
    client: &reqwest::Client,
    sandbox: &str,
    store: &store::Store,
    shop: &ShopId,
    variant: &str,
) -> (Vec<String>, usize) {
    let mut bad = Vec::new();
    let charges = provider_list(client, sandbox, "/v1/payment_intents").await;
    let refunds = provider_list(client, sandbox, "/v1/refunds").await;
    let refund_amounts: HashMap<&str, i64> = refunds
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["amount"].as_i64().unwrap()))
        .collect();
    let far = domain::Timestamp::now().plus_millis(86_400_000);
    let payments = store
        .payments_between(domain::Timestamp::from_millis(0), far)
        .await
        .unwrap();
    let mut recorded_refunds: Vec<String> = Vec::new();
    let mut reversed: HashMap<PaymentId, String> = HashMap::new();
    for p in &payments {
        if let Some(r) = store.reversal_of(&p.id).await.unwrap() {
            match r {
                Some(id) => {
                    recorded_refunds.push(id.clone());
                    reversed.insert(p.id.clone(), id);
                }
                None => bad.push(format!("reversal of {} never refunded", p.id)),
            }
        }
    }
    // Every charge the provider made is on exactly one paid order, or reversed.
    for charge in charges.iter().filter(|c| c["status"] == "succeeded") {
        let intent = charge["id"].as_str().unwrap();
        let payment =
            PaymentId::from_string(charge["metadata"]["payment"].as_str().unwrap().to_owned());
        let Some(p) = store.payment(&payment).await.unwrap() else {
            bad.push(format!("charge {intent} is for no payment"));
            continue;
        };
        if p.status != PaymentStatus::Succeeded || p.provider_payment_id.as_deref() != Some(intent)
        {
            bad.push(format!(
                "charge {intent}: its payment is {:?} {:?}",
                p.status, p.provider_payment_id
            ));
            continue;
        }
        let paying = store
            .succeeded_payment(&p.order_id)
            .await
            .unwrap()
            .map(|x| x.id);
        let pays = paying.as_ref() == Some(&p.id);
        let reversal = reversed.get(&p.id);
        if pays == reversal.is_some() {
            bad.push(format!(
                "charge {intent}: pays its order {pays}, reversed {reversal:?}"
            ));
        }
        if let Some(r) = reversal
            && refund_amounts.get(r.as_str()) != charge["amount"].as_i64().as_ref()
        {
            bad.push(format!("charge {intent} was not reversed in full"));
        }
    }
    for p in &payments {
        if p.status == PaymentStatus::Succeeded
            && !charges.iter().any(|c| {
                c["status"] == "succeeded" && c["id"].as_str() == p.provider_payment_id.as_deref()
            })
        {
            bad.push(format!("payment {} succeeded without a charge", p.id));
        }
    }
    // No order paid twice; refunds never exceed what was paid.
    let mut orders = Vec::new();
    let mut page = store::PageRequest {
        after: None,
        limit: 100,
    };
    loop {
        let got = store
            .orders_of_shop(shop, &store::OrderFilter::default(), &page)
            .await
            .unwrap();
        orders.extend(got.items);
        match got.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    let claims = store
        .refunds_between(domain::Timestamp::from_millis(0), far)
        .await
        .unwrap();
    for order in &orders {
        let paying: Vec<_> = payments
            .iter()
            .filter(|p| {
                p.order_id == order.id
                    && p.status == PaymentStatus::Succeeded
                    && !reversed.contains_key(&p.id)
            })
            .collect();
        if paying.len() > 1 {
            bad.push(format!("order {} is paid {} times", order.id, paying.len()));
        }
        let refunded: i64 = claims
            .iter()
            .filter(|c| c.refund.order_id == order.id && c.refund.status == RefundStatus::Succeeded)
            .map(|c| c.refund.amount.amount)
            .sum();
        if refunded != order.refunded.amount || refunded > order.paid.amount {
            bad.push(format!(
                "order {}: refunds {refunded}, recorded {}, paid {}",
                order.id, order.refunded.amount, order.paid.amount
            ));
        }
        let paid_amount: i64 = paying.iter().map(|p| p.amount.amount).sum();
        if paid_amount != order.paid.amount {
            let all: Vec<_> = payments.iter().filter(|p| p.order_id == order.id).collect();
            bad.push(format!(
                "order {}: paid {}, its payment {paid_amount}: {all:?} {:?}",
                order.id, order.paid.amount, order.history
            ));
        }
    }
    // Every refund the provider made is recorded once.
    recorded_refunds.extend(claims.iter().filter_map(|c| c.provider_refund_id.clone()));
    let mut seen = HashSet::new();
    for id in &recorded_refunds {
        if !seen.insert(id.as_str()) {
            bad.push(format!("refund {id} is recorded twice"));
        }
    }
    for r in &refunds {
        let id = r["id"].as_str().unwrap();
        if !seen.contains(id) {
            bad.push(format!("the provider's refund {id} is not recorded"));
        }
    }
    // Stock plus what the orders hold is what the seller put up.
    let variant = domain::ids::VariantId::from_string(variant.to_owned());
    let (shelf, _) = store.variant(&variant).await.unwrap().unwrap();
    let held: i64 = orders
        .iter()
        .filter(|o| !matches!(o.status, OrderStatus::Cancelled | OrderStatus::Expired))
        .flat_map(|o| o.lines.iter().map(|l| l.quantity))
        .sum();
    if shelf.stock_on_hand + held != STOCK {
        bad.push(format!(
            "stock {} + held {held} != {STOCK}",
            shelf.stock_on_hand
        ));
    }
    (bad, reversed.len())
}
