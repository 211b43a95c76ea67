//! What a request with an Idempotency-Key answered, as the store keeps it:
//! typed, with no HTTP status and none of the API's words for a refusal. The
//! API turns an [`Answer`] into a status and a body, the same way for the first
//! answer and for every replay, so a replay is byte for byte the first answer.

use domain::ids::VariantId;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

/// Why a purchase was refused; nothing was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    /// The flash sale has no units left.
    SoldOut,
    /// The buyer would hold more than the sale's per-buyer limit.
    LimitReached,
    /// The sale has not started, has ended or was cancelled.
    NotLive,
    /// A line asks for more than its variant has left.
    OutOfStock { variant: VariantId, on_hand: i64 },
    /// A line's variant does not exist or its product is not for sale.
    UnknownVariant { variant: VariantId },
    /// The lines come from more than one shop.
    MixedShops,
    /// The buyer, or the buyer's address, holds as many unpaid reservations
    /// as it may ([`crate::UnpaidCaps`]).
    TooManyUnpaid,
}

/// The answer kept under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The request made something (an order, a payment, a refund): its JSON,
    /// as first sent.
    Made(String),
    /// The request started something still in progress (a payment the
    /// provider has not decided yet): its JSON, as first sent.
    Started(String),
    /// The store refused a purchase.
    Refused(Refusal),
    /// The API refused the request: its error document, as first sent.
    Failed(String),
}

impl Answer {
    /// The `outcome` and `body` columns.
    pub(crate) fn columns(&self) -> Result<(&'static str, String)> {
        Ok(match self {
            Self::Made(body) => ("made", body.clone()),
            Self::Started(body) => ("started", body.clone()),
            Self::Refused(refusal) => (
                "refused",
                serde_json::to_string(refusal).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ),
            Self::Failed(body) => ("failed", body.clone()),
        })
    }

    /// Reads the columns back; `None` while the key's request is unfinished.
    pub(crate) fn from_columns(
        outcome: Option<String>,
        body: Option<String>,
    ) -> Result<Option<Self>> {
        let Some(outcome) = outcome else {
            return Ok(None);
        };
        let body = body.unwrap_or_default();
        Ok(Some(match outcome.as_str() {
            "made" => Self::Made(body),
            "started" => Self::Started(body),
            "refused" => Self::Refused(
                serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ),
            "failed" => Self::Failed(body),
            other => return Err(StoreError::Corrupt(format!("key outcome {other:?}"))),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn answers_read_back_as_they_were_kept() {
        for answer in [
            Answer::Made(r#"{"id":"ord_1"}"#.into()),
            Answer::Started("{}".into()),
            Answer::Refused(Refusal::SoldOut),
            Answer::Refused(Refusal::OutOfStock {
                variant: VariantId::from_string("var_1"),
                on_hand: 2,
            }),
            Answer::Failed(r#"{"error":{}}"#.into()),
        ] {
            let (outcome, body) = answer.columns().unwrap();
            let back = Answer::from_columns(Some(outcome.into()), Some(body)).unwrap();
            assert_eq!(back, Some(answer));
        }
        assert_eq!(Answer::from_columns(None, None).unwrap(), None);
    }
}
