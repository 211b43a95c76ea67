-- Live-room chat (postgres dialect). Every message shown in a room is kept, written in
-- batches off the hot path, with the room sequence number it was shown under.

CREATE TABLE chat_messages (
    id TEXT COLLATE "C" PRIMARY KEY,
    room_id TEXT COLLATE "C" NOT NULL REFERENCES rooms (id),
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    seq BIGINT NOT NULL,
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Set when a moderator deletes the message; the text stays for review.
    deleted_at BIGINT
);
CREATE INDEX chat_messages_room ON chat_messages (room_id, id);

-- What the seller pinned in a room and when. The row without unpinned_at is the
-- current pin; all of them are the replay's timeline of pins.
CREATE TABLE room_pins (
    id TEXT COLLATE "C" PRIMARY KEY,
    room_id TEXT COLLATE "C" NOT NULL REFERENCES rooms (id),
    product_id TEXT COLLATE "C" NOT NULL REFERENCES products (id),
    actor_id TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    pinned_at BIGINT NOT NULL,
    unpinned_at BIGINT
);
CREATE INDEX room_pins_room ON room_pins (room_id, id);
CREATE UNIQUE INDEX room_pins_current ON room_pins (room_id) WHERE unpinned_at IS NULL;

-- Moderation. A shop's moderators act in all its rooms, as its owner does.
CREATE TABLE shop_moderators (
    shop_id TEXT COLLATE "C" NOT NULL REFERENCES shops (id),
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    appointed_at BIGINT NOT NULL,
    PRIMARY KEY (shop_id, user_id)
);

-- Words a shop's rooms refuse in chat (lower case).
CREATE TABLE shop_blocked_words (
    shop_id TEXT COLLATE "C" NOT NULL REFERENCES shops (id),
    word TEXT NOT NULL,
    PRIMARY KEY (shop_id, word)
);

-- A user muted (until a time) or banned (until NULL: for the room's life) in a room.
CREATE TABLE room_sanctions (
    room_id TEXT COLLATE "C" NOT NULL REFERENCES rooms (id),
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL CHECK (kind IN ('mute', 'ban')),
    until BIGINT,
    actor_id TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- Slow mode: one chat message per user per this many seconds (0: off).
ALTER TABLE rooms ADD COLUMN slow_mode_seconds BIGINT NOT NULL DEFAULT 0;
