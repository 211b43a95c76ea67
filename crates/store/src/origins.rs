//! Which node a room's stream comes from: a lease per room, taken by the node
//! an encoder reaches and renewed by it every second. A newer claim always
//! wins (the newest encoder takes the stream over) and bumps the epoch, so the
//! node that held it learns at its next renewal that it lost it. A lease that
//! lapsed (its node died) is as good as none.

use std::time::Duration;

use domain::Timestamp;
use domain::ids::RoomId;

use crate::Store;
use crate::db::{execute, fetch_all, fetch_one, fetch_optional};
use crate::error::Result;
use crate::row::Get;

/// A room's origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub room: RoomId,
    /// One more at every claim: who holds which epoch decides who lost.
    pub epoch: i64,
    pub node: String,
    /// Where the other nodes reach the origin's stream.
    pub url: String,
    /// Names the stream's media URIs; kept when the stream moves.
    pub stream_id: String,
    /// What the holder said about its stream at its last renewal (opaque
    /// here), for a node that continues it.
    pub state: String,
    pub expires_at: Timestamp,
}

/// A taken lease, and whom it was taken from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginClaim {
    pub origin: Origin,
    /// The node that held the lease until now, if it had not lapsed: the
    /// stream goes on from `origin.state` and keeps its `stream_id`.
    pub previous_node: Option<String>,
}

const COLUMNS: &str = "room_id, epoch, node, url, stream_id, state, previous_node, expires_at";

fn claim<R: Get>(r: &R) -> Result<OriginClaim> {
    Ok(OriginClaim {
        origin: Origin {
            room: RoomId::from_string(r.text("room_id")?),
            epoch: r.int("epoch")?,
            node: r.text("node")?,
            url: r.text("url")?,
            stream_id: r.text("stream_id")?,
            state: r.text("state")?,
            expires_at: Timestamp::from_millis(r.int("expires_at")?),
        },
        previous_node: r.opt_text("previous_node")?,
    })
}

fn later(ttl: Duration) -> i64 {
    Timestamp::now().as_millis() + ttl.as_millis() as i64
}

impl Store {
    /// Makes `node` the room's origin for `ttl`, whoever held it. A stream
    /// whose lease had not lapsed keeps its id and state; otherwise the
    /// stream is `new_stream_id` with no state.
    pub async fn claim_origin(
        &self,
        room: &RoomId,
        node: &str,
        url: &str,
        new_stream_id: &str,
        ttl: Duration,
    ) -> Result<OriginClaim> {
        let now = Timestamp::now().as_millis();
        let mut tx = self.write().await?;
        let claimed = fetch_one!(
            &mut tx,
            sqlx::query(&format!(
                "INSERT INTO stream_origins ({COLUMNS})
                 VALUES ($1, 1, $2, $3, $4, '', NULL, $5)
                 ON CONFLICT (room_id) DO UPDATE SET
                     epoch = stream_origins.epoch + 1,
                     node = excluded.node,
                     url = excluded.url,
                     stream_id = CASE WHEN stream_origins.expires_at > $6
                         THEN stream_origins.stream_id ELSE excluded.stream_id END,
                     state = CASE WHEN stream_origins.expires_at > $6
                         THEN stream_origins.state ELSE '' END,
                     previous_node = CASE WHEN stream_origins.expires_at > $6
                         THEN stream_origins.node ELSE NULL END,
                     expires_at = excluded.expires_at
                 RETURNING {COLUMNS}"
            ))
            .bind(room.as_str())
            .bind(node)
            .bind(url)
            .bind(new_stream_id)
            .bind(later(ttl))
            .bind(now),
            claim
        )?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Renews the lease taken at `epoch` for `ttl`, with the holder's `state`;
    /// false if someone took it since (the holder lost it).
    pub async fn renew_origin(
        &self,
        room: &RoomId,
        epoch: i64,
        state: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let mut tx = self.write().await?;
        let renewed = execute!(
            &mut tx,
            sqlx::query(
                "UPDATE stream_origins SET state = $3, expires_at = $4
                 WHERE room_id = $1 AND epoch = $2"
            )
            .bind(room.as_str())
            .bind(epoch)
            .bind(state)
            .bind(later(ttl))
        )?;
        tx.commit().await?;
        Ok(renewed == 1)
    }

    /// Gives the lease taken at `epoch` up (the stream ended); false, and
    /// nothing changed, if someone took it since.
    pub async fn release_origin(&self, room: &RoomId, epoch: i64) -> Result<bool> {
        let mut tx = self.write().await?;
        let released = execute!(
            &mut tx,
            sqlx::query("DELETE FROM stream_origins WHERE room_id = $1 AND epoch = $2")
                .bind(room.as_str())
                .bind(epoch)
        )?;
        tx.commit().await?;
        Ok(released == 1)
    }

    /// Leases that lapsed before `before`: their nodes died with the stream
    /// live.
    pub async fn lapsed_origins(&self, before: Timestamp) -> Result<Vec<Origin>> {
        let mut c = self.read().await?;
        let found = fetch_all!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM stream_origins WHERE expires_at < $1 LIMIT 100"
            ))
            .bind(before.as_millis()),
            claim
        )?;
        Ok(found.into_iter().map(|c| c.origin).collect())
    }

    /// The room's origin, unless there is none or its lease lapsed.
    pub async fn origin(&self, room: &RoomId) -> Result<Option<Origin>> {
        let mut c = self.read().await?;
        let found = fetch_optional!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM stream_origins WHERE room_id = $1 AND expires_at > $2"
            ))
            .bind(room.as_str())
            .bind(Timestamp::now().as_millis()),
            claim
        )?;
        Ok(found.map(|c| c.origin))
    }
}
