//! Orders: what a buyer reserved, paid, received or got back. Every change of
//! state goes through [`OrderState::apply`], and the store keeps each one with its
//! time, actor and reason.

use serde::Serialize;

use crate::Timestamp;
use crate::ids::{
    OrderEventId, OrderId, PaymentId, ProductId, RefundId, RoomId, SaleId, ShopId, UserId,
    VariantId,
};
use crate::money::Money;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Stock is held for the buyer until the reservation expires.
    Reserved,
    Paid,
    /// Shipped, with a carrier and tracking number.
    Fulfilled,
    /// Cancelled before payment; the stock went back.
    Cancelled,
    /// Not paid in time; the stock went back.
    Expired,
    /// Everything paid was refunded.
    Refunded,
    /// Part of what was paid was refunded.
    PartiallyRefunded,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Paid => "paid",
            Self::Fulfilled => "fulfilled",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Refunded => "refunded",
            Self::PartiallyRefunded => "partially_refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reserved" => Some(Self::Reserved),
            "paid" => Some(Self::Paid),
            "fulfilled" => Some(Self::Fulfilled),
            "cancelled" => Some(Self::Cancelled),
            "expired" => Some(Self::Expired),
            "refunded" => Some(Self::Refunded),
            "partially_refunded" => Some(Self::PartiallyRefunded),
            _ => None,
        }
    }
}

/// One line of an order, with the price at the moment of purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderLine {
    pub variant_id: VariantId,
    pub product_id: ProductId,
    pub sku: String,
    pub title: String,
    pub quantity: i64,
    pub unit_price: Money,
}

/// One change of an order's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderHistoryEntry {
    pub id: OrderEventId,
    /// The state after the change.
    pub status: OrderStatus,
    /// Who made it; absent for Hawker itself (expiry, a payment provider's callback).
    pub actor_id: Option<UserId>,
    pub reason: String,
    /// The money moved, for payments and refunds.
    pub amount: Option<Money>,
    pub at: Timestamp,
}

/// How an order was shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Shipment {
    pub carrier: String,
    pub tracking_number: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Order {
    pub id: OrderId,
    pub buyer_id: UserId,
    pub shop_id: ShopId,
    pub room_id: Option<RoomId>,
    pub sale_id: Option<SaleId>,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    pub paid: Money,
    pub refunded: Money,
    /// When an unpaid reservation lapses.
    pub expires_at: Option<Timestamp>,
    /// Set once the seller has shipped it.
    pub shipment: Option<Shipment>,
    pub history: Vec<OrderHistoryEntry>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Written before the provider is asked; its answer is not in yet.
    Attempting,
    /// The provider answers later, through a webhook.
    Processing,
    Succeeded,
    Failed,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attempting => "attempting",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "attempting" => Some(Self::Attempting),
            "processing" => Some(Self::Processing),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One attempt to pay an order through a payment provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Payment {
    pub id: PaymentId,
    pub order_id: OrderId,
    pub provider: String,
    /// The provider's id for it (a PaymentIntent's id at Stripe); none until
    /// the provider has answered.
    pub provider_payment_id: Option<String>,
    pub amount: Money,
    pub status: PaymentStatus,
    /// Why it failed: `card_declined`, `insufficient_funds`, ...
    pub failure_code: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Money given back to a buyer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Refund {
    pub id: RefundId,
    pub order_id: OrderId,
    pub payment_id: PaymentId,
    pub amount: Money,
    pub reason: String,
    /// Whether the units go back on the shelf.
    pub restock: bool,
    pub status: RefundStatus,
    pub created_at: Timestamp,
}

/// Where a refund is: its amount is claimed before the provider is asked, so
/// claims never add up to more than was paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Claimed; the provider's answer is not in yet (it is asked again with
    /// the same key until it answers).
    Pending,
    Succeeded,
    /// The provider refused it; the claim was released.
    Failed,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// What happens to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEvent {
    /// The payment provider confirmed this amount.
    Pay(Money),
    /// The seller shipped it.
    Fulfill,
    /// The buyer or the seller cancelled it before payment.
    Cancel,
    /// The reservation window passed without payment.
    Expire,
    /// The seller refunded this amount.
    Refund(Money),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("a {from:?} order cannot take {event:?}")]
    Transition {
        from: OrderStatus,
        event: OrderEvent,
    },
    #[error("the payment must be the order's total, {total}")]
    WrongAmount { total: Money },
    #[error("at most {refundable} can still be refunded")]
    RefundTooLarge { refundable: Money },
}

/// An order's status and its money: the total, what was paid and what was refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderState {
    pub status: OrderStatus,
    pub total: Money,
    pub paid: Money,
    pub refunded: Money,
}

impl OrderState {
    /// The state of an existing order.
    pub fn of(order: &Order) -> Self {
        Self {
            status: order.status,
            total: order.total,
            paid: order.paid,
            refunded: order.refunded,
        }
    }

    /// A new order holding its reservation.
    pub fn reserved(total: Money) -> Self {
        let zero = Money { amount: 0, ..total };
        Self {
            status: OrderStatus::Reserved,
            total,
            paid: zero,
            refunded: zero,
        }
    }

    /// What a refund may still return.
    pub fn refundable(self) -> Money {
        Money {
            amount: self.paid.amount - self.refunded.amount,
            ..self.paid
        }
    }

    /// Whether the order's stock is held or sold (not returned).
    pub fn holds_stock(self) -> bool {
        !matches!(self.status, OrderStatus::Cancelled | OrderStatus::Expired)
    }

    pub fn apply(self, event: OrderEvent) -> Result<Self, OrderError> {
        use OrderEvent as E;
        use OrderStatus as S;
        let refuse = || OrderError::Transition {
            from: self.status,
            event,
        };
        match (self.status, event) {
            (S::Reserved, E::Pay(amount)) => {
                if amount != self.total {
                    return Err(OrderError::WrongAmount { total: self.total });
                }
                Ok(Self {
                    status: S::Paid,
                    paid: amount,
                    ..self
                })
            }
            (S::Reserved, E::Cancel) => Ok(Self {
                status: S::Cancelled,
                ..self
            }),
            (S::Reserved, E::Expire) => Ok(Self {
                status: S::Expired,
                ..self
            }),
            (S::Paid | S::PartiallyRefunded, E::Fulfill) if self.refundable().amount > 0 => {
                Ok(Self {
                    status: S::Fulfilled,
                    ..self
                })
            }
            (S::Paid | S::Fulfilled | S::PartiallyRefunded, E::Refund(amount)) => {
                if amount.currency != self.paid.currency || amount.amount <= 0 {
                    return Err(refuse());
                }
                if amount.amount > self.refundable().amount {
                    return Err(OrderError::RefundTooLarge {
                        refundable: self.refundable(),
                    });
                }
                let refunded = Money {
                    amount: self.refunded.amount + amount.amount,
                    ..self.refunded
                };
                let status = if refunded.amount == self.paid.amount {
                    S::Refunded
                } else {
                    S::PartiallyRefunded
                };
                Ok(Self {
                    status,
                    refunded,
                    ..self
                })
            }
            _ => Err(refuse()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur(amount: i64) -> Money {
        Money::parse(amount, "EUR").unwrap()
    }

    /// Events for an order of `total` cents: payments of exactly the total or of
    /// another amount, refunds of any size.
    fn event(total: i64) -> impl Strategy<Value = OrderEvent> {
        prop_oneof![
            Just(OrderEvent::Pay(eur(total))),
            (0..2 * total).prop_map(|a| OrderEvent::Pay(eur(a))),
            Just(OrderEvent::Fulfill),
            Just(OrderEvent::Cancel),
            Just(OrderEvent::Expire),
            (0..total + 5).prop_map(|a| OrderEvent::Refund(eur(a))),
        ]
    }

    fn order_and_events() -> impl Strategy<Value = (i64, Vec<OrderEvent>)> {
        (1..10_000i64)
            .prop_flat_map(|total| (Just(total), prop::collection::vec(event(total), 0..60)))
    }

    proptest! {
        /// Refunds never exceed what was paid, payment is all or nothing, every
        /// accepted refund is counted once, and a cancelled, expired or reserved
        /// order holds no money.
        #[test]
        fn money_invariants((total, events) in order_and_events()) {
            let mut order = OrderState::reserved(eur(total));
            let mut refunds = 0;
            for e in events {
                let before = order;
                match order.apply(e) {
                    Ok(next) => {
                        if let OrderEvent::Refund(m) = e {
                            refunds += m.amount;
                        }
                        order = next;
                    }
                    Err(_) => prop_assert_eq!(order, before),
                }
                prop_assert!(order.refunded.amount <= order.paid.amount);
                prop_assert!(order.paid.amount == 0 || order.paid.amount == total);
                prop_assert_eq!(order.refunded.amount, refunds);
                if matches!(order.status, OrderStatus::Cancelled | OrderStatus::Expired | OrderStatus::Reserved) {
                    prop_assert_eq!(order.paid.amount, 0);
                }
                if order.status == OrderStatus::Refunded {
                    prop_assert_eq!(order.refunded.amount, order.paid.amount);
                }
            }
        }
    }

    #[test]
    fn pay_fulfil_refund() {
        let order = OrderState::reserved(eur(1000));
        assert_eq!(
            order.apply(OrderEvent::Pay(eur(999))),
            Err(OrderError::WrongAmount { total: eur(1000) })
        );
        assert!(order.apply(OrderEvent::Fulfill).is_err());
        let paid = order.apply(OrderEvent::Pay(eur(1000))).unwrap();
        let shipped = paid.apply(OrderEvent::Fulfill).unwrap();
        let part = shipped.apply(OrderEvent::Refund(eur(300))).unwrap();
        assert_eq!(part.status, OrderStatus::PartiallyRefunded);
        assert_eq!(
            part.apply(OrderEvent::Refund(eur(701))),
            Err(OrderError::RefundTooLarge {
                refundable: eur(700)
            })
        );
        let full = part.apply(OrderEvent::Refund(eur(700))).unwrap();
        assert_eq!(full.status, OrderStatus::Refunded);
        assert!(full.apply(OrderEvent::Refund(eur(1))).is_err());
        assert!(
            !OrderState::reserved(eur(5))
                .apply(OrderEvent::Expire)
                .unwrap()
                .holds_stock()
        );
    }
}
