-- Flash sales, orders and their history (SQLite dialect).

CREATE TABLE sales (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL REFERENCES rooms (id),
    shop_id TEXT NOT NULL REFERENCES shops (id),
    variant_id TEXT NOT NULL REFERENCES variants (id),
    price_amount INTEGER NOT NULL CHECK (price_amount >= 0),
    currency TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    -- Units not yet reserved. Only the conditional updates in inventory.rs change it.
    available INTEGER NOT NULL CHECK (available >= 0 AND available <= quantity),
    per_buyer_limit INTEGER NOT NULL CHECK (per_buyer_limit > 0),
    status TEXT NOT NULL CHECK (status IN ('scheduled', 'live', 'sold_out', 'ended', 'cancelled')),
    starts_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL CHECK (ends_at > starts_at),
    -- Units the latest batch claim was granted: SET expressions read the old row,
    -- so one UPDATE can both take stock and say how much it took.
    last_claim INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX sales_room ON sales (room_id, id);
CREATE INDEX sales_status ON sales (status, starts_at);

-- Units each buyer holds in a sale, for the per-buyer limit.
CREATE TABLE sale_buyers (
    sale_id TEXT NOT NULL REFERENCES sales (id),
    buyer_id TEXT NOT NULL REFERENCES users (id),
    quantity INTEGER NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (sale_id, buyer_id)
) STRICT;

CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    buyer_id TEXT NOT NULL REFERENCES users (id),
    shop_id TEXT NOT NULL REFERENCES shops (id),
    room_id TEXT REFERENCES rooms (id),
    sale_id TEXT REFERENCES sales (id),
    status TEXT NOT NULL CHECK (status IN ('reserved', 'paid', 'fulfilled', 'cancelled',
        'expired', 'refunded', 'partially_refunded')),
    currency TEXT NOT NULL,
    total_amount INTEGER NOT NULL CHECK (total_amount >= 0),
    paid_amount INTEGER NOT NULL CHECK (paid_amount >= 0),
    refunded_amount INTEGER NOT NULL CHECK (refunded_amount >= 0 AND refunded_amount <= paid_amount),
    -- When an unpaid reservation lapses; NULL once paid or closed.
    expires_at INTEGER,
    -- The buyer's Idempotency-Key for the purchase, unique per buyer: written in
    -- the purchase's own transaction, so a retry after a crash finds the order.
    idempotency_key TEXT,
    -- Set when the seller ships it.
    carrier TEXT,
    tracking_number TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX orders_buyer ON orders (buyer_id, id);
CREATE INDEX orders_shop ON orders (shop_id, id);
CREATE INDEX orders_sale ON orders (sale_id, id);
CREATE INDEX orders_expiry ON orders (expires_at) WHERE expires_at IS NOT NULL;
CREATE UNIQUE INDEX orders_idempotency ON orders (buyer_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- What was bought, at the price of the moment.
CREATE TABLE order_lines (
    order_id TEXT NOT NULL REFERENCES orders (id),
    position INTEGER NOT NULL,
    variant_id TEXT NOT NULL REFERENCES variants (id),
    product_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    title TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    unit_amount INTEGER NOT NULL CHECK (unit_amount >= 0),
    PRIMARY KEY (order_id, position)
) STRICT;

-- Every change of an order's state: who, when, why.
CREATE TABLE order_events (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (id),
    status TEXT NOT NULL,
    actor_id TEXT REFERENCES users (id),
    reason TEXT NOT NULL,
    amount INTEGER,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX order_events_order ON order_events (order_id, id);

-- Stripe-style idempotency: the first answer to a user's key, replayed for 24 hours.
-- status is NULL while the first request is still running.
CREATE TABLE idempotency_keys (
    user_id TEXT NOT NULL REFERENCES users (id),
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER,
    body TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) STRICT;
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

-- Payments through a provider (Stripe PaymentIntents fit this shape).
CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (id),
    provider TEXT NOT NULL,
    intent_id TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount >= 0),
    currency TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed')),
    failure_code TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (provider, intent_id)
) STRICT;
CREATE INDEX payments_order ON payments (order_id, id);

CREATE TABLE refunds (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (id),
    payment_id TEXT NOT NULL REFERENCES payments (id),
    provider_refund_id TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    reason TEXT NOT NULL,
    restock INTEGER NOT NULL,
    actor_id TEXT NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX refunds_order ON refunds (order_id, id);

-- Provider events already applied: a replayed webhook changes nothing.
CREATE TABLE webhook_events (
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, event_id)
) STRICT;
