use unicode_normalization::UnicodeNormalization;

/// A value a client sent that breaks a rule; `field` names the input it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Normalises user text the same way everywhere: Unicode NFC, control characters
/// removed (newlines kept only where `multiline`), surrounding whitespace trimmed,
/// then checks its length in characters.
pub(crate) fn clean(
    field: &'static str,
    input: &str,
    min_chars: usize,
    max_chars: usize,
    multiline: bool,
) -> Result<String, ValidationError> {
    let normalised: String = input
        .nfc()
        .filter(|c| !c.is_control() || (multiline && *c == '\n'))
        .collect();
    let trimmed = normalised.trim();
    let chars = trimmed.chars().count();
    if chars < min_chars {
        return Err(if min_chars == 1 {
            ValidationError::new(field, "must not be empty")
        } else {
            ValidationError::new(field, format!("must be at least {min_chars} characters"))
        });
    }
    if chars > max_chars {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// One line of user text (carrier names, reasons, notes), cleaned as every text
/// is and bounded in characters.
pub fn short_text(
    field: &'static str,
    input: &str,
    min_chars: usize,
    max_chars: usize,
) -> Result<String, ValidationError> {
    clean(field, input, min_chars, max_chars, false)
}

/// A newtype over cleaned text with a length range in characters.
macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $min:literal, $max:literal, $multiline:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(input: &str) -> Result<Self, ValidationError> {
                $crate::text::clean($field, input, $min, $max, $multiline).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use text_type;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_controls_and_trims() {
        assert_eq!(clean("f", "  a\u{0}b\u{7}\n ", 1, 10, false).unwrap(), "ab");
        assert_eq!(clean("f", "a\nb", 1, 10, true).unwrap(), "a\nb");
    }

    #[test]
    fn counts_characters_after_normalisation() {
        // "e" + combining acute becomes one character under NFC.
        assert_eq!(clean("f", "e\u{301}", 1, 1, false).unwrap(), "\u{e9}");
        assert!(clean("f", "   ", 1, 10, false).is_err());
        assert!(clean("f", "abcdef", 1, 5, false).is_err());
    }
}
