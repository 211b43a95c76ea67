use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::{ApiConfig, AppState};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use store::testing::TestDatabase;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where encoders publish: `rtmp://{rtmp}/live/{stream_key}`.
    pub rtmp: SocketAddr,
    /// The server's shared state, for what only the inside shows (the bus).
    pub state: AppState,
    /// The payment provider's API: the node's own sandbox, or the first
    /// node's for a node beside it.
    pub payments_url: String,
    pub client: reqwest::Client,
    pub db: Arc<TestDatabase>,
    pub config: ApiConfig,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A room's events on the bus, each `{"type", "data"}`.
pub struct BusEvents(bus::Subscription);

impl BusEvents {
    /// The next room event published, past the nodes' own presence reports.
    pub async fn next(&mut self) -> Value {
        loop {
            let payload = self.0.next().await.expect("the bus is open");
            let event: Value = serde_json::from_slice(&payload).unwrap();
            if event["type"] != "presence" {
                return event;
            }
        }
    }
}

/// A signed-in account: its bearer token and id.
pub struct Account {
    pub token: String,
    pub id: String,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::start(TestDatabase::sqlite().await, |_| {}).await
    }

    pub async fn spawn_postgres() -> Self {
        Self::start(TestDatabase::postgres().await, |_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut ApiConfig)) -> Self {
        Self::start(TestDatabase::sqlite().await, configure).await
    }

    async fn start(db: TestDatabase, configure: impl FnOnce(&mut ApiConfig)) -> Self {
        let mut config = ApiConfig::new(db.dir().to_path_buf());
        // Every test signs its accounts up and buys from 127.0.0.1.
        config.sign_ups_per_address = 100_000;
        config.unpaid_caps.orders_per_address = 100_000;
        configure(&mut config);
        Self::on(Arc::new(db), config).await
    }

    /// A node as the binary builds it (`hawker-node`), on `db`.
    async fn on(db: Arc<TestDatabase>, config: ApiConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rtmp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let settings = node::Settings {
            api: config.clone(),
            shutdown_grace: Duration::from_secs(1),
            recording_retention: None,
            nats: None,
        };
        let node = node::Node::start(
            db.store.clone(),
            settings,
            listener,
            rtmp_listener,
            shutdown.clone(),
        )
        .await
        .unwrap();
        let (addr, rtmp, state) = (node.http_addr, node.rtmp_addr, node.state.clone());
        let payments_url = node.payments_url.clone();
        tokio::spawn(node.run());
        Self {
            addr,
            rtmp,
            state,
            payments_url,
            config,
            client: reqwest::Client::new(),
            db,
            shutdown,
        }
    }

    /// A second node on the same database, with a bus of its own: what
    /// another node sees of what this one kept.
    pub async fn node_beside(&self) -> Self {
        let mut config = self.config.clone();
        config.data_dir = self.db.dir().join("beside");
        config.media = media::Settings::default();
        config.payments_url = Some(self.payments_url.clone());
        Self::on(self.db.clone(), config).await
    }

    /// Makes the payment provider inject `fault` into its next call to `target`.
    pub async fn fault(&self, target: sandbox::wire::Target, fault: sandbox::wire::Fault) {
        let res = self
            .client
            .post(format!("{}/v1/test/faults", self.payments_url))
            .json(&sandbox::wire::QueueFault {
                target,
                fault,
                count: 1,
            })
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.status());
    }

    /// What the payment provider made: its charges and refunds.
    pub async fn provider_ledger(&self) -> (Vec<Value>, Vec<Value>) {
        let list = |path: &str| {
            let url = format!("{}{path}?limit=100", self.payments_url);
            async move {
                let page: Value = self
                    .client
                    .get(url)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(page["has_more"], false);
                page["data"].as_array().unwrap().clone()
            }
        };
        (list("/v1/payment_intents").await, list("/v1/refunds").await)
    }

    /// Listens in on a room's events as the bus carries them.
    pub async fn listen(&self, room: &domain::ids::RoomId) -> BusEvents {
        BusEvents(
            self.state
                .bus()
                .subscribe(&bus::Topic::Room(room.clone()))
                .await
                .unwrap(),
        )
    }

    /// Starts the graceful shutdown, as SIGTERM does in the binary.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request with an optional bearer token and JSON body; returns the
    /// status and the body parsed as JSON (`Value::Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let bytes = res.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "{path} answered non-JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let res = self.client.get(self.url("/metrics")).send().await.unwrap();
        res.text().await.unwrap()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, token, None).await
    }

    pub async fn sign_up(&self, email: &str) -> Account {
        let (status, body) = self
            .post(
                "/api/v1/users",
                None,
                json!({"email": email, "password": "correct horse", "display_name": "Tester"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Account {
            token: body["token"].as_str().unwrap().to_owned(),
            id: body["user"]["id"].as_str().unwrap().to_owned(),
        }
    }

    /// A seller with a EUR shop under `handle`.
    pub async fn seller(&self, handle: &str) -> Account {
        let account = self.sign_up(&format!("{handle}@example.com")).await;
        let (status, body) = self
            .post(
                "/api/v1/shops",
                Some(&account.token),
                json!({"handle": handle, "name": format!("{handle} shop"), "currency": "EUR"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        account
    }

    /// An active product with one variant (SKU `sku`, 19.99 EUR, `stock` units).
    pub async fn product(&self, seller: &Account, shop: &str, sku: &str, stock: i64) -> Value {
        let (status, body) = self
            .post(
                &format!("/api/v1/shops/{shop}/products"),
                Some(&seller.token),
                json!({
                    "title": format!("Product {sku}"),
                    "status": "active",
                    "variants": [{"sku": sku, "options": {"size": "M"},
                                  "price": {"amount": 1999, "currency": "EUR"}, "stock": stock}]
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }
}

/// Asserts the API's error shape and code.
#[track_caller]
pub fn assert_error(actual: (StatusCode, Value), status: StatusCode, code: &str) {
    let (got_status, body) = actual;
    assert_eq!(got_status, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// A small valid PNG.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let pixels = vec![200u8; (width * height * 3) as usize];
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&pixels)
        .unwrap();
    out
}
