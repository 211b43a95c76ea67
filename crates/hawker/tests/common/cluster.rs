//! Several `hawker serve` processes as one cluster: nodes on 127.0.0.2, .3,
//! .4..., one PostgreSQL database and one NATS (each cluster its own database
//! and subject prefix).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{BIN, Proc, free_port, log_file, until_up};

/// How long any one wait may take before the test fails (a wait for an
/// event, never a verdict on speed).
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn prefix() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "t{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 1_000_000
    )
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub db: store::testing::TestDatabase,
    pub db_url: String,
    pub nats_url: String,
    pub prefix: String,
    pub addrs: Vec<SocketAddr>,
    /// Each node's RTMP address.
    pub rtmp: Vec<SocketAddr>,
    pub nodes: Vec<Option<Proc>>,
    pub client: reqwest::Client,
    /// Given to every node's process.
    env: Vec<(&'static str, String)>,
}

impl Cluster {
    /// `n` nodes started at the same moment on an empty database.
    pub async fn start(n: usize, nats_url: &str) -> Self {
        Self::start_with(n, nats_url, Vec::new()).await
    }

    /// The same, each node's process with `env` too.
    pub async fn start_with(n: usize, nats_url: &str, env: Vec<(&'static str, String)>) -> Self {
        let ips: Vec<[u8; 4]> = (0..n).map(|i| [127, 0, 0, 2 + i as u8]).collect();
        let db = store::testing::TestDatabase::postgres().await;
        let mut cluster = Self {
            dir: tempfile::tempdir().unwrap(),
            db_url: db.url.clone().unwrap(),
            db,
            nats_url: nats_url.to_owned(),
            prefix: prefix(),
            addrs: ips
                .iter()
                .map(|&ip| SocketAddr::from((ip, free_port(ip))))
                .collect(),
            rtmp: ips
                .iter()
                .map(|&ip| SocketAddr::from((ip, free_port(ip))))
                .collect(),
            nodes: Vec::new(),
            env,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        cluster.nodes = (0..n).map(|i| Some(cluster.spawn(i))).collect();
        for i in 0..n {
            cluster.until_ready(i).await;
        }
        cluster
    }

    fn spawn(&self, i: usize) -> Proc {
        let addr = self.addrs[i];
        Proc(
            Command::new(BIN)
                .arg("serve")
                .args(["--http-addr", &addr.to_string()])
                .args(["--rtmp-addr", &self.rtmp[i].to_string()])
                .arg("--data-dir")
                .arg(self.dir.path().join(format!("node{i}")))
                .args(["--database-url", &self.db_url])
                .args(["--nats-url", &self.nats_url])
                .args(["--nats-prefix", &self.prefix])
                .args(["--shutdown-grace", "2"])
                .args(["--cluster-secret", "test-cluster-secret"])
                .args(["--log", "info,live=debug"])
                // The tests' accounts all sign up and buy from loopback.
                .env("HAWKER_SIGN_UPS_PER_ADDRESS", "10000")
                .env("HAWKER_MAX_UNPAID_ORDERS_PER_ADDRESS", "10000")
                .env_remove("HAWKER_DATABASE_URL")
                .env_remove("HAWKER_NATS_URL")
                .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(Stdio::null())
                .stderr(log_file(self.dir.path(), &format!("node{i}.log")))
                .spawn()
                .unwrap(),
        )
    }

    pub fn base(&self, i: usize) -> String {
        format!("http://{}", self.addrs[i])
    }

    pub async fn until_ready(&self, i: usize) {
        until_up(
            &self.client,
            &format!("{}/readyz", self.base(i)),
            self.dir.path(),
        )
        .await;
    }

    /// Polls `path` on node `i` until it answers `status`.
    pub async fn until_status(&self, i: usize, path: &str, status: u16) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (got, _) = self.call(i, reqwest::Method::GET, path, None, None).await;
            if got == status {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} stayed {got}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i] = None;
    }

    /// SIGTERMs node `i` and waits until it has drained and exited.
    pub fn terminate(&mut self, i: usize) {
        let status = self.nodes[i].take().unwrap().terminate();
        assert!(status.success(), "node {i} ended with {status}");
    }

    pub async fn restart(&mut self, i: usize) {
        self.nodes[i] = Some(self.spawn(i));
        self.until_ready(i).await;
    }

    pub async fn call(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base(i)));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, i: usize, path: &str, token: Option<&str>, body: Value) -> Value {
        let (status, body) = self
            .call(i, reqwest::Method::POST, path, token, Some(body))
            .await;
        assert!((200..300).contains(&status), "POST {path}: {status} {body}");
        body
    }

    pub async fn put(&self, i: usize, path: &str, token: &str, body: Value) -> Value {
        let (status, body) = self
            .call(i, reqwest::Method::PUT, path, Some(token), Some(body))
            .await;
        assert!((200..300).contains(&status), "PUT {path}: {status} {body}");
        body
    }

    /// A new account's token and id, signed up through node `i`.
    pub async fn sign_up(&self, i: usize, email: &str) -> (String, String) {
        let body = self
            .post(
                i,
                "/api/v1/users",
                None,
                json!({"email": email, "password": "correct horse", "display_name": email}),
            )
            .await;
        (
            body["token"].as_str().unwrap().to_owned(),
            body["user"]["id"].as_str().unwrap().to_owned(),
        )
    }

    /// A seller with a shop `anns` and a room, made through node 0: the
    /// seller's token, the room's id and its stream key.
    pub async fn shop_with_room(&self) -> (String, String, String) {
        let (seller, _) = self.sign_up(0, "ann@example.com").await;
        self.post(
            0,
            "/api/v1/shops",
            Some(&seller),
            json!({"handle": "anns", "name": "Ann's", "currency": "EUR"}),
        )
        .await;
        let made = self
            .post(
                0,
                "/api/v1/shops/anns/rooms",
                Some(&seller),
                json!({"title": "Live"}),
            )
            .await;
        (
            seller,
            made["room"]["id"].as_str().unwrap().to_owned(),
            made["stream_key"].as_str().unwrap().to_owned(),
        )
    }

    /// The same with one product: the seller's token, the room's id and the
    /// product.
    pub async fn show(&self) -> (String, String, Value) {
        let (seller, room, _) = self.shop_with_room().await;
        let product = self
            .post(
                0,
                "/api/v1/shops/anns/products",
                Some(&seller),
                json!({"title": "Mug", "status": "active",
                       "variants": [{"sku": "MUG", "options": {"size": "M"}, "stock": 50,
                                     "price": {"amount": 1999, "currency": "EUR"}}]}),
            )
            .await;
        (seller, room, product)
    }

    /// Removes the test's streams from NATS.
    pub async fn finish(self) {
        forget(&self.nats_url, &self.prefix).await;
    }
}

/// Deletes the streams a cluster made under `prefix`.
pub async fn forget(nats_url: &str, prefix: &str) {
    let Ok(client) = async_nats::connect(nats_url).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    for stream in ["room_inputs", "room_log", "leases"] {
        let _ = js.delete_stream(format!("{prefix}_{stream}")).await;
    }
}
