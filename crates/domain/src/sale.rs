//! Flash sales: a quantity of one variant sold at a sale price in a room, for a
//! limited time, with a per-buyer limit.
//!
//! [`SaleStock::apply`] is the whole rule. The store applies the same rule in
//! its conditional updates; this is the rule itself, property-tested below.

use serde::Serialize;

use crate::ids::{RoomId, SaleId, ShopId, VariantId};
use crate::money::Money;
use crate::{Timestamp, ValidationError};

/// The most units one buyer may take from one sale, whatever the seller sets.
pub const MAX_PER_BUYER: i64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaleStatus {
    /// Created, waiting for its start.
    Scheduled,
    /// Buyable.
    Live,
    /// Every unit is reserved or paid; expired reservations can make it live again.
    SoldOut,
    /// Its time is up; unsold units went back to the variant.
    Ended,
    /// Stopped by the seller before or during the sale.
    Cancelled,
}

impl SaleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Live => "live",
            Self::SoldOut => "sold_out",
            Self::Ended => "ended",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scheduled" => Some(Self::Scheduled),
            "live" => Some(Self::Live),
            "sold_out" => Some(Self::SoldOut),
            "ended" => Some(Self::Ended),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// Ended and cancelled sales never change again.
    pub fn is_closed(self) -> bool {
        matches!(self, Self::Ended | Self::Cancelled)
    }
}

/// A flash sale as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FlashSale {
    pub id: SaleId,
    pub room_id: RoomId,
    pub shop_id: ShopId,
    pub variant_id: VariantId,
    pub price: Money,
    pub quantity: i64,
    /// Units not yet reserved.
    pub available: i64,
    pub per_buyer_limit: i64,
    pub status: SaleStatus,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// One more at every change of its stock or status.
    pub version: i64,
}

impl FlashSale {
    pub fn stock(&self) -> SaleStock {
        SaleStock {
            status: self.status,
            quantity: self.quantity,
            available: self.available,
        }
    }
}

/// What happens to a sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleEvent {
    /// The start time came (or the seller started it now).
    Start,
    /// Buyers reserved this many units.
    Claim(i64),
    /// Reservations of this many units expired or were cancelled.
    Release(i64),
    /// The end time came.
    End,
    /// The seller stopped the sale.
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaleError {
    #[error("the sale is {0:?}, not live")]
    NotLive(SaleStatus),
    #[error("only {available} units are left")]
    NotEnough { available: i64 },
    #[error("a {from:?} sale cannot take {event:?}")]
    Transition { from: SaleStatus, event: SaleEvent },
}

/// A sale's state and its stock: `quantity` units in all, `available` of them not
/// yet reserved. `quantity - available` units are reserved or paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleStock {
    pub status: SaleStatus,
    pub quantity: i64,
    pub available: i64,
}

impl SaleStock {
    pub fn new(quantity: SaleQuantity) -> Self {
        Self {
            status: SaleStatus::Scheduled,
            quantity: quantity.get(),
            available: quantity.get(),
        }
    }

    pub fn sold(self) -> i64 {
        self.quantity - self.available
    }

    pub fn apply(self, event: SaleEvent) -> Result<Self, SaleError> {
        use SaleEvent as E;
        use SaleStatus as S;
        let refuse = || SaleError::Transition {
            from: self.status,
            event,
        };
        match (self.status, event) {
            (S::Scheduled, E::Start) => Ok(Self {
                status: if self.available > 0 {
                    S::Live
                } else {
                    S::SoldOut
                },
                ..self
            }),
            (S::Live, E::Claim(n)) if n >= 1 => {
                if n > self.available {
                    return Err(SaleError::NotEnough {
                        available: self.available,
                    });
                }
                let available = self.available - n;
                Ok(Self {
                    status: if available == 0 { S::SoldOut } else { S::Live },
                    available,
                    ..self
                })
            }
            (S::Live | S::SoldOut, E::Release(n)) if n >= 1 && n <= self.sold() => Ok(Self {
                status: S::Live,
                available: self.available + n,
                ..self
            }),
            (S::Live | S::SoldOut, E::End) => Ok(Self {
                status: S::Ended,
                ..self
            }),
            (S::Scheduled | S::Live | S::SoldOut, E::Cancel) => Ok(Self {
                status: S::Cancelled,
                ..self
            }),
            (status @ (S::Scheduled | S::SoldOut | S::Ended | S::Cancelled), E::Claim(_)) => {
                Err(SaleError::NotLive(status))
            }
            _ => Err(refuse()),
        }
    }
}

/// How many units a sale offers: 1 to 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleQuantity(i64);

impl SaleQuantity {
    pub const MAX: i64 = 1_000_000;

    pub fn parse(n: i64) -> Result<Self, ValidationError> {
        if !(1..=Self::MAX).contains(&n) {
            return Err(ValidationError::new(
                "quantity",
                format!("must be between 1 and {}", Self::MAX),
            ));
        }
        Ok(Self(n))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// How many units one buyer may take in a purchase or in a sale: 1 to [`MAX_PER_BUYER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuyQuantity(i64);

impl BuyQuantity {
    pub fn parse(field: &'static str, n: i64) -> Result<Self, ValidationError> {
        if !(1..=MAX_PER_BUYER).contains(&n) {
            return Err(ValidationError::new(
                field,
                format!("must be between 1 and {MAX_PER_BUYER}"),
            ));
        }
        Ok(Self(n))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event() -> impl Strategy<Value = SaleEvent> {
        prop_oneof![
            1 => Just(SaleEvent::Start),
            6 => (-2..8i64).prop_map(SaleEvent::Claim),
            3 => (-2..8i64).prop_map(SaleEvent::Release),
            1 => Just(SaleEvent::End),
            1 => Just(SaleEvent::Cancel),
        ]
    }

    proptest! {
        /// Whatever happens, available stock stays within 0..=quantity, the units
        /// sold never exceed the quantity, a claim is granted only while live,
        /// and a closed sale never changes again.
        #[test]
        fn stock_invariants(quantity in 1..50i64, events in prop::collection::vec(event(), 0..200)) {
            let mut sale = SaleStock::new(SaleQuantity::parse(quantity).unwrap());
            let mut claimed = 0;
            let mut released = 0;
            for e in events {
                let before = sale;
                match sale.apply(e) {
                    Ok(next) => {
                        prop_assert!(!before.status.is_closed(), "{before:?} changed");
                        if let SaleEvent::Claim(n) = e {
                            prop_assert_eq!(before.status, SaleStatus::Live);
                            claimed += n;
                        }
                        if let SaleEvent::Release(n) = e {
                            released += n;
                        }
                        sale = next;
                    }
                    Err(_) => prop_assert_eq!(sale, before),
                }
                prop_assert!((0..=sale.quantity).contains(&sale.available));
                prop_assert!(sale.sold() <= sale.quantity);
                prop_assert_eq!(sale.sold(), claimed - released);
                if sale.status == SaleStatus::SoldOut {
                    prop_assert_eq!(sale.available, 0);
                }
                if sale.status == SaleStatus::Live {
                    prop_assert!(sale.available > 0);
                }
            }
        }
    }

    #[test]
    fn a_sale_sells_out_and_comes_back() {
        let sale = SaleStock::new(SaleQuantity::parse(2).unwrap());
        assert_eq!(
            sale.apply(SaleEvent::Claim(1)),
            Err(SaleError::NotLive(SaleStatus::Scheduled))
        );
        let live = sale.apply(SaleEvent::Start).unwrap();
        assert_eq!(
            live.apply(SaleEvent::Claim(3)),
            Err(SaleError::NotEnough { available: 2 })
        );
        let out = live.apply(SaleEvent::Claim(2)).unwrap();
        assert_eq!(out.status, SaleStatus::SoldOut);
        assert_eq!(
            out.apply(SaleEvent::Claim(1)),
            Err(SaleError::NotLive(SaleStatus::SoldOut))
        );
        let back = out.apply(SaleEvent::Release(1)).unwrap();
        assert_eq!((back.status, back.available), (SaleStatus::Live, 1));
        let ended = back.apply(SaleEvent::End).unwrap();
        assert!(
            ended.apply(SaleEvent::Release(1)).is_err(),
            "after the end, units go back to the variant"
        );
    }

    #[test]
    fn quantities_are_bounded() {
        assert!(SaleQuantity::parse(0).is_err());
        assert!(SaleQuantity::parse(SaleQuantity::MAX + 1).is_err());
        assert!(BuyQuantity::parse("quantity", 0).is_err());
        assert!(BuyQuantity::parse("quantity", MAX_PER_BUYER + 1).is_err());
        assert_eq!(BuyQuantity::parse("quantity", 3).unwrap().get(), 3);
    }
}
