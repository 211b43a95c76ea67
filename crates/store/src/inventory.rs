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

use std::sync::Arc;
use std::time::Duration;

use domain::Timestamp;
use domain::ids::{RoomId, SaleId, ShopId, UserId, VariantId};
use domain::money::Money;
use domain::order::{Order, OrderLine};
use domain::sale::{BuyQuantity, FlashSale};
use tokio::sync::watch;

use crate::Store;
use crate::answer::{Answer, Refusal};
use crate::batcher::{Batchers, Serve};
use crate::checkout::{OrderOutcome, RegularOrder};
use crate::db::{Exec, Execute, Params, column, execute, fetch_all, fetch_optional};
use crate::error::{Result, StoreError};
use crate::holds::{Holds, Reservations};
use crate::keys::{Earlier, Keyed, again_on_key_race, made, take_keys};
use crate::reservations::{Draft, Item, NewOrder, draft_order, finish_batch, item};
use crate::row::{Get, corrupt};

/// One buyer's tap on a sale.
#[derive(Debug, Clone)]
pub struct Claim {
    pub buyer: UserId,
    pub quantity: BuyQuantity,
    /// The tap's Idempotency-Key: taken, and its answer recorded, inside the
    /// batch's own transaction, so that it costs no commit of its own.
    pub idempotency: Option<ClaimKey>,
    /// The client address the tap came from ([`crate::UnpaidCaps`]).
    pub from: Option<String>,
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
        rules: &Reservations,
    ) -> Result<Vec<ClaimOutcome>> {
        again_on_key_race(|| self.claim_batch_once(sale, claims, rules)).await
    }

    async fn claim_batch_once(
        &self,
        sale: &SaleId,
        claims: &[Claim],
        rules: &Reservations,
    ) -> Result<Vec<ClaimOutcome>> {
        let now = Timestamp::now();
        let reservation = rules.window;
        let mut tx = self.write().await?;
        let earlier = take_keys(&mut tx, claims, now).await?;
        let mut decided: Vec<Option<ClaimOutcome>> = earlier
            .into_iter()
            .map(|e| e.map(ClaimOutcome::Earlier))
            .collect();
        let undecided = claims.iter().zip(&decided).filter(|(_, d)| d.is_none());
        let mut holds = Holds::read(
            &mut tx,
            rules.caps,
            undecided.map(|(c, _)| (&c.buyer, c.from.as_deref())),
        )
        .await?;
        for (claim, decision) in claims.iter().zip(decided.iter_mut()) {
            if decision.is_none()
                && !holds.take(&claim.buyer, claim.from.as_deref(), claim.quantity.get())
            {
                *decision = Some(ClaimOutcome::Refused(Refusal::TooManyUnpaid));
            }
        }
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
                         updated_at = $3, version = version + 1
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
) -> Result<Vec<Draft>> {
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
                from: claim.from.as_deref(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    for (&i, draft) in reserved.iter().zip(&drafts) {
        decided[i] = Some(ClaimOutcome::Reserved(Box::new(draft.order.clone())));
    }
    if left > 0 {
        // Units claimed for taps that were refused go back to the sale.
        execute!(
            e,
            sqlx::query(
                "UPDATE sales SET available = available + $2, version = version + 1,
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
    rules: Reservations,
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
            .claim_batch(&self.sale, taps, &self.rules)
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
    rules: Reservations,
}

impl Serve for ShelfTaps {
    type Tap = RegularOrder;
    type Outcome = OrderOutcome;
    /// An order has up to 20 lines: 128 of them are at most 2,560 lines, whose
    /// rows fit SQLite's 32,766 parameters per statement.
    const MAX_BATCH: usize = 128;

    async fn serve(&mut self, taps: &[RegularOrder]) -> Result<Vec<OrderOutcome>> {
        self.store.reserve_batch(taps, &self.rules).await
    }
}

/// Purchases, served through one batcher task per flash sale and one per
/// variant at its list price. Cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    store: Store,
    /// Orders at list price.
    regular: Reservations,
    /// Flash-sale taps: a window of their own, shorter by default, since the
    /// units of a sale that sells out in seconds are wanted by many.
    flash: Reservations,
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
    /// `regular` and `flash` say how orders at list price and flash-sale taps
    /// reserve.
    pub fn new(store: Store, regular: Reservations, flash: Reservations) -> Self {
        Self {
            store,
            regular,
            flash,
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
            let mut outcomes = self.store.claim_batch(sale, &[claim], &self.flash).await?;
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
                rules: self.flash,
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
                .reserve_batch(std::slice::from_ref(&order), &self.regular)
                .await?;
            return outcomes.pop().ok_or(StoreError::Interrupted);
        }
        let start = || ShelfTaps {
            store: self.store.clone(),
            rules: self.regular,
        };
        self.shelves.submit(&first, order, start).await
    }
}
