//! Money is an integer count of minor units with an ISO-4217 currency. No floats.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ValidationError;

/// An ISO-4217 currency that has minor units (so not XAU, XDR and the like).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, ValidationError> {
        let c = iso_currency::Currency::from_code(code).ok_or_else(|| {
            ValidationError::new("currency", format!("{code:?} is not an ISO-4217 code"))
        })?;
        if c.exponent().is_none() {
            return Err(ValidationError::new(
                "currency",
                format!("{code} has no minor unit and cannot be used for prices"),
            ));
        }
        Ok(Self(c))
    }

    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point: 2 for EUR, 0 for JPY, 3 for KWD.
    pub fn exponent(self) -> u16 {
        self.0.exponent().unwrap_or(0)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Self::parse(&code).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("ISO-4217 currency code"))
            .into()
    }
}

impl utoipa::ToSchema for Currency {}

/// An amount of money: `{"amount": 1999, "currency": "EUR"}` is 19.99 EUR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub struct Money {
    /// Integer count of the currency's minor units (cents for EUR).
    pub amount: i64,
    pub currency: Currency,
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Carried {
            amount: i64,
            currency: Currency,
        }
        let c = Carried::deserialize(d)?;
        Self::new(c.amount, c.currency).map_err(serde::de::Error::custom)
    }
}

impl Money {
    /// The largest amount Hawker accepts for one price: 10^13 minor units.
    pub const MAX_AMOUNT: i64 = 10_000_000_000_000;

    pub fn new(amount: i64, currency: Currency) -> Result<Self, ValidationError> {
        if amount < 0 {
            return Err(ValidationError::new("amount", "must not be negative"));
        }
        if amount > Self::MAX_AMOUNT {
            return Err(ValidationError::new(
                "amount",
                format!("must be at most {}", Self::MAX_AMOUNT),
            ));
        }
        Ok(Self { amount, currency })
    }

    pub fn parse(amount: i64, currency: &str) -> Result<Self, ValidationError> {
        Self::new(amount, Currency::parse(currency)?)
    }

    /// `self * n`, or `None` past [`Money::MAX_AMOUNT`] times a realistic count.
    pub fn times(self, n: i64) -> Option<Self> {
        Some(Self {
            amount: self.amount.checked_mul(n)?,
            currency: self.currency,
        })
    }

    /// Sum of two amounts in the same currency.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        (self.currency == other.currency).then_some(())?;
        Some(Self {
            amount: self.amount.checked_add(other.amount)?,
            currency: self.currency,
        })
    }
}

impl std::fmt::Display for Money {
    /// `19.99 EUR`, `500 JPY`: exact, from the integer, with the currency's exponent.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let exp = u32::from(self.currency.exponent());
        if exp == 0 {
            return write!(f, "{} {}", self.amount, self.currency);
        }
        let unit = 10i64.pow(exp);
        let sign = if self.amount < 0 { "-" } else { "" };
        let abs = self.amount.unsigned_abs();
        let (whole, frac) = (abs / unit.unsigned_abs(), abs % unit.unsigned_abs());
        write!(
            f,
            "{sign}{whole}.{frac:0width$} {}",
            self.currency,
            width = exp as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_currencies_only() {
        assert_eq!(Currency::parse("EUR").unwrap().exponent(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert!(Currency::parse("XAU").is_err());
        assert!(Currency::parse("ABC").is_err());
        assert!(Currency::parse("eur").is_err());
    }

    #[test]
    fn rejects_negative_and_huge_amounts() {
        assert!(Money::parse(-1, "EUR").is_err());
        assert!(Money::parse(Money::MAX_AMOUNT + 1, "EUR").is_err());
        assert!(Money::parse(0, "EUR").is_ok());
    }

    #[test]
    fn displays_exactly() {
        assert_eq!(Money::parse(1999, "EUR").unwrap().to_string(), "19.99 EUR");
        assert_eq!(Money::parse(5, "USD").unwrap().to_string(), "0.05 USD");
        assert_eq!(Money::parse(500, "JPY").unwrap().to_string(), "500 JPY");
        assert_eq!(Money::parse(1234, "KWD").unwrap().to_string(), "1.234 KWD");
    }

    #[test]
    fn arithmetic_checks_currency_and_overflow() {
        let eur = Money::parse(100, "EUR").unwrap();
        let usd = Money::parse(100, "USD").unwrap();
        assert_eq!(eur.checked_add(eur).unwrap().amount, 200);
        assert!(eur.checked_add(usd).is_none());
        assert!(eur.times(i64::MAX).is_none());
    }
}
