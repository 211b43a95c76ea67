//! A room's figures for the seller's dashboard: viewers and likes over time from
//! the samples every node writes, messages from the chat log, orders and revenue
//! from the orders.

use domain::Timestamp;
use domain::ids::RoomId;

use crate::Store;
use crate::db::{Params, execute, fetch_all, fetch_one};
use crate::error::Result;
use crate::row::Get;

/// What one node saw of one room in one sampling interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSample {
    pub room: RoomId,
    /// The start of the interval; nodes sample on the same boundaries.
    pub at: Timestamp,
    /// Connections at that moment.
    pub viewers: i64,
    /// Likes received during the interval.
    pub likes: i64,
}

/// One interval of a room's activity, summed over the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsPoint {
    pub at: i64,
    pub viewers: i64,
    pub likes: i64,
    pub messages: i64,
    pub orders: i64,
}

/// A room's totals and its activity over time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomStats {
    /// Oldest first, one point per interval that saw anything.
    pub series: Vec<StatsPoint>,
    pub peak_viewers: i64,
    pub likes: i64,
    pub messages: i64,
    /// Accounts that wrote at least one message.
    pub chatters: i64,
    /// Orders placed from the room, in any state.
    pub orders: i64,
    /// Orders that were paid (whatever happened after).
    pub paid_orders: i64,
    /// Accounts with at least one paid order.
    pub buyers: i64,
    /// Paid minus refunded, in the shop's minor units.
    pub revenue: i64,
}

fn interval_row<R: Get>(r: &R) -> Result<(i64, i64, i64)> {
    Ok((r.int("at")?, r.int("a")?, r.int("b")?))
}

fn count_row<R: Get>(r: &R) -> Result<(i64, i64)> {
    Ok((r.int("at")?, r.int("a")?))
}

fn pair_row<R: Get>(r: &R) -> Result<(i64, i64)> {
    Ok((r.int("a")?, r.int("b")?))
}

fn order_totals_row<R: Get>(r: &R) -> Result<(i64, i64, i64, i64)> {
    Ok((r.int("a")?, r.int("b")?, r.int("c")?, r.int("d")?))
}

impl Store {
    /// Keeps one sampling round, in one statement.
    pub async fn record_room_samples(&self, samples: &[RoomSample]) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        let sql = format!(
            "INSERT INTO room_samples (room_id, at, viewers, likes) VALUES {}",
            Params::new(&mut tx).rows(samples.len(), 4)
        );
        execute!(&mut tx, {
            let mut q = sqlx::query(&sql);
            for s in samples {
                q = q
                    .bind(s.room.as_str())
                    .bind(s.at.as_millis())
                    .bind(s.viewers)
                    .bind(s.likes);
            }
            q
        })?;
        tx.commit().await
    }

    /// Rows of `table` (one with `room_id` and `created_at`) per interval.
    async fn count_by_interval(
        &self,
        c: &mut crate::db::Conn,
        table: &'static str,
        room: &RoomId,
        interval_ms: i64,
    ) -> Result<Vec<(i64, i64)>> {
        let sql = format!(
            "SELECT (created_at / $2) * $2 AS at, COUNT(*) AS a
             FROM {table} WHERE room_id = $1 GROUP BY (created_at / $2) * $2"
        );
        fetch_all!(
            c,
            sqlx::query(&sql).bind(room.as_str()).bind(interval_ms),
            count_row
        )
    }

    /// The room's figures, its series cut into intervals of `interval_ms`
    /// (the samplers' interval, so each sample falls in one).
    pub async fn room_stats(&self, room: &RoomId, interval_ms: i64) -> Result<RoomStats> {
        let interval_ms = interval_ms.max(1);
        let mut c = self.read().await?;
        let samples = fetch_all!(
            &mut c,
            sqlx::query(
                "SELECT (at / $2) * $2 AS at, CAST(SUM(viewers) AS BIGINT) AS a,
                        CAST(SUM(likes) AS BIGINT) AS b
                 FROM room_samples WHERE room_id = $1 GROUP BY (at / $2) * $2"
            )
            .bind(room.as_str())
            .bind(interval_ms),
            interval_row
        )?;
        let messages = self
            .count_by_interval(&mut c, "chat_messages", room, interval_ms)
            .await?;
        let orders = self
            .count_by_interval(&mut c, "orders", room, interval_ms)
            .await?;
        let mut series = std::collections::BTreeMap::<i64, StatsPoint>::new();
        let point = |series: &mut std::collections::BTreeMap<i64, StatsPoint>, at| {
            *series.entry(at).or_insert(StatsPoint {
                at,
                ..StatsPoint::default()
            })
        };
        for (at, viewers, likes) in samples {
            let mut p = point(&mut series, at);
            p.viewers = viewers;
            p.likes = likes;
            series.insert(at, p);
        }
        for (at, count) in messages {
            let mut p = point(&mut series, at);
            p.messages = count;
            series.insert(at, p);
        }
        for (at, count) in orders {
            let mut p = point(&mut series, at);
            p.orders = count;
            series.insert(at, p);
        }
        let (messages, chatters) = fetch_one!(
            &mut c,
            sqlx::query(
                "SELECT COUNT(*) AS a, COUNT(DISTINCT user_id) AS b
                 FROM chat_messages WHERE room_id = $1"
            )
            .bind(room.as_str()),
            pair_row
        )?;
        let (orders, paid_orders, buyers, revenue) = fetch_one!(
            &mut c,
            sqlx::query(
                "SELECT COUNT(*) AS a,
                        CAST(COALESCE(SUM(CASE WHEN paid_amount > 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS b,
                        COUNT(DISTINCT CASE WHEN paid_amount > 0 THEN buyer_id END) AS c,
                        CAST(COALESCE(SUM(paid_amount - refunded_amount), 0) AS BIGINT) AS d
                 FROM orders WHERE room_id = $1"
            )
            .bind(room.as_str()),
            order_totals_row
        )?;
        let series: Vec<StatsPoint> = series.into_values().collect();
        Ok(RoomStats {
            peak_viewers: series.iter().map(|p| p.viewers).max().unwrap_or(0),
            likes: series.iter().map(|p| p.likes).sum(),
            series,
            messages,
            chatters,
            orders,
            paid_orders,
            buyers,
            revenue,
        })
    }
}
