//! Payments and refunds, written before the provider is asked and completed
//! from its answer, each completion in the same transaction as the order
//! change it causes. The rules that keep money safe:
//! - a payment attempt exists (`attempting`) before its charge does, and the
//!   provider is asked with the attempt's id as its idempotency key, so a
//!   retry can never charge twice;
//! - an order has at most one attempt open (`attempting` or `processing`);
//! - a charge that succeeds for an order that can no longer take it is
//!   recorded and a reversal is due (a full refund by the selling clock);
//! - a refund claims its amount (`pending`) before the provider is asked, so
//!   claims never add up to more than was paid.

use domain::Timestamp;
use domain::ids::{OrderEventId, OrderId, PaymentId, RefundId, UserId};
use domain::money::Money;
use domain::order::{
    Order, OrderError, OrderEvent, OrderState, OrderStatus, Payment, PaymentStatus, Refund,
    RefundStatus,
};

use crate::Store;
use crate::db::{Execute, execute, fetch_all, fetch_one, fetch_optional};
use crate::error::{Result, StoreError};
use crate::orders::{OrderChange, apply_change, load_order};
use crate::row::{Get, corrupt};

const PAYMENT_COLUMNS: &str = "id, order_id, provider, intent_id, amount, currency, status, \
     failure_code, created_at, updated_at";

const REFUND_COLUMNS: &str = "id, order_id, payment_id, provider_refund_id, amount, currency, \
     reason, restock, status, actor_id, created_at";

/// Why an attempt that never heard from its provider was closed.
pub const ABANDONED: &str = "abandoned";

fn payment<R: Get>(r: &R) -> Result<Payment> {
    let status = r.text("status")?;
    Ok(Payment {
        id: PaymentId::from_string(r.text("id")?),
        order_id: OrderId::from_string(r.text("order_id")?),
        provider: r.text("provider")?,
        provider_payment_id: r.opt_text("intent_id")?,
        amount: Money::parse(r.int("amount")?, &r.text("currency")?)
            .map_err(|e| corrupt("payment amount", e))?,
        status: PaymentStatus::parse(&status).ok_or_else(|| corrupt("payment status", status))?,
        failure_code: r.opt_text("failure_code")?,
        created_at: Timestamp::from_millis(r.int("created_at")?),
        updated_at: Timestamp::from_millis(r.int("updated_at")?),
    })
}

/// A refund with the provider's id for it, once there is one.
#[derive(Debug, Clone)]
pub struct RefundRecord {
    pub refund: Refund,
    pub provider_refund_id: Option<String>,
    /// The seller who asked for it.
    pub actor: UserId,
}

fn refund<R: Get>(r: &R) -> Result<RefundRecord> {
    let status = r.text("status")?;
    Ok(RefundRecord {
        refund: Refund {
            id: RefundId::from_string(r.text("id")?),
            order_id: OrderId::from_string(r.text("order_id")?),
            payment_id: PaymentId::from_string(r.text("payment_id")?),
            amount: Money::parse(r.int("amount")?, &r.text("currency")?)
                .map_err(|e| corrupt("refund amount", e))?,
            reason: r.text("reason")?,
            restock: r.int("restock")? != 0,
            status: RefundStatus::parse(&status).ok_or_else(|| corrupt("refund status", status))?,
            created_at: Timestamp::from_millis(r.int("created_at")?),
        },
        provider_refund_id: r.opt_text("provider_refund_id")?,
        actor: UserId::from_string(r.text("actor_id")?),
    })
}

/// A payment about to be asked of the provider.
pub struct NewPayment<'a> {
    pub order: &'a OrderId,
    pub provider: &'a str,
    pub amount: Money,
    /// The buyer who pays, and the Idempotency-Key they sent.
    pub payer: &'a UserId,
    pub request_key: &'a str,
}

/// What [`Store::begin_payment`] found.
#[derive(Debug)]
pub enum Begun {
    /// A new attempt, to be charged.
    New(Payment),
    /// The attempt an earlier request with the same key made.
    Earlier(Payment),
    /// Another attempt of the order is open: its answer comes first.
    Busy,
}

/// What the provider said of a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeAnswer<'a> {
    pub intent_id: &'a str,
    pub status: PaymentStatus,
    pub failure_code: Option<&'a str>,
    /// The card's last four digits, for the order's history.
    pub card_last4: &'a str,
}

/// An attempt brought up to date with its provider's answer.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub payment: Payment,
    pub order: Order,
    /// The charge succeeded but the order could no longer take it: the money
    /// goes back (see [`Store::claim_reversals`]). True from the moment it
    /// was recorded, for every later answer too.
    pub reversed: bool,
    /// False when the attempt already had this answer (a webhook came first,
    /// or twice).
    pub changed: bool,
}

/// A refund about to be asked of the provider.
pub struct NewRefund<'a> {
    pub payment: &'a Payment,
    pub amount: Money,
    pub reason: &'a str,
    pub restock: bool,
    /// The seller who refunds, and the Idempotency-Key they sent.
    pub actor: &'a UserId,
    pub request_key: &'a str,
}

/// Writes a reversal for `payment` and says so in its order's history.
async fn reverse(
    e: &mut impl Execute,
    payment: &Payment,
    order: &Order,
    now: Timestamp,
) -> Result<()> {
    let inserted = execute!(
        e,
        sqlx::query(
            "INSERT INTO payment_reversals (payment_id, order_id, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (payment_id) DO NOTHING"
        )
        .bind(payment.id.as_str())
        .bind(payment.order_id.as_str())
        .bind(now.as_millis())
    )?;
    if inserted == 0 {
        return Ok(());
    }
    let reason = format!(
        "a payment of {} came after the order was {}: it is refunded",
        payment.amount,
        order.status.as_str()
    );
    execute!(
        e,
        sqlx::query(
            "INSERT INTO order_events (id, order_id, status, actor_id, reason, amount, created_at)
             VALUES ($1, $2, $3, NULL, $4, $5, $6)"
        )
        .bind(OrderEventId::generate().as_str())
        .bind(payment.order_id.as_str())
        .bind(order.status.as_str())
        .bind(reason)
        .bind(payment.amount.amount)
        .bind(now.as_millis())
    )?;
    Ok(())
}

/// Takes the row lock of `id` in `table` for the rest of the transaction (a
/// no-op write: PostgreSQL locks the row, SQLite has one writer anyway).
async fn lock_row(e: &mut impl Execute, table: &'static str, id: &str) -> Result<()> {
    execute!(
        e,
        sqlx::query(&format!(
            "UPDATE {table} SET updated_at = updated_at WHERE id = $1"
        ))
        .bind(id)
    )?;
    Ok(())
}

async fn load_payment(e: &mut impl Execute, id: &PaymentId) -> Result<Option<Payment>> {
    fetch_optional!(
        e,
        sqlx::query(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1"
        ))
        .bind(id.as_str()),
        payment
    )
}

async fn load_refund(e: &mut impl Execute, id: &RefundId) -> Result<Option<RefundRecord>> {
    fetch_optional!(
        e,
        sqlx::query(&format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1"
        ))
        .bind(id.as_str()),
        refund
    )
}

impl Store {
    /// Writes a payment attempt before its provider is asked, or finds the
    /// one an earlier request with the same key wrote.
    pub async fn begin_payment(&self, new: NewPayment<'_>) -> Result<Begun> {
        let now = Timestamp::now();
        let mut tx = self.write().await?;
        let earlier = fetch_optional!(
            &mut tx,
            sqlx::query(&format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE payer_id = $1 AND request_key = $2"
            ))
            .bind(new.payer.as_str())
            .bind(new.request_key),
            payment
        )?;
        if let Some(earlier) = earlier {
            return Ok(Begun::Earlier(earlier));
        }
        let open = fetch_optional!(
            &mut tx,
            sqlx::query(
                "SELECT id FROM payments WHERE order_id = $1
                 AND status IN ('attempting', 'processing')"
            )
            .bind(new.order.as_str()),
            |r: &_| Get::text(r, "id")
        )?;
        if open.is_some() {
            return Ok(Begun::Busy);
        }
        let inserted = fetch_one!(
            &mut tx,
            sqlx::query(&format!(
                "INSERT INTO payments (id, order_id, provider, intent_id, amount, currency, status,
                     failure_code, created_at, updated_at, payer_id, request_key)
                 VALUES ($1, $2, $3, NULL, $4, $5, 'attempting', NULL, $6, $6, $7, $8)
                 RETURNING {PAYMENT_COLUMNS}"
            ))
            .bind(PaymentId::generate().as_str())
            .bind(new.order.as_str())
            .bind(new.provider)
            .bind(new.amount.amount)
            .bind(new.amount.currency.code())
            .bind(now.as_millis())
            .bind(new.payer.as_str())
            .bind(new.request_key),
            payment
        );
        match inserted {
            Ok(payment) => {
                tx.commit().await?;
                Ok(Begun::New(payment))
            }
            // A parallel attempt of the same order won the race.
            Err(StoreError::Database(sqlx::Error::Database(db))) if db.is_unique_violation() => {
                Ok(Begun::Busy)
            }
            Err(e) => Err(e),
        }
    }

    /// Brings an attempt up to date with the provider's answer: a success pays
    /// its order in the same transaction, or, when the order can no longer
    /// take it, is kept and a reversal is due. An answer that comes again (a
    /// webhook after the charge's own answer, or twice) changes nothing. A
    /// `webhook` event id is remembered in the same transaction, so a replay
    /// of it is known; `NotFound` when the attempt does not exist (yet).
    pub async fn record_charge(
        &self,
        id: &PaymentId,
        answer: ChargeAnswer<'_>,
        webhook: Option<(&str, &str)>,
    ) -> Result<Recorded> {
        let now = Timestamp::now();
        let mut tx = self.write().await?;
        // Takes the attempt's row lock first: two answers of one charge (its
        // own and a webhook, say) are recorded one after the other, the
        // second seeing what the first did.
        lock_row(&mut tx, "payments", id.as_str()).await?;
        let current = load_payment(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if let Some((provider, event)) = webhook {
            execute!(
                &mut tx,
                sqlx::query(
                    "INSERT INTO webhook_events (provider, event_id, received_at) VALUES ($1, $2, $3)
                     ON CONFLICT (provider, event_id) DO NOTHING"
                )
                .bind(provider)
                .bind(event)
                .bind(now.as_millis())
            )?;
        }
        // Open attempts take any answer; one closed as abandoned takes the
        // success the provider turns out to have made after all.
        let open = matches!(
            current.status,
            PaymentStatus::Attempting | PaymentStatus::Processing
        );
        let found_later = current.status == PaymentStatus::Failed
            && current.failure_code.as_deref() == Some(ABANDONED)
            && answer.status == PaymentStatus::Succeeded;
        let moves = (open || found_later)
            && answer.status != current.status
            && answer.status != PaymentStatus::Attempting;
        let order = load_order(&mut tx, &current.order_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if !moves {
            let reversed = fetch_optional!(
                &mut tx,
                sqlx::query("SELECT payment_id FROM payment_reversals WHERE payment_id = $1")
                    .bind(id.as_str()),
                |r: &_| Get::text(r, "payment_id")
            )?
            .is_some();
            tx.commit().await?;
            return Ok(Recorded {
                payment: current,
                order,
                reversed,
                changed: false,
            });
        }
        let updated = fetch_one!(
            &mut tx,
            sqlx::query(&format!(
                "UPDATE payments SET intent_id = $2, status = $3, failure_code = $4, updated_at = $5
                 WHERE id = $1 RETURNING {PAYMENT_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(answer.intent_id)
            .bind(answer.status.as_str())
            .bind(answer.failure_code)
            .bind(now.as_millis()),
            payment
        )?;
        let mut reversed = false;
        let order = if updated.status != PaymentStatus::Succeeded {
            order
        } else if order.status == OrderStatus::Reserved {
            apply_change(
                &mut tx,
                &updated.order_id,
                OrderChange {
                    event: OrderEvent::Pay(updated.amount),
                    actor: None,
                    reason: format!("paid by card ending {}", answer.card_last4),
                    shipment: None,
                    restock: false,
                },
                now,
            )
            .await?
        } else {
            reverse(&mut tx, &updated, &order, now).await?;
            reversed = true;
            load_order(&mut tx, &updated.order_id)
                .await?
                .ok_or(StoreError::NotFound)?
        };
        tx.commit().await?;
        Ok(Recorded {
            payment: updated,
            order,
            reversed,
            changed: true,
        })
    }

    /// Whether a provider's event was applied before.
    pub async fn webhook_seen(&self, provider: &str, event: &str) -> Result<bool> {
        let mut c = self.read().await?;
        let found = fetch_optional!(
            &mut c,
            sqlx::query(
                "SELECT event_id FROM webhook_events WHERE provider = $1 AND event_id = $2"
            )
            .bind(provider)
            .bind(event),
            |r: &_| Get::text(r, "event_id")
        )?;
        Ok(found.is_some())
    }

    /// Closes an attempt the provider has no charge for, long after it was
    /// written (its request died before the provider was reached): the order
    /// can be paid again. A charge that turns up for it later is reversed.
    pub async fn abandon_payment(&self, id: &PaymentId) -> Result<bool> {
        let mut tx = self.write().await?;
        let closed = execute!(
            &mut tx,
            sqlx::query(
                "UPDATE payments SET status = 'failed', failure_code = $2, updated_at = $3
                 WHERE id = $1 AND status = 'attempting'"
            )
            .bind(id.as_str())
            .bind(ABANDONED)
            .bind(Timestamp::now().as_millis())
        )?;
        tx.commit().await?;
        Ok(closed == 1)
    }

    pub async fn payment(&self, id: &PaymentId) -> Result<Option<Payment>> {
        let mut c = self.read().await?;
        load_payment(&mut c, id).await
    }

    /// The attempt a buyer's request with `key` made.
    pub async fn payment_by_request(&self, payer: &UserId, key: &str) -> Result<Option<Payment>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE payer_id = $1 AND request_key = $2"
            ))
            .bind(payer.as_str())
            .bind(key),
            payment
        )
    }

    /// Attempts still waiting for their provider's answer, written before
    /// `before`, oldest first.
    pub async fn unsettled_payments(&self, before: Timestamp, limit: i64) -> Result<Vec<Payment>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments
                 WHERE status IN ('attempting', 'processing') AND created_at < $1
                 ORDER BY created_at LIMIT $2"
            ))
            .bind(before.as_millis())
            .bind(limit),
            payment
        )
    }

    /// Payments written in `[from, to)`, oldest first.
    pub async fn payments_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<Payment>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE created_at >= $1 AND created_at < $2
                 ORDER BY created_at"
            ))
            .bind(from.as_millis())
            .bind(to.as_millis()),
            payment
        )
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
            payments.extend(load_payment(&mut tx, &PaymentId::from_string(id)).await?);
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

    /// The provider's refund id of a payment's reversal: `Some(None)` while
    /// it is due, `None` when the payment is not reversed.
    pub async fn reversal_of(&self, payment: &PaymentId) -> Result<Option<Option<String>>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query("SELECT provider_refund_id FROM payment_reversals WHERE payment_id = $1")
                .bind(payment.as_str()),
            |r: &_| Get::opt_text(r, "provider_refund_id")
        )
    }

    /// Records that the provider refunded a reversed payment.
    pub async fn reversal_refunded(&self, payment: &PaymentId, refund_id: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let marked = execute!(
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
        Ok(marked == 1)
    }

    /// The succeeded payment that paid an order, for refunds.
    pub async fn succeeded_payment(&self, order: &OrderId) -> Result<Option<Payment>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 AND status = 'succeeded'
                 AND id NOT IN (SELECT payment_id FROM payment_reversals)"
            ))
            .bind(order.as_str()),
            payment
        )
    }

    /// Claims a refund's amount before the provider is asked for it: claims
    /// (pending and succeeded) never add up to more than the order's payment.
    /// A request with the same key finds the claim its first try made.
    pub async fn claim_refund(&self, new: NewRefund<'_>) -> Result<RefundRecord> {
        let now = Timestamp::now();
        let mut tx = self.write().await?;
        let earlier = fetch_optional!(
            &mut tx,
            sqlx::query(&format!(
                "SELECT {REFUND_COLUMNS} FROM refunds WHERE actor_id = $1 AND request_key = $2"
            ))
            .bind(new.actor.as_str())
            .bind(new.request_key),
            refund
        )?;
        if let Some(earlier) = earlier {
            return Ok(earlier);
        }
        let order_id = &new.payment.order_id;
        // Claims of one order are made one at a time.
        lock_row(&mut tx, "orders", order_id.as_str()).await?;
        let order = load_order(&mut tx, order_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let pending = fetch_one!(
            &mut tx,
            sqlx::query(
                "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS n FROM refunds
                 WHERE order_id = $1 AND status = 'pending'"
            )
            .bind(order_id.as_str()),
            |r: &_| Get::int(r, "n")
        )?;
        let state = OrderState::of(&order);
        let after = state
            .apply(OrderEvent::Refund(new.amount))
            .map_err(StoreError::Order)?;
        let refundable = state.refundable().amount - pending;
        if new.amount.amount > refundable {
            return Err(StoreError::Order(OrderError::RefundTooLarge {
                refundable: Money {
                    amount: refundable,
                    currency: new.amount.currency,
                },
            }));
        }
        if new.restock && (pending > 0 || after.status != OrderStatus::Refunded) {
            return Err(StoreError::Order(OrderError::Transition {
                from: state.status,
                event: OrderEvent::Refund(new.amount),
            }));
        }
        let claimed = fetch_one!(
            &mut tx,
            sqlx::query(&format!(
                "INSERT INTO refunds (id, order_id, payment_id, provider_refund_id, amount, currency,
                     reason, restock, actor_id, created_at, status, request_key, updated_at)
                 VALUES ($1, $2, $3, NULL, $4, $5, $6, $7, $8, $9, 'pending', $10, $9)
                 RETURNING {REFUND_COLUMNS}"
            ))
            .bind(RefundId::generate().as_str())
            .bind(order_id.as_str())
            .bind(new.payment.id.as_str())
            .bind(new.amount.amount)
            .bind(new.amount.currency.code())
            .bind(new.reason)
            .bind(i64::from(new.restock))
            .bind(new.actor.as_str())
            .bind(now.as_millis())
            .bind(new.request_key),
            refund
        )?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Records the provider's refund of a claim and applies it to the order
    /// (restocking when asked), in one transaction. Done again, it changes
    /// nothing.
    pub async fn complete_refund(
        &self,
        id: &RefundId,
        provider_refund_id: &str,
    ) -> Result<(RefundRecord, Order)> {
        let now = Timestamp::now();
        let mut tx = self.write().await?;
        lock_row(&mut tx, "refunds", id.as_str()).await?;
        let claim = load_refund(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if claim.refund.status != RefundStatus::Pending {
            let order = load_order(&mut tx, &claim.refund.order_id)
                .await?
                .ok_or(StoreError::NotFound)?;
            return Ok((claim, order));
        }
        let done = fetch_one!(
            &mut tx,
            sqlx::query(&format!(
                "UPDATE refunds SET status = 'succeeded', provider_refund_id = $2, updated_at = $3
                 WHERE id = $1 RETURNING {REFUND_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(provider_refund_id)
            .bind(now.as_millis()),
            refund
        )?;
        let order = apply_change(
            &mut tx,
            &done.refund.order_id,
            OrderChange {
                event: OrderEvent::Refund(done.refund.amount),
                actor: Some(done.actor.clone()),
                reason: done.refund.reason.clone(),
                shipment: None,
                restock: done.refund.restock,
            },
            now,
        )
        .await?;
        tx.commit().await?;
        Ok((done, order))
    }

    /// Releases a claim the provider refused: nothing was refunded.
    pub async fn fail_refund(&self, id: &RefundId) -> Result<()> {
        let mut tx = self.write().await?;
        execute!(
            &mut tx,
            sqlx::query(
                "UPDATE refunds SET status = 'failed', updated_at = $2
                 WHERE id = $1 AND status = 'pending'"
            )
            .bind(id.as_str())
            .bind(Timestamp::now().as_millis())
        )?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn refund(&self, id: &RefundId) -> Result<Option<RefundRecord>> {
        let mut c = self.read().await?;
        load_refund(&mut c, id).await
    }

    /// The claim a seller's request with `key` made.
    pub async fn refund_by_request(
        &self,
        actor: &UserId,
        key: &str,
    ) -> Result<Option<RefundRecord>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {REFUND_COLUMNS} FROM refunds WHERE actor_id = $1 AND request_key = $2"
            ))
            .bind(actor.as_str())
            .bind(key),
            refund
        )
    }

    /// Claims not answered since `before`, oldest first, with their payments:
    /// to ask the provider again with the same key.
    pub async fn pending_refunds(
        &self,
        before: Timestamp,
        limit: i64,
    ) -> Result<Vec<(RefundRecord, Payment)>> {
        let mut c = self.read().await?;
        let claims = fetch_all!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {REFUND_COLUMNS} FROM refunds WHERE status = 'pending' AND updated_at < $1
                 ORDER BY updated_at LIMIT $2"
            ))
            .bind(before.as_millis())
            .bind(limit),
            refund
        )?;
        let mut found = Vec::with_capacity(claims.len());
        for claim in claims {
            if let Some(payment) = load_payment(&mut c, &claim.refund.payment_id).await? {
                found.push((claim, payment));
            }
        }
        Ok(found)
    }

    /// Refunds recorded as made in `[from, to)`, with the provider's ids.
    pub async fn refunds_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RefundRecord>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {REFUND_COLUMNS} FROM refunds WHERE created_at >= $1 AND created_at < $2
                 ORDER BY created_at"
            ))
            .bind(from.as_millis())
            .bind(to.as_millis()),
            refund
        )
    }
}
