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
    /// The author was the shop's owner or a moderator then.
    pub moderator: bool,
    /// The room sequence number it was shown under.
    pub seq: i64,
    pub text: String,
    pub at: Timestamp,
}

/// A kept chat message with its author's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthoredChat {
    pub record: ChatRecord,
    pub name: String,
}

fn authored_chat<R: Get>(r: &R) -> Result<AuthoredChat> {
    Ok(AuthoredChat {
        record: ChatRecord {
            id: MessageId::from_string(r.text("id")?),
            room: RoomId::from_string(r.text("room_id")?),
            user: UserId::from_string(r.text("user_id")?),
            moderator: r.int("moderator")? != 0,
            seq: r.int("seq")?,
            text: r.text("text")?,
            at: Timestamp::from_millis(r.int("created_at")?),
        },
        name: r.text("display_name")?,
    })
}

impl Store {
    /// Keeps a batch of chat messages, in one statement. A message kept
    /// already (a new sequencer numbering it again) is kept once.
    pub async fn save_chat(&self, messages: &[ChatRecord]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        let sql = format!(
            "INSERT INTO chat_messages (id, room_id, user_id, moderator, seq, text, created_at)
             VALUES {} ON CONFLICT (id) DO NOTHING",
            Params::new(&mut tx).rows(messages.len(), 7)
        );
        execute!(&mut tx, {
            let mut q = sqlx::query(&sql);
            for m in messages {
                q = q
                    .bind(m.id.as_str())
                    .bind(m.room.as_str())
                    .bind(m.user.as_str())
                    .bind(i64::from(m.moderator))
                    .bind(m.seq)
                    .bind(m.text.as_str())
                    .bind(m.at.as_millis());
            }
            q
        })?;
        tx.commit().await
    }

    /// The room's last `limit` messages that were not deleted, oldest first,
    /// with their authors' names.
    pub async fn recent_chat(&self, room: &RoomId, limit: i64) -> Result<Vec<AuthoredChat>> {
        let mut c = self.read().await?;
        let mut rows = fetch_all!(
            &mut c,
            sqlx::query(
                "SELECT m.id, m.room_id, m.user_id, m.moderator, m.seq, m.text, m.created_at,
                        u.display_name
                 FROM chat_messages m JOIN users u ON u.id = m.user_id
                 WHERE m.room_id = $1 AND m.deleted_at IS NULL ORDER BY m.id DESC LIMIT $2"
            )
            .bind(room.as_str())
            .bind(limit),
            authored_chat
        )?;
        rows.reverse();
        Ok(rows)
    }
}
