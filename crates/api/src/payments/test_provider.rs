//! The built-in `test` payment provider: a card processor's test mode.
//!
//! | card number        | result                                              |
//! |--------------------|-----------------------------------------------------|
//! | 4242424242424242   | succeeds                                            |
//! | 4000000000000002   | declined: `card_declined`                           |
//! | 4000000000009995   | declined: `insufficient_funds`                      |
//! | 4000000000003220   | processing; succeeds a moment later by webhook      |
//! | 4000000000000341   | processing; declined a moment later by webhook      |
//! | any other number   | declined: `card_declined` (test mode takes test cards only) |
//!
//! Its webhooks are real HTTP requests to the server's own
//! `/api/v1/payments/webhooks/test`, signed like Stripe's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::HeaderMap;
use domain::Timestamp;
use domain::ids::OrderId;
use domain::money::Money;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    BoxFuture, Card, Charge, ChargeStatus, PaymentProvider, ProviderError, SIGNATURE_HEADER,
    WebhookError, WebhookEvent, sign, verify_signature,
};

pub struct TestProvider {
    secret: Vec<u8>,
    /// `host:port` of this server, where the webhooks go; set once it listens.
    deliver_to: Arc<OnceLock<String>>,
    /// How long an asynchronous card takes to answer.
    delay: Duration,
    /// Refunds made, by idempotency key.
    refunds: Mutex<HashMap<String, MadeRefund>>,
}

/// A refund the test provider made: the intent and amount first asked for,
/// and the refund's id.
type MadeRefund = ((String, Money), String);

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // A failing OS random source leaves zeros: ids stay unique enough for test mode.
    let _ = getrandom::fill(&mut buf);
    crate::auth::hex(&buf)
}

impl TestProvider {
    pub fn new(secret: Vec<u8>, delay: Duration) -> Self {
        Self {
            secret,
            deliver_to: Arc::default(),
            delay,
            refunds: Mutex::default(),
        }
    }

    /// A provider that signs with `secret`, the same on every node of a
    /// deployment; without one, with a key of this process's own.
    pub fn configured(secret: Option<&str>, delay: Duration) -> Self {
        let secret = match secret {
            Some(secret) => secret.as_bytes().to_vec(),
            None => crate::auth::random_bytes::<32>()
                .map(|b| b.to_vec())
                .unwrap_or_default(),
        };
        Self::new(secret, delay)
    }

    /// Where webhooks go: this server's own address.
    pub fn deliver_to(&self, addr: std::net::SocketAddr) {
        let host = if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        let _ = self.deliver_to.set(host);
    }

    fn send_later(&self, event: WebhookEvent) {
        let (secret, target, delay) = (self.secret.clone(), self.deliver_to.clone(), self.delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(target) = target.get() else {
                tracing::error!("test payments: no address to deliver the webhook to");
                return;
            };
            let body = serde_json::to_vec(&event).unwrap_or_default();
            let t = Timestamp::now().as_millis() / 1000;
            let signature = format!("t={t},v1={}", sign(&secret, t, &body));
            if let Err(e) = post(target, &signature, &body).await {
                tracing::warn!(error = %e, "test payments: webhook delivery failed");
            }
        });
    }
}

/// A minimal HTTP/1.1 POST to this server over loopback.
async fn post(target: &str, signature: &str, body: &[u8]) -> std::io::Result<()> {
    let mut socket = tokio::net::TcpStream::connect(target).await?;
    let head = format!(
        "POST /api/v1/payments/webhooks/test HTTP/1.1\r\nhost: {target}\r\n\
         content-type: application/json\r\n{SIGNATURE_HEADER}: {signature}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body).await?;
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&answer).into_owned(),
        ));
    }
    Ok(())
}

impl PaymentProvider for TestProvider {
    fn name(&self) -> &'static str {
        "test"
    }

    fn charge<'a>(
        &'a self,
        _order: &'a OrderId,
        _amount: Money,
        card: &'a Card,
    ) -> BoxFuture<'a, Result<Charge, ProviderError>> {
        Box::pin(async move {
            let intent_id = format!("pi_test_{}", random_hex(12));
            let status = match card.number.as_str() {
                "4242424242424242" => ChargeStatus::Succeeded,
                "4000000000009995" => ChargeStatus::Failed("insufficient_funds"),
                "4000000000003220" | "4000000000000341" => {
                    let declined = card.number == "4000000000000341";
                    self.send_later(WebhookEvent {
                        id: format!("evt_test_{}", random_hex(12)),
                        kind: if declined {
                            "payment.failed"
                        } else {
                            "payment.succeeded"
                        }
                        .into(),
                        intent_id: intent_id.clone(),
                        failure_code: declined.then(|| "card_declined".to_owned()),
                    });
                    ChargeStatus::Processing
                }
                _ => ChargeStatus::Failed("card_declined"),
            };
            Ok(Charge { intent_id, status })
        })
    }

    fn refund<'a>(
        &'a self,
        intent_id: &'a str,
        amount: Money,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let mut refunds = self.refunds.lock().unwrap_or_else(|p| p.into_inner());
            let (first, refund) = refunds
                .entry(idempotency_key.to_owned())
                .or_insert_with(|| {
                    (
                        (intent_id.to_owned(), amount),
                        format!("re_test_{}", random_hex(12)),
                    )
                });
            if *first != (intent_id.to_owned(), amount) {
                return Err(ProviderError(
                    "the idempotency key was used for another refund".into(),
                ));
            }
            Ok(refund.clone())
        })
    }

    fn verify_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<WebhookEvent, WebhookError> {
        let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
        verify_signature(&self.secret, header, body, now)?;
        serde_json::from_slice(body).map_err(|_| WebhookError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_refund_asked_again_with_its_key_is_the_same_refund() {
        let provider = TestProvider::new(b"secret".to_vec(), Duration::from_secs(1));
        let ten = Money::parse(1000, "EUR").unwrap();
        let first = provider.refund("pi_1", ten, "reversal-1").await.unwrap();
        let again = provider.refund("pi_1", ten, "reversal-1").await.unwrap();
        assert_eq!(first, again, "made once");
        let other = provider.refund("pi_1", ten, "reversal-2").await.unwrap();
        assert_ne!(first, other);
        let five = Money::parse(500, "EUR").unwrap();
        assert!(
            provider.refund("pi_1", five, "reversal-1").await.is_err(),
            "a key names one refund"
        );
    }
}
