-- A payment attempt is written before the provider is called, and a refund
-- claims its amount before it is asked for: the provider's ids come later, so
-- they may be NULL. A payment keeps the buyer's Idempotency-Key, a refund the
-- seller's, so a retried request finds the attempt its first try made.
ALTER TABLE payments ALTER COLUMN intent_id DROP NOT NULL;
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('attempting', 'processing', 'succeeded', 'failed'));
ALTER TABLE payments
    ADD COLUMN payer_id TEXT COLLATE "C" REFERENCES users (id),
    ADD COLUMN request_key TEXT;
CREATE UNIQUE INDEX payments_request ON payments (payer_id, request_key);
-- One attempt at a time per order: a second payment waits for the first.
CREATE UNIQUE INDEX payments_open ON payments (order_id)
    WHERE status IN ('attempting', 'processing');
CREATE INDEX payments_unsettled ON payments (created_at)
    WHERE status IN ('attempting', 'processing');

ALTER TABLE refunds ALTER COLUMN provider_refund_id DROP NOT NULL;
ALTER TABLE refunds
    ADD COLUMN status TEXT NOT NULL DEFAULT 'succeeded'
        CHECK (status IN ('pending', 'succeeded', 'failed')),
    ADD COLUMN request_key TEXT,
    ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
UPDATE refunds SET updated_at = created_at;
CREATE UNIQUE INDEX refunds_provider_id ON refunds (provider_refund_id);
CREATE UNIQUE INDEX refunds_request ON refunds (actor_id, request_key);
CREATE INDEX refunds_pending ON refunds (updated_at) WHERE status = 'pending';

CREATE UNIQUE INDEX payment_reversals_refund ON payment_reversals (provider_refund_id);
