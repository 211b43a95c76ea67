//! Opaque identifiers. Each kind carries a short prefix (`shop_`, `var_`, ...) so
//! that an id pasted in the wrong place is obvious, then a UUIDv7 so ids sort by
//! creation time, which cursor pagination relies on.

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id, later than every id this process made before.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// An id read back from storage or from a URL; it is opaque, so any
            /// string is accepted and a wrong one simply matches nothing.
            pub fn from_string(s: impl Into<String>) -> Self {
                Self(s.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A person's account.
    UserId, "usr"
);
id_type!(
    /// A sign-in session (cookie or bearer token).
    SessionId, "ses"
);
id_type!(
    /// A personal API token.
    TokenId, "tok"
);
id_type!(
    /// A shop.
    ShopId, "shop"
);
id_type!(
    /// A product.
    ProductId, "prod"
);
id_type!(
    /// One purchasable variant (a SKU) of a product.
    VariantId, "var"
);
id_type!(
    /// One entry of the stock ledger.
    AdjustmentId, "adj"
);
id_type!(
    /// A live room.
    RoomId, "room"
);

id_type!(
    /// A flash sale.
    SaleId, "sale"
);
id_type!(
    /// An order.
    OrderId, "ord"
);
id_type!(
    /// One entry of an order's history.
    OrderEventId, "oev"
);
id_type!(
    /// A payment attempt.
    PaymentId, "pay"
);
id_type!(
    /// A refund.
    RefundId, "ref"
);
id_type!(
    /// A chat message in a live room.
    MessageId, "msg"
);
id_type!(
    /// A product pinned in a live room, for a while.
    PinId, "pin"
);
id_type!(
    /// The recording of one live.
    RecordingId, "rec"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_sort_by_creation() {
        let a = ShopId::generate();
        let b = ShopId::generate();
        assert!(a.as_str().starts_with("shop_"));
        assert!(a < b);
    }
}
