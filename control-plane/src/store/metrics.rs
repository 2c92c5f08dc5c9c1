//! Host metrics (ARCHITECTURE.md "Metrics and alerts", migration `0004_metrics.sql`): series,
//! raw samples in multi-row inserts, the 1-minute and 1-hour rollups recomputed bucket by
//! bucket, expiry, and the queries. Series and sample ids are numbers this code made, so
//! they are written into the SQL as literals (no bind-parameter limit, one statement per
//! thousands of rows); everything a daemon named is bound.

use std::fmt::Write;

use sqlx::Row;

use super::{Store, StoreError};

/// Series per statement when the rollup and the expiry walk every series: each statement
/// is a short transaction, so ingest never waits long behind them.
const SERIES_PER_STATEMENT: usize = 256;

/// One series: a metric of a host, for one instance ("" for host-wide metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRecord {
    pub id: i64,
    pub host_id: String,
    pub metric: String,
    pub instance: String,
}

/// A stored value: a series at a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawRow {
    pub series_id: i64,
    pub at: i64,
    pub value: f64,
}

/// Where points are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Raw,
    Minute,
    Hour,
}

impl Resolution {
    /// As answers name it: "raw", "1m" or "1h".
    pub fn name(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
        }
    }

    /// The width of one stored row, in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Resolution::Raw => 1,
            Resolution::Minute => 60,
            Resolution::Hour => 3600,
        }
    }

    /// What a query reads: the bucket of each row, and its average, minimum and maximum
    /// over a step.
    fn select(self) -> (&'static str, &'static str) {
        match self {
            Resolution::Raw => ("metric_raw", "AVG(value), MIN(value), MAX(value)"),
            Resolution::Minute => ("metric_1m", "SUM(sum) / SUM(count), MIN(min), MAX(max)"),
            Resolution::Hour => ("metric_1h", "SUM(sum) / SUM(count), MIN(min), MAX(max)"),
        }
    }
}

/// One point of a series: the start of its step and the values in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointRow {
    pub series_id: i64,
    pub at: i64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
}

/// What is older than these times (Unix seconds) is deleted.
#[derive(Debug, Clone, Copy)]
pub struct MetricExpiry {
    pub raw_before: i64,
    pub minute_before: i64,
    pub hour_before: i64,
}

/// `1, 2, 3`: ids for an `IN (...)` list.
fn id_list(ids: &[i64]) -> String {
    let mut list = String::with_capacity(ids.len() * 8);
    for (n, id) in ids.iter().enumerate() {
        let _ = write!(list, "{}{id}", if n == 0 { "" } else { ", " });
    }
    list
}

/// `at` rounded down to a multiple of `width` (both positive in practice; negative times
/// round towards the past too).
pub fn bucket(at: i64, width: i64) -> i64 {
    at.div_euclid(width) * width
}

impl Store {
    /// Every series (the metrics writer keeps them in memory).
    pub async fn metric_series(&self) -> Result<Vec<SeriesRecord>, StoreError> {
        let rows = sqlx::query("SELECT id, host_id, metric, instance FROM metric_series")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(series_from_row).collect())
    }

    /// The series of these hosts, by host, metric and instance.
    pub async fn host_metric_series(
        &self,
        host_ids: &[String],
    ) -> Result<Vec<SeriesRecord>, StoreError> {
        let mut series = Vec::new();
        for host_id in host_ids {
            let rows = sqlx::query(
                "SELECT id, host_id, metric, instance FROM metric_series WHERE host_id = ? ORDER BY metric, instance",
            )
            .bind(host_id)
            .fetch_all(&self.pool)
            .await?;
            series.extend(rows.iter().map(series_from_row));
        }
        Ok(series)
    }

    /// The time of a host's newest stored value.
    pub async fn last_metric_at(&self, host_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MAX((SELECT MAX(at) FROM metric_raw WHERE series_id = s.id)) FROM metric_series s WHERE s.host_id = ?",
        )
        .bind(host_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Stores new series and values in one transaction, and marks the rollup buckets from
    /// the oldest value on for recomputation. A value already stored is kept as it was.
    pub async fn store_metric_values(
        &self,
        new_series: &[SeriesRecord],
        rows: &[RawRow],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for series in new_series {
            sqlx::query(
                "INSERT INTO metric_series (id, host_id, metric, instance) VALUES (?, ?, ?, ?)",
            )
            .bind(series.id)
            .bind(&series.host_id)
            .bind(&series.metric)
            .bind(&series.instance)
            .execute(&mut *tx)
            .await?;
        }
        const ROWS_PER_STATEMENT: usize = 5000;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::with_capacity(64 + chunk.len() * 40);
            sql.push_str("INSERT INTO metric_raw (series_id, at, value) VALUES ");
            for (n, row) in chunk.iter().enumerate() {
                let separator = if n == 0 { "" } else { "," };
                // `{:?}` writes every finite f64 so that it reads back exactly.
                let _ = write!(
                    sql,
                    "{separator}({},{},{:?})",
                    row.series_id, row.at, row.value
                );
            }
            sql.push_str(" ON CONFLICT (series_id, at) DO NOTHING");
            // Never the same text twice: not worth keeping prepared.
            sqlx::query(&sql)
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(oldest) = rows.iter().map(|row| row.at).min() {
            sqlx::query(
                "UPDATE metric_rollup SET at = CASE WHEN at IS NULL OR at > ?1 THEN ?1 ELSE at END WHERE name = 'dirty'",
            )
            .bind(oldest)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Recomputes every 1-minute bucket that got values since the last run from the raw
    /// values, then every 1-hour bucket from the minutes. Whole buckets are recomputed, so
    /// a value delivered late lands in its own minute and hour. Returns the oldest time
    /// recomputed, if any.
    pub async fn roll_up_metrics(&self) -> Result<Option<i64>, StoreError> {
        // Writing first takes the write lock at once: no ingest can slip in between.
        let mut tx = self.pool.begin().await?;
        let from: Option<i64> = sqlx::query_scalar(
            "UPDATE metric_rollup SET at = (SELECT MIN(at) FROM metric_rollup) WHERE name = 'rolling' RETURNING at",
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE metric_rollup SET at = NULL WHERE name = 'dirty'")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let Some(from) = from else {
            return Ok(None);
        };

        let series: Vec<i64> = sqlx::query_scalar("SELECT id FROM metric_series ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        for chunk in series.chunks(SERIES_PER_STATEMENT) {
            let ids = id_list(chunk);
            // Minutes from raw values first, then hours from those minutes.
            for (target, source, width, aggregates) in [
                (
                    "metric_1m",
                    "metric_raw",
                    60,
                    "MIN(value), MAX(value), SUM(value), COUNT(*)",
                ),
                (
                    "metric_1h",
                    "metric_1m",
                    3600,
                    "MIN(min), MAX(max), SUM(sum), SUM(count)",
                ),
            ] {
                let statement = format!(
                    "INSERT INTO {target} (series_id, at, min, max, sum, count)
                     SELECT series_id, at - at % {width}, {aggregates}
                     FROM {source} WHERE series_id IN ({ids}) AND at >= ?
                     GROUP BY series_id, at - at % {width}
                     ON CONFLICT (series_id, at) DO UPDATE SET min = excluded.min, max = excluded.max, sum = excluded.sum, count = excluded.count"
                );
                sqlx::query(&statement)
                    .bind(bucket(from, width))
                    .execute(&self.pool)
                    .await?;
            }
        }
        sqlx::query("UPDATE metric_rollup SET at = NULL WHERE name = 'rolling'")
            .execute(&self.pool)
            .await?;
        Ok(Some(from))
    }

    /// Deletes raw values, minutes and hours older than their retention. Returns how many
    /// rows went.
    pub async fn expire_metrics(&self, expiry: MetricExpiry) -> Result<u64, StoreError> {
        let series: Vec<i64> = sqlx::query_scalar("SELECT id FROM metric_series ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        let mut deleted = 0;
        for chunk in series.chunks(SERIES_PER_STATEMENT) {
            let ids = id_list(chunk);
            for (table, before) in [
                ("metric_raw", expiry.raw_before),
                ("metric_1m", expiry.minute_before),
                ("metric_1h", expiry.hour_before),
            ] {
                let sql = format!("DELETE FROM {table} WHERE series_id IN ({ids}) AND at < ?");
                deleted += sqlx::query(&sql)
                    .bind(before)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
            }
        }
        Ok(deleted)
    }

    /// Points of these series from `since` (inclusive) to `until` (exclusive), `step`
    /// seconds each (a multiple of the resolution's), by series and time. Steps without
    /// values have no point.
    pub async fn metric_points(
        &self,
        resolution: Resolution,
        series_ids: &[i64],
        since: i64,
        until: i64,
        step: i64,
    ) -> Result<Vec<PointRow>, StoreError> {
        if series_ids.is_empty() {
            return Ok(Vec::new());
        }
        let (table, values) = resolution.select();
        let sql = format!(
            "SELECT series_id, at - at % ?1, {values} FROM {table}
             WHERE series_id IN ({}) AND at >= ?2 AND at < ?3
             GROUP BY series_id, at - at % ?1 ORDER BY series_id, at - at % ?1",
            id_list(series_ids)
        );
        let rows = sqlx::query(&sql)
            .bind(step.max(1))
            .bind(since)
            .bind(until)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| PointRow {
                series_id: r.get(0),
                at: r.get(1),
                avg: r.get(2),
                min: r.get(3),
                max: r.get(4),
            })
            .collect())
    }
}

/// Deletes a host's series and all their values (inside the host's deletion).
pub(super) async fn delete_host_metrics(
    tx: &mut sqlx::SqliteConnection,
    host_id: &str,
) -> Result<(), StoreError> {
    for table in ["metric_raw", "metric_1m", "metric_1h"] {
        let sql = format!(
            "DELETE FROM {table} WHERE series_id IN (SELECT id FROM metric_series WHERE host_id = ?)"
        );
        sqlx::query(&sql).bind(host_id).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM metric_series WHERE host_id = ?")
        .bind(host_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

fn series_from_row(r: &sqlx::sqlite::SqliteRow) -> SeriesRecord {
    SeriesRecord {
        id: r.get(0),
        host_id: r.get(1),
        metric: r.get(2),
        instance: r.get(3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (
            Store::open(&dir.path().join("zpanel.db")).await.unwrap(),
            dir,
        )
    }

    fn series(id: i64, host_id: &str, metric: &str) -> SeriesRecord {
        SeriesRecord {
            id,
            host_id: host_id.into(),
            metric: metric.into(),
            instance: String::new(),
        }
    }

    fn rows(series_id: i64, values: impl IntoIterator<Item = (i64, f64)>) -> Vec<RawRow> {
        values
            .into_iter()
            .map(|(at, value)| RawRow {
                series_id,
                at,
                value,
            })
            .collect()
    }

    /// (at, min, max, sum, count) of a rollup table.
    async fn rollup(store: &Store, table: &str) -> Vec<(i64, f64, f64, f64, i64)> {
        let sql = format!("SELECT at, min, max, sum, count FROM {table} ORDER BY series_id, at");
        sqlx::query_as(&sql).fetch_all(&store.pool).await.unwrap()
    }

    /// The start of an hour (a multiple of 3600).
    const HOUR: i64 = 1_800_000_000;

    #[tokio::test]
    async fn rollups_are_exact_per_minute_and_hour() {
        let (store, _dir) = store().await;
        // 1..=120, one per second over the first two minutes of the hour.
        let values = rows(1, (1..=120).map(|n| (HOUR + n - 1, n as f64)));
        store
            .store_metric_values(&[series(1, "h1", "cpu")], &values)
            .await
            .unwrap();
        assert_eq!(store.roll_up_metrics().await.unwrap(), Some(HOUR));
        assert_eq!(
            rollup(&store, "metric_1m").await,
            [
                (HOUR, 1.0, 60.0, 1830.0, 60),
                (HOUR + 60, 61.0, 120.0, 5430.0, 60)
            ]
        );
        assert_eq!(
            rollup(&store, "metric_1h").await,
            [(HOUR, 1.0, 120.0, 7260.0, 120)]
        );
        assert_eq!(store.roll_up_metrics().await.unwrap(), None, "nothing new");

        // The same averages read from each resolution.
        for resolution in [Resolution::Raw, Resolution::Minute] {
            let points = store
                .metric_points(resolution, &[1], HOUR, HOUR + 3600, 60)
                .await
                .unwrap();
            let read: Vec<(i64, f64, f64, f64)> =
                points.iter().map(|p| (p.at, p.avg, p.min, p.max)).collect();
            assert_eq!(
                read,
                [(HOUR, 30.5, 1.0, 60.0), (HOUR + 60, 90.5, 61.0, 120.0)],
                "{resolution:?}"
            );
        }
        let hourly = store
            .metric_points(Resolution::Hour, &[1], HOUR - 3600, HOUR + 3600, 3600)
            .await
            .unwrap();
        assert_eq!(
            hourly.iter().map(|p| (p.at, p.avg)).collect::<Vec<_>>(),
            [(HOUR, 60.5)]
        );
    }

    #[tokio::test]
    async fn a_late_sample_recomputes_its_minute_and_hour() {
        let (store, _dir) = store().await;
        let first = rows(1, (0..30).map(|n| (HOUR + 3600 + n, 10.0)));
        store
            .store_metric_values(&[series(1, "h1", "cpu")], &first)
            .await
            .unwrap();
        store.roll_up_metrics().await.unwrap();
        // Delivered after an outage: a value from the previous hour, and one in a minute
        // already rolled up.
        let late = vec![
            RawRow {
                series_id: 1,
                at: HOUR + 125,
                value: 40.0,
            },
            RawRow {
                series_id: 1,
                at: HOUR + 3600 + 45,
                value: 70.0,
            },
        ];
        store.store_metric_values(&[], &late).await.unwrap();
        assert_eq!(store.roll_up_metrics().await.unwrap(), Some(HOUR + 125));
        assert_eq!(
            rollup(&store, "metric_1m").await,
            [
                (HOUR + 120, 40.0, 40.0, 40.0, 1),
                (HOUR + 3600, 10.0, 70.0, 370.0, 31)
            ]
        );
        assert_eq!(
            rollup(&store, "metric_1h").await,
            [
                (HOUR, 40.0, 40.0, 40.0, 1),
                (HOUR + 3600, 10.0, 70.0, 370.0, 31)
            ]
        );
    }

    #[tokio::test]
    async fn an_interrupted_rollup_is_finished_by_the_next_run() {
        let (store, _dir) = store().await;
        let values = rows(1, (0..10).map(|n| (HOUR + n, 1.0)));
        store
            .store_metric_values(&[series(1, "h1", "cpu")], &values)
            .await
            .unwrap();
        // A run that took the mark and stopped before finishing (the control plane died).
        sqlx::query("UPDATE metric_rollup SET at = CASE WHEN name = 'rolling' THEN ? END")
            .bind(HOUR)
            .execute(&store.pool)
            .await
            .unwrap();
        assert_eq!(store.roll_up_metrics().await.unwrap(), Some(HOUR));
        assert_eq!(
            rollup(&store, "metric_1m").await,
            [(HOUR, 1.0, 1.0, 10.0, 10)]
        );
    }

    #[tokio::test]
    async fn expiry_deletes_exactly_what_is_older() {
        let (store, _dir) = store().await;
        let values = rows(1, (0..10).map(|n| (HOUR + n * 600, 1.0)));
        store
            .store_metric_values(&[series(1, "h1", "cpu")], &values)
            .await
            .unwrap();
        store.roll_up_metrics().await.unwrap();
        let expiry = MetricExpiry {
            raw_before: HOUR + 3000,
            minute_before: HOUR + 1200,
            hour_before: HOUR,
        };
        // Raw: 0, 600, ..., 2400 go (5); minutes: 0 and 600 go (2); hours: none.
        assert_eq!(store.expire_metrics(expiry).await.unwrap(), 7);
        let raw = store.metric_window("h1", "cpu", None, 0).await.unwrap();
        assert_eq!(raw.first().map(|p| p.at), Some(HOUR + 3000));
        assert_eq!(raw.len(), 5);
        let minutes = rollup(&store, "metric_1m").await;
        assert_eq!(minutes.first().map(|m| m.0), Some(HOUR + 1200));
        assert_eq!(rollup(&store, "metric_1h").await.len(), 2);
    }

    #[tokio::test]
    async fn the_alerts_window_and_host_deletion() {
        let (store, _dir) = store().await;
        let disk = |id, mount: &str| SeriesRecord {
            instance: mount.into(),
            ..series(id, "h1", "disk.percent")
        };
        let mut values = rows(1, [(HOUR, 50.0), (HOUR + 10, 55.0)]);
        values.extend(rows(2, [(HOUR, 90.0)]));
        values.extend(rows(3, [(HOUR, 5.0)]));
        let all = [disk(1, "/"), disk(2, "/data"), series(3, "h2", "cpu")];
        store.store_metric_values(&all, &values).await.unwrap();
        let window = store
            .metric_window("h1", "disk.percent", None, HOUR)
            .await
            .unwrap();
        let read: Vec<(&str, f64)> = window
            .iter()
            .map(|p| (p.instance.as_str(), p.value))
            .collect();
        assert_eq!(read, [("/", 50.0), ("/data", 90.0), ("/", 55.0)]);
        let one = store
            .metric_window("h1", "disk.percent", Some("/"), HOUR + 1)
            .await
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(store.last_metric_at("h1").await.unwrap(), Some(HOUR + 10));

        let mut tx = store.pool.begin().await.unwrap();
        delete_host_metrics(&mut tx, "h1").await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(store.last_metric_at("h1").await.unwrap(), None);
        assert_eq!(store.metric_series().await.unwrap(), [all[2].clone()]);
    }

    #[tokio::test]
    async fn range_reads_use_the_primary_key() {
        let (store, _dir) = store().await;
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "EXPLAIN QUERY PLAN SELECT series_id, at FROM metric_1h WHERE series_id IN (1, 2) AND at >= 5 AND at < 9",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        assert!(
            plan.iter()
                .any(|(.., detail)| detail.contains("PRIMARY KEY")),
            "{plan:?}"
        );
    }
}
