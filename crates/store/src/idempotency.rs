//! Idempotency keys with Stripe's semantics: the first answer to a user's key is
//! kept and replayed for 24 hours; the same key with another request is refused;
//! a key whose first request is still running is refused until it finishes.

use std::time::Duration;

use domain::Timestamp;
use domain::ids::UserId;

use crate::Store;
use crate::answer::Answer;
use crate::db::{execute, fetch_optional};
use crate::error::Result;
use crate::row::Get;

/// What an earlier request with the same key means for this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// First use: go ahead, then record the answer with [`Store::finish_idempotent`].
    Fresh,
    /// Answered before: send this again.
    Replay(Answer),
    /// The first request with this key is still running.
    InUse,
    /// The key was used for a different request.
    Reused,
    /// The first request started long ago and never finished (the server stopped
    /// under it). Its effects may be committed: look for them before acting again.
    Abandoned,
}

struct KeyRow {
    hash: String,
    answer: Option<Answer>,
    created_at: i64,
}

fn key_row<R: Get>(r: &R) -> Result<KeyRow> {
    Ok(KeyRow {
        hash: r.text("request_hash")?,
        answer: Answer::from_columns(r.opt_text("outcome")?, r.opt_text("body")?)?,
        created_at: r.int("created_at")?,
    })
}

/// How long a first answer is replayed.
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

impl Store {
    /// Claims `key` for a request whose parameters hash to `request_hash`, or
    /// says what an earlier request with it did. A request still unfinished after
    /// `abandoned_after` (longer than any request may run) counts as abandoned.
    pub async fn begin_idempotent(
        &self,
        user: &UserId,
        key: &str,
        request_hash: &str,
        abandoned_after: Duration,
    ) -> Result<KeyState> {
        let now = Timestamp::now();
        let mut tx = self.write().await?;
        let existing = fetch_optional!(
            &mut tx,
            sqlx::query(
                "SELECT request_hash, outcome, body, created_at FROM idempotency_keys
                 WHERE user_id = $1 AND key = $2"
            )
            .bind(user.as_str())
            .bind(key),
            key_row
        )?;
        let state = match existing {
            None => {
                let inserted = execute!(
                    &mut tx,
                    sqlx::query(
                        "INSERT INTO idempotency_keys (user_id, key, request_hash, created_at)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, key) DO NOTHING"
                    )
                    .bind(user.as_str())
                    .bind(key)
                    .bind(request_hash)
                    .bind(now.as_millis())
                )?;
                // Another node inserted it between our read and our write.
                if inserted == 1 {
                    KeyState::Fresh
                } else {
                    KeyState::InUse
                }
            }
            Some(row) if now.as_millis() - row.created_at > KEY_LIFETIME.as_millis() as i64 => {
                execute!(
                    &mut tx,
                    sqlx::query(
                        "UPDATE idempotency_keys SET request_hash = $3, outcome = NULL, body = NULL,
                             created_at = $4
                         WHERE user_id = $1 AND key = $2 AND created_at = $5"
                    )
                    .bind(user.as_str())
                    .bind(key)
                    .bind(request_hash)
                    .bind(now.as_millis())
                    .bind(row.created_at)
                )?;
                KeyState::Fresh
            }
            Some(row) if row.hash != request_hash => KeyState::Reused,
            Some(KeyRow {
                answer: Some(answer),
                ..
            }) => KeyState::Replay(answer),
            Some(row) if now.as_millis() - row.created_at > abandoned_after.as_millis() as i64 => {
                // Take it over, once: the conditional update lets one taker win.
                let taken = execute!(
                    &mut tx,
                    sqlx::query(
                        "UPDATE idempotency_keys SET created_at = $3
                         WHERE user_id = $1 AND key = $2 AND created_at = $4 AND outcome IS NULL"
                    )
                    .bind(user.as_str())
                    .bind(key)
                    .bind(now.as_millis())
                    .bind(row.created_at)
                )?;
                if taken == 1 {
                    KeyState::Abandoned
                } else {
                    KeyState::InUse
                }
            }
            Some(_) => KeyState::InUse,
        };
        tx.commit().await?;
        Ok(state)
    }

    /// Records the answer to replay for `key`.
    pub async fn finish_idempotent(&self, user: &UserId, key: &str, answer: &Answer) -> Result<()> {
        let (outcome, body) = answer.columns()?;
        let mut tx = self.write().await?;
        execute!(
            &mut tx,
            sqlx::query(
                "UPDATE idempotency_keys SET outcome = $3, body = $4 WHERE user_id = $1 AND key = $2"
            )
            .bind(user.as_str())
            .bind(key)
            .bind(outcome)
            .bind(body)
        )?;
        tx.commit().await
    }

    /// Frees `key` after a failure that a retry may fix (a server error).
    pub async fn forget_idempotent(&self, user: &UserId, key: &str) -> Result<()> {
        let mut tx = self.write().await?;
        execute!(
            &mut tx,
            sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2")
                .bind(user.as_str())
                .bind(key)
        )?;
        tx.commit().await
    }

    /// Removes keys past their lifetime; returns how many.
    pub async fn delete_expired_idempotency_keys(&self) -> Result<u64> {
        let cutoff = Timestamp::now().plus_millis(-(KEY_LIFETIME.as_millis() as i64));
        let mut tx = self.write().await?;
        let n = execute!(
            &mut tx,
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                .bind(cutoff.as_millis())
        )?;
        tx.commit().await?;
        Ok(n)
    }
}
