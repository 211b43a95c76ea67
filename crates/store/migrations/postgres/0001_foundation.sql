-- Accounts, the catalog, the stock ledger and rooms (PostgreSQL dialect).
-- Ids compare byte-wise (COLLATE "C") so that cursor pagination agrees with SQLite.
-- Times are Unix milliseconds; ids are prefixed UUIDv7 strings that sort by creation.

CREATE TABLE users (
    id TEXT COLLATE "C" PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('buyer', 'seller', 'admin')),
    created_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    id TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE api_tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, id);

CREATE TABLE shops (
    id TEXT COLLATE "C" PRIMARY KEY,
    owner_id TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    handle TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX shops_owner ON shops (owner_id, id);

-- Content-addressed: id is the SHA-256 of the bytes, stored once under the data dir.
CREATE TABLE images (
    shop_id TEXT COLLATE "C" NOT NULL REFERENCES shops (id),
    id TEXT COLLATE "C" NOT NULL,
    content_type TEXT NOT NULL,
    byte_size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (shop_id, id)
);
CREATE INDEX images_id ON images (id);

CREATE TABLE products (
    id TEXT COLLATE "C" PRIMARY KEY,
    shop_id TEXT COLLATE "C" NOT NULL REFERENCES shops (id),
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    -- Image ids in display order, as a JSON array; each was checked against
    -- images(shop_id, id) when written. Kept on the row so that a product and its
    -- variants load in one query.
    images TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX products_shop ON products (shop_id, id);


CREATE TABLE variants (
    id TEXT COLLATE "C" PRIMARY KEY,
    product_id TEXT COLLATE "C" NOT NULL REFERENCES products (id),
    shop_id TEXT COLLATE "C" NOT NULL REFERENCES shops (id),
    position BIGINT NOT NULL,
    sku TEXT NOT NULL,
    options TEXT NOT NULL,
    price_amount BIGINT NOT NULL CHECK (price_amount >= 0),
    currency TEXT NOT NULL,
    stock_on_hand BIGINT NOT NULL CHECK (stock_on_hand >= 0),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (shop_id, sku)
);
CREATE INDEX variants_product ON variants (product_id, position);

CREATE TABLE stock_adjustments (
    id TEXT COLLATE "C" PRIMARY KEY,
    variant_id TEXT COLLATE "C" NOT NULL REFERENCES variants (id),
    delta BIGINT NOT NULL,
    reason TEXT NOT NULL,
    note TEXT NOT NULL,
    actor_id TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    on_hand_after BIGINT NOT NULL CHECK (on_hand_after >= 0),
    created_at BIGINT NOT NULL
);
CREATE INDEX stock_adjustments_variant ON stock_adjustments (variant_id, id);

CREATE TABLE rooms (
    id TEXT COLLATE "C" PRIMARY KEY,
    shop_id TEXT COLLATE "C" NOT NULL REFERENCES shops (id),
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    cover_image TEXT,
    scheduled_start BIGINT,
    status TEXT NOT NULL CHECK (status IN ('scheduled', 'live', 'ended')),
    stream_key_hash TEXT NOT NULL,
    started_at BIGINT,
    ended_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX rooms_shop ON rooms (shop_id, id);
CREATE INDEX rooms_status ON rooms (status, id);
