//! Moderation of live rooms: a shop's moderators, its blocked words, the
//! sanctions (mutes and bans) in each room, and slow mode.

use domain::Timestamp;
use domain::ids::{RoomId, ShopId, UserId};
use domain::room::{Sanction, SanctionKind};

use crate::Store;
use crate::db::{Params, execute, fetch_all, fetch_one, fetch_optional};
use crate::error::{Result, StoreError};
use crate::row::{Get, corrupt};

fn user_id<R: Get>(r: &R) -> Result<UserId> {
    Ok(UserId::from_string(r.text("user_id")?))
}

fn word<R: Get>(r: &R) -> Result<String> {
    r.text("word")
}

fn seconds<R: Get>(r: &R) -> Result<i64> {
    r.int("slow_mode_seconds")
}

fn sanction<R: Get>(r: &R) -> Result<Sanction> {
    Ok(Sanction {
        room_id: RoomId::from_string(r.text("room_id")?),
        user_id: UserId::from_string(r.text("user_id")?),
        kind: SanctionKind::parse(&r.text("kind")?)
            .ok_or_else(|| corrupt("sanction kind", "unknown"))?,
        until: r.opt_int("until")?.map(Timestamp::from_millis),
        created_at: Timestamp::from_millis(r.int("created_at")?),
    })
}

impl Store {
    /// Makes `user` a moderator of every room of the shop (again: no error).
    pub async fn appoint_moderator(&self, shop: &ShopId, user: &UserId) -> Result<()> {
        let mut tx = self.write().await?;
        execute!(
            &mut tx,
            sqlx::query(
                "INSERT INTO shop_moderators (shop_id, user_id, appointed_at) VALUES ($1, $2, $3)
                 ON CONFLICT (shop_id, user_id) DO NOTHING"
            )
            .bind(shop.as_str())
            .bind(user.as_str())
            .bind(Timestamp::now().as_millis())
        )?;
        tx.commit().await
    }

    /// `false` when the user was not a moderator.
    pub async fn dismiss_moderator(&self, shop: &ShopId, user: &UserId) -> Result<bool> {
        let mut tx = self.write().await?;
        let n = execute!(
            &mut tx,
            sqlx::query("DELETE FROM shop_moderators WHERE shop_id = $1 AND user_id = $2")
                .bind(shop.as_str())
                .bind(user.as_str())
        )?;
        tx.commit().await?;
        Ok(n > 0)
    }

    pub async fn moderators(&self, shop: &ShopId) -> Result<Vec<UserId>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query(
                "SELECT user_id FROM shop_moderators WHERE shop_id = $1 ORDER BY appointed_at"
            )
            .bind(shop.as_str()),
            user_id
        )
    }

    pub async fn is_moderator(&self, shop: &ShopId, user: &UserId) -> Result<bool> {
        let mut c = self.read().await?;
        Ok(fetch_optional!(
            &mut c,
            sqlx::query("SELECT user_id FROM shop_moderators WHERE shop_id = $1 AND user_id = $2")
                .bind(shop.as_str())
                .bind(user.as_str()),
            user_id
        )?
        .is_some())
    }

    /// Replaces the shop's blocked words (already cleaned and lower-cased).
    pub async fn set_blocked_words(&self, shop: &ShopId, words: &[String]) -> Result<()> {
        let mut tx = self.write().await?;
        execute!(
            &mut tx,
            sqlx::query("DELETE FROM shop_blocked_words WHERE shop_id = $1").bind(shop.as_str())
        )?;
        if !words.is_empty() {
            let sql = format!(
                "INSERT INTO shop_blocked_words (shop_id, word) VALUES {}",
                Params::new(&mut tx).rows(words.len(), 2)
            );
            execute!(&mut tx, {
                let mut q = sqlx::query(&sql);
                for w in words {
                    q = q.bind(shop.as_str()).bind(w.as_str());
                }
                q
            })?;
        }
        tx.commit().await
    }

    pub async fn blocked_words(&self, shop: &ShopId) -> Result<Vec<String>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query("SELECT word FROM shop_blocked_words WHERE shop_id = $1 ORDER BY word")
                .bind(shop.as_str()),
            word
        )
    }

    /// Mutes or bans `user` in the room, replacing an earlier sanction.
    pub async fn sanction(
        &self,
        room: &RoomId,
        user: &UserId,
        kind: SanctionKind,
        until: Option<Timestamp>,
        actor: &UserId,
    ) -> Result<Sanction> {
        let mut tx = self.write().await?;
        let saved = fetch_one!(
            &mut tx,
            sqlx::query(
                "INSERT INTO room_sanctions (room_id, user_id, kind, until, actor_id, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (room_id, user_id) DO UPDATE SET kind = excluded.kind,
                     until = excluded.until, actor_id = excluded.actor_id,
                     created_at = excluded.created_at
                 RETURNING room_id, user_id, kind, until, created_at"
            )
            .bind(room.as_str())
            .bind(user.as_str())
            .bind(kind.as_str())
            .bind(until.map(Timestamp::as_millis))
            .bind(actor.as_str())
            .bind(Timestamp::now().as_millis()),
            sanction
        )?;
        tx.commit().await?;
        Ok(saved)
    }

    /// `false` when the user had no sanction in the room.
    pub async fn lift_sanction(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        let mut tx = self.write().await?;
        let n = execute!(
            &mut tx,
            sqlx::query("DELETE FROM room_sanctions WHERE room_id = $1 AND user_id = $2")
                .bind(room.as_str())
                .bind(user.as_str())
        )?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// The room's sanctions in force now.
    pub async fn sanctions(&self, room: &RoomId) -> Result<Vec<Sanction>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query(
                "SELECT room_id, user_id, kind, until, created_at FROM room_sanctions
                 WHERE room_id = $1 AND (until IS NULL OR until > $2) ORDER BY created_at"
            )
            .bind(room.as_str())
            .bind(Timestamp::now().as_millis()),
            sanction
        )
    }

    pub async fn set_slow_mode(&self, room: &RoomId, seconds: i64) -> Result<()> {
        let mut tx = self.write().await?;
        let n = execute!(
            &mut tx,
            sqlx::query("UPDATE rooms SET slow_mode_seconds = $2 WHERE id = $1")
                .bind(room.as_str())
                .bind(seconds)
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await
    }

    pub async fn slow_mode(&self, room: &RoomId) -> Result<i64> {
        let mut c = self.read().await?;
        Ok(fetch_optional!(
            &mut c,
            sqlx::query("SELECT slow_mode_seconds FROM rooms WHERE id = $1").bind(room.as_str()),
            seconds
        )?
        .unwrap_or(0))
    }

    /// Marks a chat message deleted (its text stays, for review); `false` when
    /// the room has no such message.
    pub async fn delete_chat(&self, room: &RoomId, message: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let n = execute!(
            &mut tx,
            sqlx::query(
                "UPDATE chat_messages SET deleted_at = $3
                 WHERE room_id = $1 AND id = $2 AND deleted_at IS NULL"
            )
            .bind(room.as_str())
            .bind(message)
            .bind(Timestamp::now().as_millis())
        )?;
        tx.commit().await?;
        Ok(n > 0)
    }
}
