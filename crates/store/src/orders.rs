//! Reading orders back with their lines and their history.

use domain::Timestamp;
use domain::ids::{OrderEventId, OrderId, ProductId, RoomId, SaleId, ShopId, UserId, VariantId};
use domain::money::{Currency, Money};
use domain::order::{
    Order, OrderError, OrderEvent, OrderHistoryEntry, OrderLine, OrderState, OrderStatus, Shipment,
};
use domain::stock::{AdjustmentReason, StockDelta};

use crate::catalog::adjust;
use crate::db::{Execute, execute, fetch_all, fetch_one, fetch_optional};
use crate::error::{Result, StoreError};
use crate::row::{Get, corrupt};
use crate::{Page, PageRequest, Store};

const ORDER_COLUMNS: &str = "id, buyer_id, shop_id, room_id, sale_id, status, currency, \
     total_amount, paid_amount, refunded_amount, expires_at, carrier, tracking_number, \
     created_at, updated_at";

fn money(amount: i64, currency: Currency) -> Money {
    Money { amount, currency }
}

fn order_head<R: Get>(r: &R) -> Result<Order> {
    let status = r.text("status")?;
    let currency = Currency::parse(&r.text("currency")?).map_err(|e| corrupt("currency", e))?;
    Ok(Order {
        id: OrderId::from_string(r.text("id")?),
        buyer_id: UserId::from_string(r.text("buyer_id")?),
        shop_id: ShopId::from_string(r.text("shop_id")?),
        room_id: r.opt_text("room_id")?.map(RoomId::from_string),
        sale_id: r.opt_text("sale_id")?.map(SaleId::from_string),
        status: OrderStatus::parse(&status).ok_or_else(|| corrupt("order status", status))?,
        lines: Vec::new(),
        total: money(r.int("total_amount")?, currency),
        paid: money(r.int("paid_amount")?, currency),
        refunded: money(r.int("refunded_amount")?, currency),
        expires_at: r.opt_int("expires_at")?.map(Timestamp::from_millis),
        shipment: match (r.opt_text("carrier")?, r.opt_text("tracking_number")?) {
            (Some(carrier), Some(tracking_number)) => Some(Shipment {
                carrier,
                tracking_number,
            }),
            _ => None,
        },
        history: Vec::new(),
        created_at: Timestamp::from_millis(r.int("created_at")?),
        updated_at: Timestamp::from_millis(r.int("updated_at")?),
    })
}

/// A line as stored: its unit price gets the order's currency in [`load_order`].
struct LineRow {
    variant_id: String,
    product_id: String,
    sku: String,
    title: String,
    quantity: i64,
    unit_amount: i64,
}

fn line<R: Get>(r: &R) -> Result<LineRow> {
    Ok(LineRow {
        variant_id: r.text("variant_id")?,
        product_id: r.text("product_id")?,
        sku: r.text("sku")?,
        title: r.text("title")?,
        quantity: r.int("quantity")?,
        unit_amount: r.int("unit_amount")?,
    })
}

fn history<R: Get>(r: &R) -> Result<(OrderHistoryEntry, Option<i64>)> {
    let status = r.text("status")?;
    Ok((
        OrderHistoryEntry {
            id: OrderEventId::from_string(r.text("id")?),
            status: OrderStatus::parse(&status).ok_or_else(|| corrupt("order status", status))?,
            actor_id: r.opt_text("actor_id")?.map(UserId::from_string),
            reason: r.text("reason")?,
            amount: None,
            at: Timestamp::from_millis(r.int("created_at")?),
        },
        r.opt_int("amount")?,
    ))
}

pub(crate) async fn load_order(e: &mut impl Execute, id: &OrderId) -> Result<Option<Order>> {
    let Some(mut order) = fetch_optional!(
        e,
        sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1")).bind(id.as_str()),
        order_head
    )?
    else {
        return Ok(None);
    };
    let currency = order.total.currency;
    let lines = fetch_all!(
        e,
        sqlx::query(
            "SELECT variant_id, product_id, sku, title, quantity, unit_amount
             FROM order_lines WHERE order_id = $1 ORDER BY position"
        )
        .bind(id.as_str()),
        line
    )?;
    order.lines = lines
        .into_iter()
        .map(|l| OrderLine {
            variant_id: VariantId::from_string(l.variant_id),
            product_id: ProductId::from_string(l.product_id),
            sku: l.sku,
            title: l.title,
            quantity: l.quantity,
            unit_price: money(l.unit_amount, currency),
        })
        .collect();
    let events = fetch_all!(
        e,
        sqlx::query(
            "SELECT id, status, actor_id, reason, amount, created_at
             FROM order_events WHERE order_id = $1 ORDER BY id"
        )
        .bind(id.as_str()),
        history
    )?;
    order.history = events
        .into_iter()
        .map(|(mut h, amount)| {
            h.amount = amount.map(|a| money(a, currency));
            h
        })
        .collect();
    Ok(Some(order))
}

fn owner_id<R: Get>(r: &R) -> Result<UserId> {
    Ok(UserId::from_string(r.text("owner_id")?))
}

fn order_id<R: Get>(r: &R) -> Result<OrderId> {
    Ok(OrderId::from_string(r.text("id")?))
}

/// [`Store::change_order`] inside the caller's transaction.
pub(crate) async fn apply_change(
    e: &mut impl Execute,
    id: &OrderId,
    change: OrderChange,
    now: Timestamp,
) -> Result<Order> {
    let order = load_order(e, id).await?.ok_or(StoreError::NotFound)?;
    let before = OrderState::of(&order);
    let after = before.apply(change.event).map_err(StoreError::Order)?;
    if change.restock && after.status != OrderStatus::Refunded {
        return Err(StoreError::Order(OrderError::Transition {
            from: before.status,
            event: change.event,
        }));
    }
    let updated = execute!(
        e,
        sqlx::query(
            "UPDATE orders SET status = $4, paid_amount = $5, refunded_amount = $6,
                 expires_at = CASE WHEN $4 = 'reserved' THEN expires_at ELSE NULL END,
                 carrier = COALESCE($7, carrier), tracking_number = COALESCE($8, tracking_number),
                 updated_at = $9
             WHERE id = $1 AND status = $2 AND refunded_amount = $3"
        )
        .bind(id.as_str())
        .bind(before.status.as_str())
        .bind(before.refunded.amount)
        .bind(after.status.as_str())
        .bind(after.paid.amount)
        .bind(after.refunded.amount)
        .bind(change.shipment.as_ref().map(|s| s.carrier.as_str()))
        .bind(change.shipment.as_ref().map(|s| s.tracking_number.as_str()))
        .bind(now.as_millis())
    )?;
    if updated == 0 {
        return Err(StoreError::WrongState);
    }
    let amount = match change.event {
        OrderEvent::Pay(m) | OrderEvent::Refund(m) => Some(m.amount),
        _ => None,
    };
    execute!(
        e,
        sqlx::query(
            "INSERT INTO order_events (id, order_id, status, actor_id, reason, amount, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )
        .bind(OrderEventId::generate().as_str())
        .bind(id.as_str())
        .bind(after.status.as_str())
        .bind(change.actor.as_ref().map(UserId::as_str))
        .bind(&change.reason)
        .bind(amount)
        .bind(now.as_millis())
    )?;
    let owner = fetch_one!(
        e,
        sqlx::query("SELECT owner_id FROM shops WHERE id = $1").bind(order.shop_id.as_str()),
        owner_id
    )?;
    if change.event == OrderEvent::Cancel {
        release_units(e, id, order.sale_id.as_ref(), &order.buyer_id, &owner, now).await?;
    }
    if change.restock {
        for line in &order.lines {
            let delta = StockDelta::parse(line.quantity).map_err(|e| corrupt("quantity", e))?;
            let actor = change.actor.as_ref().unwrap_or(&owner);
            adjust(
                e,
                &line.variant_id,
                delta,
                AdjustmentReason::Returned,
                id.as_str(),
                actor,
            )
            .await?;
        }
    }
    load_order(e, id).await?.ok_or(StoreError::NotFound)
}

impl Store {
    /// A shop's orders, newest first, optionally in one state, from one room or
    /// one sale, each with its lines and history.
    pub async fn orders_of_shop(
        &self,
        shop: &ShopId,
        filter: &OrderFilter,
        page: &PageRequest,
    ) -> Result<Page<Order>> {
        let mut c = self.read().await?;
        let ids = fetch_all!(
            &mut c,
            sqlx::query(
                "SELECT id FROM orders
                 WHERE shop_id = $1 AND ($2 = '' OR status = $2)
                   AND ($3 = '' OR room_id = $3) AND ($4 = '' OR sale_id = $4) AND id < $5
                 ORDER BY id DESC LIMIT $6"
            )
            .bind(shop.as_str())
            .bind(filter.status.map_or("", OrderStatus::as_str))
            .bind(filter.room.as_ref().map_or("", RoomId::as_str))
            .bind(filter.sale.as_ref().map_or("", SaleId::as_str))
            .bind(page.before_id())
            .bind(page.fetch_limit()),
            order_id
        )?;
        let mut orders = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(order) = load_order(&mut c, id).await? {
                orders.push(order);
            }
        }
        Ok(page.page(orders, |o| o.id.as_str().to_owned()))
    }

    /// A buyer's orders, newest first, each with its lines and history.
    pub async fn orders_of_buyer(&self, buyer: &UserId, page: &PageRequest) -> Result<Page<Order>> {
        let mut c = self.read().await?;
        let ids = fetch_all!(
            &mut c,
            sqlx::query(
                "SELECT id FROM orders WHERE buyer_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
            )
            .bind(buyer.as_str())
            .bind(page.before_id())
            .bind(page.fetch_limit()),
            order_id
        )?;
        let mut orders = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(order) = load_order(&mut c, id).await? {
                orders.push(order);
            }
        }
        Ok(page.page(orders, |o| o.id.as_str().to_owned()))
    }

    /// An order with its lines and its whole history.
    pub async fn order(&self, id: &OrderId) -> Result<Option<Order>> {
        let mut c = self.read().await?;
        load_order(&mut c, id).await
    }
}

/// A reservation that expired, and the sale its units went back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub order: OrderId,
    pub sale: Option<SaleId>,
}

/// What an expiring order gives back.
struct Lapsed {
    sale: Option<SaleId>,
    buyer: UserId,
    owner: UserId,
}

fn lapsed<R: Get>(r: &R) -> Result<Lapsed> {
    Ok(Lapsed {
        sale: r.opt_text("sale_id")?.map(SaleId::from_string),
        buyer: UserId::from_string(r.text("buyer_id")?),
        owner: UserId::from_string(r.text("owner_id")?),
    })
}

fn units<R: Get>(r: &R) -> Result<(VariantId, i64)> {
    Ok((
        VariantId::from_string(r.text("variant_id")?),
        r.int("quantity")?,
    ))
}

/// Gives back the units an order held (it expired or was cancelled): to its sale
/// while the sale is open, lowering the buyer's count toward the limit; else to
/// the variants' stock, with a ledger line in the shop owner's name.
async fn release_units(
    e: &mut impl Execute,
    order: &OrderId,
    sale: Option<&SaleId>,
    buyer: &UserId,
    owner: &UserId,
    now: Timestamp,
) -> Result<()> {
    let lines = fetch_all!(
        e,
        sqlx::query("SELECT variant_id, quantity FROM order_lines WHERE order_id = $1")
            .bind(order.as_str()),
        units
    )?;
    let total: i64 = lines.iter().map(|(_, n)| n).sum();
    if let Some(sale) = sale {
        execute!(
            e,
            sqlx::query(
                "UPDATE sale_buyers SET quantity = quantity - $3
                 WHERE sale_id = $1 AND buyer_id = $2 AND quantity >= $3"
            )
            .bind(sale.as_str())
            .bind(buyer.as_str())
            .bind(total)
        )?;
        let back = execute!(
            e,
            sqlx::query(
                "UPDATE sales SET available = available + $2, updated_at = $3, version = version + 1,
                     status = CASE WHEN status = 'sold_out' THEN 'live' ELSE status END
                 WHERE id = $1 AND status IN ('live', 'sold_out')"
            )
            .bind(sale.as_str())
            .bind(total)
            .bind(now.as_millis())
        )?;
        if back == 1 {
            return Ok(());
        }
    }
    for (variant, n) in &lines {
        let delta = StockDelta::parse(*n).map_err(|e| corrupt("quantity", e))?;
        adjust(
            e,
            variant,
            delta,
            AdjustmentReason::ReservationReleased,
            order.as_str(),
            owner,
        )
        .await?;
    }
    Ok(())
}

/// Which of a shop's orders to list.
#[derive(Debug, Default, Clone)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    pub room: Option<RoomId>,
    pub sale: Option<SaleId>,
}

/// A change to an order, made by a person or by Hawker.
pub struct OrderChange {
    pub event: OrderEvent,
    /// Who made it; `None` for Hawker itself or a payment provider.
    pub actor: Option<UserId>,
    pub reason: String,
    /// With `Fulfill`: how it was shipped.
    pub shipment: Option<Shipment>,
    /// With `Refund`: put every unit back on the shelf (only when the refund
    /// returns everything paid).
    pub restock: bool,
}

/// A reservation whose card payment is being charged or processed waits for
/// its answer (a webhook) this long past its window before it expires anyway, so
/// that a payment that succeeds late finds its order still reserved.
pub const PAYMENT_HOLD_MS: i64 = 60 * 60 * 1000;

/// The orders that may expire at `$1` (now), given `$3` (now minus the hold):
/// past their window, and with no payment in progress unless the hold is over.
const EXPIRABLE: &str = "expires_at <= $1 AND status = 'reserved'
     AND (expires_at <= $3 OR NOT EXISTS (SELECT 1 FROM payments
          WHERE payments.order_id = orders.id
            AND payments.status IN ('attempting', 'processing')))";

impl Store {
    /// Expires reservations whose window has passed (and whose payment, if one
    /// is in progress, has been waited for long enough: [`PAYMENT_HOLD_MS`]), at
    /// most `limit` of them, and returns them. Their units go back to their sale while it is
    /// open, or to the variant's stock once it has closed. Runs from the store's
    /// own rows, so it is right after a restart; each order's change is
    /// conditional on it still being reserved, so several nodes may run it.
    pub async fn expire_reservations(&self, now: Timestamp, limit: i64) -> Result<Vec<Expired>> {
        let due = {
            let mut c = self.read().await?;
            fetch_all!(
                &mut c,
                sqlx::query(&format!(
                    "SELECT id FROM orders WHERE {EXPIRABLE} ORDER BY expires_at LIMIT $2"
                ))
                .bind(now.as_millis())
                .bind(limit)
                .bind(now.as_millis() - PAYMENT_HOLD_MS),
                order_id
            )?
        };
        let mut expired = Vec::with_capacity(due.len());
        for id in due {
            expired.extend(self.expire_one(&id, now).await?);
        }
        Ok(expired)
    }

    /// Applies `change` to an order through the domain's state machine, keeps it
    /// in the order's history, and does what it implies: a cancel gives the units
    /// back, a restocking refund puts them on the shelf. `Transition` when the
    /// order's state refuses the change; `WrongState` when the order changed
    /// under us (try again).
    pub async fn change_order(&self, id: &OrderId, change: OrderChange) -> Result<Order> {
        let mut tx = self.write().await?;
        let changed = apply_change(&mut tx, id, change, Timestamp::now()).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// `Some` when the order expired now.
    async fn expire_one(&self, id: &OrderId, now: Timestamp) -> Result<Option<Expired>> {
        let mut tx = self.write().await?;
        let Some(order) = fetch_optional!(
            &mut tx,
            sqlx::query(&format!(
                "UPDATE orders SET status = 'expired', expires_at = NULL, updated_at = $1
                 WHERE id = $2 AND {EXPIRABLE}
                 RETURNING sale_id, buyer_id,
                     (SELECT owner_id FROM shops WHERE shops.id = orders.shop_id) AS owner_id"
            ))
            .bind(now.as_millis())
            .bind(id.as_str())
            .bind(now.as_millis() - PAYMENT_HOLD_MS),
            lapsed
        )?
        else {
            // Paid, cancelled, expired by another node, or a payment started
            // in the meantime.
            return Ok(None);
        };
        execute!(
            &mut tx,
            sqlx::query(
                "INSERT INTO order_events (id, order_id, status, actor_id, reason, amount, created_at)
                 VALUES ($1, $2, 'expired', NULL, 'not paid in time', NULL, $3)"
            )
            .bind(OrderEventId::generate().as_str())
            .bind(id.as_str())
            .bind(now.as_millis())
        )?;
        release_units(
            &mut tx,
            id,
            order.sale.as_ref(),
            &order.buyer,
            &order.owner,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Expired {
            order: id.clone(),
            sale: order.sale,
        }))
    }
}
