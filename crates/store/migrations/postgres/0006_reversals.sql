-- A payment that succeeded for an order that could no longer take it (its
-- reservation expired or was cancelled before the provider's answer came): the
-- money goes back. The selling clock claims each due reversal, asks the
-- provider for a refund, and records it here.
CREATE TABLE payment_reversals (
    payment_id TEXT COLLATE "C" PRIMARY KEY REFERENCES payments (id),
    order_id TEXT COLLATE "C" NOT NULL REFERENCES orders (id),
    created_at BIGINT NOT NULL,
    claimed_until BIGINT,
    refunded_at BIGINT,
    provider_refund_id TEXT
);
CREATE INDEX payment_reversals_due ON payment_reversals (created_at) WHERE refunded_at IS NULL;
