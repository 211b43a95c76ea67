-- A payment attempt is written before the provider is called, and a refund
-- claims its amount before it is asked for: the provider's ids come later, so
-- they may be NULL. A payment keeps the buyer's Idempotency-Key, a refund the
-- seller's, so a retried request finds the attempt its first try made.
-- SQLite cannot drop a NOT NULL: both tables are rebuilt, their children's
-- foreign keys checked at commit.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE payments_new (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (id),
    provider TEXT NOT NULL,
    intent_id TEXT,
    amount INTEGER NOT NULL CHECK (amount >= 0),
    currency TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('attempting', 'processing', 'succeeded', 'failed')),
    failure_code TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    payer_id TEXT REFERENCES users (id),
    request_key TEXT,
    UNIQUE (provider, intent_id)
) STRICT;
INSERT INTO payments_new (id, order_id, provider, intent_id, amount, currency, status,
        failure_code, created_at, updated_at)
    SELECT id, order_id, provider, intent_id, amount, currency, status, failure_code,
        created_at, updated_at
    FROM payments;
DROP TABLE payments;
ALTER TABLE payments_new RENAME TO payments;
CREATE INDEX payments_order ON payments (order_id, id);
CREATE UNIQUE INDEX payments_request ON payments (payer_id, request_key);
-- One attempt at a time per order: a second payment waits for the first.
CREATE UNIQUE INDEX payments_open ON payments (order_id)
    WHERE status IN ('attempting', 'processing');
CREATE INDEX payments_unsettled ON payments (created_at)
    WHERE status IN ('attempting', 'processing');

CREATE TABLE refunds_new (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (id),
    payment_id TEXT NOT NULL REFERENCES payments (id),
    provider_refund_id TEXT UNIQUE,
    amount INTEGER NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    reason TEXT NOT NULL,
    restock INTEGER NOT NULL,
    actor_id TEXT NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'succeeded' CHECK (status IN ('pending', 'succeeded', 'failed')),
    request_key TEXT,
    updated_at INTEGER NOT NULL DEFAULT 0
) STRICT;
INSERT INTO refunds_new (id, order_id, payment_id, provider_refund_id, amount, currency,
        reason, restock, actor_id, created_at, updated_at)
    SELECT id, order_id, payment_id, provider_refund_id, amount, currency, reason, restock,
        actor_id, created_at, created_at
    FROM refunds;
DROP TABLE refunds;
ALTER TABLE refunds_new RENAME TO refunds;
CREATE INDEX refunds_order ON refunds (order_id, id);
CREATE UNIQUE INDEX refunds_request ON refunds (actor_id, request_key);
CREATE INDEX refunds_pending ON refunds (updated_at) WHERE status = 'pending';

CREATE UNIQUE INDEX payment_reversals_refund ON payment_reversals (provider_refund_id);
