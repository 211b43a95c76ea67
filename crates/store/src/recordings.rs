//! Recordings of lives, and what happened in the room while they ran (the
//! replay's timeline of pins and chat).

use domain::Timestamp;
use domain::ids::{ProductId, RecordingId, RoomId, UserId};

use crate::Store;
use crate::db::{execute, fetch_all, fetch_optional};
use crate::error::Result;
use crate::row::Get;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub id: RecordingId,
    pub room_id: RoomId,
    /// Still being written.
    pub recording: bool,
    /// Wall-clock time of the first frame: media time 0.
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub duration_ms: i64,
    pub segments: i64,
    pub bytes: i64,
}

/// How far a recording has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordingProgress {
    pub duration_ms: i64,
    pub segments: i64,
    pub bytes: i64,
}

/// A pin as the replay shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinSpan {
    pub product_id: ProductId,
    pub pinned_at: Timestamp,
    pub unpinned_at: Option<Timestamp>,
}

/// A chat message as the replay shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    pub user_id: UserId,
    pub display_name: String,
    pub text: String,
    pub at: Timestamp,
}

const COLUMNS: &str = "id, room_id, status, started_at, ended_at, duration_ms, segments, bytes";

fn recording<R: Get>(r: &R) -> Result<Recording> {
    Ok(Recording {
        id: RecordingId::from_string(r.text("id")?),
        room_id: RoomId::from_string(r.text("room_id")?),
        recording: r.text("status")? == "recording",
        started_at: Timestamp::from_millis(r.int("started_at")?),
        ended_at: r.opt_int("ended_at")?.map(Timestamp::from_millis),
        duration_ms: r.int("duration_ms")?,
        segments: r.int("segments")?,
        bytes: r.int("bytes")?,
    })
}

fn pin_span<R: Get>(r: &R) -> Result<PinSpan> {
    Ok(PinSpan {
        product_id: ProductId::from_string(r.text("product_id")?),
        pinned_at: Timestamp::from_millis(r.int("pinned_at")?),
        unpinned_at: r.opt_int("unpinned_at")?.map(Timestamp::from_millis),
    })
}

fn chat_line<R: Get>(r: &R) -> Result<ChatLine> {
    Ok(ChatLine {
        user_id: UserId::from_string(r.text("user_id")?),
        display_name: r.text("display_name")?,
        text: r.text("text")?,
        at: Timestamp::from_millis(r.int("created_at")?),
    })
}

impl Store {
    pub async fn create_recording(
        &self,
        id: &RecordingId,
        room: &RoomId,
        started_at: Timestamp,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        execute!(
            &mut tx,
            sqlx::query(
                "INSERT INTO recordings (id, room_id, status, started_at, written_at)
                 VALUES ($1, $2, 'recording', $3, $4)"
            )
            .bind(id.as_str())
            .bind(room.as_str())
            .bind(started_at.as_millis())
            .bind(Timestamp::now().as_millis())
        )?;
        tx.commit().await
    }

    /// Records how far a recording got (and that its writer is still there);
    /// with `ended_at`, it is complete.
    pub async fn update_recording(
        &self,
        id: &RecordingId,
        progress: RecordingProgress,
        ended_at: Option<Timestamp>,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        execute!(
            &mut tx,
            sqlx::query(
                "UPDATE recordings SET duration_ms = $2, segments = $3, bytes = $4,
                     ended_at = COALESCE($5, ended_at), written_at = $6,
                     status = CASE WHEN $5 IS NULL THEN status ELSE 'complete' END
                 WHERE id = $1"
            )
            .bind(id.as_str())
            .bind(progress.duration_ms)
            .bind(progress.segments)
            .bind(progress.bytes)
            .bind(ended_at.map(Timestamp::as_millis))
            .bind(Timestamp::now().as_millis())
        )?;
        tx.commit().await
    }

    /// Sets media time zero: when the recording's first frame arrived (known
    /// once its first segment is made, a moment after the row).
    pub async fn set_recording_start(&self, id: &RecordingId, started_at: Timestamp) -> Result<()> {
        let mut tx = self.write().await?;
        execute!(
            &mut tx,
            sqlx::query("UPDATE recordings SET started_at = $2 WHERE id = $1")
                .bind(id.as_str())
                .bind(started_at.as_millis())
        )?;
        tx.commit().await
    }

    pub async fn recording(&self, id: &RecordingId) -> Result<Option<Recording>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(&format!("SELECT {COLUMNS} FROM recordings WHERE id = $1"))
                .bind(id.as_str()),
            recording
        )
    }

    /// A room's recordings, newest first.
    pub async fn room_recordings(&self, room: &RoomId) -> Result<Vec<Recording>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM recordings WHERE room_id = $1 ORDER BY id DESC"
            ))
            .bind(room.as_str()),
            recording
        )
    }

    /// Recordings still being written whose writer was last heard of before
    /// `before`.
    pub async fn abandoned_recordings(&self, before: Timestamp) -> Result<Vec<Recording>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM recordings
                 WHERE status = 'recording' AND COALESCE(written_at, started_at) < $1"
            ))
            .bind(before.as_millis()),
            recording
        )
    }

    /// Complete recordings that started before `before`, oldest first.
    pub async fn recordings_started_before(&self, before: Timestamp) -> Result<Vec<Recording>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM recordings
                 WHERE status = 'complete' AND started_at < $1 ORDER BY started_at LIMIT 1000"
            ))
            .bind(before.as_millis()),
            recording
        )
    }

    pub async fn delete_recording(&self, id: &RecordingId) -> Result<bool> {
        let mut tx = self.write().await?;
        let n = execute!(
            &mut tx,
            sqlx::query("DELETE FROM recordings WHERE id = $1").bind(id.as_str())
        )?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// The room's pins that overlap `[from, to]`, in order.
    pub async fn pins_between(
        &self,
        room: &RoomId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<PinSpan>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query(
                "SELECT product_id, pinned_at, unpinned_at FROM room_pins
                 WHERE room_id = $1 AND pinned_at <= $3
                   AND (unpinned_at IS NULL OR unpinned_at >= $2)
                 ORDER BY pinned_at, id"
            )
            .bind(room.as_str())
            .bind(from.as_millis())
            .bind(to.as_millis()),
            pin_span
        )
    }

    /// Chat shown in the room within `[from, to]` and not deleted, oldest first,
    /// at most `limit` lines.
    pub async fn chat_between(
        &self,
        room: &RoomId,
        from: Timestamp,
        to: Timestamp,
        limit: i64,
    ) -> Result<Vec<ChatLine>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query(
                "SELECT m.user_id, u.display_name, m.text, m.created_at
                 FROM chat_messages m JOIN users u ON u.id = m.user_id
                 WHERE m.room_id = $1 AND m.created_at >= $2 AND m.created_at <= $3
                   AND m.deleted_at IS NULL
                 ORDER BY m.created_at, m.id LIMIT $4"
            )
            .bind(room.as_str())
            .bind(from.as_millis())
            .bind(to.as_millis())
            .bind(limit),
            chat_line
        )
    }
}
