//! Secrets: password hashing, session and API tokens, and sign-in throttling.
//!
//! Passwords are hashed with Argon2id on the blocking pool. Tokens and stream keys
//! are 32 random bytes from the operating system's CSPRNG; only their SHA-256 is
//! stored, and hashes are compared in constant time. Nothing here logs a secret.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use domain::account::Password;

use crate::error::{ApiError, ApiResult, Code};

/// The cookie that carries a browser's session token.
pub const SESSION_COOKIE: &str = "hawker_session";
/// Session tokens start with this; personal API tokens with [`API_TOKEN_PREFIX`].
pub const SESSION_PREFIX: &str = "hks_";
pub const API_TOKEN_PREFIX: &str = "hkp_";

/// Bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> ApiResult<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| {
        tracing::error!(error = %e, "the operating system's random source failed");
        ApiError::from(Code::Internal)
    })?;
    Ok(buf)
}

pub use domain::secret::hash_secret;
pub(crate) use domain::secret::hex;

/// A new secret token: `prefix` followed by 64 hex digits (256 random bits).
pub fn new_token(prefix: &str) -> ApiResult<String> {
    Ok(format!("{prefix}{}", hex(&random_bytes::<32>()?)))
}

/// Whether a presented stream key matches the stored hash (constant time).
pub fn stream_key_matches(stored_hash: &str, presented: &str) -> bool {
    domain::secret::secret_matches(stored_hash, presented)
}

/// Argon2id hashes running at once: each takes 19 MiB and a core for tens
/// of milliseconds, so a flood of sign-ups or sign-ins queues here instead of
/// taking the memory of hundreds of them at a time.
/// (The semaphore is never closed, so the permit is always there.)
async fn hashing() -> Option<tokio::sync::SemaphorePermit<'static>> {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        tokio::sync::Semaphore::new(cores.clamp(2, 8))
    });
    slots.acquire().await.ok()
}

pub async fn hash_password(password: Password) -> ApiResult<String> {
    let salt = random_bytes::<16>()?;
    let _slot = hashing().await;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&salt).map_err(|_| Code::Internal)?;
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| Code::Internal)
    })
    .await
    .map_err(|_| Code::Internal)?
    .map_err(ApiError::from)
}

/// Checks a password against a stored hash. With no hash (an unknown email) it
/// verifies against a dummy hash anyway, so both cases take the same time.
pub async fn verify_password(password: String, hash: Option<String>) -> bool {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let _slot = hashing().await;
    tokio::task::spawn_blocking(move || {
        let known = hash.is_some();
        let hash = match hash {
            Some(h) => h,
            None => {
                let dummy = DUMMY.get_or_init(|| {
                    let salt = SaltString::encode_b64(b"hawker-dummy-salt").ok()?;
                    Argon2::default()
                        .hash_password(b"not a password anyone has", &salt)
                        .ok()
                        .map(|h| h.to_string())
                });
                dummy.clone().unwrap_or_default()
            }
        };
        let matches = PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        known && matches
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tokens_are_random_and_hashes_compare() {
        let a = new_token(SESSION_PREFIX).unwrap();
        let b = new_token(SESSION_PREFIX).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert!(stream_key_matches(&hash_secret(&a), &a));
        assert!(!stream_key_matches(&hash_secret(&a), &b));
    }

    #[tokio::test]
    async fn passwords_verify() {
        let hash = hash_password(Password::parse("correct horse").unwrap())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse".into(), Some(hash.clone())).await);
        assert!(!verify_password("wrong horse".into(), Some(hash)).await);
        assert!(!verify_password("correct horse".into(), None).await);
    }
}
