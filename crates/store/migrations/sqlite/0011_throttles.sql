-- Sign-in throttles, shared by every node: one fixed window per key (an
-- address or an account), so that N nodes do not give an attacker N times the
-- attempts.
CREATE TABLE throttle_windows (
    key TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    hits INTEGER NOT NULL
) STRICT;
CREATE INDEX throttle_windows_started ON throttle_windows (started_at);
