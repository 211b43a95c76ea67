//! The sandbox's HTTP API as JSON: PaymentIntents, Refunds, webhook events,
//! lists and errors, shaped like Stripe's. Amounts are integers in the
//! currency's minor unit; times are Unix milliseconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Free-form labels a client attaches to what it creates, and can search by
/// (Hawker puts its payment, order and refund ids here).
pub type Metadata = BTreeMap<String, String>;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CardDetails {
    pub number: String,
    pub exp_month: u8,
    pub exp_year: u16,
    pub cvc: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PaymentMethod {
    pub card: CardDetails,
}

/// `POST /v1/payment_intents`: create and confirm a charge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateIntent {
    pub amount: i64,
    pub currency: String,
    pub payment_method: PaymentMethod,
    #[serde(default)]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    /// The card network answers later; a webhook tells.
    Processing,
    Succeeded,
    /// Declined: `last_payment_error` says why.
    RequiresPaymentMethod,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PaymentError {
    /// `card_declined`, `insufficient_funds`.
    pub code: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Intent {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: IntentStatus,
    pub last_payment_error: Option<PaymentError>,
    /// The card's last four digits.
    pub card_last4: String,
    /// How much of it was refunded.
    pub amount_refunded: i64,
    pub metadata: Metadata,
    pub created: i64,
}

/// `POST /v1/refunds`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    pub payment_intent: String,
    pub amount: i64,
    #[serde(default)]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Refund {
    pub id: String,
    pub payment_intent: String,
    pub amount: i64,
    pub currency: String,
    pub metadata: Metadata,
    pub created: i64,
}

/// What a webhook carries: one event about one object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    /// `payment_intent.succeeded` or `payment_intent.payment_failed`.
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventData {
    pub object: Intent,
}

/// A page of a list, oldest first; `has_more` says to ask again with
/// `starting_after` set to the last id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct List<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

/// `{"error": {"type", "code", "message"}}`: `type` is `invalid_request_error`
/// for a request that can never succeed as sent, `idempotency_error` for a
/// key misused, `api_error` for the sandbox's own failure (retry with the
/// same key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: String,
    pub code: String,
    pub message: String,
}

/// The query of the list routes: a window of creation times, a page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Window {
    /// Created at or after (Unix ms).
    pub created_gte: Option<i64>,
    /// Created before (Unix ms).
    pub created_lt: Option<i64>,
    pub starting_after: Option<String>,
    /// 1 to 100, 100 by default.
    pub limit: Option<usize>,
}

/// A fault the sandbox injects into its next answers, for tests.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    /// A slow provider: waits `after_ms`, then does the work and answers.
    Delay { after_ms: u64 },
    /// Fails with `api_error` without doing anything.
    FailBefore,
    /// Does the work (the card is charged), then fails with `api_error`.
    FailAfter,
    /// Does the work, then never answers until the client gives up.
    Timeout,
    /// Does the work, delivers its webhook, then answers.
    WebhookFirst,
    /// Does the work and delivers its webhook twice.
    WebhookTwice,
}

impl Fault {
    pub const NAMES: [&str; 6] = [
        "delay",
        "fail_before",
        "fail_after",
        "timeout",
        "webhook_first",
        "webhook_twice",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Delay { .. } => "delay",
            Self::FailBefore => "fail_before",
            Self::FailAfter => "fail_after",
            Self::Timeout => "timeout",
            Self::WebhookFirst => "webhook_first",
            Self::WebhookTwice => "webhook_twice",
        }
    }
}

/// Which calls a queued fault hits.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    PaymentIntents,
    Refunds,
}

/// `POST /v1/test/faults`: the next `count` calls to `target` get `fault`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QueueFault {
    pub target: Target,
    pub fault: Fault,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// `GET /v1/test/stats`: what the sandbox did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub charges: u64,
    pub refunds: u64,
    /// Faults injected, by name.
    pub faults: BTreeMap<String, u64>,
    pub webhooks_delivered: u64,
    pub webhooks_failed: u64,
}
