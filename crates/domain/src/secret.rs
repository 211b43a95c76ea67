//! Secrets at rest: tokens and stream keys are kept as their SHA-256 and
//! compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes as lower-case hex, as ids, hashes and signatures are written.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// What the store keeps instead of a token or a stream key.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Whether a presented secret matches the stored hash, compared in constant
/// time so that timing reveals nothing about the stored value.
pub fn secret_matches(stored_hash: &str, presented: &str) -> bool {
    hash_secret(presented)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_matches_its_hash_only() {
        let stored = hash_secret("live_a");
        assert_eq!(stored.len(), 64);
        assert!(secret_matches(&stored, "live_a"));
        assert!(!secret_matches(&stored, "live_b"));
    }
}
