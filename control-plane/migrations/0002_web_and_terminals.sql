-- Browser sessions and terminal sessions.

-- A logged-in browser. The cookie holds a 256-bit random token; only its SHA-256 is kept.
CREATE TABLE web_sessions (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- Double-submit token the page sends back in X-CSRF-Token.
    csrf        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX web_sessions_expires_at ON web_sessions (expires_at);

-- Terminal sessions opened through this control plane. The shell itself lives on the
-- daemon; this row says whose it is and where its recording is.
CREATE TABLE terminal_sessions (
    id             TEXT PRIMARY KEY,
    host_id        TEXT NOT NULL,
    owner_id       TEXT NOT NULL,
    owner_name     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    -- Path of the asciicast recording relative to the data directory; '' when off.
    recording      TEXT NOT NULL DEFAULT '',
    -- Output bytes written to the recording so far.
    recorded_bytes INTEGER NOT NULL DEFAULT 0
);
