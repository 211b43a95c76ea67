//! Live-room chat: every message shown in a room, written in batches.

use domain::Timestamp;
use domain::ids::{MessageId, RoomId, UserId};

use crate::Store;
use crate::db::{Params, execute, fetch_all};
use crate::error::Result;
use crate::row::Get;

/// A chat message as it was shown in its room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRecord {
    pub id: MessageId,
    pub room: RoomId,
    pub user: UserId,
    /// The room sequence number it was shown under.
    pub seq: i64,
    pub text: String,
    pub at: Timestamp,
}

fn chat_record<R: Get>(r: &R) -> Result<ChatRecord> {
    Ok(ChatRecord {
        id: MessageId::from_string(r.text("id")?),
        room: RoomId::from_string(r.text("room_id")?),
        user: UserId::from_string(r.text("user_id")?),
        seq: r.int("seq")?,
        text: r.text("text")?,
        at: Timestamp::from_millis(r.int("created_at")?),
    })
}

impl Store {
    /// Keeps a batch of chat messages, in one statement.
    pub async fn save_chat(&self, messages: &[ChatRecord]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        let sql = format!(
            "INSERT INTO chat_messages (id, room_id, user_id, seq, text, created_at) VALUES {}",
            Params::new(&mut tx).rows(messages.len(), 6)
        );
        execute!(&mut tx, {
            let mut q = sqlx::query(&sql);
            for m in messages {
                q = q
                    .bind(m.id.as_str())
                    .bind(m.room.as_str())
                    .bind(m.user.as_str())
                    .bind(m.seq)
                    .bind(m.text.as_str())
                    .bind(m.at.as_millis());
            }
            q
        })?;
        tx.commit().await
    }

    /// The room's last `limit` messages that were not deleted, oldest first.
    pub async fn recent_chat(&self, room: &RoomId, limit: i64) -> Result<Vec<ChatRecord>> {
        let mut c = self.read().await?;
        let mut rows = fetch_all!(
            &mut c,
            sqlx::query(
                "SELECT id, room_id, user_id, seq, text, created_at FROM chat_messages
                 WHERE room_id = $1 AND deleted_at IS NULL ORDER BY id DESC LIMIT $2"
            )
            .bind(room.as_str())
            .bind(limit),
            chat_record
        )?;
        rows.reverse();
        Ok(rows)
    }
}
