//! Live rooms and their stream keys (stored hashed).

use domain::Timestamp;
use domain::catalog::{Description, Title};
use domain::ids::{PinId, ProductId, RoomId, ShopId, UserId};
use domain::room::{Room, RoomStatus};

use crate::db::{execute, fetch_all, fetch_one, fetch_optional};
use crate::error::{Result, StoreError};
use crate::row::{Get, corrupt};
use crate::{Page, PageRequest, Store};

pub struct NewRoom {
    pub shop: ShopId,
    pub title: Title,
    pub description: Description,
    pub cover_image: Option<String>,
    pub scheduled_start: Option<Timestamp>,
    /// SHA-256 of the stream key, hex; the key itself is never stored.
    pub stream_key_hash: String,
}

/// A change to a room. For the nullable fields, `Some(None)` clears the value.
#[derive(Default)]
pub struct RoomPatch {
    pub title: Option<Title>,
    pub description: Option<Description>,
    pub cover_image: Option<Option<String>>,
    pub scheduled_start: Option<Option<Timestamp>>,
}

/// Which rooms a listing shows.
#[derive(Default)]
pub struct RoomFilter {
    pub shop: Option<ShopId>,
    pub status: Option<RoomStatus>,
}

const ROOM_COLUMNS: &str = "id, shop_id, title, description, cover_image, scheduled_start, \
     status, started_at, ended_at, created_at, updated_at";

fn room<R: Get>(r: &R) -> Result<Room> {
    let status = r.text("status")?;
    Ok(Room {
        id: RoomId::from_string(r.text("id")?),
        shop_id: ShopId::from_string(r.text("shop_id")?),
        title: Title::parse(&r.text("title")?).map_err(|e| corrupt("title", e))?,
        description: Description::parse(&r.text("description")?)
            .map_err(|e| corrupt("description", e))?,
        cover_image: r.opt_text("cover_image")?,
        scheduled_start: r.opt_int("scheduled_start")?.map(Timestamp::from_millis),
        status: RoomStatus::parse(&status).ok_or_else(|| corrupt("room status", status))?,
        started_at: r.opt_int("started_at")?.map(Timestamp::from_millis),
        ended_at: r.opt_int("ended_at")?.map(Timestamp::from_millis),
        created_at: Timestamp::from_millis(r.int("created_at")?),
        updated_at: Timestamp::from_millis(r.int("updated_at")?),
    })
}

fn key_hash<R: Get>(r: &R) -> Result<String> {
    r.text("stream_key_hash")
}

fn room_and_key<R: Get>(r: &R) -> Result<(Room, String)> {
    Ok((room(r)?, key_hash(r)?))
}

impl Store {
    pub async fn create_room(&self, new: NewRoom) -> Result<Room> {
        let now = Timestamp::now().as_millis();
        let mut tx = self.write().await?;
        let created = fetch_one!(
            &mut tx,
            sqlx::query(&format!(
                "INSERT INTO rooms (id, shop_id, title, description, cover_image,
                     scheduled_start, status, stream_key_hash, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'scheduled', $7, $8, $8)
                 RETURNING {ROOM_COLUMNS}"
            ))
            .bind(RoomId::generate().as_str())
            .bind(new.shop.as_str())
            .bind(new.title.as_str())
            .bind(new.description.as_str())
            .bind(new.cover_image.as_deref())
            .bind(new.scheduled_start.map(Timestamp::as_millis))
            .bind(&new.stream_key_hash)
            .bind(now),
            room
        )?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn room(&self, id: &RoomId) -> Result<Option<Room>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(&format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE id = $1"))
                .bind(id.as_str()),
            room
        )
    }

    /// Rooms newest first, optionally of one shop and in one state.
    pub async fn rooms(&self, filter: &RoomFilter, page: &PageRequest) -> Result<Page<Room>> {
        let mut c = self.read().await?;
        let rows = fetch_all!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {ROOM_COLUMNS} FROM rooms
                 WHERE ($1 = '' OR shop_id = $1) AND ($2 = '' OR status = $2) AND id < $3
                 ORDER BY id DESC LIMIT $4"
            ))
            .bind(filter.shop.as_ref().map_or("", ShopId::as_str))
            .bind(filter.status.map_or("", RoomStatus::as_str))
            .bind(page.before_id())
            .bind(page.fetch_limit()),
            room
        )?;
        Ok(page.page(rows, |r| r.id.as_str().to_owned()))
    }

    pub async fn update_room(&self, id: &RoomId, patch: RoomPatch) -> Result<Room> {
        let mut tx = self.write().await?;
        let updated = fetch_optional!(
            &mut tx,
            sqlx::query(&format!(
                "UPDATE rooms SET title = COALESCE($2, title),
                     description = COALESCE($3, description),
                     cover_image = CASE WHEN $4 = 1 THEN $5 ELSE cover_image END,
                     scheduled_start = CASE WHEN $6 = 1 THEN $7 ELSE scheduled_start END,
                     updated_at = $8
                 WHERE id = $1 RETURNING {ROOM_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(patch.title.as_ref().map(Title::as_str))
            .bind(patch.description.as_ref().map(Description::as_str))
            .bind(i64::from(patch.cover_image.is_some()))
            .bind(patch.cover_image.flatten())
            .bind(i64::from(patch.scheduled_start.is_some()))
            .bind(patch.scheduled_start.flatten().map(Timestamp::as_millis))
            .bind(Timestamp::now().as_millis()),
            room
        )?
        .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Moves a room from `from` to `to` (as the domain's state machine decided);
    /// fails with `NotFound` when the room is no longer in `from`, so two nodes
    /// racing on the same room cannot both win.
    pub async fn set_room_status(
        &self,
        id: &RoomId,
        from: RoomStatus,
        to: RoomStatus,
    ) -> Result<Room> {
        let now = Timestamp::now().as_millis();
        let mut tx = self.write().await?;
        let updated = fetch_optional!(
            &mut tx,
            sqlx::query(&format!(
                "UPDATE rooms SET status = $3, updated_at = $4,
                     started_at = CASE WHEN $3 = 'live' THEN COALESCE(started_at, $4) ELSE started_at END,
                     ended_at = CASE WHEN $3 = 'ended' THEN $4 ELSE ended_at END
                 WHERE id = $1 AND status = $2 RETURNING {ROOM_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(now),
            room
        )?
        .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Replaces a room's stream key hash; the old key stops working at once.
    pub async fn set_stream_key_hash(&self, id: &RoomId, hash: &str) -> Result<()> {
        let mut tx = self.write().await?;
        let n = execute!(
            &mut tx,
            sqlx::query("UPDATE rooms SET stream_key_hash = $2, updated_at = $3 WHERE id = $1")
                .bind(id.as_str())
                .bind(hash)
                .bind(Timestamp::now().as_millis())
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await
    }

    /// The room whose stream key hashes to `hash`, for the ingest.
    pub async fn room_by_stream_key_hash(&self, hash: &str) -> Result<Option<(Room, String)>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {ROOM_COLUMNS}, stream_key_hash FROM rooms WHERE stream_key_hash = $1"
            ))
            .bind(hash),
            room_and_key
        )
    }

    /// The stored hash of a room's stream key, for the ingest to compare against.
    pub async fn stream_key_hash(&self, id: &RoomId) -> Result<Option<String>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query("SELECT stream_key_hash FROM rooms WHERE id = $1").bind(id.as_str()),
            key_hash
        )
    }
}

fn current_pin<R: Get>(r: &R) -> Result<(ProductId, Timestamp)> {
    Ok((
        ProductId::from_string(r.text("product_id")?),
        Timestamp::from_millis(r.int("pinned_at")?),
    ))
}

impl Store {
    /// Pins `product` in the room from now, replacing the current pin; returns
    /// when. The earlier pins stay, as the replay's timeline.
    pub async fn pin_product(
        &self,
        room: &RoomId,
        product: &ProductId,
        actor: &UserId,
    ) -> Result<Timestamp> {
        let now = Timestamp::now();
        let mut tx = self.write().await?;
        // Taking the room's row first serialises two pins of one room (on
        // PostgreSQL; SQLite has one writer), so the second replaces the first
        // instead of colliding with it on room_pins_current.
        let n = execute!(
            &mut tx,
            sqlx::query("UPDATE rooms SET updated_at = $2 WHERE id = $1")
                .bind(room.as_str())
                .bind(now.as_millis())
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        execute!(
            &mut tx,
            sqlx::query(
                "UPDATE room_pins SET unpinned_at = $2 WHERE room_id = $1 AND unpinned_at IS NULL"
            )
            .bind(room.as_str())
            .bind(now.as_millis())
        )?;
        execute!(
            &mut tx,
            sqlx::query(
                "INSERT INTO room_pins (id, room_id, product_id, actor_id, pinned_at)
                 VALUES ($1, $2, $3, $4, $5)"
            )
            .bind(PinId::generate().as_str())
            .bind(room.as_str())
            .bind(product.as_str())
            .bind(actor.as_str())
            .bind(now.as_millis())
        )?;
        tx.commit().await?;
        Ok(now)
    }

    /// Ends the room's current pin; `false` when nothing was pinned.
    pub async fn unpin(&self, room: &RoomId) -> Result<bool> {
        let mut tx = self.write().await?;
        let n = execute!(
            &mut tx,
            sqlx::query(
                "UPDATE room_pins SET unpinned_at = $2 WHERE room_id = $1 AND unpinned_at IS NULL"
            )
            .bind(room.as_str())
            .bind(Timestamp::now().as_millis())
        )?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// The product pinned in the room now, and since when.
    pub async fn current_pin(&self, room: &RoomId) -> Result<Option<(ProductId, Timestamp)>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(
                "SELECT product_id, pinned_at FROM room_pins
                 WHERE room_id = $1 AND unpinned_at IS NULL"
            )
            .bind(room.as_str()),
            current_pin
        )
    }
}
