//! What a purchase batch writes: the orders it drafted, with their lines and
//! first history entries, and the answers under the keys of its taps; one
//! statement of fixed text over arrays on PostgreSQL, multi-row `VALUES` on
//! SQLite. The batch ends here ([`finish_batch`]).

use domain::Timestamp;
use domain::ids::{OrderEventId, OrderId, ProductId, RoomId, SaleId, ShopId, UserId};
use domain::money::Money;
use domain::order::{Order, OrderHistoryEntry, OrderLine, OrderStatus};

use crate::answer::Answer;
use crate::db::{Exec, Execute, Params, Tx, column, execute, fetch_all};
use crate::error::{Result, StoreError};
use crate::keys::{KeyAnswer, Keyed, answers, key_cutoff};
use crate::row::Get;

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
    /// The client address it came from, for [`crate::UnpaidCaps`].
    pub from: Option<&'a str>,
}

/// An order about to be written, with what the store keeps beside it.
pub(crate) struct Draft {
    pub order: Order,
    pub key: Option<String>,
    pub from: Option<String>,
}

/// The order a purchase makes, before it is written.
pub(crate) fn draft_order(new: NewOrder<'_>) -> Result<Draft> {
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
    Ok(Draft {
        order,
        key: new.idempotency_key.map(str::to_owned),
        from: new.from.map(str::to_owned),
    })
}

/// Binds the parameters of [`orders_sql`]: the same Rust values on either backend.
macro_rules! bind_orders {
    ($q:expr, $orders:expr) => {{
        let mut q = $q;
        for Draft {
            order: o,
            key,
            from,
        } in $orders
        {
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
                .bind(key.as_deref())
                .bind(from.as_deref());
        }
        q
    }};
}

/// Binds the parameters of [`lines_sql`].
macro_rules! bind_lines {
    ($q:expr, $orders:expr) => {{
        let mut q = $q;
        for Draft { order: o, .. } in $orders {
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
        for Draft { order: o, .. } in $orders {
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
             idempotency_key, placed_from)
         SELECT column1, column2, column3, column4, column5, 'reserved', column6, column7, 0, 0,
             column8, column9, column9, column10, column11 FROM (VALUES {}) AS v",
        p.rows(orders, 11)
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
    orders: &'a [Draft],
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
    let lines: usize = orders.iter().map(|d| d.order.lines.len()).sum();
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

/// [`write_batch`] on PostgreSQL: one column array per parameter (the history
/// entries' order ids are the orders' own, `$1`); returns how many keys it
/// wrote.
async fn write_batch_postgres(c: &mut sqlx::PgConnection, writes: &Writes<'_>) -> Result<usize> {
    let orders: Vec<&Order> = writes.orders.iter().map(|d| &d.order).collect();
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
                 idempotency_key, placed_from)
             SELECT id, buyer, shop, room, sale, 'reserved', currency, total, 0, 0, expires,
                 created, created, key, placed
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                 $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $30::text[])
                 AS v (id, buyer, shop, room, sale, currency, total, expires, created, key, placed)
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
    .bind(column(writes.orders, |d| d.key.as_deref()))
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
    .bind(column(writes.orders, |d| d.from.as_deref()))
    .fetch_one(c)
    .await?;
    Ok(usize::try_from(taken).unwrap_or_default())
}

/// Ends a batch whose every tap is decided: writes its orders and the answers
/// under the taps' keys ([`write_batch`]), commits, and returns the answers in
/// the order of the taps.
pub(crate) async fn finish_batch<T: Keyed, O>(
    mut tx: Tx,
    taps: &[T],
    decided: Vec<Option<O>>,
    orders: &[Draft],
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
