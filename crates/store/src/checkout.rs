//! Orders at the regular price, through the same inventory path as flash
//! sales: the orders whose first line is one variant queue for that variant's
//! batcher ([`crate::Inventory::order`]), which serves all that queued while
//! the last transaction ran in ONE transaction ([`Store::reserve_batch`]): the
//! variants' rows are read and locked once, every order takes all its lines or
//! none, each variant's stock falls by one conditional update for the whole
//! batch, and the orders, their ledger lines and the answers under their
//! Idempotency-Keys are written in the same transaction (group commit).

use std::collections::{BTreeSet, HashMap};

use domain::Timestamp;
use domain::ids::{AdjustmentId, OrderId, RoomId, ShopId, UserId, VariantId};
use domain::money::Money;
use domain::order::{Order, OrderLine};
use domain::sale::BuyQuantity;
use domain::stock::AdjustmentReason;

use crate::Store;
use crate::answer::{Answer, Refusal};
use crate::db::column;
use crate::db::{Exec, Execute, Params, execute, fetch_all};
use crate::error::{Result, StoreError};
use crate::holds::{Holds, Reservations};
use crate::keys::{Earlier, Keyed, again_on_key_race, made, take_keys};
use crate::reservations::{Item, NewOrder, draft_order, finish_batch, item};
use crate::row::{Get, corrupt};

/// One line of an order at the regular price.
#[derive(Debug, Clone)]
pub struct RegularLine {
    pub variant: VariantId,
    pub quantity: BuyQuantity,
}

/// A buyer's order at list price: one or more variants of one shop.
#[derive(Debug, Clone)]
pub struct RegularOrder {
    pub buyer: UserId,
    /// The room the purchase came from (the caller checks it is the shop's).
    pub room: Option<RoomId>,
    /// One line per variant, sorted by variant.
    pub lines: Vec<RegularLine>,
    /// Taken, and its answer recorded, in the batch's own transaction.
    pub idempotency: Option<OrderKey>,
    /// The client address it came from ([`crate::UnpaidCaps`]).
    pub from: Option<String>,
}

impl Keyed for RegularOrder {
    fn buyer(&self) -> &UserId {
        &self.buyer
    }

    fn key(&self) -> Option<(&str, &str)> {
        self.idempotency
            .as_ref()
            .map(|k| (k.key.as_str(), k.request_hash.as_str()))
    }
}

/// An order's Idempotency-Key and the hash of its request.
#[derive(Debug, Clone)]
pub struct OrderKey {
    pub key: String,
    pub request_hash: String,
}

/// The answer to one order.
#[derive(Debug, Clone)]
pub enum OrderOutcome {
    /// The order holding the reservation, committed.
    Reserved(Box<Order>),
    Refused(Refusal),
    /// The order's Idempotency-Key belongs to an earlier request.
    Earlier(Earlier),
}

/// A variant as a batch finds it, locked for the batch's transaction.
struct Shelf {
    item: Item,
    price: Money,
    shop: ShopId,
    on_hand: i64,
}

fn shelf<R: Get>(r: &R) -> Result<(String, Shelf)> {
    Ok((
        r.text("id")?,
        Shelf {
            item: item(r)?,
            price: Money::parse(r.int("price_amount")?, &r.text("currency")?)
                .map_err(|e| corrupt("price", e))?,
            shop: ShopId::from_string(r.text("shop_id")?),
            on_hand: r.int("stock_on_hand")?,
        },
    ))
}

/// The variants for sale among `ids`, by id. On PostgreSQL their rows are
/// locked in id order, so batches of other nodes (and other batchers of this
/// one) that share a variant queue up instead of deadlocking; SQLite's writer
/// holds the whole database already.
async fn shelves(e: &mut impl Execute, ids: &BTreeSet<&str>) -> Result<HashMap<String, Shelf>> {
    const COLUMNS: &str = "v.id, v.product_id, v.sku, p.title, v.price_amount, v.currency,
        v.shop_id, v.stock_on_hand";
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = match e.exec() {
        Exec::Postgres(c) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM variants v JOIN products p ON p.id = v.product_id
                 WHERE v.id = ANY($1::text[]) AND p.status = 'active'
                 ORDER BY v.id FOR UPDATE OF v"
            );
            let ids: Vec<&str> = ids.iter().copied().collect();
            sqlx::query(&sql)
                .bind(ids)
                .fetch_all(c)
                .await?
                .iter()
                .map(shelf)
                .collect::<Result<Vec<_>>>()?
        }
        Exec::Sqlite(_) => {
            let mut p = Params::new(e);
            let marks: Vec<String> = ids.iter().map(|_| p.next()).collect();
            let sql = format!(
                "SELECT {COLUMNS} FROM variants v JOIN products p ON p.id = v.product_id
                 WHERE v.id IN ({}) AND p.status = 'active'",
                marks.join(", ")
            );
            fetch_all!(
                e,
                {
                    let mut q = sqlx::query(&sql);
                    for id in ids {
                        q = q.bind(*id);
                    }
                    q
                },
                shelf
            )?
        }
    };
    Ok(rows.into_iter().collect())
}

/// One line's units leaving the shelf: a row of the stock ledger.
struct Take<'a> {
    variant: &'a VariantId,
    quantity: i64,
    order: OrderId,
    buyer: &'a UserId,
    /// The variant's stock once this line is taken.
    after: i64,
}

/// Decides one order against what the batch has left of each variant: the shop
/// all its lines come from, or why it is refused.
fn check(
    order: &RegularOrder,
    shelf: &HashMap<String, Shelf>,
    left: &HashMap<String, i64>,
) -> std::result::Result<ShopId, Refusal> {
    let mut shop: Option<&ShopId> = None;
    for line in &order.lines {
        let Some(found) = shelf.get(line.variant.as_str()) else {
            return Err(Refusal::UnknownVariant {
                variant: line.variant.clone(),
            });
        };
        if shop.is_some_and(|s| *s != found.shop) {
            return Err(Refusal::MixedShops);
        }
        shop = Some(&found.shop);
    }
    for line in &order.lines {
        let on_hand = left.get(line.variant.as_str()).copied().unwrap_or(0);
        if on_hand < line.quantity.get() {
            return Err(Refusal::OutOfStock {
                variant: line.variant.clone(),
                on_hand,
            });
        }
    }
    shop.cloned().ok_or(Refusal::MixedShops)
}

impl Store {
    /// Serves a batch of orders at list price in one transaction and answers
    /// each, in order: see the module documentation. Orders are served in the
    /// order they came; one refused for want of stock leaves the units to the
    /// orders after it.
    pub async fn reserve_batch(
        &self,
        orders: &[RegularOrder],
        rules: &Reservations,
    ) -> Result<Vec<OrderOutcome>> {
        again_on_key_race(|| self.reserve_batch_once(orders, rules)).await
    }

    async fn reserve_batch_once(
        &self,
        orders: &[RegularOrder],
        rules: &Reservations,
    ) -> Result<Vec<OrderOutcome>> {
        let now = Timestamp::now();
        let expires_at = now.plus_millis(rules.window.as_millis() as i64);
        let mut tx = self.write().await?;
        let earlier = take_keys(&mut tx, orders, now).await?;
        let mut decided: Vec<Option<OrderOutcome>> = earlier
            .into_iter()
            .map(|e| e.map(OrderOutcome::Earlier))
            .collect();
        let wanted: BTreeSet<&str> = orders
            .iter()
            .zip(&decided)
            .filter(|(_, d)| d.is_none())
            .flat_map(|(o, _)| o.lines.iter().map(|l| l.variant.as_str()))
            .collect();
        let undecided = orders.iter().zip(&decided).filter(|(_, d)| d.is_none());
        let mut holds = Holds::read(
            &mut tx,
            rules.caps,
            undecided.map(|(o, _)| (&o.buyer, o.from.as_deref())),
        )
        .await?;
        let shelf = shelves(&mut tx, &wanted).await?;
        let mut left: HashMap<String, i64> = shelf
            .iter()
            .map(|(id, s)| (id.clone(), s.on_hand))
            .collect();
        let mut drafts = Vec::new();
        let mut takes = Vec::new();
        for (i, order) in orders.iter().enumerate() {
            if decided[i].is_some() {
                continue;
            }
            let shop = match check(order, &shelf, &left) {
                Ok(shop) => shop,
                Err(refusal) => {
                    decided[i] = Some(OrderOutcome::Refused(refusal));
                    continue;
                }
            };
            let units = order.lines.iter().map(|l| l.quantity.get()).sum();
            if !holds.take(&order.buyer, order.from.as_deref(), units) {
                decided[i] = Some(OrderOutcome::Refused(Refusal::TooManyUnpaid));
                continue;
            }
            let mut lines = Vec::with_capacity(order.lines.len());
            for line in &order.lines {
                let on = &shelf[line.variant.as_str()];
                lines.push(OrderLine {
                    variant_id: line.variant.clone(),
                    product_id: on.item.product.clone(),
                    sku: on.item.sku.clone(),
                    title: on.item.title.clone(),
                    quantity: line.quantity.get(),
                    unit_price: on.price,
                });
            }
            let drafted = draft_order(NewOrder {
                buyer: &order.buyer,
                shop: &shop,
                room: order.room.as_ref(),
                sale: None,
                lines,
                at: now,
                expires_at,
                reason: "reserved at the regular price",
                idempotency_key: order.idempotency.as_ref().map(|k| k.key.as_str()),
                from: order.from.as_deref(),
            })?;
            for line in &order.lines {
                let units = left.entry(line.variant.as_str().to_owned()).or_default();
                *units -= line.quantity.get();
                takes.push(Take {
                    variant: &line.variant,
                    quantity: line.quantity.get(),
                    order: drafted.order.id.clone(),
                    buyer: &order.buyer,
                    after: *units,
                });
            }
            decided[i] = Some(OrderOutcome::Reserved(Box::new(drafted.order.clone())));
            drafts.push(drafted);
        }
        take_stock(&mut tx, &takes, now).await?;
        finish_batch(tx, orders, decided, &drafts, now, OrderOutcome::record).await
    }
}

impl OrderOutcome {
    /// The answer recorded under the order's key; `None` when the key belongs
    /// to an earlier request.
    fn record(&self) -> Result<Option<Answer>> {
        Ok(match self {
            Self::Reserved(order) => Some(made(order)?),
            Self::Refused(refusal) => Some(Answer::Refused(refusal.clone())),
            Self::Earlier(_) => None,
        })
    }
}

/// Takes the batch's units off the shelf: one conditional update per variant
/// for all its orders, and a ledger line per order line, as every stock change
/// has.
async fn take_stock(e: &mut impl Execute, takes: &[Take<'_>], now: Timestamp) -> Result<()> {
    if takes.is_empty() {
        return Ok(());
    }
    let mut per_variant: Vec<(&VariantId, i64)> = Vec::new();
    for take in takes {
        match per_variant.iter_mut().find(|(v, _)| *v == take.variant) {
            Some((_, n)) => *n += take.quantity,
            None => per_variant.push((take.variant, take.quantity)),
        }
    }
    per_variant.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    for (variant, n) in per_variant {
        let changed = execute!(
            e,
            sqlx::query(
                "UPDATE variants SET stock_on_hand = stock_on_hand - $2, updated_at = $3
                 WHERE id = $1 AND stock_on_hand >= $2"
            )
            .bind(variant.as_str())
            .bind(n)
            .bind(now.as_millis())
        )?;
        if changed != 1 {
            // The row was read under this transaction's lock: it cannot have
            // fewer units than the batch counted.
            return Err(StoreError::Corrupt(format!(
                "variant {variant} lost units during a batch"
            )));
        }
    }
    let reason = AdjustmentReason::Reserved.as_str();
    if let Exec::Postgres(c) = e.exec() {
        sqlx::query(
            "INSERT INTO stock_adjustments (id, variant_id, delta, reason, note, actor_id,
                 on_hand_after, created_at)
             SELECT id, variant, -quantity, $7, note, actor, after, $8
             FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                 $6::bigint[]) AS v (id, variant, quantity, note, actor, after)",
        )
        .bind(column(takes, |_| {
            AdjustmentId::generate().as_str().to_owned()
        }))
        .bind(column(takes, |t| t.variant.as_str()))
        .bind(column(takes, |t| t.quantity))
        .bind(column(takes, |t| t.order.as_str()))
        .bind(column(takes, |t| t.buyer.as_str()))
        .bind(column(takes, |t| t.after))
        .bind(reason)
        .bind(now.as_millis())
        .execute(c)
        .await?;
        return Ok(());
    }
    let mut p = Params::new(e);
    let sql = format!(
        "INSERT INTO stock_adjustments (id, variant_id, delta, reason, note, actor_id,
             on_hand_after, created_at) VALUES {}",
        p.rows(takes.len(), 8)
    );
    execute!(e, {
        let mut q = sqlx::query(&sql);
        for t in takes {
            q = q
                .bind(AdjustmentId::generate().as_str().to_owned())
                .bind(t.variant.as_str())
                .bind(-t.quantity)
                .bind(reason)
                .bind(t.order.as_str())
                .bind(t.buyer.as_str())
                .bind(t.after)
                .bind(now.as_millis());
        }
        q
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn on_shelf(shop: &str, on_hand: i64) -> Shelf {
        Shelf {
            item: Item {
                product: domain::ids::ProductId::from_string("prd_1"),
                sku: "SKU".into(),
                title: "Thing".into(),
            },
            price: Money::parse(100, "EUR").unwrap(),
            shop: ShopId::from_string(shop),
            on_hand,
        }
    }

    fn order(lines: &[(&str, i64)]) -> RegularOrder {
        RegularOrder {
            buyer: UserId::from_string("usr_1"),
            room: None,
            lines: lines
                .iter()
                .map(|(v, n)| RegularLine {
                    variant: VariantId::from_string(*v),
                    quantity: BuyQuantity::parse("quantity", *n).unwrap(),
                })
                .collect(),
            idempotency: None,
            from: None,
        }
    }

    #[test]
    fn an_order_is_checked_line_by_line() {
        let shelf: HashMap<String, Shelf> = [
            ("var_a".to_owned(), on_shelf("shp_1", 5)),
            ("var_b".to_owned(), on_shelf("shp_1", 1)),
            ("var_c".to_owned(), on_shelf("shp_2", 9)),
        ]
        .into_iter()
        .collect();
        let left: HashMap<String, i64> = [("var_a".to_owned(), 5), ("var_b".to_owned(), 0)]
            .into_iter()
            .collect();
        let shop = ShopId::from_string("shp_1");
        assert_eq!(check(&order(&[("var_a", 5)]), &shelf, &left), Ok(shop));
        assert_eq!(
            check(&order(&[("var_a", 1), ("var_b", 1)]), &shelf, &left),
            Err(Refusal::OutOfStock {
                variant: VariantId::from_string("var_b"),
                on_hand: 0
            }),
            "what the batch has left counts, not what the row had"
        );
        assert_eq!(
            check(&order(&[("var_a", 1), ("var_c", 1)]), &shelf, &left),
            Err(Refusal::MixedShops)
        );
        assert_eq!(
            check(&order(&[("var_a", 1), ("var_x", 1)]), &shelf, &left),
            Err(Refusal::UnknownVariant {
                variant: VariantId::from_string("var_x")
            })
        );
    }
}
