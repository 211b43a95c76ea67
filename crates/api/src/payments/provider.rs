//! The node's side of a payment provider: an HTTP client of a
//! PaymentIntents-shaped API (the payments sandbox here; a Stripe adapter
//! takes the same shape). Every write carries an idempotency key, so a call
//! that timed out or failed half-way is repeated safely: the provider answers
//! with what it did the first time.

use std::time::Duration;

use axum::http::HeaderMap;
use domain::Timestamp;
use domain::ids::{OrderId, PaymentId, RefundId};
use domain::money::Money;
use sandbox::wire::{self, IntentStatus};

use super::Card;

/// A provider's answer to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeStatus {
    Succeeded,
    /// The result comes later, by webhook.
    Processing,
    /// With a stable reason such as `card_declined` or `insufficient_funds`.
    Failed(String),
}

/// A charge as the provider keeps it.
#[derive(Debug, Clone)]
pub struct Charge {
    pub intent_id: String,
    /// The Hawker payment (attempt) it was made for.
    pub payment: Option<PaymentId>,
    pub amount: Money,
    pub status: ChargeStatus,
    pub card_last4: String,
    pub created: Timestamp,
}

/// What a refund is for: a seller's refund, or the reversal of a payment
/// that no order took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundFor {
    Refund(RefundId),
    Reversal(PaymentId),
    Unknown,
}

/// A refund as the provider keeps it.
#[derive(Debug, Clone)]
pub struct MadeRefund {
    pub id: String,
    pub intent_id: String,
    pub amount: Money,
    pub made_for: RefundFor,
    pub created: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused the call: nothing was done, and the same call
    /// would be refused again.
    #[error("the payment provider refused: {code}: {message}")]
    Refused { code: String, message: String },
    /// No answer, or the provider's own failure: the call may or may not
    /// have been done; ask again with the same key to know.
    #[error("the payment provider did not answer: {0}")]
    Unanswered(String),
}

/// A verified webhook: an event about a charge.
#[derive(Debug, Clone)]
pub struct WebhookEvent {
    pub id: String,
    pub charge: Charge,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error(transparent)]
    Signature(#[from] sandbox::signature::SignatureError),
    #[error("the event does not parse")]
    Malformed,
}

/// Where the provider is and how to reach it.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The API's base URL, such as `http://127.0.0.1:8090`.
    pub url: String,
    pub api_key: Option<String>,
    /// What its webhooks are signed with.
    pub webhook_secret: Vec<u8>,
    /// How long one call may take before it counts as unanswered.
    pub timeout: Duration,
}

pub struct Provider {
    settings: ProviderSettings,
    client: reqwest::Client,
}

fn money(amount: i64, currency: &str) -> Result<Money, ProviderError> {
    Money::parse(amount, &currency.to_ascii_uppercase())
        .map_err(|e| ProviderError::Unanswered(format!("the provider sent a bad amount: {e}")))
}

fn charge_of(intent: wire::Intent) -> Result<Charge, ProviderError> {
    let status = match intent.status {
        IntentStatus::Succeeded => ChargeStatus::Succeeded,
        IntentStatus::Processing => ChargeStatus::Processing,
        IntentStatus::RequiresPaymentMethod => ChargeStatus::Failed(
            intent
                .last_payment_error
                .map_or_else(|| "card_declined".to_owned(), |e| e.code),
        ),
    };
    Ok(Charge {
        amount: money(intent.amount, &intent.currency)?,
        payment: intent
            .metadata
            .get("payment")
            .map(|p| PaymentId::from_string(p.clone())),
        intent_id: intent.id,
        status,
        card_last4: intent.card_last4,
        created: Timestamp::from_millis(intent.created),
    })
}

fn refund_of(refund: wire::Refund) -> Result<MadeRefund, ProviderError> {
    let made_for = match (
        refund.metadata.get("refund"),
        refund.metadata.get("reversal"),
    ) {
        (Some(r), _) => RefundFor::Refund(RefundId::from_string(r.clone())),
        (None, Some(p)) => RefundFor::Reversal(PaymentId::from_string(p.clone())),
        (None, None) => RefundFor::Unknown,
    };
    Ok(MadeRefund {
        amount: money(refund.amount, &refund.currency)?,
        id: refund.id,
        intent_id: refund.payment_intent,
        made_for,
        created: Timestamp::from_millis(refund.created),
    })
}

impl Provider {
    pub fn new(settings: ProviderSettings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .unwrap_or_default();
        Self { settings, client }
    }

    /// The name webhooks arrive under: `/api/v1/payments/webhooks/test`.
    pub fn name(&self) -> &'static str {
        "test"
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method, format!("{}{path}", self.settings.url));
        match &self.settings.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ProviderError> {
        let response = request
            .send()
            .await
            .map_err(|e| ProviderError::Unanswered(e.to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ProviderError::Unanswered(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                ProviderError::Unanswered(format!("an answer that does not parse: {e}"))
            });
        }
        let error = serde_json::from_slice::<wire::ErrorBody>(&body).ok();
        match error {
            Some(e) if status.is_client_error() && status.as_u16() != 429 => {
                Err(ProviderError::Refused {
                    code: e.error.code,
                    message: e.error.message,
                })
            }
            _ => Err(ProviderError::Unanswered(format!("status {status}"))),
        }
    }

    /// Creates and confirms a charge of `amount` for the attempt `payment`,
    /// keyed by the attempt's id: asked again, the provider answers with the
    /// same charge.
    pub async fn charge(
        &self,
        payment: &PaymentId,
        order: &OrderId,
        amount: Money,
        card: &Card,
    ) -> Result<Charge, ProviderError> {
        let body = wire::CreateIntent {
            amount: amount.amount,
            currency: amount.currency.code().to_ascii_lowercase(),
            payment_method: wire::PaymentMethod {
                card: wire::CardDetails {
                    number: card.number.clone(),
                    exp_month: card.exp_month,
                    exp_year: card.exp_year,
                    cvc: card.cvc.clone(),
                },
            },
            metadata: [
                ("payment".to_owned(), payment.to_string()),
                ("order".to_owned(), order.to_string()),
            ]
            .into(),
        };
        let request = self
            .request(reqwest::Method::POST, "/v1/payment_intents")
            .header("idempotency-key", payment.as_str())
            .json(&body);
        charge_of(self.send(request).await?)
    }

    /// The charge the provider made for the attempt `payment`, if any.
    pub async fn charge_for(&self, payment: &PaymentId) -> Result<Option<Charge>, ProviderError> {
        let request = self
            .request(reqwest::Method::GET, "/v1/payment_intents")
            .query(&[("metadata[payment]", payment.as_str())]);
        let list: wire::List<wire::Intent> = self.send(request).await?;
        list.data.into_iter().next().map(charge_of).transpose()
    }

    /// Refunds `amount` of the charge `intent_id`, keyed by what it is for:
    /// asked again, the provider answers with the same refund.
    pub async fn refund(
        &self,
        intent_id: &str,
        amount: Money,
        made_for: &RefundFor,
    ) -> Result<MadeRefund, ProviderError> {
        let (key, metadata) = match made_for {
            RefundFor::Refund(id) => (id.to_string(), ("refund", id.to_string())),
            RefundFor::Reversal(id) => (format!("reversal-{id}"), ("reversal", id.to_string())),
            RefundFor::Unknown => {
                return Err(ProviderError::Refused {
                    code: "unknown_purpose".into(),
                    message: "a refund must be for something".into(),
                });
            }
        };
        let body = wire::CreateRefund {
            payment_intent: intent_id.to_owned(),
            amount: amount.amount,
            metadata: [(metadata.0.to_owned(), metadata.1)].into(),
        };
        let request = self
            .request(reqwest::Method::POST, "/v1/refunds")
            .header("idempotency-key", key)
            .json(&body);
        refund_of(self.send(request).await?)
    }

    /// Every page of a list route for `[from, to)`.
    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        from: Timestamp,
        to: Timestamp,
        id: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, ProviderError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![
                ("created_gte", from.as_millis().to_string()),
                ("created_lt", to.as_millis().to_string()),
                ("limit", "100".to_owned()),
            ];
            if let Some(after) = &after {
                query.push(("starting_after", after.clone()));
            }
            let request = self.request(reqwest::Method::GET, path).query(&query);
            let page: wire::List<T> = self.send(request).await?;
            after = page.data.last().map(&id);
            all.extend(page.data);
            if !page.has_more || after.is_none() {
                return Ok(all);
            }
        }
    }

    /// The charges the provider made in `[from, to)`, oldest first.
    pub async fn charges(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Charge>, ProviderError> {
        self.list("/v1/payment_intents", from, to, |i: &wire::Intent| {
            i.id.clone()
        })
        .await?
        .into_iter()
        .map(charge_of)
        .collect()
    }

    /// The refunds the provider made in `[from, to)`, oldest first.
    pub async fn refunds(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<MadeRefund>, ProviderError> {
        self.list("/v1/refunds", from, to, |r: &wire::Refund| r.id.clone())
            .await?
            .into_iter()
            .map(refund_of)
            .collect()
    }

    /// Verifies a webhook's signature and freshness, then parses it.
    pub fn verify_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<WebhookEvent, WebhookError> {
        let header = headers
            .get(sandbox::signature::HEADER)
            .and_then(|v| v.to_str().ok());
        sandbox::signature::verify(
            &self.settings.webhook_secret,
            header,
            body,
            now.as_millis() / 1000,
        )?;
        let event: wire::Event =
            serde_json::from_slice(body).map_err(|_| WebhookError::Malformed)?;
        Ok(WebhookEvent {
            id: event.id,
            charge: charge_of(event.data.object).map_err(|_| WebhookError::Malformed)?,
        })
    }
}
