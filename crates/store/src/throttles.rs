//! Counters in the database, shared by every node (the sign-in and sign-up
//! throttles): one row per key, counted and reset in one statement. A key
//! counts either in fixed windows ([`Store::throttle_hit`]) or in strikes
//! that each restart the window ([`Store::throttle_strike`]).

use std::time::Duration;

use domain::Timestamp;

use crate::Store;
use crate::db::{execute, fetch_one, fetch_optional};
use crate::error::Result;
use crate::row::Get;

impl Store {
    /// Counts a hit for `key` in its window of `window`, opening a new window
    /// when the last one is over. Refused (`Err` with the seconds until the
    /// window opens again) past `limit` hits in the window.
    pub async fn throttle_hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<std::result::Result<(), u64>> {
        let now = Timestamp::now().as_millis();
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.write().await?;
        let (started, hits) = fetch_one!(
            &mut tx,
            sqlx::query(
                "INSERT INTO throttle_windows (key, started_at, hits) VALUES ($1, $2, 1)
                 ON CONFLICT (key) DO UPDATE SET
                     started_at = CASE WHEN throttle_windows.started_at <= $2 - $3
                                       THEN $2 ELSE throttle_windows.started_at END,
                     hits = CASE WHEN throttle_windows.started_at <= $2 - $3
                                 THEN 1 ELSE throttle_windows.hits + 1 END
                 RETURNING started_at, hits"
            )
            .bind(key)
            .bind(now)
            .bind(window_ms),
            window_of
        )?;
        tx.commit().await?;
        if hits > i64::from(limit) {
            let wait_ms = (started + window_ms - now).max(0);
            return Ok(Err(u64::try_from(wait_ms / 1000).unwrap_or(0).max(1)));
        }
        Ok(Ok(()))
    }

    /// Counts a strike against `key`: one more than before if the last came
    /// less than `window` ago, else the first. Returns the strikes.
    pub async fn throttle_strike(&self, key: &str, window: Duration) -> Result<i64> {
        let now = Timestamp::now().as_millis();
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.write().await?;
        let (_, hits) = fetch_one!(
            &mut tx,
            sqlx::query(
                "INSERT INTO throttle_windows (key, started_at, hits) VALUES ($1, $2, 1)
                 ON CONFLICT (key) DO UPDATE SET
                     hits = CASE WHEN throttle_windows.started_at <= $2 - $3
                                 THEN 1 ELSE throttle_windows.hits + 1 END,
                     started_at = $2
                 RETURNING started_at, hits"
            )
            .bind(key)
            .bind(now)
            .bind(window_ms),
            window_of
        )?;
        tx.commit().await?;
        Ok(hits)
    }

    /// `key`'s count and when its window began (for strikes, the last
    /// strike), if it began less than `window` ago.
    pub async fn throttle_peek(
        &self,
        key: &str,
        window: Duration,
    ) -> Result<Option<(Timestamp, i64)>> {
        let since =
            Timestamp::now().as_millis() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let mut c = self.read().await?;
        let found = fetch_optional!(
            &mut c,
            sqlx::query(
                "SELECT started_at, hits FROM throttle_windows WHERE key = $1 AND started_at > $2"
            )
            .bind(key)
            .bind(since),
            window_of
        )?;
        Ok(found.map(|(at, hits)| (Timestamp::from_millis(at), hits)))
    }

    /// Forgets `key`'s window, as after a successful sign-in.
    pub async fn throttle_clear(&self, key: &str) -> Result<()> {
        let mut tx = self.write().await?;
        execute!(
            &mut tx,
            sqlx::query("DELETE FROM throttle_windows WHERE key = $1").bind(key)
        )?;
        tx.commit().await
    }

    /// Removes windows that ended more than `window` ago; returns how many.
    pub async fn delete_expired_throttles(&self, window: Duration) -> Result<u64> {
        let before =
            Timestamp::now().as_millis() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.write().await?;
        let n = execute!(
            &mut tx,
            sqlx::query("DELETE FROM throttle_windows WHERE started_at <= $1").bind(before)
        )?;
        tx.commit().await?;
        Ok(n)
    }
}

fn window_of<R: Get>(r: &R) -> Result<(i64, i64)> {
    Ok((r.int("started_at")?, r.int("hits")?))
}
