//! The Idempotency-Keys of a purchase batch (flash-sale taps and orders at
//! list price alike): looked up for the whole batch in one statement, and
//! written once, with their answers, by the batch's final write
//! ([`crate::reservations`]).

use std::collections::HashMap;

use domain::Timestamp;
use domain::ids::UserId;
use domain::order::Order;

use crate::answer::Answer;
use crate::db::{Exec, Execute, Params, column, fetch_all};
use crate::error::{Result, StoreError};
use crate::row::Get;

/// What an Idempotency-Key's earlier request decides for a tap that reuses it.
#[derive(Debug, Clone)]
pub enum Earlier {
    /// Another request with the key is being served.
    InUse,
    /// The key's first answer, to send again unchanged.
    Replay(Answer),
    /// The key was used for a different request.
    Reused,
}

/// A tap that may carry an Idempotency-Key, as [`take_keys`] sees it.
pub(crate) trait Keyed {
    fn buyer(&self) -> &UserId;
    /// The key and the hash of the request.
    fn key(&self) -> Option<(&str, &str)>;
}

/// The answer that records a reserved order: the order as it was first sent.
pub(crate) fn made(order: &Order) -> Result<Answer> {
    serde_json::to_string(order)
        .map(Answer::Made)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

struct StoredKey {
    user: String,
    key: String,
    hash: String,
    answer: Option<Answer>,
}

fn stored_key<R: Get>(r: &R) -> Result<StoredKey> {
    Ok(StoredKey {
        user: r.text("user_id")?,
        key: r.text("key")?,
        hash: r.text("request_hash")?,
        answer: Answer::from_columns(r.opt_text("outcome")?, r.opt_text("body")?)?,
    })
}

/// Looks up the keys of a batch's taps in one statement. A tap whose key an
/// earlier request holds (within the key's lifetime), or another tap of the
/// batch, gets what that request decides; the others get `None`, and the batch
/// writes their keys with their answers (`reservations::write_batch`), once.
///
/// A key is written only with its answer, in the transaction that made it. Two
/// batches that race on one key (two nodes, or a sale's tap and an order with
/// the same key) both find it free; the second to write it learns so from
/// `reservations::write_batch` (`StoreError::KeyRace`) and is served again, when this
/// lookup finds the first one's answer.
pub(crate) async fn take_keys<T: Keyed>(
    e: &mut impl Execute,
    taps: &[T],
    now: Timestamp,
) -> Result<Vec<Option<Earlier>>> {
    let mut decided = vec![None; taps.len()];
    let mut seen = std::collections::HashSet::new();
    let mut rows = Vec::new();
    for (i, tap) in taps.iter().enumerate() {
        if let Some((key, _)) = tap.key() {
            if seen.insert((tap.buyer().as_str(), key)) {
                rows.push((tap.buyer().as_str(), key));
            } else {
                decided[i] = Some(Earlier::InUse);
            }
        }
    }
    if rows.is_empty() {
        return Ok(decided);
    }
    let cutoff = key_cutoff(now);
    let found = match e.exec() {
        Exec::Postgres(c) => {
            // Arrays: one statement text for every batch, prepared once.
            sqlx::query(
                // LATERAL: one probe of the primary key per tap, whatever the
                // planner thinks of the arrays' length (a hash join scanned
                // the whole table).
                "SELECT k.user_id, k.key, k.request_hash, k.outcome, k.body
                 FROM UNNEST($1::text[], $2::text[]) AS v (user_id, key)
                 CROSS JOIN LATERAL (
                     SELECT * FROM idempotency_keys i
                     WHERE i.user_id = v.user_id AND i.key = v.key AND i.created_at >= $3
                 ) AS k",
            )
            .bind(column(&rows, |r| r.0))
            .bind(column(&rows, |r| r.1))
            .bind(cutoff.as_millis())
            .fetch_all(c)
            .await?
            .iter()
            .map(stored_key)
            .collect::<Result<Vec<_>>>()?
        }
        Exec::Sqlite(_) => {
            // The keys drive the join (CROSS JOIN keeps SQLite's order): one
            // probe of the primary key each. `(user_id, key) IN (VALUES ..)`
            // was planned as a scan of every key.
            let mut p = Params::new(e);
            let sql = format!(
                "SELECT k.user_id, k.key, k.request_hash, k.outcome, k.body
                 FROM (VALUES {}) AS v
                 CROSS JOIN idempotency_keys k ON k.user_id = v.column1 AND k.key = v.column2
                 WHERE k.created_at >= {}",
                p.rows(rows.len(), 2),
                p.next()
            );
            fetch_all!(
                e,
                {
                    let mut q = sqlx::query(&sql);
                    for &(user, key) in &rows {
                        q = q.bind(user).bind(key);
                    }
                    q.bind(cutoff.as_millis())
                },
                stored_key
            )?
        }
    };
    let found: HashMap<(&str, &str), &StoredKey> = found
        .iter()
        .map(|k| ((k.user.as_str(), k.key.as_str()), k))
        .collect();
    for (i, tap) in taps.iter().enumerate() {
        let Some((key, hash)) = tap.key() else {
            continue;
        };
        if decided[i].is_some() {
            continue;
        }
        let Some(earlier) = found.get(&(tap.buyer().as_str(), key)) else {
            continue;
        };
        decided[i] = Some(if earlier.hash != hash {
            Earlier::Reused
        } else if let Some(answer) = &earlier.answer {
            Earlier::Replay(answer.clone())
        } else {
            Earlier::InUse
        });
    }
    Ok(decided)
}

/// Keys created before this are free again.
pub(crate) fn key_cutoff(now: Timestamp) -> Timestamp {
    now.plus_millis(-(crate::idempotency::KEY_LIFETIME.as_millis() as i64))
}

/// An answer to record under an Idempotency-Key, as its columns.
pub(crate) struct KeyAnswer<'a> {
    pub(crate) user: &'a str,
    pub(crate) key: &'a str,
    pub(crate) hash: &'a str,
    pub(crate) outcome: &'static str,
    pub(crate) body: String,
}

/// The answers to write under the taps' keys, sorted by user and key so that
/// two batches writing the same keys take them in the same order. `record`
/// gives a tap's answer, or `None` for a tap whose key belonged to an earlier
/// request (nothing of this batch to record).
pub(crate) fn answers<'a, T: Keyed, O>(
    taps: &'a [T],
    outcomes: &[O],
    record: impl Fn(&O) -> Result<Option<Answer>>,
) -> Result<Vec<KeyAnswer<'a>>> {
    let mut rows = Vec::new();
    for (tap, outcome) in taps.iter().zip(outcomes) {
        if let Some((key, hash)) = tap.key()
            && let Some(answer) = record(outcome)?
        {
            let (outcome, body) = answer.columns()?;
            rows.push(KeyAnswer {
                user: tap.buyer().as_str(),
                key,
                hash,
                outcome,
                body,
            });
        }
    }
    rows.sort_by(|a, b| (a.user, a.key).cmp(&(b.user, b.key)));
    Ok(rows)
}

/// Serves a batch again when it lost a race for an Idempotency-Key
/// (`StoreError::KeyRace`): the next time, [`take_keys`] finds the winner's
/// answer. A few times at most; the races need two requests with one key at
/// the same moment.
pub(crate) async fn again_on_key_race<T, F: Future<Output = Result<T>>>(
    mut serve: impl FnMut() -> F,
) -> Result<T> {
    let mut lost = 0;
    loop {
        match serve().await {
            Err(StoreError::KeyRace) if lost < 3 => lost += 1,
            done => return done,
        }
    }
}
