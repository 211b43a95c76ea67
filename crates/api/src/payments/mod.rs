//! Payments: the provider the node charges and refunds through (over HTTP,
//! PaymentIntents-shaped: the payments sandbox, or later Stripe), and the
//! upkeep that settles what a fault left open and reconciles the store with
//! the provider's ledger. `docs/payments.md` tells the whole flow.

mod provider;
pub mod upkeep;

pub use provider::{
    Charge, ChargeStatus, MadeRefund, Provider, ProviderError, ProviderSettings, RefundFor,
    WebhookError, WebhookEvent,
};

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
}
