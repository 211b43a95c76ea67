//! The room protocol: every event a room carries is one variant of [`RoomEvent`],
//! with typed data. Producers (the API, the video ingest, the live rooms) build
//! values; the room matches on variants; the JSON every viewer gets comes out of
//! these definitions (`docs/protocol.md` describes it, and its tests check it).
//!
//! On the bus an event travels as `{"type": .., "data": ..}` ([`RoomEvent::encode`]).
//! Where the room is numbered it becomes the frame every viewer shares,
//! `{"type", "seq", "at", "data"}`, encoded once ([`RoomEvent::frame`]). A node
//! that receives a type it does not know (a newer node, during a rolling deploy)
//! gets [`Undecodable::Unknown`] and skips it.

use std::io::Write;

use serde::{Deserialize, Serialize, Serializer};

use crate::Timestamp;
use crate::catalog::{OptionValues, Product, Sku, Title};
use crate::ids::{MessageId, ProductId, RoomId, SaleId, ShopId, UserId, VariantId};
use crate::money::Money;
use crate::room::{ChatText, Playback, RoomStatus, Sanction};
use crate::sale::{FlashSale, SaleStatus};

/// Declares the events with their wire names, once: the enum, its [`Kind`]s
/// and the data writer come out of the same list.
macro_rules! room_events {
    ($( $(#[$doc:meta])* $name:literal => $variant:ident($data:ty), )*) => {
        /// Something that happened in a room, as every viewer sees it.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", content = "data")]
        pub enum RoomEvent {
            $( $(#[$doc])* #[serde(rename = $name)] $variant($data), )*
        }

        /// The type of a room event, as the wire names it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind {
            $( $variant, )*
        }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( Kind::$variant => $name, )*
                }
            }
        }

        impl RoomEvent {
            pub fn kind(&self) -> Kind {
                match self {
                    $( Self::$variant(_) => Kind::$variant, )*
                }
            }

            fn write_data(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
                match self {
                    $( Self::$variant(data) => serde_json::to_writer(out, data), )*
                }
            }
        }
    };
}

room_events! {
    /// A viewer's message.
    "chat" => Chat(ChatMessage),
    /// A moderator deleted a message.
    "chat.deleted" => ChatDeleted(ChatDeleted),
    /// The room's likes, coalesced.
    "likes" => Likes(Likes),
    /// Connections watching, coalesced.
    "viewers" => Viewers(Viewers),
    /// The seller pinned a product.
    "pin" => Pin(PinCard),
    /// Nothing is pinned now.
    "unpin" => Unpin(Unpin),
    "sale.started" => SaleStarted(SaleState),
    "sale.stock" => SaleStock(SaleState),
    "sale.sold_out" => SaleSoldOut(SaleState),
    "sale.ended" => SaleEnded(SaleState),
    /// The seller's encoder started publishing.
    "stream.live" => StreamLive(Playback),
    /// The encoder stopped.
    "stream.ended" => StreamEnded(Ended),
    /// The seller ended the room for good.
    "room.ended" => RoomEnded(Ended),
    "user.muted" => UserMuted(Sanction),
    "user.banned" => UserBanned(Sanction),
    "user.sanction_lifted" => SanctionLifted(SanctionLifted),
    "slow_mode" => SlowMode(SlowMode),
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why bytes from the bus are not an event this node can show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecodable {
    /// A type this version does not know (a newer node sent it).
    #[error("unknown room event type {0:?}")]
    Unknown(String),
    #[error("malformed room event: {0}")]
    Malformed(String),
}

impl RoomEvent {
    /// The event as the bus carries it: `{"type": .., "data": ..}`.
    pub fn encode(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }

    /// Reads an event off the bus.
    pub fn decode(bytes: &[u8]) -> Result<Self, Undecodable> {
        serde_json::from_slice(bytes).map_err(|e| {
            #[derive(Deserialize)]
            struct Tag {
                #[serde(rename = "type")]
                kind: String,
            }
            match serde_json::from_slice::<Tag>(bytes) {
                Ok(tag) if !Kind::ALL.iter().any(|k| k.as_str() == tag.kind) => {
                    Undecodable::Unknown(tag.kind)
                }
                _ => Undecodable::Malformed(e.to_string()),
            }
        })
    }

    /// The frame every viewer of the room gets, numbered `seq` and stamped `at`.
    pub fn frame(&self, seq: u64, at: Timestamp) -> String {
        let mut out = frame_head(self.kind().as_str(), seq, at);
        if self.write_data(&mut out).is_err() {
            out.extend_from_slice(b"{}");
        }
        frame_tail(out)
    }
}

/// A frame read back: what [`RoomEvent::frame`] wrote.
#[derive(Debug, PartialEq)]
pub struct ReadFrame {
    pub seq: u64,
    pub at: Timestamp,
    /// A type this version does not know is still numbered, and still shown.
    pub event: Result<RoomEvent, Undecodable>,
}

/// Reads back a frame [`RoomEvent::frame`] wrote; `None`: not a frame at all.
pub fn read_frame(bytes: &[u8]) -> Option<ReadFrame> {
    #[derive(Deserialize)]
    struct Head {
        seq: u64,
        at: Timestamp,
    }
    let head: Head = serde_json::from_slice(bytes).ok()?;
    Some(ReadFrame {
        seq: head.seq,
        at: head.at,
        event: RoomEvent::decode(bytes),
    })
}

/// A frame for one connection that carries the room's `seq` (`snapshot`,
/// `state`), in the same shape as the events.
pub fn view_frame(kind: ViewKind, seq: u64, at: Timestamp, view: &RoomView<'_>) -> String {
    let mut out = frame_head(kind.as_str(), seq, at);
    if serde_json::to_writer(&mut out, view).is_err() {
        out.extend_from_slice(b"{}");
    }
    frame_tail(out)
}

fn frame_head(kind: &str, seq: u64, at: Timestamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Kinds are fixed ASCII names and the time is RFC 3339: neither needs escaping.
    let _ = write!(
        out,
        r#"{{"type":"{kind}","seq":{seq},"at":"{}","data":"#,
        at.to_rfc3339()
    );
    out
}

fn frame_tail(mut out: Vec<u8>) -> String {
    out.push(b'}');
    // Only `write!` of str and serde_json wrote here: always UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// Who said a chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Speaker {
    pub id: UserId,
    pub name: String,
    /// The shop's owner or one of its moderators.
    pub moderator: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub id: MessageId,
    pub user: Speaker,
    pub text: ChatText,
}

/// A chat message as a snapshot lists it: with the `seq` and time it was shown at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatEntry {
    #[serde(flatten)]
    pub message: ChatMessage,
    pub seq: u64,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatDeleted {
    pub id: MessageId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Likes {
    /// The room's total.
    pub count: u64,
    /// Since the last `likes`.
    pub added: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewers {
    pub count: u64,
}

/// A pinned product as the viewer's card shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PinCard {
    pub product_id: ProductId,
    pub title: Title,
    /// A URL path, or `null`.
    pub image: Option<String>,
    /// The first variant's price.
    pub price: Option<Money>,
    pub variants: Vec<PinVariant>,
    pub pinned_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PinVariant {
    pub id: VariantId,
    pub sku: Sku,
    pub options: OptionValues,
    pub price: Money,
    pub stock: i64,
}

impl PinCard {
    pub fn new(product: &Product, pinned_at: Timestamp) -> Self {
        Self {
            product_id: product.id.clone(),
            title: product.title.clone(),
            image: product.images.first().map(|id| format!("/images/{id}")),
            price: product.variants.first().map(|v| v.price),
            variants: product
                .variants
                .iter()
                .map(|v| PinVariant {
                    id: v.id.clone(),
                    sku: v.sku.clone(),
                    options: v.options.clone(),
                    price: v.price,
                    stock: v.stock_on_hand,
                })
                .collect(),
            pinned_at,
        }
    }
}

/// `unpin` carries `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Unpin {}

/// A flash sale as `sale.*` events and snapshots show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleState {
    pub sale_id: SaleId,
    pub variant_id: VariantId,
    pub available: i64,
    pub quantity: i64,
    pub status: SaleStatus,
    pub price: Money,
    pub ends_at: Timestamp,
    /// One more at every change of the sale: of two states, the higher is
    /// the newer.
    pub version: i64,
}

impl SaleState {
    pub fn new(sale: &FlashSale) -> Self {
        Self {
            version: sale.version,
            sale_id: sale.id.clone(),
            variant_id: sale.variant_id.clone(),
            available: sale.available,
            quantity: sale.quantity,
            status: sale.status,
            price: sale.price,
            ends_at: sale.ends_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub ended_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SanctionLifted {
    pub user_id: UserId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlowMode {
    /// One message per user per this many seconds; 0 is off.
    pub seconds: u64,
}

/// What a shop's rooms are told that viewers never see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ShopEvent {
    /// The shop's new blocked words, lower case.
    #[serde(rename = "moderation.blocked_words")]
    BlockedWords { words: Vec<String> },
    /// `user` moderates the shop's rooms now, or no longer: connections
    /// already open change with it.
    #[serde(rename = "moderation.moderator")]
    Moderator { user: UserId, moderator: bool },
}

impl ShopEvent {
    pub fn encode(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Undecodable> {
        serde_json::from_slice(bytes).map_err(|e| Undecodable::Malformed(e.to_string()))
    }
}

/// What every node must know of a user's sign-ins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SessionEvent {
    /// The user signed out, revoked a token or changed role: a node forgets
    /// the credentials it has cached for them.
    #[serde(rename = "credentials.changed")]
    CredentialsChanged { user: UserId },
}

impl SessionEvent {
    pub fn encode(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Undecodable> {
        serde_json::from_slice(bytes).map_err(|e| Undecodable::Malformed(e.to_string()))
    }
}

/// A room as snapshots describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomSummary {
    pub id: RoomId,
    pub shop_id: ShopId,
    pub title: Title,
    pub status: RoomStatus,
    pub started_at: Option<Timestamp>,
    /// Where the stream plays while the room is live.
    pub stream: Option<Playback>,
}

/// The frames for one connection that describe the whole room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    /// A connection's first frame, with the recent chat.
    Snapshot,
    /// After lost frames: the counters, sale and pin, without chat.
    State,
}

impl ViewKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::State => "state",
        }
    }
}

/// The data of a `snapshot` or `state` frame.
#[derive(Debug, Serialize)]
pub struct RoomView<'a> {
    pub room: &'a RoomSummary,
    pub viewers: u64,
    pub likes: u64,
    pub sale: Option<&'a SaleState>,
    pub pinned: Option<&'a PinCard>,
    pub slow_mode_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat: Option<Vec<&'a ChatEntry>>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_frame_reads_back_as_its_seq_and_event() {
        let event = RoomEvent::SlowMode(SlowMode { seconds: 3 });
        let frame = event.frame(42, Timestamp::from_millis(1_000));
        assert_eq!(
            read_frame(frame.as_bytes()),
            Some(ReadFrame {
                seq: 42,
                at: Timestamp::from_millis(1_000),
                event: Ok(event)
            })
        );
        let unknown = br#"{"type":"auction.bid","seq":7,"at":"2026-12-02T10:00:00Z","data":{}}"#;
        assert!(matches!(
            read_frame(unknown),
            Some(ReadFrame {
                seq: 7,
                event: Err(Undecodable::Unknown(_)),
                ..
            })
        ));
        assert_eq!(read_frame(b"not json"), None);
    }

    fn chat() -> RoomEvent {
        RoomEvent::Chat(ChatMessage {
            id: MessageId::from_string("msg_1"),
            user: Speaker {
                id: UserId::from_string("usr_1"),
                name: "Ann".into(),
                moderator: false,
            },
            text: ChatText::parse("hello \"you\"").unwrap(),
        })
    }

    #[test]
    fn an_event_crosses_the_bus_and_becomes_one_frame() {
        let event = chat();
        let bytes = event.encode().unwrap();
        assert_eq!(RoomEvent::decode(&bytes).unwrap(), event);
        let at = Timestamp::from_millis(1_764_012_345_678);
        let frame: serde_json::Value = serde_json::from_str(&event.frame(42, at)).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({
                "type": "chat", "seq": 42, "at": "2025-11-24T19:25:45.678Z",
                "data": {"id": "msg_1", "user": {"id": "usr_1", "name": "Ann", "moderator": false},
                         "text": "hello \"you\""},
            })
        );
    }

    #[test]
    fn unpin_carries_an_empty_object() {
        let frame: serde_json::Value =
            serde_json::from_str(&RoomEvent::Unpin(Unpin {}).frame(1, Timestamp::now())).unwrap();
        assert_eq!(frame["data"], serde_json::json!({}));
    }

    #[test]
    fn an_unknown_type_is_told_apart_from_a_malformed_event() {
        assert_eq!(
            RoomEvent::decode(br#"{"type":"auction.bid","data":{"amount":5}}"#),
            Err(Undecodable::Unknown("auction.bid".into()))
        );
        assert!(matches!(
            RoomEvent::decode(br#"{"type":"likes","data":{"count":"many"}}"#),
            Err(Undecodable::Malformed(_))
        ));
        assert!(matches!(
            RoomEvent::decode(b"not json"),
            Err(Undecodable::Malformed(_))
        ));
    }

    #[test]
    fn every_kind_has_its_own_name() {
        let mut names: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
    }
}
