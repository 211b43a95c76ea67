//! What keeps money right after a fault: a charge's answer recorded however it
//! arrives (the call's own answer, a webhook, a lookup), attempts whose answer
//! never came settled from the provider's record, refund claims asked again
//! with their keys, reversals refunded, and reconciliation of the store with
//! the provider's ledger. Every step is a conditional change in the store, so
//! several nodes may run it at once and a step done twice changes nothing.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use domain::Timestamp;
use domain::order::{Payment, PaymentStatus, RefundStatus};
use store::{ChargeAnswer, Recorded};
use tokio_util::sync::CancellationToken;

use store::Store;

use super::{Charge, ChargeStatus, Provider, ProviderError, RefundFor};
use crate::AppState;

/// Records what the provider said of `payment`'s charge. A `webhook` is the
/// provider's name and the event's id, remembered with the change.
pub async fn settle(
    store: &Store,
    payment: &domain::ids::PaymentId,
    charge: &Charge,
    webhook: Option<(&str, &str)>,
) -> Result<Recorded, store::StoreError> {
    let (status, failure) = match &charge.status {
        ChargeStatus::Succeeded => (PaymentStatus::Succeeded, None),
        ChargeStatus::Processing => (PaymentStatus::Processing, None),
        ChargeStatus::Failed(code) => (PaymentStatus::Failed, Some(code.as_str())),
    };
    let recorded = store
        .record_charge(
            payment,
            ChargeAnswer {
                intent_id: &charge.intent_id,
                status,
                failure_code: failure,
                card_last4: &charge.card_last4,
            },
            webhook,
        )
        .await?;
    if recorded.reversed && recorded.changed {
        metrics::counter!("hawker_payments_reversed_total").increment(1);
        tracing::warn!(payment = %payment, order = %recorded.order.id,
            "a charge came for an order that could no longer take it; it is refunded");
    }
    Ok(recorded)
}

/// How the upkeep runs.
#[derive(Debug, Clone)]
pub struct UpkeepSettings {
    /// An attempt or refund with no answer after this long is settled from
    /// the provider's record.
    pub settle_after: Duration,
    /// How often the store is reconciled with the provider, and how far back.
    pub reconcile_every: Duration,
    pub reconcile_window: Duration,
}

/// Every second until `shutdown`: settles stale attempts, asks again for
/// pending refunds, refunds reversals; reconciles every `reconcile_every`.
pub async fn run(state: AppState, settings: UpkeepSettings, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_reconcile = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let now = Timestamp::now();
        let stale = now.plus_millis(-(settings.settle_after.as_millis() as i64));
        let (store, provider) = (state.store(), state.payment_provider());
        settle_stale(store, provider, stale).await;
        retry_refunds(store, provider, stale).await;
        refund_reversals(store, provider, now).await;
        if last_reconcile.elapsed() >= settings.reconcile_every {
            last_reconcile = tokio::time::Instant::now();
            let from = stale.plus_millis(-(settings.reconcile_window.as_millis() as i64));
            match reconcile(store, provider, from, stale).await {
                Ok(report) if report.fixed() + report.mismatches.len() > 0 => {
                    tracing::warn!(?report, "reconciliation fixed or found something");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reconciliation did not run"),
            }
        }
    }
}

/// Settles attempts written before `before` that never heard from the
/// provider: from its record of the charge, or, when it has none, by closing
/// the attempt as abandoned (a charge that turns up later is reversed).
pub async fn settle_stale(store: &Store, provider: &Provider, before: Timestamp) {
    let stale = match store.unsettled_payments(before, 50).await {
        Ok(stale) => stale,
        Err(e) => {
            tracing::warn!(error = %e, "payments: cannot read unsettled attempts");
            return;
        }
    };
    for payment in stale {
        match provider.charge_for(&payment.id).await {
            Ok(Some(charge)) => {
                let moved = charge.status != ChargeStatus::Processing
                    || payment.status == PaymentStatus::Attempting;
                if moved && let Err(e) = settle(store, &payment.id, &charge, None).await {
                    tracing::warn!(payment = %payment.id, error = %e, "payments: cannot settle");
                }
            }
            Ok(None) if payment.status == PaymentStatus::Attempting => {
                match store.abandon_payment(&payment.id).await {
                    Ok(true) => {
                        metrics::counter!("hawker_payments_abandoned_total").increment(1);
                        tracing::info!(payment = %payment.id, "an attempt the provider never saw was closed");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(payment = %payment.id, error = %e, "payments: cannot close")
                    }
                }
            }
            Ok(None) => tracing::warn!(payment = %payment.id,
                "a processing payment the provider does not know"),
            Err(e) => tracing::debug!(error = %e, "payments: provider unreachable for upkeep"),
        }
    }
}

/// Asks again, with the same key, for refunds claimed before `before` and
/// not answered: the provider makes each once however often it is asked.
pub async fn retry_refunds(store: &Store, provider: &Provider, before: Timestamp) {
    let pending = match store.pending_refunds(before, 50).await {
        Ok(pending) => pending,
        Err(e) => {
            tracing::warn!(error = %e, "payments: cannot read pending refunds");
            return;
        }
    };
    for (claim, payment) in pending {
        let Some(intent) = &payment.provider_payment_id else {
            continue;
        };
        let id = claim.refund.id.clone();
        match provider
            .refund(intent, claim.refund.amount, &RefundFor::Refund(id.clone()))
            .await
        {
            Ok(made) => match store.complete_refund(&id, &made.id).await {
                Ok(_) => tracing::info!(refund = %id, "a pending refund was completed"),
                Err(e) => {
                    tracing::warn!(refund = %id, error = %e, "payments: cannot record a refund")
                }
            },
            Err(ProviderError::Refused { code, .. }) => {
                tracing::warn!(refund = %id, %code, "the provider refused a refund; its claim is released");
                if let Err(e) = store.fail_refund(&id).await {
                    tracing::warn!(refund = %id, error = %e, "payments: cannot release a claim");
                }
            }
            Err(ProviderError::Unanswered(e)) => {
                tracing::debug!(refund = %id, error = %e, "a pending refund is still unanswered");
            }
        }
    }
}

/// Asks the provider to refund, in full, each payment that succeeded after its
/// order could no longer take it, keyed by the payment: one the provider made
/// but this node did not record (a crash in between) is answered, not made
/// again. A reversal that fails is tried again once its claim runs out.
pub async fn refund_reversals(store: &Store, provider: &Provider, now: Timestamp) {
    const LEASE: Duration = Duration::from_secs(30);
    let due = match store.claim_reversals(now, LEASE, 20).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "payments: cannot read reversals due");
            return;
        }
    };
    for payment in due {
        let Some(intent) = &payment.provider_payment_id else {
            continue;
        };
        let made_for = RefundFor::Reversal(payment.id.clone());
        match provider.refund(intent, payment.amount, &made_for).await {
            Ok(refund) => match store.reversal_refunded(&payment.id, &refund.id).await {
                Ok(_) => tracing::info!(payment = %payment.id, order = %payment.order_id,
                    "a payment no order took was refunded"),
                Err(e) => tracing::warn!(payment = %payment.id, error = %e,
                    "a reversal was refunded but not recorded; reconciliation records it"),
            },
            Err(e) => tracing::warn!(payment = %payment.id, error = %e,
                "a reversal's refund failed; it is tried again"),
        }
    }
}

/// What a reconciliation found and fixed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    /// Charges and refunds the provider made in the window.
    pub charges: usize,
    pub refunds: usize,
    /// Attempts brought up to date from the provider's record.
    pub settled: usize,
    /// Charges no order could take, now to be refunded.
    pub reversed: usize,
    /// Refunds the provider made that the store had not recorded.
    pub refunds_recorded: usize,
    /// What could not be fixed safely, one line each.
    pub mismatches: Vec<String>,
}

impl Report {
    pub fn fixed(&self) -> usize {
        self.settled + self.reversed + self.refunds_recorded
    }

    fn mismatch(&mut self, kind: &'static str, what: String) {
        metrics::counter!("hawker_reconcile_mismatches_total", "kind" => kind).increment(1);
        tracing::error!(kind, "reconciliation: {what}");
        self.mismatches.push(what);
    }

    fn fixed_one(&mut self, kind: &'static str) {
        metrics::counter!("hawker_reconcile_fixed_total", "kind" => kind).increment(1);
        match kind {
            "settled" => self.settled += 1,
            "reversed" => self.reversed += 1,
            _ => self.refunds_recorded += 1,
        }
    }
}

/// The provider's lists are read this much wider than the window, so that a
/// charge made a moment after its attempt was written is not taken for
/// missing at the window's edge.
const SLACK_MS: i64 = 10 * 60 * 1000;

/// Compares the provider's charges and refunds made in `[from, to)` with the
/// store: records what the store missed (an attempt's answer, a charge of an
/// attempt closed as abandoned, a refund made but not recorded), reverses a
/// charge no order took, and reports what it cannot fix.
pub async fn reconcile(
    store: &Store,
    provider: &Provider,
    from: Timestamp,
    to: Timestamp,
) -> Result<Report, ProviderError> {
    let unreadable = |e: store::StoreError| ProviderError::Unanswered(format!("the store: {e}"));
    let charges = provider
        .charges(from.plus_millis(-SLACK_MS), to.plus_millis(SLACK_MS))
        .await?;
    let refunds = provider
        .refunds(from.plus_millis(-SLACK_MS), to.plus_millis(SLACK_MS))
        .await?;
    let in_window = |t: Timestamp| t >= from && t < to;
    let mut report = Report::default();
    for charge in charges.iter().filter(|c| in_window(c.created)) {
        report.charges += 1;
        let Some(payment_id) = &charge.payment else {
            report.mismatch(
                "foreign_charge",
                format!("charge {} names no payment", charge.intent_id),
            );
            continue;
        };
        let Some(payment) = store.payment(payment_id).await.map_err(unreadable)? else {
            report.mismatch(
                "unknown_payment",
                format!(
                    "charge {} is for payment {payment_id}, which the store lacks",
                    charge.intent_id
                ),
            );
            continue;
        };
        check_charge(store, &mut report, &payment, charge)
            .await
            .map_err(unreadable)?;
    }
    let charged: HashMap<&str, &Charge> =
        charges.iter().map(|c| (c.intent_id.as_str(), c)).collect();
    for payment in store.payments_between(from, to).await.map_err(unreadable)? {
        if payment.status != PaymentStatus::Succeeded {
            continue;
        }
        let known = payment
            .provider_payment_id
            .as_deref()
            .is_some_and(|intent| charged.contains_key(intent));
        if !known && provider.charge_for(&payment.id).await?.is_none() {
            report.mismatch(
                "charge_missing",
                format!(
                    "payment {} is recorded as succeeded; the provider has no charge",
                    payment.id
                ),
            );
        }
    }
    for refund in refunds.iter().filter(|r| in_window(r.created)) {
        report.refunds += 1;
        check_refund(store, &mut report, refund)
            .await
            .map_err(unreadable)?;
    }
    let refunded: HashSet<&str> = refunds.iter().map(|r| r.id.as_str()).collect();
    for claim in store.refunds_between(from, to).await.map_err(unreadable)? {
        if claim.refund.status == RefundStatus::Succeeded
            && !claim
                .provider_refund_id
                .as_deref()
                .is_some_and(|id| refunded.contains(id))
        {
            report.mismatch(
                "refund_missing",
                format!(
                    "refund {} is recorded as made; the provider has no such refund",
                    claim.refund.id
                ),
            );
        }
    }
    Ok(report)
}

async fn check_charge(
    store: &Store,
    report: &mut Report,
    payment: &Payment,
    charge: &Charge,
) -> Result<(), store::StoreError> {
    let same_intent = payment.provider_payment_id.as_deref() == Some(charge.intent_id.as_str());
    if payment.provider_payment_id.is_some() && !same_intent {
        report.mismatch(
            "two_charges",
            format!(
                "payment {} is charge {:?}, the provider also made {}",
                payment.id, payment.provider_payment_id, charge.intent_id
            ),
        );
        return Ok(());
    }
    if payment.amount != charge.amount {
        report.mismatch(
            "amount",
            format!(
                "payment {} is {}; its charge {} is {}",
                payment.id, payment.amount, charge.intent_id, charge.amount
            ),
        );
        return Ok(());
    }
    let abandoned = payment.status == PaymentStatus::Failed
        && payment.failure_code.as_deref() == Some(store::ABANDONED);
    let open = matches!(
        payment.status,
        PaymentStatus::Attempting | PaymentStatus::Processing
    );
    let settles = match (&charge.status, payment.status) {
        (ChargeStatus::Processing, PaymentStatus::Attempting) => true,
        (ChargeStatus::Processing, _) => false,
        (ChargeStatus::Succeeded, PaymentStatus::Succeeded) => false,
        (ChargeStatus::Failed(_), PaymentStatus::Failed) => false,
        (ChargeStatus::Succeeded, _) if open || abandoned => true,
        (ChargeStatus::Failed(_), _) if open => true,
        (status, stored) => {
            report.mismatch(
                "status",
                format!(
                    "payment {} is {}; the provider says {status:?}",
                    payment.id,
                    stored.as_str()
                ),
            );
            return Ok(());
        }
    };
    if settles {
        let recorded = settle(store, &payment.id, charge, None).await?;
        if recorded.changed {
            report.fixed_one(if recorded.reversed {
                "reversed"
            } else {
                "settled"
            });
        }
    }
    Ok(())
}

async fn check_refund(
    store: &Store,
    report: &mut Report,
    refund: &super::MadeRefund,
) -> Result<(), store::StoreError> {
    match &refund.made_for {
        RefundFor::Refund(id) => match store.refund(id).await? {
            None => report.mismatch(
                "unknown_refund",
                format!(
                    "the provider's refund {} is for refund {id}, which the store lacks",
                    refund.id
                ),
            ),
            Some(claim) => match claim.refund.status {
                RefundStatus::Pending => {
                    store.complete_refund(id, &refund.id).await?;
                    report.fixed_one("refund_recorded");
                }
                RefundStatus::Succeeded
                    if claim.provider_refund_id.as_deref() == Some(&refund.id) => {}
                status => report.mismatch(
                    "refund_status",
                    format!(
                        "refund {id} is {}; the provider made {}",
                        status.as_str(),
                        refund.id
                    ),
                ),
            },
        },
        RefundFor::Reversal(payment) => match store.reversal_of(payment).await? {
            None => report.mismatch(
                "unknown_reversal",
                format!(
                    "the provider's refund {} reverses payment {payment}, which is not reversed",
                    refund.id
                ),
            ),
            Some(None) => {
                if store.reversal_refunded(payment, &refund.id).await? {
                    report.fixed_one("refund_recorded");
                }
            }
            Some(Some(id)) if id == refund.id => {}
            Some(Some(id)) => report.mismatch(
                "two_reversals",
                format!(
                    "payment {payment} was reversed by {id}; the provider also made {}",
                    refund.id
                ),
            ),
        },
        RefundFor::Unknown => report.mismatch(
            "foreign_refund",
            format!(
                "the provider's refund {} names nothing of Hawker's",
                refund.id
            ),
        ),
    }
    Ok(())
}
