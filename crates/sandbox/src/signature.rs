//! Webhook signatures as Stripe makes them: a header `t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "t.body">`, checked in constant time and refused when too
//! old or from the future, against replays.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header a webhook's signature travels in.
pub const HEADER: &str = "hawker-signature";
/// How far a webhook's timestamp may be from now, in seconds.
pub const TOLERANCE_S: i64 = 300;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("no valid signature header")]
    Missing,
    #[error("the signature does not match")]
    Mismatch,
    #[error("the signature is too old or from the future")]
    Stale,
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The header's value for `body` signed at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex(&digest))
}

/// Checks a header against the body at `now` (Unix seconds).
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => signatures.push(s),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Missing)?;
    if signatures.is_empty() {
        return Err(SignatureError::Missing);
    }
    if (now - timestamp).abs() > TOLERANCE_S {
        return Err(SignatureError::Stale);
    }
    let expected = mac(secret, timestamp, body);
    let valid = signatures.iter().any(|s| {
        let bytes: Option<Vec<u8>> = (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect();
        bytes.is_some_and(|b| expected.clone().verify_slice(&b).is_ok())
    });
    if valid {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_expire() {
        let now = 1_800_000_000;
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(b"secret", now, body);
        assert_eq!(verify(b"secret", Some(&header), body, now), Ok(()));
        assert_eq!(
            verify(b"other", Some(&header), body, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", Some(&header), b"{}", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", Some(&header), body, now + TOLERANCE_S + 1),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(b"secret", None, body, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(b"secret", Some("t=1"), body, now),
            Err(SignatureError::Missing)
        );
    }
}
