//! The `hawker` binary from the outside: flags, logs, signals, migrations, the demo.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_hawker");

/// A running `hawker` process with JSON logs on stderr.
struct Running {
    child: Child,
    addr: String,
    logs: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(subcommand: &str, data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .arg(subcommand)
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--rtmp-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            // The tests' buyers all sign up and buy from loopback.
            .env("HAWKER_SIGN_UPS_PER_ADDRESS", "10000")
            .env("HAWKER_MAX_UNPAID_ORDERS_PER_ADDRESS", "10000")
            .env_remove("HAWKER_DATABASE_URL")
            .env_remove("HAWKER_NATS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, logs) = mpsc::channel();
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stderr.take().unwrap()),
            Box::new(child.stdout.take().unwrap()),
        ];
        for stream in streams {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut running = Self {
            child,
            addr: String::new(),
            logs,
            seen: Vec::new(),
        };
        let ready = running.wait_for("Hawker is ready");
        let ready: Value = serde_json::from_str(&ready).unwrap();
        running.addr = ready["addr"].as_str().unwrap().to_owned();
        running
    }

    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.logs.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no {needle:?} in the output:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM and returns the exit code and everything the process printed.
    fn stop(mut self) -> (i32, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.logs.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status.code().unwrap_or(-1), self.seen.join("\n"))
    }
}

/// These tests drive a separate process; a current-thread runtime per request
/// keeps them synchronous.
fn send(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new().request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
}

fn get(url: &str) -> (u16, Value) {
    send(reqwest::Method::GET, url, None)
}

fn post(url: &str, body: Value) -> (u16, Value) {
    send(reqwest::Method::POST, url, Some(body))
}

fn run(args: &[&str], data_dir: &Path, stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("HAWKER_DATABASE_URL")
        .env_remove("HAWKER_NATS_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("hawker {}", env!("CARGO_PKG_VERSION"))
    );
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--data-dir",
        "--http-addr",
        "--rtmp-addr",
        "--database-url",
        "--config",
        "--log-format",
        "HAWKER_HTTP_ADDR",
    ] {
        assert!(help.contains(flag), "serve --help lacks {flag}");
    }
}

#[test]
fn serve_starts_creates_an_admin_privately_and_stops_on_sigterm() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let server = Running::start("serve", dir.path(), &[]);
    assert_eq!(get(&server.url("/readyz")).0, 200);

    let admin_file = dir.path().join("initial-admin.txt");
    let text = std::fs::read_to_string(&admin_file).unwrap();
    let mode = std::fs::metadata(&admin_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let password = text
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap()
        .to_owned();
    let (status, session) = post(
        &server.url("/api/v1/sessions"),
        json!({"email": "admin@hawker.localhost", "password": password}),
    );
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["user"]["role"], "admin");
    let (status, signup) = post(
        &server.url("/api/v1/users"),
        json!({"email": "a@example.com", "password": "correct horse", "display_name": "A"}),
    );
    assert_eq!(status, 201);
    let token = signup["token"].as_str().unwrap().to_owned();

    let (code, output) = server.stop();
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("SIGTERM"), "{output}");
    for secret in [password.as_str(), token.as_str(), "correct horse"] {
        assert!(
            !output.contains(secret),
            "a secret reached the log:\n{output}"
        );
    }
    for line in output.lines() {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        assert!(entry["level"].is_string(), "{line}");
    }
    // A second start finds the admin and does not make another.
    let again = Running::start("serve", dir.path(), &[]);
    assert_eq!(again.stop().0, 0);
    assert_eq!(std::fs::read_to_string(&admin_file).unwrap(), text);
}

#[test]
fn migrate_is_idempotent_and_admin_create_user_works() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(&["migrate"], dir.path(), None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Applied migrations [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15]"),
        "{out}"
    );
    let (code, out, _) = run(&["migrate"], dir.path(), None);
    assert_eq!(code, 0);
    assert!(out.contains("up to date"), "{out}");

    let args = [
        "admin",
        "create-user",
        "--email",
        "Boss@Example.com",
        "--display-name",
        "Boss",
        "--admin",
        "--password-stdin",
    ];
    let (code, out, err) = run(&args, dir.path(), Some("a long passphrase\n"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Created admin boss@example.com"), "{out}");
    let (code, _, err) = run(&args, dir.path(), Some("a long passphrase\n"));
    assert_ne!(code, 0);
    assert!(err.contains("email_taken"), "{err}");
    let generated = [
        "admin",
        "create-user",
        "--email",
        "c@example.com",
        "--display-name",
        "C",
    ];
    let (code, out, _) = run(&generated, dir.path(), None);
    assert_eq!(code, 0);
    assert!(out.contains("Password (shown once): "), "{out}");

    let server = Running::start("serve", dir.path(), &[]);
    let (status, session) = post(
        &server.url("/api/v1/sessions"),
        json!({"email": "boss@example.com", "password": "a long passphrase"}),
    );
    assert_eq!(
        (status, session["user"]["role"].as_str()),
        (201, Some("admin"))
    );
    assert!(
        !dir.path().join("initial-admin.txt").exists(),
        "accounts existed, so no admin was generated"
    );
    assert_eq!(server.stop().0, 0);
}

#[test]
fn demo_seeds_once_and_runs_again_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let demo = Running::start("demo", dir.path(), &[]);
        let (status, products) = get(&demo.url("/api/v1/shops/demo/products?limit=100"));
        assert_eq!(status, 200);
        let items = products["items"].as_array().unwrap();
        assert_eq!(items.len(), 8);
        assert!(
            items
                .iter()
                .all(|p| p["images"].as_array().unwrap().len() == 1)
        );
        let image = items[0]["images"][0].as_str().unwrap();
        assert_eq!(get(&demo.url(&format!("/images/{image}"))).0, 200);
        let (status, rooms) = get(&demo.url("/api/v1/shops/demo/rooms"));
        assert_eq!(status, 200);
        assert_eq!(rooms["items"].as_array().unwrap().len(), 1);
        // The crowd opens a flash sale in the room a few seconds in, and buys.
        let sales = demo.url(&format!(
            "/api/v1/rooms/{}/sales",
            rooms["items"][0]["id"].as_str().unwrap()
        ));
        let mut sold = false;
        for _ in 0..600 {
            let (_, list) = get(&sales);
            sold = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["available"].as_i64().unwrap() < s["quantity"].as_i64().unwrap());
            if sold {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(sold, "the demo's crowd bought in a flash sale");
        // Part of the crowd sits in the room and chats; what it says is kept.
        let room = domain::ids::RoomId::from_string(rooms["items"][0]["id"].as_str().unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let chatted = rt.block_on(async {
            let store = store::Store::open(None, dir.path(), &store::StoreOptions::default())
                .await
                .unwrap();
            for _ in 0..300 {
                if !store.recent_chat(&room, 1).await.unwrap().is_empty() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        });
        assert!(chatted, "the demo's crowd chats in the room");
        // The room is live: the demo clip comes in over RTMP and plays as LL-HLS.
        let live = (0..300).any(|_| {
            let (status, stats) = get(&demo.url(&format!("/api/v1/rooms/{room}/stream")));
            if status == 200 && stats["video_codec"].is_string() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
            false
        });
        assert!(live, "the demo clip is published into the room");
        let (status, rooms_now) = get(&demo.url(&format!("/api/v1/rooms/{room}")));
        assert_eq!((status, rooms_now["status"].as_str()), (200, Some("live")));
        let (status, _) = post(
            &demo.url("/api/v1/sessions"),
            json!({"email": "seller@demo.hawker.localhost", "password": "hawker-demo"}),
        );
        assert_eq!(status, 201);
        let (status, page) = get(&demo.url(&format!("/r/{room}")));
        assert_eq!(status, 200);
        assert!(page.as_str().unwrap().contains("/assets/room-"), "{page}");
        let (status, products) = get(&demo.url("/api/v1/shops/demo/products?limit=100"));
        assert_eq!(status, 200);
        assert!(products.to_string().contains("Organic Cotton Tee"));
        let (code, output) = demo.stop();
        assert_eq!(code, 0, "{output}");
        assert!(
            output.contains("seller@demo.hawker.localhost / hawker-demo"),
            "{output}"
        );
        assert!(
            output.contains(&format!("/live/{room}/index.m3u8")),
            "{output}"
        );
    }
}

#[test]
fn serves_from_postgres_when_given_a_database_url() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(store::testing::TestDatabase::postgres());
    let dir = tempfile::tempdir().unwrap();
    let url = db.url.clone().unwrap();
    let server = Running::start("serve", dir.path(), &["--database-url", &url]);
    let (status, ready) = get(&server.url("/readyz"));
    assert_eq!((status, ready["store"].as_str()), (200, Some("postgres")));
    let (code, output) = server.stop();
    assert_eq!(code, 0, "{output}");
    assert!(
        !output.contains(&url),
        "the database URL may hold a password: it is never logged"
    );
    rt.block_on(db.store.close());
}

fn call(method: reqwest::Method, url: &str, token: &str, body: Value) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let res = reqwest::Client::new()
            .request(method, url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    })
}

#[test]
fn the_selling_clock_starts_a_scheduled_sale() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start("serve", dir.path(), &[]);
    let (_, signup) = post(
        &server.url("/api/v1/users"),
        json!({"email": "s@example.com", "password": "correct horse", "display_name": "S"}),
    );
    let token = signup["token"].as_str().unwrap();
    let post_as =
        |path: &str, body: Value| call(reqwest::Method::POST, &server.url(path), token, body);
    post_as(
        "/api/v1/shops",
        json!({"handle": "clock", "name": "Clock", "currency": "EUR"}),
    );
    let (_, product) = post_as(
        "/api/v1/shops/clock/products",
        json!({"title": "T", "status": "active", "variants": [{"sku": "T", "price": {"amount": 100, "currency": "EUR"}, "stock": 5}]}),
    );
    let (_, room) = post_as("/api/v1/shops/clock/rooms", json!({"title": "R"}));
    let start = domain::Timestamp::now().plus_millis(2000).to_rfc3339();
    let (status, sale) = post_as(
        &format!(
            "/api/v1/rooms/{}/sales",
            room["room"]["id"].as_str().unwrap()
        ),
        json!({"variant_id": product["variants"][0]["id"], "price": {"amount": 50, "currency": "EUR"},
               "quantity": 2, "starts_at": start, "duration_seconds": 600}),
    );
    assert_eq!(
        (status, sale["status"].as_str()),
        (201, Some("scheduled")),
        "{sale}"
    );
    let path = server.url(&format!("/api/v1/sales/{}", sale["id"].as_str().unwrap()));
    let mut seen = String::new();
    for _ in 0..300 {
        let (_, now) = get(&path);
        seen = now["status"].as_str().unwrap_or_default().to_owned();
        if seen == "live" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(seen, "live", "the clock started the sale");
    assert_eq!(server.stop().0, 0);
}

#[test]
fn environment_variables_configure_and_flags_win() {
    let from_env = tempfile::tempdir().unwrap();
    let from_flag = tempfile::tempdir().unwrap();
    let migrate = |flag: Option<&Path>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("migrate").env("HAWKER_DATA_DIR", from_env.path());
        if let Some(dir) = flag {
            cmd.arg("--data-dir").arg(dir);
        }
        assert!(cmd.output().unwrap().status.success());
    };
    migrate(None);
    assert!(from_env.path().join("hawker.db").exists());
    migrate(Some(from_flag.path()));
    assert!(from_flag.path().join("hawker.db").exists());

    let file = from_flag.path().join("hawker.toml");
    let file_dir = from_flag.path().join("from-file");
    std::fs::write(
        &file,
        format!("data_dir = {:?}\n", file_dir.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["migrate", "--config"])
        .arg(&file)
        .env_remove("HAWKER_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        file_dir.join("hawker.db").exists(),
        "the file's data_dir is used"
    );
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(
        &["serve", "--config", "/nonexistent/hawker.toml"],
        dir.path(),
        None,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("reading the config file /nonexistent/hawker.toml"),
        "{err}"
    );
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "http_addr = \"not an address\"\n").unwrap();
    let (code, _, err) = run(
        &["serve", "--config", file.to_str().unwrap()],
        dir.path(),
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("bad.toml"), "{err}");
    let (code, _, err) = run(&["serve", "--http-addr", "nowhere"], dir.path(), None);
    assert_eq!(code, 2, "clap's usage error: {err}");
    assert!(err.contains("--http-addr"), "{err}");
}

#[test]
fn a_node_that_cannot_reach_nats_says_so_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |nats: &[&str]| {
        let mut args = vec![
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--rtmp-addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(nats);
        run(&args, dir.path(), None)
    };
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", nobody.local_addr().unwrap());
    drop(nobody);
    let (code, _, err) = serve(&["--nats-url", &url]);
    assert_ne!(code, 0);
    assert!(err.contains("connecting to NATS"), "{err}");
    let (code, _, err) = serve(&[
        "--nats-url",
        "nats://127.0.0.1:4222",
        "--nats-prefix",
        "two words",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("prefix"), "{err}");
}

#[test]
fn a_node_given_object_storage_it_cannot_use_says_so_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_folder = dir.path().join("file");
    std::fs::write(&not_a_folder, b"x").unwrap();
    for (url, says) in [
        (
            "gs://bucket".to_owned(),
            "file:///absolute/path or s3://bucket".to_owned(),
        ),
        (
            format!("file://{}", not_a_folder.display()),
            not_a_folder.display().to_string(),
        ),
    ] {
        let (code, _, err) = run(
            &[
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--rtmp-addr",
                "127.0.0.1:0",
                "--object-store-url",
                &url,
            ],
            dir.path(),
            None,
        );
        assert_ne!(code, 0, "{url}");
        assert!(
            err.contains("opening the file storage") && err.contains(&says),
            "{err}"
        );
    }
}

/// A seller's shop with a product and a room, and a live sale on it, set up
/// over HTTP; returns the seller's token and the buy URL path.
async fn live_sale(
    client: &reqwest::Client,
    base: &str,
    quantity: i64,
    limit: i64,
) -> (String, String) {
    let json = |res: reqwest::Response| async move { res.json::<Value>().await.unwrap() };
    let signup = json(
        client
            .post(format!("{base}/api/v1/users"))
            .json(&json!({"email": "seller@example.com", "password": "correct horse", "display_name": "S"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let token = signup["token"].as_str().unwrap().to_owned();
    let post = |path: String, body: Value| {
        let req = client
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body);
        async move { json(req.send().await.unwrap()).await }
    };
    post(
        "/api/v1/shops".into(),
        json!({"handle": "storm", "name": "Storm", "currency": "EUR"}),
    )
    .await;
    let product = post(
        "/api/v1/shops/storm/products".into(),
        json!({"title": "T", "status": "active",
               "variants": [{"sku": "T", "price": {"amount": 100, "currency": "EUR"}, "stock": 1000}]}),
    )
    .await;
    let room = post("/api/v1/shops/storm/rooms".into(), json!({"title": "R"})).await;
    let room = room["room"]["id"].as_str().unwrap().to_owned();
    let sale = post(
        format!("/api/v1/rooms/{room}/sales"),
        json!({"variant_id": product["variants"][0]["id"], "price": {"amount": 50, "currency": "EUR"},
               "quantity": quantity, "per_buyer_limit": limit, "duration_seconds": 3600}),
    )
    .await;
    assert_eq!(sale["status"], "live", "{sale}");
    let sale = sale["id"].as_str().unwrap();
    (token, format!("/api/v1/rooms/{room}/sales/{sale}/orders"))
}

async fn buyers(client: &reqwest::Client, bases: &[&str], n: usize) -> Vec<String> {
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let base = bases[i % bases.len()];
        let res: Value = client
            .post(format!("{base}/api/v1/users"))
            .json(&json!({"email": format!("b{i}@example.com"), "password": "correct horse", "display_name": "B"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.push(res["token"].as_str().unwrap().to_owned());
    }
    tokens
}

/// Sends one tap per buyer, alternately to `bases`: `path` with `body` under
/// the key `{key}-{i}`; counts the answers 201 and 409.
async fn storm(
    client: &reqwest::Client,
    bases: &[&str],
    crowd: &[String],
    path: &str,
    body: Value,
    key: &str,
) -> (usize, usize) {
    let taps: Vec<_> = crowd
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let req = client
                .post(format!("{}{path}", bases[i % bases.len()]))
                .bearer_auth(token)
                .header("idempotency-key", format!("{key}-{i}"))
                .json(&body);
            tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let (mut created, mut refused) = (0, 0);
    for t in taps {
        match t.await.unwrap() {
            201 => created += 1,
            409 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    (created, refused)
}

/// Two server processes on one PostgreSQL database, one storm across both:
/// exactly the sale's quantity is sold, and exactly the shelf of a product
/// bought at its list price.
#[test]
fn two_nodes_on_one_postgres_never_oversell() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(store::testing::TestDatabase::postgres());
    let url = db.url.clone().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node_a = Running::start("serve", dir_a.path(), &["--database-url", &url]);
    let node_b = Running::start("serve", dir_b.path(), &["--database-url", &url]);
    let (base_a, base_b) = (node_a.url(""), node_b.url(""));
    let (sold, bought, left) = rt.block_on(async {
        let client = reqwest::Client::new();
        let (seller, buy) = live_sale(&client, &base_a, 30, 1).await;
        let crowd = buyers(&client, &[&base_a, &base_b], 120).await;
        let bases = [base_a.as_str(), base_b.as_str()];
        let sold = storm(&client, &bases, &crowd, &buy, json!({}), "tap").await;
        let shelf: Value = client
            .post(format!("{base_a}/api/v1/shops/storm/products"))
            .bearer_auth(&seller)
            .json(&json!({"title": "Shelf", "status": "active",
                "variants": [{"sku": "S", "price": {"amount": 100, "currency": "EUR"}, "stock": 25}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let line = json!({"lines": [{"variant_id": shelf["variants"][0]["id"]}]});
        let bought = storm(&client, &bases, &crowd, "/api/v1/orders", line, "shelf").await;
        let after: Value = client
            .get(format!("{base_b}/api/v1/products/{}", shelf["id"].as_str().unwrap()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (sold, bought, after["variants"][0]["stock_on_hand"].clone())
    });
    assert_eq!(sold, (30, 90));
    assert_eq!(bought, (25, 95));
    assert_eq!(left, 0);
    assert_eq!(node_a.stop().0, 0);
    assert_eq!(node_b.stop().0, 0);
    rt.block_on(db.store.close());
}

/// SIGKILL in the middle of a purchase storm, then a restart: every order that a
/// buyer was told about exists, and sold plus available equals the quantity.
#[test]
fn a_purchase_storm_survives_sigkill() {
    purchase_storm_survives_sigkill(false);
}

/// The same on PostgreSQL.
#[test]
fn a_purchase_storm_survives_sigkill_on_postgres() {
    purchase_storm_survives_sigkill(true);
}

fn purchase_storm_survives_sigkill(postgres: bool) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let database = postgres.then(|| rt.block_on(store::testing::TestDatabase::postgres()));
    let url = database.as_ref().and_then(|db| db.url.clone());
    let args: Vec<&str> = match &url {
        Some(url) => vec!["--database-url", url],
        None => vec![],
    };
    let server = Running::start("serve", dir.path(), &args);
    let base = server.url("");
    let client = reqwest::Client::new();
    let (buy, crowd) = rt.block_on(async {
        let (_, buy) = live_sale(&client, &base, 500, 100).await;
        let crowd = buyers(&client, &[&base], 20).await;
        (buy, crowd)
    });
    let pid = server.child.id().to_string();
    let answered: Vec<(String, String)> = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..1000 {
            let token = crowd[i % crowd.len()].clone();
            let req = client
                .post(format!("{base}{buy}"))
                .bearer_auth(&token)
                .header("idempotency-key", format!("tap-{i}"))
                .json(&json!({}));
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(res) = req.send().await
                    && res.status().as_u16() == 201
                    && let Ok(order) = res.json::<Value>().await
                {
                    let _ = tx.send(Some((
                        token,
                        order["id"].as_str().unwrap_or_default().to_owned(),
                    )));
                    return;
                }
                let _ = tx.send(None);
            });
        }
        drop(tx);
        let mut answered = Vec::new();
        let mut seen = 0;
        while let Some(result) = rx.recv().await {
            seen += 1;
            if let Some(order) = result {
                answered.push(order);
            }
            if seen == 100 {
                assert!(
                    Command::new("kill")
                        .args(["-KILL", &pid])
                        .status()
                        .unwrap()
                        .success()
                );
            }
        }
        answered
    });
    eprintln!("answered before the kill: {} orders", answered.len());
    let mut killed = server;
    killed.child.wait().unwrap();
    assert!(
        !answered.is_empty(),
        "some purchases were answered before the kill"
    );

    let restarted = Running::start("serve", dir.path(), &args);
    let base = restarted.url("");
    rt.block_on(async {
        for (token, order) in &answered {
            let res = client
                .get(format!("{base}/api/v1/orders/{order}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.status().as_u16(),
                200,
                "order {order} was answered but is gone"
            );
        }
        let store = store::Store::open(url.as_deref(), dir.path(), &store::StoreOptions::default())
            .await
            .unwrap();
        let sale_id = domain::ids::SaleId::from_string(buy.split('/').nth(6).unwrap());
        let sale = store.sale(&sale_id).await.unwrap().unwrap();
        let tally = store.sale_tally(&sale_id).await.unwrap();
        assert!(tally.units >= answered.len() as i64);
        assert_eq!(
            sale.available + tally.units,
            500,
            "sold plus available is the quantity"
        );
        // Nothing is stuck: every reservation lapses when its time comes.
        let later = domain::Timestamp::now().plus_millis(11 * 60 * 1000);
        store.expire_reservations(later, 10_000).await.unwrap();
        let sale = store.sale(&sale_id).await.unwrap().unwrap();
        assert_eq!(sale.available, 500);
        assert_eq!(store.sale_tally(&sale_id).await.unwrap().units, 0);
        assert_eq!(store::testing::orphans(&store).await.unwrap(), 0);
        store.close().await;
    });
    assert_eq!(restarted.stop().0, 0);
    if let Some(db) = database {
        rt.block_on(db.store.close());
    }
}
