-- Zpanel control-plane schema. Timestamps are Unix seconds. Tokens are stored as the hex
-- SHA-256 of the token (they are 256-bit random values, so a fast hash is enough).

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    password_hash TEXT,
    created_at    INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);

CREATE TABLE join_tokens (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    uses_total  INTEGER NOT NULL,
    uses_left   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE hosts (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    hostname        TEXT NOT NULL DEFAULT '',
    os              TEXT NOT NULL DEFAULT '',
    kernel          TEXT NOT NULL DEFAULT '',
    arch            TEXT NOT NULL DEFAULT '',
    daemon_version  TEXT NOT NULL DEFAULT '',
    labels          TEXT NOT NULL DEFAULT '{}',
    cert_serial     TEXT NOT NULL,
    cert_expires_at INTEGER NOT NULL,
    enrolled_at     INTEGER NOT NULL,
    -- 'online' while a session is open on some control plane, else 'offline'
    status          TEXT NOT NULL DEFAULT 'offline',
    last_seen       INTEGER
);

CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT '',
    outcome  TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
