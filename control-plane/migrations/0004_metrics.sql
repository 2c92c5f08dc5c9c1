-- Host metrics (ARCHITECTURE.md "Metrics and alerts"): one series per host, metric and
-- instance (a mount, an interface, a core; '' for host-wide metrics), raw samples and the
-- 1-minute and 1-hour rollups. Times are Unix seconds. The sample tables are keyed
-- (series_id, at) and stored in that order (WITHOUT ROWID, SQLite's clustered index; on
-- PostgreSQL the primary key alone), so a series' range is one contiguous read.

-- Ids are given by the control plane's metrics writer, the only one creating series.
CREATE TABLE metric_series (
    id       INTEGER PRIMARY KEY,
    host_id  TEXT NOT NULL,
    metric   TEXT NOT NULL,
    instance TEXT NOT NULL DEFAULT '',
    UNIQUE (host_id, metric, instance)
);

CREATE TABLE metric_raw (
    series_id INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    value     REAL NOT NULL,
    PRIMARY KEY (series_id, at)
) WITHOUT ROWID;

-- `at` is the start of the bucket; the average is sum / count.
CREATE TABLE metric_1m (
    series_id INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    min       REAL NOT NULL,
    max       REAL NOT NULL,
    sum       REAL NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (series_id, at)
) WITHOUT ROWID;

CREATE TABLE metric_1h (
    series_id INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    min       REAL NOT NULL,
    max       REAL NOT NULL,
    sum       REAL NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (series_id, at)
) WITHOUT ROWID;

-- What the rollup job still has to recompute: 'dirty' is the oldest sample time stored
-- since the job last took it, 'rolling' the oldest time of the run in progress (NULL: none).
-- Both survive a restart, so buckets a stopped control plane did not finish are recomputed.
CREATE TABLE metric_rollup (
    name TEXT PRIMARY KEY,
    at   INTEGER
);
INSERT INTO metric_rollup (name, at) VALUES ('dirty', NULL), ('rolling', NULL);
