//! Payment providers. The interface follows Stripe's PaymentIntents: a charge is
//! created and confirmed with a payment method; its result is immediate or
//! arrives later through a signed webhook; refunds go back through the provider.
//! `test` is the built-in provider, behaving like a card processor's test mode.

mod test_provider;

use std::future::Future;
use std::pin::Pin;

use axum::http::HeaderMap;
use domain::Timestamp;
use domain::ids::OrderId;
use domain::money::Money;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use test_provider::TestProvider;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A card as the buyer typed it. Only the provider sees the number; Hawker
/// keeps the last four digits for the order's history.
#[derive(Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Card {
    pub number: String,
    pub exp_month: u8,
    pub exp_year: u16,
    pub cvc: String,
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Card(..{})", self.last4())
    }
}

impl Card {
    pub fn last4(&self) -> &str {
        let n = self.number.len();
        &self.number[n.saturating_sub(4)..]
    }

    /// Checks the shape of the card (digits, Luhn, expiry, CVC); whether it pays
    /// is the provider's answer.
    pub fn check(&self, today: (u16, u8)) -> Result<(), domain::ValidationError> {
        let digits: Vec<u32> = self.number.chars().filter_map(|c| c.to_digit(10)).collect();
        let invalid = |field, message: &str| Err(domain::ValidationError::new(field, message));
        if digits.len() != self.number.len() || !(12..=19).contains(&digits.len()) {
            return invalid("card.number", "must be 12 to 19 digits");
        }
        let sum: u32 = digits
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &d)| {
                if i % 2 == 1 {
                    if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
                } else {
                    d
                }
            })
            .sum();
        if !sum.is_multiple_of(10) {
            return invalid("card.number", "is not a valid card number");
        }
        if !(1..=12).contains(&self.exp_month) || (self.exp_year, self.exp_month) < today {
            return invalid("card.exp_month", "the card has expired");
        }
        if !(3..=4).contains(&self.cvc.len()) || !self.cvc.bytes().all(|b| b.is_ascii_digit()) {
            return invalid("card.cvc", "must be 3 or 4 digits");
        }
        Ok(())
    }
}

/// A provider's answer to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeStatus {
    Succeeded,
    /// The result comes later, by webhook.
    Processing,
    /// With a stable reason such as `card_declined` or `insufficient_funds`.
    Failed(&'static str),
}

#[derive(Debug, Clone)]
pub struct Charge {
    pub intent_id: String,
    pub status: ChargeStatus,
}

#[derive(Debug, thiserror::Error)]
#[error("payment provider: {0}")]
pub struct ProviderError(pub String);

/// What a verified webhook says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebhookEvent {
    pub id: String,
    /// `payment.succeeded` or `payment.failed`.
    #[serde(rename = "type")]
    pub kind: String,
    pub intent_id: String,
    pub failure_code: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("no valid signature header")]
    MissingSignature,
    #[error("the signature does not match")]
    BadSignature,
    #[error("the signature is too old or from the future")]
    Stale,
    #[error("the event does not parse")]
    Malformed,
}

pub trait PaymentProvider: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Creates and confirms a payment of `amount` for `order` with `card`.
    fn charge<'a>(
        &'a self,
        order: &'a OrderId,
        amount: Money,
        card: &'a Card,
    ) -> BoxFuture<'a, Result<Charge, ProviderError>>;

    /// Refunds `amount` of a succeeded payment; returns the provider's refund id.
    /// `idempotency_key` works as Stripe's `Idempotency-Key` on a refund: asked
    /// again with the same key (a retry after a crash, say), the provider
    /// answers with the first refund instead of making a second.
    fn refund<'a>(
        &'a self,
        intent_id: &'a str,
        amount: Money,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<String, ProviderError>>;

    /// Verifies a webhook's signature and freshness, then parses it.
    fn verify_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<WebhookEvent, WebhookError>;
}

/// The header a webhook's signature travels in: `t=<unix seconds>,v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "hawker-signature";
/// How far a webhook's timestamp may be from now, against replays.
pub const TOLERANCE_S: i64 = 300;

/// HMAC-SHA256 over `"{timestamp}.{body}"`, as Stripe signs its webhooks.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    crate::auth::hex(&mac.finalize().into_bytes())
}

/// Checks a `t=..,v1=..` signature header against the body, in constant time.
pub fn verify_signature(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: Timestamp,
) -> Result<(), WebhookError> {
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => signatures.push(s),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(WebhookError::MissingSignature)?;
    if signatures.is_empty() {
        return Err(WebhookError::MissingSignature);
    }
    if (now.as_millis() / 1000 - timestamp).abs() > TOLERANCE_S {
        return Err(WebhookError::Stale);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::BadSignature)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let valid = signatures.iter().any(|s| {
        let bytes: Option<Vec<u8>> = (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect();
        bytes.is_some_and(|b| mac.clone().verify_slice(&b).is_ok())
    });
    if valid {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(number: &str) -> Card {
        Card {
            number: number.into(),
            exp_month: 12,
            exp_year: 2034,
            cvc: "123".into(),
        }
    }

    #[test]
    fn cards_are_checked_by_shape() {
        assert!(card("4242424242424242").check((2026, 11)).is_ok());
        assert!(card("4242424242424241").check((2026, 11)).is_err(), "Luhn");
        assert!(card("4242 4242 4242 4242").check((2026, 11)).is_err());
        let mut expired = card("4242424242424242");
        expired.exp_year = 2026;
        expired.exp_month = 10;
        assert!(expired.check((2026, 11)).is_err());
        assert_eq!(format!("{:?}", card("4242424242424242")), "Card(..4242)");
    }

    #[test]
    fn signatures_verify_and_expire() {
        let now = Timestamp::now();
        let t = now.as_millis() / 1000;
        let body = br#"{"id":"evt_1"}"#;
        let header = format!("t={t},v1={}", sign(b"secret", t, body));
        assert_eq!(
            verify_signature(b"secret", Some(&header), body, now),
            Ok(())
        );
        assert_eq!(
            verify_signature(b"other", Some(&header), body, now),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_signature(b"secret", Some(&header), b"{}", now),
            Err(WebhookError::BadSignature)
        );
        let later = now.plus_millis((TOLERANCE_S + 1) * 1000);
        assert_eq!(
            verify_signature(b"secret", Some(&header), body, later),
            Err(WebhookError::Stale)
        );
        assert_eq!(
            verify_signature(b"secret", None, body, now),
            Err(WebhookError::MissingSignature)
        );
        assert_eq!(
            verify_signature(b"secret", Some("t=1"), body, now),
            Err(WebhookError::MissingSignature)
        );
    }
}
