-- A recording's writer says every few seconds that it is still there, so that
-- when its node dies any other node can tell the recording was abandoned and
-- close it with what its files hold.
ALTER TABLE recordings ADD COLUMN written_at BIGINT;
UPDATE recordings SET written_at = started_at;
