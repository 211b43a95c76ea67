//! Flash sales: creation, start (the quantity leaves the variant's stock) and
//! close (unsold units go back), each with its stock ledger line.

use domain::Timestamp;
use domain::ids::{RoomId, SaleId, ShopId, UserId, VariantId};
use domain::money::Money;
use domain::sale::{FlashSale, SaleQuantity, SaleStatus};
use domain::stock::{AdjustmentReason, StockDelta};

use crate::catalog::adjust;
use crate::db::{fetch_all, fetch_one, fetch_optional};
use crate::error::{Result, StoreError};
use crate::row::{Get, corrupt};
use crate::{Page, PageRequest, Store};

pub struct NewSale {
    pub room: RoomId,
    pub shop: ShopId,
    pub variant: VariantId,
    pub price: Money,
    pub quantity: SaleQuantity,
    pub per_buyer_limit: i64,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
}

/// What a sale's orders hold: the orders that still hold stock (reserved, paid,
/// fulfilled or refunded after delivery) and their units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleTally {
    pub orders: i64,
    pub units: i64,
}

fn tally<R: Get>(r: &R) -> Result<SaleTally> {
    Ok(SaleTally {
        orders: r.int("orders")?,
        units: r.opt_int("units")?.unwrap_or(0),
    })
}

pub(crate) const SALE_COLUMNS: &str = "id, room_id, shop_id, variant_id, price_amount, currency, \
     quantity, available, per_buyer_limit, status, starts_at, ends_at, created_at, updated_at, \
     version";

pub(crate) fn sale<R: Get>(r: &R) -> Result<FlashSale> {
    let status = r.text("status")?;
    Ok(FlashSale {
        id: SaleId::from_string(r.text("id")?),
        room_id: RoomId::from_string(r.text("room_id")?),
        shop_id: ShopId::from_string(r.text("shop_id")?),
        variant_id: VariantId::from_string(r.text("variant_id")?),
        price: Money::parse(r.int("price_amount")?, &r.text("currency")?)
            .map_err(|e| corrupt("sale price", e))?,
        quantity: r.int("quantity")?,
        available: r.int("available")?,
        per_buyer_limit: r.int("per_buyer_limit")?,
        status: SaleStatus::parse(&status).ok_or_else(|| corrupt("sale status", status))?,
        starts_at: Timestamp::from_millis(r.int("starts_at")?),
        ends_at: Timestamp::from_millis(r.int("ends_at")?),
        created_at: Timestamp::from_millis(r.int("created_at")?),
        updated_at: Timestamp::from_millis(r.int("updated_at")?),
        version: r.int("version")?,
    })
}

fn sale_and_owner<R: Get>(r: &R) -> Result<(FlashSale, UserId)> {
    Ok((sale(r)?, UserId::from_string(r.text("owner_id")?)))
}

impl Store {
    /// Records a scheduled sale. Stock moves only when it starts.
    pub async fn create_sale(&self, new: NewSale) -> Result<FlashSale> {
        let now = Timestamp::now().as_millis();
        let mut tx = self.write().await?;
        let created = fetch_one!(
            &mut tx,
            sqlx::query(&format!(
                "INSERT INTO sales ({SALE_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, 'scheduled', $9, $10, $11, $11, 0)
                 RETURNING {SALE_COLUMNS}"
            ))
            .bind(SaleId::generate().as_str())
            .bind(new.room.as_str())
            .bind(new.shop.as_str())
            .bind(new.variant.as_str())
            .bind(new.price.amount)
            .bind(new.price.currency.code())
            .bind(new.quantity.get())
            .bind(new.per_buyer_limit)
            .bind(new.starts_at.as_millis())
            .bind(new.ends_at.as_millis())
            .bind(now),
            sale
        )?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn sale(&self, id: &SaleId) -> Result<Option<FlashSale>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(&format!("SELECT {SALE_COLUMNS} FROM sales WHERE id = $1"))
                .bind(id.as_str()),
            sale
        )
    }

    /// A room's sales, newest first.
    pub async fn sales_of_room(
        &self,
        room: &RoomId,
        page: &PageRequest,
    ) -> Result<Page<FlashSale>> {
        let mut c = self.read().await?;
        let rows = fetch_all!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {SALE_COLUMNS} FROM sales WHERE room_id = $1 AND id < $2
                 ORDER BY id DESC LIMIT $3"
            ))
            .bind(room.as_str())
            .bind(page.before_id())
            .bind(page.fetch_limit()),
            sale
        )?;
        Ok(page.page(rows, |s| s.id.as_str().to_owned()))
    }

    /// Counts the orders of a sale that hold its stock, straight from the order
    /// rows: with the sale's `available`, it must add up to the sale's quantity.
    pub async fn sale_tally(&self, id: &SaleId) -> Result<SaleTally> {
        let mut c = self.read().await?;
        fetch_one!(
            &mut c,
            sqlx::query(
                "SELECT COUNT(DISTINCT o.id) AS orders, CAST(SUM(l.quantity) AS BIGINT) AS units
                 FROM orders o JOIN order_lines l ON l.order_id = o.id
                 WHERE o.sale_id = $1 AND o.status NOT IN ('cancelled', 'expired')"
            )
            .bind(id.as_str()),
            tally
        )
    }

    /// Sales whose time has come: scheduled ones past their start, open ones past
    /// their end. The scheduler moves them; several nodes may race, and the
    /// conditional updates let one win.
    pub async fn due_sales(&self, now: Timestamp) -> Result<Vec<(FlashSale, UserId)>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query(
                "SELECT s.*, sh.owner_id FROM sales s JOIN shops sh ON sh.id = s.shop_id
                 WHERE (s.status = 'scheduled' AND s.starts_at <= $1)
                    OR (s.status IN ('scheduled', 'live', 'sold_out') AND s.ends_at <= $1)
                 ORDER BY s.starts_at LIMIT 100"
            )
            .bind(now.as_millis()),
            sale_and_owner
        )
    }

    /// Starts a scheduled sale now (moving its start forward if it was later):
    /// its quantity leaves the variant's stock, with a ledger line, in the same
    /// transaction. `InsufficientStock` when the variant
    /// lacks the units; `WrongState` when the sale is not scheduled.
    pub async fn start_sale(&self, id: &SaleId, actor: &UserId) -> Result<FlashSale> {
        let now = Timestamp::now().as_millis();
        let mut tx = self.write().await?;
        let started = fetch_optional!(
            &mut tx,
            sqlx::query(&format!(
                "UPDATE sales SET status = 'live', updated_at = $2, version = version + 1,
                     starts_at = CASE WHEN starts_at > $2 THEN $2 ELSE starts_at END
                 WHERE id = $1 AND status = 'scheduled' AND ends_at > $2
                 RETURNING {SALE_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(now),
            sale
        )?
        .ok_or(StoreError::WrongState)?;
        let delta = StockDelta::parse(-started.quantity).map_err(|e| corrupt("quantity", e))?;
        adjust(
            &mut tx,
            &started.variant_id,
            delta,
            AdjustmentReason::SaleAllocated,
            started.id.as_str(),
            actor,
        )
        .await?;
        tx.commit().await?;
        Ok(started)
    }

    /// Ends or cancels a sale (`to` is `Ended` or `Cancelled`). A sale that had
    /// started gives its unsold units back to the variant, with a ledger line.
    pub async fn close_sale(
        &self,
        id: &SaleId,
        to: SaleStatus,
        actor: &UserId,
    ) -> Result<FlashSale> {
        if !to.is_closed() {
            return Err(StoreError::WrongState);
        }
        let now = Timestamp::now().as_millis();
        let mut tx = self.write().await?;
        let before = fetch_optional!(
            &mut tx,
            sqlx::query(&format!("SELECT {SALE_COLUMNS} FROM sales WHERE id = $1"))
                .bind(id.as_str()),
            sale
        )?
        .ok_or(StoreError::NotFound)?;
        if before.status.is_closed() {
            return Err(StoreError::WrongState);
        }
        // Conditional on the state read above: a batch that sold in between
        // makes this update miss, and the caller can try again.
        let closed = fetch_optional!(
            &mut tx,
            sqlx::query(&format!(
                "UPDATE sales SET status = $3, updated_at = $4, version = version + 1
                 WHERE id = $1 AND status = $2 AND available = $5 RETURNING {SALE_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(before.status.as_str())
            .bind(to.as_str())
            .bind(now)
            .bind(before.available),
            sale
        )?
        .ok_or(StoreError::WrongState)?;
        if before.status != SaleStatus::Scheduled && closed.available > 0 {
            let delta = StockDelta::parse(closed.available).map_err(|e| corrupt("available", e))?;
            adjust(
                &mut tx,
                &closed.variant_id,
                delta,
                AdjustmentReason::SaleReturned,
                closed.id.as_str(),
                actor,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(closed)
    }
}
