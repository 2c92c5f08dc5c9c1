-- Workspaces, memberships, scoped API tokens, TOTP, and a hash-chained audit log.

-- A workspace groups hosts; users are members with a role. Quotas are NULL when unlimited.
CREATE TABLE workspaces (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    max_hosts      INTEGER,
    max_terminals  INTEGER,
    max_api_tokens INTEGER,
    created_at     INTEGER NOT NULL
);
INSERT INTO workspaces (id, name, created_at) VALUES ('default', 'default', CAST(strftime('%s', 'now') AS INTEGER));

CREATE TABLE workspace_members (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_user ON workspace_members (user_id);

-- users.role is now 'admin' (a global admin) or 'member' (roles come from memberships).
INSERT INTO workspace_members (workspace_id, user_id, role, created_at)
    SELECT 'default', id, role, created_at FROM users WHERE role <> 'admin';
UPDATE users SET role = 'member' WHERE role <> 'admin';

-- TOTP second factor: the base32 secret once confirmed, a secret being set up, and the last
-- time step accepted (a code is good once).
ALTER TABLE users ADD COLUMN totp_secret TEXT;
ALTER TABLE users ADD COLUMN totp_pending TEXT;
ALTER TABLE users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0;

-- A host belongs to one workspace; join tokens say which one their hosts join.
ALTER TABLE hosts ADD COLUMN workspace_id TEXT NOT NULL DEFAULT 'default';
CREATE INDEX hosts_workspace ON hosts (workspace_id);
ALTER TABLE join_tokens ADD COLUMN workspace_id TEXT NOT NULL DEFAULT 'default';

-- An API token works in one workspace (NULL: every workspace, only for global admins).
ALTER TABLE api_tokens ADD COLUMN workspace_id TEXT;
ALTER TABLE api_tokens ADD COLUMN last_used_at INTEGER;
CREATE INDEX api_tokens_user ON api_tokens (user_id);

ALTER TABLE web_sessions ADD COLUMN address TEXT NOT NULL DEFAULT '';

-- Who started an exec, so only they can resume it.
CREATE TABLE execs (
    id         TEXT PRIMARY KEY,
    host_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Audit entries name the workspace and host, how the actor authenticated, and carry the
-- hash of the previous entry; `hash` covers the entry and `prev_hash`. Entries written
-- before this migration are hashed at start-up. `audit_head` holds the last entry's hash,
-- so deleting the newest entries is detected too.
ALTER TABLE audit_log ADD COLUMN workspace_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN host_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN credential TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN hash TEXT NOT NULL DEFAULT '';
CREATE INDEX audit_log_host ON audit_log (host_id);
CREATE INDEX audit_log_actor ON audit_log (actor);
CREATE TABLE audit_head (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    last_id INTEGER NOT NULL,
    hash    TEXT NOT NULL
);
