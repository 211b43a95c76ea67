-- A payment that succeeded for an order that could no longer take it (its
-- reservation expired or was cancelled before the provider's answer came): the
-- money goes back. The selling clock claims each due reversal, asks the
-- provider for a refund, and records it here.
CREATE TABLE payment_reversals (
    payment_id TEXT PRIMARY KEY REFERENCES payments (id),
    order_id TEXT NOT NULL REFERENCES orders (id),
    created_at INTEGER NOT NULL,
    claimed_until INTEGER,
    refunded_at INTEGER,
    provider_refund_id TEXT
);
CREATE INDEX payment_reversals_due ON payment_reversals (created_at) WHERE refunded_at IS NULL;
