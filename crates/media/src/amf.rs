//! AMF0, the encoding of RTMP commands and of FLV's `onMetaData`.
//!
//! Decoding takes bytes from the network: it never trusts a count to allocate,
//! bounds nesting, and answers every malformed input with an error.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq)]
pub enum Amf {
    Number(f64),
    Boolean(bool),
    String(String),
    Object(Vec<(String, Amf)>),
    Null,
    Undefined,
    EcmaArray(Vec<(String, Amf)>),
    StrictArray(Vec<Amf>),
    Date(f64),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AmfError {
    #[error("AMF0 value cut short")]
    Truncated,
    #[error("AMF0 marker {0:#04x} is not supported")]
    UnsupportedMarker(u8),
    #[error("AMF0 values nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("AMF0 string is not UTF-8")]
    NotUtf8,
    #[error("more than {0} AMF0 values in one message")]
    TooMany(usize),
}

const MAX_DEPTH: usize = 16;

/// Values one message may decode into unless the caller says otherwise: an
/// encoder's `onMetaData` holds a few dozen.
pub const MAX_VALUES: usize = 1024;

impl Amf {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Amf> {
        match self {
            Amf::Object(pairs) | Amf::EcmaArray(pairs) => {
                pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    pub fn object(pairs: &[(&str, Amf)]) -> Self {
        Amf::Object(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    pub fn string(s: &str) -> Self {
        Amf::String(s.to_owned())
    }
}

/// Every value in `bytes`, in order, at most [`MAX_VALUES`] of them.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Amf>, AmfError> {
    decode_at_most(bytes, MAX_VALUES)
}

/// Every value in `bytes`, in order; more than `max_values` (nested ones
/// counted) is an error, so that a message of a million null markers costs
/// a bounded amount of work.
pub fn decode_at_most(mut bytes: &[u8], max_values: usize) -> Result<Vec<Amf>, AmfError> {
    let mut budget = Budget {
        left: max_values,
        max: max_values,
    };
    let mut values = Vec::new();
    while !bytes.is_empty() {
        values.push(decode(&mut bytes, 0, &mut budget)?);
    }
    Ok(values)
}

/// Values a decoding may still produce.
struct Budget {
    left: usize,
    max: usize,
}

impl Budget {
    fn spend(&mut self) -> Result<(), AmfError> {
        self.left = self
            .left
            .checked_sub(1)
            .ok_or(AmfError::TooMany(self.max))?;
        Ok(())
    }
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], AmfError> {
    if bytes.len() < n {
        return Err(AmfError::Truncated);
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

fn u16_be(bytes: &mut &[u8]) -> Result<u16, AmfError> {
    let b = take(bytes, 2)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

fn u32_be(bytes: &mut &[u8]) -> Result<u32, AmfError> {
    let b = take(bytes, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn f64_be(bytes: &mut &[u8]) -> Result<f64, AmfError> {
    let b = take(bytes, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(f64::from_be_bytes(a))
}

fn utf8(raw: &[u8]) -> Result<String, AmfError> {
    String::from_utf8(raw.to_vec()).map_err(|_| AmfError::NotUtf8)
}

fn short_string(bytes: &mut &[u8]) -> Result<String, AmfError> {
    let len = usize::from(u16_be(bytes)?);
    utf8(take(bytes, len)?)
}

fn long_string(bytes: &mut &[u8]) -> Result<String, AmfError> {
    let len = usize::try_from(u32_be(bytes)?).map_err(|_| AmfError::Truncated)?;
    utf8(take(bytes, len)?)
}

/// Key-value pairs up to the empty key and the object-end marker.
fn properties(
    bytes: &mut &[u8],
    depth: usize,
    budget: &mut Budget,
) -> Result<Vec<(String, Amf)>, AmfError> {
    let mut pairs = Vec::new();
    loop {
        let key = short_string(bytes)?;
        if key.is_empty() && bytes.first() == Some(&0x09) {
            *bytes = &bytes[1..];
            return Ok(pairs);
        }
        let value = decode(bytes, depth + 1, budget)?;
        pairs.push((key, value));
    }
}

fn decode(bytes: &mut &[u8], depth: usize, budget: &mut Budget) -> Result<Amf, AmfError> {
    if depth > MAX_DEPTH {
        return Err(AmfError::TooDeep);
    }
    budget.spend()?;
    let marker = take(bytes, 1)?[0];
    Ok(match marker {
        0x00 => Amf::Number(f64_be(bytes)?),
        0x01 => Amf::Boolean(take(bytes, 1)?[0] != 0),
        0x02 => Amf::String(short_string(bytes)?),
        0x03 => Amf::Object(properties(bytes, depth, budget)?),
        0x05 => Amf::Null,
        0x06 => Amf::Undefined,
        0x08 => {
            // The count is a hint that encoders get wrong; the end marker rules.
            u32_be(bytes)?;
            Amf::EcmaArray(properties(bytes, depth, budget)?)
        }
        0x0a => {
            let count = u32_be(bytes)?;
            let mut items = Vec::new();
            for _ in 0..count {
                items.push(decode(bytes, depth + 1, budget)?);
            }
            Amf::StrictArray(items)
        }
        0x0b => {
            let millis = f64_be(bytes)?;
            take(bytes, 2)?;
            Amf::Date(millis)
        }
        0x0c | 0x0f => Amf::String(long_string(bytes)?),
        0x10 => {
            short_string(bytes)?;
            Amf::Object(properties(bytes, depth, budget)?)
        }
        other => return Err(AmfError::UnsupportedMarker(other)),
    })
}

pub fn encode_all(values: &[Amf], out: &mut Vec<u8>) {
    for value in values {
        encode(value, out);
    }
}

fn encode_key(key: &str, out: &mut Vec<u8>) {
    let bytes = &key.as_bytes()[..key.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn encode_properties(pairs: &[(String, Amf)], out: &mut Vec<u8>) {
    for (key, value) in pairs {
        encode_key(key, out);
        encode(value, out);
    }
    out.extend_from_slice(&[0, 0, 0x09]);
}

pub fn encode(value: &Amf, out: &mut Vec<u8>) {
    match value {
        Amf::Number(n) => {
            out.push(0x00);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf::Boolean(b) => out.extend_from_slice(&[0x01, u8::from(*b)]),
        Amf::String(s) if s.len() <= usize::from(u16::MAX) => {
            out.push(0x02);
            encode_key(s, out);
        }
        Amf::String(s) => {
            out.push(0x0c);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Amf::Object(pairs) => {
            out.push(0x03);
            encode_properties(pairs, out);
        }
        Amf::Null => out.push(0x05),
        Amf::Undefined => out.push(0x06),
        Amf::EcmaArray(pairs) => {
            out.push(0x08);
            out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
            encode_properties(pairs, out);
        }
        Amf::StrictArray(items) => {
            out.push(0x0a);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for item in items {
                encode(item, out);
            }
        }
        Amf::Date(millis) => {
            out.push(0x0b);
            out.extend_from_slice(&millis.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_connect_command_round_trips() {
        let values = vec![
            Amf::string("connect"),
            Amf::Number(1.0),
            Amf::object(&[
                ("app", Amf::string("live")),
                ("tcUrl", Amf::string("rtmp://127.0.0.1:1935/live")),
                ("fpad", Amf::Boolean(false)),
            ]),
            Amf::Null,
            Amf::EcmaArray(vec![("duration".into(), Amf::Number(0.0))]),
            Amf::StrictArray(vec![Amf::Undefined, Amf::Date(5.0)]),
        ];
        let mut bytes = Vec::new();
        encode_all(&values, &mut bytes);
        assert_eq!(decode_all(&bytes), Ok(values));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(
            decode_all(&[0x02, 0x00, 0x05, b'a']),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            decode_all(&[0x11, 0x00]),
            Err(AmfError::UnsupportedMarker(0x11))
        );
        let deep: Vec<u8> = std::iter::repeat_n([0x03, 0x00, 0x01, b'k'], 40)
            .flatten()
            .collect();
        assert_eq!(decode_all(&deep), Err(AmfError::TooDeep));
        // A strict array that claims four billion items and has none.
        assert_eq!(
            decode_all(&[0x0a, 0xff, 0xff, 0xff, 0xff]),
            Err(AmfError::Truncated)
        );
    }

    #[test]
    fn a_message_of_a_million_nulls_stops_at_the_budget() {
        let nulls = vec![0x05u8; 1 << 20];
        assert_eq!(decode_all(&nulls), Err(AmfError::TooMany(MAX_VALUES)));
        // Nested values count too.
        let mut array = vec![0x0a, 0x00, 0x00, 0x00, 0x10];
        array.extend_from_slice(&[0x05; 16]);
        assert_eq!(decode_at_most(&array, 16), Err(AmfError::TooMany(16)));
        assert_eq!(decode_at_most(&array, 17).map(|v| v.len()), Ok(1));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(&bytes);
        }
    }
}
