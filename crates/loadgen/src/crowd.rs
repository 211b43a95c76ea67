//! A small crowd for the demo: every few minutes the seller puts one of the
//! shop's products on a flash sale in the room, and the buyers tap at
//! staggered moments; most of those who get one pay with a test card. Between
//! sales, some of them sit in the room and chat and like.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// An account the crowd signs in with.
#[derive(Debug, Clone)]
pub struct Account {
    pub email: String,
    pub password: String,
}

/// Where and how often the crowd sells.
#[derive(Debug, Clone)]
pub struct FlashSales {
    /// Hawker's base URL.
    pub base: String,
    pub shop: String,
    pub seller: Account,
    pub buyers: Vec<Account>,
    /// The first sale starts this long after start-up, then one every `every`.
    pub first_after: Duration,
    pub every: Duration,
    /// Units per sale and how long each lasts.
    pub quantity: i64,
    pub duration: Duration,
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.with_context(|| path.to_owned())?;
        let status = res.status().as_u16();
        Ok((status, res.json().await.unwrap_or(Value::Null)))
    }

    async fn sign_in(&self, account: &Account) -> anyhow::Result<String> {
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                "/api/v1/sessions",
                None,
                None,
                Some(json!({"email": account.email, "password": account.password})),
            )
            .await?;
        if status != 201 {
            bail!("signing in {}: {status} {body}", account.email);
        }
        Ok(body["token"].as_str().unwrap_or_default().to_owned())
    }
}

/// Runs flash sales until `stop` is cancelled. Errors are logged, and the next
/// round tries again.
pub async fn flash_sales(plan: FlashSales, stop: CancellationToken) {
    let client = Client {
        http: reqwest::Client::new(),
        base: plan.base.trim_end_matches('/').to_owned(),
    };
    let mut wait = plan.first_after;
    let mut round = 0u64;
    // Signed in once, like an app: sessions outlive the demo.
    let mut sessions: Option<Sessions> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = plan.every;
        round += 1;
        if sessions.is_none() {
            match sign_in_all(&client, &plan).await {
                Ok(s) => sessions = Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "demo flash sale: cannot sign in the crowd");
                    continue;
                }
            }
        }
        let Some(sessions) = &sessions else { continue };
        let run = run_round(&client, &plan, sessions, round, &stop);
        tokio::select! {
            () = stop.cancelled() => return,
            result = run => if let Err(e) = result {
                tracing::warn!(error = %e, "demo flash sale: round {round} failed");
            },
        }
    }
}

/// The crowd's session tokens.
struct Sessions {
    seller: String,
    buyers: Vec<String>,
}

async fn sign_in_all(client: &Client, plan: &FlashSales) -> anyhow::Result<Sessions> {
    let seller = client.sign_in(&plan.seller).await?;
    let mut buyers = Vec::with_capacity(plan.buyers.len());
    for account in &plan.buyers {
        buyers.push(client.sign_in(account).await?);
    }
    Ok(Sessions { seller, buyers })
}

/// The id of the shop's first room, where the crowd buys and chats.
async fn first_room(client: &Client, shop: &str) -> anyhow::Result<String> {
    let (_, rooms) = client
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/shops/{shop}/rooms"),
            None,
            None,
            None,
        )
        .await?;
    Ok(rooms["items"][0]["id"]
        .as_str()
        .context("the demo shop has no room")?
        .to_owned())
}

async fn run_round(
    client: &Client,
    plan: &FlashSales,
    sessions: &Sessions,
    round: u64,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    use reqwest::Method;
    let seller = sessions.seller.clone();
    let room = first_room(client, &plan.shop).await?;
    let (_, products) = client
        .send(
            Method::GET,
            &format!("/api/v1/shops/{}/products?limit=100", plan.shop),
            None,
            None,
            None,
        )
        .await?;
    let products = products["items"].as_array().cloned().unwrap_or_default();
    let Some(product) = products.get(round as usize % products.len().max(1)) else {
        bail!("the demo shop has no products");
    };
    let variant = &product["variants"][0];
    let variant_id = variant["id"].as_str().unwrap_or_default();
    // Keep the shelf stocked for the sale.
    let (status, body) = client
        .send(
            Method::POST,
            &format!("/api/v1/variants/{variant_id}/stock-adjustments"),
            Some(&seller),
            None,
            Some(json!({"delta": plan.quantity, "reason": "received", "note": "demo restock"})),
        )
        .await?;
    if status != 201 {
        bail!("restocking: {status} {body}");
    }
    let price = variant["price"]["amount"].as_i64().unwrap_or(1000) / 2;
    let (status, sale) = client
        .send(Method::POST, &format!("/api/v1/rooms/{room}/sales"), Some(&seller), None, Some(json!({
            "variant_id": variant_id, "price": {"amount": price, "currency": variant["price"]["currency"]},
            "quantity": plan.quantity, "per_buyer_limit": 1, "duration_seconds": plan.duration.as_secs()})))
        .await?;
    if status != 201 {
        bail!("opening the sale: {status} {sale}");
    }
    let sale = sale["id"].as_str().unwrap_or_default().to_owned();
    tracing::info!(sale = %sale, product = %product["title"], "demo flash sale opened");
    let mut buyers = tokio::task::JoinSet::new();
    for (i, token) in sessions.buyers.iter().enumerate() {
        let (token, room, sale, stop) = (token.clone(), room.clone(), sale.clone(), stop.clone());
        let client = Client {
            http: client.http.clone(),
            base: client.base.clone(),
        };
        // Staggered over the first half of the sale, the same way every round.
        let delay = plan.duration / 2 * ((i as u32 * 7) % 10) / 10;
        buyers.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
            let (status, order) = client
                .send(Method::POST, &format!("/api/v1/rooms/{room}/sales/{sale}/orders"), Some(&token),
                    Some(&format!("demo-{sale}-{i}")), Some(json!({})))
                .await?;
            // Seven in ten pay; the others let the reservation lapse.
            if status == 201 && i % 10 < 7 {
                let order = order["id"].as_str().unwrap_or_default();
                client
                    .send(Method::POST, &format!("/api/v1/orders/{order}/payments"), Some(&token),
                        Some(&format!("demo-pay-{order}")),
                        Some(json!({"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2099, "cvc": "123"}})))
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = buyers.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "demo buyer");
        }
    }
    Ok(())
}

/// Viewers who sit in the demo room and chat and like now and then.
#[derive(Debug, Clone)]
pub struct Chatter {
    /// Hawker's base URL (`http://...`).
    pub base: String,
    pub shop: String,
    pub viewers: Vec<Account>,
    /// Each viewer says something about this often (staggered between them).
    pub every: Duration,
}

/// What the demo crowd says, in turn.
const LINES: &[&str] = &[
    "Hi from Lyon!",
    "Is it available in blue?",
    "What sizes do you have?",
    "Just got one \u{1f389}",
    "How long does shipping take?",
    "Can you show the back?",
    "Love this \u{2764}\u{fe0f}",
    "Is the price per piece?",
    "Second time buying here, great quality",
    "Missed the last sale, waiting for the next one",
];

/// Keeps the chatters in the shop's first room until `stop` is cancelled: each
/// holds the room's WebSocket open (reconnecting with `since` when it drops),
/// reads everything the room sends, and now and then chats or likes.
pub async fn chat(plan: Chatter, stop: CancellationToken) {
    let client = Client {
        http: reqwest::Client::new(),
        base: plan.base.trim_end_matches('/').to_owned(),
    };
    let mut viewers = tokio::task::JoinSet::new();
    for (i, account) in plan.viewers.iter().enumerate() {
        let (client, plan, account, stop) = (
            Client {
                http: client.http.clone(),
                base: client.base.clone(),
            },
            plan.clone(),
            account.clone(),
            stop.clone(),
        );
        viewers.spawn(async move {
            let mut wait = Duration::from_secs(2 + i as u64);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                if let Err(e) = sit_in_room(&client, &plan, &account, i, &stop).await {
                    tracing::debug!(error = %e, "demo chatter reconnects");
                }
                wait = Duration::from_secs(5);
            }
        });
    }
    while viewers.join_next().await.is_some() {}
}

async fn sit_in_room(
    client: &Client,
    plan: &Chatter,
    account: &Account,
    i: usize,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let token = client.sign_in(account).await?;
    let room = first_room(client, &plan.shop).await?;
    let ws_base = client.base.replacen("http", "ws", 1);
    let mut request = format!("{ws_base}/api/v1/rooms/{room}/ws").into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    // Staggered: viewer i first speaks after i/n of the period, then every period.
    let n = plan.viewers.len().max(1) as u32;
    let mut speak = tokio::time::interval_at(
        tokio::time::Instant::now() + plan.every * (i as u32 % n) / n,
        plan.every,
    );
    let mut like = tokio::time::interval(plan.every / 4 + Duration::from_millis(300 * i as u64));
    let mut said = i;
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                let _ = socket.close(None).await;
                return Ok(());
            }
            frame = socket.next() => match frame {
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("room socket: {e}"),
                None => bail!("the room closed the socket"),
            },
            _ = speak.tick() => {
                let text = LINES[said % LINES.len()];
                said += 3;
                socket.send(Message::Text(json!({"type": "chat", "text": text}).to_string().into())).await?;
            }
            _ = like.tick() => {
                for _ in 0..1 + said % 3 {
                    socket.send(Message::Text(r#"{"type":"like"}"#.into())).await?;
                }
            }
        }
    }
}
