//! The inventory path for flash sales, as DESIGN.md's "How a purchase flows" has it.
//!
//! Every tap on a sale goes to that sale's batcher task. The batcher takes all
//! the taps that queued up while the previous transaction ran, and serves them in
//! ONE transaction ([`Store::claim_batch`]): one conditional update claims stock
//! for the whole batch, per-buyer limits are enforced by conditional upserts in
//! the same transaction, and the orders are inserted there too (group commit).
//! Nobody is answered before that transaction committed. Under no load a batch is
//! one tap and adds no delay; under a storm batches grow and the database does one
//! commit for hundreds of orders (a batcher under load lingers a few
//! milliseconds for the next round of taps, see [`crate::batcher::LINGER`]).
//!
//! The database row is the only source of truth, so several nodes, each with its
//! own batchers, cannot oversell: their claims serialise on the sale's row.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use domain::Timestamp;
use domain::ids::{OrderEventId, OrderId, ProductId, RoomId, SaleId, ShopId, UserId, VariantId};
use domain::money::Money;
use domain::order::{Order, OrderHistoryEntry, OrderLine, OrderStatus};
use domain::sale::{BuyQuantity, FlashSale};
use tokio::sync::watch;

use crate::Store;
use crate::answer::{Answer, Refusal};
use crate::batcher::{Batchers, Serve};
use crate::checkout::{OrderOutcome, RegularOrder};
use crate::db::{Exec, Execute, Params, Tx, execute, fetch_all, fetch_optional};
use crate::error::{Result, StoreError};
use crate::row::{Get, corrupt};

/// One buyer's tap on a sale.
#[derive(Debug, Clone)]
pub struct Claim {
    pub buyer: UserId,
    pub quantity: BuyQuantity,
    /// The tap's Idempotency-Key: taken, and its answer recorded, inside the
    /// batch's own transaction, so that it costs no commit of its own.
    pub idempotency: Option<ClaimKey>,
}

/// A tap's Idempotency-Key and the hash of its request.
#[derive(Debug, Clone)]
pub struct ClaimKey {
    pub key: String,
    pub request_hash: String,
}

/// The answer to one tap.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// The order holding the reservation, committed.
    Reserved(Box<Order>),
    /// Sold out, over the per-buyer limit, or the sale is not live.
    Refused(Refusal),
    /// The tap's Idempotency-Key belongs to an earlier request.
    Earlier(Earlier),
}

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

impl Keyed for Claim {
    fn buyer(&self) -> &UserId {
        &self.buyer
    }

    fn key(&self) -> Option<(&str, &str)> {
        self.idempotency
            .as_ref()
            .map(|k| (k.key.as_str(), k.request_hash.as_str()))
    }
}

impl ClaimOutcome {
    /// The answer recorded under the tap's key; `None` for the outcomes that
    /// belong to an earlier request with the key.
    fn record(&self) -> Result<Option<Answer>> {
        Ok(match self {
            ClaimOutcome::Reserved(order) => Some(made(order)?),
            ClaimOutcome::Refused(refusal) => Some(Answer::Refused(refusal.clone())),
            ClaimOutcome::Earlier(_) => None,
        })
    }
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
/// writes their keys with their answers ([`write_batch`]), once.
///
/// A key is written only with its answer, in the transaction that made it. Two
/// batches that race on one key (two nodes, or a sale's tap and an order with
/// the same key) both find it free; the second to write it learns so from
/// [`write_batch`] (`StoreError::KeyRace`) and is served again, when this
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
fn key_cutoff(now: Timestamp) -> Timestamp {
    now.plus_millis(-(crate::idempotency::KEY_LIFETIME.as_millis() as i64))
}

/// An answer to record under an Idempotency-Key, as its columns.
struct KeyAnswer<'a> {
    user: &'a str,
    key: &'a str,
    hash: &'a str,
    outcome: &'static str,
    body: String,
}

/// The answers to write under the taps' keys, sorted by user and key so that
/// two batches writing the same keys take them in the same order. `record`
/// gives a tap's answer, or `None` for a tap whose key belonged to an earlier
/// request (nothing of this batch to record).
fn answers<'a, T: Keyed, O>(
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

/// Ends a batch whose every tap is decided: writes its orders and the answers
/// under the taps' keys ([`write_batch`]), commits, and returns the answers in
/// the order of the taps.
pub(crate) async fn finish_batch<T: Keyed, O>(
    mut tx: Tx,
    taps: &[T],
    decided: Vec<Option<O>>,
    orders: &[(Order, Option<String>)],
    at: Timestamp,
    record: impl Fn(&O) -> Result<Option<Answer>>,
) -> Result<Vec<O>> {
    let outcomes: Vec<O> = decided
        .into_iter()
        .map(|d| d.ok_or_else(|| StoreError::Corrupt("a tap without an answer".into())))
        .collect::<Result<_>>()?;
    let writes = Writes {
        orders,
        answers: answers(taps, &outcomes, record)?,
        at,
    };
    write_batch(&mut tx, &writes).await?;
    tx.commit().await?;
    Ok(outcomes)
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

/// What a successful claim update tells about the sale.
struct Terms {
    granted: i64,
    limit: i64,
    price: Money,
    variant: VariantId,
    shop: ShopId,
    room: RoomId,
    item: Item,
}

fn terms<R: Get>(r: &R) -> Result<Terms> {
    Ok(Terms {
        granted: r.int("last_claim")?,
        limit: r.int("per_buyer_limit")?,
        price: Money::parse(r.int("price_amount")?, &r.text("currency")?)
            .map_err(|e| corrupt("sale price", e))?,
        variant: VariantId::from_string(r.text("variant_id")?),
        shop: ShopId::from_string(r.text("shop_id")?),
        room: RoomId::from_string(r.text("room_id")?),
        item: item(r)?,
    })
}

fn status<R: Get>(r: &R) -> Result<String> {
    r.text("status")
}

/// What is being bought, named as it is at the moment of purchase.
pub(crate) struct Item {
    pub(crate) product: ProductId,
    pub(crate) sku: String,
    pub(crate) title: String,
}

pub(crate) fn item<R: Get>(r: &R) -> Result<Item> {
    Ok(Item {
        product: ProductId::from_string(r.text("product_id")?),
        sku: r.text("sku")?,
        title: r.text("title")?,
    })
}

/// An order about to be written, in the caller's transaction.
pub(crate) struct NewOrder<'a> {
    pub buyer: &'a UserId,
    pub shop: &'a ShopId,
    pub room: Option<&'a RoomId>,
    pub sale: Option<&'a SaleId>,
    pub lines: Vec<OrderLine>,
    /// When the purchase happened; the reservation runs from here.
    pub at: Timestamp,
    pub expires_at: Timestamp,
    pub reason: &'a str,
    pub idempotency_key: Option<&'a str>,
}

/// The order a purchase makes, before it is written.
pub(crate) fn draft_order(new: NewOrder<'_>) -> Result<(Order, Option<String>)> {
    let now = new.at;
    let currency = new
        .lines
        .first()
        .map(|l| l.unit_price.currency)
        .ok_or_else(|| StoreError::Corrupt("an order without lines".into()))?;
    let total = new
        .lines
        .iter()
        .try_fold(
            Money {
                amount: 0,
                currency,
            },
            |sum, l| sum.checked_add(l.unit_price.times(l.quantity)?),
        )
        .ok_or_else(|| StoreError::Corrupt("order total overflows".into()))?;
    let order = Order {
        id: OrderId::generate(),
        buyer_id: new.buyer.clone(),
        shop_id: new.shop.clone(),
        room_id: new.room.cloned(),
        sale_id: new.sale.cloned(),
        status: OrderStatus::Reserved,
        lines: new.lines,
        total,
        paid: Money {
            amount: 0,
            currency,
        },
        refunded: Money {
            amount: 0,
            currency,
        },
        expires_at: Some(new.expires_at),
        shipment: None,
        history: vec![OrderHistoryEntry {
            id: OrderEventId::generate(),
            status: OrderStatus::Reserved,
            actor_id: Some(new.buyer.clone()),
            reason: new.reason.to_owned(),
            amount: None,
            at: now,
        }],
        created_at: now,
        updated_at: now,
    };
    Ok((order, new.idempotency_key.map(str::to_owned)))
}

/// Binds the parameters of [`orders_sql`]: the same Rust values on either backend.
macro_rules! bind_orders {
    ($q:expr, $orders:expr) => {{
        let mut q = $q;
        for (o, key) in $orders {
            q = q
                .bind(o.id.as_str())
                .bind(o.buyer_id.as_str())
                .bind(o.shop_id.as_str())
                .bind(o.room_id.as_ref().map(RoomId::as_str))
                .bind(o.sale_id.as_ref().map(SaleId::as_str))
                .bind(o.total.currency.code())
                .bind(o.total.amount)
                .bind(o.expires_at.map(Timestamp::as_millis))
                .bind(o.created_at.as_millis())
                .bind(key.as_deref());
        }
        q
    }};
}

/// Binds the parameters of [`lines_sql`].
macro_rules! bind_lines {
    ($q:expr, $orders:expr) => {{
        let mut q = $q;
        for (o, _) in $orders {
            for (position, l) in o.lines.iter().enumerate() {
                q = q
                    .bind(o.id.as_str())
                    .bind(position as i64)
                    .bind(l.variant_id.as_str())
                    .bind(l.product_id.as_str())
                    .bind(l.sku.as_str())
                    .bind(l.title.as_str())
                    .bind(l.quantity)
                    .bind(l.unit_price.amount);
            }
        }
        q
    }};
}

/// Binds the parameters of [`events_sql`].
macro_rules! bind_events {
    ($q:expr, $orders:expr) => {{
        let mut q = $q;
        for (o, _) in $orders {
            let first = &o.history[0];
            q = q
                .bind(first.id.as_str())
                .bind(o.id.as_str())
                .bind(first.actor_id.as_ref().map(UserId::as_str))
                .bind(first.reason.as_str())
                .bind(first.at.as_millis());
        }
        q
    }};
}

/// Binds the parameters of [`answers_sql`].
macro_rules! bind_answers {
    ($q:expr, $answers:expr, $now:expr, $cutoff:expr) => {{
        let mut q = $q;
        for a in $answers {
            q = q
                .bind(a.user)
                .bind(a.key)
                .bind(a.hash)
                .bind(a.outcome)
                .bind(a.body.as_str())
                .bind($now);
        }
        q.bind($cutoff)
    }};
}

fn orders_sql(p: &mut Params, orders: usize) -> String {
    format!(
        "INSERT INTO orders (id, buyer_id, shop_id, room_id, sale_id, status, currency,
             total_amount, paid_amount, refunded_amount, expires_at, created_at, updated_at,
             idempotency_key)
         SELECT column1, column2, column3, column4, column5, 'reserved', column6, column7, 0, 0,
             column8, column9, column9, column10 FROM (VALUES {}) AS v",
        p.rows(orders, 10)
    )
}

fn lines_sql(p: &mut Params, lines: usize) -> String {
    format!(
        "INSERT INTO order_lines (order_id, position, variant_id, product_id, sku, title, quantity,
             unit_amount) VALUES {}",
        p.rows(lines, 8)
    )
}

fn events_sql(p: &mut Params, orders: usize) -> String {
    format!(
        "INSERT INTO order_events (id, order_id, status, actor_id, reason, amount, created_at)
         SELECT column1, column2, 'reserved', column3, column4, NULL, column5 FROM (VALUES {}) AS v",
        p.rows(orders, 5)
    )
}

fn answers_sql(p: &mut Params, answers: usize) -> String {
    format!(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, outcome, body, created_at)
         VALUES {}
         ON CONFLICT (user_id, key) DO UPDATE SET request_hash = excluded.request_hash,
             outcome = excluded.outcome, body = excluded.body, created_at = excluded.created_at
         WHERE idempotency_keys.created_at < {}
         RETURNING 1 AS taken",
        p.rows(answers, 6),
        p.next()
    )
}

fn taken<R: Get>(r: &R) -> Result<i64> {
    r.int("taken")
}

/// What a batch writes once every tap is decided.
struct Writes<'a> {
    orders: &'a [(Order, Option<String>)],
    /// The answers to record under the keys that were free.
    answers: Vec<KeyAnswer<'a>>,
    /// When the batch ran: its keys' creation time.
    at: Timestamp,
}

/// Writes reserved orders with their lines and first history entries, and the
/// answers under Idempotency-Keys. On PostgreSQL that is one statement of the
/// same text for every batch (each part a data-modifying `WITH` over arrays):
/// one round trip however many orders, prepared once per connection, where a
/// multi-row `VALUES` would be a new statement to parse and plan for every
/// batch size. SQLite, which has neither arrays nor round trips to save, runs
/// the parts one after the other.
///
/// `StoreError::KeyRace` when another request wrote one of the keys since
/// [`take_keys`] found it free: the caller rolls back and serves the batch
/// again.
async fn write_batch(e: &mut impl Execute, writes: &Writes<'_>) -> Result<()> {
    let orders = writes.orders;
    let answers = &writes.answers;
    if orders.is_empty() && answers.is_empty() {
        return Ok(());
    }
    let taken = match e.exec() {
        Exec::Postgres(c) => write_batch_postgres(c, writes).await,
        Exec::Sqlite(_) => write_batch_sqlite(e, writes).await,
    }
    .map_err(|e| match e {
        // The orders' own (buyer, key) is unique too.
        StoreError::Database(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            StoreError::KeyRace
        }
        other => other,
    })?;
    if taken != answers.len() {
        return Err(StoreError::KeyRace);
    }
    Ok(())
}

/// [`write_batch`] on SQLite; returns how many keys it wrote.
async fn write_batch_sqlite(e: &mut impl Execute, writes: &Writes<'_>) -> Result<usize> {
    let (orders, answers) = (writes.orders, &writes.answers);
    let lines: usize = orders.iter().map(|(o, _)| o.lines.len()).sum();
    let mut p = Params::new(e);
    if !orders.is_empty() {
        let sql = orders_sql(&mut p, orders.len());
        execute!(e, bind_orders!(sqlx::query(&sql), orders))?;
        let sql = lines_sql(&mut p, lines);
        execute!(e, bind_lines!(sqlx::query(&sql), orders))?;
        let sql = events_sql(&mut p, orders.len());
        execute!(e, bind_events!(sqlx::query(&sql), orders))?;
    }
    if answers.is_empty() {
        return Ok(0);
    }
    let sql = answers_sql(&mut p, answers.len());
    let (now, cutoff) = (writes.at.as_millis(), key_cutoff(writes.at).as_millis());
    let taken = fetch_all!(
        e,
        bind_answers!(sqlx::query(&sql), answers, now, cutoff),
        taken
    )?;
    Ok(taken.len())
}

/// One column of `rows`, as the array a PostgreSQL parameter binds.
pub(crate) fn column<'a, T, U>(rows: &'a [T], cell: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(cell).collect()
}

/// [`write_batch`] on PostgreSQL: one column array per parameter (the history
/// entries' order ids are the orders' own, `$1`); returns how many keys it
/// wrote.
async fn write_batch_postgres(c: &mut sqlx::PgConnection, writes: &Writes<'_>) -> Result<usize> {
    let orders: Vec<&Order> = writes.orders.iter().map(|(o, _)| o).collect();
    let lines: Vec<(&Order, i64, &OrderLine)> = orders
        .iter()
        .flat_map(|o| {
            o.lines
                .iter()
                .enumerate()
                .map(move |(i, l)| (*o, i as i64, l))
        })
        .collect();
    let first: Vec<&OrderHistoryEntry> = orders.iter().map(|o| &o.history[0]).collect();
    let answers = &writes.answers;
    let (taken,): (i64,) = sqlx::query_as(
        "WITH o AS (
             INSERT INTO orders (id, buyer_id, shop_id, room_id, sale_id, status, currency,
                 total_amount, paid_amount, refunded_amount, expires_at, created_at, updated_at,
                 idempotency_key)
             SELECT id, buyer, shop, room, sale, 'reserved', currency, total, 0, 0, expires,
                 created, created, key
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                 $7::bigint[], $8::bigint[], $9::bigint[], $10::text[])
                 AS v (id, buyer, shop, room, sale, currency, total, expires, created, key)
         ), l AS (
             INSERT INTO order_lines (order_id, position, variant_id, product_id, sku, title,
                 quantity, unit_amount)
             SELECT * FROM UNNEST($11::text[], $12::bigint[], $13::text[], $14::text[],
                 $15::text[], $16::text[], $17::bigint[], $18::bigint[])
         ), e AS (
             INSERT INTO order_events (id, order_id, status, actor_id, reason, amount, created_at)
             SELECT id, order_id, 'reserved', actor, reason, NULL, at
             FROM UNNEST($19::text[], $1::text[], $20::text[], $21::text[], $22::bigint[])
                 AS v (id, order_id, actor, reason, at)
         ), k AS (
             INSERT INTO idempotency_keys (user_id, key, request_hash, outcome, body, created_at)
             SELECT user_id, key, hash, outcome, body, $28
             FROM UNNEST($23::text[], $24::text[], $25::text[], $26::text[], $27::text[])
                 AS v (user_id, key, hash, outcome, body)
             ON CONFLICT (user_id, key) DO UPDATE SET request_hash = excluded.request_hash,
                 outcome = excluded.outcome, body = excluded.body,
                 created_at = excluded.created_at
             WHERE idempotency_keys.created_at < $29
             RETURNING 1
         )
         SELECT CAST(count(*) AS BIGINT) FROM k",
    )
    .bind(column(&orders, |o| o.id.as_str()))
    .bind(column(&orders, |o| o.buyer_id.as_str()))
    .bind(column(&orders, |o| o.shop_id.as_str()))
    .bind(column(&orders, |o| o.room_id.as_ref().map(RoomId::as_str)))
    .bind(column(&orders, |o| o.sale_id.as_ref().map(SaleId::as_str)))
    .bind(column(&orders, |o| o.total.currency.code()))
    .bind(column(&orders, |o| o.total.amount))
    .bind(column(&orders, |o| o.expires_at.map(Timestamp::as_millis)))
    .bind(column(&orders, |o| o.created_at.as_millis()))
    .bind(column(writes.orders, |(_, k)| k.as_deref()))
    .bind(column(&lines, |(o, _, _)| o.id.as_str()))
    .bind(column(&lines, |(_, i, _)| *i))
    .bind(column(&lines, |(_, _, l)| l.variant_id.as_str()))
    .bind(column(&lines, |(_, _, l)| l.product_id.as_str()))
    .bind(column(&lines, |(_, _, l)| l.sku.as_str()))
    .bind(column(&lines, |(_, _, l)| l.title.as_str()))
    .bind(column(&lines, |(_, _, l)| l.quantity))
    .bind(column(&lines, |(_, _, l)| l.unit_price.amount))
    .bind(column(&first, |h| h.id.as_str()))
    .bind(column(&first, |h| h.actor_id.as_ref().map(UserId::as_str)))
    .bind(column(&first, |h| h.reason.as_str()))
    .bind(column(&first, |h| h.at.as_millis()))
    .bind(column(answers, |a| a.user))
    .bind(column(answers, |a| a.key))
    .bind(column(answers, |a| a.hash))
    .bind(column(answers, |a| a.outcome))
    .bind(column(answers, |a| a.body.as_str()))
    .bind(writes.at.as_millis())
    .bind(key_cutoff(writes.at).as_millis())
    .fetch_one(c)
    .await?;
    Ok(usize::try_from(taken).unwrap_or_default())
}

impl Store {
    /// Serves a batch of taps on one sale in one transaction and answers each,
    /// in order. Called by the sale's batcher; see the module documentation.
    /// Apart from the per-buyer limit (one conditional upsert per round, and a
    /// storm of distinct buyers is one round), every step is one statement for
    /// the whole batch.
    pub async fn claim_batch(
        &self,
        sale: &SaleId,
        claims: &[Claim],
        reservation: Duration,
    ) -> Result<Vec<ClaimOutcome>> {
        again_on_key_race(|| self.claim_batch_once(sale, claims, reservation)).await
    }

    async fn claim_batch_once(
        &self,
        sale: &SaleId,
        claims: &[Claim],
        reservation: Duration,
    ) -> Result<Vec<ClaimOutcome>> {
        let now = Timestamp::now();
        let mut tx = self.write().await?;
        let earlier = take_keys(&mut tx, claims, now).await?;
        let mut decided: Vec<Option<ClaimOutcome>> = earlier
            .into_iter()
            .map(|e| e.map(ClaimOutcome::Earlier))
            .collect();
        let mut drafts = Vec::new();
        let wanted: i64 = claims
            .iter()
            .zip(&decided)
            .filter(|(_, d)| d.is_none())
            .map(|(c, _)| c.quantity.get())
            .sum();
        if wanted > 0 {
            // SET expressions read the row as it was, so `last_claim` records how
            // many of the wanted units this update took: all, or what was left.
            let claimed = fetch_optional!(
                &mut tx,
                sqlx::query(
                    "UPDATE sales SET
                         last_claim = CASE WHEN available >= $2 THEN $2 ELSE available END,
                         available = CASE WHEN available >= $2 THEN available - $2 ELSE 0 END,
                         status = CASE WHEN available <= $2 THEN 'sold_out' ELSE status END,
                         updated_at = $3
                     WHERE id = $1 AND status = 'live' AND starts_at <= $3 AND ends_at > $3
                     RETURNING last_claim, per_buyer_limit, price_amount, currency, variant_id,
                         shop_id, room_id,
                         (SELECT v.product_id FROM variants v
                             WHERE v.id = sales.variant_id) AS product_id,
                         (SELECT v.sku FROM variants v WHERE v.id = sales.variant_id) AS sku,
                         (SELECT p.title FROM variants v JOIN products p ON p.id = v.product_id
                             WHERE v.id = sales.variant_id) AS title"
                )
                .bind(sale.as_str())
                .bind(wanted)
                .bind(now.as_millis()),
                terms
            )?;
            match claimed {
                None => {
                    let state = fetch_optional!(
                        &mut tx,
                        sqlx::query("SELECT status FROM sales WHERE id = $1").bind(sale.as_str()),
                        status
                    )?
                    .ok_or(StoreError::NotFound)?;
                    let refusal = if state == "sold_out" {
                        ClaimOutcome::Refused(Refusal::SoldOut)
                    } else {
                        ClaimOutcome::Refused(Refusal::NotLive)
                    };
                    for d in decided.iter_mut().filter(|d| d.is_none()) {
                        *d = Some(refusal.clone());
                    }
                }
                Some(terms) => {
                    drafts = serve_taps(
                        &mut tx,
                        sale,
                        claims,
                        &terms,
                        &mut decided,
                        now,
                        reservation,
                    )
                    .await?;
                }
            }
        }
        finish_batch(tx, claims, decided, &drafts, now, ClaimOutcome::record).await
    }
}

/// Serves the undecided taps of a batch whose claim was granted `terms.granted`
/// units: each gets units unless the stock or its limit says no; units left
/// over go back to the sale. Returns the orders to write, in the order of
/// their taps.
///
/// Limits are taken in rounds, each one multi-row conditional upsert: a round
/// holds at most one tap per buyer (a row may change once per statement) and
/// only taps the remaining units could serve. A tap the upsert refuses gives its
/// units back for the next round. A storm of distinct buyers is one round.
async fn serve_taps(
    e: &mut impl Execute,
    sale: &SaleId,
    claims: &[Claim],
    terms: &Terms,
    decided: &mut [Option<ClaimOutcome>],
    now: Timestamp,
    reservation: Duration,
) -> Result<Vec<(Order, Option<String>)>> {
    let item = &terms.item;
    let mut left = terms.granted;
    let mut reserved = Vec::new();
    let mut pending: Vec<usize> = Vec::new();
    for (i, claim) in claims.iter().enumerate() {
        if decided[i].is_none() {
            if claim.quantity.get() > terms.limit {
                decided[i] = Some(ClaimOutcome::Refused(Refusal::LimitReached));
            } else {
                pending.push(i);
            }
        }
    }
    while !pending.is_empty() {
        let mut round = Vec::new();
        let mut later = Vec::new();
        let mut in_round = std::collections::HashSet::new();
        let mut budget = left;
        for i in pending {
            let (buyer, n) = (claims[i].buyer.as_str(), claims[i].quantity.get());
            if n <= budget && in_round.insert(buyer) {
                budget -= n;
                round.push(i);
            } else {
                later.push(i);
            }
        }
        if round.is_empty() {
            // Nothing left fits what remains of the claim.
            for i in later {
                decided[i] = Some(ClaimOutcome::Refused(Refusal::SoldOut));
            }
            break;
        }
        let holders = take_limits(e, sale, claims, &round, terms.limit).await?;
        for i in round {
            if holders.contains(claims[i].buyer.as_str()) {
                left -= claims[i].quantity.get();
                reserved.push(i);
            } else {
                decided[i] = Some(ClaimOutcome::Refused(Refusal::LimitReached));
            }
        }
        pending = later;
    }
    reserved.sort_unstable();
    let expires_at = now.plus_millis(reservation.as_millis() as i64);
    let drafts = reserved
        .iter()
        .map(|&i| {
            let claim = &claims[i];
            draft_order(NewOrder {
                buyer: &claim.buyer,
                shop: &terms.shop,
                room: Some(&terms.room),
                sale: Some(sale),
                lines: vec![OrderLine {
                    variant_id: terms.variant.clone(),
                    product_id: item.product.clone(),
                    sku: item.sku.clone(),
                    title: item.title.clone(),
                    quantity: claim.quantity.get(),
                    unit_price: terms.price,
                }],
                at: now,
                expires_at,
                reason: "reserved in a flash sale",
                idempotency_key: claim.idempotency.as_ref().map(|k| k.key.as_str()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    for (&i, (order, _)) in reserved.iter().zip(&drafts) {
        decided[i] = Some(ClaimOutcome::Reserved(Box::new(order.clone())));
    }
    if left > 0 {
        // Units claimed for taps that were refused go back to the sale.
        execute!(
            e,
            sqlx::query(
                "UPDATE sales SET available = available + $2,
                     status = CASE WHEN status = 'sold_out' THEN 'live' ELSE status END
                 WHERE id = $1"
            )
            .bind(sale.as_str())
            .bind(left)
        )?;
    }
    Ok(drafts)
}

/// Adds the units of the `round` taps (distinct buyers) to what each buyer holds
/// in the sale, in one conditional upsert, and returns the buyers it accepted: a
/// buyer who would pass `limit` gets no row back, so two parallel taps cannot
/// both get through.
async fn take_limits(
    e: &mut impl Execute,
    sale: &SaleId,
    claims: &[Claim],
    round: &[usize],
    limit: i64,
) -> Result<std::collections::HashSet<String>> {
    if let Exec::Postgres(c) = e.exec() {
        // Arrays: one statement text for every round, prepared once.
        let accepted: Vec<(String,)> = sqlx::query_as(
            "INSERT INTO sale_buyers (sale_id, buyer_id, quantity)
             SELECT $1, buyer, quantity FROM UNNEST($2::text[], $3::bigint[]) AS v (buyer, quantity)
             ON CONFLICT (sale_id, buyer_id) DO UPDATE
                 SET quantity = sale_buyers.quantity + excluded.quantity
                 WHERE sale_buyers.quantity + excluded.quantity <= $4
             RETURNING buyer_id",
        )
        .bind(sale.as_str())
        .bind(column(round, |&i| claims[i].buyer.as_str()))
        .bind(column(round, |&i| claims[i].quantity.get()))
        .bind(limit)
        .fetch_all(c)
        .await?;
        return Ok(accepted.into_iter().map(|(b,)| b).collect());
    }
    let mut p = Params::new(e);
    let sql = format!(
        "INSERT INTO sale_buyers (sale_id, buyer_id, quantity) VALUES {}
         ON CONFLICT (sale_id, buyer_id) DO UPDATE
             SET quantity = sale_buyers.quantity + excluded.quantity
             WHERE sale_buyers.quantity + excluded.quantity <= {}
         RETURNING buyer_id",
        p.rows(round.len(), 3),
        p.next()
    );
    let accepted = fetch_all!(
        e,
        {
            let mut q = sqlx::query(&sql);
            for &i in round {
                q = q
                    .bind(sale.as_str())
                    .bind(claims[i].buyer.as_str())
                    .bind(claims[i].quantity.get());
            }
            q.bind(limit)
        },
        buyer_id
    )?;
    Ok(accepted.into_iter().collect())
}

fn buyer_id<R: Get>(r: &R) -> Result<String> {
    r.text("buyer_id")
}

/// Flash-sale taps on one sale.
struct SaleTaps {
    store: Store,
    sale: SaleId,
    reservation: Duration,
    /// Poked after every batch that sold something (see [`run_reporter`]).
    poke: watch::Sender<()>,
}

impl Serve for SaleTaps {
    type Tap = Claim;
    type Outcome = ClaimOutcome;
    const MAX_BATCH: usize = 512;

    async fn serve(&mut self, taps: &[Claim]) -> Result<Vec<ClaimOutcome>> {
        let outcomes = self
            .store
            .claim_batch(&self.sale, taps, self.reservation)
            .await?;
        if sold_any(&outcomes) {
            self.poke.send_replace(());
        }
        Ok(outcomes)
    }
}

/// Regular orders whose first line is one variant.
struct ShelfTaps {
    store: Store,
    reservation: Duration,
}

impl Serve for ShelfTaps {
    type Tap = RegularOrder;
    type Outcome = OrderOutcome;
    /// An order has up to 20 lines: 128 of them are at most 2,560 lines, whose
    /// rows fit SQLite's 32,766 parameters per statement.
    const MAX_BATCH: usize = 128;

    async fn serve(&mut self, taps: &[RegularOrder]) -> Result<Vec<OrderOutcome>> {
        self.store.reserve_batch(taps, self.reservation).await
    }
}

/// Purchases, served through one batcher task per flash sale and one per
/// variant at its list price. Cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    store: Store,
    reservation: Duration,
    sales: Arc<Batchers<SaleId, SaleTaps>>,
    shelves: Arc<Batchers<VariantId, ShelfTaps>>,
    /// Off only to measure against: each tap then runs its own transaction,
    /// contending for the sale's row (the naive path of `bench/flash-sale`).
    batching: bool,
    /// Told the sale's new state after every batch that sold something.
    observer: Option<StockObserver>,
}

/// Called with a sale's state after its stock changed (the API turns it into
/// room events).
pub type StockObserver = Arc<dyn Fn(&FlashSale) + Send + Sync>;

fn sold_any(outcomes: &[ClaimOutcome]) -> bool {
    outcomes
        .iter()
        .any(|o| matches!(o, ClaimOutcome::Reserved(_)))
}

/// Tells `observer` the sale's state whenever the batcher pokes: a read after
/// the last poke sees the last batch, so the final report is the true count. Off
/// the batcher's path, so the next batch need not wait for the read.
async fn run_reporter(
    store: Store,
    sale: SaleId,
    observer: StockObserver,
    mut poked: watch::Receiver<()>,
) {
    while poked.changed().await.is_ok() {
        match store.sale(&sale).await {
            Ok(Some(state)) => observer(&state),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(sale = %sale, error = %e, "cannot read a sale's stock to report it")
            }
        }
    }
}

impl Inventory {
    /// `reservation` is how long a reserved order waits for payment.
    pub fn new(store: Store, reservation: Duration) -> Self {
        Self {
            store,
            reservation,
            sales: Arc::default(),
            shelves: Arc::default(),
            batching: true,
            observer: None,
        }
    }

    /// Reports every stock change to `observer`.
    pub fn observed_by(mut self, observer: StockObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The naive path, for benchmarks: one transaction per tap.
    pub fn without_batching(mut self) -> Self {
        self.batching = false;
        self
    }

    /// Serves one tap on a flash sale. The answer comes after the batch
    /// holding it committed.
    pub async fn buy(&self, sale: &SaleId, claim: Claim) -> Result<ClaimOutcome> {
        if !self.batching {
            let mut outcomes = self
                .store
                .claim_batch(sale, &[claim], self.reservation)
                .await?;
            return outcomes.pop().ok_or(StoreError::Interrupted);
        }
        let start = || {
            let (poke, poked) = watch::channel(());
            if let Some(observer) = self.observer.clone() {
                tokio::spawn(run_reporter(
                    self.store.clone(),
                    sale.clone(),
                    observer,
                    poked,
                ));
            }
            SaleTaps {
                store: self.store.clone(),
                sale: sale.clone(),
                reservation: self.reservation,
                poke,
            }
        };
        self.sales.submit(sale, claim, start).await
    }

    /// Reserves an order at list price through the batcher of its first line's
    /// variant (one tap's lines are sorted by variant): a storm of one-tap
    /// purchases of one product is served like a flash sale's. The answer
    /// comes after the batch holding it committed.
    pub async fn order(&self, order: RegularOrder) -> Result<OrderOutcome> {
        let Some(first) = order.lines.first().map(|l| l.variant.clone()) else {
            return Err(StoreError::Corrupt("an order without lines".into()));
        };
        if !self.batching {
            let mut outcomes = self
                .store
                .reserve_batch(std::slice::from_ref(&order), self.reservation)
                .await?;
            return outcomes.pop().ok_or(StoreError::Interrupted);
        }
        let start = || ShelfTaps {
            store: self.store.clone(),
            reservation: self.reservation,
        };
        self.shelves.submit(&first, order, start).await
    }
}
