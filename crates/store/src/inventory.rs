//! The inventory path for flash sales, as DESIGN.md's "How a purchase flows" has it.
//!
//! Every tap on a sale goes to that sale's batcher task. The batcher takes all
//! the taps that queued up while the previous transaction ran, and serves them in
//! ONE transaction ([`Store::claim_batch`]): one conditional update claims stock
//! for the whole batch, per-buyer limits are enforced by conditional upserts in
//! the same transaction, and the orders are inserted there too (group commit).
//! Nobody is answered before that transaction committed. Under no load a batch is
//! one tap and adds no delay; under a storm batches grow and the database does one
//! commit for hundreds of orders.
//!
//! The database row is the only source of truth, so several nodes, each with its
//! own batchers, cannot oversell: their claims serialise on the sale's row.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::Timestamp;
use domain::ids::{OrderEventId, OrderId, ProductId, RoomId, SaleId, ShopId, UserId, VariantId};
use domain::money::Money;
use domain::order::{Order, OrderHistoryEntry, OrderLine, OrderStatus};
use domain::sale::BuyQuantity;
use domain::stock::{AdjustmentReason, StockDelta};
use tokio::sync::{mpsc, oneshot};

use crate::Store;
use crate::catalog::adjust;
use crate::db::{Execute, execute, fetch_one, fetch_optional};
use crate::error::{Result, StoreError};
use crate::row::{Get, corrupt};

/// One buyer's tap on a sale.
#[derive(Debug, Clone)]
pub struct Claim {
    pub buyer: UserId,
    pub quantity: BuyQuantity,
    /// The tap's Idempotency-Key: kept on the order, and its answer recorded in
    /// the batch's own transaction so that it costs no commit of its own.
    pub idempotency: Option<ClaimKey>,
}

/// An Idempotency-Key and what to record for each possible answer.
#[derive(Debug, Clone)]
pub struct ClaimKey {
    pub key: String,
    pub request_hash: String,
    /// The bodies of the refusals (status 409), as the API words them.
    pub sold_out: String,
    pub limit_reached: String,
    pub not_live: String,
}

/// The answer to one tap.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// The order holding the reservation, committed.
    Reserved(Box<Order>),
    SoldOut,
    /// The buyer would hold more than the sale's per-buyer limit.
    LimitReached,
    /// The sale has not started, has ended or was cancelled.
    NotLive,
    /// Another tap with the same Idempotency-Key got there first.
    Duplicate,
}

impl ClaimOutcome {
    /// The status and body recorded for the tap's key (none for a duplicate).
    fn record(&self, key: &ClaimKey) -> Result<Option<(i64, String)>> {
        Ok(match self {
            ClaimOutcome::Reserved(order) => Some((
                201,
                serde_json::to_string(order).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )),
            ClaimOutcome::SoldOut => Some((409, key.sold_out.clone())),
            ClaimOutcome::LimitReached => Some((409, key.limit_reached.clone())),
            ClaimOutcome::NotLive => Some((409, key.not_live.clone())),
            ClaimOutcome::Duplicate => None,
        })
    }
}

/// Takes a tap's key for this batch: `false` when another request holds it.
async fn take_key(
    e: &mut impl Execute,
    buyer: &UserId,
    key: &ClaimKey,
    now: Timestamp,
) -> Result<bool> {
    let taken = execute!(
        e,
        sqlx::query(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, key) DO NOTHING"
        )
        .bind(buyer.as_str())
        .bind(&key.key)
        .bind(&key.request_hash)
        .bind(now.as_millis())
    )?;
    Ok(taken == 1)
}

/// Records the tap's answer under its key, in the batch's transaction.
async fn record_answer(
    e: &mut impl Execute,
    buyer: &UserId,
    key: &ClaimKey,
    outcome: &ClaimOutcome,
) -> Result<()> {
    if let Some((status, body)) = outcome.record(key)? {
        execute!(
            e,
            sqlx::query(
                "UPDATE idempotency_keys SET status = $3, body = $4 WHERE user_id = $1 AND key = $2"
            )
            .bind(buyer.as_str())
            .bind(&key.key)
            .bind(status)
            .bind(body)
        )?;
    }
    Ok(())
}

/// What a successful claim update tells about the sale.
struct Terms {
    granted: i64,
    limit: i64,
    price: Money,
    variant: VariantId,
    shop: ShopId,
    room: RoomId,
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
    })
}

fn status<R: Get>(r: &R) -> Result<String> {
    r.text("status")
}

fn held<R: Get>(r: &R) -> Result<i64> {
    r.int("quantity")
}

/// What is being bought, named as it is at the moment of purchase.
struct Item {
    product: ProductId,
    sku: String,
    title: String,
}

fn item<R: Get>(r: &R) -> Result<Item> {
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

/// Writes a reserved order, its lines and the first line of its history, and
/// returns it as it now stands.
pub(crate) async fn insert_order(e: &mut impl Execute, new: NewOrder<'_>) -> Result<Order> {
    let id = OrderId::generate();
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
    execute!(
        e,
        sqlx::query(
            "INSERT INTO orders (id, buyer_id, shop_id, room_id, sale_id, status, currency,
                 total_amount, paid_amount, refunded_amount, expires_at, created_at, updated_at,
                 idempotency_key)
             VALUES ($1, $2, $3, $4, $5, 'reserved', $6, $7, 0, 0, $8, $9, $9, $10)"
        )
        .bind(id.as_str())
        .bind(new.buyer.as_str())
        .bind(new.shop.as_str())
        .bind(new.room.map(RoomId::as_str))
        .bind(new.sale.map(SaleId::as_str))
        .bind(currency.code())
        .bind(total.amount)
        .bind(new.expires_at.as_millis())
        .bind(now.as_millis())
        .bind(new.idempotency_key)
    )?;
    for (position, l) in new.lines.iter().enumerate() {
        execute!(
            e,
            sqlx::query(
                "INSERT INTO order_lines (order_id, position, variant_id, product_id, sku, title,
                     quantity, unit_amount)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            )
            .bind(id.as_str())
            .bind(position as i64)
            .bind(l.variant_id.as_str())
            .bind(l.product_id.as_str())
            .bind(&l.sku)
            .bind(&l.title)
            .bind(l.quantity)
            .bind(l.unit_price.amount)
        )?;
    }
    let event = OrderEventId::generate();
    execute!(
        e,
        sqlx::query(
            "INSERT INTO order_events (id, order_id, status, actor_id, reason, amount, created_at)
             VALUES ($1, $2, 'reserved', $3, $4, NULL, $5)"
        )
        .bind(event.as_str())
        .bind(id.as_str())
        .bind(new.buyer.as_str())
        .bind(new.reason)
        .bind(now.as_millis())
    )?;
    Ok(Order {
        id,
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
            id: event,
            status: OrderStatus::Reserved,
            actor_id: Some(new.buyer.clone()),
            reason: new.reason.to_owned(),
            amount: None,
            at: now,
        }],
        created_at: now,
        updated_at: now,
    })
}

/// One tap of a batch whose claim was granted: gives it units from what is
/// `left` unless the limit or the stock says no.
#[allow(clippy::too_many_arguments)]
async fn serve_tap(
    e: &mut impl Execute,
    sale: &SaleId,
    claim: &Claim,
    terms: &Terms,
    item: &Item,
    left: &mut i64,
    now: Timestamp,
    expires_at: Timestamp,
) -> Result<ClaimOutcome> {
    let n = claim.quantity.get();
    if n > *left {
        return Ok(ClaimOutcome::SoldOut);
    }
    if n > terms.limit {
        return Ok(ClaimOutcome::LimitReached);
    }
    // Conditional upsert: no row comes back when the buyer would pass the
    // limit, so two parallel taps cannot both get through.
    let holding = fetch_optional!(
        e,
        sqlx::query(
            "INSERT INTO sale_buyers (sale_id, buyer_id, quantity) VALUES ($1, $2, $3)
             ON CONFLICT (sale_id, buyer_id) DO UPDATE
                 SET quantity = sale_buyers.quantity + excluded.quantity
                 WHERE sale_buyers.quantity + excluded.quantity <= $4
             RETURNING quantity"
        )
        .bind(sale.as_str())
        .bind(claim.buyer.as_str())
        .bind(n)
        .bind(terms.limit),
        held
    )?;
    if holding.is_none() {
        return Ok(ClaimOutcome::LimitReached);
    }
    *left -= n;
    let order = insert_order(
        e,
        NewOrder {
            buyer: &claim.buyer,
            shop: &terms.shop,
            room: Some(&terms.room),
            sale: Some(sale),
            lines: vec![OrderLine {
                variant_id: terms.variant.clone(),
                product_id: item.product.clone(),
                sku: item.sku.clone(),
                title: item.title.clone(),
                quantity: n,
                unit_price: terms.price,
            }],
            at: now,
            expires_at,
            reason: "reserved in a flash sale",
            idempotency_key: claim.idempotency.as_ref().map(|k| k.key.as_str()),
        },
    )
    .await?;
    Ok(ClaimOutcome::Reserved(Box::new(order)))
}

impl Store {
    /// Serves a batch of taps on one sale in one transaction and answers each,
    /// in order. Called by the sale's batcher; see the module documentation.
    pub async fn claim_batch(
        &self,
        sale: &SaleId,
        claims: &[Claim],
        reservation: Duration,
    ) -> Result<Vec<ClaimOutcome>> {
        let now = Timestamp::now();
        let wanted: i64 = claims.iter().map(|c| c.quantity.get()).sum();
        let mut tx = self.write().await?;
        // SET expressions read the row as it was, so `last_claim` records how many
        // of the wanted units this update took: all of them, or what was left.
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
                     shop_id, room_id"
            )
            .bind(sale.as_str())
            .bind(wanted)
            .bind(now.as_millis()),
            terms
        )?;
        let Some(terms) = claimed else {
            let state = fetch_optional!(
                &mut tx,
                sqlx::query("SELECT status FROM sales WHERE id = $1").bind(sale.as_str()),
                status
            )?
            .ok_or(StoreError::NotFound)?;
            let refusal = if state == "sold_out" {
                ClaimOutcome::SoldOut
            } else {
                ClaimOutcome::NotLive
            };
            let mut outcomes = Vec::with_capacity(claims.len());
            for claim in claims {
                let outcome = match &claim.idempotency {
                    Some(key) if !take_key(&mut tx, &claim.buyer, key, now).await? => {
                        ClaimOutcome::Duplicate
                    }
                    Some(key) => {
                        record_answer(&mut tx, &claim.buyer, key, &refusal).await?;
                        refusal.clone()
                    }
                    None => refusal.clone(),
                };
                outcomes.push(outcome);
            }
            tx.commit().await?;
            return Ok(outcomes);
        };
        let item = fetch_one!(
            &mut tx,
            sqlx::query(
                "SELECT v.product_id, v.sku, p.title FROM variants v
                 JOIN products p ON p.id = v.product_id WHERE v.id = $1"
            )
            .bind(terms.variant.as_str()),
            item
        )?;
        let expires_at = now.plus_millis(reservation.as_millis() as i64);
        let mut left = terms.granted;
        let mut outcomes = Vec::with_capacity(claims.len());
        for claim in claims {
            if let Some(key) = &claim.idempotency
                && !take_key(&mut tx, &claim.buyer, key, now).await?
            {
                outcomes.push(ClaimOutcome::Duplicate);
                continue;
            }
            let outcome = serve_tap(
                &mut tx, sale, claim, &terms, &item, &mut left, now, expires_at,
            )
            .await?;
            if let Some(key) = &claim.idempotency {
                record_answer(&mut tx, &claim.buyer, key, &outcome).await?;
            }
            outcomes.push(outcome);
        }
        if left > 0 {
            // Units claimed for taps that were refused go back to the sale.
            execute!(
                &mut tx,
                sqlx::query(
                    "UPDATE sales SET available = available + $2,
                         status = CASE WHEN status = 'sold_out' THEN 'live' ELSE status END
                     WHERE id = $1"
                )
                .bind(sale.as_str())
                .bind(left)
            )?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// One line of an order at the regular price.
#[derive(Debug, Clone)]
pub struct RegularLine {
    pub variant: VariantId,
    pub quantity: BuyQuantity,
}

impl Store {
    /// Reserves an order at list price: every line takes its units from its
    /// variant's stock (conditional update and ledger line, as every stock
    /// change) in the same transaction as the order, so either all lines are
    /// held or none is. Errors: `InsufficientStock` when a line's variant lacks
    /// the units, `NotFound` when a variant is unknown or its product is not
    /// active, `WrongState` when the lines belong to different shops.
    pub async fn reserve_order(
        &self,
        buyer: &UserId,
        room: Option<&RoomId>,
        lines: &[RegularLine],
        reservation: Duration,
        idempotency_key: Option<&str>,
    ) -> Result<Order> {
        let now = Timestamp::now();
        let mut tx = self.write().await?;
        let mut order_lines = Vec::with_capacity(lines.len());
        let mut shop = None;
        for line in lines {
            let priced = fetch_optional!(
                &mut tx,
                sqlx::query(
                    "SELECT v.product_id, v.sku, p.title, v.price_amount, v.currency, v.shop_id
                     FROM variants v JOIN products p ON p.id = v.product_id
                     WHERE v.id = $1 AND p.status = 'active'"
                )
                .bind(line.variant.as_str()),
                priced
            )?
            .ok_or(StoreError::NotFound)?;
            if shop.as_ref().is_some_and(|s| *s != priced.shop) {
                return Err(StoreError::WrongState);
            }
            shop = Some(priced.shop);
            order_lines.push(OrderLine {
                variant_id: line.variant.clone(),
                product_id: priced.item.product,
                sku: priced.item.sku,
                title: priced.item.title,
                quantity: line.quantity.get(),
                unit_price: priced.price,
            });
        }
        let shop = shop.ok_or_else(|| StoreError::Corrupt("an order without lines".into()))?;
        let order = insert_order(
            &mut tx,
            NewOrder {
                buyer,
                shop: &shop,
                room,
                sale: None,
                lines: order_lines,
                at: now,
                expires_at: now.plus_millis(reservation.as_millis() as i64),
                reason: "reserved at the regular price",
                idempotency_key,
            },
        )
        .await?;
        for line in lines {
            let delta =
                StockDelta::parse(-line.quantity.get()).map_err(|e| corrupt("quantity", e))?;
            adjust(
                &mut tx,
                &line.variant,
                delta,
                AdjustmentReason::Reserved,
                order.id.as_str(),
                buyer,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(order)
    }
}

/// A variant for sale at its list price.
struct Priced {
    item: Item,
    price: Money,
    shop: ShopId,
}

fn priced<R: Get>(r: &R) -> Result<Priced> {
    Ok(Priced {
        item: item(r)?,
        price: Money::parse(r.int("price_amount")?, &r.text("currency")?)
            .map_err(|e| corrupt("price", e))?,
        shop: ShopId::from_string(r.text("shop_id")?),
    })
}

type Reply = oneshot::Sender<std::result::Result<ClaimOutcome, Arc<StoreError>>>;

struct Pending {
    claim: Claim,
    reply: Reply,
}

/// Flash-sale taps, served through one batcher task per sale. Cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    store: Store,
    reservation: Duration,
    queues: Arc<Mutex<HashMap<SaleId, mpsc::Sender<Pending>>>>,
    /// Off only to measure against: each tap then runs its own transaction,
    /// contending for the sale's row (the naive path of `bench/flash-sale`).
    batching: bool,
}

impl Inventory {
    /// The most taps one transaction serves.
    pub const MAX_BATCH: usize = 512;
    /// Taps waiting for a sale's batcher; past this, callers wait to enqueue.
    const QUEUE: usize = 8192;
    /// A batcher with no taps for this long stops; the next tap starts another.
    const IDLE: Duration = Duration::from_secs(30);

    /// `reservation` is how long a reserved order waits for payment.
    pub fn new(store: Store, reservation: Duration) -> Self {
        Self {
            store,
            reservation,
            queues: Arc::default(),
            batching: true,
        }
    }

    /// The naive path, for benchmarks: one transaction per tap.
    pub fn without_batching(mut self) -> Self {
        self.batching = false;
        self
    }

    /// Serves one tap. The answer comes after the batch holding it committed.
    pub async fn buy(&self, sale: &SaleId, claim: Claim) -> Result<ClaimOutcome> {
        if !self.batching {
            let mut outcomes = self
                .store
                .claim_batch(sale, &[claim], self.reservation)
                .await?;
            return outcomes.pop().ok_or(StoreError::Interrupted);
        }
        let (reply, answer) = oneshot::channel();
        let mut pending = Pending { claim, reply };
        loop {
            let queue = self.queue(sale);
            match queue.send(pending).await {
                Ok(()) => break,
                // That batcher stopped for idleness just now: start another.
                Err(mpsc::error::SendError(back)) => pending = back,
            }
        }
        match answer.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(StoreError::Shared(e)),
            Err(_) => Err(StoreError::Interrupted),
        }
    }

    fn queue(&self, sale: &SaleId) -> mpsc::Sender<Pending> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = queues.get(sale)
            && !queue.is_closed()
        {
            return queue.clone();
        }
        if queues.len() >= 1024 {
            queues.retain(|_, q| !q.is_closed());
        }
        let (tx, rx) = mpsc::channel(Self::QUEUE);
        queues.insert(sale.clone(), tx.clone());
        tokio::spawn(run_batcher(
            self.store.clone(),
            sale.clone(),
            self.reservation,
            rx,
        ));
        tx
    }
}

async fn run_batcher(
    store: Store,
    sale: SaleId,
    reservation: Duration,
    mut taps: mpsc::Receiver<Pending>,
) {
    let mut batch = Vec::with_capacity(Inventory::MAX_BATCH);
    let mut closing = false;
    loop {
        let received = if closing {
            taps.recv_many(&mut batch, Inventory::MAX_BATCH).await
        } else {
            match tokio::time::timeout(
                Inventory::IDLE,
                taps.recv_many(&mut batch, Inventory::MAX_BATCH),
            )
            .await
            {
                Ok(n) => n,
                Err(_) => {
                    // Refuse new taps (their senders start a new batcher), then
                    // serve whatever slipped in before the refusal.
                    taps.close();
                    closing = true;
                    continue;
                }
            }
        };
        if received == 0 {
            return;
        }
        let claims: Vec<Claim> = batch.iter().map(|p| p.claim.clone()).collect();
        match store.claim_batch(&sale, &claims, reservation).await {
            Ok(outcomes) => {
                for (pending, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = pending.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(sale = %sale, error = %e, taps = batch.len(), "a flash-sale batch failed");
                let e = Arc::new(e);
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
