-- The web app: the sites that may frame a shop's embeddable player
-- (Content-Security-Policy frame-ancestors), as a JSON array of origins.
ALTER TABLE shops ADD COLUMN embed_origins TEXT NOT NULL DEFAULT '[]';

-- The seller's dashboard: every node writes, per open room and per sampling
-- interval, its viewers at that moment and the likes it received since the last
-- sample; a room's figure for an interval is the sum over its nodes.
CREATE TABLE room_samples (
    room_id TEXT NOT NULL REFERENCES rooms (id),
    at BIGINT NOT NULL,
    viewers BIGINT NOT NULL CHECK (viewers >= 0),
    likes BIGINT NOT NULL CHECK (likes >= 0)
);
CREATE INDEX room_samples_room ON room_samples (room_id, at);
