//! Alert rules, notification channels, open alerts, the alert history and its deliveries
//! (migration `0005_alerts.sql`), and the raw metric window the evaluator reads from the
//! metrics tables.

use std::collections::BTreeMap;
use zpanel_shared::alerts::RuleSpec;

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Store, StoreError, now};

/// A rule as stored; the service checked every field before it was written.
#[derive(Debug, Clone)]
pub struct AlertRuleRecord {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub spec: RuleSpec,
    pub created_at: i64,
    pub created_by: String,
}

/// A notification channel as stored, secrets included (they never leave the service).
#[derive(Debug, Clone, Default)]
pub struct AlertChannelRecord {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    /// `webhook`, `email`, `slack` or `telegram`.
    pub kind: String,
    pub url: String,
    pub to: Vec<String>,
    pub smtp_url: String,
    pub from: String,
    pub chat_id: String,
    pub secret: String,
    pub created_at: i64,
}

/// An event to record: what fired or resolved, with the rule and host copied into it.
#[derive(Debug, Clone)]
pub struct NewAlertEvent {
    pub rule: AlertRuleRecord,
    pub host_id: String,
    pub host_name: String,
    pub host_labels: BTreeMap<String, String>,
    /// `firing` or `resolved`.
    pub state: &'static str,
    pub value: f64,
    /// The instance the value is from (empty for host-wide metrics).
    pub instance: String,
    pub at: i64,
    pub summary: String,
    pub notified: bool,
}

/// A recorded firing or resolve.
#[derive(Debug, Clone)]
pub struct AlertEventRecord {
    pub id: i64,
    pub rule_id: String,
    pub rule_name: String,
    pub workspace_id: String,
    pub host_id: String,
    pub host_name: String,
    pub host_labels: BTreeMap<String, String>,
    pub state: String,
    pub severity: String,
    pub metric: String,
    pub instance: String,
    pub comparison: String,
    pub threshold: f64,
    pub for_seconds: u64,
    pub value: f64,
    pub at: i64,
    pub summary: String,
    pub notified: bool,
    pub deliveries: Vec<AlertDeliveryRecord>,
}

/// One notification of an event on one channel.
#[derive(Debug, Clone)]
pub struct AlertDeliveryRecord {
    pub id: i64,
    pub event_id: i64,
    pub channel_id: String,
    pub channel_name: String,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub last_error: String,
    pub next_at: i64,
    pub sent_at: i64,
}

/// An open alert: the firing event of a rule and host.
#[derive(Debug, Clone)]
pub struct AlertStateRecord {
    pub rule_id: String,
    pub host_id: String,
    pub event_id: i64,
    /// Whether the firing was notified (its resolve is notified likewise).
    pub notified: bool,
}

/// Which events to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AlertEventFilter {
    /// Only these workspaces (`None`: all).
    pub workspaces: Option<Vec<String>>,
    /// A host's id or name.
    pub host: Option<String>,
    /// A rule's id or name.
    pub rule: Option<String>,
    /// Only the firing events of alerts open now.
    pub active: bool,
    pub limit: u32,
}

/// One raw sample of a series: its instance, time and value.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSample {
    pub instance: String,
    pub at: i64,
    pub value: f64,
}

const RULE_COLUMNS: &str = "SELECT id, workspace_id, name, kind, metric, instance, comparison, threshold, for_seconds, severity, selector, channels, cooldown_seconds, created_at, created_by FROM alert_rules";
const CHANNEL_COLUMNS: &str = "SELECT id, workspace_id, name, kind, url, recipients, smtp_url, sender, chat_id, secret, created_at FROM alert_channels";
const EVENT_COLUMNS: &str = "SELECT id, rule_id, rule_name, workspace_id, host_id, host_name, host_labels, state, severity, metric, instance, comparison, threshold, for_seconds, value, at, summary, notified FROM alert_events";
const DELIVERY_COLUMNS: &str = "SELECT id, event_id, channel_id, channel_name, status, attempts, last_error, next_at, sent_at FROM alert_deliveries";

fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn json_column<T: serde::de::DeserializeOwned + Default>(row: &SqliteRow, index: usize) -> T {
    serde_json::from_str(row.get::<&str, _>(index)).unwrap_or_default()
}

fn rule_from_row(r: &SqliteRow) -> AlertRuleRecord {
    AlertRuleRecord {
        id: r.get(0),
        workspace_id: r.get(1),
        name: r.get(2),
        spec: RuleSpec {
            kind: r.get(3),
            metric: r.get(4),
            instance: r.get(5),
            comparison: r.get(6),
            threshold: r.get(7),
            for_seconds: r.get::<i64, _>(8).max(0) as u64,
            severity: r.get(9),
            selector: json_column(r, 10),
            channels: json_column(r, 11),
            cooldown_seconds: r.get::<i64, _>(12).max(0) as u64,
        },
        created_at: r.get(13),
        created_by: r.get(14),
    }
}

fn channel_from_row(r: &SqliteRow) -> AlertChannelRecord {
    AlertChannelRecord {
        id: r.get(0),
        workspace_id: r.get(1),
        name: r.get(2),
        kind: r.get(3),
        url: r.get(4),
        to: json_column(r, 5),
        smtp_url: r.get(6),
        from: r.get(7),
        chat_id: r.get(8),
        secret: r.get(9),
        created_at: r.get(10),
    }
}

fn event_from_row(r: &SqliteRow) -> AlertEventRecord {
    AlertEventRecord {
        id: r.get(0),
        rule_id: r.get(1),
        rule_name: r.get(2),
        workspace_id: r.get(3),
        host_id: r.get(4),
        host_name: r.get(5),
        host_labels: json_column(r, 6),
        state: r.get(7),
        severity: r.get(8),
        metric: r.get(9),
        instance: r.get(10),
        comparison: r.get(11),
        threshold: r.get(12),
        for_seconds: r.get::<i64, _>(13).max(0) as u64,
        value: r.get(14),
        at: r.get(15),
        summary: r.get(16),
        notified: r.get(17),
        deliveries: Vec::new(),
    }
}

fn delivery_from_row(r: &SqliteRow) -> AlertDeliveryRecord {
    AlertDeliveryRecord {
        id: r.get(0),
        event_id: r.get(1),
        channel_id: r.get(2),
        channel_name: r.get(3),
        status: r.get(4),
        attempts: r.get::<i64, _>(5).max(0) as u32,
        last_error: r.get(6),
        next_at: r.get(7),
        sent_at: r.get(8),
    }
}

/// A unique name clashed: one line saying so.
fn name_taken(e: sqlx::Error, what: &str, name: &str) -> StoreError {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Exists(format!(
            "an alert {what} named {name:?} already exists; pick another name"
        )),
        other => other.into(),
    }
}

impl Store {
    // === rules ===

    pub async fn insert_alert_rule(&self, rule: &AlertRuleRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO alert_rules (id, workspace_id, name, kind, metric, instance, comparison, threshold, for_seconds, severity, selector, channels, cooldown_seconds, created_at, created_by)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&rule.id)
        .bind(&rule.workspace_id)
        .bind(&rule.name)
        .bind(&rule.spec.kind)
        .bind(&rule.spec.metric)
        .bind(&rule.spec.instance)
        .bind(&rule.spec.comparison)
        .bind(rule.spec.threshold)
        .bind(rule.spec.for_seconds as i64)
        .bind(&rule.spec.severity)
        .bind(json_text(&rule.spec.selector))
        .bind(json_text(&rule.spec.channels))
        .bind(rule.spec.cooldown_seconds as i64)
        .bind(rule.created_at)
        .bind(&rule.created_by)
        .execute(&self.pool)
        .await
        .map_err(|e| name_taken(e, "rule", &rule.name))?;
        Ok(())
    }

    /// Every rule, by name.
    pub async fn alert_rules(&self) -> Result<Vec<AlertRuleRecord>, StoreError> {
        let rows = sqlx::query(&format!("{RULE_COLUMNS} ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(rule_from_row).collect())
    }

    /// A rule by id, or by name when no id matches.
    pub async fn find_alert_rule(
        &self,
        id_or_name: &str,
    ) -> Result<Option<AlertRuleRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "{RULE_COLUMNS} WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1"
        ))
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(rule_from_row))
    }

    /// Deletes a rule and its open alerts; its history stays.
    pub async fn delete_alert_rule(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM alert_rules WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // === channels ===

    pub async fn insert_alert_channel(
        &self,
        channel: &AlertChannelRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO alert_channels (id, workspace_id, name, kind, url, recipients, smtp_url, sender, chat_id, secret, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&channel.id)
        .bind(&channel.workspace_id)
        .bind(&channel.name)
        .bind(&channel.kind)
        .bind(&channel.url)
        .bind(json_text(&channel.to))
        .bind(&channel.smtp_url)
        .bind(&channel.from)
        .bind(&channel.chat_id)
        .bind(&channel.secret)
        .bind(channel.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| name_taken(e, "channel", &channel.name))?;
        Ok(())
    }

    /// Every channel, by name.
    pub async fn alert_channels(&self) -> Result<Vec<AlertChannelRecord>, StoreError> {
        let rows = sqlx::query(&format!("{CHANNEL_COLUMNS} ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(channel_from_row).collect())
    }

    /// A channel by id, or by name when no id matches.
    pub async fn find_alert_channel(
        &self,
        id_or_name: &str,
    ) -> Result<Option<AlertChannelRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "{CHANNEL_COLUMNS} WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1"
        ))
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(channel_from_row))
    }

    pub async fn delete_alert_channel(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM alert_channels WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // === evaluation ===

    /// Every open alert, with whether its firing was notified.
    pub async fn alert_states(&self) -> Result<Vec<AlertStateRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.rule_id, s.host_id, s.event_id, e.notified FROM alert_states s JOIN alert_events e ON e.id = s.event_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AlertStateRecord {
                rule_id: r.get(0),
                host_id: r.get(1),
                event_id: r.get(2),
                notified: r.get(3),
            })
            .collect())
    }

    /// When the last alert of a rule and host resolved.
    pub async fn last_alert_resolve(
        &self,
        rule_id: &str,
        host_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(at) FROM alert_events WHERE rule_id = ? AND host_id = ? AND state = 'resolved'",
        )
        .bind(rule_id)
        .bind(host_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The raw samples of a host's metric since `since`, oldest first, from the metrics
    /// tables (`metric_series`, `metric_raw`): every instance, or only `instance`.
    pub async fn metric_window(
        &self,
        host_id: &str,
        metric: &str,
        instance: Option<&str>,
        since: i64,
    ) -> Result<Vec<RawSample>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.instance, r.at, r.value FROM metric_raw r JOIN metric_series s ON s.id = r.series_id
             WHERE s.host_id = ?1 AND s.metric = ?2 AND (?3 IS NULL OR s.instance = ?3) AND r.at >= ?4
             ORDER BY r.at",
        )
        .bind(host_id)
        .bind(metric)
        .bind(instance)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| RawSample {
                instance: r.get(0),
                at: r.get(1),
                value: r.get(2),
            })
            .collect())
    }

    /// Records a firing (opening the alert) or a resolve (closing it) in one transaction,
    /// with a pending delivery on each channel (id and name) when it is notified. Returns
    /// the event's id.
    pub async fn record_alert_event(
        &self,
        event: &NewAlertEvent,
        channels: &[(String, String)],
    ) -> Result<i64, StoreError> {
        let rule = &event.rule;
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO alert_events (rule_id, rule_name, workspace_id, host_id, host_name, host_labels, state, severity, metric, instance, comparison, threshold, for_seconds, value, at, summary, notified)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&rule.id)
        .bind(&rule.name)
        .bind(&rule.workspace_id)
        .bind(&event.host_id)
        .bind(&event.host_name)
        .bind(json_text(&event.host_labels))
        .bind(event.state)
        .bind(&rule.spec.severity)
        .bind(&rule.spec.metric)
        .bind(&event.instance)
        .bind(&rule.spec.comparison)
        .bind(rule.spec.threshold)
        .bind(rule.spec.for_seconds as i64)
        .bind(event.value)
        .bind(event.at)
        .bind(&event.summary)
        .bind(event.notified)
        .fetch_one(&mut *tx)
        .await?;
        if event.state == "firing" {
            sqlx::query("INSERT INTO alert_states (rule_id, host_id, event_id) VALUES (?, ?, ?)")
                .bind(&rule.id)
                .bind(&event.host_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("DELETE FROM alert_states WHERE rule_id = ? AND host_id = ?")
                .bind(&rule.id)
                .bind(&event.host_id)
                .execute(&mut *tx)
                .await?;
        }
        if event.notified {
            for (channel_id, channel_name) in channels {
                sqlx::query(
                    "INSERT INTO alert_deliveries (event_id, channel_id, channel_name, status, next_at) VALUES (?, ?, ?, 'pending', ?)",
                )
                .bind(id)
                .bind(channel_id)
                .bind(channel_name)
                .bind(event.at)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(id)
    }

    // === history ===

    /// Events newest first, each with its deliveries.
    pub async fn alert_events(
        &self,
        filter: &AlertEventFilter,
    ) -> Result<Vec<AlertEventRecord>, StoreError> {
        let mut sql = format!("{EVENT_COLUMNS} WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        if let Some(host) = &filter.host {
            sql.push_str(" AND (host_id = ? OR host_name = ?)");
            binds.extend([host.clone(), host.clone()]);
        }
        if let Some(rule) = &filter.rule {
            sql.push_str(" AND (rule_id = ? OR rule_name = ?)");
            binds.extend([rule.clone(), rule.clone()]);
        }
        if let Some(workspaces) = &filter.workspaces {
            sql.push_str(" AND workspace_id IN (SELECT value FROM json_each(?))");
            binds.push(json_text(workspaces));
        }
        if filter.active {
            sql.push_str(" AND id IN (SELECT event_id FROM alert_states)");
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", filter.limit.max(1)));
        let mut query = sqlx::query(&sql);
        for value in &binds {
            query = query.bind(value);
        }
        let mut events: Vec<AlertEventRecord> = query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(event_from_row)
            .collect();
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        let rows = sqlx::query(&format!(
            "{DELIVERY_COLUMNS} WHERE event_id IN (SELECT value FROM json_each(?)) ORDER BY id"
        ))
        .bind(json_text(&ids))
        .fetch_all(&self.pool)
        .await?;
        for delivery in rows.iter().map(delivery_from_row) {
            if let Some(event) = events.iter_mut().find(|e| e.id == delivery.event_id) {
                event.deliveries.push(delivery);
            }
        }
        Ok(events)
    }

    // === deliveries ===

    /// Pending deliveries whose next attempt is due at `at`.
    pub async fn due_alert_deliveries(&self, at: i64) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM alert_deliveries WHERE status = 'pending' AND next_at <= ? ORDER BY id",
        )
        .bind(at)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A delivery with its event and channel (`None` when the channel was deleted).
    pub async fn alert_delivery(
        &self,
        id: i64,
    ) -> Result<
        Option<(
            AlertDeliveryRecord,
            AlertEventRecord,
            Option<AlertChannelRecord>,
        )>,
        StoreError,
    > {
        let Some(row) = sqlx::query(&format!("{DELIVERY_COLUMNS} WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let delivery = delivery_from_row(&row);
        let Some(event) = sqlx::query(&format!("{EVENT_COLUMNS} WHERE id = ?"))
            .bind(delivery.event_id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let channel = sqlx::query(&format!("{CHANNEL_COLUMNS} WHERE id = ?"))
            .bind(&delivery.channel_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(Some((
            delivery,
            event_from_row(&event),
            channel.as_ref().map(channel_from_row),
        )))
    }

    /// Records an attempt: sent, failed for good (`retry_at` `None`), or to be tried again
    /// at `retry_at`.
    pub async fn alert_delivery_attempted(
        &self,
        id: i64,
        error: Option<&str>,
        retry_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let (status, next_at) = match (error, retry_at) {
            (None, _) => ("sent", 0),
            (Some(_), Some(at)) => ("pending", at),
            (Some(_), None) => ("failed", 0),
        };
        sqlx::query(
            "UPDATE alert_deliveries SET status = ?, attempts = attempts + 1, last_error = CASE WHEN ? IS NULL THEN last_error ELSE ? END,
             next_at = ?, sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE id = ?",
        )
        .bind(status)
        .bind(error)
        .bind(error)
        .bind(next_at)
        .bind(status)
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
