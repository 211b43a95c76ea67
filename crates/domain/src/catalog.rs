//! The catalog: shops, their products, and each product's variants (SKUs).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ids::{ProductId, ShopId, UserId, VariantId};
use crate::money::{Currency, Money};
use crate::text::{clean, text_type};
use crate::{Timestamp, ValidationError};

/// A shop's URL handle: `/api/v1/shops/demo`. Lower-case letters, digits and
/// single hyphens, 3 to 32 characters, not starting or ending with a hyphen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Handle(String);

impl Handle {
    /// Handles that would read as part of Hawker itself.
    const RESERVED: &[&str] = &[
        "admin", "api", "hawker", "new", "settings", "studio", "support",
    ];

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let s = input.trim().to_lowercase();
        let err = |m: &str| Err(ValidationError::new("handle", m));
        if !(3..=32).contains(&s.len()) {
            return err("must be 3 to 32 characters");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return err("may contain only letters, digits and hyphens");
        }
        if s.starts_with('-') || s.ends_with('-') || s.contains("--") {
            return err("must not start or end with a hyphen or repeat one");
        }
        if s.starts_with(ShopId::PREFIX) && s[ShopId::PREFIX.len()..].starts_with('_') {
            return err("must not look like a shop id");
        }
        if Self::RESERVED.contains(&s.as_str()) {
            return err("is reserved");
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

text_type!(
    /// A shop's display name.
    ShopName, "name", 1, 80, false
);
text_type!(
    /// A product's or a room's title.
    Title, "title", 1, 200, false
);
text_type!(
    /// Free text shown under a shop, product or room; may be empty.
    Description, "description", 0, 5000, true
);

/// The sites that may show a shop's embeddable player in a frame: origins such
/// as `https://shop.example` or `https://*.example.com` (a port is allowed, a
/// path is not), at most [`EmbedOrigins::MAX`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct EmbedOrigins(Vec<String>);

impl EmbedOrigins {
    pub const MAX: usize = 20;

    pub fn parse(input: &[String]) -> Result<Self, ValidationError> {
        let err = |m: String| Err(ValidationError::new("embed_origins", &m));
        if input.len() > Self::MAX {
            return err(format!("at most {} origins", Self::MAX));
        }
        let mut origins = Vec::with_capacity(input.len());
        for raw in input {
            let origin = raw.trim().trim_end_matches('/').to_lowercase();
            let host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let valid = host.is_some_and(|host| {
                let (name, port) = host.split_once(':').unwrap_or((host, "0"));
                let name = name.strip_prefix("*.").unwrap_or(name);
                !name.is_empty()
                    && name.len() <= 253
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                    && port.parse::<u16>().is_ok()
            });
            if !valid {
                return err(format!(
                    "{raw:?} is not an origin such as https://shop.example"
                ));
            }
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(Self(origins))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// Whether buyers can see a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    /// Only the seller sees it.
    Draft,
    /// Listed and buyable.
    Active,
    /// Kept for past orders, hidden from buyers.
    Archived,
}

impl ProductStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "draft" => Some(Self::Draft),
            "active" => Some(Self::Active),
            "archived" => Some(Self::Archived),
            _ => None,
        }
    }
}

/// A stock-keeping unit, unique within a shop: letters, digits, `.`, `_`, `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Sku(String);

impl Sku {
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let s = input.trim();
        if !(1..=64).contains(&s.len()) {
            return Err(ValidationError::new("sku", "must be 1 to 64 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(ValidationError::new(
                "sku",
                "may contain only letters, digits, '.', '_' and '-'",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for Sku {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A variant's option values, such as `{"size": "M", "colour": "red"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct OptionValues(BTreeMap<String, String>);

impl OptionValues {
    pub const MAX_OPTIONS: usize = 5;

    pub fn parse(input: &BTreeMap<String, String>) -> Result<Self, ValidationError> {
        if input.len() > Self::MAX_OPTIONS {
            return Err(ValidationError::new(
                "options",
                format!("at most {} options per variant", Self::MAX_OPTIONS),
            ));
        }
        let mut out = BTreeMap::new();
        for (name, value) in input {
            let name = clean("options", name, 1, 30, false)?.to_lowercase();
            let value = clean("options", value, 1, 60, false)?;
            if out.insert(name, value).is_some() {
                return Err(ValidationError::new("options", "option names repeat"));
            }
        }
        Ok(Self(out))
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for OptionValues {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(d)?;
        Self::parse(&map).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Shop {
    pub id: ShopId,
    pub owner_id: UserId,
    pub handle: Handle,
    pub name: ShopName,
    /// Every price in the shop is in this currency.
    pub currency: Currency,
    pub description: Description,
    /// Sites that may frame the shop's embeddable player.
    pub embed_origins: EmbedOrigins,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Variant {
    pub id: VariantId,
    pub product_id: ProductId,
    pub sku: Sku,
    pub options: OptionValues,
    pub price: Money,
    /// Units on the shelf. Changes only through stock adjustments.
    pub stock_on_hand: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Product {
    pub id: ProductId,
    pub shop_id: ShopId,
    pub title: Title,
    pub description: Description,
    pub status: ProductStatus,
    /// Image ids (content hashes) in display order; served at `/images/{id}`.
    pub images: Vec<String>,
    pub variants: Vec<Variant>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The image formats a shop may upload, recognised from their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Jpeg,
    Png,
    Webp,
}

impl ImageFormat {
    /// Recognises an image by its content, never by a file name or a header the
    /// client chose. Checks the signature and that the header is long enough to be real.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
        if bytes.len() >= 33 && bytes.starts_with(PNG) && &bytes[12..16] == b"IHDR" {
            return Some(Self::Png);
        }
        if bytes.len() >= 4 && bytes[..3] == [0xFF, 0xD8, 0xFF] {
            return Some(Self::Jpeg);
        }
        if bytes.len() >= 16
            && &bytes[..4] == b"RIFF"
            && &bytes[8..12] == b"WEBP"
            && matches!(&bytes[12..16], b"VP8 " | b"VP8L" | b"VP8X")
        {
            return Some(Self::Webp);
        }
        None
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
        }
    }

    pub fn from_content_type(s: &str) -> Option<Self> {
        match s {
            "image/jpeg" => Some(Self::Jpeg),
            "image/png" => Some(Self::Png),
            "image/webp" => Some(Self::Webp),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles() {
        assert_eq!(Handle::parse(" Demo ").unwrap().as_str(), "demo");
        assert!(Handle::parse("my-shop-2").is_ok());
        for bad in [
            "ab",
            "-abc",
            "abc-",
            "a--b",
            "a b",
            "shöp",
            "api",
            "shop_123",
            &"a".repeat(33),
        ] {
            assert!(Handle::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn skus() {
        assert!(Sku::parse("TEE-RED.M_1").is_ok());
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("a/b").is_err());
    }

    #[test]
    fn options_are_bounded_and_lower_cased() {
        let mut m = BTreeMap::new();
        m.insert("Size".into(), " M ".into());
        let o = OptionValues::parse(&m).unwrap();
        assert_eq!(o.as_map().get("size").map(String::as_str), Some("M"));
        m.insert("size".into(), "L".into());
        assert!(OptionValues::parse(&m).is_err(), "Size and size collide");
    }

    #[test]
    fn images_are_sniffed_by_content() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.resize(40, 0);
        assert_eq!(ImageFormat::sniff(&png), Some(ImageFormat::Png));
        assert_eq!(
            ImageFormat::sniff(b"\xFF\xD8\xFF\xE0rest"),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(
            ImageFormat::sniff(b"RIFF\0\0\0\0WEBPVP8 data"),
            Some(ImageFormat::Webp)
        );
        assert_eq!(ImageFormat::sniff(b"GIF89a......"), None);
        assert_eq!(ImageFormat::sniff(b"<svg></svg>"), None);
        assert_eq!(ImageFormat::sniff(&png[..20]), None);
    }
}
