//! A real S3-compatible server for tests: `moto_server` (PyPI's `moto[server]`,
//! which `bash scripts/test` installs), one process per test on a free
//! loopback port, with a fresh bucket; stopped when the handle is dropped.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;

use crate::Objects;

/// The keys the test server takes (it checks no signature).
const ACCESS_KEY: &str = "hawker-test";
const SECRET_KEY: &str = "hawker-test-secret";
const REGION: &str = "us-east-1";

pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    child: Child,
}

impl S3 {
    /// Starts a server and makes a bucket on it. Panics with what to install
    /// when `moto_server` is missing.
    pub async fn start() -> Self {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let bucket = format!("hawker-{}-{port}", std::process::id());
        let child = serve(port, &endpoint, &bucket).await;
        Self {
            endpoint,
            bucket,
            child,
        }
    }

    /// The server goes away (and forgets what it held), until [`Self::resume`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new server at the same address, with the bucket made again (empty).
    pub async fn resume(&mut self) {
        let port = self
            .endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");
        self.child = serve(port, &self.endpoint, &self.bucket).await;
    }

    /// `--object-store-url` for files under `prefix` in the bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The storage at `prefix` in the bucket, as a node opens it.
    pub fn objects(&self, prefix: &str) -> Objects {
        let builder = AmazonS3Builder::new()
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_region(REGION);
        let url = self.url(prefix);
        Objects::s3(&url, &url["s3://".len()..], Some(&self.endpoint), builder)
            .expect("the test bucket opens")
    }

    /// The environment a node process needs to use the bucket at `prefix`.
    pub fn env(&self, prefix: &str) -> Vec<(&'static str, String)> {
        vec![
            ("HAWKER_OBJECT_STORE_URL", self.url(prefix)),
            ("HAWKER_OBJECT_STORE_ENDPOINT", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
        ]
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server on `port` with `bucket` made, once it answers.
async fn serve(port: u16, endpoint: &str, bucket: &str) -> Child {
    let mut child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server, the S3-compatible test server: pip install 'moto[server]'");
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // Up when it accepts a connection; a server that died says so.
    loop {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("moto_server exited at start: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    crate::use_ring();
    let made = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("the test S3 server answers");
    assert!(
        made.status().is_success(),
        "making a bucket: {}",
        made.status()
    );
    child
}
