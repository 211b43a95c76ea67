//! Payments and refunds as recorded from a payment provider's answers, each
//! written in the same transaction as the order change it causes.

use domain::Timestamp;
use domain::ids::{OrderEventId, OrderId, PaymentId, RefundId, UserId};
use domain::money::Money;
use domain::order::{Order, OrderEvent, OrderStatus, Payment, PaymentStatus, Refund};

use crate::Store;
use crate::db::{Execute, execute, fetch_all, fetch_one, fetch_optional};
use crate::error::{Result, StoreError};
use crate::orders::{OrderChange, apply_change};
use crate::row::{Get, corrupt};

const PAYMENT_COLUMNS: &str = "id, order_id, provider, intent_id, amount, currency, status, \
     failure_code, created_at, updated_at";

fn payment<R: Get>(r: &R) -> Result<Payment> {
    let status = r.text("status")?;
    Ok(Payment {
        id: PaymentId::from_string(r.text("id")?),
        order_id: OrderId::from_string(r.text("order_id")?),
        provider: r.text("provider")?,
        provider_payment_id: r.text("intent_id")?,
        amount: Money::parse(r.int("amount")?, &r.text("currency")?)
            .map_err(|e| corrupt("payment amount", e))?,
        status: PaymentStatus::parse(&status).ok_or_else(|| corrupt("payment status", status))?,
        failure_code: r.opt_text("failure_code")?,
        created_at: Timestamp::from_millis(r.int("created_at")?),
        updated_at: Timestamp::from_millis(r.int("updated_at")?),
    })
}

/// A processing payment settled by its provider's webhook.
#[derive(Debug, Clone)]
pub struct Settled {
    pub payment: Payment,
    pub order: Order,
    /// The payment succeeded but the order could no longer take it: its money
    /// is to go back, and a reversal is due.
    pub reversal_due: bool,
}

/// A provider's answer to a charge.
pub struct NewPayment<'a> {
    pub order: &'a OrderId,
    pub provider: &'a str,
    pub intent_id: &'a str,
    pub amount: Money,
    pub status: PaymentStatus,
    pub failure_code: Option<&'a str>,
    /// The buyer who paid.
    pub payer: &'a UserId,
    /// Shown in the order's history, such as "paid by card ending 4242".
    pub reason: String,
}

/// Pays the order when the payment succeeded, in the caller's transaction.
async fn pay_if_succeeded(
    e: &mut impl Execute,
    payment: &Payment,
    actor: Option<UserId>,
    reason: String,
    now: Timestamp,
) -> Result<Order> {
    if payment.status != PaymentStatus::Succeeded {
        return crate::orders::load_order(e, &payment.order_id)
            .await?
            .ok_or(StoreError::NotFound);
    }
    apply_change(
        e,
        &payment.order_id,
        OrderChange {
            event: OrderEvent::Pay(payment.amount),
            actor,
            reason,
            shipment: None,
            restock: false,
        },
        now,
    )
    .await
}

impl Store {
    /// Records a charge; a successful one pays the order in the same transaction,
    /// so an order is paid exactly when a succeeded payment exists for it.
    pub async fn record_payment(&self, new: NewPayment<'_>) -> Result<(Payment, Order)> {
        let now = Timestamp::now();
        let mut tx = self.write().await?;
        let recorded = fetch_one!(
            &mut tx,
            sqlx::query(&format!(
                "INSERT INTO payments (id, order_id, provider, intent_id, amount, currency, status,
                     failure_code, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING {PAYMENT_COLUMNS}"
            ))
            .bind(PaymentId::generate().as_str())
            .bind(new.order.as_str())
            .bind(new.provider)
            .bind(new.intent_id)
            .bind(new.amount.amount)
            .bind(new.amount.currency.code())
            .bind(new.status.as_str())
            .bind(new.failure_code)
            .bind(now.as_millis()),
            payment
        )?;
        let order =
            pay_if_succeeded(&mut tx, &recorded, Some(new.payer.clone()), new.reason, now).await?;
        tx.commit().await?;
        Ok((recorded, order))
    }

    /// Applies a provider's webhook about a processing payment. `None` when the
    /// event was applied before (a replay) or the payment is already settled.
    /// A success for an order that can no longer be paid (its reservation
    /// expired or was cancelled first) leaves the order as it is, notes it in
    /// its history, and makes a reversal due (see [`Store::claim_reversals`]).
    pub async fn settle_payment(
        &self,
        provider: &str,
        event_id: &str,
        intent_id: &str,
        succeeded: bool,
        failure_code: Option<&str>,
    ) -> Result<Option<Settled>> {
        let now = Timestamp::now();
        let mut tx = self.write().await?;
        let first_time = execute!(
            &mut tx,
            sqlx::query(
                "INSERT INTO webhook_events (provider, event_id, received_at) VALUES ($1, $2, $3)
                 ON CONFLICT (provider, event_id) DO NOTHING"
            )
            .bind(provider)
            .bind(event_id)
            .bind(now.as_millis())
        )?;
        if first_time == 0 {
            return Ok(None);
        }
        let status = if succeeded {
            PaymentStatus::Succeeded
        } else {
            PaymentStatus::Failed
        };
        let settled = fetch_optional!(
            &mut tx,
            sqlx::query(&format!(
                "UPDATE payments SET status = $3, failure_code = $4, updated_at = $5
                 WHERE provider = $1 AND intent_id = $2 AND status = 'processing'
                 RETURNING {PAYMENT_COLUMNS}"
            ))
            .bind(provider)
            .bind(intent_id)
            .bind(status.as_str())
            .bind(failure_code)
            .bind(now.as_millis()),
            payment
        )?;
        let Some(settled) = settled else {
            // Unknown or already settled: remember the event, change nothing.
            tx.commit().await?;
            return Ok(None);
        };
        let current = crate::orders::load_order(&mut tx, &settled.order_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if succeeded && current.status != OrderStatus::Reserved {
            execute!(
                &mut tx,
                sqlx::query(
                    "INSERT INTO payment_reversals (payment_id, order_id, created_at)
                     VALUES ($1, $2, $3)"
                )
                .bind(settled.id.as_str())
                .bind(settled.order_id.as_str())
                .bind(now.as_millis())
            )?;
            let reason = format!(
                "a payment of {} came after the order was {}: it is refunded",
                settled.amount,
                current.status.as_str()
            );
            execute!(
                &mut tx,
                sqlx::query(
                    "INSERT INTO order_events (id, order_id, status, actor_id, reason, amount, created_at)
                     VALUES ($1, $2, $3, NULL, $4, $5, $6)"
                )
                .bind(OrderEventId::generate().as_str())
                .bind(settled.order_id.as_str())
                .bind(current.status.as_str())
                .bind(reason)
                .bind(settled.amount.amount)
                .bind(now.as_millis())
            )?;
            let order = crate::orders::load_order(&mut tx, &settled.order_id)
                .await?
                .ok_or(StoreError::NotFound)?;
            tx.commit().await?;
            return Ok(Some(Settled {
                payment: settled,
                order,
                reversal_due: true,
            }));
        }
        let order = pay_if_succeeded(
            &mut tx,
            &settled,
            None,
            format!("paid ({provider} confirmed)"),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Settled {
            payment: settled,
            order,
            reversal_due: false,
        }))
    }

    /// Claims up to `limit` due reversals for `lease` (another node skips them
    /// meanwhile): the payments to refund in full with their providers.
    pub async fn claim_reversals(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<Payment>> {
        let mut tx = self.write().await?;
        let until = now.plus_millis(lease.as_millis() as i64);
        let claimed = fetch_all!(
            &mut tx,
            sqlx::query(
                "UPDATE payment_reversals SET claimed_until = $1
                 WHERE payment_id IN (
                     SELECT payment_id FROM payment_reversals
                     WHERE refunded_at IS NULL AND (claimed_until IS NULL OR claimed_until < $2)
                     ORDER BY created_at LIMIT $3)
                 RETURNING payment_id"
            )
            .bind(until.as_millis())
            .bind(now.as_millis())
            .bind(limit),
            |r: &_| Get::text(r, "payment_id")
        )?;
        let mut payments = Vec::with_capacity(claimed.len());
        for id in claimed {
            payments.push(fetch_one!(
                &mut tx,
                sqlx::query(&format!(
                    "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1"
                ))
                .bind(&id),
                payment
            )?);
        }
        tx.commit().await?;
        Ok(payments)
    }

    /// Reversals not yet refunded (claimed or not).
    pub async fn reversals_pending(&self) -> Result<i64> {
        let mut c = self.read().await?;
        fetch_one!(
            &mut c,
            sqlx::query(
                "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM payment_reversals
                 WHERE refunded_at IS NULL"
            ),
            |r: &_| Get::int(r, "n")
        )
    }

    /// Records that the provider refunded a reversed payment.
    pub async fn reversal_refunded(&self, payment: &PaymentId, refund_id: &str) -> Result<()> {
        let mut tx = self.write().await?;
        execute!(
            &mut tx,
            sqlx::query(
                "UPDATE payment_reversals SET refunded_at = $2, provider_refund_id = $3
                 WHERE payment_id = $1 AND refunded_at IS NULL"
            )
            .bind(payment.as_str())
            .bind(Timestamp::now().as_millis())
            .bind(refund_id)
        )?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether a payment of the order is still waiting for the provider's answer.
    pub async fn payment_in_progress(&self, order: &OrderId) -> Result<bool> {
        let mut c = self.read().await?;
        let found = fetch_optional!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 AND status = 'processing'"
            ))
            .bind(order.as_str()),
            payment
        )?;
        Ok(found.is_some())
    }

    /// The succeeded payment of an order, for refunds.
    pub async fn succeeded_payment(&self, order: &OrderId) -> Result<Option<Payment>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 AND status = 'succeeded'"
            ))
            .bind(order.as_str()),
            payment
        )
    }

    /// Records a refund the provider made and applies it to the order (and
    /// restocks when asked), in one transaction.
    pub async fn record_refund(
        &self,
        payment: &Payment,
        provider_refund_id: &str,
        amount: Money,
        reason: &str,
        restock: bool,
        actor: &UserId,
    ) -> Result<(Refund, Order)> {
        let now = Timestamp::now();
        let id = RefundId::generate();
        let mut tx = self.write().await?;
        let order = apply_change(
            &mut tx,
            &payment.order_id,
            OrderChange {
                event: OrderEvent::Refund(amount),
                actor: Some(actor.clone()),
                reason: reason.to_owned(),
                shipment: None,
                restock,
            },
            now,
        )
        .await?;
        execute!(
            &mut tx,
            sqlx::query(
                "INSERT INTO refunds (id, order_id, payment_id, provider_refund_id, amount, currency,
                     reason, restock, actor_id, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            )
            .bind(id.as_str())
            .bind(payment.order_id.as_str())
            .bind(payment.id.as_str())
            .bind(provider_refund_id)
            .bind(amount.amount)
            .bind(amount.currency.code())
            .bind(reason)
            .bind(i64::from(restock))
            .bind(actor.as_str())
            .bind(now.as_millis())
        )?;
        tx.commit().await?;
        Ok((
            Refund {
                id,
                order_id: payment.order_id.clone(),
                payment_id: payment.id.clone(),
                amount,
                reason: reason.to_owned(),
                restock,
                created_at: now,
            },
            order,
        ))
    }
}
