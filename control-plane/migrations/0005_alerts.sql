-- Alerts (ARCHITECTURE.md "Metrics and alerts"): rules and notification channels of a
-- workspace, the open alert of each rule and host, the history of firings and resolves, and
-- one delivery per event and channel. Names are unique across workspaces, like host names.

-- A channel's secret (a webhook's HMAC key, a Telegram bot token) and its SMTP URL (which
-- may hold a password) are never answered.
CREATE TABLE alert_channels (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL UNIQUE,
    -- webhook, email, slack or telegram
    kind         TEXT NOT NULL,
    url          TEXT NOT NULL DEFAULT '',
    -- e-mail recipients, JSON array of addresses
    recipients   TEXT NOT NULL DEFAULT '[]',
    smtp_url     TEXT NOT NULL DEFAULT '',
    sender       TEXT NOT NULL DEFAULT '',
    chat_id      TEXT NOT NULL DEFAULT '',
    secret       TEXT NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL
);

CREATE TABLE alert_rules (
    id               TEXT PRIMARY KEY,
    workspace_id     TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name             TEXT NOT NULL UNIQUE,
    -- metric or offline
    kind             TEXT NOT NULL,
    metric           TEXT NOT NULL DEFAULT '',
    instance         TEXT NOT NULL DEFAULT '',
    comparison       TEXT NOT NULL DEFAULT '',
    threshold        DOUBLE PRECISION NOT NULL DEFAULT 0,
    for_seconds      INTEGER NOT NULL,
    severity         TEXT NOT NULL,
    -- labels a host must all have, JSON object
    selector         TEXT NOT NULL DEFAULT '{}',
    -- names of channels of the same workspace, JSON array (a channel in use is not deleted)
    channels         TEXT NOT NULL DEFAULT '[]',
    cooldown_seconds INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    created_by       TEXT NOT NULL
);

-- Every firing and resolve. Rule, host and condition are copied, so the history (and the
-- notifications still being sent) outlive a deleted rule or host.
CREATE TABLE alert_events (
    id           INTEGER PRIMARY KEY,
    rule_id      TEXT NOT NULL,
    rule_name    TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    host_id      TEXT NOT NULL,
    host_name    TEXT NOT NULL,
    host_labels  TEXT NOT NULL DEFAULT '{}',
    -- firing or resolved
    state        TEXT NOT NULL,
    severity     TEXT NOT NULL,
    metric       TEXT NOT NULL DEFAULT '',
    instance     TEXT NOT NULL DEFAULT '',
    comparison   TEXT NOT NULL DEFAULT '',
    threshold    DOUBLE PRECISION NOT NULL DEFAULT 0,
    for_seconds  INTEGER NOT NULL,
    value        DOUBLE PRECISION NOT NULL,
    at           INTEGER NOT NULL,
    summary      TEXT NOT NULL,
    -- 0 when the cooldown held the notification back
    notified     INTEGER NOT NULL
);
CREATE INDEX alert_events_rule_host ON alert_events (rule_id, host_id, at);
CREATE INDEX alert_events_workspace ON alert_events (workspace_id, id);

-- The one open alert of a rule and host: its firing event.
CREATE TABLE alert_states (
    rule_id  TEXT NOT NULL REFERENCES alert_rules(id) ON DELETE CASCADE,
    host_id  TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    event_id INTEGER NOT NULL REFERENCES alert_events(id),
    PRIMARY KEY (rule_id, host_id)
);

-- One notification of an event on a channel, sent and retried by its own task.
CREATE TABLE alert_deliveries (
    id           INTEGER PRIMARY KEY,
    event_id     INTEGER NOT NULL REFERENCES alert_events(id) ON DELETE CASCADE,
    channel_id   TEXT NOT NULL,
    channel_name TEXT NOT NULL,
    -- pending, sent or failed (gave up)
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT NOT NULL DEFAULT '',
    -- when the next attempt is due, while pending
    next_at      INTEGER NOT NULL,
    sent_at      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (status, next_at);
CREATE INDEX alert_deliveries_event ON alert_deliveries (event_id);
