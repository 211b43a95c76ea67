//! What the tests that run `hawker` processes share: the child processes,
//! their ports and logs, and waiting for them to come up.

#![allow(dead_code)] // Each test binary uses a part of it.

pub mod cluster;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hawker");

/// A port nobody listens on now at `ip`, for a process that must come back on
/// it.
pub fn free_port(ip: [u8; 4]) -> u16 {
    std::net::TcpListener::bind(std::net::SocketAddr::from((ip, 0)))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process, SIGKILLed when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Sends SIGTERM and waits for the process to end.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        self.0.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `name` in `dir`, opened for appending, as a child's output.
pub fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .unwrap()
        .into()
}

/// Polls `url` until it answers 200; panics with the `.log` files of `logs`
/// if it never does.
pub async fn until_up(client: &reqwest::Client, url: &str, logs: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(res) = client.get(url).send().await
            && res.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never came up\n{}", logs_of(logs));
}

/// Every `.log` file of `dir`, each under its name.
pub fn logs_of(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "log") {
            let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
            text.push_str(&format!("--- {}\n{log}\n", entry.path().display()));
        }
    }
    text
}
