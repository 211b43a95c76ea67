-- Accounts, the catalog, the stock ledger and rooms (SQLite dialect).
-- Times are Unix milliseconds; ids are prefixed UUIDv7 strings that sort by creation.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('buyer', 'seller', 'admin')),
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
CREATE INDEX api_tokens_user ON api_tokens (user_id, id);

CREATE TABLE shops (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users (id),
    handle TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX shops_owner ON shops (owner_id, id);

-- Content-addressed: id is the SHA-256 of the bytes, stored once under the data dir.
CREATE TABLE images (
    shop_id TEXT NOT NULL REFERENCES shops (id),
    id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    byte_size INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (shop_id, id)
) STRICT;
CREATE INDEX images_id ON images (id);

CREATE TABLE products (
    id TEXT PRIMARY KEY,
    shop_id TEXT NOT NULL REFERENCES shops (id),
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    -- Image ids in display order, as a JSON array; each was checked against
    -- images(shop_id, id) when written. Kept on the row so that a product and its
    -- variants load in one query.
    images TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX products_shop ON products (shop_id, id);


CREATE TABLE variants (
    id TEXT PRIMARY KEY,
    product_id TEXT NOT NULL REFERENCES products (id),
    shop_id TEXT NOT NULL REFERENCES shops (id),
    position INTEGER NOT NULL,
    sku TEXT NOT NULL,
    options TEXT NOT NULL,
    price_amount INTEGER NOT NULL CHECK (price_amount >= 0),
    currency TEXT NOT NULL,
    stock_on_hand INTEGER NOT NULL CHECK (stock_on_hand >= 0),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (shop_id, sku)
) STRICT;
CREATE INDEX variants_product ON variants (product_id, position);

CREATE TABLE stock_adjustments (
    id TEXT PRIMARY KEY,
    variant_id TEXT NOT NULL REFERENCES variants (id),
    delta INTEGER NOT NULL,
    reason TEXT NOT NULL,
    note TEXT NOT NULL,
    actor_id TEXT NOT NULL REFERENCES users (id),
    on_hand_after INTEGER NOT NULL CHECK (on_hand_after >= 0),
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX stock_adjustments_variant ON stock_adjustments (variant_id, id);

CREATE TABLE rooms (
    id TEXT PRIMARY KEY,
    shop_id TEXT NOT NULL REFERENCES shops (id),
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    cover_image TEXT,
    scheduled_start INTEGER,
    status TEXT NOT NULL CHECK (status IN ('scheduled', 'live', 'ended')),
    stream_key_hash TEXT NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX rooms_shop ON rooms (shop_id, id);
CREATE INDEX rooms_status ON rooms (status, id);
