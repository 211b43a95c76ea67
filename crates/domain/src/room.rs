//! Live rooms: where a seller streams and sells. A room is scheduled, then live,
//! then ended; the video and live-room parts drive it through [`RoomStatus::apply`].

use serde::Serialize;

use crate::Timestamp;
use crate::catalog::{Description, Title};
use crate::ids::{RoomId, ShopId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoomStatus {
    Scheduled,
    Live,
    Ended,
}

/// What happens to a room: the input of its status machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomChange {
    /// The seller's encoder started publishing.
    StreamStarted,
    /// The encoder stopped; the room may go live again (a reconnect or a break).
    StreamStopped,
    /// The seller closed the room for good.
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from:?} room cannot take {event:?}")]
pub struct TransitionError {
    pub from: RoomStatus,
    pub event: RoomChange,
}

/// Where a room's LL-HLS playlist is served.
pub fn hls_path(room: &RoomId) -> String {
    format!("/live/{room}/index.m3u8")
}

/// Where a room's HTTP-FLV stream is served.
pub fn flv_path(room: &RoomId) -> String {
    format!("/live/{room}.flv")
}

/// Where a live room's stream plays and since when: the data of the
/// `stream.live` event and the room's `stream` in a live room's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Playback {
    pub started_at: Option<Timestamp>,
    pub hls: String,
    pub flv: String,
}

impl Playback {
    pub fn new(room: &RoomId, started_at: Option<Timestamp>) -> Self {
        Self {
            started_at,
            hls: hls_path(room),
            flv: flv_path(room),
        }
    }
}

impl RoomStatus {
    pub fn apply(self, event: RoomChange) -> Result<Self, TransitionError> {
        use RoomChange as E;
        use RoomStatus as S;
        match (self, event) {
            (S::Scheduled | S::Live, E::StreamStarted) => Ok(S::Live),
            (S::Live, E::StreamStopped) => Ok(S::Scheduled),
            (S::Scheduled | S::Live, E::Ended) => Ok(S::Ended),
            (from, event) => Err(TransitionError { from, event }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Live => "live",
            Self::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scheduled" => Some(Self::Scheduled),
            "live" => Some(Self::Live),
            "ended" => Some(Self::Ended),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Room {
    pub id: RoomId,
    pub shop_id: ShopId,
    pub title: Title,
    pub description: Description,
    /// Image id of the cover shown before and after the live.
    pub cover_image: Option<String>,
    pub scheduled_start: Option<Timestamp>,
    pub status: RoomStatus,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The secret an encoder publishes with: `rtmp://HOST:1935/live/{stream_key}`.
/// Shown once; only its hash is stored. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamKey(String);

impl StreamKey {
    pub const PREFIX: &'static str = "live_";

    /// Builds a key from 24 bytes that the caller drew from a CSPRNG.
    pub fn from_random(bytes: [u8; 24]) -> Self {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("{}{hex}", Self::PREFIX))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event() -> impl Strategy<Value = RoomChange> {
        prop_oneof![
            Just(RoomChange::StreamStarted),
            Just(RoomChange::StreamStopped),
            Just(RoomChange::Ended),
        ]
    }

    proptest! {
        /// An ended room stays ended, and only a started stream makes a room live.
        #[test]
        fn ended_is_final(events in prop::collection::vec(event(), 0..50)) {
            let mut status = RoomStatus::Scheduled;
            for e in events {
                let before = status;
                if let Ok(next) = status.apply(e) {
                    prop_assert!(before != RoomStatus::Ended);
                    if next == RoomStatus::Live {
                        prop_assert_eq!(e, RoomChange::StreamStarted);
                    }
                    status = next;
                }
            }
        }
    }

    #[test]
    fn stream_key_is_not_debug_printed() {
        let k = StreamKey::from_random([7; 24]);
        assert!(k.expose().starts_with("live_"));
        assert_eq!(k.expose().len(), 5 + 48);
        assert_eq!(format!("{k:?}"), "StreamKey(..)");
    }
}

/// What a moderator can do to a chatter in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SanctionKind {
    /// Nothing they send is shown until `until`.
    Mute,
    /// Nothing they send is shown in this room again (until lifted).
    Ban,
}

impl SanctionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mute => "mute",
            Self::Ban => "ban",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mute" => Some(Self::Mute),
            "ban" => Some(Self::Ban),
            _ => None,
        }
    }
}

/// A user muted or banned in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Sanction {
    pub room_id: RoomId,
    pub user_id: crate::ids::UserId,
    pub kind: SanctionKind,
    /// When a mute ends; `null` for a ban.
    pub until: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl Sanction {
    pub fn in_force(&self, now: Timestamp) -> bool {
        self.until.is_none_or(|until| until > now)
    }
}

/// The longest slow mode: one message per this many seconds.
pub const MAX_SLOW_MODE_SECONDS: i64 = 300;
/// The longest mute.
pub const MAX_MUTE_SECONDS: i64 = 7 * 24 * 3600;
/// Blocked words a shop may keep, and their longest length in characters.
pub const MAX_BLOCKED_WORDS: usize = 500;
pub const MAX_BLOCKED_WORD_CHARS: usize = 50;

/// What a viewer writes in a room's chat: cleaned as all user text is (NFC,
/// control characters removed, trimmed), 1 to [`ChatText::MAX_CHARS`] characters.
/// It is shown as text, never interpreted as HTML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ChatText(String);

impl ChatText {
    pub const MAX_CHARS: usize = 300;

    pub fn parse(input: &str) -> Result<Self, crate::ValidationError> {
        crate::text::clean("text", input, 1, Self::MAX_CHARS, false).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for ChatText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod chat_tests {
    use super::ChatText;

    #[test]
    fn chat_text_is_cleaned_and_bounded_in_characters() {
        assert_eq!(
            ChatText::parse("  hi\u{0007} there\n").unwrap().as_str(),
            "hi there"
        );
        // "e" + combining acute is one character after NFC.
        let composed = "e\u{301}".repeat(ChatText::MAX_CHARS);
        assert_eq!(
            ChatText::parse(&composed).unwrap().as_str().chars().count(),
            300
        );
        assert!(ChatText::parse(&"x".repeat(301)).is_err());
        assert!(ChatText::parse(" \u{0000} ").is_err());
        assert_eq!(
            ChatText::parse("<b>bold</b>").unwrap().as_str(),
            "<b>bold</b>",
            "kept as text; clients never interpret it"
        );
    }
}
