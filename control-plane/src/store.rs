//! Storage: the SQLite database (sqlx, migrations in `control-plane/migrations`). Only this
//! module and its children write SQL. Every function is one statement or one short
//! transaction. Users, workspaces and tokens are in `access`, the audit chain in `audit`,
//! revocation and the CA rotation in `lifecycle`.

mod access;
mod alerts;
mod audit;
mod lifecycle;
mod metrics;

pub use access::{
    ApiTokenRecord, Credentials, DEFAULT_WORKSPACE, NewApiToken, Quotas, UserRecord,
    WebSessionRecord, WorkspaceRecord,
};
pub use alerts::{
    AlertChannelRecord, AlertDeliveryRecord, AlertEventFilter, AlertEventRecord, AlertRuleRecord,
    AlertStateRecord, NewAlertEvent, RawSample,
};
pub use audit::{AuditBreak, AuditEntry, AuditFilter, AuditRecord};
pub use metrics::{MetricExpiry, PointRow, RawRow, Resolution, SeriesRecord, bucket};

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("host name {0:?} is already taken")]
    NameTaken(String),
    #[error("{0}")]
    Exists(String),
}

/// Why a join token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinTokenError {
    #[error("join token is not known to this control plane")]
    Unknown,
    #[error("join token has expired; create a new one with `zpanel tokens create`")]
    Expired,
    #[error("join token has no uses left; create a new one with `zpanel tokens create`")]
    UsedUp,
}

#[derive(Debug, Clone)]
pub struct HostRecord {
    pub id: String,
    pub name: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub daemon_version: String,
    pub labels: BTreeMap<String, String>,
    pub enrolled_at: i64,
    pub last_seen: Option<i64>,
    pub workspace_id: String,
    /// Unix seconds; set once the host is revoked.
    pub revoked_at: Option<i64>,
    pub cert_expires_at: i64,
    /// Pin of the CA that issued the host's current certificate.
    pub cert_ca_pin: String,
    /// sha256 of the daemon executable, and whether it runs under systemd (last hello).
    pub daemon_sha256: String,
    pub systemd: bool,
}

/// The columns `host_from_row` reads, in its order.
const HOST_COLUMNS: &str = "id, name, os, kernel, arch, daemon_version, labels, enrolled_at, last_seen, workspace_id, revoked_at, cert_expires_at, cert_ca_pin, daemon_sha256, systemd";

/// What the daemon reports about its machine.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub daemon_version: String,
    pub daemon_sha256: String,
    pub systemd: bool,
}

pub struct NewHost<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub facts: &'a HostFacts,
    pub cert_serial: &'a str,
    pub cert_expires_at: i64,
    pub workspace_id: &'a str,
}

/// A terminal session opened through this control plane.
#[derive(Debug, Clone)]
pub struct TerminalRecord {
    pub id: String,
    pub host_id: String,
    pub owner_id: String,
    pub owner_name: String,
    pub created_at: i64,
    /// Recording path relative to the data directory; empty when recording is off.
    pub recording: String,
    pub recorded_bytes: u64,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Serialises audit appends, which read the chain's head and extend it.
    audit_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

pub use zpanel_shared::unix_now as now;

/// Hex SHA-256 of a secret token: what the database keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh secret token: a readable prefix and 256 random bits.
pub fn new_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}_{}", hex::encode(bytes))
}

impl Store {
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let store = Store {
            pool,
            audit_lock: Default::default(),
        };
        store.seal_audit().await?;
        Ok(store)
    }

    // === terminal sessions ===

    pub async fn insert_terminal_session(
        &self,
        session: &TerminalRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO terminal_sessions (id, host_id, owner_id, owner_name, created_at, recording) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&session.id)
        .bind(&session.host_id)
        .bind(&session.owner_id)
        .bind(&session.owner_name)
        .bind(session.created_at)
        .bind(&session.recording)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn terminal_session(&self, id: &str) -> Result<Option<TerminalRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, host_id, owner_id, owner_name, created_at, recording, recorded_bytes FROM terminal_sessions WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| TerminalRecord {
            id: r.get(0),
            host_id: r.get(1),
            owner_id: r.get(2),
            owner_name: r.get(3),
            created_at: r.get(4),
            recording: r.get(5),
            recorded_bytes: r.get::<i64, _>(6) as u64,
        }))
    }

    pub async fn set_recorded_bytes(&self, id: &str, bytes: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE terminal_sessions SET recorded_bytes = ? WHERE id = ?")
            .bind(bytes as i64)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // === join tokens ===

    pub async fn create_join_token(
        &self,
        token: &str,
        uses: u32,
        expires_at: i64,
        created_by: &str,
        workspace_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO join_tokens (id, token_hash, uses_total, uses_left, expires_at, created_by, created_at, workspace_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(token_hash(token))
        .bind(uses)
        .bind(uses)
        .bind(expires_at)
        .bind(created_by)
        .bind(now())
        .bind(workspace_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes one use of a join token in a single statement, so two racing joins cannot both
    /// take the last use. Returns the token's id and the workspace its hosts join.
    pub async fn consume_join_token(
        &self,
        token: &str,
    ) -> Result<Result<(String, String), JoinTokenError>, StoreError> {
        let hash = token_hash(token);
        let taken = sqlx::query(
            "UPDATE join_tokens SET uses_left = uses_left - 1
             WHERE token_hash = ? AND uses_left > 0 AND expires_at > ? RETURNING id, workspace_id",
        )
        .bind(&hash)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = taken {
            return Ok(Ok((row.get(0), row.get(1))));
        }
        let row = sqlx::query("SELECT uses_left, expires_at FROM join_tokens WHERE token_hash = ?")
            .bind(&hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(Err(match row {
            None => JoinTokenError::Unknown,
            Some(r) if r.get::<i64, _>(1) <= now() => JoinTokenError::Expired,
            Some(_) => JoinTokenError::UsedUp,
        }))
    }

    /// Gives back a use taken by an enrolment that then failed.
    pub async fn refund_join_token(&self, token_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE join_tokens SET uses_left = uses_left + 1 WHERE id = ?")
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // === hosts ===

    pub async fn host_name_taken(&self, name: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hosts WHERE name = ?")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    pub async fn insert_host(&self, host: NewHost<'_>) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO hosts (id, name, hostname, os, kernel, arch, daemon_version, labels, cert_serial, cert_expires_at, enrolled_at, workspace_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(host.id)
        .bind(host.name)
        .bind(&host.facts.hostname)
        .bind(&host.facts.os)
        .bind(&host.facts.kernel)
        .bind(&host.facts.arch)
        .bind(&host.facts.daemon_version)
        .bind(serde_json::to_string(host.labels).unwrap_or_else(|_| "{}".into()))
        .bind(host.cert_serial)
        .bind(host.cert_expires_at)
        .bind(now())
        .bind(host.workspace_id)
        .execute(&self.pool)
        .await;
        name_unique(result, host.name)
    }

    /// Enrols a host again under its id (the same machine, proven by its key): its name,
    /// facts, labels, certificate and workspace are replaced; its history stays.
    pub async fn reenrol_host(&self, host: NewHost<'_>) -> Result<(), StoreError> {
        let result = sqlx::query(
            "UPDATE hosts SET name = ?, hostname = ?, os = ?, kernel = ?, arch = ?, daemon_version = ?, labels = ?,
                cert_serial = ?, cert_expires_at = ?, workspace_id = ?
             WHERE id = ?",
        )
        .bind(host.name)
        .bind(&host.facts.hostname)
        .bind(&host.facts.os)
        .bind(&host.facts.kernel)
        .bind(&host.facts.arch)
        .bind(&host.facts.daemon_version)
        .bind(serde_json::to_string(host.labels).unwrap_or_else(|_| "{}".into()))
        .bind(host.cert_serial)
        .bind(host.cert_expires_at)
        .bind(host.workspace_id)
        .bind(host.id)
        .execute(&self.pool)
        .await;
        name_unique(result, host.name)
    }

    /// Records what a daemon reported when its session started.
    pub async fn host_connected(&self, host_id: &str, facts: &HostFacts) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE hosts SET hostname = ?, os = ?, kernel = ?, arch = ?, daemon_version = ?, daemon_sha256 = ?, systemd = ?, last_seen = ?, status = 'online'
             WHERE id = ?",
        )
        .bind(&facts.hostname)
        .bind(&facts.os)
        .bind(&facts.kernel)
        .bind(&facts.arch)
        .bind(&facts.daemon_version)
        .bind(&facts.daemon_sha256)
        .bind(facts.systemd)
        .bind(now())
        .bind(host_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Persists last-seen times in one transaction (called periodically for online hosts and
    /// when a session ends, never per heartbeat).
    pub async fn touch_hosts(&self, host_ids: &[String], at: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for id in host_ids {
            sqlx::query("UPDATE hosts SET last_seen = ? WHERE id = ?")
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn update_host_certificate(
        &self,
        host_id: &str,
        serial: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE hosts SET cert_serial = ?, cert_expires_at = ? WHERE id = ?")
            .bind(serial)
            .bind(expires_at)
            .bind(host_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that a host's session ended.
    pub async fn host_disconnected(&self, host_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE hosts SET status = 'offline', last_seen = ? WHERE id = ?")
            .bind(now())
            .bind(host_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// At start no session exists yet: every host is offline until it connects.
    pub async fn mark_all_offline(&self) -> Result<(), StoreError> {
        sqlx::query("UPDATE hosts SET status = 'offline' WHERE status <> 'offline'")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list_hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(host_from_row).collect())
    }

    /// A host by id, or by name when no id matches.
    pub async fn find_host(&self, id_or_name: &str) -> Result<Option<HostRecord>, StoreError> {
        let row = sqlx::query(
            &format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1"),
        )
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(host_from_row))
    }

    pub async fn host_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT id FROM hosts")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Deletes a host and its metrics.
    pub async fn delete_host(&self, host_id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        metrics::delete_host_metrics(&mut tx, host_id).await?;
        sqlx::query("DELETE FROM hosts WHERE id = ?")
            .bind(host_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves a host to another workspace.
    pub async fn move_host(&self, host_id: &str, workspace_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE hosts SET workspace_id = ? WHERE id = ?")
            .bind(workspace_id)
            .bind(host_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn count_hosts(&self, workspace_id: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hosts WHERE workspace_id = ?")
            .bind(workspace_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    // === execs ===

    /// Records who started an exec (and forgets execs older than a day).
    pub async fn insert_exec(
        &self,
        exec_id: &str,
        host_id: &str,
        user_id: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM execs WHERE created_at < ?")
            .bind(now() - 24 * 3600)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO execs (id, host_id, user_id, created_at) VALUES (?, ?, ?, ?)")
            .bind(exec_id)
            .bind(host_id)
            .bind(user_id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The host and user of an exec.
    pub async fn exec_owner(&self, exec_id: &str) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query("SELECT host_id, user_id FROM execs WHERE id = ?")
            .bind(exec_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }
}

/// A host write's result, a taken name told as such.
fn name_unique<T>(result: Result<T, sqlx::Error>, name: &str) -> Result<(), StoreError> {
    match result {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::NameTaken(name.into()))
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}

fn host_from_row(r: &sqlx::sqlite::SqliteRow) -> HostRecord {
    HostRecord {
        id: r.get(0),
        name: r.get(1),
        os: r.get(2),
        kernel: r.get(3),
        arch: r.get(4),
        daemon_version: r.get(5),
        labels: serde_json::from_str(r.get::<&str, _>(6)).unwrap_or_default(),
        enrolled_at: r.get(7),
        last_seen: r.get(8),
        workspace_id: r.get(9),
        revoked_at: r.get(10),
        cert_expires_at: r.get(11),
        cert_ca_pin: r.get(12),
        daemon_sha256: r.get(13),
        systemd: r.get(14),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("zpanel-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        (Store::open(&dir.join("zpanel.db")).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn join_tokens_are_consumed_exactly_once() {
        let (store, dir) = store().await;
        store
            .create_join_token("zpj_a", 2, now() + 60, "admin", DEFAULT_WORKSPACE)
            .await
            .unwrap();
        store
            .create_join_token("zpj_old", 1, now() - 1, "admin", DEFAULT_WORKSPACE)
            .await
            .unwrap();
        let mut racers = Vec::new();
        for _ in 0..8 {
            let store = store.clone();
            racers.push(tokio::spawn(async move {
                store.consume_join_token("zpj_a").await.unwrap()
            }));
        }
        let mut wins = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(_) => wins += 1,
                Err(e) => assert_eq!(e, JoinTokenError::UsedUp),
            }
        }
        assert_eq!(wins, 2);
        assert_eq!(
            store.consume_join_token("zpj_old").await.unwrap(),
            Err(JoinTokenError::Expired)
        );
        assert_eq!(
            store.consume_join_token("nope").await.unwrap(),
            Err(JoinTokenError::Unknown)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn admin_bootstrap_happens_once_and_tokens_authenticate() {
        let (store, dir) = store().await;
        let token = store.bootstrap_admin().await.unwrap().unwrap();
        assert!(store.bootstrap_admin().await.unwrap().is_none());
        let principal = store.authenticate(&token).await.unwrap().unwrap();
        assert_eq!(
            (principal.user_name.as_str(), principal.global_role()),
            ("admin", Some(crate::access::Role::Admin))
        );
        assert!(store.authenticate("zpa_wrong").await.unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_audit_chain_detects_edits_deletions_and_a_cut_tail() {
        let (store, dir) = store().await;
        for n in 0..5 {
            let entry = AuditEntry::new("alice", "exec").detail(format!("echo {n}"));
            store.audit(&entry).await.unwrap();
        }
        assert_eq!(store.verify_audit().await.unwrap(), Ok(5));
        let broken = |sql: &'static str| {
            let store = store.clone();
            async move {
                sqlx::query(sql).execute(&store.pool).await.unwrap();
                store.verify_audit().await.unwrap().unwrap_err()
            }
        };
        assert_eq!(
            broken("UPDATE audit_log SET detail = 'echo hidden' WHERE id = 3")
                .await
                .id,
            3
        );
        sqlx::query("UPDATE audit_log SET detail = 'echo 2' WHERE id = 3")
            .execute(&store.pool)
            .await
            .unwrap();
        assert_eq!(store.verify_audit().await.unwrap(), Ok(5));
        assert_eq!(broken("DELETE FROM audit_log WHERE id = 5").await.id, 4);
        assert_eq!(broken("DELETE FROM audit_log WHERE id = 2").await.id, 3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
