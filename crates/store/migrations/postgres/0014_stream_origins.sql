-- Which node is a room's stream origin (the node its encoder reached), as a
-- lease renewed every second: every node reads it to pull the stream from
-- there, and when it lapses (the node died) a reconnecting encoder on another
-- node starts afresh. `state` is what a new origin needs to continue the
-- stream where the last one left it (its media sequence and clock).
CREATE TABLE stream_origins (
    room_id TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    node TEXT NOT NULL,
    url TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    state TEXT NOT NULL,
    previous_node TEXT,
    expires_at BIGINT NOT NULL
);
