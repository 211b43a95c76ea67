-- Video (postgres dialect). The ingest finds a room by its stream key's hash.
CREATE INDEX rooms_stream_key_hash ON rooms (stream_key_hash);

-- Every live is recorded as HLS under the data directory; a row per recording.
-- started_at is the wall-clock time of the recording's first frame, so that
-- anything that happened in the room at time T is at media time T - started_at.
CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL REFERENCES rooms (id),
    status TEXT NOT NULL CHECK (status IN ('recording', 'complete')),
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    duration_ms BIGINT NOT NULL DEFAULT 0,
    segments BIGINT NOT NULL DEFAULT 0,
    bytes BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX recordings_room ON recordings (room_id, id);
CREATE INDEX recordings_started ON recordings (started_at);
