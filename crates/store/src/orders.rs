//! Reading orders back with their lines and their history.

use domain::Timestamp;
use domain::ids::{OrderEventId, OrderId, ProductId, RoomId, SaleId, ShopId, UserId, VariantId};
use domain::money::{Currency, Money};
use domain::order::{Order, OrderHistoryEntry, OrderLine, OrderStatus};
use domain::stock::{AdjustmentReason, StockDelta};

use crate::catalog::adjust;
use crate::db::{Execute, execute, fetch_all, fetch_optional};
use crate::error::Result;
use crate::row::{Get, corrupt};
use crate::{Page, PageRequest, Store};

const ORDER_COLUMNS: &str = "id, buyer_id, shop_id, room_id, sale_id, status, currency, \
     total_amount, paid_amount, refunded_amount, expires_at, created_at, updated_at";

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

fn order_id<R: Get>(r: &R) -> Result<OrderId> {
    Ok(OrderId::from_string(r.text("id")?))
}

impl Store {
    /// The order a buyer made with an Idempotency-Key, if that purchase committed.
    pub async fn order_by_idempotency_key(
        &self,
        buyer: &UserId,
        key: &str,
    ) -> Result<Option<Order>> {
        let mut c = self.read().await?;
        let id = fetch_optional!(
            &mut c,
            sqlx::query("SELECT id FROM orders WHERE buyer_id = $1 AND idempotency_key = $2")
                .bind(buyer.as_str())
                .bind(key),
            order_id
        )?;
        match id {
            Some(id) => load_order(&mut c, &id).await,
            None => Ok(None),
        }
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

impl Store {
    /// Expires reservations whose window has passed, at most `limit` of them,
    /// and returns their ids. Their units go back to their sale while it is
    /// open, or to the variant's stock once it has closed. Runs from the store's
    /// own rows, so it is right after a restart; each order's change is
    /// conditional on it still being reserved, so several nodes may run it.
    pub async fn expire_reservations(&self, now: Timestamp, limit: i64) -> Result<Vec<OrderId>> {
        let due = {
            let mut c = self.read().await?;
            fetch_all!(
                &mut c,
                sqlx::query(
                    "SELECT id FROM orders WHERE expires_at <= $1 AND status = 'reserved'
                     ORDER BY expires_at LIMIT $2"
                )
                .bind(now.as_millis())
                .bind(limit),
                order_id
            )?
        };
        let mut expired = Vec::with_capacity(due.len());
        for id in due {
            if self.expire_one(&id, now).await? {
                expired.push(id);
            }
        }
        Ok(expired)
    }

    async fn expire_one(&self, id: &OrderId, now: Timestamp) -> Result<bool> {
        let mut tx = self.write().await?;
        let Some(order) = fetch_optional!(
            &mut tx,
            sqlx::query(
                "UPDATE orders SET status = 'expired', expires_at = NULL, updated_at = $2
                 WHERE id = $1 AND status = 'reserved'
                 RETURNING sale_id, buyer_id,
                     (SELECT owner_id FROM shops WHERE shops.id = orders.shop_id) AS owner_id"
            )
            .bind(id.as_str())
            .bind(now.as_millis()),
            lapsed
        )?
        else {
            // Paid, cancelled or expired by another node in the meantime.
            return Ok(false);
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
        let lines = fetch_all!(
            &mut tx,
            sqlx::query("SELECT variant_id, quantity FROM order_lines WHERE order_id = $1")
                .bind(id.as_str()),
            units
        )?;
        let total: i64 = lines.iter().map(|(_, n)| n).sum();
        let back_to_sale = match &order.sale {
            Some(sale) => {
                execute!(
                    &mut tx,
                    sqlx::query(
                        "UPDATE sale_buyers SET quantity = quantity - $3
                         WHERE sale_id = $1 AND buyer_id = $2 AND quantity >= $3"
                    )
                    .bind(sale.as_str())
                    .bind(order.buyer.as_str())
                    .bind(total)
                )?;
                execute!(
                    &mut tx,
                    sqlx::query(
                        "UPDATE sales SET available = available + $2, updated_at = $3,
                             status = CASE WHEN status = 'sold_out' THEN 'live' ELSE status END
                         WHERE id = $1 AND status IN ('live', 'sold_out')"
                    )
                    .bind(sale.as_str())
                    .bind(total)
                    .bind(now.as_millis())
                )? == 1
            }
            None => false,
        };
        if !back_to_sale {
            for (variant, n) in &lines {
                let delta = StockDelta::parse(*n).map_err(|e| corrupt("quantity", e))?;
                adjust(
                    &mut tx,
                    variant,
                    delta,
                    AdjustmentReason::ReservationReleased,
                    id.as_str(),
                    &order.owner,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }
}
