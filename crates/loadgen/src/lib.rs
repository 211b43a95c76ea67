//! The crowd: simulated people using Hawker through its public HTTP API, as
//! real clients do. `hawker-loadgen` uses it for benchmarks; `hawker demo` uses
//! [`crowd::flash_sales`] and [`crowd::chat`] to keep the demo room busy;
//! [`room`] is the live-room benchmark (its viewers speak WebSocket through
//! [`ws`]), [`cluster`] the same room over several nodes with one of them
//! killed, [`video`] the video benchmark's clients, [`abuse`] a show under
//! attack.

pub mod abuse;
pub mod cluster;
pub mod crowd;
pub mod room;
pub mod rtmp;
pub mod video;
pub mod ws;

use anyhow::{Context, bail};
use serde_json::Value;

/// POSTs JSON (with a bearer token if given) and returns the body of the `201`
/// it expects; any other answer is an error that says what came back.
pub async fn created(
    client: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut req = client.post(&url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = res.status().as_u16();
    let value = res.json().await.unwrap_or(Value::Null);
    if status != 201 {
        bail!("POST {url}: {status} {value}");
    }
    Ok(value)
}

/// The value at fraction `p` (0 to 1) of a sorted list; `None` when empty.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get((last as f64 * p).round() as usize).copied()
}
