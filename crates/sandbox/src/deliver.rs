//! Webhook delivery and the settling of asynchronous cards. A webhook is
//! signed and posted to the configured URLs in turn until one answers 2xx,
//! waiting longer after each failure; a delivered event is marked in the
//! ledger, so a restarted sandbox delivers only what is still undelivered.

use std::sync::Arc;
use std::time::Duration;

use crate::ledger::{Record, Settle};
use crate::routes::event_for;
use crate::wire::{Event, IntentStatus, PaymentError};
use crate::{Sandbox, lock, now_ms};

/// Attempts before an event is given up (the last waits a minute).
const ATTEMPTS: u32 = 24;
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Starts what a restart interrupted.
pub fn resume(sandbox: &Arc<Sandbox>) {
    let ledger = lock(&sandbox.ledger);
    let settling: Vec<_> = ledger.settling().map(|(id, s)| (id.clone(), *s)).collect();
    let undelivered: Vec<_> = ledger.undelivered().cloned().collect();
    drop(ledger);
    for (intent, settle) in settling {
        settle_later(sandbox, intent, settle);
    }
    for event in undelivered {
        later(sandbox, event);
    }
}

/// Delivers `event` in the background.
pub fn later(sandbox: &Arc<Sandbox>, event: Event) {
    let sandbox = sandbox.clone();
    tokio::spawn(async move { deliver(&sandbox, &event, 0).await });
}

/// Makes one delivery attempt now, then goes on in the background if it failed.
pub async fn now_then_later(sandbox: &Arc<Sandbox>, event: Event) {
    if attempt(sandbox, &event, 0).await {
        return;
    }
    let sandbox = sandbox.clone();
    tokio::spawn(async move { deliver(&sandbox, &event, 1).await });
}

async fn deliver(sandbox: &Arc<Sandbox>, event: &Event, first: u32) {
    for n in first..ATTEMPTS {
        if attempt(sandbox, event, n).await {
            return;
        }
        let wait = sandbox
            .settings
            .retry_base
            .saturating_mul(1 << n.min(16))
            .min(MAX_WAIT);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = sandbox.shutdown.cancelled() => return,
        }
    }
    tracing::error!(event = %event.id, "payments sandbox: webhook given up after {ATTEMPTS} attempts");
}

/// One POST of `event` to the next URL in turn; true once delivered.
async fn attempt(sandbox: &Arc<Sandbox>, event: &Event, n: u32) -> bool {
    let urls = &sandbox.settings.webhook_urls;
    if urls.is_empty() {
        return false;
    }
    let url = &urls[n as usize % urls.len()];
    let body = serde_json::to_vec(event).unwrap_or_default();
    let signature =
        crate::signature::sign(&sandbox.settings.webhook_secret, now_ms() / 1000, &body);
    let sent = sandbox
        .client
        .post(url)
        .header("content-type", "application/json")
        .header(crate::signature::HEADER, signature)
        .body(body)
        .send()
        .await;
    let delivered = matches!(&sent, Ok(r) if r.status().is_success());
    let mut stats = lock(&sandbox.stats);
    if delivered {
        stats.webhooks_delivered += 1;
        drop(stats);
        let marked = lock(&sandbox.ledger).commit(vec![Record::Delivered {
            event: event.id.clone(),
        }]);
        if let Err(e) = marked {
            tracing::warn!(error = %e, "payments sandbox: a delivery was not marked; it may come again");
        }
    } else {
        stats.webhooks_failed += 1;
        match sent {
            Ok(r) => {
                tracing::debug!(event = %event.id, %url, status = %r.status(), "webhook refused")
            }
            Err(e) => tracing::debug!(event = %event.id, %url, error = %e, "webhook not delivered"),
        }
    }
    delivered
}

/// Settles a processing intent at its time and delivers the webhook.
pub fn settle_later(sandbox: &Arc<Sandbox>, intent: String, settle: Settle) {
    let sandbox = sandbox.clone();
    tokio::spawn(async move {
        let wait = Duration::from_millis((settle.at - now_ms()).max(0) as u64);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = sandbox.shutdown.cancelled() => return,
        }
        if let Some(event) = settle_now(&sandbox, &intent) {
            deliver(&sandbox, &event, 0).await;
        }
    });
}

/// Settles a processing intent as its card says, now; the webhook to deliver,
/// or `None` when it was settled already.
pub fn settle_now(sandbox: &Sandbox, intent: &str) -> Option<Event> {
    let mut ledger = lock(&sandbox.ledger);
    let mut settled = ledger.intent(intent).cloned()?;
    let settle = ledger.settle_of(intent)?;
    if settle.succeeds {
        settled.status = IntentStatus::Succeeded;
    } else {
        settled.status = IntentStatus::RequiresPaymentMethod;
        settled.last_payment_error = Some(PaymentError {
            code: "card_declined".into(),
        });
    }
    let event = event_for(&settled, ledger.stamp(now_ms()));
    let written = ledger.commit(vec![
        Record::Intent {
            intent: settled,
            settle: None,
        },
        Record::Event {
            event: event.clone(),
        },
    ]);
    if let Err(e) = written {
        tracing::error!(error = %e, "payments sandbox: cannot settle an intent");
        return None;
    }
    Some(event)
}
