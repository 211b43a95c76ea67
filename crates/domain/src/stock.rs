//! Stock changes. Every change to a variant's stock on hand is an adjustment with
//! a reason and an actor, kept in a ledger, so "why is this 3?" always has an answer.

use serde::Serialize;

use crate::ids::{AdjustmentId, UserId, VariantId};
use crate::{Timestamp, ValidationError};

/// Why stock changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentReason {
    /// The stock a variant was created with.
    Initial,
    /// Goods arrived.
    Received,
    /// A count found a different number.
    Correction,
    /// Damaged or lost goods written off.
    Damaged,
    /// A buyer sent goods back.
    Returned,
    /// Units set aside for a flash sale when it started.
    SaleAllocated,
    /// Units of a flash sale that were not sold, back when it ended.
    SaleReturned,
    /// Units held by an order bought at the regular price.
    Reserved,
    /// Units of a reservation that lapsed unpaid or was cancelled.
    ReservationReleased,
}

impl AdjustmentReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Received => "received",
            Self::Correction => "correction",
            Self::Damaged => "damaged",
            Self::Returned => "returned",
            Self::SaleAllocated => "sale_allocated",
            Self::SaleReturned => "sale_returned",
            Self::Reserved => "reserved",
            Self::ReservationReleased => "reservation_released",
        }
    }

    /// Whether a seller may record this reason by hand; the others are written
    /// by Hawker itself (a variant's creation, flash sales).
    pub fn is_manual(self) -> bool {
        matches!(
            self,
            Self::Received | Self::Correction | Self::Damaged | Self::Returned
        )
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "initial" => Some(Self::Initial),
            "received" => Some(Self::Received),
            "correction" => Some(Self::Correction),
            "damaged" => Some(Self::Damaged),
            "returned" => Some(Self::Returned),
            "sale_allocated" => Some(Self::SaleAllocated),
            "sale_returned" => Some(Self::SaleReturned),
            "reserved" => Some(Self::Reserved),
            "reservation_released" => Some(Self::ReservationReleased),
            _ => None,
        }
    }
}

/// The most stock one variant may hold, and so the largest single change.
pub const MAX_STOCK: i64 = 1_000_000_000;

/// A change to stock on hand: never zero, never larger than [`MAX_STOCK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockDelta(i64);

impl StockDelta {
    pub fn parse(delta: i64) -> Result<Self, ValidationError> {
        if delta == 0 {
            return Err(ValidationError::new("delta", "must not be zero"));
        }
        if delta.unsigned_abs() > MAX_STOCK.unsigned_abs() {
            return Err(ValidationError::new(
                "delta",
                format!("must be between -{MAX_STOCK} and {MAX_STOCK}"),
            ));
        }
        Ok(Self(delta))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// A starting stock level: 0 to [`MAX_STOCK`].
pub fn parse_stock_level(field: &'static str, n: i64) -> Result<i64, ValidationError> {
    if !(0..=MAX_STOCK).contains(&n) {
        return Err(ValidationError::new(
            field,
            format!("must be between 0 and {MAX_STOCK}"),
        ));
    }
    Ok(n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    #[error("stock on hand is {on_hand}; it cannot go below zero")]
    WouldGoNegative { on_hand: i64 },
    #[error("stock on hand cannot exceed {MAX_STOCK}")]
    WouldOverflow,
}

/// The stock level after applying `delta` to `on_hand`. The store enforces the same
/// rule in its conditional update; this is the rule itself, property-tested below.
pub fn apply(on_hand: i64, delta: StockDelta) -> Result<i64, StockError> {
    let next = on_hand + delta.get();
    if next < 0 {
        return Err(StockError::WouldGoNegative { on_hand });
    }
    if next > MAX_STOCK {
        return Err(StockError::WouldOverflow);
    }
    Ok(next)
}

/// One line of a variant's stock ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StockAdjustment {
    pub id: AdjustmentId,
    pub variant_id: VariantId,
    pub delta: i64,
    pub reason: AdjustmentReason,
    pub note: String,
    /// Who made the change.
    pub actor_id: UserId,
    /// Stock on hand right after this change.
    pub on_hand_after: i64,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever sequence of changes is attempted, stock never goes below zero or
        /// above the maximum, and it always equals the sum of the accepted changes.
        #[test]
        fn ledger_is_consistent(start in 0..1000i64, deltas in prop::collection::vec(-500..500i64, 0..100)) {
            let mut on_hand = start;
            let mut accepted = start;
            for d in deltas {
                let Ok(delta) = StockDelta::parse(d) else { continue };
                if let Ok(next) = apply(on_hand, delta) {
                    on_hand = next;
                    accepted += d;
                }
                prop_assert!((0..=MAX_STOCK).contains(&on_hand));
                prop_assert_eq!(on_hand, accepted);
            }
        }
    }

    #[test]
    fn refuses_to_go_negative() {
        let d = StockDelta::parse(-4).unwrap();
        assert_eq!(apply(3, d), Err(StockError::WouldGoNegative { on_hand: 3 }));
        assert!(StockDelta::parse(0).is_err());
        assert!(StockDelta::parse(MAX_STOCK + 1).is_err());
    }
}
